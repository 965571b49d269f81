/**
 * The PC's pair of Intel 8259A programmable interrupt controllers with their edge/level control
 * registers (ELCR), as QEMU 7.2's userspace model (`hw/intc/i8259.c`, `hw/intc/i8259_common.c`), the
 * one QEMU uses with `-machine kernel-irqchip=split` or `off`.
 *
 * The master serves ISA IRQs 0–7 and drives the CPU's INT pin; the slave serves IRQs 8–15 and is
 * cascaded on the master's input 2. Each chip has the 8259A's registers: IRR (requests), ISR (in
 * service), IMR (mask), a rotating priority, the ICW1–ICW4 initialisation sequence and the OCW2/OCW3
 * commands; the ELCR (ports 0x4d0/0x4d1, a PIIX3 register QEMU keeps in the PIC) makes an input
 * level-sensitive. The CPU's interrupt-acknowledge cycle is {@link I8259.acknowledge}.
 *
 * Like QEMU 7.2, the ICW1 LTIM bit (level mode for the whole chip) is ignored (QEMU logs it as
 * unimplemented); only the ELCR selects level triggering.
 *
 * @module
 */

import { formatPicInfo } from "./pic_info.ts";
import { MemoryRegion, type MemoryRegionOps } from "../memory/mod.ts";
import { checkPortRange } from "./_ports.ts";
import type { PortDevice } from "./port_device.ts";
import { type IrqLine, IrqOutput } from "./irq_line.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** The master's command port (its data port, the IMR, follows it). */
export const PIC_MASTER_PORT = 0x20;
/** The slave's command port (its data port follows it). */
export const PIC_SLAVE_PORT = 0xa0;
/** The master's ELCR port (IRQs 0–7); the slave's (IRQs 8–15) follows it. */
export const PIC_ELCR_PORT = 0x4d0;
/** The ELCR bits the master accepts: IRQs 0, 1 and 2 are always edge-triggered (QEMU's `elcr_mask`). */
export const PIC_MASTER_ELCR_MASK = 0xf8;
/** The ELCR bits the slave accepts: IRQs 8 and 13 are always edge-triggered (QEMU's `elcr_mask`). */
export const PIC_SLAVE_ELCR_MASK = 0xde;
/** The number of ISA interrupt lines the pair serves. */
export const ISA_NUM_IRQS = 16;
/** The master input the slave's output is wired to. */
export const PIC_CASCADE_IRQ = 2;

/** The name saved states and their errors carry. */
const STATE_NAME = "i8259";
/** The level "no interrupt" of `get_priority`: no bit set in the mask. */
const NO_PRIORITY = 8;
/** The IRQ a chip reports when acknowledged with nothing to deliver (a spurious interrupt). */
const SPURIOUS_IRQ = 7;

// Command-port writes (QEMU's pic_ioport_write on offset 0).
const ICW1_BIT = 0x10;
const ICW1_IC4_BIT = 0x01;
const ICW1_SNGL_BIT = 0x02;
const OCW3_BIT = 0x08;
const OCW3_POLL_BIT = 0x04;
const OCW3_RR_BIT = 0x02;
const OCW3_RIS_BIT = 0x01;
const OCW3_ESMM_BIT = 0x40;
const OCW3_SMM_BIT = 0x20;
const ICW2_BASE_MASK = 0xf8;
const ICW4_AEOI_BIT = 0x02;
const ICW4_SFNM_BIT = 0x10;
const POLL_IRQ_BIT = 0x80;

// OCW2 commands (bits 7–5).
const OCW2_ROTATE_AEOI_CLEAR = 0;
const OCW2_EOI = 1;
const OCW2_SPECIFIC_EOI = 3;
const OCW2_ROTATE_AEOI_SET = 4;
const OCW2_ROTATE_EOI = 5;
const OCW2_SET_PRIORITY = 6;
const OCW2_ROTATE_SPECIFIC_EOI = 7;

/** Where the chip is in the ICW sequence: 0 = operational, 1–3 = expecting ICW2–ICW4. */
const INIT_OPERATIONAL = 0;
const INIT_ICW2 = 1;
const INIT_ICW3 = 2;
const INIT_ICW4 = 3;

/** One 8259A's registers, named as QEMU's `PICCommonState`. */
interface ChipRegisters {
  lastIrr: number;
  irr: number;
  imr: number;
  isr: number;
  priorityAdd: number;
  irqBase: number;
  readRegSelect: boolean;
  poll: boolean;
  specialMask: boolean;
  initState: number;
  autoEoi: boolean;
  rotateOnAutoEoi: boolean;
  specialFullyNestedMode: boolean;
  init4: boolean;
  singleMode: boolean;
  elcr: number;
}

/** One 8259A: QEMU's `PICCommonState` and the functions of `i8259.c` over it. */
class Chip implements ChipRegisters {
  lastIrr = 0;
  irr = 0;
  imr = 0;
  isr = 0;
  priorityAdd = 0;
  irqBase = 0;
  readRegSelect = false;
  poll = false;
  specialMask = false;
  initState = INIT_OPERATIONAL;
  autoEoi = false;
  rotateOnAutoEoi = false;
  specialFullyNestedMode = false;
  init4 = false;
  singleMode = false;
  elcr = 0;

  /**
   * `master` selects the special-fully-nested rule; `elcrMask` the ELCR bits that exist; `output`
   * receives the INT level on every update (called even when unchanged, as QEMU's qemu_irq_raise).
   */
  constructor(
    readonly master: boolean,
    readonly elcrMask: number,
    readonly output: (level: boolean) => void,
  ) {}

  /** QEMU's `get_priority`: the highest priority (0 = highest) with a bit in `mask`, 8 if none. */
  priority(mask: number): number {
    if (mask === 0) return NO_PRIORITY;
    let priority = 0;
    while ((mask & (1 << ((priority + this.priorityAdd) & 7))) === 0) priority++;
    return priority;
  }

  /** QEMU's `pic_get_irq`: the input to deliver (it beats everything in service), or -1. */
  pendingIrq(): number {
    const priority = this.priority(this.irr & ~this.imr);
    if (priority === NO_PRIORITY) return -1;
    // What is in service; in special mask mode masked inputs do not block, and in special fully
    // nested mode the master lets the slave interrupt its own in-service cascade input.
    let inService = this.isr;
    if (this.specialMask) inService &= ~this.imr;
    if (this.specialFullyNestedMode && this.master) inService &= ~(1 << PIC_CASCADE_IRQ);
    return priority < this.priority(inService) ? (priority + this.priorityAdd) & 7 : -1;
  }

  /** QEMU's `pic_update_irq`: drives INT from {@link pendingIrq}. */
  update(): void {
    this.output(this.pendingIrq() >= 0);
  }

  /** QEMU's `pic_set_irq`: an input changes level; an edge (or a level input held high) requests. */
  setInput(irq: number, level: boolean): void {
    const mask = 1 << irq;
    if (this.elcr & mask) {
      // Level-triggered: the request follows the line.
      if (level) {
        this.irr |= mask;
        this.lastIrr |= mask;
      } else {
        this.irr &= ~mask;
        this.lastIrr &= ~mask;
      }
    } else if (level) {
      // Edge-triggered: only a low → high change requests.
      if ((this.lastIrr & mask) === 0) this.irr |= mask;
      this.lastIrr |= mask;
    } else {
      this.lastIrr &= ~mask;
    }
    this.update();
  }

  /** QEMU's `pic_intack`: `irq` is acknowledged (in service unless auto-EOI; edge request cleared). */
  intack(irq: number): void {
    if (this.autoEoi) {
      if (this.rotateOnAutoEoi) this.priorityAdd = (irq + 1) & 7;
    } else {
      this.isr |= 1 << irq;
    }
    // A level-triggered request stays until the line drops.
    if (!(this.elcr & (1 << irq))) this.irr &= ~(1 << irq);
    this.update();
  }

  /** QEMU's `pic_init_reset` (`pic_reset_common` + update): ICW1, and a system reset after ELCR = 0. */
  initReset(): void {
    this.lastIrr = 0;
    this.irr &= this.elcr;
    this.imr = 0;
    this.isr = 0;
    this.priorityAdd = 0;
    this.irqBase = 0;
    this.readRegSelect = false;
    this.poll = false;
    this.specialMask = false;
    this.initState = INIT_OPERATIONAL;
    this.autoEoi = false;
    this.rotateOnAutoEoi = false;
    this.specialFullyNestedMode = false;
    this.init4 = false;
    this.singleMode = false;
    this.update();
  }

  /** QEMU's `pic_ioport_write`. */
  write(offset: number, value: number): void {
    if (offset === 0) this.#writeCommand(value);
    else this.#writeData(value);
  }

  #writeCommand(value: number): void {
    if (value & ICW1_BIT) {
      this.initReset();
      this.initState = INIT_ICW2;
      this.init4 = (value & ICW1_IC4_BIT) !== 0;
      this.singleMode = (value & ICW1_SNGL_BIT) !== 0;
    } else if (value & OCW3_BIT) {
      if (value & OCW3_POLL_BIT) this.poll = true;
      if (value & OCW3_RR_BIT) this.readRegSelect = (value & OCW3_RIS_BIT) !== 0;
      if (value & OCW3_ESMM_BIT) this.specialMask = (value & OCW3_SMM_BIT) !== 0;
    } else {
      this.#writeOcw2(value);
    }
  }

  #writeOcw2(value: number): void {
    const command = value >> 5;
    switch (command) {
      case OCW2_ROTATE_AEOI_CLEAR:
      case OCW2_ROTATE_AEOI_SET:
        this.rotateOnAutoEoi = command === OCW2_ROTATE_AEOI_SET;
        break;
      case OCW2_EOI:
      case OCW2_ROTATE_EOI: {
        // Non-specific EOI: the highest-priority input in service.
        const priority = this.priority(this.isr);
        if (priority !== NO_PRIORITY) {
          const irq = (priority + this.priorityAdd) & 7;
          this.isr &= ~(1 << irq);
          if (command === OCW2_ROTATE_EOI) this.priorityAdd = (irq + 1) & 7;
          this.update();
        }
        break;
      }
      case OCW2_SPECIFIC_EOI:
        this.isr &= ~(1 << (value & 7));
        this.update();
        break;
      case OCW2_SET_PRIORITY:
        // The input named becomes the lowest priority.
        this.priorityAdd = (value + 1) & 7;
        this.update();
        break;
      case OCW2_ROTATE_SPECIFIC_EOI: {
        const irq = value & 7;
        this.isr &= ~(1 << irq);
        this.priorityAdd = (irq + 1) & 7;
        this.update();
        break;
      }
      default: // 2: no operation
        break;
    }
  }

  #writeData(value: number): void {
    switch (this.initState) {
      case INIT_OPERATIONAL: // OCW1
        this.imr = value;
        this.update();
        break;
      case INIT_ICW2:
        this.irqBase = value & ICW2_BASE_MASK;
        this.initState = this.singleMode ? (this.init4 ? INIT_ICW4 : INIT_OPERATIONAL) : INIT_ICW3;
        break;
      case INIT_ICW3: // the cascade wiring: fixed on a PC, so only consumed
        this.initState = this.init4 ? INIT_ICW4 : INIT_OPERATIONAL;
        break;
      case INIT_ICW4:
        this.specialFullyNestedMode = (value & ICW4_SFNM_BIT) !== 0;
        this.autoEoi = (value & ICW4_AEOI_BIT) !== 0;
        this.initState = INIT_OPERATIONAL;
        break;
    }
  }

  /** QEMU's `pic_ioport_read`: a poll acknowledges; otherwise IRR or ISR (OCW3) at 0, IMR at 1. */
  read(offset: number): number {
    if (this.poll) {
      this.poll = false;
      const irq = this.pendingIrq();
      if (irq < 0) return 0;
      this.intack(irq);
      return irq | POLL_IRQ_BIT;
    }
    if (offset === 0) return this.readRegSelect ? this.isr : this.irr;
    return this.imr;
  }

  /** A line of QEMU's `info pic` (`pic_print_info`). */
  info(index: number): string {
    return formatPicInfo(index, this);
  }

  save(): StateObject {
    return {
      lastIrr: this.lastIrr,
      irr: this.irr,
      imr: this.imr,
      isr: this.isr,
      priorityAdd: this.priorityAdd,
      irqBase: this.irqBase,
      readRegSelect: this.readRegSelect,
      poll: this.poll,
      specialMask: this.specialMask,
      initState: this.initState,
      autoEoi: this.autoEoi,
      rotateOnAutoEoi: this.rotateOnAutoEoi,
      specialFullyNestedMode: this.specialFullyNestedMode,
      init4: this.init4,
      singleMode: this.singleMode,
      elcr: this.elcr,
    };
  }

  /** Reads and checks a {@link save} result; applying it is `Object.assign(chip, registers)`. */
  prepare(r: StateReader): ChipRegisters {
    return {
      lastIrr: r.u8("lastIrr"),
      irr: r.u8("irr"),
      imr: r.u8("imr"),
      isr: r.u8("isr"),
      priorityAdd: r.int("priorityAdd", 0, 7),
      irqBase: r.bits("irqBase", ICW2_BASE_MASK),
      readRegSelect: r.bool("readRegSelect"),
      poll: r.bool("poll"),
      specialMask: r.bool("specialMask"),
      initState: r.int("initState", INIT_OPERATIONAL, INIT_ICW4),
      autoEoi: r.bool("autoEoi"),
      rotateOnAutoEoi: r.bool("rotateOnAutoEoi"),
      specialFullyNestedMode: r.bool("specialFullyNestedMode"),
      init4: r.bool("init4"),
      singleMode: r.bool("singleMode"),
      elcr: r.bits("elcr", this.elcrMask),
    };
  }
}

/** Options of {@link I8259}. */
export interface I8259Options {
  /** The master's INT output, the CPU's interrupt pin; called only when its level changes. */
  output?: IrqLine;
}

/**
 * The master and slave 8259A with the ELCR: regions "pic" (0x20, 2 ports), "elcr" (0x4d0), "pic"
 * (0xa0, 2 ports) and "elcr" (0x4d1), priority 0, as QEMU 7.2 maps its userspace i8259 (`isa-i8259`)
 * on `pc`.
 *
 * The board drives the ISA lines with {@link setIrq} (QEMU's `gsi_handler` sends ISA IRQs 0–15 to
 * both this and the IOAPIC); when {@link output} is high the CPU takes the vector from
 * {@link acknowledge} (QEMU's `pic_read_irq`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { I8259 } from "./i8259.ts";
 * import { RecordingIrqLine } from "./irq_line.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * const int = new RecordingIrqLine();
 * const pic = new I8259({ output: int });
 * pic.map(io);
 * // SeaBIOS's set_pics(0x08, 0x70): ICW1–ICW4 on both chips, then every IRQ but the cascade masked.
 * for (const [port, value] of [[0x20, 0x11], [0xa0, 0x11], [0x21, 0x08], [0xa1, 0x70], [0x21, 0x04],
 *   [0xa1, 0x02], [0x21, 0x01], [0xa1, 0x01], [0x21, 0xfb], [0xa1, 0xff]]) ports.write(port, 1, value);
 * ports.write(0x21, 1, 0xfa); // unmask IRQ 0
 * pic.setIrq(0, true); // the timer ticks
 * assert.ok(int.level);
 * assert.equal(pic.acknowledge(), 0x08); // INTA: vector 8, IRQ 0 now in service
 * assert.ok(!int.level);
 * ports.write(0x20, 1, 0x20); // non-specific EOI
 * assert.equal(pic.info().split("\n")[0], "pic0: irr=00 imr=fa isr=00 hprio=0 irq_base=08 rr_sel=0 elcr=00 fnm=0");
 * ```
 */
export class I8259 implements PortDevice, Snapshottable {
  /** Region "pic" of the master: command (0x20) and data (0x21) ports. */
  readonly masterRegion: MemoryRegion;
  /** Region "pic" of the slave: command (0xa0) and data (0xa1) ports. */
  readonly slaveRegion: MemoryRegion;
  /** Region "elcr" of the master (0x4d0, IRQs 0–7). */
  readonly masterElcrRegion: MemoryRegion;
  /** Region "elcr" of the slave (0x4d1, IRQs 8–15). */
  readonly slaveElcrRegion: MemoryRegion;
  readonly #output: IrqOutput;
  readonly #master: Chip;
  readonly #slave: Chip;

  /** Both chips at their reset values (all inputs edge-triggered and unmasked, vector base 0). */
  constructor(options: I8259Options = {}) {
    this.#output = new IrqOutput(options.output);
    this.#master = new Chip(true, PIC_MASTER_ELCR_MASK, (level) => this.#output.update(level));
    // The slave's INT is the master's input 2, driven on every slave update as in QEMU (after the
    // master's ICW1 cleared its edge detector, the next slave update is a new edge).
    this.#slave = new Chip(
      false,
      PIC_SLAVE_ELCR_MASK,
      (level) => this.#master.setInput(PIC_CASCADE_IRQ, level),
    );
    this.masterRegion = MemoryRegion.io("pic", 2, chipOps(this.#master));
    this.slaveRegion = MemoryRegion.io("pic", 2, chipOps(this.#slave));
    this.masterElcrRegion = MemoryRegion.io("elcr", 1, elcrOps(this.#master));
    this.slaveElcrRegion = MemoryRegion.io("elcr", 1, elcrOps(this.#slave));
  }

  /** The regions in QEMU's creation order: the master's "pic" and "elcr", then the slave's. */
  get regions(): readonly MemoryRegion[] {
    return [this.masterRegion, this.masterElcrRegion, this.slaveRegion, this.slaveElcrRegion];
  }

  /** Maps the four regions at 0x20, 0x4d0, 0xa0 and 0x4d1 (priority 0). */
  map(io: MemoryRegion): void {
    io.addSubregion(checkPortRange(PIC_MASTER_PORT, 2, "pic"), this.masterRegion);
    io.addSubregion(checkPortRange(PIC_ELCR_PORT, 1, "elcr"), this.masterElcrRegion);
    io.addSubregion(checkPortRange(PIC_SLAVE_PORT, 2, "pic"), this.slaveRegion);
    io.addSubregion(checkPortRange(PIC_ELCR_PORT + 1, 1, "elcr"), this.slaveElcrRegion);
  }

  /** The level of the master's INT output (what {@link I8259Options.output} was last driven to). */
  get output(): boolean {
    return this.#output.level;
  }

  /**
   * Whether the master has an interrupt to deliver now (QEMU's `pic_get_output`). Usually equal to
   * {@link output}; it differs after an ICW4 or OCW3 write that changes the answer, which QEMU does
   * not follow with an output update.
   */
  get pending(): boolean {
    return this.#master.pendingIrq() >= 0;
  }

  /**
   * Sets ISA line `irq` (0–15) to `level` (QEMU's `pic_set_irq` on the chip serving it). On an
   * edge-triggered input a low → high change requests an interrupt; on a level-triggered one (its
   * ELCR bit set) the request follows the line. Repeating a level is harmless. IRQ 2 is the
   * master's input the slave's INT drives as well (QEMU wires both to it); a PC routes nothing there.
   *
   * @throws {RangeError} if `irq` is not an integer in 0–15.
   */
  setIrq(irq: number, level: boolean): void {
    if (!Number.isInteger(irq) || irq < 0 || irq >= ISA_NUM_IRQS) {
      throw new RangeError(`i8259: IRQ ${irq} is not an ISA IRQ (0-15)`);
    }
    if (irq < 8) this.#master.setInput(irq, Boolean(level));
    else this.#slave.setInput(irq - 8, Boolean(level));
  }

  /**
   * The CPU's interrupt-acknowledge cycle (QEMU's `pic_read_irq`): returns the vector (0–255) and
   * puts the interrupt in service (or, in auto-EOI mode, rotates if asked). A request from the slave
   * is acknowledged on both chips. With nothing to deliver the master answers its IRQ 7 vector, and
   * the slave its IRQ 15 vector when the master chose the cascade but the slave has nothing: spurious
   * interrupts, which set nothing in service.
   */
  acknowledge(): number {
    const master = this.#master;
    const irq = master.pendingIrq();
    if (irq < 0) return master.irqBase + SPURIOUS_IRQ;
    let vector: number;
    if (irq === PIC_CASCADE_IRQ) {
      const slave = this.#slave;
      const slaveIrq = slave.pendingIrq();
      if (slaveIrq >= 0) {
        slave.intack(slaveIrq);
        vector = slave.irqBase + slaveIrq;
      } else {
        vector = slave.irqBase + SPURIOUS_IRQ;
      }
    } else {
      vector = master.irqBase + irq;
    }
    master.intack(irq);
    return vector;
  }

  /**
   * A system reset (QEMU's `pic_reset` on each chip): ELCR, IRR, ISR, IMR (all unmasked), vector
   * base and modes cleared; the output drops.
   */
  reset(): void {
    for (const chip of [this.#master, this.#slave]) {
      chip.elcr = 0;
      chip.initReset();
    }
  }

  /** The ELCR of both chips as one 16-bit value (bit n = ISA IRQ n level-triggered). */
  get elcr(): number {
    return this.#master.elcr | (this.#slave.elcr << 8);
  }

  /** QEMU's `info pic` lines for the two chips (`pic0: irr=… imr=… isr=… hprio=…`), without a final newline. */
  info(): string {
    return `${this.#master.info(0)}\n${this.#slave.info(1)}`;
  }

  /**
   * Both chips' registers, as QEMU's "i8259" vmstate saves them, and the INT output's level (QEMU
   * does not update the output after ICW4 and OCW3 writes, so it is not always implied by them).
   */
  saveState(): StateObject {
    return { master: this.#master.save(), slave: this.#slave.save(), output: this.#output.level };
  }

  /**
   * Puts a {@link saveState} result back and drives the output to its saved level.
   *
   * @throws {DeviceStateError} if a field is missing, mistyped or out of range (an ELCR bit outside
   * the chip's mask, a vector base with bits 0–2 set, a priority above 7, an ICW step above 3); the
   * device is then unchanged.
   */
  loadState(state: StateObject): void {
    const r = new StateReader(STATE_NAME, state);
    const master = this.#master.prepare(r.object("master"));
    const slave = this.#slave.prepare(r.object("slave"));
    const output = r.bool("output");
    Object.assign(this.#master, master);
    Object.assign(this.#slave, slave);
    this.#output.update(output);
  }
}

/** QEMU's `pic_base_ioport_ops`: byte accesses (a wider one is split into bytes). */
function chipOps(chip: Chip): MemoryRegionOps {
  return {
    read: (offset) => chip.read(Number(offset)),
    write: (offset, value) => chip.write(Number(offset), Number(value) & 0xff),
    impl: { min: 1, max: 1 },
    endianness: "little",
  };
}

/** QEMU's `pic_elcr_ioport_ops`: the register keeps only the bits of the chip's mask. */
function elcrOps(chip: Chip): MemoryRegionOps {
  return {
    read: () => chip.elcr,
    write: (_offset, value) => {
      chip.elcr = Number(value) & chip.elcrMask;
    },
    impl: { min: 1, max: 1 },
    endianness: "little",
  };
}
