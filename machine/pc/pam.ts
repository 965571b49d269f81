/**
 * Programmable Attribute Map: how the i440fx host bridge routes the 0xc0000–0xfffff legacy area
 * to RAM or to PCI space (QEMU's `hw/pci-host/pam.c`).
 *
 * @module
 */

import { MemoryRegion, transaction } from "../../memory/mod.ts";
import {
  I440FX_PAM_CONFIG,
  PAM_BIOS_SIZE,
  PAM_BIOS_START,
  PAM_EXPAN_COUNT,
  PAM_EXPAN_SIZE,
  PAM_EXPAN_START,
} from "./layout.ts";

/** What a PAM segment shows: 0 PCI (reset), 1 read-only RAM, 2 write-only, 3 RAM. */
export type PamAttribute = 0 | 1 | 2 | 3;

/** The four alternative mappings of one segment; exactly one is enabled. */
export class PamSegment {
  /** Absolute start address. */
  readonly start: bigint;
  /** Size in bytes. */
  readonly size: bigint;
  /** Indexed by attribute: pam-pci@pci, pam-rom, pam-pci@pc.ram, pam-ram. */
  readonly aliases: readonly MemoryRegion[];
  #current: PamAttribute = 0;

  /**
   * Adds the four aliases of `[start, start + size)` to `system` at priority 1, the PCI one
   * enabled (the reset state), in one transaction: RAM and read-only RAM alias `ram`, PCI aliases
   * `pci`.
   */
  constructor(system: MemoryRegion, ram: MemoryRegion, pci: MemoryRegion, start: bigint, size: bigint) {
    this.start = start;
    this.size = size;
    // Created in QEMU's order (ram, rom, pci, write-only) but added by attribute index, so the
    // container's list order matches QEMU's (newest first among the equal priorities).
    const pamRam = MemoryRegion.alias("pam-ram", ram, start, size);
    const pamRom = MemoryRegion.alias("pam-rom", ram, start, size);
    pamRom.setReadonly(true);
    const pamPci = MemoryRegion.alias("pam-pci", pci, start, size);
    // Write-only (reads from PCI, writes to RAM) cannot be one region; QEMU approximates it as RAM.
    const pamWriteOnly = MemoryRegion.alias("pam-pci", ram, start, size);
    this.aliases = [pamPci, pamRom, pamWriteOnly, pamRam];
    transaction(() => {
      for (const alias of this.aliases) {
        alias.setEnabled(false);
        system.addSubregionOverlap(start, alias, 1);
      }
      this.aliases[0].setEnabled(true);
    });
  }

  /** The attribute in force. */
  get attribute(): PamAttribute {
    return this.#current;
  }

  /** Switches the segment to `attribute` in one transaction. */
  set(attribute: PamAttribute): void {
    if (attribute === this.#current) return;
    transaction(() => {
      this.aliases[this.#current].setEnabled(false);
      this.#current = attribute;
      this.aliases[attribute].setEnabled(true);
    });
  }
}

/**
 * The thirteen PAM segments of the i440fx: segment 0 is 0xf0000 (64 KiB), segments 1–12 the
 * 16 KiB pieces of 0xc0000–0xeffff.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryRegion } from "../../memory/mod.ts";
 * import { Pam } from "./pam.ts";
 * const system = MemoryRegion.container("system", 1n << 64n);
 * const pam = new Pam(system, MemoryRegion.ram("pc.ram", 1n << 20n), MemoryRegion.container("pci", 1n << 64n));
 * pam.writeConfig(0x59, 0x30); // 0xf0000 segment: RAM
 * assert.equal(pam.segments[0].attribute, 3);
 * ```
 */
export class Pam {
  /** Segment 0 = BIOS area, then the expansion area in ascending order. */
  readonly segments: readonly PamSegment[];

  /** Adds all thirteen segments to `system`, each showing PCI, as after a reset. */
  constructor(system: MemoryRegion, ram: MemoryRegion, pci: MemoryRegion) {
    const segments = [new PamSegment(system, ram, pci, PAM_BIOS_START, PAM_BIOS_SIZE)];
    for (let i = 0; i < PAM_EXPAN_COUNT; i++) {
      segments.push(
        new PamSegment(system, ram, pci, PAM_EXPAN_START + BigInt(i) * PAM_EXPAN_SIZE, PAM_EXPAN_SIZE),
      );
    }
    this.segments = segments;
  }

  /**
   * Applies a write of `value` to PAM configuration byte `offset` (0x59–0x5f): PAM0's high nibble is
   * the BIOS segment; each of PAM1–PAM6 holds two expansion segments, low nibble first.
   */
  writeConfig(offset: number, value: number): void {
    const index = offset - I440FX_PAM_CONFIG;
    if (index < 0 || index > 6) {
      throw new RangeError(`PAM: config offset 0x${offset.toString(16)} is not 0x59–0x5f`);
    }
    transaction(() => {
      if (index === 0) this.segments[0].set(((value >> 4) & 3) as PamAttribute);
      else {
        this.segments[2 * index - 1].set((value & 3) as PamAttribute);
        this.segments[2 * index].set(((value >> 4) & 3) as PamAttribute);
      }
    });
  }
}
