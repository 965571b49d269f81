/**
 * The Intel MultiProcessor Specification 1.4 tables of the PC board: how a guest that knows no ACPI
 * (Linux with `acpi=off`, small test guests) learns its CPUs, its IOAPIC and how the ISA IRQs reach
 * the IOAPIC's pins. Pure: builds bytes, writes nothing.
 *
 * The structure is one block ending at 640 KiB (0xa0000): the floating pointer in the very last
 * paragraph, {@link MP_FLOATING_POINTER_START} (0x9fff0), inside the last KiB of base memory that
 * Linux's `smp_scan_config` searches (besides the first KiB of RAM, the first KiB of the EBDA and
 * 0xf0000–0xfffff; the BIOS area is avoided because PAM shows PCI/ROM there at reset), and the
 * configuration table right below it, as large as the CPU count needs. The board's e820 map
 * reserves the block (the last KiB of base memory for up to 40 CPUs, more below it beyond):
 *
 * | offset | size     | what                                                          |
 * |--------|----------|---------------------------------------------------------------|
 * | 0      | 44       | configuration table header "PCMP" (spec §4.2)                 |
 * | 44     | 20 × N   | processor entries, APIC id = vCPU index, BSP = vCPU 0         |
 * |        | 8        | bus entry: bus 0 "ISA   "                                     |
 * |        | 8        | IOAPIC entry                                                  |
 * |        | 8 × I    | I/O interrupt entries (ISA IRQ → IOAPIC pin)                  |
 * |        | 8 × 2    | local interrupt entries: ExtINT on LINT0, NMI on LINT1, all   |
 * |        | 0–15     | padding to the floating pointer's paragraph                   |
 * | last 16| 16       | MP floating pointer structure "_MP_" (spec §4.1), at 0x9fff0   |
 *
 * Entries appear in ascending type order, as spec §4.3 asks. With the PC's 15 ISA routes the table
 * is 196 + 20 × N bytes. Processor entries hold 8-bit xAPIC ids and the IOAPIC takes the id after
 * the last CPU, so at most {@link MP_TABLE_MAX_CPUS} (254) CPUs can be described.
 *
 * Facts from the Intel MultiProcessor Specification 1.4 (May 1997), chapter 4, and from Linux's
 * `arch/x86/kernel/mpparse.c` (where it scans, what it checks: signature, length 1, revision 1 or
 * 4, both checksums, a nonzero local APIC address).
 *
 * @module
 */

/** The block ends at the VGA window: 640 KiB. */
export const MP_TABLE_END = 0xa_0000n;
/** The floating pointer: the last paragraph of base memory, where Linux's scan finds it. */
export const MP_FLOATING_POINTER_START = 0x9_fff0n;
/** The last KiB of base memory (639 KiB), the area Linux scans for the floating pointer. */
export const MP_SCAN_START = 0x9_fc00n;

/** Size of the MP floating pointer structure (one 16-byte paragraph). */
export const MP_FLOATING_POINTER_SIZE = 16;
/** Size of the configuration table header. */
export const MP_CONFIG_HEADER_SIZE = 44;
/** Size of a processor entry. */
export const MP_PROCESSOR_ENTRY_SIZE = 20;
/** Size of every other base-table entry (bus, IOAPIC, I/O and local interrupt). */
export const MP_SHORT_ENTRY_SIZE = 8;

/** Base-table entry types (spec table 4-3). */
export const MP_ENTRY_PROCESSOR = 0;
/** Bus entry type. */
export const MP_ENTRY_BUS = 1;
/** IOAPIC entry type. */
export const MP_ENTRY_IOAPIC = 2;
/** I/O interrupt assignment entry type. */
export const MP_ENTRY_IO_INTERRUPT = 3;
/** Local interrupt assignment entry type. */
export const MP_ENTRY_LOCAL_INTERRUPT = 4;

/** Interrupt types of interrupt assignment entries (spec table 4-10). */
export const MP_INT_INT = 0;
/** Non-maskable interrupt. */
export const MP_INT_NMI = 1;
/** System management interrupt. */
export const MP_INT_SMI = 2;
/** External (8259) interrupt: the vector comes from the PIC. */
export const MP_INT_EXTINT = 3;

/** Specification revision 1.4, in both the floating pointer and the table header. */
export const MP_SPEC_REVISION = 4;
/** Processor entry CPU flags: the processor is usable. */
export const MP_CPU_ENABLED_BIT = 0x01;
/** Processor entry CPU flags: the bootstrap processor. */
export const MP_CPU_BSP_BIT = 0x02;
/** IOAPIC entry flags: the IOAPIC is usable. */
export const MP_IOAPIC_ENABLED_BIT = 0x01;
/** Version of KVM's in-kernel local APIC (APIC_VERSION register bits 7:0). */
export const MP_LAPIC_VERSION = 0x14;
/** Version of KVM's in-kernel IOAPIC (IOAPICVER bits 7:0). */
export const MP_IOAPIC_VERSION = 0x11;
/** Destination local APIC id meaning "every local APIC". */
export const MP_ALL_LAPICS = 0xff;
/** The ISA bus's id when it is the only bus. */
export const MP_ISA_BUS_ID = 0;
/**
 * Bus id of PCI bus 0, present when there are {@link MpTableOptions.pciIrqs}: it must be 0, because
 * Linux (6.1 `IO_APIC_get_PCI_irq_vector`) matches an entry's source bus id against the PCI bus
 * number. The ISA bus then takes {@link MP_ISA_BUS_ID_AFTER_PCI}, as in SeaBIOS's table.
 */
export const MP_PCI_BUS_ID = 0;
/** The ISA bus's id when PCI bus 0 is listed. */
export const MP_ISA_BUS_ID_AFTER_PCI = 1;
/** OEM id of the table header (8 bytes, space-padded). */
export const MP_OEM_ID = "KVM-TS  ";
/** Product id of the table header (12 bytes, space-padded). */
export const MP_PRODUCT_ID = "PC          ";

/** Default CPU signature of the processor entries: family 6, model 0, stepping 0 (as Firecracker). */
export const MP_DEFAULT_CPU_SIGNATURE = 0x600;
/** Default feature flags of the processor entries: CPUID.1:EDX FPU (bit 0) and APIC (bit 9). */
export const MP_DEFAULT_CPU_FEATURES = 0x201;

/** Default local APIC address. */
export const MP_DEFAULT_LAPIC_START = 0xfee0_0000n;
/** Default IOAPIC address. */
export const MP_DEFAULT_IOAPIC_START = 0xfec0_0000n;
/** Pins of KVM's in-kernel IOAPIC. */
export const IOAPIC_PIN_COUNT = 24;
/** Number of ISA IRQs. */
export const ISA_IRQ_COUNT = 16;

/** Polarity of an interrupt assignment (flags bits 1:0): conforming to the bus = active high on ISA. */
export type MpPolarity = "conforming" | "high" | "low";
/** Trigger mode of an interrupt assignment (flags bits 3:2): conforming to the bus = edge on ISA. */
export type MpTrigger = "conforming" | "edge" | "level";

/** One PCI INTx pin and the IOAPIC pin it is wired to. */
export interface PciIrqRoute {
  /** Slot (device) on bus 0, 0–31. */
  readonly slot: number;
  /** INTx pin, 1 (INTA#) – 4 (INTD#). */
  readonly pin: number;
  /** IOAPIC input pin, 0–23. */
  readonly ioapicPin: number;
}

/** One ISA IRQ and the IOAPIC pin it is wired to. */
export interface IsaIrqRoute {
  /** ISA IRQ, 0–15. */
  readonly irq: number;
  /** IOAPIC input pin, 0–23. */
  readonly pin: number;
  /** Default "conforming". */
  readonly polarity?: MpPolarity;
  /** Default "conforming". */
  readonly trigger?: MpTrigger;
}

/**
 * The PC's ISA wiring: IRQ 0 (the PIT) on pin 2, IRQs 1 and 3–15 on the pin of their number, all
 * conforming (edge, active high). IRQ 2 is the 8259 cascade and never raised, and its pin carries
 * IRQ 0, so it has no entry (as SeaBIOS's table with the IRQ 0 override). The board must route
 * GSI 0 to pin 2 to match (QEMU's `kvm_pc_setup_irq_routing` does; KVM's default routing puts GSI 0
 * on pin 0).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PC_ISA_IRQ_ROUTES } from "./mptable.ts";
 * assert.ok(PC_ISA_IRQ_ROUTES.length === 15 && PC_ISA_IRQ_ROUTES[0].pin === 2);
 * ```
 */
export const PC_ISA_IRQ_ROUTES: readonly IsaIrqRoute[] = Object.freeze(
  Array.from({ length: ISA_IRQ_COUNT }, (_, irq) => irq)
    .filter((irq) => irq !== 2)
    .map((irq): IsaIrqRoute => Object.freeze({ irq, pin: irq === 0 ? 2 : irq })),
);

/** Options of {@link buildMpTable}. */
export interface MpTableOptions {
  /** Number of vCPUs, 1–{@link MP_TABLE_MAX_CPUS}; vCPU i has APIC id i, vCPU 0 is the BSP. */
  readonly cpus: number;
  /** IOAPIC id, 0–255, different from every CPU's APIC id (default `cpus`). */
  readonly ioapicId?: number;
  /** IOAPIC address, below 4 GiB (default 0xfec00000). */
  readonly ioapicAddress?: number | bigint;
  /** Local APIC address, below 4 GiB, nonzero (default 0xfee00000). */
  readonly lapicAddress?: number | bigint;
  /** ISA IRQ wiring (default {@link PC_ISA_IRQ_ROUTES}); distinct IRQs and pins. */
  readonly isaIrqs?: readonly IsaIrqRoute[];
  /**
   * INTx pins of PCI bus 0 and the IOAPIC pins they reach (default none: no PCI bus entry). Each
   * gets an I/O interrupt entry on the PCI bus, level-triggered active-high as the ACPI tables
   * declare the PCI IRQs, and the ISA entries of the same pins become level/high too.
   */
  readonly pciIrqs?: readonly PciIrqRoute[];
  /** CPU signature of every processor entry (default {@link MP_DEFAULT_CPU_SIGNATURE}). */
  readonly cpuSignature?: number;
  /** Feature flags of every processor entry (default {@link MP_DEFAULT_CPU_FEATURES}). */
  readonly cpuFeatures?: number;
}

/** A built MP table: the bytes to copy into guest RAM at `address`. */
export interface MpTable {
  /** Guest-physical address of `bytes[0]`, the configuration table (16-byte aligned); the block ends at 640 KiB. */
  readonly address: bigint;
  /** `bytes.length` as a bigint. */
  readonly size: bigint;
  /** Guest-physical address of the configuration table header (`address`). */
  readonly configTableAddress: bigint;
  /** Guest-physical address of the floating pointer structure (0x9fff0). */
  readonly floatingPointerAddress: bigint;
  /** Number of base-table entries (the header's entry count). */
  readonly entryCount: number;
  /** Floating pointer, header and entries, checksums filled in. */
  readonly bytes: Uint8Array;
}

const FIXED_SIZE = MP_FLOATING_POINTER_SIZE + MP_CONFIG_HEADER_SIZE +
  MP_SHORT_ENTRY_SIZE * (1 /* bus */ + 1 /* IOAPIC */ + 2 /* LINT0, LINT1 */);

/** The most CPUs an MP table can list: 8-bit xAPIC ids 0–253, and id 254 for the IOAPIC. */
export const MP_TABLE_MAX_CPUS = 254;

const POLARITY_BITS: Record<MpPolarity, number> = { conforming: 0b00, high: 0b01, low: 0b11 };
const TRIGGER_BITS: Record<MpTrigger, number> = { conforming: 0b00, edge: 0b01, level: 0b11 };
const TRIGGER_SHIFT = 2;
const UINT32_LIMIT = 1n << 32n;

function intIn(value: unknown, min: number, max: number, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new RangeError(`buildMpTable: ${what} ${String(value)} is not an integer`);
  }
  if (value < min || value > max) {
    throw new RangeError(`buildMpTable: ${what} ${value} is outside ${min}–${max}`);
  }
  return value;
}

function address32(value: number | bigint, what: string): number {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`buildMpTable: ${what} ${value} is not an integer`);
  }
  const v = BigInt(value);
  if (v <= 0n || v >= UINT32_LIMIT) {
    throw new RangeError(`buildMpTable: ${what} 0x${v.toString(16)} is not a nonzero 32-bit address`);
  }
  return Number(v);
}

/** The byte that makes the sum of `bytes` 0 modulo 256. */
function checksumOf(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) sum += bytes[i]; // indexed: cold code runs it once per table
  return (0x100 - (sum & 0xff)) & 0xff;
}

function ascii(view: DataView, offset: number, text: string): void {
  for (let i = 0; i < text.length; i++) view.setUint8(offset + i, text.charCodeAt(i));
}

/**
 * Builds the MP floating pointer, configuration table header and base-table entries for a board of
 * `cpus` vCPUs, to be copied to guest RAM at the returned `address` (0x9fc00).
 *
 * @throws {RangeError} on a CPU count outside 1–254, an IOAPIC id clashing with an APIC id, an
 *   address that is zero or not below 4 GiB, or a bad ISA route (IRQ past 15, pin past 23,
 *   duplicates).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildMpTable } from "./mptable.ts";
 * const table = buildMpTable({ cpus: 4 });
 * assert.ok(table.floatingPointerAddress === 0x9fff0n && table.address === 0x9fed0n);
 * assert.equal(table.entryCount, 4 + 1 + 1 + 15 + 2);
 * assert.equal(new TextDecoder().decode(table.bytes.subarray(-16, -12)), "_MP_");
 * assert.equal(table.bytes.reduce((sum, byte) => sum + byte, 0) % 256, 0); // both checksums
 * ```
 */
export function buildMpTable(options: MpTableOptions): MpTable {
  const cpus = intIn(options.cpus, 1, MP_TABLE_MAX_CPUS, "cpus");
  const ioapicId = intIn(options.ioapicId ?? cpus, 0, 255, "ioapicId");
  if (ioapicId < cpus) {
    throw new RangeError(`buildMpTable: ioapicId ${ioapicId} is the APIC id of vCPU ${ioapicId}`);
  }
  const ioapicAddress = address32(options.ioapicAddress ?? MP_DEFAULT_IOAPIC_START, "ioapicAddress");
  const lapicAddress = address32(options.lapicAddress ?? MP_DEFAULT_LAPIC_START, "lapicAddress");
  const cpuSignature = intIn(
    options.cpuSignature ?? MP_DEFAULT_CPU_SIGNATURE,
    0,
    0xffff_ffff,
    "cpuSignature",
  );
  const cpuFeatures = intIn(options.cpuFeatures ?? MP_DEFAULT_CPU_FEATURES, 0, 0xffff_ffff, "cpuFeatures");
  const pciIrqs = (options.pciIrqs ?? []).map((r) => ({
    slot: intIn(r.slot, 0, 31, "PCI slot"),
    pin: intIn(r.pin, 1, 4, "PCI INTx pin"),
    ioapicPin: intIn(r.ioapicPin, 0, IOAPIC_PIN_COUNT - 1, "IOAPIC pin of a PCI INTx"),
  }));
  const pciPins = new Set(pciIrqs.map((r) => r.ioapicPin));
  const routes = (options.isaIrqs ?? PC_ISA_IRQ_ROUTES).map((r): IsaIrqRoute =>
    pciPins.has(r.pin) ? { ...r, trigger: "level", polarity: "high" } : r
  );
  const irqsSeen = new Set<number>();
  const pinsSeen = new Set<number>();
  for (const route of routes) {
    const irq = intIn(route.irq, 0, ISA_IRQ_COUNT - 1, "ISA IRQ");
    const pin = intIn(route.pin, 0, IOAPIC_PIN_COUNT - 1, `IOAPIC pin of ISA IRQ ${irq}`);
    if (irqsSeen.has(irq)) throw new RangeError(`buildMpTable: ISA IRQ ${irq} is routed twice`);
    if (pinsSeen.has(pin)) throw new RangeError(`buildMpTable: IOAPIC pin ${pin} is given two ISA IRQs`);
    irqsSeen.add(irq);
    pinsSeen.add(pin);
  }

  const tableSize = FIXED_SIZE - MP_FLOATING_POINTER_SIZE + MP_PROCESSOR_ENTRY_SIZE * cpus +
    MP_SHORT_ENTRY_SIZE * (routes.length + (pciIrqs.length > 0 ? 1 + pciIrqs.length : 0));
  // The table right below the floating pointer, on a paragraph; the block runs to 640 KiB.
  const configTableAddress = (MP_FLOATING_POINTER_START - BigInt(tableSize)) & ~15n;
  const size = Number(MP_TABLE_END - configTableAddress);
  const pointerAt = Number(MP_FLOATING_POINTER_START - configTableAddress);
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);

  // Base-table entries, after the header.
  const tableStart = 0;
  let at = tableStart + MP_CONFIG_HEADER_SIZE;
  let entryCount = 0;
  for (let cpu = 0; cpu < cpus; cpu++) {
    view.setUint8(at, MP_ENTRY_PROCESSOR);
    view.setUint8(at + 1, cpu); // local APIC id
    view.setUint8(at + 2, MP_LAPIC_VERSION);
    view.setUint8(at + 3, MP_CPU_ENABLED_BIT | (cpu === 0 ? MP_CPU_BSP_BIT : 0));
    view.setUint32(at + 4, cpuSignature, true);
    view.setUint32(at + 8, cpuFeatures, true);
    at += MP_PROCESSOR_ENTRY_SIZE; // bytes 12–19 reserved
    entryCount++;
  }
  const isaBus = pciIrqs.length > 0 ? MP_ISA_BUS_ID_AFTER_PCI : MP_ISA_BUS_ID;
  if (pciIrqs.length > 0) {
    view.setUint8(at, MP_ENTRY_BUS);
    view.setUint8(at + 1, MP_PCI_BUS_ID);
    ascii(view, at + 2, "PCI   ");
    at += MP_SHORT_ENTRY_SIZE;
    entryCount++;
  }
  view.setUint8(at, MP_ENTRY_BUS);
  view.setUint8(at + 1, isaBus);
  ascii(view, at + 2, "ISA   ");
  at += MP_SHORT_ENTRY_SIZE;
  entryCount++;
  view.setUint8(at, MP_ENTRY_IOAPIC);
  view.setUint8(at + 1, ioapicId);
  view.setUint8(at + 2, MP_IOAPIC_VERSION);
  view.setUint8(at + 3, MP_IOAPIC_ENABLED_BIT);
  view.setUint32(at + 4, ioapicAddress, true);
  at += MP_SHORT_ENTRY_SIZE;
  entryCount++;
  for (const route of routes) {
    const flags = POLARITY_BITS[route.polarity ?? "conforming"] |
      (TRIGGER_BITS[route.trigger ?? "conforming"] << TRIGGER_SHIFT);
    view.setUint8(at, MP_ENTRY_IO_INTERRUPT);
    view.setUint8(at + 1, MP_INT_INT);
    view.setUint16(at + 2, flags, true);
    view.setUint8(at + 4, isaBus);
    view.setUint8(at + 5, route.irq);
    view.setUint8(at + 6, ioapicId);
    view.setUint8(at + 7, route.pin);
    at += MP_SHORT_ENTRY_SIZE;
    entryCount++;
  }
  for (const route of pciIrqs) {
    view.setUint8(at, MP_ENTRY_IO_INTERRUPT);
    view.setUint8(at + 1, MP_INT_INT);
    view.setUint16(at + 2, POLARITY_BITS.high | (TRIGGER_BITS.level << TRIGGER_SHIFT), true);
    view.setUint8(at + 4, MP_PCI_BUS_ID);
    view.setUint8(at + 5, (route.slot << 2) | (route.pin - 1)); // source bus IRQ: device and INTx
    view.setUint8(at + 6, ioapicId);
    view.setUint8(at + 7, route.ioapicPin);
    at += MP_SHORT_ENTRY_SIZE;
    entryCount++;
  }
  // Virtual wire mode: the 8259's INTR reaches every LAPIC's LINT0 as ExtINT, NMI arrives on LINT1.
  for (const [type, lint] of [[MP_INT_EXTINT, 0], [MP_INT_NMI, 1]]) {
    view.setUint8(at, MP_ENTRY_LOCAL_INTERRUPT);
    view.setUint8(at + 1, type);
    view.setUint16(at + 2, 0, true); // conforming polarity and trigger
    view.setUint8(at + 4, isaBus);
    view.setUint8(at + 5, 0);
    view.setUint8(at + 6, MP_ALL_LAPICS);
    view.setUint8(at + 7, lint);
    at += MP_SHORT_ENTRY_SIZE;
    entryCount++;
  }

  // Configuration table header (spec table 4-2).
  ascii(view, tableStart, "PCMP");
  view.setUint16(tableStart + 4, tableSize, true); // base table length
  view.setUint8(tableStart + 6, MP_SPEC_REVISION);
  ascii(view, tableStart + 8, MP_OEM_ID);
  ascii(view, tableStart + 16, MP_PRODUCT_ID);
  // 28: OEM table pointer 0, 32: OEM table size 0
  view.setUint16(tableStart + 34, entryCount, true);
  view.setUint32(tableStart + 36, lapicAddress, true);
  // 40: extended table length 0, 42: extended table checksum 0, 43: reserved
  view.setUint8(tableStart + 7, checksumOf(bytes.subarray(tableStart, tableStart + tableSize)));

  // Floating pointer structure (spec table 4-1); feature byte 1 = 0: a configuration table is present.
  ascii(view, pointerAt, "_MP_");
  view.setUint32(pointerAt + 4, Number(configTableAddress), true);
  view.setUint8(pointerAt + 8, MP_FLOATING_POINTER_SIZE / 16); // length in paragraphs
  view.setUint8(pointerAt + 9, MP_SPEC_REVISION);
  // 11–15: feature bytes 0 (byte 2 bit 7 clear: virtual wire mode, no IMCR)
  view.setUint8(pointerAt + 10, checksumOf(bytes.subarray(pointerAt, pointerAt + MP_FLOATING_POINTER_SIZE)));

  return {
    address: configTableAddress,
    size: BigInt(size),
    configTableAddress,
    floatingPointerAddress: MP_FLOATING_POINTER_START,
    entryCount,
    bytes,
  };
}
