/**
 * A 16550A UART: the PC's COM ports (COM1 at 0x3f8, IRQ 4).
 *
 * Behaviour follows QEMU 7.2's `hw/char/serial.c`, which Linux's 8250 driver probes as a 16550A:
 * registers on offsets 0–7 of the base port, a 16-byte receive FIFO with the FCR trigger level, and
 * the THRE interrupt rules the driver relies on (see `docs/kvm-abi.md` §7.5).
 * Transmission is instant: a THR write hands the byte to the `transmit` sink and the holding
 * register is empty again at once.
 *
 * @module
 */

import { MemoryRegion, type MemoryRegionOps } from "../memory/mod.ts";
import { checkCallback, checkPortRange } from "./_ports.ts";
import { type IrqLine, IrqOutput } from "./irq_line.ts";
import type { PortDevice } from "./port_device.ts";
import type { Snapshottable, StateObject } from "./device_state.ts";
import { StateReader } from "./device_state.ts";

/** COM1's base port. */
export const COM1_PORT = 0x3f8;
/** COM2's base port. */
export const COM2_PORT = 0x2f8;
/** COM3's base port. */
export const COM3_PORT = 0x3e8;
/** COM4's base port. */
export const COM4_PORT = 0x2e8;
/** COM1's ISA interrupt (COM3 shares it; COM2 and COM4 use IRQ 3). */
export const COM1_IRQ = 4;
/** Number of ports a 16550 decodes (QEMU's region "serial" is 8 bytes). */
export const UART_REGION_SIZE = 8;
/** Depth of the receive FIFO. */
export const UART_FIFO_SIZE = 16;

// Register offsets (relative to the base port).
const RBR_THR_DLL = 0;
const IER_DLM = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

// IER bits.
const IER_RDI_BIT = 0x01;
const IER_THRI_BIT = 0x02;
const IER_RLSI_BIT = 0x04;
const IER_MSI_BIT = 0x08;
const IER_MASK = 0x0f;

// IIR values: interrupt identification (bits 3:0) and the FIFO-enabled bits.
const IIR_NO_INT = 0x01;
const IIR_ID_MASK = 0x06;
const IIR_MSI = 0x00;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_RLSI = 0x06;
const IIR_CTI = 0x0c;
const IIR_FIFO_ENABLED_BITS = 0xc0;

// FCR bits.
const FCR_FIFO_ENABLE_BIT = 0x01;
const FCR_CLEAR_RCVR_BIT = 0x02;
const FCR_CLEAR_XMIT_BIT = 0x04;
/** FCR bits that stick (FIFO enable, DMA mode, trigger level); the clear bits are self-clearing. */
const FCR_STICKY_MASK = 0xc9;
/** Receive trigger level by FCR bits 7:6 (bytes, 16550A). */
const FCR_TRIGGER_LEVELS = [1, 4, 8, 14];

// LCR bits.
const LCR_DLAB_BIT = 0x80;

// MCR bits.
const MCR_DTR_BIT = 0x01;
const MCR_RTS_BIT = 0x02;
const MCR_OUT1_BIT = 0x04;
const MCR_OUT2_BIT = 0x08;
const MCR_LOOP_BIT = 0x10;
const MCR_MASK = 0x1f;

// LSR bits.
const LSR_DR_BIT = 0x01;
const LSR_OE_BIT = 0x02;
const LSR_BI_BIT = 0x10;
const LSR_THRE_BIT = 0x20;
const LSR_TEMT_BIT = 0x40;
/** Error bits that raise the line-status interrupt: BI, FE, PE, OE. */
const LSR_INT_ANY = 0x1e;

// MSR bits.
const MSR_CTS_BIT = 0x10;
const MSR_DSR_BIT = 0x20;
const MSR_DCD_BIT = 0x80;
const MSR_ANY_DELTA = 0x0f;

/** Divisor latch at reset: 9600 baud from the 1.8432 MHz clock (QEMU's default). */
const DIVISOR_AT_RESET = 0x0c;

/** When the receive FIFO's character-timeout indication (IIR 0x0C) is raised. */
export type RxTimeoutMode = "immediate" | "manual";

/** Options of {@link Uart16550}. */
export interface Uart16550Options {
  /** Base port (default {@link COM1_PORT}). */
  base?: number;
  /** The interrupt output (IRQ 4 for COM1); driven as a level: "an enabled interrupt is pending". */
  irq?: IrqLine;
  /** Receives every byte the guest transmits (not called in loopback mode). */
  transmit?: (byte: number) => void;
  /**
   * Called after the guest read a received byte (outside loopback mode), so a board holding more
   * input can offer it through {@link Uart16550.receive} (QEMU's `qemu_chr_fe_accept_input`).
   */
  onReadyToReceive?: () => void;
  /**
   * How the FIFO's character timeout is modelled. A real 16550 raises it when bytes below the trigger
   * level have waited four character times. This device has no timers, so:
   * - `"immediate"` (default): input arrives in bursts through {@link Uart16550.receive}, and the line
   *   counts as idle right after each burst and after each read: whenever the FIFO then holds fewer
   *   bytes than the trigger level, the timeout indication is raised at once;
   * - `"manual"`: it is raised only by {@link Uart16550.characterTimeout}, which the board calls from
   *   its own timer.
   */
  rxTimeout?: RxTimeoutMode;
}

/**
 * A 16550A UART at a base port, with region "serial" (8 ports) as QEMU names it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { RecordingIrqLine } from "./irq_line.ts";
 * import { Uart16550 } from "./uart_16550.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * const out: number[] = [];
 * const irq = new RecordingIrqLine();
 * const com1 = new Uart16550({ irq, transmit: (b) => out.push(b) });
 * com1.map(io);
 * ports.write(0x3f8, 1, 0x41); // 'A'
 * assert.ok(out[0] === 0x41 && ports.read(0x3fd, 1).value === 0x60n); // THRE | TEMT
 * ports.write(0x3f9, 1, 0x01); // IER: received-data interrupt
 * com1.receive(new Uint8Array([0x62]));
 * assert.ok(irq.level && ports.read(0x3f8, 1).value === 0x62n && !irq.level);
 * ```
 */
export class Uart16550 implements PortDevice, Snapshottable {
  /** The base port. */
  readonly base: number;
  /** Region "serial", {@link UART_REGION_SIZE} ports. */
  readonly region: MemoryRegion;
  readonly #irq: IrqOutput;
  readonly #transmit: ((byte: number) => void) | undefined;
  readonly #onReadyToReceive: (() => void) | undefined;
  readonly #immediateTimeout: boolean;

  #rbr = 0;
  #ier = 0;
  #iir = IIR_NO_INT;
  #fcr = 0;
  #lcr = 0;
  #mcr = MCR_OUT2_BIT;
  #lsr = LSR_TEMT_BIT | LSR_THRE_BIT;
  #msr = MSR_DCD_BIT | MSR_DSR_BIT | MSR_CTS_BIT;
  #scr = 0;
  #divisor = DIVISOR_AT_RESET;
  /** Receive FIFO contents, oldest first (at most {@link UART_FIFO_SIZE}). */
  #fifo: number[] = [];
  #triggerLevel = 1;
  #thrPending = false;
  #timeoutPending = false;

  /** A 16550A at `options.base` (COM1 by default), idle, with its interrupt output low. */
  constructor(options: Uart16550Options = {}) {
    this.base = checkPortRange(options.base ?? COM1_PORT, UART_REGION_SIZE, "Uart16550 base");
    checkCallback(options.transmit, "Uart16550 transmit");
    checkCallback(options.onReadyToReceive, "Uart16550 onReadyToReceive");
    const mode = options.rxTimeout ?? "immediate";
    if (mode !== "immediate" && mode !== "manual") {
      throw new RangeError(`Uart16550 rxTimeout: "${mode}" is not "immediate" or "manual"`);
    }
    this.#immediateTimeout = mode === "immediate";
    this.#irq = new IrqOutput(options.irq);
    this.#transmit = options.transmit;
    this.#onReadyToReceive = options.onReadyToReceive;
    // QEMU's serial_io_ops: byte registers; wider accesses reach consecutive registers.
    const ops: MemoryRegionOps = {
      read: (offset) => this.read(offset),
      write: (offset, value) => this.write(offset, Number(value) & 0xff),
      impl: { min: 1, max: 1 },
      endianness: "little",
    };
    this.region = MemoryRegion.io("serial", UART_REGION_SIZE, ops);
  }

  /** The device's only region. */
  get regions(): readonly MemoryRegion[] {
    return [this.region];
  }

  /** Maps "serial" at the base port. */
  map(io: MemoryRegion): void {
    io.addSubregion(this.base, this.region);
  }

  /** Whether the interrupt output is high. */
  get irqLevel(): boolean {
    return this.#irq.level;
  }

  /** Bytes waiting in the receive FIFO (or 0/1 for the holding register with FIFOs off). */
  get rxCount(): number {
    if (this.#fifoEnabled) return this.#fifo.length;
    return this.#lsr & LSR_DR_BIT ? 1 : 0;
  }

  /** How many bytes {@link receive} can take now without an overrun. */
  canReceive(): number {
    if (this.#fifoEnabled) return UART_FIFO_SIZE - this.#fifo.length;
    return this.#lsr & LSR_DR_BIT ? 0 : 1;
  }

  /**
   * Bytes arriving on the serial line. Bytes that find no room are lost and set LSR.OE (a full FIFO
   * keeps its contents; with FIFOs off the new byte overwrites the unread one, as on the chip).
   */
  receive(bytes: Uint8Array | readonly number[]): void {
    if (bytes.length === 0) return;
    for (const byte of bytes) this.#receiveByte(byte & 0xff);
    this.#lineIdle();
    this.#updateIrq();
  }

  /** A break condition on the line: a 0 byte with LSR.BI (QEMU's `serial_receive_break`). */
  receiveBreak(): void {
    this.#rbr = 0;
    this.#fifoPut(0);
    this.#lsr |= LSR_BI_BIT | LSR_DR_BIT;
    this.#updateIrq();
  }

  /**
   * Four character times passed without input or reads: raises the FIFO's character-timeout
   * indication if bytes are waiting. For `rxTimeout: "manual"`; harmless otherwise.
   */
  characterTimeout(): void {
    if (this.#fifoEnabled && this.#fifo.length > 0) {
      this.#timeoutPending = true;
      this.#updateIrq();
    }
  }

  /** Power-on state (QEMU's `serial_reset`); the interrupt output goes low. */
  reset(): void {
    this.#rbr = 0;
    this.#ier = 0;
    this.#iir = IIR_NO_INT;
    this.#fcr = 0;
    this.#lcr = 0;
    this.#mcr = MCR_OUT2_BIT;
    this.#lsr = LSR_TEMT_BIT | LSR_THRE_BIT;
    this.#msr = MSR_DCD_BIT | MSR_DSR_BIT | MSR_CTS_BIT;
    this.#scr = 0;
    this.#divisor = DIVISOR_AT_RESET;
    this.#fifo = [];
    this.#triggerLevel = 1;
    this.#thrPending = false;
    this.#timeoutPending = false;
    this.#irq.update(false);
  }

  /** The name device-state errors carry: `uart@0x3f8`. */
  get stateName(): string {
    return `uart@0x${this.base.toString(16)}`;
  }

  /**
   * Every register, the receive FIFO (the transmitter is instant, so its FIFO is always empty), the
   * pending THRE and character-timeout indications and the divisor latch.
   */
  saveState(): StateObject {
    return {
      rbr: this.#rbr,
      ier: this.#ier,
      iir: this.#iir,
      fcr: this.#fcr,
      lcr: this.#lcr,
      mcr: this.#mcr,
      lsr: this.#lsr,
      msr: this.#msr,
      scr: this.#scr,
      divisor: this.#divisor,
      rxFifo: Uint8Array.from(this.#fifo),
      thrPending: this.#thrPending,
      timeoutPending: this.#timeoutPending,
    };
  }

  /**
   * Puts a {@link saveState} result back and re-drives the interrupt output.
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of range
   * (the device is then unchanged).
   */
  loadState(state: StateObject): void {
    const r = new StateReader(this.stateName, state);
    const rbr = r.u8("rbr");
    const ier = r.bits("ier", IER_MASK);
    const iir = r.u8("iir");
    const fcr = r.bits("fcr", FCR_STICKY_MASK);
    const lcr = r.u8("lcr");
    const mcr = r.bits("mcr", MCR_MASK);
    const lsr = r.u8("lsr");
    const msr = r.u8("msr");
    const scr = r.u8("scr");
    const divisor = r.u16("divisor");
    const fifo = r.bytes("rxFifo", { maxLength: UART_FIFO_SIZE });
    const thrPending = r.bool("thrPending");
    const timeoutPending = r.bool("timeoutPending");
    this.#rbr = rbr;
    this.#ier = ier;
    this.#iir = iir;
    this.#fcr = fcr;
    this.#lcr = lcr;
    this.#mcr = mcr;
    this.#lsr = lsr;
    this.#msr = msr;
    this.#scr = scr;
    this.#divisor = divisor;
    this.#fifo = Array.from(fifo);
    // FCR bits 7:6 stick, so the trigger level follows from them whenever the FIFOs are on.
    this.#triggerLevel = FCR_TRIGGER_LEVELS[fcr >> 6];
    this.#thrPending = thrPending;
    this.#timeoutPending = timeoutPending;
    this.#updateIrq();
  }

  /** Reads the register at `offset` (0–7) from the base, with its side effects. */
  read(offset: number): number {
    switch (offset & 7) {
      case RBR_THR_DLL:
        if (this.#lcr & LCR_DLAB_BIT) return this.#divisor & 0xff;
        return this.#readRbr();
      case IER_DLM:
        return this.#lcr & LCR_DLAB_BIT ? this.#divisor >> 8 : this.#ier;
      case IIR_FCR: {
        const iir = this.#iir;
        // Reading IIR while THRE is the reported source acknowledges it.
        if ((iir & IIR_ID_MASK) === IIR_THRI) {
          this.#thrPending = false;
          this.#updateIrq();
        }
        return iir;
      }
      case LCR:
        return this.#lcr;
      case MCR:
        return this.#mcr;
      case LSR: {
        const lsr = this.#lsr;
        if (lsr & (LSR_BI_BIT | LSR_OE_BIT)) {
          this.#lsr &= ~(LSR_BI_BIT | LSR_OE_BIT);
          this.#updateIrq();
        }
        return lsr;
      }
      case MSR:
        if (this.#mcr & MCR_LOOP_BIT) {
          // Loopback wires the modem outputs to the inputs: OUT2→DCD, OUT1→RI, RTS→CTS, DTR→DSR.
          return ((this.#mcr & (MCR_OUT2_BIT | MCR_OUT1_BIT)) << 4) | ((this.#mcr & MCR_RTS_BIT) << 3) |
            ((this.#mcr & MCR_DTR_BIT) << 5);
        } else {
          const msr = this.#msr;
          if (msr & MSR_ANY_DELTA) {
            this.#msr &= 0xf0;
            this.#updateIrq();
          }
          return msr;
        }
      default: // SCR
        return this.#scr;
    }
  }

  /** Writes `value` (a byte) to the register at `offset` (0–7) from the base. */
  write(offset: number, value: number): void {
    value &= 0xff;
    switch (offset & 7) {
      case RBR_THR_DLL:
        if (this.#lcr & LCR_DLAB_BIT) this.#divisor = (this.#divisor & 0xff00) | value;
        else this.#writeThr(value);
        break;
      case IER_DLM:
        if (this.#lcr & LCR_DLAB_BIT) this.#divisor = (this.#divisor & 0x00ff) | (value << 8);
        else this.#writeIer(value);
        break;
      case IIR_FCR:
        this.#writeFcr(value);
        break;
      case LCR:
        this.#lcr = value;
        break;
      case MCR:
        this.#mcr = value & MCR_MASK;
        break;
      case LSR:
      case MSR:
        break; // read-only
      case SCR:
        this.#scr = value;
        break;
    }
  }

  get #fifoEnabled(): boolean {
    return (this.#fcr & FCR_FIFO_ENABLE_BIT) !== 0;
  }

  #readRbr(): number {
    let value: number;
    if (this.#fifoEnabled) {
      value = this.#fifo.length ? this.#fifo.shift()! : 0;
      if (this.#fifo.length === 0) this.#lsr &= ~(LSR_DR_BIT | LSR_BI_BIT);
      this.#timeoutPending = false;
      this.#lineIdle();
    } else {
      value = this.#rbr;
      this.#lsr &= ~(LSR_DR_BIT | LSR_BI_BIT);
    }
    this.#updateIrq();
    if (!(this.#mcr & MCR_LOOP_BIT)) this.#onReadyToReceive?.();
    return value;
  }

  #writeThr(value: number): void {
    // The holding register fills …
    this.#thrPending = false;
    this.#lsr &= ~(LSR_THRE_BIT | LSR_TEMT_BIT);
    this.#updateIrq();
    // … and empties at once into the (instant) transmitter: THRE and its interrupt come back.
    this.#lsr |= LSR_THRE_BIT;
    this.#thrPending = true;
    this.#updateIrq();
    if (this.#mcr & MCR_LOOP_BIT) {
      this.#receiveByte(value);
      this.#lineIdle();
      this.#updateIrq();
    } else {
      this.#transmit?.(value);
    }
    this.#lsr |= LSR_TEMT_BIT;
  }

  #writeIer(value: number): void {
    const changed = (this.#ier ^ value) & IER_MASK;
    this.#ier = value & IER_MASK;
    // Enabling THRI while THR is empty raises the interrupt even if an IIR read acknowledged it
    // before (QEMU samples THRE on the rising edge of IER.THRI, as Bochs; Windows and Linux rely on it).
    if (changed & IER_THRI_BIT) {
      this.#thrPending = (this.#ier & IER_THRI_BIT) !== 0 && (this.#lsr & LSR_THRE_BIT) !== 0;
    }
    if (changed) this.#updateIrq();
  }

  #writeFcr(value: number): void {
    // Switching the FIFOs on or off clears both.
    if ((value ^ this.#fcr) & FCR_FIFO_ENABLE_BIT) value |= FCR_CLEAR_XMIT_BIT | FCR_CLEAR_RCVR_BIT;
    if (value & FCR_CLEAR_RCVR_BIT) {
      this.#lsr &= ~(LSR_DR_BIT | LSR_BI_BIT);
      this.#timeoutPending = false;
      this.#fifo = [];
    }
    if (value & FCR_CLEAR_XMIT_BIT) {
      this.#lsr |= LSR_THRE_BIT;
      this.#thrPending = true;
    }
    this.#fcr = value & FCR_STICKY_MASK;
    if (value & FCR_FIFO_ENABLE_BIT) {
      this.#iir |= IIR_FIFO_ENABLED_BITS;
      this.#triggerLevel = FCR_TRIGGER_LEVELS[value >> 6];
    } else {
      this.#iir &= ~IIR_FIFO_ENABLED_BITS;
    }
    this.#lineIdle();
    this.#updateIrq();
  }

  #receiveByte(byte: number): void {
    if (this.#fifoEnabled) {
      this.#fifoPut(byte);
      this.#lsr |= LSR_DR_BIT;
    } else {
      if (this.#lsr & LSR_DR_BIT) this.#lsr |= LSR_OE_BIT;
      this.#rbr = byte;
      this.#lsr |= LSR_DR_BIT;
    }
  }

  /** Receive overruns do not overwrite FIFO contents (QEMU's `recv_fifo_put`). */
  #fifoPut(byte: number): void {
    if (this.#fifo.length < UART_FIFO_SIZE) this.#fifo.push(byte);
    else this.#lsr |= LSR_OE_BIT;
  }

  /** The line is idle now: in immediate mode, bytes below the trigger level time out at once. */
  #lineIdle(): void {
    if (!this.#immediateTimeout || !this.#fifoEnabled) return;
    const n = this.#fifo.length;
    this.#timeoutPending = n > 0 && n < this.#triggerLevel;
  }

  /** QEMU's `serial_update_irq`: IIR by priority, and the output level. */
  #updateIrq(): void {
    let id = IIR_NO_INT;
    if (this.#ier & IER_RLSI_BIT && this.#lsr & LSR_INT_ANY) {
      id = IIR_RLSI;
    } else if (this.#ier & IER_RDI_BIT && this.#timeoutPending) {
      id = IIR_CTI;
    } else if (
      this.#ier & IER_RDI_BIT && this.#lsr & LSR_DR_BIT &&
      (!this.#fifoEnabled || this.#fifo.length >= this.#triggerLevel)
    ) {
      id = IIR_RDI;
    } else if (this.#ier & IER_THRI_BIT && this.#thrPending) {
      id = IIR_THRI;
    } else if (this.#ier & IER_MSI_BIT && this.#msr & MSR_ANY_DELTA) {
      id = IIR_MSI;
    }
    this.#iir = id | (this.#iir & 0xf0);
    this.#irq.update(id !== IIR_NO_INT);
  }
}
