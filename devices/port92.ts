/**
 * System control port A (port 0x92, "fast A20 and reset"), as QEMU 7.2's `hw/i386/port92.c`.
 *
 * Bit 1 is the A20 gate and reads back as written; a 0 → 1 change of bit 0 requests a fast CPU
 * reset. A system reset clears bit 0 only, so the next 0 → 1 change resets again.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { checkCallback, checkPortRange } from "./_ports.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** The port. */
export const PORT92_PORT = 0x92;

const FAST_RESET_BIT = 0x01;
const A20_BIT = 0x02;

/** Options of {@link Port92}. */
export interface Port92Options {
  /** A write set bit 0 (fast reset), which was clear. */
  onReset?: () => void;
  /** Bit 1 (A20) changed. */
  onA20?: (enabled: boolean) => void;
}

/**
 * Port 0x92: region "port92", one byte.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { Port92 } from "./port92.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * let resets = 0;
 * new Port92({ onReset: () => resets++ }).map(io);
 * ports.write(0x92, 1, 0x02); // A20 on
 * assert.ok(ports.read(0x92, 1).value === 0x02n && resets === 0);
 * ports.write(0x92, 1, 0x03); // fast reset
 * assert.equal(resets, 1);
 * ```
 */
export class Port92 implements PortDevice, Snapshottable {
  /** Region "port92". */
  readonly region: MemoryRegion;
  readonly #onReset: (() => void) | undefined;
  readonly #onA20: ((enabled: boolean) => void) | undefined;
  #value = 0;

  /** Port 0x92 reading 0. */
  constructor(options: Port92Options = {}) {
    checkCallback(options.onReset, "Port92 onReset");
    checkCallback(options.onA20, "Port92 onA20");
    this.#onReset = options.onReset;
    this.#onA20 = options.onA20;
    this.region = MemoryRegion.io("port92", 1, {
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

  /** Maps "port92" at 0x92. */
  map(io: MemoryRegion): void {
    io.addSubregion(checkPortRange(PORT92_PORT, 1, "port92"), this.region);
  }

  /** Whether bit 1 (A20) is set. */
  get a20Enabled(): boolean {
    return (this.#value & A20_BIT) !== 0;
  }

  /** The register (A20 and the fast-reset bit). */
  saveState(): StateObject {
    return { value: this.#value };
  }

  /**
   * Puts a {@link saveState} result back; `onA20` is called if bit 1 differs from the current one, as
   * a guest write would (never `onReset`: a saved set bit 0 is a reset already requested).
   *
   * @throws {DeviceStateError} if `value` is missing or not a byte (the device is then unchanged).
   */
  loadState(state: StateObject): void {
    const value = new StateReader("port92", state).u8("value");
    const old = this.#value;
    this.#value = value;
    if ((value ^ old) & A20_BIT) this.#onA20?.((value & A20_BIT) !== 0);
  }

  /** Reads the register: the last value written (bit 0 cleared by a reset). */
  read(): number {
    return this.#value;
  }

  /** Writes the register. */
  write(value: number): void {
    value &= 0xff;
    const old = this.#value;
    this.#value = value;
    if ((value ^ old) & A20_BIT) this.#onA20?.((value & A20_BIT) !== 0);
    if (value & FAST_RESET_BIT && !(old & FAST_RESET_BIT)) this.#onReset?.();
  }

  /** A system reset clears the fast-reset bit (QEMU's `port92_reset`). */
  reset(): void {
    this.#value &= ~FAST_RESET_BIT;
  }
}
