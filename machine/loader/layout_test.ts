import assert from "node:assert/strict";
import { rangesOverlap } from "../../memory/mod.ts";
import * as layout from "./layout.ts";

Deno.test("the loaders' low-memory areas are disjoint, above the BDA and below 64 KiB", () => {
  const areas: [string, bigint, bigint][] = [
    ["gdt", layout.BOOT_GDT_START, layout.BOOT_GDT_SIZE],
    ["stack", layout.BOOT_STACK_START, layout.BOOT_STACK_TOP - layout.BOOT_STACK_START],
    ["mmap", layout.MULTIBOOT_MMAP_START, layout.MULTIBOOT_MMAP_SIZE],
    ["info", layout.MULTIBOOT_INFO_START, layout.MULTIBOOT_INFO_SIZE],
    ["name", layout.MULTIBOOT_LOADER_NAME_START, layout.MULTIBOOT_LOADER_NAME_SIZE],
    ["cmdline", layout.MULTIBOOT_CMDLINE_START, layout.MULTIBOOT_CMDLINE_SIZE],
    ["pml4", layout.BOOT_PML4_START, 0x1000n],
    ["pdpt", layout.BOOT_PDPT_START, 0x1000n],
    ["pd", layout.BOOT_PD_START, BigInt(layout.BOOT_PD_COUNT) * 0x1000n],
    ["zero page", layout.LINUX_ZERO_PAGE_START, layout.LINUX_ZERO_PAGE_SIZE],
    ["linux cmdline", layout.LINUX_CMDLINE_START, layout.LINUX_CMDLINE_SIZE],
  ];
  for (const [name, start, size] of areas) {
    const linux = name === "zero page" || name === "linux cmdline";
    assert.ok(start >= 0x500n && start + size <= (linux ? 0x4_0000n : layout.BOOT_PAGE_TABLES_END), name);
    for (const [other, otherStart, otherSize] of areas) {
      if (other !== name) assert.ok(!rangesOverlap(start, size, otherStart, otherSize), `${name} / ${other}`);
    }
  }
  for (const name of ["info", "name", "cmdline", "mmap"]) {
    const [, start, size] = areas.find(([n]) => n === name)!;
    assert.ok(
      start >= layout.MULTIBOOT_AREA_START &&
        start + size <= layout.MULTIBOOT_AREA_START + layout.MULTIBOOT_AREA_SIZE,
      `${name} is in the Multiboot page`,
    );
  }
  assert.equal(layout.BOOT_PML4_START % 0x1000n, 0n);
  assert.equal(layout.BOOT_PDPT_START % 0x1000n, 0n);
  assert.equal(layout.BOOT_PD_START % 0x1000n, 0n);
  assert.equal(layout.BOOT_PD_START + BigInt(layout.BOOT_PD_COUNT) * 0x1000n, layout.BOOT_PAGE_TABLES_END);
  assert.equal(BigInt(layout.BOOT_PD_COUNT) << 30n, layout.BOOT_IDENTITY_MAP_END);
  // The Linux areas: page-aligned, below the kernel and the initrd (1 MiB and up), inside the
  // conventional memory every PC e820 map reports as RAM (below 0x9fc00).
  for (const start of [layout.LINUX_ZERO_PAGE_START, layout.LINUX_CMDLINE_START]) {
    assert.equal(start % 0x1000n, 0n);
  }
  assert.ok(layout.LINUX_CMDLINE_START + layout.LINUX_CMDLINE_SIZE <= 0x9_fc00n);
  assert.equal(layout.LINUX_KERNEL_START, 0x10_0000n);
  assert.equal(layout.LINUX_INITRD_LOWEST, 0x10_0000n);
});

Deno.test("the boot GDT descriptors: flat 4 GiB, present, DPL 0, of the documented types", () => {
  const decode = (d: bigint) => ({
    base: Number(((d >> 16n) & 0xff_ffffn) | (((d >> 56n) & 0xffn) << 24n)),
    limit: Number((d & 0xffffn) | (((d >> 48n) & 0xfn) << 16n)),
    type: Number((d >> 40n) & 0xfn),
    s: Number((d >> 44n) & 1n),
    dpl: Number((d >> 45n) & 3n),
    p: Number((d >> 47n) & 1n),
    l: Number((d >> 53n) & 1n),
    db: Number((d >> 54n) & 1n),
    g: Number((d >> 55n) & 1n),
  });
  const flat = { base: 0, limit: 0xf_ffff, s: 1, dpl: 0, p: 1, g: 1 };
  const gdt = layout.BOOT_GDT_DESCRIPTORS;
  assert.equal(gdt.length * 8, Number(layout.BOOT_GDT_SIZE));
  assert.equal(gdt[0], 0n);
  assert.deepEqual(decode(gdt[layout.BOOT_CODE32_SELECTOR / 8]), { ...flat, type: 0xb, l: 0, db: 1 });
  assert.deepEqual(decode(gdt[layout.BOOT_DATA_SELECTOR / 8]), { ...flat, type: 0x3, l: 0, db: 1 });
  assert.deepEqual(decode(gdt[layout.BOOT_CODE64_SELECTOR / 8]), { ...flat, type: 0xb, l: 1, db: 0 });
});
