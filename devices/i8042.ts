/**
 * The i8042 PS/2 keyboard controller (ports 0x60 and 0x64) with a minimal keyboard behind it.
 *
 * Behaviour follows QEMU 7.2's `hw/input/pckbd.c` and `hw/input/ps2.c` as far as Linux's i8042 and
 * atkbd drivers look: the status register, the controller command byte (0x20/0x60), the self and
 * interface tests, the output port (A20, reset), and the keyboard's replies to its commands. There
 * is no PS/2 mouse: bytes sent to the auxiliary device are dropped, so a mouse probe times out and
 * fails cleanly (boot Linux with `i8042.noaux` to skip it).
 *
 * Writing 0xFE (or any pulse command with bit 0 clear) to port 0x64 pulses the CPU reset line:
 * that calls `onReset()`; with `reboot=k` a Linux guest reboots through here.
 *
 * @module
 */

import { MemoryRegion, type MemoryRegionOps } from "../memory/mod.ts";
import { checkCallback, checkPortRange } from "./_ports.ts";
import { type IrqLine, IrqOutput } from "./irq_line.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** Data port: output buffer (read), keyboard data or command parameter (write). */
export const I8042_DATA_PORT = 0x60;
/** Status (read) / command (write) port. */
export const I8042_COMMAND_PORT = 0x64;
/** The keyboard's ISA interrupt. */
export const I8042_KEYBOARD_IRQ = 1;
/** The auxiliary (mouse) port's ISA interrupt. */
export const I8042_AUX_IRQ = 12;

// Controller commands (port 0x64).
const CCMD_READ_MODE = 0x20;
const CCMD_WRITE_MODE = 0x60;
const CCMD_MOUSE_DISABLE = 0xa7;
const CCMD_MOUSE_ENABLE = 0xa8;
const CCMD_TEST_MOUSE = 0xa9;
const CCMD_SELF_TEST = 0xaa;
const CCMD_KBD_TEST = 0xab;
const CCMD_KBD_DISABLE = 0xad;
const CCMD_KBD_ENABLE = 0xae;
const CCMD_READ_INPORT = 0xc0;
const CCMD_READ_OUTPORT = 0xd0;
const CCMD_WRITE_OUTPORT = 0xd1;
const CCMD_WRITE_OBUF = 0xd2;
const CCMD_WRITE_AUX_OBUF = 0xd3;
const CCMD_WRITE_MOUSE = 0xd4;
const CCMD_DISABLE_A20 = 0xdd;
const CCMD_ENABLE_A20 = 0xdf;
/** 0xF0–0xFF pulse output-port bits 3:0 low (a 0 bit pulses); bit 0 is the CPU reset line. */
const CCMD_PULSE_BITS_MASK = 0xf0;

/** Self-test passed (reply to 0xAA). */
const SELF_TEST_OK = 0x55;
/** Interface test passed (reply to 0xA9 / 0xAB). */
const INTERFACE_TEST_OK = 0x00;
/** Input port as QEMU reports it (keyboard not inhibited). */
const INPORT_VALUE = 0x80;

// Status register bits.
const STAT_OBF_BIT = 0x01;
const STAT_SELFTEST_BIT = 0x04;
const STAT_CMD_BIT = 0x08;
const STAT_UNLOCKED_BIT = 0x10;
const STAT_MOUSE_OBF_BIT = 0x20;

// Controller command byte ("mode") bits.
const MODE_KBD_INT_BIT = 0x01;
const MODE_MOUSE_INT_BIT = 0x02;
const MODE_DISABLE_KBD_BIT = 0x10;
const MODE_DISABLE_MOUSE_BIT = 0x20;
const MODE_KCC_BIT = 0x40;

// Output port bits.
const OUT_RESET_BIT = 0x01;
const OUT_A20_BIT = 0x02;
const OUT_OBF_BIT = 0x10;
const OUT_MOUSE_OBF_BIT = 0x20;
/** QEMU's default output port: reset line high, A20 on, and bits 7:6 and 3:2 set. */
const OUTPORT_AT_RESET = OUT_RESET_BIT | OUT_A20_BIT | 0xcc;

// Keyboard commands (port 0x60) and replies.
const KBD_CMD_SET_LEDS = 0xed;
const KBD_CMD_ECHO = 0xee;
const KBD_CMD_SCANCODE = 0xf0;
const KBD_CMD_GET_ID = 0xf2;
const KBD_CMD_SET_RATE = 0xf3;
const KBD_CMD_ENABLE = 0xf4;
const KBD_CMD_RESET_DISABLE = 0xf5;
const KBD_CMD_RESET_ENABLE = 0xf6;
const KBD_CMD_SET_TYPEMATIC = 0xfa;
const KBD_CMD_SET_MAKE_BREAK = 0xfb;
const KBD_CMD_RESET = 0xff;
const KBD_REPLY_ID = 0xab;
const KBD_REPLY_POR = 0xaa;
const KBD_REPLY_ACK = 0xfa;
const KBD_REPLY_RESEND = 0xfe;
/** Second ID byte of an MF2 keyboard: translated, untranslated. */
const KBD_ID_TRANSLATED = 0x41;
const KBD_ID_RAW = 0x83;
/** Scan-code set numbers as seen through the controller's set-2 → set-1 translation (sets 1, 2, 3). */
const TRANSLATED_SET_NUMBER = [0, 0x43, 0x41, 0x3f];

/** QEMU's PS/2 queue depth: injected scan codes beyond it are dropped. */
const KBD_QUEUE_SIZE = 16;
/**
 * Most bytes the output queue holds (QEMU's PS/2 buffer, `PS2_BUFFER_SIZE`): controller replies and
 * 0xD2/0xD3 bytes beyond it are dropped, so a guest that never reads cannot grow it without bound,
 * and every saved state fits the limit a load checks.
 */
const OUTPUT_QUEUE_MAX = 256;
/** Controller commands that wait for a parameter on port 0x60 (the only values of `#writeCmd` but 0). */
const PARAMETER_COMMANDS = [
  0,
  CCMD_WRITE_MODE,
  CCMD_WRITE_OBUF,
  CCMD_WRITE_AUX_OBUF,
  CCMD_WRITE_MOUSE,
  CCMD_WRITE_OUTPORT,
];
/** Keyboard commands that wait for a parameter (the values of `#kbdWriteCmd` but −1). */
const KBD_PARAMETER_COMMANDS = [
  -1,
  KBD_CMD_SCANCODE,
  KBD_CMD_SET_LEDS,
  KBD_CMD_SET_RATE,
  KBD_CMD_SET_MAKE_BREAK,
];

/** Options of {@link I8042}. */
export interface I8042Options {
  /** Keyboard interrupt (IRQ 1): high while keyboard or controller data waits and is enabled. */
  irq?: IrqLine;
  /** Auxiliary interrupt (IRQ 12): high while auxiliary data (command 0xD3) waits and is enabled. */
  auxIrq?: IrqLine;
  /** The controller pulsed the CPU reset line (0xFE, or an output-port write with bit 0 clear). */
  onReset?: () => void;
  /** The A20 gate changed through the output port (0xD1, 0xDD, 0xDF). */
  onA20?: (enabled: boolean) => void;
}

/** One byte of the output buffer and who produced it. */
interface OutputByte {
  value: number;
  aux: boolean;
}

/**
 * The i8042 controller: regions "i8042-data" (port 0x60) and "i8042-cmd" (port 0x64), one byte each.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { I8042 } from "./i8042.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * let resets = 0;
 * const kbc = new I8042({ onReset: () => resets++ });
 * kbc.map(io);
 * ports.write(0x64, 1, 0xaa); // controller self test
 * assert.ok((ports.read(0x64, 1).value & 1n) === 1n && ports.read(0x60, 1).value === 0x55n);
 * ports.write(0x64, 1, 0xfe); // pulse the reset line
 * assert.equal(resets, 1);
 * ```
 */
export class I8042 implements PortDevice, Snapshottable {
  /** Region "i8042-data" (port 0x60). */
  readonly dataRegion: MemoryRegion;
  /** Region "i8042-cmd" (port 0x64). */
  readonly cmdRegion: MemoryRegion;
  readonly #irq: IrqOutput;
  readonly #auxIrq: IrqOutput;
  readonly #onReset: (() => void) | undefined;
  readonly #onA20: ((enabled: boolean) => void) | undefined;

  #status = STAT_CMD_BIT | STAT_UNLOCKED_BIT;
  #mode = MODE_KBD_INT_BIT | MODE_MOUSE_INT_BIT;
  #outport = OUTPORT_AT_RESET;
  /** Controller command waiting for its parameter on port 0x60, or 0. */
  #writeCmd = 0;
  #queue: OutputByte[] = [];
  /** What port 0x60 returns when the output buffer is empty: the last byte read. */
  #lastData = 0;
  // The keyboard.
  #kbdWriteCmd = -1;
  #scanEnabled = true;
  #scancodeSet = 2;
  #leds = 0;

  /** The controller and keyboard in their power-on state. */
  constructor(options: I8042Options = {}) {
    checkCallback(options.onReset, "I8042 onReset");
    checkCallback(options.onA20, "I8042 onA20");
    this.#irq = new IrqOutput(options.irq);
    this.#auxIrq = new IrqOutput(options.auxIrq);
    this.#onReset = options.onReset;
    this.#onA20 = options.onA20;
    const byteOps = (read: () => number, write: (value: number) => void): MemoryRegionOps => ({
      read: () => read(),
      write: (_offset, value) => write(Number(value) & 0xff),
      impl: { min: 1, max: 1 },
      endianness: "little",
    });
    this.dataRegion = MemoryRegion.io(
      "i8042-data",
      1,
      byteOps(() => this.readData(), (v) => this.writeData(v)),
    );
    this.cmdRegion = MemoryRegion.io(
      "i8042-cmd",
      1,
      byteOps(() => this.readStatus(), (v) => this.writeCommand(v)),
    );
  }

  /** Both regions: data, then command. */
  get regions(): readonly MemoryRegion[] {
    return [this.dataRegion, this.cmdRegion];
  }

  /** Maps "i8042-data" at 0x60 and "i8042-cmd" at 0x64. */
  map(io: MemoryRegion): void {
    io.addSubregion(checkPortRange(I8042_DATA_PORT, 1, "i8042-data"), this.dataRegion);
    io.addSubregion(checkPortRange(I8042_COMMAND_PORT, 1, "i8042-cmd"), this.cmdRegion);
  }

  /** The controller command byte (CTR). */
  get commandByte(): number {
    return this.#mode;
  }

  /** Whether the output port enables the A20 gate. */
  get a20Enabled(): boolean {
    return (this.#outport & OUT_A20_BIT) !== 0;
  }

  /** The keyboard LED state last set by the guest (0xED). */
  get keyboardLeds(): number {
    return this.#leds;
  }

  /** Whether the keyboard interrupt output is high. */
  get irqLevel(): boolean {
    return this.#irq.level;
  }

  /**
   * Bytes the keyboard sends (scan codes in the set the guest chose), while scanning is enabled;
   * bytes beyond the keyboard's 16-byte buffer are dropped. Returns how many were queued.
   */
  keyboardInput(bytes: Uint8Array | readonly number[]): number {
    if (!this.#scanEnabled) return 0;
    let queued = 0;
    for (const byte of bytes) {
      if (this.#queue.length >= KBD_QUEUE_SIZE) break;
      this.#queue.push({ value: byte & 0xff, aux: false });
      queued++;
    }
    if (queued) this.#updateIrq();
    return queued;
  }

  /** Power-on state (QEMU's `kbd_reset` and the keyboard's reset); both interrupt outputs go low. */
  reset(): void {
    this.#status = STAT_CMD_BIT | STAT_UNLOCKED_BIT;
    this.#mode = MODE_KBD_INT_BIT | MODE_MOUSE_INT_BIT;
    this.#outport = OUTPORT_AT_RESET;
    this.#writeCmd = 0;
    this.#queue = [];
    this.#lastData = 0;
    this.#resetKeyboard();
    this.#scanEnabled = true;
    this.#updateIrq();
  }

  /**
   * The controller (status, command byte, output port with A20, the command waiting for its parameter,
   * the output queue with each byte's source, the last byte read) and the keyboard (its pending
   * command, scanning, scan-code set, LEDs).
   */
  saveState(): StateObject {
    return {
      status: this.#status,
      mode: this.#mode,
      outport: this.#outport,
      writeCmd: this.#writeCmd,
      queue: Uint8Array.from(this.#queue, (b) => b.value),
      queueAux: Uint8Array.from(this.#queue, (b) => (b.aux ? 1 : 0)),
      lastData: this.#lastData,
      kbdWriteCmd: this.#kbdWriteCmd,
      scanEnabled: this.#scanEnabled,
      scancodeSet: this.#scancodeSet,
      leds: this.#leds,
    };
  }

  /**
   * Puts a {@link saveState} result back and re-drives both interrupt outputs; `onA20` is called if the
   * output port's A20 bit differs from the current one, as a guest write would (never `onReset`).
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of range
   * (the device is then unchanged).
   */
  loadState(state: StateObject): void {
    const r = new StateReader("i8042", state);
    const status = r.u8("status");
    const mode = r.u8("mode");
    const outport = r.u8("outport");
    const writeCmd = r.u8("writeCmd");
    if (!PARAMETER_COMMANDS.includes(writeCmd)) {
      r.fail("writeCmd", `is 0x${writeCmd.toString(16)}, not a command with a parameter`);
    }
    const values = r.bytes("queue", { maxLength: OUTPUT_QUEUE_MAX });
    const aux = r.bytes("queueAux", { length: values.length });
    if (aux.some((b) => b > 1)) r.fail("queueAux", "holds a byte other than 0 or 1");
    const lastData = r.u8("lastData");
    const kbdWriteCmd = r.int("kbdWriteCmd", -1, 0xff);
    if (!KBD_PARAMETER_COMMANDS.includes(kbdWriteCmd)) {
      r.fail("kbdWriteCmd", `is 0x${kbdWriteCmd.toString(16)}, not a keyboard command with a parameter`);
    }
    const scanEnabled = r.bool("scanEnabled");
    const scancodeSet = r.int("scancodeSet", 1, 3);
    const leds = r.u8("leds");
    const a20Changed = ((outport ^ this.#outport) & OUT_A20_BIT) !== 0;
    this.#status = status;
    this.#mode = mode;
    this.#outport = outport;
    this.#writeCmd = writeCmd;
    this.#queue = Array.from(values, (value, i) => ({ value, aux: aux[i] === 1 }));
    this.#lastData = lastData;
    this.#kbdWriteCmd = kbdWriteCmd;
    this.#scanEnabled = scanEnabled;
    this.#scancodeSet = scancodeSet;
    this.#leds = leds;
    this.#updateIrq();
    if (a20Changed) this.#onA20?.((outport & OUT_A20_BIT) !== 0);
  }

  /** Port 0x64 read: the status register. */
  readStatus(): number {
    return this.#status;
  }

  /** Port 0x60 read: the next output byte, or the last one again when the buffer is empty. */
  readData(): number {
    const next = this.#queue.shift();
    if (next) {
      this.#lastData = next.value;
      // Lower the outputs before looking at what is left, so each waiting byte is a new edge.
      this.#irq.update(false);
      this.#auxIrq.update(false);
      this.#updateIrq();
    }
    return this.#lastData;
  }

  /** Port 0x64 write: a controller command. */
  writeCommand(value: number): void {
    value &= 0xff;
    // 0xF0–0xFF pulse output-port bits 3:0; only bit 0 (CPU reset) has an effect.
    if ((value & CCMD_PULSE_BITS_MASK) === CCMD_PULSE_BITS_MASK) {
      if (!(value & OUT_RESET_BIT)) this.#onReset?.();
      return;
    }
    switch (value) {
      case CCMD_READ_MODE:
        this.#queueByte(this.#mode, false);
        break;
      case CCMD_WRITE_MODE:
      case CCMD_WRITE_OBUF:
      case CCMD_WRITE_AUX_OBUF:
      case CCMD_WRITE_MOUSE:
      case CCMD_WRITE_OUTPORT:
        this.#writeCmd = value;
        break;
      case CCMD_MOUSE_DISABLE:
        this.#mode |= MODE_DISABLE_MOUSE_BIT;
        break;
      case CCMD_MOUSE_ENABLE:
        this.#mode &= ~MODE_DISABLE_MOUSE_BIT;
        break;
      case CCMD_TEST_MOUSE:
      case CCMD_KBD_TEST:
        this.#queueByte(INTERFACE_TEST_OK, false);
        break;
      case CCMD_SELF_TEST:
        this.#status |= STAT_SELFTEST_BIT;
        this.#queueByte(SELF_TEST_OK, false);
        break;
      case CCMD_KBD_DISABLE:
        this.#mode |= MODE_DISABLE_KBD_BIT;
        this.#updateIrq();
        break;
      case CCMD_KBD_ENABLE:
        this.#mode &= ~MODE_DISABLE_KBD_BIT;
        this.#updateIrq();
        break;
      case CCMD_READ_INPORT:
        this.#queueByte(INPORT_VALUE, false);
        break;
      case CCMD_READ_OUTPORT:
        this.#queueByte(this.#outportValue(), false);
        break;
      case CCMD_ENABLE_A20:
        this.#setA20(true);
        break;
      case CCMD_DISABLE_A20:
        this.#setA20(false);
        break;
      default:
        break; // unsupported commands are ignored, as QEMU does
    }
  }

  /** Port 0x60 write: the parameter of a pending controller command, else a keyboard command. */
  writeData(value: number): void {
    value &= 0xff;
    const cmd = this.#writeCmd;
    this.#writeCmd = 0;
    switch (cmd) {
      case 0:
        this.#keyboardCommand(value);
        break;
      case CCMD_WRITE_MODE:
        this.#mode = value;
        this.#updateIrq();
        break;
      case CCMD_WRITE_OBUF:
        this.#queueByte(value, false);
        break;
      case CCMD_WRITE_AUX_OBUF:
        this.#queueByte(value, true);
        break;
      case CCMD_WRITE_OUTPORT:
        this.#writeOutport(value);
        break;
      case CCMD_WRITE_MOUSE:
        break; // no mouse: nothing answers
    }
  }

  /** The output port with the buffer-full bits mirrored in (QEMU keeps them in sync). */
  #outportValue(): number {
    const head = this.#queue[0];
    let value = this.#outport & ~(OUT_OBF_BIT | OUT_MOUSE_OBF_BIT);
    if (head) value |= head.aux ? OUT_OBF_BIT | OUT_MOUSE_OBF_BIT : OUT_OBF_BIT;
    return value;
  }

  #writeOutport(value: number): void {
    const a20 = (value & OUT_A20_BIT) !== 0;
    const a20Changed = a20 !== this.a20Enabled;
    this.#outport = value;
    if (a20Changed) this.#onA20?.(a20);
    if (!(value & OUT_RESET_BIT)) this.#onReset?.();
  }

  #setA20(enabled: boolean): void {
    if (enabled === this.a20Enabled) return;
    this.#outport = enabled ? this.#outport | OUT_A20_BIT : this.#outport & ~OUT_A20_BIT;
    this.#onA20?.(enabled);
  }

  #queueByte(value: number, aux: boolean): void {
    if (this.#queue.length < OUTPUT_QUEUE_MAX) this.#queue.push({ value: value & 0xff, aux });
    this.#updateIrq();
  }

  /** QEMU's `kbd_update_irq`: OBF bits from the head of the buffer, then the two outputs. */
  #updateIrq(): void {
    const head = this.#queue[0];
    this.#status &= ~(STAT_OBF_BIT | STAT_MOUSE_OBF_BIT);
    let kbd = false;
    let aux = false;
    if (head) {
      this.#status |= STAT_OBF_BIT;
      if (head.aux) {
        this.#status |= STAT_MOUSE_OBF_BIT;
        aux = (this.#mode & MODE_MOUSE_INT_BIT) !== 0;
      } else {
        kbd = (this.#mode & MODE_KBD_INT_BIT) !== 0 && !(this.#mode & MODE_DISABLE_KBD_BIT);
      }
    }
    this.#irq.update(kbd);
    this.#auxIrq.update(aux);
  }

  #resetKeyboard(): void {
    this.#kbdWriteCmd = -1;
    this.#scancodeSet = 2;
    this.#leds = 0;
  }

  #reply(...bytes: number[]): void {
    for (const b of bytes) {
      if (this.#queue.length < OUTPUT_QUEUE_MAX) this.#queue.push({ value: b, aux: false });
    }
    this.#updateIrq();
  }

  /** QEMU's `ps2_write_keyboard`: an MF2 keyboard answering its commands. */
  #keyboardCommand(value: number): void {
    const pending = this.#kbdWriteCmd;
    this.#kbdWriteCmd = -1;
    switch (pending) {
      case KBD_CMD_SCANCODE:
        if (value === 0) {
          const translate = (this.#mode & MODE_KCC_BIT) !== 0;
          this.#reply(
            KBD_REPLY_ACK,
            translate ? TRANSLATED_SET_NUMBER[this.#scancodeSet] : this.#scancodeSet,
          );
        } else if (value >= 1 && value <= 3) {
          this.#scancodeSet = value;
          this.#reply(KBD_REPLY_ACK);
        } else {
          this.#reply(KBD_REPLY_RESEND);
        }
        return;
      case KBD_CMD_SET_LEDS:
        this.#leds = value;
        this.#reply(KBD_REPLY_ACK);
        return;
      case KBD_CMD_SET_RATE:
      case KBD_CMD_SET_MAKE_BREAK:
        this.#reply(KBD_REPLY_ACK);
        return;
    }
    switch (value) {
      case 0x00:
        this.#reply(KBD_REPLY_ACK);
        break;
      case KBD_CMD_GET_ID:
        this.#reply(
          KBD_REPLY_ACK,
          KBD_REPLY_ID,
          this.#mode & MODE_KCC_BIT ? KBD_ID_TRANSLATED : KBD_ID_RAW,
        );
        break;
      case KBD_CMD_ECHO:
        this.#reply(KBD_CMD_ECHO);
        break;
      case KBD_CMD_ENABLE:
        this.#scanEnabled = true;
        this.#reply(KBD_REPLY_ACK);
        break;
      case KBD_CMD_SCANCODE:
      case KBD_CMD_SET_LEDS:
      case KBD_CMD_SET_RATE:
      case KBD_CMD_SET_MAKE_BREAK:
        this.#kbdWriteCmd = value;
        this.#reply(KBD_REPLY_ACK);
        break;
      case KBD_CMD_RESET_DISABLE:
        this.#resetKeyboard();
        this.#scanEnabled = false;
        this.#reply(KBD_REPLY_ACK);
        break;
      case KBD_CMD_RESET_ENABLE:
        this.#resetKeyboard();
        this.#scanEnabled = true;
        this.#reply(KBD_REPLY_ACK);
        break;
      case KBD_CMD_RESET:
        this.#resetKeyboard();
        this.#scanEnabled = true;
        this.#reply(KBD_REPLY_ACK, KBD_REPLY_POR);
        break;
      case KBD_CMD_SET_TYPEMATIC:
        this.#reply(KBD_REPLY_ACK);
        break;
      default:
        this.#reply(KBD_REPLY_RESEND);
        break;
    }
  }
}
