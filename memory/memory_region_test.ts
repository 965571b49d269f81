import assert from "node:assert/strict";
import {
  AddressSpace,
  beginTransaction,
  commitTransaction,
  FlatView,
  formatMtree,
  type MemoryListener,
  MemoryRegion,
  MemTxResult,
  type RamBacking,
  type RamOptions,
  transaction,
  transactionDepth,
} from "../mod.ts";
import { describeRanges } from "./_test_util.ts";

const TOP = 1n << 64n;
const UINT64_MAX = TOP - 1n;
const names = (mr: MemoryRegion) => mr.subregions.map((r) => r.name);

Deno.test("subregion order: priority descending, newest first among equals (the PAM example)", () => {
  const system = MemoryRegion.container("system", TOP);
  const pci = MemoryRegion.container("pci", TOP);
  const ram = MemoryRegion.ram("pc.ram", 0x10_0000);
  const seg = (name: string, target: MemoryRegion) => MemoryRegion.alias(name, target, 0xc_0000, 0x4000);
  system.addSubregionOverlap(0xc_0000, seg("pam-pci@pci", pci), 1);
  system.addSubregionOverlap(0xc_0000, seg("pam-rom", ram), 1);
  system.addSubregionOverlap(0xc_0000, seg("pam-pci@pc.ram", ram), 1);
  system.addSubregionOverlap(0xc_0000, seg("pam-ram", ram), 1);
  assert.deepEqual(names(system), ["pam-ram", "pam-pci@pc.ram", "pam-rom", "pam-pci@pci"]);

  const c = MemoryRegion.container("c", 0x1000);
  for (
    const [name, prio] of [["a", 0], ["b", 2], ["c", -1], ["d", 2], ["e", 0], ["f", -(2 ** 31)]] as const
  ) {
    c.addSubregionOverlap(0, MemoryRegion.ram(name, 0x10), prio);
  }
  assert.deepEqual(names(c), ["d", "b", "e", "a", "c", "f"]);
});

Deno.test("setAddress re-inserts with the same priority: newest among equals; same address is a no-op", () => {
  const c = MemoryRegion.container("c", 0x10000);
  const [x, y, z] = ["x", "y", "z"].map((n) => MemoryRegion.ram(n, 0x1000));
  const high = MemoryRegion.ram("high", 0x1000);
  c.addSubregion(0, x);
  c.addSubregion(0, y);
  c.addSubregionOverlap(0x8000, high, 3);
  c.addSubregion(0, z);
  assert.deepEqual(names(c), ["high", "z", "y", "x"]);
  x.setAddress(0x4000);
  assert.deepEqual(names(c), ["high", "x", "z", "y"]);
  assert.deepEqual([x.addr, x.priority], [0x4000n, 0]);
  y.setAddress(0); // unchanged: stays oldest
  assert.deepEqual(names(c), ["high", "x", "z", "y"]);
  high.setAddress(0);
  assert.deepEqual([names(c)[0], high.priority], ["high", 3]);
  const loose = MemoryRegion.ram("loose", 0x10);
  loose.setAddress(0x1234); // no container: just records the address
  assert.equal(loose.addr, 0x1234n);
});

Deno.test("a size of 2^64-1 means 2^64, for every constructor and setSize", () => {
  const ram = MemoryRegion.ram("ram", 0x1000);
  const made = [
    MemoryRegion.container("c", UINT64_MAX),
    MemoryRegion.io("io", UINT64_MAX, {}),
    MemoryRegion.reservation("res", UINT64_MAX),
    MemoryRegion.alias("a", MemoryRegion.container("big", TOP), 0, UINT64_MAX),
  ];
  for (const mr of made) assert.equal(mr.size, TOP, mr.name);
  const sys = MemoryRegion.container("sys", 0x1000);
  sys.setSize(UINT64_MAX);
  assert.equal(sys.size, TOP);
  sys.addSubregion(0, ram);
  assert.equal(FlatView.render(sys).ranges[0].size, 0x1000n);
});

/** Everything observable about a set of regions, and the AS's view. */
function snapshot(regions: MemoryRegion[], as: AddressSpace): string {
  return JSON.stringify([
    regions.map((r) => [
      r.name,
      r.container?.name ?? null,
      r.addr.toString(16),
      r.priority,
      r.size.toString(16),
      r.aliasOffset.toString(16),
      r.enabled,
      r.romdMode,
      r.dirtyLogMask,
      names(r),
    ]),
    describeRanges(as.flatView()),
    describeRanges(FlatView.render(as.root).ranges),
  ]);
}

type ErrorClass = typeof TypeError | typeof RangeError;

Deno.test("bad graph edits and bad numbers throw, naming the region and value, and change nothing", () => {
  const system = MemoryRegion.container("system", TOP);
  const pci = MemoryRegion.container("pci", TOP);
  const sub = MemoryRegion.container("pci-sub", 0x10_0000);
  const ram = MemoryRegion.ram("pc.ram", 0x20_0000);
  const low = MemoryRegion.alias("ram-below-4g", ram, 0, 0x10_0000);
  const bios = MemoryRegion.rom("pc.bios", 0x4_0000);
  const top = MemoryRegion.ram("top-ram", 0x1000);
  const free = MemoryRegion.container("free", 0x1000);
  const io = MemoryRegion.io("uart", 8, {});
  system.addSubregion(0, low);
  system.addSubregionOverlap(0, pci, -1);
  pci.addSubregion(0x1000_0000, sub);
  pci.addSubregion(0xfffc_0000, bios);
  system.addSubregion(TOP - 0x1000n, top);
  const all = [system, pci, sub, ram, low, bios, top, free, io];
  using as = new AddressSpace(system, "memory");
  const events: string[] = [];
  as.registerListener({ begin: () => void events.push("begin") });
  events.length = 0;
  const cases: [string, () => unknown, ErrorClass, RegExp[]][] = [
    ["child of two containers", () => pci.addSubregion(0, low), TypeError, [/ram-below-4g/, /system/]],
    ["added twice", () => system.addSubregion(0x5000, low), TypeError, [/ram-below-4g/]],
    ["added to itself", () => free.addSubregion(0, free), TypeError, [/free/]],
    ["alias cycle", () => sub.addSubregion(0, MemoryRegion.alias("loop", pci, 0, 0x1000)), TypeError, [
      /loop/,
      /pci-sub/,
      /cycle/,
    ]],
    [
      "cycle via alias of alias",
      () => sub.addSubregion(0, MemoryRegion.alias("l2", MemoryRegion.alias("l1", system, 0, 0x10), 0, 0x10)),
      TypeError,
      [/l2/, /cycle/],
    ],
    ["container cycle", () => sub.addSubregion(0, system), TypeError, [/system/, /cycle/]],
    ["remove a non-child", () => pci.removeSubregion(low), TypeError, [/ram-below-4g/, /pci/]],
    ["remove a non-region", () => pci.removeSubregion({} as MemoryRegion), TypeError, [/pci/]],
    ["add a non-region", () => pci.addSubregion(0, {} as MemoryRegion), TypeError, [/pci/]],
    ["negative size", () => MemoryRegion.ram("neg", -1), RangeError, [/neg/, /-1/]],
    ["fractional size", () => MemoryRegion.container("frac", 1.5), RangeError, [/frac/, /1\.5/]],
    ["size past 2^64", () => MemoryRegion.io("huge", TOP + 1n, {}), RangeError, [
      /huge/,
      /10000000000000001/,
    ]],
    ["unsafe number size", () => MemoryRegion.ram("unsafe", 2 ** 60), RangeError, [/unsafe/, /2\^53/]],
    ["setSize negative", () => free.setSize(-5), RangeError, [/free/, /-5/]],
    ["setSize fractional", () => free.setSize(0.5), RangeError, [/free/, /0\.5/]],
    ["negative offset", () => system.addSubregion(-1, free), RangeError, [/free/, /-1/]],
    ["fractional offset", () => system.addSubregion(0.5, free), RangeError, [/free/, /0\.5/]],
    ["offset 2^64", () => system.addSubregion(TOP, free), RangeError, [/free/, /10000000000000000/]],
    ["end past 2^64", () => system.addSubregion(TOP - 0x800n, free), RangeError, [
      /free/,
      /fffffffffffff800/,
    ]],
    ["setAddress past 2^64", () => bios.setAddress(TOP - 0x100n), RangeError, [
      /pc\.bios/,
      /ffffffffffffff00/,
    ]],
    ["setAddress negative", () => bios.setAddress(-2), RangeError, [/pc\.bios/, /-2/]],
    ["setSize past 2^64", () => top.setSize(0x2000), RangeError, [/top-ram/, /0x2000/]],
    ["priority 2^31", () => system.addSubregionOverlap(0, free, 2 ** 31), RangeError, [/free/, /2147483648/]],
    ["priority < int32", () => system.addSubregionOverlap(0, free, -(2 ** 31) - 1), RangeError, [
      /free/,
      /-2147483649/,
    ]],
    ["priority 1.5", () => system.addSubregionOverlap(0, free, 1.5), RangeError, [/free/, /1\.5/]],
    ["priority NaN", () => system.addSubregionOverlap(0, free, NaN), RangeError, [/free/, /NaN/]],
    ["alias offset negative", () => MemoryRegion.alias("neg-off", ram, -1, 0x10), RangeError, [
      /neg-off/,
      /-1/,
    ]],
    ["alias target", () => MemoryRegion.alias("bad", {} as MemoryRegion, 0, 1), TypeError, [/bad/]],
    ["setAliasOffset non-alias", () => ram.setAliasOffset(0), TypeError, [/pc\.ram/]],
    ["setRomdMode non-ROM-device", () => bios.setRomdMode(false), TypeError, [/pc\.bios/]],
    ["setLog on I/O", () => io.setLog(true), TypeError, [/uart/]],
    ["setLog stop without start", () => ram.setLog(false), RangeError, [/pc\.ram/]],
    ["setLog unknown client", () => ram.setLog(true, 7), RangeError, [/pc\.ram/, /client 7/]],
    ["setLog client by name", () => ram.setLog(true, "length" as unknown as number), RangeError, [
      /pc\.ram/,
      /length/,
    ]],
    ["setLog on a string", () => ram.setLog("yes" as unknown as boolean), TypeError, [/pc\.ram/, /yes/]],
    ["setEnabled on a string", () => low.setEnabled("no" as unknown as boolean), TypeError, [
      /ram-below-4g/,
      /no/,
    ]],
    ["setReadonly on a number", () => ram.setReadonly(1 as unknown as boolean), TypeError, [/pc\.ram/, /1/]],
    ["ram options null", () => MemoryRegion.ram("opt", 0x1000, null as unknown as RamOptions), TypeError, [
      /opt/,
      /null/,
    ]],
    [
      "ram backing not one",
      () => MemoryRegion.ram("bk", 0x1000, { backing: 5 as unknown as RamBacking }),
      TypeError,
      [
        /bk/,
        /5/,
      ],
    ],
    ["attachRamBacking null", () => ram.attachRamBacking(null as unknown as RamBacking), TypeError, [
      /pc\.ram/,
      /null/,
    ]],
    ["region name a number", () => MemoryRegion.container(5 as unknown as string, 1), TypeError, [/5/]],
  ];
  for (const [label, fn, type, patterns] of cases) {
    const before = snapshot(all, as);
    assert.throws(fn, (e) => {
      assert.ok(e instanceof type, `${label}: ${e} is not a ${type.name}`);
      for (const p of patterns) assert.match((e as Error).message, p, label);
      return true;
    }, label);
    assert.equal(snapshot(all, as), before, `${label} changed the tree`);
    assert.deepEqual(events, [], `${label} rebuilt`);
    assert.equal(transactionDepth(), 0, `${label} left a transaction open`);
  }
  // The limits themselves are fine.
  system.addSubregionOverlap(0x2000, free, -(2 ** 31));
  free.setAddress(TOP - 0x1000n - free.size);
  assert.equal(MemoryRegion.alias("full", ram, 0x1f_f000, 0x1000).size, 0x1000n);
});

/** An AS over a fresh root with a listener counting rebuilds (its `begin` calls). */
function counted() {
  const root = MemoryRegion.container("root", 0x10_0000);
  const as = new AddressSpace(root, "counted");
  const counter = { rebuilds: 0 };
  as.registerListener({ begin: () => void counter.rebuilds++ });
  counter.rebuilds = 0;
  return { root, as, counter };
}

Deno.test("transactions: one rebuild per outermost commit", () => {
  const { root, as, counter } = counted();
  using _ = as;
  const make = (n: number) => Array.from({ length: n }, (_, i) => MemoryRegion.ram(`r${i}`, 0x100));
  for (const [i, r] of make(5).entries()) root.addSubregion(i * 0x1000, r);
  assert.equal(counter.rebuilds, 5);
  counter.rebuilds = 0;
  transaction(() => make(5).forEach((r, i) => root.addSubregion(0x1_0000 + i * 0x1000, r)));
  assert.equal(counter.rebuilds, 1);
  counter.rebuilds = 0;
  beginTransaction();
  beginTransaction();
  root.addSubregion(0x2_0000, MemoryRegion.ram("n1", 0x100));
  commitTransaction();
  root.addSubregion(0x2_1000, MemoryRegion.ram("n2", 0x100));
  assert.deepEqual([transactionDepth(), counter.rebuilds], [1, 0]);
  commitTransaction();
  assert.deepEqual([transactionDepth(), counter.rebuilds, as.flatView().length], [0, 1, 12]);
  assert.throws(() => commitTransaction(), Error);
  assert.equal(transactionDepth(), 0);
});

Deno.test("transaction(fn) commits even when fn throws, and rethrows fn's error", () => {
  const { root, as, counter } = counted();
  using _ = as;
  const oops = new Error("oops");
  assert.throws(() =>
    transaction(() => {
      root.addSubregion(0, MemoryRegion.ram("kept", 0x100));
      throw oops;
    }), (e) => e === oops);
  assert.deepEqual([transactionDepth(), counter.rebuilds, describeRanges(as.flatView())], [0, 1, [
    "0-ff kept@0",
  ]]);
  assert.equal(transaction(() => 42), 42);
});

Deno.test("commits that change nothing visible do not rebuild; unmapped enabled regions do (QEMU quirk)", () => {
  const { root, as, counter } = counted();
  using _ = as;
  const off = MemoryRegion.ram("off", 0x100);
  off.setEnabled(false);
  root.addSubregion(0, off);
  const dark = MemoryRegion.container("dark", 0x1000);
  root.addSubregion(0x1000, dark);
  counter.rebuilds = 0;
  dark.setEnabled(false);
  assert.equal(counter.rebuilds, 1, "setEnabled always rebuilds");
  counter.rebuilds = 0;
  const child = MemoryRegion.ram("child", 0x100);
  dark.addSubregion(0, child); // into a disabled container
  dark.removeSubregion(child);
  root.removeSubregion(off); // a disabled child
  root.addSubregion(0, off);
  off.setReadonly(true); // attribute of a disabled region
  off.setLog(true);
  off.setEnabled(false); // unchanged
  child.setAddress(0); // unchanged
  child.setSize(0x100); // unchanged
  transaction(() => {});
  assert.equal(counter.rebuilds, 0);

  const alias = MemoryRegion.alias("unmapped-alias", child, 0, 0x80);
  const flash = MemoryRegion.romDevice("unmapped-flash", 0x100, {});
  const edits: [string, () => void][] = [
    ["setReadonly", () => child.setReadonly(true)],
    ["setNonvolatile", () => child.setNonvolatile(true)],
    ["setUnmergeable", () => child.setUnmergeable(true)],
    ["setLog", () => child.setLog(true)],
    ["setAliasOffset", () => alias.setAliasOffset(0x10)],
    ["setRomdMode", () => flash.setRomdMode(false)],
    ["setSize", () => child.setSize(0x80)],
    ["setEnabled", () => child.setEnabled(false)],
    ["addSubregion", () => MemoryRegion.container("loose", 0x100).addSubregion(0, MemoryRegion.ram("x", 1))],
  ];
  for (const [label, edit] of edits) {
    counter.rebuilds = 0;
    edit();
    assert.equal(counter.rebuilds, 1, label);
  }
});

Deno.test("a listener editing regions in a callback gets one more rebuild, never a nested one", () => {
  const root = MemoryRegion.container("root", 0x10_0000);
  const trigger = MemoryRegion.ram("trigger", 0x1000);
  const late = MemoryRegion.ram("late", 0x1000);
  late.setEnabled(false);
  root.addSubregion(0x1000, late);
  using as = new AddressSpace(root, "memory");
  const log: string[] = [];
  let open = 0;
  const editor: MemoryListener = {
    begin: () => void log.push(`begin${open++ ? " NESTED" : ""}`),
    commit: () => void log.push(`commit${--open ? " NESTED" : ""}`),
    regionAdd: (s) => {
      log.push(`add ${s.region.name}`);
      if (s.region === trigger) late.setEnabled(true);
    },
  };
  const boom = new Error("boom");
  as.registerListener(editor);
  as.registerListener({
    priority: 5,
    regionAdd: (s) => {
      if (s.region === trigger) throw boom;
    },
  });
  log.length = 0;
  assert.throws(() => root.addSubregion(0, trigger), (e) => e === boom);
  assert.deepEqual(log, ["begin", "add trigger", "commit", "begin", "add late", "commit"]);
  assert.deepEqual(describeRanges(as.flatView()), ["0-fff trigger@0", "1000-1fff late@0"]);
  assert.equal(transactionDepth(), 0);
});

Deno.test("dirty pages: the bitmap follows the region's size, and ranges are checked", () => {
  const ram = MemoryRegion.ram("vga.vram", 0x2000);
  ram.markDirty(0, 1);
  ram.setSize(0x10000);
  ram.markDirty(0xf000n, 0x10n);
  assert.deepEqual(ram.takeDirtyPages(), [0n, 0xf000n], "a page past the first size is kept");
  ram.markDirty(0xfff0, 0x10);
  ram.setSize(0xf000);
  ram.setSize(0x10000);
  assert.deepEqual(ram.takeDirtyPages(), [], "a page cut off by a shrink is gone");
  ram.markDirty(0x1000, 0x1001);
  assert.deepEqual(ram.takeDirtyPages(0x2000, 0x1000), [0x2000n], "a sub-range takes only its pages");
  assert.deepEqual(ram.takeDirtyPages(0, 0x10000), [0x1000n]);

  const bad: [string, () => unknown, ErrorClass, RegExp[]][] = [
    ["markDirty past the end", () => ram.markDirty(0xffff, 2), RangeError, [/vga\.vram/, /ffff/]],
    ["markDirty 2^64", () => ram.markDirty(0, TOP), RangeError, [/vga\.vram/, /10000000000000000/]],
    ["markDirty negative", () => ram.markDirty(-1, 1), RangeError, [/vga\.vram/, /-1/]],
    ["markDirty string", () => ram.markDirty("0" as unknown as number, 1), TypeError, [
      /vga\.vram/,
      /"0"/,
    ]],
    ["takeDirtyPages past the end", () => ram.takeDirtyPages(0x1000, 0x10000), RangeError, [/vga\.vram/]],
    ["takeDirtyPages fractional", () => ram.takeDirtyPages(0.5), RangeError, [/vga\.vram/, /0\.5/]],
  ];
  ram.markDirty(0x2000, 1);
  for (const [label, fn, type, patterns] of bad) {
    assert.throws(fn, (e) => {
      assert.ok(e instanceof type, `${label}: ${e} is not a ${type.name}`);
      for (const p of patterns) assert.match((e as Error).message, p, label);
      return true;
    }, label);
  }
  assert.deepEqual(ram.takeDirtyPages(), [0x2000n], "refused calls changed nothing");
});

Deno.test("dirty pages of a region grown to 2^64: marking and taking cost what is dirty, not the size", () => {
  const huge = MemoryRegion.ram("huge", 0x1000);
  huge.markDirty(0, 1);
  huge.setSize(TOP);
  huge.markDirty(TOP - 0x1000n, 0x1000n);
  assert.deepEqual(huge.takeDirtyPages(), [0n, TOP - 0x1000n]);
  assert.deepEqual(huge.takeDirtyPages(), []);
  // Marking the whole 2^64 bytes (2^52 pages) would never end: refused, naming the region.
  assert.throws(() => huge.markDirty(0, TOP), (e) => e instanceof RangeError && /huge/.test(e.message));
  assert.deepEqual(huge.takeDirtyPages(), []);
});

Deno.test("alias windows as QEMU 7.2: one past its target is accepted and renders clipped to the target", () => {
  // memory_region_init_alias, memory_region_set_alias_offset and memory_region_set_size check
  // nothing; render_memory_region clips the walk into the target to the target's own size.
  const system = MemoryRegion.container("system", TOP);
  const ram = MemoryRegion.ram("ram", 0x2000);
  const win = MemoryRegion.alias("win", ram, 0x1000, 0x2000);
  system.addSubregion(0x1_0000, win);
  using as = new AddressSpace(system, "memory");
  assert.deepEqual(describeRanges(as.flatView()), ["10000-10fff ram@1000"]);
  ram.setSize(0x1800);
  assert.deepEqual(
    describeRanges(as.flatView()),
    ["10000-107ff ram@1000"],
    "a shrunk target clips the window",
  );
  win.setAliasOffset(0x3000);
  assert.deepEqual(describeRanges(as.flatView()), [], "a window wholly past the target shows nothing");
  assert.match(formatMtree([as]), /alias win @ram 0000000000003000-0000000000004fff\n/);
  win.setSize(0x10_0000);
  win.setAliasOffset(0);
  assert.deepEqual(describeRanges(as.flatView()), ["10000-117ff ram@0"]);
  assert.equal(as.read(0x1_1800, 1).result, MemTxResult.DECODE_ERROR, "past the target is a hole");
});

Deno.test("a root region moved by setAddress re-renders at the next commit, as in QEMU 7.2", () => {
  // memory_region_set_address only re-adds a region that has a container; a root's new address
  // is taken by the next rendering commit (render_memory_region adds the root's own addr).
  const root = MemoryRegion.container("root", 0x1_0000);
  root.addSubregion(0, MemoryRegion.ram("a", 0x1000));
  root.addSubregion(0x4000, MemoryRegion.ram("b", 0x1000));
  using as = new AddressSpace(root, "moved");
  const begins: number[] = [];
  as.registerListener({ begin: () => void begins.push(1) });
  begins.length = 0;
  root.setAddress(0x10_0000);
  assert.equal(root.addr, 0x10_0000n);
  assert.deepEqual(begins, [], "no rebuild of its own");
  assert.deepEqual(describeRanges(as.flatView()), ["0-fff a@0", "4000-4fff b@0"]);
  root.addSubregion(0x8000, MemoryRegion.ram("c", 0x1000));
  assert.deepEqual(describeRanges(as.flatView()), [
    "100000-100fff a@0",
    "104000-104fff b@0",
    "108000-108fff c@0",
  ]);
});
