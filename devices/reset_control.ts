/**
 * The PIIX3 reset control register (port 0xcf9), as QEMU 7.2's `hw/isa/piix3.c` (`rcr_ops`).
 *
 * It shares its port with byte 1 of the PCI configuration address register and wins there because
 * it is mapped with priority 1 (a 4-byte access at 0xcf8 still reaches `pci-conf-idx` whole: the
 * access goes to the region found at its first byte). A write with bit 2 (RST_CPU) set resets the
 * system; otherwise bit 1 (SYS_RST, hard vs soft reset) is kept and reads back.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { checkCallback, checkPortRange } from "./_ports.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** The port. */
export const RESET_CONTROL_PORT = 0xcf9;
/** Its priority over `pci-conf-idx` (0xcf8–0xcfb, priority 0). */
export const RESET_CONTROL_PRIORITY = 1;

const SYS_RST_BIT = 0x02;
const RST_CPU_BIT = 0x04;

/** Options of {@link ResetControl}. */
export interface ResetControlOptions {
  /** A write set RST_CPU (bit 2). */
  onReset?: () => void;
}

/**
 * Region "piix3-reset-control": one byte at 0xcf9, priority 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { ResetControl } from "./reset_control.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * let resets = 0;
 * new ResetControl({ onReset: () => resets++ }).map(io);
 * ports.write(0xcf9, 1, 0x02); // Linux's reboot=pci: hard reset selected …
 * ports.write(0xcf9, 1, 0x06); // … then RST_CPU
 * assert.ok(resets === 1 && ports.read(0xcf9, 1).value === 0x02n);
 * ```
 */
export class ResetControl implements PortDevice, Snapshottable {
  /** Region "piix3-reset-control". */
  readonly region: MemoryRegion;
  readonly #onReset: (() => void) | undefined;
  #value = 0;

  /** The register reading 0. */
  constructor(options: ResetControlOptions = {}) {
    checkCallback(options.onReset, "ResetControl onReset");
    this.#onReset = options.onReset;
    this.region = MemoryRegion.io("piix3-reset-control", 1, {
      read: () => this.read(),
      write: (_offset, value) => this.write(Number(value) & 0xff),
      impl: { min: 1, max: 1 },
      endianness: "little",
    });
  }

  /** The device's only region. */
  get regions(): readonly MemoryRegion[] {
    return [this.region];
  }

  /** Maps "piix3-reset-control" at 0xcf9 with priority 1. */
  map(io: MemoryRegion): void {
    io.addSubregionOverlap(
      checkPortRange(RESET_CONTROL_PORT, 1, "piix3-reset-control"),
      this.region,
      RESET_CONTROL_PRIORITY,
    );
  }

  /** The register (SYS_RST). */
  saveState(): StateObject {
    return { value: this.#value };
  }

  /**
   * Puts a {@link saveState} result back.
   *
   * @throws {DeviceStateError} if `value` is missing or has bits other than SYS_RST (the device is then
   * unchanged).
   */
  loadState(state: StateObject): void {
    this.#value = new StateReader("piix3-reset-control", state).bits("value", SYS_RST_BIT);
  }

  /** Reads the register: the SYS_RST bit last written. */
  read(): number {
    return this.#value;
  }

  /** Writes the register: RST_CPU resets (and stores nothing), else SYS_RST is kept. */
  write(value: number): void {
    if (value & RST_CPU_BIT) {
      this.#onReset?.();
      return;
    }
    this.#value = value & SYS_RST_BIT;
  }

  /** Power-on state: 0. */
  reset(): void {
    this.#value = 0;
  }
}
