/**
 * The MC146818 real-time clock and its 128 bytes of CMOS RAM (ports 0x70/0x71), as QEMU 7.2's
 * `hw/rtc/mc146818rtc.c`, plus the RAM-size and CPU-count bytes QEMU's `pc_cmos_init` stores for
 * SeaBIOS.
 *
 * Port 0x70 selects a CMOS byte (bit 7 of the written value is the NMI-disable bit); port 0x71 reads
 * or writes it. The time registers come from an injected clock and are kept as an offset from it, so
 * a guest that sets the clock moves only its own time. Formats follow register B: BCD or binary,
 * 24-hour or 12-hour. Register A's UIP bit is set during the last 244 µs of each second, as QEMU.
 *
 * Not modelled: the periodic, alarm and update-ended interrupts (the device has no timers), so
 * register C always reads 0 and nothing drives IRQ 8.
 *
 * @module
 */

import { MemoryRegion, type MemoryRegionOps } from "../memory/mod.ts";
import { checkPortRange } from "./_ports.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** The index port; the data port follows it. */
export const CMOS_INDEX_PORT = 0x70;
/** The data port. */
export const CMOS_DATA_PORT = 0x71;
/** Size of the CMOS RAM, clock registers included. */
export const CMOS_SIZE = 128;

// Clock registers (CMOS offsets).
const RTC_SECONDS = 0x00;
const RTC_SECONDS_ALARM = 0x01;
const RTC_MINUTES = 0x02;
const RTC_MINUTES_ALARM = 0x03;
const RTC_HOURS = 0x04;
const RTC_HOURS_ALARM = 0x05;
const RTC_DAY_OF_WEEK = 0x06;
const RTC_DAY_OF_MONTH = 0x07;
const RTC_MONTH = 0x08;
const RTC_YEAR = 0x09;
const RTC_REG_A = 0x0a;
const RTC_REG_B = 0x0b;
const RTC_REG_C = 0x0c;
const RTC_REG_D = 0x0d;
const RTC_CENTURY = 0x32;
/** IBM PS/2 machines keep the century here; QEMU redirects it to {@link RTC_CENTURY}. */
const RTC_IBM_PS2_CENTURY = 0x37;

// Register bits.
const REG_A_UIP_BIT = 0x80;
/** Divider-chain field of register A; 0x20 (32.768 kHz) runs, 0x60/0x70 hold it in reset. */
const REG_A_DIVIDER_MASK = 0x70;
const REG_A_DIVIDER_RESET = 0x60;
const REG_A_DIVIDER_NORMAL = 0x20;
const REG_B_SET_BIT = 0x80;
const REG_B_PIE_BIT = 0x40;
const REG_B_AIE_BIT = 0x20;
const REG_B_UIE_BIT = 0x10;
const REG_B_SQWE_BIT = 0x08;
const REG_B_DM_BIT = 0x04;
const REG_B_24H_BIT = 0x02;
const REG_D_VRT_BIT = 0x80;
const INDEX_NMI_DISABLE_BIT = 0x80;
const HOUR_PM_BIT = 0x80;

/** Power-on values: 32.768 kHz divider, 1024 Hz rate; 24-hour BCD; valid RAM and time (QEMU). */
const REG_A_AT_POWER_ON = 0x26;
const REG_B_AT_POWER_ON = REG_B_24H_BIT;
const REG_D_AT_POWER_ON = REG_D_VRT_BIT;

/** UIP is set during the last 244 µs (8 ticks of 32.768 kHz) of each second: QEMU's UIP_HOLD_LENGTH. */
const UIP_HOLD_MS = (8 * 1000) / 32768;
/** When the divider chain leaves reset, the first update comes half a second later. */
const DIVIDER_RESTART_MS = 500;
/** The range of a JavaScript Date, in ms: a saved guest time must lie within it. */
const DATE_RANGE_MS = 8.64e15;

// RAM-size bytes of QEMU's pc_cmos_init.
const CMOS_BASE_MEMORY_KIB = 0x15; // and 0x16
const CMOS_EXTENDED_MEMORY_KIB = 0x17; // and 0x18
const CMOS_EXTENDED_MEMORY_KIB_COPY = 0x30; // and 0x31
const CMOS_MEMORY_ABOVE_16M_64K = 0x34; // and 0x35
const CMOS_MEMORY_ABOVE_4G_64K = 0x5b; // 0x5c, 0x5d
const CMOS_CPU_COUNT_MINUS_1 = 0x5f;
const KIB = 1024n;
const MIB = 1024n * KIB;
const BASE_MEMORY_MAX_KIB = 640n;
const WORD_MAX = 0xffffn;

/** Options of {@link CmosRtc}. */
export interface CmosRtcOptions {
  /**
   * Host time in milliseconds since the Unix epoch, UTC; fractions are used for UIP (default
   * `Date.now`). The guest's clock starts equal to it (QEMU's `-rtc base=utc`).
   */
  clock?: () => number;
  /** RAM below 4 GiB in bytes, for the memory-size bytes (default 0). */
  ramBelow4g?: number | bigint;
  /** RAM above 4 GiB in bytes (default 0). */
  ramAbove4g?: number | bigint;
  /** Number of CPUs at boot, for byte 0x5f (default 1). */
  cpus?: number;
  /** Index port (default 0x70); the data port is the next one. */
  base?: number;
}

function toBytes(value: number | bigint | undefined, what: string): bigint {
  if (value === undefined) return 0n;
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`CmosRtc ${what}: ${value} is not an integer`);
  }
  const v = BigInt(value);
  if (v < 0n) throw new RangeError(`CmosRtc ${what}: ${value} is negative`);
  return v;
}

function min(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

/**
 * The RTC and CMOS RAM: region "rtc" (2 ports) with the child "rtc-index" over its first port, as
 * QEMU 7.2 maps them (the child exists so KVM can coalesce index writes; both share one handler).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { CmosRtc } from "./cmos_rtc.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * const clock = () => Date.UTC(2024, 1, 29, 13, 45, 7); // 2024-02-29 13:45:07 UTC
 * new CmosRtc({ clock, ramBelow4g: 256 << 20, cpus: 2 }).map(io);
 * const cmos = (index: number) => (ports.write(0x70, 1, index), Number(ports.read(0x71, 1).value));
 * assert.ok(cmos(0x04) === 0x13 && cmos(0x02) === 0x45 && cmos(0x09) === 0x24); // BCD
 * assert.ok(cmos(0x34) + (cmos(0x35) << 8) === (256 - 16) * 16 && cmos(0x5f) === 1);
 * ```
 */
export class CmosRtc implements PortDevice, Snapshottable {
  /** Index port. */
  readonly base: number;
  /** Region "rtc": the index and data ports. */
  readonly region: MemoryRegion;
  /** Region "rtc-index": the index port, a child of {@link region} at offset 0. */
  readonly indexRegion: MemoryRegion;
  readonly #clock: () => number;
  readonly #cmos = new Uint8Array(CMOS_SIZE);
  #index = 0;
  #nmiDisabled = false;
  /** Guest time minus host time, in milliseconds. */
  #offsetMs = 0;

  /** The clock set to `options.clock`, and the memory-size and CPU bytes filled in. */
  constructor(options: CmosRtcOptions = {}) {
    this.base = checkPortRange(options.base ?? CMOS_INDEX_PORT, 2, "rtc");
    if (options.clock !== undefined && typeof options.clock !== "function") {
      throw new TypeError("CmosRtc clock must be a function");
    }
    this.#clock = options.clock ?? Date.now;
    const cpus = options.cpus ?? 1;
    if (!Number.isInteger(cpus) || cpus < 1) {
      throw new RangeError(`CmosRtc cpus: ${cpus} is not a positive integer`);
    }
    this.#cmos[RTC_REG_A] = REG_A_AT_POWER_ON;
    this.#cmos[RTC_REG_B] = REG_B_AT_POWER_ON;
    this.#cmos[RTC_REG_C] = 0;
    this.#cmos[RTC_REG_D] = REG_D_AT_POWER_ON;
    this.#storeMemorySizes(
      toBytes(options.ramBelow4g, "ramBelow4g"),
      toBytes(options.ramAbove4g, "ramAbove4g"),
    );
    // x86_rtc_set_cpus_count: a count that does not fit makes firmware use fw_cfg instead.
    this.#cmos[CMOS_CPU_COUNT_MINUS_1] = cpus > 0xff ? 0 : cpus - 1;
    this.#refreshTime();
    // QEMU's cmos_ops, shared by both regions: byte registers.
    const ops: MemoryRegionOps = {
      read: (offset) => this.read(offset),
      write: (offset, value) => this.write(offset, Number(value) & 0xff),
      impl: { min: 1, max: 1 },
      endianness: "little",
    };
    this.region = MemoryRegion.io("rtc", 2, ops);
    this.indexRegion = MemoryRegion.io("rtc-index", 1, ops);
    this.region.addSubregion(0, this.indexRegion);
    // As QEMU: index writes may be queued by the accelerator (KVM's coalesced PIO); any access to
    // the pair plays the queue back first.
    this.region.setFlushCoalesced();
    this.indexRegion.addCoalescing(0, 1);
  }

  /** "rtc" (its child "rtc-index" comes with it). */
  get regions(): readonly MemoryRegion[] {
    return [this.region];
  }

  /** Maps "rtc" (with "rtc-index" inside) at the index port. */
  map(io: MemoryRegion): void {
    io.addSubregion(this.base, this.region);
  }

  /** The selected CMOS byte (0–127). */
  get index(): number {
    return this.#index;
  }

  /** Whether the last index write set bit 7 (NMI disabled). */
  get nmiDisabled(): boolean {
    return this.#nmiDisabled;
  }

  /** The guest's current time, ms since the Unix epoch (UTC), as the clock registers show it. */
  get guestTime(): number {
    return this.#clock() + this.#offsetMs;
  }

  /** Reads CMOS byte `index` without side effects (QEMU's `rtc_get_memory`); clock bytes as last latched. */
  getCmos(index: number): number {
    return this.#cmos[this.#checkIndex(index)];
  }

  /** Sets CMOS byte `index` (QEMU's `rtc_set_memory`): how a board stores firmware configuration. */
  setCmos(index: number, value: number): void {
    this.#cmos[this.#checkIndex(index)] = value & 0xff;
  }

  /** The name device-state errors carry: `rtc@0x70`. */
  get stateName(): string {
    return `rtc@0x${this.base.toString(16)}`;
  }

  /**
   * The 128 CMOS bytes (clock, alarm and control registers included), the index latch with its NMI
   * bit, and the guest's time in ms since the epoch — not its offset from this host's clock, so a
   * restore elsewhere or later continues from the saved time ({@link loadState} rebases it).
   * The periodic, alarm and update interrupts are not modelled, so there are no timers to save.
   */
  saveState(): StateObject {
    return {
      cmos: this.#cmos.slice(),
      index: this.#index,
      nmiDisabled: this.#nmiDisabled,
      guestTimeMs: this.guestTime,
    };
  }

  /**
   * Puts a {@link saveState} result back; the guest's clock continues from the saved time, rebased on
   * this device's host clock.
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of range
   * (the device is then unchanged).
   */
  loadState(state: StateObject): void {
    const r = new StateReader(this.stateName, state);
    const cmos = r.bytes("cmos", { length: CMOS_SIZE });
    const index = r.int("index", 0, CMOS_SIZE - 1);
    const nmiDisabled = r.bool("nmiDisabled");
    const guestTimeMs = r.number("guestTimeMs", -DATE_RANGE_MS, DATE_RANGE_MS);
    if (cmos[RTC_REG_A] & REG_A_UIP_BIT) {
      r.fail("cmos", "has UIP set in register A (it is computed on reads)");
    }
    this.#cmos.set(cmos);
    this.#index = index;
    this.#nmiDisabled = nmiDisabled;
    this.#offsetMs = guestTimeMs - this.#clock();
  }

  /** Reads port `offset` (0 index, 1 data) from the base. */
  read(offset: number): number {
    if ((offset & 1) === 0) return 0xff; // the index port is write-only (QEMU reads 0xff)
    if (this.#index === RTC_IBM_PS2_CENTURY) this.#index = RTC_CENTURY;
    const index = this.#index;
    switch (index) {
      case RTC_SECONDS:
      case RTC_MINUTES:
      case RTC_HOURS:
      case RTC_DAY_OF_WEEK:
      case RTC_DAY_OF_MONTH:
      case RTC_MONTH:
      case RTC_YEAR:
      case RTC_CENTURY:
        if (this.#running) this.#refreshTime();
        return this.#cmos[index];
      case RTC_REG_A:
        return this.#cmos[index] | (this.#updateInProgress() ? REG_A_UIP_BIT : 0);
      case RTC_REG_C: {
        const value = this.#cmos[index];
        this.#cmos[index] = 0; // reading C acknowledges every flag
        return value;
      }
      default:
        return this.#cmos[index];
    }
  }

  /** Writes port `offset` (0 index, 1 data) from the base. */
  write(offset: number, value: number): void {
    value &= 0xff;
    if ((offset & 1) === 0) {
      this.#index = value & ~INDEX_NMI_DISABLE_BIT;
      this.#nmiDisabled = (value & INDEX_NMI_DISABLE_BIT) !== 0;
      return;
    }
    if (this.#index === RTC_IBM_PS2_CENTURY) this.#index = RTC_CENTURY;
    const index = this.#index;
    switch (index) {
      case RTC_SECONDS:
      case RTC_MINUTES:
      case RTC_HOURS:
      case RTC_DAY_OF_WEEK:
      case RTC_DAY_OF_MONTH:
      case RTC_MONTH:
      case RTC_YEAR:
      case RTC_CENTURY:
        this.#cmos[index] = value;
        // In set mode the clock holds still; otherwise the new time takes effect at once.
        if (this.#running) this.#latchTime(this.#subsecond());
        break;
      case RTC_SECONDS_ALARM:
      case RTC_MINUTES_ALARM:
      case RTC_HOURS_ALARM:
        this.#cmos[index] = value;
        break;
      case RTC_REG_A:
        this.#writeRegA(value);
        break;
      case RTC_REG_B:
        this.#writeRegB(value);
        break;
      case RTC_REG_C:
      case RTC_REG_D:
        break; // read-only
      default:
        this.#cmos[index] = value;
    }
  }

  /** A system reset (QEMU's `rtc_resetdev`): interrupt enables and flags clear; RAM and time stay. */
  reset(): void {
    this.#cmos[RTC_REG_B] &= ~(REG_B_PIE_BIT | REG_B_AIE_BIT | REG_B_SQWE_BIT);
    this.#cmos[RTC_REG_C] = 0;
  }

  #checkIndex(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= CMOS_SIZE) {
      throw new RangeError(`CMOS index ${index} is not 0–${CMOS_SIZE - 1}`);
    }
    return index;
  }

  #storeMemorySizes(below4g: bigint, above4g: bigint): void {
    const set16 = (at: number, v: bigint) => {
      this.#cmos[at] = Number(v & 0xffn);
      this.#cmos[at + 1] = Number((v >> 8n) & 0xffn);
    };
    set16(CMOS_BASE_MEMORY_KIB, min(below4g / KIB, BASE_MEMORY_MAX_KIB));
    const extended = below4g > MIB ? min((below4g - MIB) / KIB, WORD_MAX) : 0n;
    set16(CMOS_EXTENDED_MEMORY_KIB, extended);
    set16(CMOS_EXTENDED_MEMORY_KIB_COPY, extended);
    set16(
      CMOS_MEMORY_ABOVE_16M_64K,
      below4g > 16n * MIB ? min((below4g - 16n * MIB) / 0x1_0000n, WORD_MAX) : 0n,
    );
    const high = above4g / 0x1_0000n;
    for (let i = 0; i < 3; i++) {
      this.#cmos[CMOS_MEMORY_ABOVE_4G_64K + i] = Number((high >> BigInt(8 * i)) & 0xffn);
    }
  }

  /** QEMU's `rtc_running`: not in set mode and the divider chain runs. */
  get #running(): boolean {
    return !(this.#cmos[RTC_REG_B] & REG_B_SET_BIT) &&
      (this.#cmos[RTC_REG_A] & REG_A_DIVIDER_MASK) <= REG_A_DIVIDER_NORMAL;
  }

  /** Milliseconds into the guest's current second. */
  #subsecond(): number {
    const ms = this.guestTime % 1000;
    return ms < 0 ? ms + 1000 : ms;
  }

  #updateInProgress(): boolean {
    return this.#running && this.#subsecond() >= 1000 - UIP_HOLD_MS;
  }

  #writeRegA(value: number): void {
    const a = this.#cmos[RTC_REG_A];
    if ((value & REG_A_DIVIDER_RESET) === REG_A_DIVIDER_RESET) {
      // Divider chain into reset: the clock stops where it is.
      if (this.#running) this.#refreshTime();
    } else if (
      (a & REG_A_DIVIDER_RESET) === REG_A_DIVIDER_RESET &&
      (value & REG_A_DIVIDER_MASK) <= REG_A_DIVIDER_NORMAL
    ) {
      // Out of reset: the first update cycle begins half a second later.
      if (!(this.#cmos[RTC_REG_B] & REG_B_SET_BIT)) this.#latchTime(DIVIDER_RESTART_MS);
    }
    this.#cmos[RTC_REG_A] = value & ~REG_A_UIP_BIT; // UIP is read-only (computed on reads)
  }

  #writeRegB(value: number): void {
    const b = this.#cmos[RTC_REG_B];
    if (value & REG_B_SET_BIT) {
      // Set mode: freeze the registers at the current time; no update-ended interrupts.
      if (this.#running) this.#refreshTime();
      value &= ~REG_B_UIE_BIT;
    } else if (b & REG_B_SET_BIT && (this.#cmos[RTC_REG_A] & REG_A_DIVIDER_MASK) <= REG_A_DIVIDER_NORMAL) {
      // Leaving set mode: the registers become the time, keeping the phase within the second.
      // Formats are those in force while the guest wrote them, so latch before switching.
      this.#latchTime(this.#subsecond());
    }
    this.#cmos[RTC_REG_B] = value;
  }

  #toBcd(value: number): number {
    if (this.#cmos[RTC_REG_B] & REG_B_DM_BIT) return value;
    return (Math.trunc(value / 10) << 4) | (value % 10);
  }

  #fromBcd(value: number): number {
    if ((value & 0xc0) === 0xc0) return -1; // "don't care" (alarm registers)
    if (this.#cmos[RTC_REG_B] & REG_B_DM_BIT) return value;
    return (value >> 4) * 10 + (value & 0x0f);
  }

  /** QEMU's `rtc_set_cmos`: writes the guest's current time into the clock registers. */
  #refreshTime(): void {
    const t = new Date(Math.floor(this.guestTime / 1000) * 1000);
    const cmos = this.#cmos;
    cmos[RTC_SECONDS] = this.#toBcd(t.getUTCSeconds());
    cmos[RTC_MINUTES] = this.#toBcd(t.getUTCMinutes());
    const hour = t.getUTCHours();
    if (cmos[RTC_REG_B] & REG_B_24H_BIT) {
      cmos[RTC_HOURS] = this.#toBcd(hour);
    } else {
      cmos[RTC_HOURS] = this.#toBcd(hour % 12 || 12) | (hour >= 12 ? HOUR_PM_BIT : 0);
    }
    cmos[RTC_DAY_OF_WEEK] = this.#toBcd(t.getUTCDay() + 1);
    cmos[RTC_DAY_OF_MONTH] = this.#toBcd(t.getUTCDate());
    cmos[RTC_MONTH] = this.#toBcd(t.getUTCMonth() + 1);
    const year = t.getUTCFullYear();
    cmos[RTC_YEAR] = this.#toBcd(year % 100);
    cmos[RTC_CENTURY] = this.#toBcd(Math.trunc(year / 100) % 100);
  }

  /**
   * QEMU's `rtc_set_time`: the clock registers become the guest's time, `subsecondMs` into the second
   * they show (the day of the week is recomputed from the date, as `mktimegm` ignores it).
   */
  #latchTime(subsecondMs: number): void {
    const cmos = this.#cmos;
    let hour = this.#fromBcd(cmos[RTC_HOURS] & ~HOUR_PM_BIT);
    if (!(cmos[RTC_REG_B] & REG_B_24H_BIT)) {
      hour %= 12;
      if (cmos[RTC_HOURS] & HOUR_PM_BIT) hour += 12;
    }
    const year = this.#fromBcd(cmos[RTC_YEAR]) + this.#fromBcd(cmos[RTC_CENTURY]) * 100;
    const t = new Date(0);
    t.setUTCFullYear(year, this.#fromBcd(cmos[RTC_MONTH]) - 1, this.#fromBcd(cmos[RTC_DAY_OF_MONTH]));
    t.setUTCHours(hour, this.#fromBcd(cmos[RTC_MINUTES]), this.#fromBcd(cmos[RTC_SECONDS]), 0);
    if (Number.isNaN(t.getTime())) return; // out of the Date range: keep the old time
    this.#offsetMs = t.getTime() + subsecondMs - this.#clock();
  }
}
