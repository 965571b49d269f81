import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AddressSpace,
  beginTransaction,
  commitTransaction,
  flushCoalescedMmio,
  type MemoryListener,
  MemoryRegion,
  type MemoryRegionSection,
  registerCoalescedFlusher,
} from "../mod.ts";

const hex = (v: bigint) => v.toString(16);

/** Logs region adds/dels and coalesced adds/dels as `name what region@start [zone]`. */
function tracer(log: string[], name: string, priority = 0): MemoryListener {
  const at = (s: MemoryRegionSection) => `${s.region.name}@${hex(s.start)}`;
  return {
    name,
    priority,
    regionAdd: (s) => void log.push(`${name} add ${at(s)}`),
    regionDel: (s) => void log.push(`${name} del ${at(s)}`),
    coalescedIoAdd: (s, start, size) => void log.push(`${name} cadd ${at(s)} ${hex(start)}+${hex(size)}`),
    coalescedIoDel: (s, start, size) => void log.push(`${name} cdel ${at(s)} ${hex(start)}+${hex(size)}`),
  };
}

const noop = { write: () => {} };

Deno.test("addCoalescing tells every listener at once, in address-space addresses, lowest priority first", () => {
  const io = MemoryRegion.container("io", 0x10000);
  const idx = MemoryRegion.io("pci-conf-idx", 4, noop);
  io.addSubregion(0xcf8, idx);
  using as = new AddressSpace(io, "I/O");
  const log: string[] = [];
  as.registerListener(tracer(log, "B", 10));
  as.registerListener(tracer(log, "A", 0));
  log.length = 0;
  assert.equal(idx.flushCoalesced, false);
  idx.addCoalescing(1, 2);
  assert.deepEqual(log, ["A cadd pci-conf-idx@cf8 cf9+2", "B cadd pci-conf-idx@cf8 cf9+2"]);
  assert.equal(idx.flushCoalesced, true);
  assert.deepEqual(idx.coalesced, [{ offset: 1n, size: 2n }]);
});

Deno.test("a coalesced range is clipped to each flat range of its region; one it does not meet is skipped", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const dev = MemoryRegion.io("dev", 0x100, noop);
  const cover = MemoryRegion.io("cover", 0x10, noop);
  root.addSubregion(0x1000, dev);
  root.addSubregionOverlap(0x1040, cover, 1); // splits dev into [0x1000,0x1040) and [0x1050,0x1100)
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  as.registerListener(tracer(log, "L"));
  log.length = 0;
  dev.addCoalescing(0x30, 0x30); // 0x1030..0x1060: both pieces
  dev.addCoalescing(0x80, 0x10); // only the second piece
  assert.deepEqual(log, [
    "L cadd dev@1000 1030+10",
    "L cadd dev@1050 1050+10",
    "L cadd dev@1050 1080+10",
  ]);
});

Deno.test("a moved region's coalesced ranges follow it: cdel before its del, cadd after its add", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const dev = MemoryRegion.io("dev", 0x10, noop);
  root.addSubregion(0x100, dev);
  dev.setCoalescing();
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  as.registerListener(tracer(log, "A", 0));
  as.registerListener(tracer(log, "B", 10));
  log.length = 0;
  dev.setAddress(0x200);
  assert.deepEqual(log, [
    "B cdel dev@100 100+10",
    "A cdel dev@100 100+10",
    "B del dev@100",
    "A del dev@100",
    "A add dev@200",
    "B add dev@200",
    "A cadd dev@200 200+10",
    "B cadd dev@200 200+10",
  ]);
});

Deno.test("an alias shows its target's coalesced ranges at the alias's addresses", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const dev = MemoryRegion.io("dev", 0x100, noop);
  dev.addCoalescing(0x20, 8);
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  as.registerListener(tracer(log, "L"));
  root.addSubregion(0x4000, MemoryRegion.alias("win", dev, 0x10, 0x40));
  assert.deepEqual(log, ["L add dev@4000", "L cadd dev@4000 4010+8"]);
});

Deno.test("clearCoalescing flushes, clears the flag and deletes each range; clearing nothing does nothing", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const dev = MemoryRegion.io("dev", 0x100, noop);
  root.addSubregion(0x1000, dev);
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  as.registerListener(tracer(log, "L"));
  let flushes = 0;
  using _f = registerCoalescedFlusher(() => void flushes++);
  dev.clearCoalescing();
  assert.equal(flushes, 0);
  dev.addCoalescing(0, 4);
  dev.addCoalescing(8, 4);
  log.length = 0;
  dev.clearCoalescing();
  assert.equal(flushes, 1);
  assert.deepEqual(log, ["L cdel dev@1000 1000+4", "L cdel dev@1000 1008+4"]);
  assert.equal(dev.flushCoalesced, false);
  assert.deepEqual(dev.coalesced, []);
});

Deno.test("clearFlushCoalesced flushes, and keeps the flag of a region that coalesces itself", () => {
  const data = MemoryRegion.io("pci-conf-data", 4, noop);
  const idx = MemoryRegion.io("pci-conf-idx", 4, noop);
  let flushes = 0;
  using _f = registerCoalescedFlusher(() => void flushes++);
  data.setFlushCoalesced();
  idx.addCoalescing(0, 4);
  data.clearFlushCoalesced();
  idx.clearFlushCoalesced();
  assert.equal(flushes, 2);
  assert.equal(data.flushCoalesced, false);
  assert.equal(idx.flushCoalesced, true);
});

Deno.test("register replays coalesced ranges after each add, stopping at the first that misses; unregister before each del", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const dev = MemoryRegion.io("dev", 0x100, noop);
  const cover = MemoryRegion.io("cover", 0x10, noop);
  root.addSubregion(0x1000, dev);
  root.addSubregionOverlap(0x1040, cover, 1);
  dev.addCoalescing(0x60, 8); // misses the first piece: its replay stops here (QEMU's quirk)
  dev.addCoalescing(0x00, 8);
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  const l = tracer(log, "L");
  as.registerListener(l);
  assert.deepEqual(log, [
    "L add dev@1000",
    "L add cover@1040",
    "L add dev@1050",
    "L cadd dev@1050 1060+8", // the second range misses this piece: stop again
  ]);
  log.length = 0;
  as.unregisterListener(l);
  assert.deepEqual(log, ["L del dev@1000", "L del cover@1040", "L cdel dev@1050 1060+8", "L del dev@1050"]);
});

Deno.test("a flusher runs at each transaction and before each access to a region that asks for it", () => {
  const io = MemoryRegion.container("io", 0x10000);
  const seen: string[] = [];
  const idx = MemoryRegion.io("idx", 4, { write: (_o, v) => void seen.push(`idx=${v}`) });
  const data = MemoryRegion.io("data", 4, { read: () => (seen.push("data read"), 0), write: () => {} });
  const other = MemoryRegion.io("other", 4, { read: () => (seen.push("other read"), 0) });
  io.addSubregion(0xcf8, idx);
  io.addSubregion(0xcfc, data);
  io.addSubregion(0x80, other);
  data.setFlushCoalesced();
  using as = new AddressSpace(io, "I/O");
  // A queue of one pending write, played back through the address space as an accelerator does.
  const queue: number[] = [];
  using _f = registerCoalescedFlusher(() => {
    while (queue.length > 0) as.write(0xcf8, 4, queue.shift()!);
  });
  queue.push(0x8000_0000);
  as.read(0x80, 4);
  assert.deepEqual(seen, ["other read"]); // no flush for a region that does not ask
  as.read(0xcfc, 4);
  assert.deepEqual(seen, ["other read", `idx=${0x8000_0000}`, "data read"]);
  queue.push(7);
  beginTransaction();
  commitTransaction();
  assert.deepEqual(seen.at(-1), "idx=7");
});

Deno.test("a flush that re-enters returns at once; a flusher's error reaches the caller after the others ran", () => {
  let inner = 0;
  let outer = 0;
  using _a = registerCoalescedFlusher(() => {
    outer++;
    flushCoalescedMmio(); // re-entry: ignored
  });
  using _b = registerCoalescedFlusher(() => {
    inner++;
    throw new Error("ring broken");
  });
  assert.throws(() => flushCoalescedMmio(), /ring broken/);
  assert.equal(outer, 1);
  assert.equal(inner, 1);
  assert.throws(() => flushCoalescedMmio(), /ring broken/); // not stuck in "flushing"
  assert.equal(outer, 2);
});

Deno.test("bad coalesced ranges are refused with one line and change nothing", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const dev = MemoryRegion.io("dev", 0x10, noop);
  root.addSubregion(0, dev);
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  as.registerListener(tracer(log, "L"));
  log.length = 0;
  assert.throws(() => dev.addCoalescing(0, 0), /addCoalescing: .* is empty or passes the end of/);
  assert.throws(() => dev.addCoalescing(8, 9), /passes the end/);
  assert.throws(() => dev.addCoalescing(-1, 1), RangeError);
  assert.throws(() => dev.addCoalescing("x" as unknown as number, 1), TypeError);
  assert.deepEqual(log, []);
  assert.deepEqual(dev.coalesced, []);
  assert.equal(dev.flushCoalesced, false);
  assert.throws(() => registerCoalescedFlusher(42 as unknown as () => void), TypeError);
});

Deno.test("property: the zones a listener holds are the coalesced ranges the view shows", () => {
  // Regions with coalesced ranges are moved, hidden, shown and cleared at random; the zones the
  // listener accumulated (adds minus dels) must equal what a fresh registration replays, less the
  // replay's quirk: so the model is computed directly from the flat view.
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          op: fc.constantFrom("move", "hide", "show", "add", "clear", "cover", "uncover"),
          which: fc.nat(2),
          at: fc.nat(15),
          off: fc.nat(15),
          len: fc.integer({ min: 1, max: 16 }),
        }),
        { maxLength: 25 },
      ),
      (ops) => {
        const root = MemoryRegion.container("root", 0x1000);
        const devs = [0, 1, 2].map((i) => MemoryRegion.io(`d${i}`, 0x20, noop));
        devs.forEach((d, i) => root.addSubregion(i * 0x100, d));
        const cover = MemoryRegion.io("cover", 0x10, noop);
        using as = new AddressSpace(root, "memory");
        const held = new Map<string, number>();
        as.registerListener({
          coalescedIoAdd: (_s, start, size) => {
            const k = `${start}+${size}`;
            held.set(k, (held.get(k) ?? 0) + 1);
          },
          coalescedIoDel: (_s, start, size) => {
            const k = `${start}+${size}`;
            const n = held.get(k) ?? 0;
            assert.ok(n > 0, `del of a zone never added: ${k}`);
            if (n === 1) held.delete(k);
            else held.set(k, n - 1);
          },
        });
        for (const o of ops) {
          const d = devs[o.which];
          if (o.op === "move") d.setAddress(o.which * 0x100 + o.at * 8);
          else if (o.op === "hide") d.setEnabled(false);
          else if (o.op === "show") d.setEnabled(true);
          else if (o.op === "add" && o.off + o.len <= 0x20) d.addCoalescing(o.off, o.len);
          else if (o.op === "clear") d.clearCoalescing();
          else if (o.op === "cover" && !cover.container) root.addSubregionOverlap(d.addr + 8n, cover, 1);
          else if (o.op === "uncover" && cover.container) root.removeSubregion(cover);
          const want = new Map<string, number>();
          for (const r of as.flatView()) {
            for (const c of r.region.coalesced) {
              const s = c.offset + r.start - r.offsetInRegion;
              const lo = s > r.start ? s : r.start;
              const hi = s + c.size < r.start + r.size ? s + c.size : r.start + r.size;
              if (lo < hi) want.set(`${lo}+${hi - lo}`, (want.get(`${lo}+${hi - lo}`) ?? 0) + 1);
            }
          }
          assert.deepEqual(held, want);
        }
      },
    ),
    { seed: 0xc0a1e5ce, numRuns: 300 },
  );
});
