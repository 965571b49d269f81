/**
 * `info pic` of KVM's in-kernel irqchip: the raw `KVM_GET_IRQCHIP` states of both 8259s and the
 * IOAPIC (`struct kvm_pic_state`, `struct kvm_ioapic_state` in arch/x86/include/uapi/asm/kvm.h)
 * printed in QEMU's format by the same formatters as the userspace models (QEMU prints its
 * kvm-i8259 and kvm-ioapic from the same ioctl).
 *
 * @module
 */

import { formatIoapicInfo } from "../../devices/ioapic_info.ts";
import { formatPicInfo } from "../../devices/pic_info.ts";

/** Offsets in `struct kvm_pic_state` (one byte each). */
const PIC = { irr: 1, imr: 2, isr: 3, priorityAdd: 4, irqBase: 5, readRegSelect: 6, fnm: 12, elcr: 14 };
/** `struct kvm_ioapic_state`: base (u64), ioregsel, id, irr, pad (u32 each), then 24 u64 entries. */
const IOAPIC_IOREGSEL = 8;
const IOAPIC_ID = 12;
const IOAPIC_IRR = 16;
const IOAPIC_REDTBL = 24;
const IOAPIC_PINS = 24;
/** KVM's in-kernel IOAPIC is version 0x11. */
const KVM_IOAPIC_VERSION = 0x11;

function picLine(index: number, chip: Uint8Array): string {
  return formatPicInfo(index, {
    irr: chip[PIC.irr],
    imr: chip[PIC.imr],
    isr: chip[PIC.isr],
    priorityAdd: chip[PIC.priorityAdd],
    irqBase: chip[PIC.irqBase],
    readRegSelect: chip[PIC.readRegSelect] !== 0,
    elcr: chip[PIC.elcr],
    specialFullyNestedMode: chip[PIC.fnm] !== 0,
  });
}

/**
 * The `info pic` text of three raw in-kernel chips: master PIC, slave PIC, IOAPIC (512 bytes each).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kernelIrqchipInfo } from "./kernel_irqchip_info.ts";
 * const master = new Uint8Array(512), slave = new Uint8Array(512), ioapic = new Uint8Array(512);
 * master.set([0, 0x01, 0xfb, 0, 0, 0x30], 0); // IRR bit 0, IMR 0xfb, vectors from 0x30
 * new DataView(ioapic.buffer).setBigUint64(24 + 2 * 8, 0x30n, true); // pin 2: vector 0x30
 * const text = kernelIrqchipInfo([master, slave, ioapic]);
 * assert.match(text, /^pic0: irr=01 imr=fb isr=00 hprio=0 irq_base=30/);
 * assert.match(text, /\nioapic0: ver=0x11/);
 * assert.match(text, /pin 2  0x0000000000000030 dest=0 vec=48/);
 * ```
 */
export function kernelIrqchipInfo(chips: readonly Uint8Array[]): string {
  const view = new DataView(chips[2].buffer, chips[2].byteOffset, chips[2].byteLength);
  const ioapic = formatIoapicInfo({
    version: KVM_IOAPIC_VERSION,
    id: view.getUint32(IOAPIC_ID, true) & 0xf,
    ioregsel: view.getUint32(IOAPIC_IOREGSEL, true) & 0xff,
    irr: view.getUint32(IOAPIC_IRR, true),
    entries: Array.from(
      { length: IOAPIC_PINS },
      (_, pin) => view.getBigUint64(IOAPIC_REDTBL + pin * 8, true),
    ),
  });
  return `${picLine(0, chips[0])}\n${picLine(1, chips[1])}\n${ioapic}`.trimEnd();
}
