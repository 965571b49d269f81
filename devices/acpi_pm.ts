/**
 * The ACPI power-management registers of a PIIX4-style PM function, as QEMU 7.2 models them
 * (`hw/acpi/piix4.c` over the common `hw/acpi/core.c`): the PM1a event block, the PM1a control
 * block and the PM timer behind the PM base, and the GPE0 block at its own port. The ACPI tables
 * (`machine/acpi/`) point the guest's OS at these ports.
 *
 * | region      | ports (default)  | registers                                                    |
 * |-------------|------------------|--------------------------------------------------------------|
 * | `piix4-pm`  | 0x600-0x63f      | container; ports with no register fall through to the bus    |
 * | `acpi-evt`  | 0x600-0x603      | PM1_STS (write 1 to clear), PM1_EN                           |
 * | `acpi-cnt`  | 0x604-0x605      | PM1_CNT: SCI_EN, SLP_TYP, SLP_EN (write-only: starts a sleep) |
 * | `acpi-tmr`  | 0x608-0x60b      | PM_TMR: 24-bit counter at 3.579545 MHz, 4-byte reads only    |
 * | `acpi-gpe0` | 0xafe0-0xafe3    | GPE0_STS (2 bytes, write 1 to clear), GPE0_EN (2 bytes)      |
 *
 * The SCI is a level: high while an enabled PM1 event (timer, global lock, power button, RTC) or
 * an enabled GPE of the first status byte is pending (QEMU's `acpi_update_sci`). Access sizes and
 * the values read at offsets that hold no register follow QEMU's ops: the event block takes 1- and
 * 2-byte accesses (as 2-byte reads of offsets 0 and 2; anything else reads 0), the control block 1
 * and 2 bytes, the timer 4 bytes (other sizes read 0), GPE0 any size byte by byte.
 *
 * As QEMU without SMM, the device starts in ACPI mode: SCI_EN is set at reset, and the FADT has no
 * SMI command port. As QEMU, TMR_STS reads as set after a reset until the guest clears it (the
 * first overflow time is 0).
 *
 * Not modelled: the timer-overflow interrupt (the device has no timers, so TMR_STS is only seen
 * when read, and TMR_EN raises no SCI on its own), the PIIX4's SMBus and its hotplug registers.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { checkCallback, checkPortRange } from "./_ports.ts";
import { type IrqLine, IrqOutput } from "./irq_line.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** QEMU's PM base on the `pc` machine (the PIIX4 PMBA register as SeaBIOS programs it). */
export const ACPI_PM_BASE = 0x600;
/** PIIX4's GPE0 block (QEMU's `GPE_BASE`). */
export const ACPI_GPE0_BASE = 0xafe0;
/** Size of the `piix4-pm` container. */
export const ACPI_PM_IO_SIZE = 64;
/** Size of the GPE0 block: two status bytes, two enable bytes (QEMU's `GPE_LEN`). */
export const ACPI_GPE0_SIZE = 4;
/** The PM timer's frequency in Hz (ACPI 6.5 §4.8.3.3). */
export const ACPI_PM_TIMER_HZ = 3_579_545;
/** The SLP_TYP value of `\_S5` (soft off) in QEMU's DSDT, which the board's DSDT copies. */
export const ACPI_SLP_TYP_S5 = 0;

// Offsets from the PM base (hw/acpi/core.c).
const PM1_EVT_OFFSET = 0;
const PM1_EVT_SIZE = 4;
const PM1_CNT_OFFSET = 4;
const PM1_CNT_SIZE = 2;
const PM_TMR_OFFSET = 8;
const PM_TMR_SIZE = 4;
// Inside the event block.
const PM1_STS = 0;
const PM1_EN = 2;

/** PM1 status/enable bits (ACPI 6.5 tables 4.11 and 4.12). */
export const PM1_TMR_BIT = 1 << 0;
/** Bus master status (status only). */
export const PM1_BM_STS_BIT = 1 << 4;
/** Global lock release. */
export const PM1_GBL_BIT = 1 << 5;
/** Power button. */
export const PM1_PWRBTN_BIT = 1 << 8;
/** Sleep button. */
export const PM1_SLPBTN_BIT = 1 << 9;
/** RTC alarm. */
export const PM1_RTC_BIT = 1 << 10;
/** Wake status (status only). */
export const PM1_WAK_STS_BIT = 1 << 15;
/** The enables that drive the SCI (QEMU's `ACPI_BITMASK_PM1_COMMON_ENABLED`). */
const PM1_SCI_ENABLES = PM1_RTC_BIT | PM1_PWRBTN_BIT | PM1_GBL_BIT | PM1_TMR_BIT;

/** PM1 control bits (ACPI 6.5 table 4.13). */
export const PM1_CNT_SCI_EN_BIT = 1 << 0;
/** SLP_TYP field: bits 12:10. */
const SLP_TYP_SHIFT = 10;
const SLP_TYP_MASK = 0b111;
/** SLP_EN: write-only, starts the sleep SLP_TYP names. */
export const PM1_CNT_SLP_EN_BIT = 1 << 13;

const TIMER_MASK = 0xff_ffff;
/** TMR_STS is set when bit 23 of the counter changes. */
const TIMER_HALF = 0x80_0000;
const MS_PER_S = 1000;

/** Options of {@link AcpiPm}. */
export interface AcpiPmOptions {
  /** The SCI (ISA IRQ 9 on the PC). */
  sci?: IrqLine;
  /**
   * The guest set SLP_EN: enter the sleep state `slpTyp` (bits 12:10 of PM1_CNT). QEMU powers
   * off on {@link ACPI_SLP_TYP_S5}.
   */
  onSleep?: (slpTyp: number) => void;
  /** Monotonic time in milliseconds (default `performance.now`): the PM timer counts from it. */
  clock?: () => number;
  /** PM base port (default 0x600): 64 ports. */
  base?: number;
  /** GPE0 block port (default 0xafe0): 4 ports. */
  gpe0Base?: number;
}

/**
 * The ACPI PM registers: regions "piix4-pm" (with "acpi-evt", "acpi-cnt", "acpi-tmr") and
 * "acpi-gpe0".
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { AcpiPm } from "./acpi_pm.ts";
 * import { RecordingIrqLine } from "./irq_line.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * const sci = new RecordingIrqLine();
 * const sleeps: number[] = [];
 * const pm = new AcpiPm({ sci, onSleep: (type) => sleeps.push(type) });
 * pm.map(io);
 * ports.write(0x602, 2, 0x0100); // PWRBTN_EN
 * pm.powerButton();
 * assert.ok(sci.level && (Number(ports.read(0x600, 2).value) & 0x0100) !== 0);
 * ports.write(0x600, 2, 0x0100); // the OS acknowledges
 * assert.equal(sci.level, false);
 * ports.write(0x604, 2, 0x2001); // SLP_TYP 0 (S5) | SLP_EN | SCI_EN: power off
 * assert.deepEqual(sleeps, [0]);
 * ```
 */
export class AcpiPm implements PortDevice, Snapshottable {
  /** Region "piix4-pm": the container at the PM base. */
  readonly region: MemoryRegion;
  /** Region "acpi-gpe0". */
  readonly gpeRegion: MemoryRegion;
  /** The PM base port. */
  readonly base: number;
  /** The GPE0 block port. */
  readonly gpe0Base: number;
  readonly #sci: IrqOutput;
  readonly #onSleep: ((slpTyp: number) => void) | undefined;
  readonly #clock: () => number;
  /** Clock reading at which the PM timer read 0 (moved by a load, so the timer continues). */
  #origin: number;
  #sts = 0;
  #en = 0;
  #cnt = 0;
  /** Counter value (unwrapped ticks) at which TMR_STS sets next. */
  #overflowAt = 0;
  readonly #gpe = new Uint8Array(ACPI_GPE0_SIZE);

  /**
   * The registers after a reset: no event pending or enabled, SCI_EN set.
   *
   * @throws {RangeError} for ports outside the 64 KiB port space.
   * @throws {TypeError} for a callback or clock that is not a function.
   */
  constructor(options: AcpiPmOptions = {}) {
    checkCallback(options.onSleep, "AcpiPm onSleep");
    checkCallback(options.clock, "AcpiPm clock");
    this.base = checkPortRange(options.base ?? ACPI_PM_BASE, ACPI_PM_IO_SIZE, "AcpiPm base");
    this.gpe0Base = checkPortRange(options.gpe0Base ?? ACPI_GPE0_BASE, ACPI_GPE0_SIZE, "AcpiPm gpe0Base");
    this.#sci = new IrqOutput(options.sci);
    this.#onSleep = options.onSleep;
    this.#clock = options.clock ?? (() => performance.now());
    this.#origin = this.#clock();

    this.region = MemoryRegion.container("piix4-pm", ACPI_PM_IO_SIZE);
    this.region.addSubregion(
      PM1_EVT_OFFSET,
      MemoryRegion.io("acpi-evt", PM1_EVT_SIZE, {
        read: (offset) => this.#readEvt(offset),
        write: (offset, value) => this.#writeEvt(offset, Number(value) & 0xffff),
        impl: { min: 2 },
        valid: { min: 1, max: 2 },
        endianness: "little",
      }),
    );
    this.region.addSubregion(
      PM1_CNT_OFFSET,
      MemoryRegion.io("acpi-cnt", PM1_CNT_SIZE, {
        read: (offset) => this.#cnt >> (offset * 8),
        write: (offset, value) => this.#writeCntAt(offset, Number(value)),
        valid: { min: 1, max: 2 },
        endianness: "little",
      }),
    );
    this.region.addSubregion(
      PM_TMR_OFFSET,
      MemoryRegion.io("acpi-tmr", PM_TMR_SIZE, {
        read: () => this.timer(),
        write: () => {},
        valid: { min: 4, max: 4 },
        endianness: "little",
      }),
    );
    this.gpeRegion = MemoryRegion.io("acpi-gpe0", ACPI_GPE0_SIZE, {
      read: (offset) => this.#gpe[offset],
      write: (offset, value) => this.#writeGpe(offset, Number(value) & 0xff),
      impl: { min: 1, max: 1 },
      valid: { min: 1, max: 4 },
      endianness: "little",
    });
    this.reset();
  }

  /** Both regions. */
  get regions(): readonly MemoryRegion[] {
    return [this.region, this.gpeRegion];
  }

  /** Maps "piix4-pm" at the PM base and "acpi-gpe0" at the GPE0 block. */
  map(io: MemoryRegion): void {
    io.addSubregion(this.base, this.region);
    io.addSubregion(this.gpe0Base, this.gpeRegion);
  }

  /** Power-on state (QEMU's `piix4_pm_reset`): events clear and disabled, SCI_EN set, SCI low. */
  reset(): void {
    this.#sts = 0;
    this.#en = 0;
    this.#cnt = PM1_CNT_SCI_EN_BIT;
    this.#overflowAt = 0;
    this.#gpe.fill(0);
    this.#updateSci();
  }

  /**
   * The power button was pressed (QEMU's `acpi_pm1_evt_power_down`): if the OS enabled PWRBTN_EN,
   * PWRBTN_STS is set and the SCI raised. Returns whether the event was delivered, so a board can
   * do something else (a hard power-off) for a guest that does not listen.
   */
  powerButton(): boolean {
    if (!(this.#en & PM1_PWRBTN_BIT)) return false;
    this.#sts |= PM1_PWRBTN_BIT;
    this.#updateSci();
    return true;
  }

  /**
   * Sets status bit `bit` (0-15) of GPE0 and updates the SCI: how a hotplug controller would
   * signal the OS.
   *
   * @throws {RangeError} for a bit outside 0-15.
   */
  raiseGpe(bit: number): void {
    if (!Number.isInteger(bit) || bit < 0 || bit >= (ACPI_GPE0_SIZE / 2) * 8) {
      throw new RangeError(`AcpiPm raiseGpe: bit ${bit} is not a GPE0 status bit (0-15)`);
    }
    this.#gpe[bit >> 3] |= 1 << (bit & 7);
    this.#updateSci();
  }

  /** The PM timer's value: ticks of 3.579545 MHz since the device was created, 24 bits. */
  timer(): number {
    return this.#ticks() % (TIMER_MASK + 1);
  }

  /** PM1_STS as the guest reads it (TMR_STS set once the counter's bit 23 has changed). */
  get status(): number {
    if (this.#ticks() >= this.#overflowAt && !(this.#sts & PM1_TMR_BIT)) {
      this.#sts |= PM1_TMR_BIT;
      // Seen late (there is no timer), but then as QEMU's overflow timer would: SCI if TMR_EN.
      if (this.#en & PM1_TMR_BIT) this.#updateSci();
    }
    return this.#sts;
  }

  /** PM1_EN. */
  get enable(): number {
    return this.#en;
  }

  /** PM1_CNT as the guest reads it (SLP_EN never reads back). */
  get control(): number {
    return this.#cnt;
  }

  /** Whether the SCI is asserted. */
  get sciLevel(): boolean {
    return this.#sci.level;
  }

  /**
   * PM1 status, enable and control, GPE0, and the PM timer as the guest sees it: the time it has
   * counted (ms since it read 0, not a host clock reading) and when TMR_STS sets next. The PM base
   * and the GPE0 block are fixed by the board (this PM function has no PCI configuration space).
   */
  saveState(): StateObject {
    return {
      pm1Sts: this.status, // with TMR_STS as due now (it is set lazily on reads)
      pm1En: this.#en,
      pm1Cnt: this.#cnt,
      gpe0: this.#gpe.slice(),
      timerElapsedMs: this.#elapsed(),
      timerOverflowAt: this.#overflowAt,
    };
  }

  /**
   * Puts a {@link saveState} result back and re-drives the SCI; the PM timer continues from the
   * saved count, rebased on this device's clock.
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of range
   * (the device is then unchanged).
   */
  loadState(state: StateObject): void {
    const r = new StateReader(`acpi-pm@0x${this.base.toString(16)}`, state);
    const sts = r.u16("pm1Sts");
    const en = r.u16("pm1En");
    const cnt = r.bits("pm1Cnt", 0xffff & ~PM1_CNT_SLP_EN_BIT);
    const gpe = r.bytes("gpe0", { length: ACPI_GPE0_SIZE });
    const elapsed = r.number("timerElapsedMs", 0, Number.MAX_SAFE_INTEGER);
    const overflowAt = r.int("timerOverflowAt", 0, Number.MAX_SAFE_INTEGER);
    if (overflowAt % TIMER_HALF !== 0) r.fail("timerOverflowAt", `is ${overflowAt}, not a multiple of 2^23`);
    this.#sts = sts;
    this.#en = en;
    this.#cnt = cnt;
    this.#gpe.set(gpe);
    this.#origin = this.#clock() - elapsed;
    this.#overflowAt = overflowAt;
    this.#updateSci();
  }

  /** Milliseconds the PM timer has counted. */
  #elapsed(): number {
    return Math.max(0, this.#clock() - this.#origin);
  }

  /** Unwrapped ticks; whole seconds and the rest apart, so the product stays exact for years. */
  #ticks(): number {
    const elapsed = this.#elapsed();
    const seconds = Math.floor(elapsed / MS_PER_S);
    const rest = elapsed - seconds * MS_PER_S;
    return seconds * ACPI_PM_TIMER_HZ + Math.floor((rest * ACPI_PM_TIMER_HZ) / MS_PER_S);
  }

  #readEvt(offset: number): number {
    if (offset === PM1_STS) return this.status;
    if (offset === PM1_EN) return this.#en;
    return 0;
  }

  #writeEvt(offset: number, value: number): void {
    if (offset === PM1_STS) {
      if (this.status & value & PM1_TMR_BIT) {
        // The next overflow: the next time bit 23 of the counter changes (QEMU's
        // acpi_pm_tmr_calc_overflow_time).
        const ticks = this.#ticks();
        this.#overflowAt = Math.floor((ticks + TIMER_HALF) / TIMER_HALF) * TIMER_HALF;
      }
      this.#sts &= ~value;
    } else if (offset === PM1_EN) {
      this.#en = value;
    } else {
      return;
    }
    this.#updateSci();
  }

  /** A write of the byte or word at `offset`; a high-byte write keeps the low byte (QEMU). */
  #writeCntAt(offset: number, value: number): void {
    const word = offset === 1 ? ((value & 0xff) << 8) | (this.#cnt & 0xff) : value & 0xffff;
    this.#cnt = word & ~PM1_CNT_SLP_EN_BIT;
    if (word & PM1_CNT_SLP_EN_BIT) this.#onSleep?.((word >> SLP_TYP_SHIFT) & SLP_TYP_MASK);
  }

  #writeGpe(offset: number, value: number): void {
    if (offset < ACPI_GPE0_SIZE / 2) this.#gpe[offset] &= ~value; // status: write 1 to clear
    else this.#gpe[offset] = value; // enable
    this.#updateSci();
  }

  /** QEMU's `acpi_update_sci`: enabled PM1 events, or enabled GPEs of the first status byte. */
  #updateSci(): void {
    const pm1 = (this.status & this.#en & PM1_SCI_ENABLES) !== 0;
    const gpe = (this.#gpe[0] & this.#gpe[ACPI_GPE0_SIZE / 2]) !== 0;
    this.#sci.update(pm1 || gpe);
  }
}
