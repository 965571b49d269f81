/**
 * The legacy devices of the PC, created and mapped into the I/O space in the order QEMU 7.2's
 * `pc_init1` creates them. Independent of KVM: interrupt lines and board actions are injected.
 *
 * @module
 */

import { ACPI_SLP_TYP_S5, AcpiPm } from "../../devices/acpi_pm.ts";
import { CmosRtc } from "../../devices/cmos_rtc.ts";
import { I440fxHostBridge } from "../../devices/i440fx_host_bridge.ts";
import { I8042 } from "../../devices/i8042.ts";
import type { IrqLine } from "../../devices/irq_line.ts";
import { IsaDebugExit } from "../../devices/isa_debug_exit.ts";
import { PciHost } from "../../devices/pci_host.ts";
import { Port80 } from "../../devices/port80.ts";
import { Port92 } from "../../devices/port92.ts";
import type { PortDevice } from "../../devices/port_device.ts";
import { ResetControl } from "../../devices/reset_control.ts";
import { COM1_IRQ, Uart16550 } from "../../devices/uart_16550.ts";
import type { PcMemory } from "./pc_memory.ts";

/** ISA interrupt line of the keyboard. */
export const KEYBOARD_IRQ = 1;
/** ISA interrupt line of the PS/2 mouse. */
export const MOUSE_IRQ = 12;
/** ISA interrupt line of the ACPI SCI (QEMU's PIIX4 PM: `piix4_pm_init(..., sci_irq = 9)`; the FADT says so). */
export const SCI_IRQ = 9;

/** What the devices need from the board. */
export interface PcDeviceWiring {
  /** The interrupt line for ISA IRQ `n`. */
  irq(n: number): IrqLine;
  /** The guest asked for a reset (i8042 0xfe, port 0xcf9, port 0x92). */
  onReset(): void;
  /** The guest entered ACPI S5 (soft off) through PM1a_CNT. */
  onPowerOff(): void;
  /** The guest wrote to isa-debug-exit: end the run with `status`. */
  onExit(status: number): void;
  /** Bytes the guest sends through COM1. */
  serial?: (byte: number) => void;
  /** COM1 has room for more input (QEMU's `qemu_chr_fe_accept_input`). */
  onSerialReady?: () => void;
  /** Guest RAM size, for the CMOS and the host bridge. */
  ramSize: bigint;
  /** Number of vCPUs, for the CMOS (byte 0x5f). */
  cpus?: number;
  /** RAM below and above 4 GiB, for the CMOS. */
  split: { below4g: bigint; above4g: bigint };
}

/** The devices, with the ones the board talks to by name. */
export interface PcDevices {
  /** Every device, in mapping order. */
  all: PortDevice[];
  /** COM1. */
  uart: Uart16550;
  /** The ACPI PM registers (PIIX4 PM function): the power button, S5. */
  acpiPm: AcpiPm;
  /** Configuration mechanism #1 and the functions on bus 0. */
  pci: PciHost;
}

/** Creates the devices and maps them into `map.io`; PAM writes of the host bridge drive `map.pam`. */
export function buildPcDevices(map: PcMemory, wiring: PcDeviceWiring): PcDevices {
  const pci = new PciHost();
  pci.attach(
    { device: 0 },
    new I440fxHostBridge({
      onPamWrite: (offset, value) => map.pam.writeConfig(offset, value),
      ramSize: wiring.ramSize,
    }),
  );
  const uart = new Uart16550({
    irq: wiring.irq(COM1_IRQ),
    transmit: wiring.serial,
    onReadyToReceive: wiring.onSerialReady,
  });
  // QEMU powers off on S5 (`acpi_pm1_cnt_write` → `qemu_system_shutdown_request`) and suspends on
  // the other sleep types; the board's DSDT offers only \_S5, so another type is ignored.
  const acpiPm = new AcpiPm({
    sci: wiring.irq(SCI_IRQ),
    onSleep: (slpTyp) => {
      if (slpTyp === ACPI_SLP_TYP_S5) wiring.onPowerOff();
    },
  });
  const all: PortDevice[] = [
    pci,
    new ResetControl({ onReset: wiring.onReset }),
    new Port80(),
    new CmosRtc({
      ramBelow4g: wiring.split.below4g,
      ramAbove4g: wiring.split.above4g,
      cpus: wiring.cpus ?? 1,
    }),
    uart,
    new I8042({ irq: wiring.irq(KEYBOARD_IRQ), auxIrq: wiring.irq(MOUSE_IRQ), onReset: wiring.onReset }),
    new Port92({ onReset: wiring.onReset }),
    acpiPm,
    new IsaDebugExit({ onExit: wiring.onExit }),
  ];
  for (const device of all) device.map(map.io);
  return { all, uart, acpiPm, pci };
}
