/**
 * `formatMtree` against QEMU 7.2's own `info mtree` text, for layouts built the same way in both.
 * The golden files record the QEMU command that printed them (tests/golden/capture_qemu.ts).
 */
import assert from "node:assert/strict";
import { AddressSpace, formatMtree, MemoryRegion, UNASSIGNED_IO_OPS } from "../mod.ts";
import { buildPcMemory } from "../machine/pc/pc_memory.ts";
import { blocks, fakeHostMemory, kvmListenerWithoutKvm, readGolden } from "./_golden.ts";

/** Not modeled by this board (listed in the README). */
const NOT_MODELED = [/\): hpet$/];

function assertBlocksIn(ours: string, golden: string, label: string): void {
  const theirs = blocks(golden, NOT_MODELED);
  for (const block of blocks(ours)) {
    assert.ok(
      theirs.includes(block),
      `${label}: this block is not in QEMU's output:\n${block}\n--- QEMU:\n${theirs.join("\n\n")}`,
    );
  }
}

Deno.test("-machine none -m 64M: tree and flat views match QEMU byte for byte", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  system.addSubregion(0, MemoryRegion.ram("ram", 64n << 20n, { backing: fakeHostMemory(64n << 20n) }));
  using memory = new AddressSpace(system, "memory");
  using io = new AddressSpace(MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS), "I/O");
  const kvm = kvmListenerWithoutKvm();
  memory.registerListener(kvm);
  // Every block, both ways: the same set of blocks as QEMU printed.
  assert.deepEqual(blocks(formatMtree([memory, io])).sort(), blocks(readGolden("none-64M.mtree.txt")).sort());
  assert.deepEqual(
    blocks(formatMtree([memory, io], { flat: true })).sort(),
    blocks(readGolden("none-64M.mtree-f.txt")).sort(),
  );
  // And the text ends as QEMU's does: a blank line after the last block.
  assert.ok(formatMtree([memory, io]).endsWith("\n\n"));
  memory.unregisterListener(kvm);
});

for (
  const [label, size] of [["128M", 128n << 20n], ["256M", 256n << 20n], ["3584M", 3584n << 20n], [
    "8G",
    8n << 30n,
  ]] as const
) {
  Deno.test(`-machine pc -m ${label}: the memory address space matches QEMU (tree and flat)`, () => {
    const pc = buildPcMemory({
      ramSize: size,
      ramBacking: fakeHostMemory(size),
      biosBacking: fakeHostMemory(0x40000n),
      romBacking: fakeHostMemory(0x20000n),
    });
    using memory = new AddressSpace(pc.system, "memory");
    using cpuMemory = new AddressSpace(pc.system, "cpu-memory-0");
    const kvm = kvmListenerWithoutKvm();
    memory.registerListener(kvm);
    assertBlocksIn(formatMtree([memory, cpuMemory]), readGolden(`pc-${label}.mtree.txt`), `pc-${label} tree`);
    assertBlocksIn(
      formatMtree([memory, cpuMemory], { flat: true }),
      readGolden(`pc-${label}.mtree-f.txt`),
      `pc-${label} flat`,
    );
    memory.unregisterListener(kvm);
  });
}

Deno.test("-machine pc -m 256M: info mtree -D (disabled PAM aliases in QEMU's list order) matches QEMU", () => {
  const pc = buildPcMemory({ ramSize: 256n << 20n });
  using memory = new AddressSpace(pc.system, "memory");
  using cpuMemory = new AddressSpace(pc.system, "cpu-memory-0");
  assertBlocksIn(
    formatMtree([memory, cpuMemory], { disabled: true }),
    readGolden("pc-256M.mtree-D.txt"),
    "pc-256M -D",
  );
});
