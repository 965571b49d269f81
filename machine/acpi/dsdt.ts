/**
 * The AML body of the PC board's DSDT, laid out as QEMU 7.2's `pc` machine lays out its own
 * (`hw/i386/acpi-build.c`, `build_dsdt`; the ISA devices' `build_aml` hooks in `hw/char/serial-isa.c`,
 * `hw/input/pckbd.c`, `hw/rtc/mc146818rtc.c`):
 *
 * ```
 * Scope (\_SB) {
 *   Device (PCI0) {                     // the i440fx host bridge: PNP0A03, _UID 0
 *     _CRS: bus 0-255, config ports 0xcf8-0xcff, I/O windows around them, VGA window, PCI hole
 *     _PRT: slot s, pin p (0 = INTA#) → LNKA..LNKD[(s + p - 1) & 3] (the PIIX3's PIRQ swizzle)
 *     Device (ISA) { _ADR 0x00010000    // the PIIX3 function's place
 *       Device (KBD) PNP0303, Device (MOU) PNP0F13, Device (RTC) PNP0B00, Device (COM1) PNP0501
 *     }
 *   }
 *   Device (LNKA) … Device (LNKD)       // PNP0C0F interrupt links, one fixed IRQ each
 * }
 * Name (\_S5, Package (4) { 0, 0, 0, 0 }) // soft-off: SLP_TYP 0, as QEMU's DSDT
 * ```
 *
 * QEMU also gives PCI0 an `_ADR` of 0; a device has a `_HID` or an `_ADR`, not both (ACPI 6.5
 * §6.1.1, and iasl warns), and Linux finds a root bridge by its `_HID`, so this DSDT has none.
 *
 * The interrupt links report the IRQs SeaBIOS programs into the PIIX3's PIRQ routing registers on
 * QEMU (10, 10, 11, 11), level-triggered, active high, shared, with a do-nothing `_SRS`: the
 * routing is fixed, so Linux's `pci_link` driver keeps the IRQ `_CRS` reports. The MADT declares
 * those IRQs level/high too (its interrupt source overrides), as QEMU's does.
 *
 * @module
 */

import { ACPI_SLP_TYP_S5 } from "../../devices/acpi_pm.ts";
import {
  concat,
  device,
  dwordMemory,
  eisaIdObject,
  extendedInterrupt,
  integer,
  ioPort,
  irqNoFlags,
  method,
  name,
  nameString,
  packageOf,
  resourceTemplate,
  returnOf,
  scope,
  wordBusNumber,
  wordIo,
} from "./aml.ts";

/** `_STA` of a present, enabled, shown and functioning device. */
export const ACPI_STA_PRESENT = 0x0f;
/** `_STA` of an enabled interrupt link: present, enabled, functioning, not shown (QEMU's LNKx). */
export const ACPI_STA_LINK_ENABLED = 0x0b;

/** One I/O port range of a device's `_CRS` (`IO(Decode16, base, base, align, length)`). */
export interface AcpiIoRange {
  /** First port. */
  readonly base: number;
  /** Number of ports. */
  readonly length: number;
  /** Alignment (0 or 1 for a fixed range, as QEMU writes them). */
  readonly align: number;
}

/** An ISA device of the board, described in the DSDT under `\_SB.PCI0.ISA`. */
export interface AcpiIsaDevice {
  /** ACPI name segment, e.g. "COM1". */
  readonly name: string;
  /** PNP id for `_HID`, e.g. "PNP0501". */
  readonly hid: string;
  /** `_UID`, if the device has one. */
  readonly uid?: number;
  /** Whether the device has a `_STA` method returning {@link ACPI_STA_PRESENT}. */
  readonly sta: boolean;
  /** Its port ranges. */
  readonly io: readonly AcpiIoRange[];
  /** Its ISA IRQs (edge, active high: `IRQNoFlags`). */
  readonly irqs: readonly number[];
}

/** COM1 as QEMU's `isa-serial` declares it: ports 0x3f8-0x3ff, IRQ 4, `_UID` 1. */
export const ACPI_COM1: AcpiIsaDevice = Object.freeze({
  name: "COM1",
  hid: "PNP0501",
  uid: 1,
  sta: true,
  io: [{ base: 0x3f8, length: 8, align: 0 }],
  irqs: [4],
});

/** The i8042's keyboard port as QEMU declares it: ports 0x60 and 0x64, IRQ 1. */
export const ACPI_I8042_KEYBOARD: AcpiIsaDevice = Object.freeze({
  name: "KBD",
  hid: "PNP0303",
  sta: true,
  io: [{ base: 0x60, length: 1, align: 1 }, { base: 0x64, length: 1, align: 1 }],
  irqs: [1],
});

/** The i8042's auxiliary (PS/2 mouse) port as QEMU declares it: IRQ 12, no ports of its own. */
export const ACPI_I8042_MOUSE: AcpiIsaDevice = Object.freeze({
  name: "MOU",
  hid: "PNP0F13",
  sta: true,
  io: [],
  irqs: [12],
});

/** The MC146818 RTC as QEMU declares it: ports 0x70-0x77 (the decode of a PC), IRQ 8. */
export const ACPI_RTC: AcpiIsaDevice = Object.freeze({
  name: "RTC",
  hid: "PNP0B00",
  sta: false,
  io: [{ base: 0x70, length: 8, align: 1 }],
  irqs: [8],
});

/** The ISA devices of the PC board: the i8042 (keyboard and mouse), the RTC and COM1. */
export const PC_ACPI_ISA_DEVICES: readonly AcpiIsaDevice[] = Object.freeze([
  ACPI_I8042_KEYBOARD,
  ACPI_I8042_MOUSE,
  ACPI_RTC,
  ACPI_COM1,
]);

/** PIIX3 PIRQ A-D as SeaBIOS routes them on QEMU's `pc`: 10, 10, 11, 11. */
export const PC_PCI_LINK_IRQS: readonly number[] = Object.freeze([10, 10, 11, 11]);

/** Options of {@link buildDsdtAml}. */
export interface DsdtOptions {
  /** The ISA devices (default {@link PC_ACPI_ISA_DEVICES}). */
  readonly isaDevices?: readonly AcpiIsaDevice[];
  /** IRQ of PCI interrupt links A-D (default {@link PC_PCI_LINK_IRQS}). */
  readonly pciLinkIrqs?: readonly number[];
  /**
   * The 32-bit PCI memory window `[start, end)` (QEMU: from the end of RAM below 4 GiB to the
   * IOAPIC, 0xfec00000). Absent: the root bridge declares no 32-bit window but the VGA one.
   */
  readonly pciHole?: { readonly start: bigint; readonly end: bigint };
}

/** PCI slots on bus 0 and INTx pins per slot. */
const PCI_SLOTS = 32;
const PCI_PINS = 4;
/** `_PRT` address: the slot in the high word, any function (0xffff) in the low word. */
const PRT_ANY_FUNCTION = 0xffff;
/** The PIIX3's PCI address (device 1, function 0), where QEMU places `ISA`. */
const ISA_BRIDGE_ADR = 0x0001_0000;
/** Legacy VGA window, decoded by the root bridge (QEMU's first DWordMemory). */
const VGA_WINDOW_START = 0xa_0000;
const VGA_WINDOW_END = 0xb_ffff;
/** PCI configuration ports 0xcf8-0xcff, consumed by the root bridge itself. */
const PCI_CONFIG_PORT = 0xcf8;
const PCI_CONFIG_PORTS = 8;
const LINK_NAMES = ["LNKA", "LNKB", "LNKC", "LNKD"];
const FOUR_GIB = 0x1_0000_0000n;

function isaDeviceAml(d: AcpiIsaDevice): Uint8Array {
  const descriptors = [
    ...d.io.map((r) => ioPort(r.base, r.base, r.align, r.length)),
    ...(d.irqs.length > 0 ? [irqNoFlags(d.irqs)] : []),
  ];
  return device(
    d.name,
    name("_HID", eisaIdObject(d.hid)),
    ...(d.uid === undefined ? [] : [name("_UID", integer(d.uid))]),
    ...(d.sta ? [method("_STA", 0, [returnOf(integer(ACPI_STA_PRESENT))])] : []),
    name("_CRS", resourceTemplate(...descriptors)),
  );
}

function linkAml(index: number, irq: number): Uint8Array {
  const template = () =>
    resourceTemplate(extendedInterrupt({ trigger: "level", polarity: "high", shared: true }, [irq]));
  return device(
    LINK_NAMES[index],
    name("_HID", eisaIdObject("PNP0C0F")),
    name("_UID", integer(index)),
    name("_PRS", template()),
    method("_STA", 0, [returnOf(integer(ACPI_STA_LINK_ENABLED))]),
    method("_DIS", 0, []),
    method("_CRS", 0, [returnOf(template())]),
    method("_SRS", 1, []),
  );
}

function rootBridgeCrs(pciHole: DsdtOptions["pciHole"]): Uint8Array {
  const windows = [
    wordBusNumber(0, 0xff),
    ioPort(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, PCI_CONFIG_PORTS),
    wordIo(0, PCI_CONFIG_PORT - 1),
    wordIo(PCI_CONFIG_PORT + PCI_CONFIG_PORTS, 0xffff),
    dwordMemory(VGA_WINDOW_START, VGA_WINDOW_END, true),
  ];
  if (pciHole !== undefined) {
    if (pciHole.start >= pciHole.end || pciHole.end > FOUR_GIB) {
      throw new RangeError(
        `DSDT: PCI hole [0x${pciHole.start.toString(16)}, 0x${
          pciHole.end.toString(16)
        }) is empty or passes 4 GiB`,
      );
    }
    windows.push(dwordMemory(Number(pciHole.start), Number(pciHole.end - 1n), false));
  }
  return resourceTemplate(...windows);
}

/**
 * QEMU's `_PRT`: 32 slots × 4 pins, pin p (0 = INTA#) of slot s on link (s + p - 1) mod 4 — the
 * PIIX3's `pci_slot_get_pirq` (QEMU's `build_prt` writes it as LNKD, LNKA, LNKB, LNKC for
 * `(s + p) & 3`). The board routes INTx the same way (`pciIntxIrq` in machine/pc/pc_pci.ts).
 */
function prt(): Uint8Array {
  // 128 entries of the same few terms: each encoded once (packageOf copies them).
  const links = LINK_NAMES.map((link) => nameString(link));
  const pins = Array.from({ length: PCI_PINS }, (_, pin) => integer(pin));
  const source = integer(0);
  const entries: Uint8Array[] = [];
  for (let slot = 0; slot < PCI_SLOTS; slot++) {
    const address = integer((slot << 16) | PRT_ANY_FUNCTION);
    for (let pin = 0; pin < PCI_PINS; pin++) {
      entries.push(packageOf([address, pins[pin], links[(slot + pin + PCI_PINS - 1) % PCI_PINS], source]));
    }
  }
  return name("_PRT", packageOf(entries));
}

/**
 * The DSDT's AML (the definition block's body, without the table header).
 *
 * @throws {RangeError} for a malformed device (name, PNP id, port, IRQ), a link IRQ list that is
 *   not four IRQs of 0-15, or an empty PCI hole or one passing 4 GiB.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildDsdtAml } from "./dsdt.ts";
 * const aml = new TextDecoder("latin1").decode(buildDsdtAml());
 * assert.ok(aml.includes("_S5_") && aml.includes("PCI0") && aml.includes("COM1"));
 * ```
 */
export function buildDsdtAml(options: DsdtOptions = {}): Uint8Array {
  const devices = options.isaDevices ?? PC_ACPI_ISA_DEVICES;
  const linkIrqs = options.pciLinkIrqs ?? PC_PCI_LINK_IRQS;
  if (
    linkIrqs.length !== LINK_NAMES.length || linkIrqs.some((i) => !Number.isInteger(i) || i < 0 || i > 15)
  ) {
    throw new RangeError(`DSDT: PCI link IRQs [${linkIrqs.join(", ")}] are not four ISA IRQs (0-15)`);
  }
  const names = new Set<string>();
  for (const d of devices) {
    if (names.has(d.name)) throw new RangeError(`DSDT: two ISA devices are named ${d.name}`);
    names.add(d.name);
  }
  const pci0 = device(
    "PCI0",
    name("_HID", eisaIdObject("PNP0A03")),
    name("_UID", integer(0)),
    name("_CRS", rootBridgeCrs(options.pciHole)),
    prt(),
    device("ISA", name("_ADR", integer(ISA_BRIDGE_ADR)), ...devices.map(isaDeviceAml)),
  );
  const sb = scope("\\_SB", pci0, ...linkIrqs.map((irq, i) => linkAml(i, irq)));
  // \_S5: SLP_TYPa, SLP_TYPb, reserved, reserved (ACPI 6.5 §7.4.2): QEMU gives soft-off type 0.
  const s5 = name(
    "\\_S5",
    packageOf([integer(ACPI_SLP_TYP_S5), integer(ACPI_SLP_TYP_S5), integer(0), integer(0)]),
  );
  return concat(sb, s5);
}
