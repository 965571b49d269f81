/**
 * The memory map of the i440fx PC, built with the memory API in the order QEMU 7.2's `pc_init1`,
 * `pc_memory_init`, `x86_bios_rom_init` and `i440fx_init` build it, so that `info mtree` of both
 * can be compared line for line.
 *
 * @module
 */

import { MemoryRegion, type RamBacking, transaction, UNASSIGNED_IO_OPS } from "../../memory/mod.ts";
import {
  APIC_MSI_PRIORITY,
  APIC_MSI_SIZE,
  APIC_MSI_START,
  BIOS_DEFAULT_SIZE,
  BIOS_END,
  BIOS_SIZE_GRANULE,
  HIGHMEM_START,
  IO_SPACE_SIZE,
  IOAPIC_SIZE,
  IOAPIC_START,
  ISA_BIOS_END,
  ISA_BIOS_MAX_SIZE,
  LOWMEM_GIGABYTE_ALIGNED,
  LOWMEM_LIMIT,
  PC_ROM_SIZE,
  PC_ROM_START,
  SMRAM_C_SIZE,
  SMRAM_C_START,
} from "./layout.ts";
import { Pam } from "./pam.ts";

/** How RAM is split around the PCI hole. */
export interface RamSplit {
  /** Bytes of RAM mapped from 0 (`ram-below-4g`). */
  below4g: bigint;
  /** Bytes of RAM mapped from 4 GiB (`ram-above-4g`), possibly 0. */
  above4g: bigint;
}

/**
 * QEMU's i440fx RAM split: at most `maxRamBelow4g` (3.5 GiB) below 4 GiB, and only 3 GiB once RAM
 * reaches that limit on gigabyte-aligned machine types (every current `pc-i440fx-*`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitRam } from "./pc_memory.ts";
 * assert.equal(splitRam(8n << 30n).below4g, 0xc000_0000n);
 * assert.equal(splitRam(256n << 20n).above4g, 0n);
 * ```
 */
export function splitRam(ramSize: bigint, maxRamBelow4g = LOWMEM_LIMIT, gigabyteAlign = true): RamSplit {
  let lowmem = maxRamBelow4g;
  if (ramSize >= lowmem && gigabyteAlign && lowmem > LOWMEM_GIGABYTE_ALIGNED) {
    lowmem = LOWMEM_GIGABYTE_ALIGNED;
  }
  return ramSize >= lowmem
    ? { below4g: lowmem, above4g: ramSize - lowmem }
    : { below4g: ramSize, above4g: 0n };
}

/** Options of {@link buildPcMemory}. */
export interface PcMemoryOptions {
  /** Guest RAM size in bytes. */
  ramSize: bigint;
  /** Memory behind `pc.ram` (default: sparse memory of the memory API). */
  ramBacking?: RamBacking;
  /** Firmware size (default 256 KiB); a nonzero multiple of 64 KiB. */
  biosSize?: bigint;
  /** Memory behind `pc.bios`. */
  biosBacking?: RamBacking;
  /** Memory behind `pc.rom`. */
  romBacking?: RamBacking;
  /**
   * The IOAPIC's region, mapped at 0xfec00000: a userspace IOAPIC's ("ioapic", a split irqchip).
   * Default: the in-kernel IOAPIC's reservation, "kvm-ioapic".
   */
  ioapic?: MemoryRegion;
  /** Ops of the MSI window (`kvm-apic-msi`); default: writes ignored, reads all-ones. */
  apicMsiOps?: import("../../memory/mod.ts").MemoryRegionOps;
}

/** The regions of the PC memory map that boards and devices need to reach. */
export interface PcMemory {
  /** Root of the "memory" address space: a 2^64 container. */
  system: MemoryRegion;
  /** Root of the "I/O" address space: 64 KiB of ports reading all-ones where nothing answers. */
  io: MemoryRegion;
  /** All guest RAM, one region. */
  ram: MemoryRegion;
  /** The RAM split. */
  split: RamSplit;
  /** PCI memory space (priority -1 under `system`). */
  pci: MemoryRegion;
  /** Option-ROM area. */
  pcRom: MemoryRegion;
  /** The firmware at the top of 4 GiB. */
  bios: MemoryRegion;
  /** The top of the firmware below 1 MiB. */
  isaBios: MemoryRegion;
  /** VGA window alias into PCI space (enabled while SMRAM is closed). */
  smramRegion: MemoryRegion;
  /** The PAM block. */
  pam: Pam;
  /** In-kernel IOAPIC window. */
  ioapic: MemoryRegion;
  /** MSI window. */
  apicMsi: MemoryRegion;
}

const MSI_DEFAULT_OPS = { read: () => 0xffff_ffff, write: () => {} };

/**
 * Builds the PC memory map in one transaction.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, formatMtree } from "../../mod.ts";
 * import { buildPcMemory } from "./pc_memory.ts";
 * const pc = buildPcMemory({ ramSize: 256n << 20n });
 * using memory = new AddressSpace(pc.system, "memory");
 * assert.ok(formatMtree([memory], { flat: true }).includes("pc.bios @0000000000020000"));
 * ```
 */
export function buildPcMemory(options: PcMemoryOptions): PcMemory {
  const { ramSize } = options;
  const biosSize = options.biosSize ?? BIOS_DEFAULT_SIZE;
  if (ramSize <= 0n) throw new RangeError(`PC: RAM size ${ramSize} must be positive`);
  if (biosSize <= 0n || biosSize % BIOS_SIZE_GRANULE !== 0n || biosSize > BIOS_END - ISA_BIOS_END) {
    throw new RangeError(
      `PC: firmware size 0x${biosSize.toString(16)} is not a nonzero multiple of 64 KiB below 4 GiB`,
    );
  }
  return transaction(() => {
    const system = MemoryRegion.container("system", 1n << 64n);
    const io = MemoryRegion.io("io", IO_SPACE_SIZE, UNASSIGNED_IO_OPS);
    const pci = MemoryRegion.container("pci", 1n << 64n);
    const ram = MemoryRegion.ram("pc.ram", ramSize, { backing: options.ramBacking });

    // pc_memory_init: RAM aliases around the PCI hole.
    const split = splitRam(ramSize);
    system.addSubregion(0, MemoryRegion.alias("ram-below-4g", ram, 0, split.below4g));
    if (split.above4g > 0n) {
      system.addSubregion(
        HIGHMEM_START,
        MemoryRegion.alias("ram-above-4g", ram, split.below4g, split.above4g),
      );
    }

    // x86_bios_rom_init: the firmware at the top of 4 GiB and its top 128 KiB below 1 MiB.
    const bios = MemoryRegion.rom("pc.bios", biosSize, { backing: options.biosBacking });
    const isaSize = biosSize < ISA_BIOS_MAX_SIZE ? biosSize : ISA_BIOS_MAX_SIZE;
    const isaBios = MemoryRegion.alias("isa-bios", bios, biosSize - isaSize, isaSize);
    pci.addSubregionOverlap(ISA_BIOS_END - isaSize, isaBios, 1);
    isaBios.setReadonly(true);
    pci.addSubregion(BIOS_END - biosSize, bios);

    // pc_memory_init: the option-ROM area, read-only because PCI is enabled.
    const pcRom = MemoryRegion.rom("pc.rom", PC_ROM_SIZE, { backing: options.romBacking });
    pci.addSubregionOverlap(PC_ROM_START, pcRom, 1);

    // i440fx_init: PCI space under everything, the VGA/SMRAM window, then PAM.
    system.addSubregionOverlap(0, pci, -1);
    const smramRegion = MemoryRegion.alias("smram-region", pci, SMRAM_C_START, SMRAM_C_SIZE);
    system.addSubregionOverlap(SMRAM_C_START, smramRegion, 1);
    const pam = new Pam(system, ram, pci);

    // The IOAPIC (the in-kernel one's accesses never leave the kernel) and the APIC's MSI window.
    const ioapic = options.ioapic ?? MemoryRegion.reservation("kvm-ioapic", IOAPIC_SIZE);
    system.addSubregion(IOAPIC_START, ioapic);
    const apicMsi = MemoryRegion.io("kvm-apic-msi", APIC_MSI_SIZE, options.apicMsiOps ?? MSI_DEFAULT_OPS);
    system.addSubregionOverlap(APIC_MSI_START, apicMsi, APIC_MSI_PRIORITY);

    return { system, io, ram, split, pci, pcRom, bios, isaBios, smramRegion, pam, ioapic, apicMsi };
  });
}
