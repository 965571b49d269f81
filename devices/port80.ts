/**
 * Port 0x80, the POST-code / I/O-delay port, as QEMU 7.2's `ioport80` (`hw/i386/pc.c`).
 *
 * Writes are ignored by the machine (firmware writes POST codes, Linux writes here for I/O delays);
 * the last value is kept for debugging. Reads return all-ones, as QEMU's `ioport80_read`.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { checkPortRange } from "./_ports.ts";
import type { PortDevice } from "./port_device.ts";

/** The port. */
export const PORT80_PORT = 0x80;

/**
 * Region "ioport80": one byte at 0x80.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { Port80 } from "./port80.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * const post = new Port80();
 * post.map(io);
 * ports.write(0x80, 1, 0x42);
 * assert.ok(post.lastValue === 0x42 && ports.read(0x80, 1).value === 0xffn);
 * ```
 */
export class Port80 implements PortDevice {
  /** Region "ioport80". */
  readonly region: MemoryRegion;
  #last = 0;
  #writes = 0;

  /** The port with no value written yet. */
  constructor() {
    this.region = MemoryRegion.io("ioport80", 1, {
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

  /** Maps "ioport80" at 0x80. */
  map(io: MemoryRegion): void {
    io.addSubregion(checkPortRange(PORT80_PORT, 1, "ioport80"), this.region);
  }

  /** The last byte written (the last POST code), 0 before any write. */
  get lastValue(): number {
    return this.#last;
  }

  /** Number of bytes written since power-on. */
  get writeCount(): number {
    return this.#writes;
  }

  /** A read: all-ones, as QEMU. */
  read(): number {
    return 0xff;
  }

  /** A write: remembered, otherwise ignored. */
  write(value: number): void {
    this.#last = value & 0xff;
    this.#writes++;
  }

  /** Forgets the last value. */
  reset(): void {
    this.#last = 0;
    this.#writes = 0;
  }
}
