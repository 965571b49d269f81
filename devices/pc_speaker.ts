/**
 * Port 0x61, the PC speaker and PIT gate port (system control port B), as QEMU 7.2's
 * `hw/audio/pcspk.c` models its port — no sound is made.
 *
 * | bit | read                                        | write                     |
 * |-----|---------------------------------------------|---------------------------|
 * | 0   | PIT channel 2's gate                        | PIT channel 2's gate      |
 * | 1   | speaker data enable, as written             | speaker data enable       |
 * | 4   | "refresh clock": toggles on every read      | —                         |
 * | 5   | PIT channel 2's OUT                         | —                         |
 *
 * Other bits read 0 and are ignored when written (QEMU keeps no parity/IOCHK enables and reports no
 * NMI sources). The refresh bit flips on each read, as QEMU's `dummy_refresh_clock` (the kernel's
 * in-kernel speaker port derives it from the time instead), so a guest waiting for it to change sees
 * it at the next read. Linux's TSC calibration (`quick_pit_calibrate`, `pit_calibrate_tsc`) opens the
 * gate here and watches bit 5.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { checkPortRange } from "./_ports.ts";
import type { I8254 } from "./i8254.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** The port. */
export const PCSPK_PORT: number = 0x61;

const GATE_BIT = 0x01;
const DATA_ON_BIT = 0x02;
const REFRESH_CLOCK_BIT = 0x10;
const OUT_BIT = 0x20;
/** The PIT channel whose gate and OUT the port shows. */
const SPEAKER_CHANNEL = 2;

/** Options of {@link PcSpeaker}. */
export interface PcSpeakerOptions {
  /** The port (default 0x61; QEMU's `iobase` property). */
  base?: number;
}

/**
 * Port 0x61: region "pcspk", one byte, wired to a {@link I8254}'s channel 2.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { I8254 } from "./i8254.ts";
 * import { PcSpeaker } from "./pc_speaker.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * let now = 0;
 * const pit = new I8254({ clock: () => now });
 * pit.map(io);
 * new PcSpeaker(pit).map(io);
 * ports.write(0x61, 1, 0x01); // gate channel 2 on, speaker off
 * ports.write(0x43, 1, 0xb0); // channel 2, LSB then MSB, mode 0
 * ports.write(0x42, 1, 100);
 * ports.write(0x42, 1, 0);
 * assert.equal(Number(ports.read(0x61, 1).value) & 0x20, 0); // OUT low: still counting
 * now += 100_000; // 100 µs: 119 ticks
 * assert.equal(Number(ports.read(0x61, 1).value) & 0x21, 0x21); // OUT high, gate on
 * ```
 */
export class PcSpeaker implements PortDevice, Snapshottable {
  /** The port. */
  readonly base: number;
  /** Region "pcspk". */
  readonly region: MemoryRegion;
  readonly #pit: I8254;
  #dataOn = false;
  #refreshClock = false;

  /**
   * Port 0x61 over `pit`'s channel 2.
   *
   * @throws {RangeError} for a port outside the 64 KiB port space.
   */
  constructor(pit: I8254, options: PcSpeakerOptions = {}) {
    this.base = checkPortRange(options.base ?? PCSPK_PORT, 1, "pcspk");
    this.#pit = pit;
    this.region = MemoryRegion.io("pcspk", 1, {
      read: () => this.read(),
      write: (_offset, value) => this.write(Number(value) & 0xff),
      impl: { min: 1, max: 1 },
      endianness: "little",
    });
  }

  /** "pcspk". */
  get regions(): readonly MemoryRegion[] {
    return [this.region];
  }

  /** Maps "pcspk" at the port (priority 0). */
  map(io: MemoryRegion): void {
    io.addSubregion(this.base, this.region);
  }

  /** Whether the speaker's data enable (bit 1) is set. */
  get dataOn(): boolean {
    return this.#dataOn;
  }

  /** Reads the port (QEMU's `pcspk_io_read`): the refresh bit toggles first. */
  read(): number {
    const ch = this.#pit.channelInfo(SPEAKER_CHANNEL);
    this.#refreshClock = !this.#refreshClock;
    return (ch.gate ? GATE_BIT : 0) | (this.#dataOn ? DATA_ON_BIT : 0) |
      (this.#refreshClock ? REFRESH_CLOCK_BIT : 0) | (ch.out ? OUT_BIT : 0);
  }

  /** Writes the port (QEMU's `pcspk_io_write`): data enable, and channel 2's gate. */
  write(value: number): void {
    this.#dataOn = (value & DATA_ON_BIT) !== 0;
    this.#pit.setGate(SPEAKER_CHANNEL, (value & GATE_BIT) !== 0);
  }

  /** Nothing: QEMU's speaker has no reset handler (the PIT's reset lowers channel 2's gate). */
  reset(): void {}

  /** QEMU's vmstate "pcspk": the data enable and the refresh bit. The gate is the PIT's. */
  saveState(): StateObject {
    return { dataOn: this.#dataOn, refreshClock: this.#refreshClock };
  }

  /**
   * Puts a {@link saveState} result back.
   *
   * @throws {DeviceStateError} if a field is missing or not a boolean (the device is then unchanged).
   */
  loadState(state: StateObject): void {
    const r = new StateReader(`pcspk@0x${this.base.toString(16)}`, state);
    const dataOn = r.bool("dataOn");
    const refreshClock = r.bool("refreshClock");
    this.#dataOn = dataOn;
    this.#refreshClock = refreshClock;
  }
}
