/**
 * QEMU's `info pic` line of one 8259 (`pic_print_info`), from its registers: the userspace `I8259`
 * prints itself with it, and a machine with KVM's in-kernel PICs prints the state
 * `KVM_GET_IRQCHIP` gives, without loading the model.
 *
 * @module
 */

/** The registers the line shows. */
export interface PicInfo {
  /** Interrupt request register. */
  readonly irr: number;
  /** Interrupt mask register. */
  readonly imr: number;
  /** In-service register. */
  readonly isr: number;
  /** The lowest priority's rotation (0-7). */
  readonly priorityAdd: number;
  /** The vector base (ICW2). */
  readonly irqBase: number;
  /** OCW3's register select: ISR (true) or IRR. */
  readonly readRegSelect: boolean;
  /** Edge/level control. */
  readonly elcr: number;
  /** Special fully nested mode. */
  readonly specialFullyNestedMode: boolean;
}

/**
 * The line of chip `index` (0: master, 1: slave), as QEMU prints it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatPicInfo } from "./pic_info.ts";
 * const line = formatPicInfo(0, {
 *   irr: 1, imr: 0xfb, isr: 0, priorityAdd: 0, irqBase: 0x30, readRegSelect: false, elcr: 0,
 *   specialFullyNestedMode: false,
 * });
 * assert.equal(line, "pic0: irr=01 imr=fb isr=00 hprio=0 irq_base=30 rr_sel=0 elcr=00 fnm=0");
 * ```
 */
export function formatPicInfo(index: number, r: PicInfo): string {
  const hex = (v: number) => v.toString(16).padStart(2, "0");
  return `pic${index}: irr=${hex(r.irr)} imr=${hex(r.imr)} isr=${hex(r.isr)} ` +
    `hprio=${r.priorityAdd} irq_base=${hex(r.irqBase)} rr_sel=${Number(r.readRegSelect)} ` +
    `elcr=${hex(r.elcr)} fnm=${Number(r.specialFullyNestedMode)}`;
}
