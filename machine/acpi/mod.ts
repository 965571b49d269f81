/**
 * ACPI for the PC board: a small AML encoder, the DSDT (PCI root bridge, interrupt links, the ISA
 * devices, `\_S5`) and the tables that describe the board (RSDP, RSDT, XSDT, FADT, FACS, MADT, and
 * an HPET table when there is an HPET), built as pure bytes at a guest-physical base.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildAcpiTables } from "./mod.ts";
 * const acpi = buildAcpiTables({ address: 0x7fe_0000n, cpus: 4 });
 * assert.equal(acpi.rsdp.address, 0x7fe_0000n);
 * assert.ok(acpi.tables.some((t) => t.signature === "APIC"));
 * ```
 *
 * @module
 */

export {
  ACPI_COM1,
  ACPI_I8042_KEYBOARD,
  ACPI_I8042_MOUSE,
  ACPI_RTC,
  ACPI_STA_LINK_ENABLED,
  ACPI_STA_PRESENT,
  type AcpiIoRange,
  type AcpiIsaDevice,
  buildDsdtAml,
  type DsdtOptions,
  PC_ACPI_ISA_DEVICES,
  PC_PCI_LINK_IRQS,
} from "./dsdt.ts";
export * from "./tables.ts";
export * as aml from "./aml.ts";
export * from "./placement.ts";
export type { E820Entry } from "../loader/mod.ts";
