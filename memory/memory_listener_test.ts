import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AddressSpace,
  beginTransaction,
  commitTransaction,
  FlatView,
  type MemoryListener,
  MemoryRegion,
  type MemoryRegionSection,
  transaction,
} from "../mod.ts";
import { apply, key, LiveSet, type Mut, mutArb } from "./_listener_model.ts";
import { buildTree, nodeArb } from "./_random_tree.ts";

const SEED = 0x11f7_e4e5;
const hex = (v: bigint) => v.toString(16);

Deno.test("listener property: live set tracks the flat view through random mutations", () => {
  fc.assert(
    fc.property(
      fc.array(nodeArb, { minLength: 1, maxLength: 30, size: "max" }),
      fc.boolean(),
      fc.array(mutArb, { minLength: 1, maxLength: 20, size: "max" }),
      (nodes, rootHuge, muts) => {
        const { root, pool } = buildTree(nodes, rootHuge);
        const as = new AddressSpace(root, "prop");
        const live = new LiveSet(() => as);
        live.replaying = "in";
        as.registerListener(live);
        live.replaying = false;
        try {
          run(muts, pool, root, as, live);
        } finally {
          live.replaying = "out";
          as.close();
        }
      },
    ),
    { seed: SEED, numRuns: 1000 },
  );
});

function run(muts: Mut[], pool: MemoryRegion[], root: MemoryRegion, as: AddressSpace, live: LiveSet) {
  for (const m of muts) {
    const rebuilds = live.rebuilds;
    apply(m, pool, as, live);
    if (m.op !== "replay") assert.ok(live.rebuilds - rebuilds <= 1, `${m.op}: more than one rebuild`);
    if (live.rebuilds > rebuilds && m.op !== "replay") live.checkRebuildCoverage();
    live.check();
    const fresh = FlatView.render(root).ranges.map((r) => key(r));
    assert.deepEqual(as.flatView().map((r) => key(r)), fresh, `${m.op}: view is stale`);
  }
}

/** A listener that logs `name callback region[start]` (and masks for log calls) into `log`. */
function tracer(log: string[], name: string, priority = 0, as?: () => AddressSpace): MemoryListener {
  const at = (s: MemoryRegionSection) => `${s.region.name}@${hex(s.start)}${s.readonly ? " ro" : ""}`;
  return {
    name,
    priority,
    begin: () => void log.push(`${name} begin`),
    commit: () => void log.push(`${name} commit${as ? ` ${as().flatView().length}` : ""}`),
    regionAdd: (s) => void log.push(`${name} add ${at(s)}`),
    regionDel: (s) => void log.push(`${name} del ${at(s)}`),
    regionNop: (s) => void log.push(`${name} nop ${at(s)}`),
    logStart: (s, o, n) => void log.push(`${name} logStart ${at(s)} ${o}>${n}`),
    logStop: (s, o, n) => void log.push(`${name} logStop ${at(s)} ${o}>${n}`),
  };
}

const each = (names: string[], what: string) => names.map((n) => `${n} ${what}`);

Deno.test("listener order: forward for begin/commit/add/nop/logStart, reverse for del/logStop", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const [d, k, g, n] = ["D", "K", "G", "N"].map((name) => MemoryRegion.ram(name, 0x1000));
  root.addSubregion(0, d);
  root.addSubregion(0x1000, k);
  root.addSubregion(0x2000, g);
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  for (const [name, prio] of [["L20", 20], ["L10a", 10], ["L0", 0], ["L10b", 10]] as const) {
    as.registerListener(tracer(log, name, prio));
  }
  const fwd = ["L0", "L10a", "L10b", "L20"];
  const rev = fwd.slice().reverse();
  assert.deepEqual(as.listeners.map((l) => l.name), fwd);
  log.length = 0;
  transaction(() => {
    root.removeSubregion(d);
    root.addSubregion(0x3000, n);
    g.setLog(true);
  });
  assert.deepEqual(log, [
    ...each(fwd, "begin"),
    ...each(rev, "del D@0"),
    ...each(fwd, "nop K@1000"),
    ...each(fwd, "nop G@2000"),
    ...each(fwd, "logStart G@2000 0>1"),
    ...each(fwd, "add N@3000"),
    ...each(fwd, "commit"),
  ]);
  log.length = 0;
  g.setLog(false);
  assert.deepEqual(log.filter((l) => l.includes("G@") || l.includes("begin")), [
    ...each(fwd, "begin"),
    ...each(fwd, "nop G@2000"),
    ...each(rev, "logStop G@2000 1>0"),
  ]);
});

Deno.test("register replays the view as adds (+ logStart) and unregister as dels; double register throws", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const vram = MemoryRegion.ram("vram", 0x1000);
  vram.setLog(true);
  root.addSubregion(0x1000, vram);
  root.addSubregion(0x4000, MemoryRegion.io("mmio", 0x100, {}));
  using as = new AddressSpace(root, "memory");
  using other = new AddressSpace(MemoryRegion.container("other", 0x1000), "other");
  const log: string[] = [];
  const l = tracer(log, "L");
  as.registerListener(l);
  assert.deepEqual(log, [
    "L begin",
    "L add vram@1000",
    "L logStart vram@1000 0>1",
    "L add mmio@4000",
    "L commit",
  ]);
  log.length = 0;
  assert.throws(() => as.registerListener(l), TypeError);
  assert.throws(() => other.registerListener(l), TypeError);
  assert.deepEqual([log, as.listeners.length, other.listeners.length], [[], 1, 0]);
  as.unregisterListener(l);
  assert.deepEqual(log, [
    "L begin",
    "L logStop vram@1000 1>0",
    "L del vram@1000",
    "L del mmio@4000",
    "L commit",
  ]);
  log.length = 0;
  as.unregisterListener(l); // not registered: no-op
  root.addSubregion(0x8000, MemoryRegion.ram("late", 0x100));
  assert.equal(log.length, 0);

  // Registration is not deferred by an open transaction: the replay shows the committed view.
  beginTransaction();
  root.removeSubregion(vram);
  as.registerListener(l);
  assert.deepEqual(log.filter((e) => e.includes("vram")), ["L add vram@1000", "L logStart vram@1000 0>1"]);
  log.length = 0;
  commitTransaction();
  assert.ok(log.includes("L del vram@1000"));
});

Deno.test("a listener that throws during its register replay is not registered", () => {
  const root = MemoryRegion.container("root", 0x10000);
  root.addSubregion(0, MemoryRegion.ram("ram", 0x1000));
  using as = new AddressSpace(root, "memory");
  const calls: string[] = [];
  const bad: MemoryListener = {
    begin: () => void calls.push("begin"),
    regionAdd: () => {
      throw new Error("no memslots left");
    },
  };
  assert.throws(() => as.registerListener(bad), /no memslots left/);
  assert.equal(as.listeners.length, 0);
  root.addSubregion(0x2000, MemoryRegion.ram("more", 0x1000));
  assert.deepEqual(calls, ["begin"], "never called again");
  const good = tracer([], "good");
  as.registerListener(good);
  assert.deepEqual(as.listeners, [good]);
});

Deno.test("every rebuild calls begin/commit on every listener of every AS, changed or not", () => {
  const r1 = MemoryRegion.container("r1", 0x10000);
  const r2 = MemoryRegion.container("r2", 0x10000);
  r2.addSubregion(0, MemoryRegion.ram("still", 0x1000));
  using as1 = new AddressSpace(r1, "one");
  using as2 = new AddressSpace(r2, "two");
  const log: string[] = [];
  as1.registerListener(tracer(log, "A"));
  as2.registerListener(tracer(log, "B"));
  log.length = 0;
  r1.addSubregion(0, MemoryRegion.ram("new", 0x1000));
  assert.deepEqual(log, ["A begin", "B begin", "A add new@0", "B nop still@0", "A commit", "B commit"]);
  log.length = 0;
  MemoryRegion.container("unmapped", 0x100).addSubregion(0, MemoryRegion.ram("x", 0x10)); // QEMU quirk
  assert.deepEqual(log, ["A begin", "B begin", "A nop new@0", "B nop still@0", "A commit", "B commit"]);
});

Deno.test("diffs: a readonly flip is del + add; a PAM-like split deletes the whole range first", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  const ram = MemoryRegion.ram("pc.ram", 0x10_0000);
  const low = MemoryRegion.alias("ram-below-4g", ram, 0, 0x10_0000);
  system.addSubregion(0, low);
  using as = new AddressSpace(system, "memory");
  // QEMU quirk (memory_region_get_flatview_root): a lone full alias at 0 is skipped, flags and all.
  low.setReadonly(true);
  assert.deepEqual([as.view.root, as.flatView()[0].readonly], [ram, false]);
  low.setReadonly(false);
  system.addSubregion(0xfee0_0000, MemoryRegion.io("apic", 0x1000, {}));
  const log: string[] = [];
  as.registerListener(tracer(log, "K"));
  log.length = 0;
  low.setReadonly(true);
  assert.deepEqual(log, [
    "K begin",
    "K del pc.ram@0",
    "K add pc.ram@0 ro",
    "K nop apic@fee00000",
    "K commit",
  ]);
  low.setReadonly(false);
  log.length = 0;
  const pamRom = MemoryRegion.alias("pam-rom", ram, 0xc_0000, 0x4000);
  pamRom.setReadonly(true); // enabled, unmapped: still a (no-op) rebuild, as in QEMU
  log.length = 0;
  system.addSubregionOverlap(0xc_0000, pamRom, 1);
  assert.deepEqual(log, [
    "K begin",
    "K del pc.ram@0",
    "K add pc.ram@0",
    "K add pc.ram@c0000 ro",
    "K add pc.ram@c4000",
    "K nop apic@fee00000",
    "K commit",
  ]);
  log.length = 0;
  ram.setLog(true);
  ram.setLog(false);
  assert.deepEqual(log.filter((e) => !e.includes("nop") && !e.includes("begin") && !e.includes("commit")), [
    "K logStart pc.ram@0 0>1",
    "K logStart pc.ram@c0000 ro 0>1",
    "K logStart pc.ram@c4000 0>1",
    "K logStop pc.ram@0 1>0",
    "K logStop pc.ram@c0000 ro 1>0",
    "K logStop pc.ram@c4000 1>0",
  ]);
});

Deno.test("two ASes sharing a FlatView root deliver the same diff", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  system.addSubregion(0, MemoryRegion.ram("pc.ram", 0x10_0000));
  system.addSubregion(0xfee0_0000, MemoryRegion.io("apic", 0x1000, {}));
  using mem = new AddressSpace(system, "memory");
  using cpu = new AddressSpace(MemoryRegion.alias("cpu-view", system, 0, 1n << 64n), "cpu-memory-0");
  assert.equal(mem.view, cpu.view);
  const a: string[] = [];
  const b: string[] = [];
  mem.registerListener(tracer(a, "L"));
  cpu.registerListener(tracer(b, "L"));
  transaction(() => {
    system.addSubregionOverlap(0xc_0000, MemoryRegion.rom("pc.rom", 0x2_0000), 1);
    system.subregions.find((r) => r.name === "apic")!.setEnabled(false);
  });
  assert.equal(mem.view, cpu.view);
  assert.deepEqual(a.filter((e) => !e.includes("begin") && !e.includes("commit")), [
    ...["L add pc.ram@0", "L add apic@fee00000"],
    ...[
      "L del pc.ram@0",
      "L del apic@fee00000",
      "L add pc.ram@0",
      "L add pc.rom@c0000 ro",
      "L add pc.ram@e0000",
    ],
  ]);
  assert.deepEqual(b, a);
});

Deno.test("a listener throwing in regionAdd stops no one; the error is rethrown after every AS is updated", () => {
  const r1 = MemoryRegion.container("r1", 0x10000);
  const r2 = MemoryRegion.container("r2", 0x10000);
  using as1 = new AddressSpace(r1, "one");
  using as2 = new AddressSpace(r2, "two");
  const log: string[] = [];
  const boom = new Error("KVM_SET_USER_MEMORY_REGION failed");
  const thrower = tracer(log, "T", 0);
  thrower.regionAdd = () => {
    log.push("T throws");
    throw boom;
  };
  as1.registerListener(thrower);
  as1.registerListener(tracer(log, "A", 10, () => as1));
  as2.registerListener(tracer(log, "B", 5, () => as2));
  log.length = 0;
  assert.throws(() =>
    transaction(() => {
      r1.addSubregion(0, MemoryRegion.ram("x", 0x1000));
      r2.addSubregion(0, MemoryRegion.ram("y", 0x1000));
    }), (e) => e === boom);
  assert.deepEqual(log, [
    "T begin",
    "B begin",
    "A begin",
    "T throws",
    "A add x@0",
    "B add y@0",
    "T commit",
    "B commit 1",
    "A commit 1",
  ]);
  assert.equal(as2.flatView().length, 1);
});

Deno.test("a listener's begin that closes or creates an address space leaves every other view right", () => {
  // QEMU's memory_region_transaction_commit looks each address space's new view up by its root
  // (address_space_set_flatview), so changes to the list during the callbacks cannot misplace one.
  const roots = ["a", "b", "c"].map((n) => MemoryRegion.container(`root-${n}`, 0x10_0000));
  const [a, b, c] = roots.map((r, i) => new AddressSpace(r, `as-${i}`));
  const dRoot = MemoryRegion.container("root-d", 0x10_0000);
  dRoot.addSubregion(0x3000, MemoryRegion.ram("d-ram", 0x1000));
  let d: AddressSpace | undefined;
  const once = { close: false, create: false };
  const listener: MemoryListener = {
    begin: () => {
      if (once.close) [once.close] = [false, b.close()];
      if (once.create) [once.create] = [false, d = new AddressSpace(dRoot, "as-d")];
    },
  };
  a.registerListener(listener);
  [once.close, once.create] = [true, true]; // not during the registration's replay
  try {
    transaction(() => {
      roots[0].addSubregion(0x1000, MemoryRegion.ram("a-ram", 0x1000));
      roots[2].addSubregion(0x2000, MemoryRegion.ram("c-ram", 0x1000));
    });
    for (const as of [a, c, d!]) {
      assert.ok(as.view, `${as.name} has a view`);
      assert.deepEqual(
        as.flatView().map((r) => `${r.region.name}@${hex(r.start)}`),
        FlatView.render(as.root).ranges.map((r) => `${r.region.name}@${hex(r.start)}`),
        `${as.name}'s view is its own root's`,
      );
    }
    assert.ok(!AddressSpace.all().includes(b));
  } finally {
    a.unregisterListener(listener);
    for (const as of [a, b, c, d]) as?.close();
  }
});
