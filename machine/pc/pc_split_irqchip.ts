/**
 * The PC's interrupt controllers and timer in userspace, for a split irqchip (QEMU's
 * `kernel-irqchip=split`, the default of its microvm): the i8259 pair with the ELCR, the i8254 PIT
 * with port 0x61, and the IOAPIC, wired as QEMU's `pc` wires them. The LAPICs stay in the kernel.
 *
 * - ISA IRQ `n` (0–15) goes to the i8259's input `n` and the IOAPIC's input `n` (QEMU's
 *   `gsi_handler`; the IOAPIC takes ISA IRQ 0 on pin 2, as the MP table and the MADT say). PCI INTx
 *   lines (10 and 11) come the same way.
 * - The IOAPIC's deliveries are MSI messages: the machine sends them with `KVM_SIGNAL_MSI`, and keeps
 *   KVM's GSI routes 0–23 equal to the pins' messages so that KVM knows the level-triggered vectors
 *   and exits with `KVM_EXIT_IOAPIC_EOI` when the guest EOIs one ({@link PcSplitIrqchip.eoi}).
 * - The i8259's INT output is the BSP's ExtINT: before each `KVM_RUN` the machine asks
 *   {@link PcSplitIrqchip.extInt} for a vector when the vCPU is ready for one (`Vcpu.injectExtInt`), and
 *   asks for the interrupt window while INT stays high (QEMU's `kvm_arch_pre_run`).
 * - The PIT's channel 0 needs a host timer: the machine arms one for {@link I8254.nextDeadline}
 *   (told through `onPitDeadline`) and calls {@link PcSplitIrqchip.tick} when it may have passed.
 *
 * Pure: no KVM, no host timer; `PcBoard` builds it for `irqchip: "split"` (the IOAPIC's region
 * in place of the in-kernel one's reservation), `PcMachine` connects it.
 *
 * @module
 */

import { I8254 } from "../../devices/i8254.ts";
import { I8259 } from "../../devices/i8259.ts";
import { Ioapic, IOAPIC_PINS, type IoapicRoute } from "../../devices/ioapic.ts";
import type { IrqLine } from "../../devices/irq_line.ts";
import { PcSpeaker } from "../../devices/pc_speaker.ts";
import type { PortDevice } from "../../devices/port_device.ts";

/** Which interrupt controllers are the kernel's: all (QEMU's `kernel-irqchip=on`) or the LAPICs. */
export type PcIrqchipMode = "kernel" | "split";

/** What {@link PcSplitIrqchip} needs from the machine. */
export interface PcSplitIrqchipWiring {
  /** Sends an MSI message (an IOAPIC delivery): `KVM_SIGNAL_MSI`. */
  readonly deliverMsi: (address: bigint, data: number) => void;
  /** The IOAPIC pins' messages changed: KVM's GSI routes 0–23 should be these. */
  readonly onRoutes?: (routes: readonly IoapicRoute[]) => void;
  /** The PIT's next output change moved (nanoseconds on `clock`, or none): re-arm the host timer. */
  readonly onPitDeadline?: (deadline: number | undefined) => void;
  /** Monotonic nanoseconds (default: `performance.now()`). */
  readonly clock?: () => number;
}

/** ISA IRQs (QEMU's `ISA_NUM_IRQS`). */
const ISA_IRQS = 16;

/** The userspace PIC, PIT and IOAPIC of a split-irqchip PC. */
export class PcSplitIrqchip {
  /** The i8259 pair and the ELCR. */
  readonly pic: I8259;
  /** The i8254. */
  readonly pit: I8254;
  /** Port 0x61 (channel 2's gate and output). */
  readonly speaker: PcSpeaker;
  /** The IOAPIC ("ioapic" at 0xfec00000). */
  readonly ioapic: Ioapic;
  readonly #lines: IrqLine[] = [];
  readonly #clock: () => number;

  /**
   * The controllers at their reset state, wired to each other as QEMU's `pc` wires them, and to the
   * machine through `wiring`.
   */
  constructor(wiring: PcSplitIrqchipWiring) {
    this.#clock = wiring.clock ?? (() => Math.round(performance.now() * 1e6));
    this.pic = new I8259();
    this.ioapic = new Ioapic({
      deliver: (d) => wiring.deliverMsi(BigInt(d.address), d.data),
      onRoutesChange: wiring.onRoutes,
      extIntVector: () => this.pic.acknowledge(),
    });
    // ISA IRQ n reaches both controllers (QEMU's gsi_handler); 16-23 only the IOAPIC.
    for (let n = 0; n < IOAPIC_PINS; n++) {
      const pic = this.pic;
      const ioapic = this.ioapic;
      this.#lines.push(
        n < ISA_IRQS
          ? { set: (level) => (pic.setIrq(n, level), ioapic.setIrq(n, level)) }
          : { set: (level) => ioapic.setIrq(n, level) },
      );
    }
    this.pit = new I8254({ irq: this.#lines[0], clock: this.#clock, onDeadlineChange: wiring.onPitDeadline });
    this.speaker = new PcSpeaker(this.pit);
  }

  /** The line of ISA IRQ or GSI `n` (0–23). */
  irq(n: number): IrqLine {
    const line = this.#lines[n];
    if (!line) throw new RangeError(`split irqchip: there is no interrupt line ${n} (0-23)`);
    return line;
  }

  /** The port devices, in QEMU's creation order (i8259, then PIT and speaker). */
  get portDevices(): readonly PortDevice[] {
    return [this.pic, this.pit, this.speaker];
  }

  /** Plays the PIT's channel 0 up to now if its deadline has passed (the host timer fired). */
  tick(): void {
    const deadline = this.pit.nextDeadline();
    if (deadline !== undefined && this.#clock() >= deadline) this.pit.update();
  }

  /** Whether the i8259 asks the CPU for an interrupt (its INT pin). */
  get extIntPending(): boolean {
    return this.pic.output;
  }

  /** The INTA cycle: the vector the BSP takes (`Vcpu.injectExtInt`). */
  extInt(): number {
    return this.pic.acknowledge();
  }

  /** The guest EOI'd `vector` (`KVM_EXIT_IOAPIC_EOI`). */
  eoi(vector: number): void {
    this.ioapic.eoi(vector);
  }
}
