/**
 * The Intel 8254 programmable interval timer (ports 0x40-0x43), as QEMU 7.2's userspace model
 * (`hw/timer/i8254.c` over `hw/timer/i8254_common.c`), for a board whose irqchip is split (PIC, IOAPIC
 * and PIT in userspace, as QEMU's `-machine kernel-irqchip=split`).
 *
 * Three channels count at {@link PIT_FREQ} Hz. As QEMU, nothing ticks: a channel keeps the clock time
 * at which its count was loaded, and its count and OUT are computed from the time elapsed since then
 * (`pit_get_count`, `pit_get_out`), in exact integer arithmetic (QEMU's `muldiv64`). Channel 0 drives
 * IRQ 0: the device computes when its OUT next changes ({@link I8254.nextDeadline}, QEMU's
 * `pit_get_next_transition_time`) and the board, having armed a host timer for that time, calls
 * {@link I8254.update}, which sets the line to OUT at each transition due (QEMU's `pit_irq_timer`).
 * Channel 2's gate comes from port 0x61 (`PcSpeaker` in `pc_speaker.ts`); channels 0 and 1 have their
 * gate tied high.
 *
 * QEMU's simplifications are kept, so a guest sees what it sees under QEMU:
 * - BCD (control word bit 0) is stored and reported in the status byte, but counting is binary.
 * - The status byte's null-count bit (6) is always 0.
 * - Writing a control word changes the access and counting modes only: OUT, the count and the IRQ
 *   line change at the next count load, not at once.
 * - Modes 6 and 7 are stored as written (and so reported by a read-back): counts as in mode 2, OUT and
 *   gate as in mode 0 (QEMU's `default:` cases) — not the 8254's aliases of modes 2 and 3.
 * - Mode 3 with an odd count counts `count - (2d mod count)` (QEMU's "may be incorrect for odd counts").
 * - A low gate does not stop counting; in modes 1, 2, 3 and 5 a rising gate restarts the count.
 * - OUT (status byte, port 0x61 bit 5) in modes 1, 2, 4 and 5 is the 8254's inverted: high while
 *   counting in mode 1, high only on the reload tick in mode 2 and on the terminal tick in modes 4
 *   and 5. IRQ 0 follows OUT as QEMU samples it at its transition times, so in mode 2 the line rises
 *   at each reload and is low about one tick before the next (the 8254's waveform after all), and in
 *   mode 4 it rises at the terminal count, a tick before the 8254's would.
 * - A reset leaves the access state (`rwMode`, read/write state, latches, BCD) as it was.
 *
 * The clock is injected: monotonic nanoseconds as a safe integer (QEMU's `QEMU_CLOCK_VIRTUAL`, which
 * stops while the VM is stopped). Arithmetic is exact while the time since a count load stays below
 * 2^53 ns (104 days); a board should count from its own start, not from the host's boot.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { checkCallback, checkPortRange } from "./_ports.ts";
import { type IrqLine, IrqOutput } from "./irq_line.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** The PIT's base port on the PC. */
export const PIT_BASE: number = 0x40;
/** Ports of the PIT: counters 0-2 and the control word. */
export const PIT_IO_SIZE: number = 4;
/** The PIT's input clock in Hz (QEMU's `PIT_FREQ`). */
export const PIT_FREQ: number = 1_193_182;
/** Number of channels. */
export const PIT_CHANNELS: number = 3;
/**
 * The most timer expiries one {@link I8254.update} replays: about 40 ms of the fastest wave a guest
 * can program (mode 3, count 2); a longer backlog means the host stalled, and the timer skips to the
 * present.
 */
export const PIT_MAX_REPLAYED_TRANSITIONS: number = 100_000;

const NS_PER_S = 1_000_000_000;
const CONTROL_OFFSET = 3;
const READ_BACK_CHANNEL = 3;
/** A count of 0 counts 65536 ticks. */
const MAX_COUNT = 0x1_0000;

// QEMU's read/write states (i8254.c): an access mode, and the two halves of a 16-bit access.
const RW_STATE_LSB = 1;
const RW_STATE_MSB = 2;
const RW_STATE_WORD0 = 3;
const RW_STATE_WORD1 = 4;

// Read-back command bits (control word 0b11xx_xxxx).
const READ_BACK_NO_COUNT_BIT = 0x20;
const READ_BACK_NO_STATUS_BIT = 0x10;

/** The largest clock time accepted, so that the arithmetic stays exact. */
const MAX_TIME_NS = Number.MAX_SAFE_INTEGER;

/** `floor(x / c)` for non-negative safe integers, exactly. */
function div(x: number, c: number): number {
  return (x - (x % c)) / c;
}

/** Ticks counted in `ns` nanoseconds: QEMU's `muldiv64(ns, PIT_FREQ, NANOSECONDS_PER_SECOND)`, exact. */
export function pitTicks(ns: number): number {
  if (!(ns > 0)) return 0; // the clock is monotonic; a time before the load counts nothing
  const seconds = div(ns, NS_PER_S);
  return seconds * PIT_FREQ + div((ns - seconds * NS_PER_S) * PIT_FREQ, NS_PER_S);
}

/** Nanoseconds of `ticks` ticks, rounded down: QEMU's `muldiv64(ticks, NANOSECONDS_PER_SECOND, PIT_FREQ)`. */
export function pitTicksToNs(ticks: number): number {
  const seconds = div(ticks, PIT_FREQ);
  return seconds * NS_PER_S + div((ticks - seconds * PIT_FREQ) * NS_PER_S, PIT_FREQ);
}

/** One counter's registers (QEMU's `PITChannelState`). */
interface Channel {
  /** The count loaded, 1-65536 (a written 0 is 65536). */
  count: number;
  latchedCount: number;
  /** 0, or the read state the latched count is read in. */
  countLatched: number;
  statusLatched: boolean;
  status: number;
  readState: number;
  writeState: number;
  writeLatch: number;
  rwMode: number;
  mode: number;
  bcd: number;
  gate: boolean;
  /** Clock time at which the count was loaded (or the gate restarted it). */
  countLoadTime: number;
  /** Channel 0 only: clock time of the next OUT change, or null for none (QEMU's -1). */
  nextTransitionTime: number | null;
}

function newChannel(): Channel {
  return {
    count: 0,
    latchedCount: 0,
    countLatched: 0,
    statusLatched: false,
    status: 0,
    readState: 0,
    writeState: 0,
    writeLatch: 0,
    rwMode: 0,
    mode: 0,
    bcd: 0,
    gate: false,
    countLoadTime: 0,
    nextTransitionTime: 0,
  };
}

/** The count a read sees at `now` (QEMU's `pit_get_count`; may be 65536, which reads as 0). */
function getCount(s: Channel, now: number): number {
  const d = pitTicks(now - s.countLoadTime);
  switch (s.mode) {
    case 0:
    case 1:
    case 4:
    case 5:
      return (((s.count - d) % MAX_COUNT) + MAX_COUNT) % MAX_COUNT;
    case 3:
      return s.count - ((2 * d) % s.count);
    default: // 2, and 6 and 7
      return s.count - (d % s.count);
  }
}

/** OUT at time `t` (QEMU's `pit_get_out`). */
function getOut(s: Channel, t: number): boolean {
  const d = pitTicks(t - s.countLoadTime);
  switch (s.mode) {
    case 1:
      return d < s.count;
    case 2:
      return d % s.count === 0 && d !== 0;
    case 3:
      return d % s.count < (s.count + 1) >> 1;
    case 4:
    case 5:
      return d === s.count;
    default: // 0, and 6 and 7
      return d >= s.count;
  }
}

/** The clock time OUT changes next after `t`, or null for never (QEMU's `pit_get_next_transition_time`). */
function nextTransition(s: Channel, t: number): number | null {
  const d = pitTicks(t - s.countLoadTime);
  let next: number;
  switch (s.mode) {
    case 2: {
      const base = d - (d % s.count);
      next = d === base && d !== 0 ? base + s.count : base + s.count + 1;
      break;
    }
    case 3: {
      const base = d - (d % s.count);
      const half = (s.count + 1) >> 1;
      next = d - base < half ? base + half : base + s.count;
      break;
    }
    case 4:
    case 5:
      if (d < s.count) next = s.count;
      else if (d === s.count) next = s.count + 1;
      else return null;
      break;
    default: // 0 and 1, and 6 and 7
      if (d < s.count) next = s.count;
      else return null;
  }
  const time = s.countLoadTime + pitTicksToNs(next);
  // As QEMU: the tick-to-ns conversion rounds down, so a transition may land on `t` itself.
  return time <= t ? t + 1 : time;
}

/** What {@link I8254.channelInfo} returns (QEMU's `PITChannelInfo`). */
export interface PitChannelInfo {
  /** The gate input. */
  gate: boolean;
  /** The counting mode, 0-7 as written. */
  mode: number;
  /** The count loaded, 1-65536. */
  initialCount: number;
  /** OUT now. */
  out: boolean;
}

/** Options of {@link I8254}. */
export interface I8254Options {
  /** Channel 0's output: ISA IRQ 0 (the i8259's input 0 and the IOAPIC's pin 2 on the PC). */
  irq?: IrqLine;
  /**
   * Monotonic time in nanoseconds, a safe integer (default: `performance.now()` in ns). Counts and
   * OUT follow it; {@link I8254.nextDeadline} is on this clock.
   */
  clock?: () => number;
  /** Base port (default 0x40): 4 ports. */
  base?: number;
  /**
   * Called with the new {@link I8254.nextDeadline} whenever it changes (QEMU's `timer_mod` /
   * `timer_del` of the channel 0 timer): where a board re-arms or cancels its host timer. Called
   * after the change is complete, at most once per port access or method call; first from the
   * constructor, with the deadline of the reset state.
   */
  onDeadlineChange?: (deadline: number | undefined) => void;
}

/**
 * The 8254 PIT: region "pit" (4 ports), with channel 0 driving IRQ 0 through
 * {@link nextDeadline} / {@link update}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { I8254 } from "./i8254.ts";
 * import { RecordingIrqLine } from "./irq_line.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * let now = 0;
 * const irq = new RecordingIrqLine();
 * const pit = new I8254({ irq, clock: () => now });
 * pit.map(io);
 * // Linux's periodic tick at HZ=1000: channel 0, LSB then MSB, mode 2, count 1193.
 * ports.write(0x43, 1, 0x34);
 * ports.write(0x40, 1, 1193 & 0xff);
 * ports.write(0x40, 1, 1193 >> 8);
 * // The board arms a host timer for each deadline and calls update() when it fires.
 * for (let deadline = pit.nextDeadline(); deadline !== undefined && deadline <= 10_000_000;) {
 *   now = deadline;
 *   pit.update();
 *   deadline = pit.nextDeadline();
 * }
 * assert.equal(irq.risingEdges, 10); // 10 ms: 10 interrupts
 * ```
 */
export class I8254 implements PortDevice, Snapshottable {
  /** The base port. */
  readonly base: number;
  /** Region "pit": the three counters and the control word. */
  readonly region: MemoryRegion;
  readonly #clock: () => number;
  readonly #irq: IrqOutput;
  readonly #onDeadlineChange: ((deadline: number | undefined) => void) | undefined;
  /** The deadline last reported to {@link I8254Options.onDeadlineChange}. */
  #reported: number | undefined;
  readonly #channels: Channel[] = [newChannel(), newChannel(), newChannel()];
  /** Channel 0's IRQ suppressed (QEMU's `irq_disabled`: the HPET in legacy-replacement mode). */
  #irqDisabled = false;

  /**
   * The PIT after a reset: every channel in mode 3 with count 65536, channel 2's gate low, and
   * channel 0's first transition due in 32768 ticks.
   *
   * @throws {RangeError} for ports outside the 64 KiB port space.
   * @throws {TypeError} for a clock that is not a function or an irq without `set`.
   */
  constructor(options: I8254Options = {}) {
    checkCallback(options.clock, "I8254 clock");
    checkCallback(options.onDeadlineChange, "I8254 onDeadlineChange");
    this.#onDeadlineChange = options.onDeadlineChange;
    this.base = checkPortRange(options.base ?? PIT_BASE, PIT_IO_SIZE, "pit");
    this.#clock = options.clock ?? (() => Math.round(performance.now() * 1e6));
    this.#irq = new IrqOutput(options.irq);
    // QEMU's pit_ioport_ops: byte registers, any access size split into bytes.
    this.region = MemoryRegion.io("pit", PIT_IO_SIZE, {
      read: (offset) => this.read(offset),
      write: (offset, value) => this.write(offset, Number(value) & 0xff),
      impl: { min: 1, max: 1 },
      endianness: "little",
    });
    this.reset();
  }

  /** "pit". */
  get regions(): readonly MemoryRegion[] {
    return [this.region];
  }

  /** Maps "pit" at the base port (priority 0, as QEMU's `isa_register_ioport`). */
  map(io: MemoryRegion): void {
    io.addSubregion(this.base, this.region);
  }

  /** The name device-state errors carry: `pit@0x40`. */
  get stateName(): string {
    return `pit@0x${this.base.toString(16)}`;
  }

  /** The level last driven on IRQ 0. */
  get irqLevel(): boolean {
    return this.#irq.level;
  }

  /**
   * A system reset (QEMU's `pit_reset`): every channel to mode 3, count 65536 loaded now, gates high
   * but channel 2's; channel 0's next transition computed (the IRQ line itself changes only then).
   */
  reset(): void {
    const now = this.#now();
    this.#channels.forEach((s, i) => {
      s.mode = 3;
      s.gate = i !== 2;
      s.countLoadTime = now;
      s.count = MAX_COUNT;
      if (i === 0 && !this.#irqDisabled) s.nextTransitionTime = nextTransition(s, now);
    });
    this.#reportDeadline();
  }

  /** Reads port `offset` (0-2: a counter; 3: the write-only control word, reads 0). */
  read(offset: number): number {
    offset &= 3;
    if (offset === CONTROL_OFFSET) return 0;
    const s = this.#channels[offset];
    if (s.statusLatched) {
      s.statusLatched = false;
      return s.status;
    }
    if (s.countLatched) {
      switch (s.countLatched) {
        case RW_STATE_MSB:
          s.countLatched = 0;
          return s.latchedCount >> 8;
        case RW_STATE_WORD0:
          s.countLatched = RW_STATE_MSB;
          return s.latchedCount & 0xff;
        case RW_STATE_LSB:
        default:
          s.countLatched = 0;
          return s.latchedCount & 0xff;
      }
    }
    const count = getCount(s, this.#now());
    switch (s.readState) {
      case RW_STATE_MSB:
        return (count >> 8) & 0xff;
      case RW_STATE_WORD0:
        s.readState = RW_STATE_WORD1;
        return count & 0xff;
      case RW_STATE_WORD1:
        s.readState = RW_STATE_WORD0;
        return (count >> 8) & 0xff;
      case RW_STATE_LSB:
      default: // also rw mode 0, before any control word
        return count & 0xff;
    }
  }

  /** Writes port `offset` (0-2: a counter's count; 3: a control word or read-back command). */
  write(offset: number, value: number): void {
    offset &= 3;
    value &= 0xff;
    if (offset === CONTROL_OFFSET) {
      this.#writeControl(value); // never moves the deadline (QEMU: "XXX: update irq timer ?")
      return;
    }
    const s = this.#channels[offset];
    switch (s.writeState) {
      case RW_STATE_MSB:
        this.#loadCount(offset, value << 8);
        break;
      case RW_STATE_WORD0:
        s.writeLatch = value;
        s.writeState = RW_STATE_WORD1;
        break;
      case RW_STATE_WORD1:
        this.#loadCount(offset, s.writeLatch | (value << 8));
        s.writeState = RW_STATE_WORD0;
        break;
      case RW_STATE_LSB:
      default: // also rw mode 0, before any control word
        this.#loadCount(offset, value);
    }
    this.#reportDeadline();
  }

  /**
   * Sets channel `channel`'s gate (QEMU's `pit_set_gate`): a rising edge restarts the count in modes
   * 1, 2, 3 and 5. Port 0x61 bit 0 drives channel 2's.
   *
   * @throws {RangeError} for a channel other than 0-2.
   */
  setGate(channel: number, level: boolean): void {
    const s = this.#channels[this.#checkChannel(channel)];
    if (!s.gate && level && s.mode !== 0 && s.mode !== 4 && s.mode < 6) {
      s.countLoadTime = this.#now();
      if (channel === 0) this.#irqTimerUpdate(s.countLoadTime);
    }
    s.gate = level;
    this.#reportDeadline();
  }

  /**
   * Channel `channel`'s gate, mode, loaded count and OUT now (QEMU's `pit_get_channel_info`).
   *
   * @throws {RangeError} for a channel other than 0-2.
   */
  channelInfo(channel: number): PitChannelInfo {
    const s = this.#channels[this.#checkChannel(channel)];
    return { gate: s.gate, mode: s.mode, initialCount: s.count, out: getOut(s, this.#now()) };
  }

  /**
   * The clock time at which channel 0's OUT next changes, when the board must call {@link update};
   * undefined when it will not change (a one-shot that has fired) or the IRQ is disabled. It changes
   * after every guest access that loads a count, so a board re-arms its timer after port writes.
   */
  nextDeadline(): number | undefined {
    const next = this.#channels[0].nextTransitionTime;
    return this.#irqDisabled || next === null ? undefined : next;
  }

  /**
   * Runs channel 0's timer up to `now` (default: the clock): at each transition due, in order, IRQ 0
   * is set to OUT at that transition's time and the next one computed — QEMU's `pit_irq_timer` run
   * by its timer list until the next expiry lies after `now`. A late call thus replays every edge,
   * up to {@link PIT_MAX_REPLAYED_TRANSITIONS}; past that (a host stall QEMU's virtual clock would
   * not have seen) the timer jumps to `now`: the line is set to OUT now and the next transition
   * computed from there.
   */
  update(now: number = this.#now()): void {
    const s = this.#channels[0];
    for (let i = 0; this.#due(now); i++) {
      this.#irqTimerUpdate(i < PIT_MAX_REPLAYED_TRANSITIONS ? s.nextTransitionTime! : now);
    }
    this.#reportDeadline();
  }

  /**
   * Enables or disables channel 0's IRQ (QEMU's `pit_irq_control`, the HPET's legacy-replacement
   * input; a board without an HPET never calls it). Disabling cancels the timer and leaves the line
   * as it is; enabling drives OUT now and re-arms.
   */
  setIrqEnabled(enabled: boolean): void {
    this.#irqDisabled = !enabled;
    if (enabled) this.#irqTimerUpdate(this.#now());
    this.#reportDeadline();
  }

  /**
   * The three channels' registers (QEMU's `vmstate_pit_channel` fields), channel 0's IRQ state, and
   * the times as guest time: how long before the save each count was loaded (`countLoadAgoNs`) and
   * how long after it channel 0's next transition is due (`nextTransitionInNs`, null for none) — not
   * this host's clock readings, so {@link loadState} rebases them on the loading device's clock.
   */
  saveState(): StateObject {
    const now = this.#now();
    const ch0 = this.#channels[0];
    return {
      channels: this.#channels.map((s) => ({
        count: s.count,
        latchedCount: s.latchedCount,
        countLatched: s.countLatched,
        statusLatched: s.statusLatched,
        status: s.status,
        readState: s.readState,
        writeState: s.writeState,
        writeLatch: s.writeLatch,
        rwMode: s.rwMode,
        mode: s.mode,
        bcd: s.bcd === 1,
        gate: s.gate,
        countLoadAgoNs: Math.max(0, now - s.countLoadTime),
      })),
      nextTransitionInNs: ch0.nextTransitionTime === null ? null : ch0.nextTransitionTime - now,
      irqDisabled: this.#irqDisabled,
      irqLevel: this.#irq.level,
    };
  }

  /**
   * Puts a {@link saveState} result back, times rebased on this device's clock, and drives IRQ 0 to
   * the saved level (as QEMU's `pit_post_load`, the timer is re-armed at the saved transition).
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of range
   * (the device is then unchanged).
   */
  loadState(state: StateObject): void {
    const r = new StateReader(this.stateName, state);
    const now = this.#now();
    const channels = r.array("channels", { length: PIT_CHANNELS }).map((element): Channel => {
      const c = element.object();
      const count = c.int("count", 1, MAX_COUNT);
      const countLatched = c.int("countLatched", 0, RW_STATE_WORD0);
      const rwMode = c.int("rwMode", 0, RW_STATE_WORD0);
      const countLoadAgoNs = c.int("countLoadAgoNs", 0, MAX_TIME_NS);
      return {
        count,
        latchedCount: c.u16("latchedCount"),
        countLatched,
        statusLatched: c.bool("statusLatched"),
        status: c.u8("status"),
        readState: c.int("readState", 0, RW_STATE_WORD1),
        writeState: c.int("writeState", 0, RW_STATE_WORD1),
        writeLatch: c.u8("writeLatch"),
        rwMode,
        mode: c.int("mode", 0, 7),
        bcd: c.bool("bcd") ? 1 : 0,
        gate: c.bool("gate"),
        countLoadTime: now - countLoadAgoNs,
        nextTransitionTime: null,
      };
    });
    let next: number | null = null;
    if (state.nextTransitionInNs !== null) {
      // A transition is never before its channel's count load (that would replay edges from before it).
      const inNs = r.int("nextTransitionInNs", -MAX_TIME_NS, MAX_TIME_NS);
      const loadedAt = channels[0].countLoadTime;
      if (now + inNs < loadedAt) r.fail("nextTransitionInNs", `is ${inNs}, before channel 0's count load`);
      next = now + inNs;
    }
    const irqDisabled = r.bool("irqDisabled");
    const irqLevel = r.bool("irqLevel");
    channels[0].nextTransitionTime = next;
    this.#channels.forEach((s, i) => Object.assign(s, channels[i]));
    this.#irqDisabled = irqDisabled;
    this.#irq.update(irqLevel);
    this.#reportDeadline();
  }

  #reportDeadline(): void {
    const deadline = this.nextDeadline();
    if (deadline === this.#reported) return;
    this.#reported = deadline;
    this.#onDeadlineChange?.(deadline);
  }

  /** Whether channel 0's timer has expired at `now`. */
  #due(now: number): boolean {
    const next = this.#channels[0].nextTransitionTime;
    return !this.#irqDisabled && next !== null && next <= now;
  }

  #now(): number {
    const now = this.#clock();
    if (!Number.isSafeInteger(now)) {
      throw new RangeError(`pit clock: ${now} is not a safe integer of nanoseconds`);
    }
    return now;
  }

  #checkChannel(channel: number): number {
    if (!Number.isInteger(channel) || channel < 0 || channel >= PIT_CHANNELS) {
      throw new RangeError(`pit: channel ${channel} is not 0-${PIT_CHANNELS - 1}`);
    }
    return channel;
  }

  #writeControl(value: number): void {
    const channel = value >> 6;
    if (channel === READ_BACK_CHANNEL) {
      for (let i = 0; i < PIT_CHANNELS; i++) {
        if (!(value & (2 << i))) continue;
        const s = this.#channels[i];
        if (!(value & READ_BACK_NO_COUNT_BIT)) this.#latchCount(s);
        if (!(value & READ_BACK_NO_STATUS_BIT) && !s.statusLatched) {
          // As QEMU: no null-count bit.
          s.status = (getOut(s, this.#now()) ? 0x80 : 0) | (s.rwMode << 4) | (s.mode << 1) | s.bcd;
          s.statusLatched = true;
        }
      }
      return;
    }
    const s = this.#channels[channel];
    const access = (value >> 4) & 3;
    if (access === 0) {
      this.#latchCount(s);
      return;
    }
    s.rwMode = access;
    s.readState = access;
    s.writeState = access;
    s.mode = (value >> 1) & 7;
    s.bcd = value & 1;
  }

  /** Counter latch: a second latch before the first is read is ignored. */
  #latchCount(s: Channel): void {
    if (s.countLatched) return;
    s.latchedCount = getCount(s, this.#now()) & 0xffff;
    s.countLatched = s.rwMode;
  }

  #loadCount(channel: number, value: number): void {
    const s = this.#channels[channel];
    s.countLoadTime = this.#now();
    s.count = value === 0 ? MAX_COUNT : value;
    if (channel === 0) this.#irqTimerUpdate(s.countLoadTime);
  }

  /** QEMU's `pit_irq_timer_update` for channel 0 at time `t`. */
  #irqTimerUpdate(t: number): void {
    if (this.#irqDisabled) return;
    const s = this.#channels[0];
    const next = nextTransition(s, t);
    this.#irq.update(getOut(s, t));
    s.nextTransitionTime = next;
  }
}
