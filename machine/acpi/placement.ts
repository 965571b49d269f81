/**
 * Where the ACPI tables go in a board's memory map: at the top of the highest RAM below 4 GiB,
 * whole pages, carved out of RAM as a reserved e820 entry. That is where SeaBIOS puts QEMU's tables
 * (its "high" allocation zone, which it reserves), and it keeps them out of the way of the loaders:
 * they place everything inside RAM entries, so the initrd, which goes as high as it can, stops
 * below the tables.
 *
 * @module
 */

import { alignDown, alignUp } from "../../memory/mod.ts";
import { E820_RAM, E820_RESERVED, type E820Entry } from "../loader/boot_plan.ts";
import { type AcpiTables, type AcpiTablesOptions, layoutAcpiTables } from "./tables.ts";

/** The tables take whole pages. */
export const ACPI_PLACEMENT_ALIGN = 0x1000n;
/** The tables stay above 1 MiB: low memory belongs to the boot structures and the BIOS areas. */
export const ACPI_PLACEMENT_LOWEST = 0x10_0000n;
const FOUR_GIB = 0x1_0000_0000n;

/** Built tables and the memory map that reserves them. */
export interface PlacedAcpiTables {
  /** The tables, built at their place. */
  readonly tables: AcpiTables;
  /** The input map with the tables' pages turned from RAM into a reserved entry, sorted. */
  readonly e820: E820Entry[];
}

/** Options of {@link placeAcpiTables}: those of the tables, and the size of the reserved block. */
export interface AcpiPlacementOptions extends Omit<AcpiTablesOptions, "address"> {
  /**
   * Bytes to reserve at the top of RAM, a multiple of 4 KiB (default: the tables' pages); the
   * tables go at the start of the block. SeaBIOS reserves a 128 KiB "high" zone for QEMU's tables
   * and its own data; a board that reserves the same keeps the guest's RAM map equal to QEMU's.
   */
  readonly reserve?: bigint;
}

/**
 * Builds the ACPI tables at the top of the highest RAM entry below 4 GiB of `e820` and returns them
 * with the map that reserves their pages (or the larger `reserve`, the tables at its start).
 *
 * @throws {RangeError} when no RAM entry between 1 MiB and 4 GiB has room for the tables, for a
 *   `reserve` that is not a multiple of 4 KiB, and for the options `layoutAcpiTables` refuses.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { placeAcpiTables } from "./placement.ts";
 * const { tables, e820 } = placeAcpiTables([
 *   { addr: 0n, size: 0x9fc00n, type: 1 },
 *   { addr: 0x100000n, size: 0x7f00000n, type: 1 },
 * ], { cpus: 2 });
 * assert.equal(tables.address, 0x7fff000n);
 * assert.deepEqual(e820.at(-1), { addr: 0x7fff000n, size: 0x1000n, type: 2 });
 * ```
 */
export function placeAcpiTables(
  e820: readonly E820Entry[],
  options: AcpiPlacementOptions,
): PlacedAcpiTables {
  const { reserve = 0n, ...tableOptions } = options;
  if (typeof reserve !== "bigint" || reserve < 0n || reserve % ACPI_PLACEMENT_ALIGN !== 0n) {
    throw new RangeError(`placeAcpiTables: reserve ${String(reserve)} is not a multiple of 4 KiB`);
  }
  // The layout does not depend on the address: built once, measured, then placed.
  const layout = layoutAcpiTables(tableOptions);
  const size = BigInt(layout.size);
  const tablePages = alignUp(size, ACPI_PLACEMENT_ALIGN);
  const pages = reserve > tablePages ? reserve : tablePages;
  let best: { index: number; at: bigint; end: bigint } | undefined;
  e820.forEach((e, index) => {
    if (e.type !== E820_RAM) return;
    const end = e.addr + e.size < FOUR_GIB ? e.addr + e.size : FOUR_GIB;
    if (end < pages) return;
    const at = alignDown(end - pages, ACPI_PLACEMENT_ALIGN);
    if (at < e.addr || at < ACPI_PLACEMENT_LOWEST) return;
    if (best === undefined || at > best.at) best = { index, at, end: e.addr + e.size };
  });
  if (best === undefined) {
    throw new RangeError(
      `placeAcpiTables: no RAM entry between 1 MiB and 4 GiB has 0x${
        pages.toString(16)
      } bytes for the ACPI tables`,
    );
  }
  const { index, at, end } = best;
  const ram = e820[index];
  const out: E820Entry[] = e820.filter((_, i) => i !== index).map((e) => ({ ...e }));
  if (at > ram.addr) out.push({ addr: ram.addr, size: at - ram.addr, type: E820_RAM });
  out.push({ addr: at, size: at + pages - at, type: E820_RESERVED });
  if (end > at + pages) out.push({ addr: at + pages, size: end - at - pages, type: E820_RAM });
  out.sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
  return { tables: layout.place(at), e820: out };
}
