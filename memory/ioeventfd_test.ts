/**
 * Ioeventfds of the memory API, as QEMU 7.2's `memory_region_add_eventfd` and
 * `address_space_update_ioeventfds` define them: listeners hear of each eventfd at the absolute
 * address where its region is visible, follow moves, and nothing else fires for an eventfd-only
 * change.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { AddressSpace, type IoeventfdSection, type MemoryListener, MemoryRegion } from "./mod.ts";

const noop = { write: () => {} };

function recorder(priority = 0, name = "rec"): MemoryListener & { log: string[] } {
  const log: string[] = [];
  const show = (fd: IoeventfdSection) =>
    `0x${fd.start.toString(16)}/${fd.size}${fd.matchData ? `=${fd.data}` : ""}`;
  return {
    name,
    priority,
    log,
    begin: () => log.push("begin"),
    commit: () => log.push("commit"),
    regionNop: () => log.push("nop"),
    eventfdAdd: (fd) => log.push(`${name} add ${show(fd)}`),
    eventfdDel: (fd) => log.push(`${name} del ${show(fd)}`),
  };
}

function board() {
  const root = MemoryRegion.container("system", 1n << 64n);
  const bar = MemoryRegion.container("bar", 0x4000);
  const notify = MemoryRegion.io("notify", 0x1000, noop);
  bar.addSubregion(0x3000, notify);
  root.addSubregion(0xfe00_0000n, bar);
  const as = new AddressSpace(root, "memory");
  return { root, bar, notify, as };
}

Deno.test("an added eventfd reaches listeners at its absolute address, without begin/commit", () => {
  const { notify, as } = board();
  using _ = as;
  const rec = recorder();
  as.registerListener(rec);
  rec.log.length = 0;
  const fd = { fd: 3 };
  notify.addEventfd(4, 2, false, 0n, fd);
  assert.deepEqual(rec.log, ["rec add 0xfe003004/2"]);
  assert.deepEqual(as.ioeventfds.map((f) => f.start), [0xfe00_3004n]);
  notify.delEventfd(4, 2, false, 0n, fd);
  assert.deepEqual(rec.log, ["rec add 0xfe003004/2", "rec del 0xfe003004/2"]);
  assert.deepEqual(as.ioeventfds, []);
});

Deno.test("an eventfd follows its region: a moved BAR deletes at the old address and adds at the new", () => {
  const { bar, notify, as } = board();
  using _ = as;
  notify.addEventfd(0, 2, false, 0n, { fd: 1 });
  notify.addEventfd(4, 2, false, 0n, { fd: 2 });
  const rec = recorder();
  as.registerListener(rec);
  assert.deepEqual(rec.log, ["begin", "rec add 0xfe003000/2", "rec add 0xfe003004/2", "commit"]);
  rec.log.length = 0;
  bar.setAddress(0xfd00_0000n);
  assert.deepEqual(
    rec.log.filter((l) => l.includes("fd") || l.includes("0x")),
    ["rec add 0xfd003000/2", "rec add 0xfd003004/2", "rec del 0xfe003000/2", "rec del 0xfe003004/2"],
  );
  rec.log.length = 0;
  bar.setEnabled(false); // decoding off
  assert.deepEqual(rec.log.filter((l) => l.startsWith("rec")), [
    "rec del 0xfd003000/2",
    "rec del 0xfd003004/2",
  ]);
  rec.log.length = 0;
  as.unregisterListener(rec);
  assert.deepEqual(rec.log, ["begin", "commit"]);
});

Deno.test("a region hidden by a higher-priority overlap loses its eventfds; an alias shows them twice", () => {
  const { root, notify, as } = board();
  using _ = as;
  notify.addEventfd(0x10, 4, true, 0x1234n, { fd: 1 });
  const rec = recorder();
  as.registerListener(rec);
  rec.log.length = 0;
  const cover = MemoryRegion.io("cover", 0x1000, noop);
  root.addSubregionOverlap(0xfe00_3000n, cover, 1);
  assert.deepEqual(rec.log.filter((l) => l.startsWith("rec")), ["rec del 0xfe003010/4=4660"]);
  rec.log.length = 0;
  root.removeSubregion(cover);
  assert.deepEqual(rec.log.filter((l) => l.startsWith("rec")), ["rec add 0xfe003010/4=4660"]);
  const alias = MemoryRegion.alias("window", notify, 0, 0x1000);
  rec.log.length = 0;
  root.addSubregion(0x1000_0000n, alias);
  assert.deepEqual(rec.log.filter((l) => l.startsWith("rec")), ["rec add 0x10000010/4=4660"]);
  assert.deepEqual(as.ioeventfds.map((f) => f.start), [0x1000_0010n, 0xfe00_3010n]);
});

Deno.test("adds go highest priority first, deletes lowest first (QEMU's Reverse and Forward)", () => {
  const { notify, as } = board();
  using _ = as;
  const log: string[] = [];
  for (const [name, priority] of [["low", 0], ["high", 10]] as const) {
    as.registerListener({
      priority,
      eventfdAdd: (fd) => log.push(`${name} add 0x${fd.start.toString(16)}`),
      eventfdDel: (fd) => log.push(`${name} del 0x${fd.start.toString(16)}`),
    });
  }
  const fd = { fd: 9 };
  notify.addEventfd(8, 0, false, 0n, fd);
  notify.delEventfd(8, 0, false, 0n, fd);
  assert.deepEqual(log, [
    "high add 0xfe003008",
    "low add 0xfe003008",
    "low del 0xfe003008",
    "high del 0xfe003008",
  ]);
});

Deno.test("bad ioeventfds are refused with one line and change nothing", () => {
  const { notify, as } = board();
  using _ = as;
  const fd = { fd: 1 };
  notify.addEventfd(0, 2, true, 1n, fd);
  assert.throws(() => notify.addEventfd(0, 3, false, 0n, fd), /access size 3 is not 0, 1, 2, 4 or 8/);
  assert.throws(() => notify.addEventfd(0, 2, true, 0x1_0000n, fd), /data 65536n? does not fit in 2 bytes/);
  assert.throws(() => notify.addEventfd(0xfff, 2, false, 0n, fd), /passes the end of/);
  assert.throws(() => notify.addEventfd(0, 2, true, 1n, fd), /already has this ioeventfd/);
  assert.throws(() => notify.delEventfd(0, 2, true, 2n, fd), /has no such ioeventfd/);
  assert.throws(() => notify.addEventfd(0, 2, false, 0n, null as unknown as object), /must be an object/);
  assert.equal(notify.ioeventfds.length, 1);
  assert.equal(as.ioeventfds.length, 1);
});

Deno.test("property: what a listener accumulated from adds and deletes is what the view shows", () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant("move" as const), region: fc.nat(2), page: fc.nat(7) }),
    fc.record({ kind: fc.constant("enable" as const), region: fc.nat(2), on: fc.boolean() }),
    fc.record({
      kind: fc.constant("priority" as const),
      region: fc.nat(2),
      priority: fc.integer({ min: -1, max: 2 }),
    }),
    fc.record({ kind: fc.constant("fd" as const), region: fc.nat(2), slot: fc.nat(3) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
      const root = MemoryRegion.container("system", 0x10_0000);
      const regions = [0, 1, 2].map((i) => MemoryRegion.io(`dev${i}`, 0x2000, noop));
      regions.forEach((r, i) => root.addSubregionOverlap(BigInt(i) * 0x1000n, r, 0));
      const fds = [0, 1, 2].map(() => [0, 1, 2, 3].map((slot) => ({ slot })));
      const on = fds.map(() => [false, false, false, false]);
      using as = new AddressSpace(root, "memory");
      const held = new Map<string, number>();
      const key = (fd: IoeventfdSection) => `${fd.start}/${fd.size}/${(fd.eventfd as { slot: number }).slot}`;
      as.registerListener({
        eventfdAdd: (fd) => held.set(key(fd), (held.get(key(fd)) ?? 0) + 1),
        eventfdDel: (fd) => {
          const n = held.get(key(fd)) ?? 0;
          assert.ok(n > 0, `delete of ${key(fd)} that was never added`);
          if (n === 1) held.delete(key(fd));
          else held.set(key(fd), n - 1);
        },
      });
      for (const o of ops) {
        const r = regions[o.region];
        if (o.kind === "move") r.setAddress(BigInt(o.page) * 0x1000n);
        else if (o.kind === "enable") r.setEnabled(o.on);
        else if (o.kind === "priority") {
          const at = r.addr;
          root.removeSubregion(r);
          root.addSubregionOverlap(at, r, o.priority);
        } else {
          const offset = BigInt(o.slot) * 0x800n;
          if (on[o.region][o.slot]) r.delEventfd(offset, 4, false, 0n, fds[o.region][o.slot]);
          else r.addEventfd(offset, 4, false, 0n, fds[o.region][o.slot]);
          on[o.region][o.slot] = !on[o.region][o.slot];
        }
        // The model: each eventfd of each region, at every flat range of that region it falls into.
        const model = new Map<string, number>();
        for (const range of as.flatView()) {
          for (const fd of range.region.ioeventfds) {
            const start = fd.offset + range.start - range.offsetInRegion;
            if (start >= range.start && start < range.start + range.size) {
              const k = key({ ...fd, start });
              model.set(k, (model.get(k) ?? 0) + 1);
            }
          }
        }
        assert.deepEqual(new Map([...held].sort()), new Map([...model].sort()));
      }
    }),
    { numRuns: 200 },
  );
});
