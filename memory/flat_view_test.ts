import assert from "node:assert/strict";
import { AddressSpace, FlatView, MemoryRegion, UNASSIGNED_IO_OPS } from "../mod.ts";
import { describeRanges } from "./_test_util.ts";

const noop = { read: () => 0, write: () => {} };

// docs/devel/memory.rst, "Overlapping regions and priority": A holds B (container, prio 2) with
// D and E, and C (MMIO, prio 1).
function rstOverlapExample(bTerminates: boolean) {
  const a = MemoryRegion.container("A", 0x8000);
  const b = bTerminates ? MemoryRegion.io("B", 0x4000, noop) : MemoryRegion.container("B", 0x4000);
  const c = MemoryRegion.io("C", 0x6000, noop);
  b.addSubregion(0, MemoryRegion.io("D", 0x1000, noop));
  b.addSubregion(0x2000, MemoryRegion.io("E", 0x1000, noop));
  a.addSubregionOverlap(0x2000, b, 2);
  a.addSubregionOverlap(0, c, 1);
  return FlatView.render(a);
}

Deno.test("memory.rst overlap example: B's holes show C underneath", () => {
  assert.deepEqual(describeRanges(rstOverlapExample(false).ranges), [
    "0-1fff C@0",
    "2000-2fff D@0",
    "3000-3fff C@3000",
    "4000-4fff E@0",
    "5000-5fff C@5000",
  ]);
});

Deno.test("memory.rst overlap example: a terminating B fills its own holes", () => {
  assert.deepEqual(describeRanges(rstOverlapExample(true).ranges), [
    "0-1fff C@0",
    "2000-2fff D@0",
    "3000-3fff B@1000",
    "4000-4fff E@0",
    "5000-5fff B@3000",
  ]);
});

// docs/devel/memory.rst, "Example memory map": RAM split by two aliases around a PCI hole, with
// a VGA window diverted to PCI space.
Deno.test("memory.rst example memory map: lomem/himem aliases, PCI hole and VGA window", () => {
  const system = MemoryRegion.container("system", 1n << 48n);
  const ram = MemoryRegion.ram("ram", 0x1_0000_0000n);
  const pci = MemoryRegion.container("pci", 0x1_0000_0000n);
  const vram = MemoryRegion.ram("vram", 0x100_0000);
  const vgaArea = MemoryRegion.container("vga-area", 0x2_0000);
  vgaArea.addSubregion(0, MemoryRegion.alias("vga-lo", vram, 0x1_0000, 0x8000));
  vgaArea.addSubregion(0x8000, MemoryRegion.alias("vga-hi", vram, 0x2_0000, 0x8000));
  pci.addSubregion(0xa_0000, vgaArea);
  pci.addSubregion(0xe100_0000, vram);
  pci.addSubregion(0xe100_0000, MemoryRegion.io("vga-mmio", 0x1000, noop));
  system.addSubregion(0, MemoryRegion.alias("lomem", ram, 0, 0xe000_0000));
  system.addSubregion(0x1_0000_0000n, MemoryRegion.alias("himem", ram, 0xe000_0000, 0x2000_0000));
  system.addSubregionOverlap(0xa_0000, MemoryRegion.alias("vga-window", pci, 0xa_0000, 0x2_0000), 1);
  system.addSubregion(0xe000_0000, MemoryRegion.alias("pci-hole", pci, 0xe000_0000, 0x2000_0000));
  using as = new AddressSpace(system, "memory");
  assert.deepEqual(describeRanges(as.flatView()), [
    "0-9ffff ram@0",
    "a0000-a7fff vram@10000",
    "a8000-affff vram@20000",
    "b0000-dfffffff ram@b0000", // the VGA area's hole is transparent: lomem shows through
    "e1000000-e1000fff vga-mmio@0", // equal priority: added last, wins
    "e1001000-e1ffffff vram@1000",
    "100000000-11fffffff ram@e0000000",
  ]);
});

Deno.test("two abutting aliases of one RAM with continuous offsets merge into one range", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  const ram = MemoryRegion.ram("pc.ram", 0x20_0000);
  system.addSubregion(0, MemoryRegion.alias("lo", ram, 0, 0x10_0000));
  system.addSubregion(0x10_0000, MemoryRegion.alias("hi", ram, 0x10_0000, 0x10_0000));
  assert.deepEqual(describeRanges(FlatView.render(system).ranges), ["0-1fffff pc.ram@0"]);
});

Deno.test("unmergeable keeps alias boundaries visible", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  const ram = MemoryRegion.ram("pc.ram", 0x20_0000);
  const lo = MemoryRegion.alias("lo", ram, 0, 0x10_0000);
  lo.setUnmergeable(true);
  system.addSubregion(0, lo);
  system.addSubregion(0x10_0000, MemoryRegion.alias("hi", ram, 0x10_0000, 0x10_0000));
  assert.deepEqual(describeRanges(FlatView.render(system).ranges), [
    "0-fffff pc.ram@0",
    "100000-1fffff pc.ram@100000",
  ]);
});

Deno.test("partial overlap splits the loser: pci-conf-idx and piix3-reset-control", () => {
  const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  io.addSubregion(0xcf8, MemoryRegion.io("pci-conf-idx", 4, noop));
  io.addSubregionOverlap(0xcf9, MemoryRegion.io("piix3-reset-control", 1, noop), 1);
  const ranges = describeRanges(FlatView.render(io).ranges);
  assert.deepEqual(ranges.slice(1, 4), [
    "cf8-cf8 pci-conf-idx@0",
    "cf9-cf9 piix3-reset-control@0",
    "cfa-cfb pci-conf-idx@2",
  ]);
  assert.equal(ranges[0], "0-cf7 io@0");
  assert.equal(ranges[4], "cfc-ffff io@cfc");
});

Deno.test("equal priority: the newest child wins, and setAddress makes the moved one newest", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const older = MemoryRegion.ram("older", 0x1000);
  const newer = MemoryRegion.ram("newer", 0x1000);
  root.addSubregion(0, older);
  root.addSubregion(0, newer);
  assert.deepEqual(describeRanges(FlatView.render(root).ranges), ["0-fff newer@0"]);
  older.setAddress(0x800);
  older.setAddress(0);
  assert.deepEqual(describeRanges(FlatView.render(root).ranges), ["0-fff older@0"]);
});

Deno.test("disabled regions render nothing and hide nothing; readonly is inherited through aliases", () => {
  const root = MemoryRegion.container("root", 0x10000);
  const low = MemoryRegion.ram("low", 0x2000);
  const high = MemoryRegion.ram("high", 0x1000);
  root.addSubregion(0, low);
  root.addSubregionOverlap(0, high, 5);
  high.setEnabled(false);
  const ro = MemoryRegion.alias("ro-window", low, 0x1000, 0x1000);
  ro.setReadonly(true);
  root.addSubregionOverlap(0x4000, ro, 0);
  assert.deepEqual(describeRanges(FlatView.render(root).ranges), ["0-1fff low@0", "4000-4fff low@1000 ro"]);
});

Deno.test("a 2^64 root renders its last byte; a region at the top of the space is kept", () => {
  const root = MemoryRegion.container("system", 1n << 64n);
  const top = MemoryRegion.rom("top", 0x1000);
  root.addSubregion((1n << 64n) - 0x1000n, top);
  const [r] = FlatView.render(root).ranges;
  assert.equal(r.start, (1n << 64n) - 0x1000n);
  assert.equal(r.size, 0x1000n);
  assert.equal(r.readonly, true);
});

Deno.test("FlatView root: a container with one child at 0 reduces to that child, none gives (none)", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  assert.equal(FlatView.render(system).root, null);
  const ram = MemoryRegion.ram("ram", 64n << 20n);
  system.addSubregion(0, ram);
  assert.equal(FlatView.render(system).root, ram);
  system.addSubregion(0x1000_0000, MemoryRegion.ram("other", 0x1000));
  assert.equal(FlatView.render(system).root, system);
});
