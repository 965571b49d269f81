/**
 * The ACPI tables of the PC board, built from its description (vCPU count, IOAPIC, PM ports, ISA
 * devices) and laid out in one block at a guest-physical base below 4 GiB. Pure: builds bytes,
 * writes nothing.
 *
 * | offset   | table | what                                                                   |
 * |----------|-------|------------------------------------------------------------------------|
 * | 0        | RSDP  | "RSD PTR ", revision 2 (ACPI 2.0+): both the RSDT and the XSDT          |
 * | 64       | FACS  | 64 bytes, 64-byte aligned (ACPI 6.5 §5.2.10), as QEMU's (all zero)      |
 * | 128      | DSDT  | the AML of `dsdt.ts`                                                   |
 * | 8-aligned| FACP  | FADT revision 3 (ACPI 2.0 layout, 244 bytes)                           |
 * | 8-aligned| APIC  | MADT: a local APIC (or x2APIC) per vCPU, the IOAPIC, overrides, NMIs   |
 * | 8-aligned| HPET  | only when the board has an HPET                                        |
 * | 8-aligned| RSDT  | 32-bit pointers to FACP, APIC (, HPET)                                 |
 * | 8-aligned| XSDT  | the same as 64-bit pointers                                            |
 *
 * Linux finds the RSDP through `boot_params.acpi_rsdp_addr` (zero page 0x070), through
 * `hvm_start_info.rsdp_paddr` (PVH), or by scanning 0xE0000-0xFFFFF on 16-byte boundaries; the RSDP's
 * bytes do not depend on where it lies, so {@link AcpiTables.rsdp} may also be copied there.
 *
 * Choices, against QEMU 7.2's `pc` (hw/i386/acpi-build.c, hw/i386/acpi-common.c,
 * hw/acpi/aml-build.c):
 * - Same: the PM blocks (PM1a_EVT 4 bytes at the PM base, PM1a_CNT 2 at +4, PM_TMR 4 at +8, 24-bit
 *   timer), GPE0 (4 bytes at 0xafe0), SCI on IRQ 9, the FADT flags (WBINVD, PROC_C1, SLP_BUTTON,
 *   RTC_S4, USE_PLATFORM_CLOCK, FORCE_APIC_CLUSTER_MODEL beyond 8 vCPUs), C2/C3 latencies 0xfff
 *   (not supported), CENTURY 0x32, INT_MODEL 1, the MADT's layout (local APIC address 0xfee00000,
 *   PCAT_COMPAT, xAPIC entries for APIC ids below 255 and x2APIC entries from 255, the IOAPIC at
 *   GSI base 0 with id 0, IRQ 0 → GSI 2 conforming, the PCI/SCI IRQs level and active high, NMI on
 *   LINT1 of every processor), the HPET's id 0x8086a201, the OEM revision and creator revision 1.
 * - Different: QEMU's `pc` writes a revision 1 FADT and only an RSDT (for Windows 2000); a revision 1
 *   FADT has no reset register, so this board writes revision 3 with the reset register at port
 *   0xcf9 (PIIX3's reset control; value 0x06: hard reset with RST_CPU, which `ResetControl` acts on)
 *   and RESET_REG_SUP, and an XSDT behind a revision 2 RSDP, as QEMU's `q35` does. SMI_CMD is 0 as
 *   in QEMU without SMM: the board has no APM port, so the PM device starts in ACPI mode (SCI_EN set).
 *   IAPC_BOOT_ARCH says "8042" (and legacy devices) when the board has an i8042, since Linux skips
 *   probing the i8042 when a revision 2+ FADT lacks the flag.
 *
 * @module
 */

import { ACPI_GPE0_BASE, ACPI_GPE0_SIZE, ACPI_PM_BASE } from "../../devices/acpi_pm.ts";
import { buildDsdtAml, type DsdtOptions, PC_ACPI_ISA_DEVICES, PC_PCI_LINK_IRQS } from "./dsdt.ts";

/** Size of the common table header (ACPI 6.5 §5.2.6). */
export const ACPI_HEADER_SIZE = 36;
/** Size of a revision 2 RSDP (§5.2.5.3). */
export const ACPI_RSDP_SIZE = 36;
/** Bytes of the RSDP covered by the ACPI 1.0 checksum. */
const RSDP_V1_SIZE = 20;
/** Size of the FACS (§5.2.10). */
export const ACPI_FACS_SIZE = 64;
/** Size of a revision 3 FADT (ACPI 2.0 layout, through X_GPE1_BLK). */
export const ACPI_FADT_SIZE = 244;
/** The FADT revision this board writes. */
export const ACPI_FADT_REVISION = 3;
/** The MADT revision QEMU 7.2 writes. */
export const ACPI_MADT_REVISION = 1;
/** The base must be 64-byte aligned: the FACS needs it. */
export const ACPI_TABLES_ALIGN = 64;

/** QEMU 7.2's PIIX4 PM base (`pm_io_base` 0x600 as SeaBIOS/QEMU program it). */
export const ACPI_PM_BASE_DEFAULT: number = ACPI_PM_BASE;
/** PIIX4's GPE0 block (QEMU's `GPE_BASE`). */
export const ACPI_GPE0_BASE_DEFAULT: number = ACPI_GPE0_BASE;
/** Length of the GPE0 block: 2 status and 2 enable bytes. */
export const ACPI_GPE0_LENGTH: number = ACPI_GPE0_SIZE;
/** The SCI: ISA IRQ 9, as PIIX4 wires it. */
export const ACPI_SCI_IRQ_DEFAULT = 9;
/** Offsets and lengths of the PM1 blocks from the PM base (QEMU's hw/acpi/core.c). */
export const ACPI_PM1_EVT_OFFSET = 0;
/** PM1a_EVT_BLK length: 2 status and 2 enable bytes. */
export const ACPI_PM1_EVT_LENGTH = 4;
/** PM1a_CNT_BLK offset. */
export const ACPI_PM1_CNT_OFFSET = 4;
/** PM1a_CNT_BLK length. */
export const ACPI_PM1_CNT_LENGTH = 2;
/** PM_TMR_BLK offset. */
export const ACPI_PM_TMR_OFFSET = 8;
/** PM_TMR_BLK length. */
export const ACPI_PM_TMR_LENGTH = 4;
/** The reset register: PIIX3's reset control port. */
export const ACPI_RESET_PORT = 0xcf9;
/** The value written to it: SYS_RST | RST_CPU, a hard reset. */
export const ACPI_RESET_VALUE = 0x06;
/** The CMOS century byte (QEMU's `RTC_CENTURY`). */
export const ACPI_RTC_CENTURY = 0x32;

/** Default local APIC address. */
export const ACPI_LAPIC_ADDRESS = 0xfee0_0000;
/** Default IOAPIC address. */
export const ACPI_IOAPIC_ADDRESS_DEFAULT = 0xfec0_0000;
/** Default IOAPIC id: QEMU's `ACPI_BUILD_IOAPIC_ID`, and KVM's IOAPIC id register at reset. */
export const ACPI_IOAPIC_ID_DEFAULT = 0;
/** APIC ids from this one up need x2APIC entries (255 is the xAPIC broadcast id). */
export const ACPI_X2APIC_FIRST_ID = 255;
/** The most vCPUs described: x2APIC ids are 32-bit, but KVM stops far below. */
export const ACPI_MAX_CPUS = 0x1_0000;
/** QEMU's HPET event timer block id: Intel, rev 1, 3 comparators, 64-bit, legacy capable. */
export const ACPI_HPET_BLOCK_ID = 0x8086_a201;

/** OEM fields of every table. */
export const ACPI_OEM_ID = "KVM-TS";
/** OEM table id of every table. */
export const ACPI_OEM_TABLE_ID = "KVMTS-PC";
/** Creator id of every table. */
export const ACPI_CREATOR_ID = "KVTS";

// FADT flags (ACPI 6.5 table 5.10).
const FADT_WBINVD_BIT = 1 << 0;
const FADT_PROC_C1_BIT = 1 << 2;
const FADT_SLP_BUTTON_BIT = 1 << 5;
const FADT_RTC_S4_BIT = 1 << 7;
const FADT_RESET_REG_SUP_BIT = 1 << 10;
const FADT_USE_PLATFORM_CLOCK_BIT = 1 << 15;
const FADT_FORCE_APIC_CLUSTER_MODEL_BIT = 1 << 18;
/** QEMU: flat logical APIC mode reaches only 8 CPUs. */
const FLAT_LOGICAL_MAX_CPUS = 8;
// IAPC_BOOT_ARCH (table 5.11).
const BOOT_ARCH_LEGACY_DEVICES_BIT = 1 << 0;
const BOOT_ARCH_8042_BIT = 1 << 1;
/** C2/C3 latency above 100/1000 µs: the state is not supported. */
const CSTATE_NOT_SUPPORTED = 0xfff;
/** INT_MODEL 1: multiple APIC (reserved since ACPI 2.0, QEMU still writes it). */
const INT_MODEL_APIC = 1;
/** Generic Address Structure (§5.2.3.2). */
const GAS_SYSTEM_IO = 1;
const GAS_SYSTEM_MEMORY = 0;

// MADT (§5.2.12).
const MADT_PCAT_COMPAT_BIT = 1;
const MADT_LOCAL_APIC = 0;
const MADT_LOCAL_APIC_SIZE = 8;
const MADT_IOAPIC = 1;
const MADT_IOAPIC_SIZE = 12;
const MADT_INT_OVERRIDE = 2;
const MADT_INT_OVERRIDE_SIZE = 10;
const MADT_LOCAL_APIC_NMI = 4;
const MADT_LOCAL_APIC_NMI_SIZE = 6;
const MADT_LOCAL_X2APIC = 9;
const MADT_LOCAL_X2APIC_SIZE = 16;
const MADT_LOCAL_X2APIC_NMI = 0x0a;
const MADT_LOCAL_X2APIC_NMI_SIZE = 12;
const MADT_ENABLED_BIT = 1;
/** MPS INTI flags: polarity active high (01) and trigger level (11 << 2). */
const MPS_INTI_LEVEL_HIGH = 0x0d;
const MPS_INTI_CONFORMING = 0x00;
/** "All processors" in NMI entries. */
const ALL_PROCESSORS_UID8 = 0xff;
const ALL_PROCESSORS_UID32 = 0xffff_ffff;
const LINT1 = 1;
/** The PIT's ISA IRQ 0 arrives on IOAPIC pin 2. */
const PIT_IRQ = 0;
const PIT_GSI = 2;
/** HPET table size (IA-PC HPET specification 1.0a, table 3). */
const HPET_TABLE_SIZE = 56;

const FOUR_GIB = 0x1_0000_0000n;

/** Options of {@link buildAcpiTables}. */
export interface AcpiTablesOptions extends DsdtOptions {
  /** Guest-physical address of the block, 64-byte aligned; the block must end at or below 4 GiB. */
  readonly address: bigint;
  /** Number of vCPUs, 1-65536; vCPU i has APIC id i and processor UID i. */
  readonly cpus: number;
  /** IOAPIC id, 0-255 (default 0). */
  readonly ioapicId?: number;
  /** IOAPIC address (default 0xfec00000). */
  readonly ioapicAddress?: number;
  /** PM base port (default 0x600): PM1a_EVT, PM1a_CNT and PM_TMR follow it. */
  readonly pmBase?: number;
  /** GPE0 block port (default 0xafe0). */
  readonly gpe0Base?: number;
  /** ISA IRQ of the SCI (default 9). */
  readonly sciIrq?: number;
  /** An HPET's register block address, if the board has one (the PC board has none). */
  readonly hpetAddress?: bigint;
}

/** One table in the block. */
export interface AcpiTableLocation {
  /** Signature, e.g. "FACP". */
  readonly signature: string;
  /** Guest-physical address. */
  readonly address: bigint;
  /** Length in bytes. */
  readonly length: number;
}

/** The built tables: one block of bytes to copy to guest RAM at `address`. */
export interface AcpiTables {
  /** Guest-physical address of `bytes[0]` (the RSDP). */
  readonly address: bigint;
  /** The whole block: RSDP, FACS, DSDT, FADT, MADT, (HPET,) RSDT, XSDT. */
  readonly bytes: Uint8Array;
  /** The RSDP (a view into `bytes`; its contents do not depend on where it is copied). */
  readonly rsdp: { readonly address: bigint; readonly bytes: Uint8Array };
  /** Where each table lies, in block order (the RSDP excluded). */
  readonly tables: readonly AcpiTableLocation[];
}

function intIn(value: unknown, min: number, max: number, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`buildAcpiTables: ${what} ${String(value)} is not an integer in ${min}-${max}`);
  }
  return value;
}

/** The byte that makes the sum of `bytes` 0 modulo 256. */
export function acpiChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) sum += bytes[i]; // indexed: cold code runs it once per table
  return (0x100 - (sum & 0xff)) & 0xff;
}

function ascii(bytes: Uint8Array, offset: number, text: string): void {
  for (let i = 0; i < text.length; i++) bytes[offset + i] = text.charCodeAt(i);
}

/** A table: header (signature, length, revision, OEM fields), `body`, checksum filled in. */
function table(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(ACPI_HEADER_SIZE + body.length);
  const view = new DataView(bytes.buffer);
  ascii(bytes, 0, signature);
  view.setUint32(4, bytes.length, true);
  bytes[8] = revision;
  ascii(bytes, 10, ACPI_OEM_ID);
  ascii(bytes, 16, ACPI_OEM_TABLE_ID);
  view.setUint32(24, 1, true); // OEM revision
  ascii(bytes, 28, ACPI_CREATOR_ID);
  view.setUint32(32, 1, true); // creator revision
  bytes.set(body, ACPI_HEADER_SIZE);
  bytes[9] = acpiChecksum(bytes);
  return bytes;
}

/** A Generic Address Structure. */
function gas(view: DataView, at: number, space: number, bitWidth: number, address: bigint): void {
  view.setUint8(at, space);
  view.setUint8(at + 1, bitWidth);
  view.setUint8(at + 2, 0); // bit offset
  view.setUint8(at + 3, 0); // access size: undefined (legacy), as QEMU
  view.setBigUint64(at + 4, address, true);
}

interface FadtInputs {
  facs: bigint;
  dsdt: bigint;
  pmBase: number;
  gpe0Base: number;
  sciIrq: number;
  cpus: number;
  has8042: boolean;
}

/** FADT revision 3 (ACPI 6.5 table 5.9 up to X_GPE1_BLK). */
function fadt(f: FadtInputs): Uint8Array {
  const body = new Uint8Array(ACPI_FADT_SIZE - ACPI_HEADER_SIZE);
  const view = new DataView(body.buffer);
  const at = (offset: number) => offset - ACPI_HEADER_SIZE; // offsets below are the table's
  view.setUint32(at(36), Number(f.facs), true); // FIRMWARE_CTRL
  view.setUint32(at(40), Number(f.dsdt), true); // DSDT
  view.setUint8(at(44), INT_MODEL_APIC);
  view.setUint8(at(45), 0); // Preferred_PM_Profile: unspecified
  view.setUint16(at(46), f.sciIrq, true);
  view.setUint32(at(48), 0, true); // SMI_CMD: none, the board is always in ACPI mode
  // 52 ACPI_ENABLE, 53 ACPI_DISABLE, 54 S4BIOS_REQ, 55 PSTATE_CNT: 0 without SMI_CMD
  const pm1Evt = f.pmBase + ACPI_PM1_EVT_OFFSET;
  const pm1Cnt = f.pmBase + ACPI_PM1_CNT_OFFSET;
  const pmTmr = f.pmBase + ACPI_PM_TMR_OFFSET;
  view.setUint32(at(56), pm1Evt, true); // PM1a_EVT_BLK
  view.setUint32(at(64), pm1Cnt, true); // PM1a_CNT_BLK
  view.setUint32(at(76), pmTmr, true); // PM_TMR_BLK
  view.setUint32(at(80), f.gpe0Base, true); // GPE0_BLK
  view.setUint8(at(88), ACPI_PM1_EVT_LENGTH);
  view.setUint8(at(89), ACPI_PM1_CNT_LENGTH);
  view.setUint8(at(91), ACPI_PM_TMR_LENGTH);
  view.setUint8(at(92), ACPI_GPE0_LENGTH);
  view.setUint16(at(96), CSTATE_NOT_SUPPORTED, true); // P_LVL2_LAT
  view.setUint16(at(98), CSTATE_NOT_SUPPORTED, true); // P_LVL3_LAT
  view.setUint8(at(108), ACPI_RTC_CENTURY);
  view.setUint16(at(109), f.has8042 ? BOOT_ARCH_LEGACY_DEVICES_BIT | BOOT_ARCH_8042_BIT : 0, true);
  let flags = FADT_WBINVD_BIT | FADT_PROC_C1_BIT | FADT_SLP_BUTTON_BIT | FADT_RTC_S4_BIT |
    FADT_USE_PLATFORM_CLOCK_BIT | FADT_RESET_REG_SUP_BIT;
  if (f.cpus > FLAT_LOGICAL_MAX_CPUS) flags |= FADT_FORCE_APIC_CLUSTER_MODEL_BIT;
  view.setUint32(at(112), flags >>> 0, true);
  gas(view, at(116), GAS_SYSTEM_IO, 8, BigInt(ACPI_RESET_PORT)); // RESET_REG
  view.setUint8(at(128), ACPI_RESET_VALUE);
  // X_FIRMWARE_CTRL stays 0, as in QEMU's FADT: the FACS is below 4 GiB and FIRMWARE_CTRL points at
  // it; with both set, Linux's ACPICA installs and lists the FACS twice.
  view.setBigUint64(at(140), f.dsdt, true); // X_DSDT
  gas(view, at(148), GAS_SYSTEM_IO, ACPI_PM1_EVT_LENGTH * 8, BigInt(pm1Evt)); // X_PM1a_EVT_BLK
  gas(view, at(172), GAS_SYSTEM_IO, ACPI_PM1_CNT_LENGTH * 8, BigInt(pm1Cnt)); // X_PM1a_CNT_BLK
  gas(view, at(208), GAS_SYSTEM_IO, ACPI_PM_TMR_LENGTH * 8, BigInt(pmTmr)); // X_PM_TMR_BLK
  gas(view, at(220), GAS_SYSTEM_IO, ACPI_GPE0_LENGTH * 8, BigInt(f.gpe0Base)); // X_GPE0_BLK
  return table("FACP", ACPI_FADT_REVISION, body);
}

interface MadtInputs {
  cpus: number;
  ioapicId: number;
  ioapicAddress: number;
  levelIrqs: readonly number[];
}

/** MADT (ACPI 6.5 §5.2.12), entries in QEMU's order. */
function madt(m: MadtInputs): Uint8Array {
  const xapicCpus = Math.min(m.cpus, ACPI_X2APIC_FIRST_ID);
  const x2apicCpus = m.cpus - xapicCpus;
  const size = 8 + MADT_LOCAL_APIC_SIZE * xapicCpus + MADT_LOCAL_X2APIC_SIZE * x2apicCpus +
    MADT_IOAPIC_SIZE + MADT_INT_OVERRIDE_SIZE * (1 + m.levelIrqs.length) + MADT_LOCAL_APIC_NMI_SIZE +
    (x2apicCpus > 0 ? MADT_LOCAL_X2APIC_NMI_SIZE : 0);
  const body = new Uint8Array(size);
  const view = new DataView(body.buffer);
  view.setUint32(0, ACPI_LAPIC_ADDRESS, true);
  view.setUint32(4, MADT_PCAT_COMPAT_BIT, true);
  let at = 8;
  for (let cpu = 0; cpu < m.cpus; cpu++) {
    if (cpu < ACPI_X2APIC_FIRST_ID) {
      body.set([MADT_LOCAL_APIC, MADT_LOCAL_APIC_SIZE, cpu, cpu], at); // UID, APIC id
      view.setUint32(at + 4, MADT_ENABLED_BIT, true);
      at += MADT_LOCAL_APIC_SIZE;
    } else {
      body.set([MADT_LOCAL_X2APIC, MADT_LOCAL_X2APIC_SIZE], at); // 2 reserved bytes follow
      view.setUint32(at + 4, cpu, true); // x2APIC id
      view.setUint32(at + 8, MADT_ENABLED_BIT, true);
      view.setUint32(at + 12, cpu, true); // UID
      at += MADT_LOCAL_X2APIC_SIZE;
    }
  }
  body.set([MADT_IOAPIC, MADT_IOAPIC_SIZE, m.ioapicId, 0], at);
  view.setUint32(at + 4, m.ioapicAddress, true);
  view.setUint32(at + 8, 0, true); // GSI base
  at += MADT_IOAPIC_SIZE;
  const override = (irq: number, gsi: number, flags: number) => {
    body.set([MADT_INT_OVERRIDE, MADT_INT_OVERRIDE_SIZE, 0, /* ISA bus */ irq], at);
    view.setUint32(at + 4, gsi, true);
    view.setUint16(at + 8, flags, true);
    at += MADT_INT_OVERRIDE_SIZE;
  };
  override(PIT_IRQ, PIT_GSI, MPS_INTI_CONFORMING);
  for (const irq of m.levelIrqs) override(irq, irq, MPS_INTI_LEVEL_HIGH);
  body.set([MADT_LOCAL_APIC_NMI, MADT_LOCAL_APIC_NMI_SIZE, ALL_PROCESSORS_UID8, 0, 0, LINT1], at);
  at += MADT_LOCAL_APIC_NMI_SIZE;
  if (x2apicCpus > 0) {
    body.set([MADT_LOCAL_X2APIC_NMI, MADT_LOCAL_X2APIC_NMI_SIZE, 0, 0], at); // flags 0
    view.setUint32(at + 4, ALL_PROCESSORS_UID32, true);
    body[at + 8] = LINT1;
    at += MADT_LOCAL_X2APIC_NMI_SIZE;
  }
  return table("APIC", ACPI_MADT_REVISION, body);
}

/** HPET description table (IA-PC HPET 1.0a §3.2.4), QEMU's values. */
function hpet(address: bigint): Uint8Array {
  const body = new Uint8Array(HPET_TABLE_SIZE - ACPI_HEADER_SIZE);
  const view = new DataView(body.buffer);
  view.setUint32(0, ACPI_HPET_BLOCK_ID, true);
  gas(view, 4, GAS_SYSTEM_MEMORY, 0, address);
  // 16: HPET number 0, 17: minimum tick 0, 19: page protection 0
  return table("HPET", 1, body);
}

function pointerTable(
  signature: string,
  revision: number,
  addresses: readonly bigint[],
  wide: boolean,
): Uint8Array {
  const width = wide ? 8 : 4;
  const body = new Uint8Array(addresses.length * width);
  const view = new DataView(body.buffer);
  addresses.forEach((a, i) => {
    if (wide) view.setBigUint64(i * width, a, true);
    else view.setUint32(i * width, Number(a), true);
  });
  return table(signature, revision, body);
}

function rsdp(rsdt: bigint, xsdt: bigint): Uint8Array {
  const bytes = new Uint8Array(ACPI_RSDP_SIZE);
  const view = new DataView(bytes.buffer);
  ascii(bytes, 0, "RSD PTR ");
  ascii(bytes, 9, ACPI_OEM_ID);
  bytes[15] = 2; // revision: ACPI 2.0+
  view.setUint32(16, Number(rsdt), true);
  view.setUint32(20, ACPI_RSDP_SIZE, true);
  view.setBigUint64(24, xsdt, true);
  bytes[8] = acpiChecksum(bytes.subarray(0, RSDP_V1_SIZE));
  bytes[32] = acpiChecksum(bytes);
  return bytes;
}

const align = (n: number, to: number) => Math.ceil(n / to) * to;

/**
 * The ACPI tables of {@link layoutAcpiTables}: their size, known before their address, and the
 * tables placed at an address.
 */
export interface AcpiTablesLayout {
  /** Bytes of the whole block, wherever it goes. */
  readonly size: number;
  /**
   * The tables laid out from `address` (the same as {@link buildAcpiTables} with that address);
   * each call returns a new block.
   *
   * @throws {RangeError} on an address that is not a 64-byte aligned bigint or a block passing 4 GiB.
   */
  place(address: bigint): AcpiTables;
}

/**
 * Builds the tables whose bytes do not depend on where the block goes (the DSDT, the MADT) and
 * lays the block out, for a caller that needs its size to choose the address: the DSDT is built
 * once, however many times the block is placed.
 *
 * @throws {RangeError} for the options {@link buildAcpiTables} refuses, but the address.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildAcpiTables, layoutAcpiTables } from "./tables.ts";
 * const layout = layoutAcpiTables({ cpus: 2 });
 * const top = 0x800_0000n - BigInt(Math.ceil(layout.size / 64) * 64);
 * assert.deepEqual(layout.place(top).bytes, buildAcpiTables({ address: top, cpus: 2 }).bytes);
 * ```
 */
export function layoutAcpiTables(options: Omit<AcpiTablesOptions, "address">): AcpiTablesLayout {
  const cpus = intIn(options.cpus, 1, ACPI_MAX_CPUS, "cpus");
  const ioapicId = intIn(options.ioapicId ?? ACPI_IOAPIC_ID_DEFAULT, 0, 0xff, "ioapicId");
  const ioapicAddress = intIn(
    options.ioapicAddress ?? ACPI_IOAPIC_ADDRESS_DEFAULT,
    1,
    0xffff_ffff,
    "ioapicAddress",
  );
  const pmBase = intIn(options.pmBase ?? ACPI_PM_BASE_DEFAULT, 0, 0xffff - ACPI_PM_TMR_OFFSET - 3, "pmBase");
  const gpe0Base = intIn(options.gpe0Base ?? ACPI_GPE0_BASE_DEFAULT, 0, 0xffff - 3, "gpe0Base");
  const sciIrq = intIn(options.sciIrq ?? ACPI_SCI_IRQ_DEFAULT, 0, 15, "sciIrq");
  if (sciIrq === PIT_IRQ) throw new RangeError("buildAcpiTables: sciIrq 0 is the PIT's IRQ");
  const hpetAddress = options.hpetAddress;
  if (
    hpetAddress !== undefined &&
    (typeof hpetAddress !== "bigint" || hpetAddress <= 0n || hpetAddress >= 1n << 64n)
  ) {
    throw new RangeError(
      `buildAcpiTables: hpetAddress ${String(hpetAddress)} is not a nonzero 64-bit bigint`,
    );
  }
  const isaDevices = options.isaDevices ?? PC_ACPI_ISA_DEVICES;
  const linkIrqs = options.pciLinkIrqs ?? PC_PCI_LINK_IRQS;
  const dsdtAml = buildDsdtAml(options);
  const levelIrqs = [...new Set([sciIrq, ...linkIrqs])].sort((a, b) => a - b);

  // Layout first (every table's size is known from the inputs), then the pointers.
  const facsAt = ACPI_TABLES_ALIGN;
  const dsdtAt = facsAt + ACPI_FACS_SIZE;
  const dsdt = table("DSDT", 1, dsdtAml); // revision 1 (32-bit AML integers), as QEMU; none is wider
  const fadtAt = align(dsdtAt + dsdt.length, 8);
  const madtBytes = madt({ cpus, ioapicId, ioapicAddress, levelIrqs });
  const madtAt = align(fadtAt + ACPI_FADT_SIZE, 8);
  const hpetBytes = hpetAddress === undefined ? undefined : hpet(hpetAddress);
  const hpetAt = align(madtAt + madtBytes.length, 8);
  const pointed = hpetBytes === undefined ? 2 : 3;
  const rsdtAt = align(hpetAt + (hpetBytes?.length ?? 0), 8);
  const rsdtSize = ACPI_HEADER_SIZE + 4 * pointed;
  const xsdtAt = align(rsdtAt + rsdtSize, 8);
  const size = xsdtAt + ACPI_HEADER_SIZE + 8 * pointed;
  const has8042 = isaDevices.some((d) => d.hid === "PNP0303");
  const facs = new Uint8Array(ACPI_FACS_SIZE);
  ascii(facs, 0, "FACS");
  new DataView(facs.buffer).setUint32(4, ACPI_FACS_SIZE, true);

  const place = (base: bigint): AcpiTables => {
    checkBase(base);
    if (base + BigInt(size) > FOUR_GIB) {
      throw new RangeError(
        `buildAcpiTables: ${size} bytes at 0x${
          base.toString(16)
        } pass 4 GiB (the RSDT and FADT hold 32-bit pointers)`,
      );
    }
    const addr = (offset: number) => base + BigInt(offset);
    const fadtBytes = fadt({
      facs: addr(facsAt),
      dsdt: addr(dsdtAt),
      pmBase,
      gpe0Base,
      sciIrq,
      cpus,
      has8042,
    });
    const described = [addr(fadtAt), addr(madtAt), ...(hpetBytes === undefined ? [] : [addr(hpetAt)])];
    const rsdtBytes = pointerTable("RSDT", 1, described, false);
    const xsdtBytes = pointerTable("XSDT", 1, described, true);

    const bytes = new Uint8Array(size);
    const placed: [string, number, Uint8Array][] = [
      ["FACS", facsAt, facs],
      ["DSDT", dsdtAt, dsdt],
      ["FACP", fadtAt, fadtBytes],
      ["APIC", madtAt, madtBytes],
      ...(hpetBytes === undefined ? [] : [["HPET", hpetAt, hpetBytes] as [string, number, Uint8Array]]),
      ["RSDT", rsdtAt, rsdtBytes],
      ["XSDT", xsdtAt, xsdtBytes],
    ];
    bytes.set(rsdp(addr(rsdtAt), addr(xsdtAt)), 0);
    for (const [, at, data] of placed) bytes.set(data, at);
    return {
      address: base,
      bytes,
      rsdp: { address: base, bytes: bytes.subarray(0, ACPI_RSDP_SIZE) },
      tables: placed.map(([signature, at, data]) => ({ signature, address: addr(at), length: data.length })),
    };
  };
  return { size, place };
}

function checkBase(base: bigint): void {
  if (typeof base !== "bigint" || base < 0n || base % BigInt(ACPI_TABLES_ALIGN) !== 0n) {
    throw new RangeError(`buildAcpiTables: address ${String(base)} is not a 64-byte aligned bigint`);
  }
}

/**
 * Builds the RSDP, FACS, DSDT, FADT, MADT (and HPET), RSDT and XSDT of a PC board, laid out from
 * `options.address`.
 *
 * @throws {RangeError} on a base that is not 64-byte aligned or a block passing 4 GiB, a vCPU
 *   count outside 1-65536, an IOAPIC id past 255, ports past 0xffff, an SCI IRQ past 15 or equal
 *   to 0, an HPET address that is not a nonzero 64-bit bigint, or a
 *   malformed DSDT option (see {@link buildDsdtAml}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildAcpiTables } from "./tables.ts";
 * const acpi = buildAcpiTables({ address: 0xe0000n, cpus: 2 });
 * assert.equal(new TextDecoder().decode(acpi.rsdp.bytes.subarray(0, 8)), "RSD PTR ");
 * assert.deepEqual(acpi.tables.map((t) => t.signature), ["FACS", "DSDT", "FACP", "APIC", "RSDT", "XSDT"]);
 * for (const t of acpi.tables.filter((t) => t.signature !== "FACS")) {
 *   const at = Number(t.address - acpi.address);
 *   assert.equal(acpi.bytes.subarray(at, at + t.length).reduce((s, b) => s + b, 0) % 256, 0);
 * }
 * ```
 */
export function buildAcpiTables(options: AcpiTablesOptions): AcpiTables {
  checkBase(options.address); // first, as before the layout existed
  return layoutAcpiTables(options).place(options.address);
}
