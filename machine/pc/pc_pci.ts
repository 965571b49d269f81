/**
 * The PC's PCI devices beyond the host bridge: the virtio functions the command line asks for, their
 * slots, their INTx wiring and their BARs, which the board assigns itself because no firmware runs
 * before a `-kernel` guest.
 *
 * - **Slots.** 00.0 is the i440FX host bridge; slot 1 belongs to the PIIX3 (QEMU has its ISA, IDE
 *   and PM functions there; this board models none of them as PCI functions but keeps the slot, so
 *   addresses match QEMU's). The board has no default VGA or NIC (as QEMU with `-nodefaults`), so
 *   the first free slot is 2. Devices take slots in QEMU's order of creation: every `-device` in
 *   command-line order, then the `-drive if=virtio` devices (QEMU's `drive_new` queues their
 *   `-device` options after the ones typed).
 * - **INTx.** QEMU's PIIX3 routes slot `s` pin `p` (1 = INTA#) to PIRQ `(s + p - 2) & 3`, and
 *   SeaBIOS programs PIRQ A–D to ISA IRQs 10, 10, 11, 11 ({@link PC_PCI_LINK_IRQS}); the DSDT's
 *   `_PRT` and interrupt links say the same. The lines are level-triggered and shared, so a line is
 *   the OR of every function on it ({@link SharedIrqLines}).
 * - **BARs.** {@link assignPciBars} does what SeaBIOS's `pci_setup` does on QEMU's `pc`: memory
 *   BARs are sorted largest first and packed at the top of the 32-bit PCI hole (below the IOAPIC
 *   at 0xfec00000), the non-prefetchable region above the prefetchable one when its alignment is
 *   smaller (SeaBIOS's swap), I/O BARs from 0xc000 up; then the command register's decode bits
 *   and the interrupt line register are set. With QEMU's VGA and NIC absent, the BARs land where
 *   SeaBIOS would put them on `qemu -nodefaults`.
 *
 * @module
 */

import type { IrqLine } from "../../devices/irq_line.ts";
import { PciConfig } from "../../devices/pci_device.ts";
import {
  PCI_BAR0_OFFSET,
  PCI_BAR_COUNT,
  PciBarType,
  PciCommand,
  PciFunction,
} from "../../devices/pci_function.ts";
import type { PciHost } from "../../devices/pci_host.ts";
import type {
  BlockBacking,
  RamSpans,
  VirtioNet,
  VirtioNetOffloads,
  VirtioPci,
} from "../../devices/virtio/mod.ts";
import { PC_PCI_LINK_IRQS } from "../acpi/dsdt.ts";
import { IOAPIC_START } from "./layout.ts";
import type { HostFdSource } from "../runner.ts";

/** The first slot a `-device` gets on this board (0: host bridge, 1: PIIX3). */
export const PC_PCI_FIRST_FREE_SLOT = 2;
/** Slots on bus 0. */
export const PC_PCI_SLOTS = 32;
/** End of the 32-bit PCI memory window (the IOAPIC follows), as QEMU's `pci_hole` ends. */
export const PC_PCI_HOLE_END: bigint = IOAPIC_START;
/** Where SeaBIOS starts the PCI I/O BARs. */
export const PC_PCI_IO_START = 0xc000n;
/** End of the PCI I/O window SeaBIOS uses. */
export const PC_PCI_IO_END = 0x1_0000n;

/**
 * The ISA IRQ of slot `slot`'s INTx pin `pin` (1 = INTA#): PIIX3 PIRQ `(slot + pin - 2) & 3`, as
 * QEMU's `pci_slot_get_pirq`, then SeaBIOS's PIRQ → IRQ programming.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pciIntxIrq } from "./pc_pci.ts";
 * assert.equal(pciIntxIrq(4, 1), 11); // QEMU's `info pci`: device 4, "IRQ 11, pin A"
 * assert.equal(pciIntxIrq(5, 1), 10);
 * ```
 */
export function pciIntxIrq(slot: number, pin: number): number {
  return PC_PCI_LINK_IRQS[(slot + pin - 2) & 3];
}

/**
 * Level-triggered, shared ISA lines: each source gets its own {@link IrqLine}; the ISA line is
 * asserted while any of its sources is (a wired OR, as the PIIX3's PIRQ inputs are).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SharedIrqLines } from "./pc_pci.ts";
 * const seen: boolean[] = [];
 * const shared = new SharedIrqLines(() => ({ set: (level) => seen.push(level) }));
 * const a = shared.source(10), b = shared.source(10);
 * a.set(true); b.set(true); a.set(false); b.set(false);
 * assert.deepEqual(seen, [true, false]);
 * ```
 */
export class SharedIrqLines {
  readonly #irq: (n: number) => IrqLine;
  readonly #asserted = new Map<number, number>();

  /** Lines over `irq(n)`, the board's ISA line `n`. */
  constructor(irq: (n: number) => IrqLine) {
    this.#irq = irq;
  }

  /** A new source on ISA line `n`. */
  source(n: number): IrqLine {
    let level = false;
    return {
      set: (value: boolean) => {
        if (value === level) return;
        level = value;
        const before = this.#asserted.get(n) ?? 0;
        const after = before + (value ? 1 : -1);
        this.#asserted.set(n, after);
        if ((before > 0) !== (after > 0)) this.#irq(n).set(after > 0);
      },
    };
  }
}

/** One BAR to place. */
interface BarRequest {
  fn: PciFunction;
  index: number;
  size: bigint;
  is64: boolean;
}

function alignDown(v: bigint, align: bigint): bigint {
  return v - (v % align);
}

/**
 * Assigns every BAR of the PCI functions on `host` (other than the host bridge) as SeaBIOS does,
 * enables their decoding, and writes each function's interrupt line register. Deterministic: the
 * same devices in the same slots get the same addresses.
 *
 * @throws {RangeError} when the BARs do not fit between `holeStart` and {@link PC_PCI_HOLE_END}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryRegion, UNASSIGNED_IO_OPS } from "../../memory/mod.ts";
 * import { PciBarType, PciFunction, PciHost } from "../../devices/mod.ts";
 * import { assignPciBars } from "./pc_pci.ts";
 * const bus = { memory: MemoryRegion.container("pci", 1n << 64n), io: MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS) };
 * const host = new PciHost();
 * const fn = new PciFunction({ vendorId: 0x1af4, deviceId: 0x1044, classCode: 0xff00, bus, interruptPin: 1 });
 * fn.registerBar(1, MemoryRegion.io("regs", 0x1000, { read: () => 0 }), PciBarType.MEMORY);
 * host.attach({ device: 2 }, fn);
 * assignPciBars(host, 0x1000_0000n);
 * assert.equal(fn.barAddress(1), 0xfebf_f000n);
 * assert.equal(fn.readConfig(0x3c, 1), 10); // slot 2, INTA# → PIRQB → IRQ 10
 * ```
 */
export function assignPciBars(host: PciHost, holeStart: bigint): void {
  const mem: BarRequest[] = [];
  const prefmem: BarRequest[] = [];
  const io: BarRequest[] = [];
  const functions = host.functions().filter((f) => f.device instanceof PciFunction);
  for (const { address, device } of functions) {
    const fn = device as PciFunction;
    const pin = fn.readConfig(PciConfig.INTERRUPT_PIN, 1);
    if (pin !== 0) fn.writeConfig(PciConfig.INTERRUPT_LINE, pciIntxIrq(address.device, pin), 1);
    for (let index = 0; index < PCI_BAR_COUNT; index++) {
      const region = fn.barRegion(index);
      if (!region) continue;
      const type = fn.readConfig(PCI_BAR0_OFFSET + 4 * index, 1) & 0xf;
      const is64 = !(type & PciBarType.IO) && (type & PciBarType.MEMORY_64) !== 0;
      const request = { fn, index, size: region.size, is64 };
      if (type & PciBarType.IO) io.push(request);
      else if (type & PciBarType.PREFETCH) prefmem.push(request);
      else mem.push(request);
      if (is64) index++;
    }
  }
  // Largest first; equal sizes keep slot order (Array.prototype.sort is stable).
  const bySize = (a: BarRequest, b: BarRequest) => (a.size < b.size ? 1 : a.size > b.size ? -1 : 0);
  for (const list of [mem, prefmem, io]) list.sort(bySize);
  const sum = (list: BarRequest[]) => list.reduce((s, r) => s + r.size, 0n);
  const align = (list: BarRequest[]) => list.reduce((a, r) => (r.size > a ? r.size : a), 1n);
  // SeaBIOS's pci_bios_init_root_regions_mem: the region with the smaller alignment goes on top.
  let [top, below] = [prefmem, mem];
  if (align(mem) < align(prefmem)) [top, below] = [mem, prefmem];
  const topBase = alignDown(PC_PCI_HOLE_END - sum(top), align(top));
  const belowBase = alignDown(topBase - sum(below), align(below));
  if (belowBase < holeStart) {
    throw new RangeError(
      `PCI: the BARs need 0x${(PC_PCI_HOLE_END - belowBase).toString(16)} bytes below 0x${
        PC_PCI_HOLE_END.toString(16)
      }, more than the PCI hole from 0x${holeStart.toString(16)} has`,
    );
  }
  if (PC_PCI_IO_START + sum(io) > PC_PCI_IO_END) throw new RangeError("PCI: the I/O BARs do not fit");
  const place = (list: BarRequest[], base: bigint) => {
    let at = base;
    for (const r of list) {
      const offset = PCI_BAR0_OFFSET + 4 * r.index;
      r.fn.writeConfig(offset, Number(at & 0xffff_ffffn) | (r.fn.readConfig(offset, 1) & 0xf), 4);
      if (r.is64) r.fn.writeConfig(offset + 4, Number(at >> 32n), 4);
      at += r.size;
    }
  };
  place(top, topBase);
  place(below, belowBase);
  place(io, PC_PCI_IO_START);
  for (const { device } of functions) {
    const fn = device as PciFunction;
    let command = 0;
    for (let index = 0; index < PCI_BAR_COUNT; index++) {
      if (!fn.barRegion(index)) continue;
      command |= fn.readConfig(PCI_BAR0_OFFSET + 4 * index, 1) & PciBarType.IO
        ? PciCommand.IO
        : PciCommand.MEMORY;
    }
    if (command) fn.writeConfig(PciConfig.COMMAND, fn.readConfig(PciConfig.COMMAND, 2) | command, 2);
  }
}

/** PCI class words QEMU's `info pci` names (hw/pci/pci.c, `pci_class_descriptions`). */
const CLASS_NAMES: Record<number, string> = {
  0x0100: "SCSI controller",
  0x0101: "IDE controller",
  0x0200: "Ethernet controller",
  0x0300: "VGA controller",
  0x0600: "Host bridge",
  0x0601: "ISA bridge",
  0x0680: "Bridge",
};

/**
 * QEMU's `info pci` (hw/pci/pci-hmp-cmds.c) of the functions on `host`; `ids` gives a function's
 * `id` property (its `-device id=`), by slot.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { I440fxHostBridge, PciHost } from "../../devices/mod.ts";
 * import { formatInfoPci } from "./pc_pci.ts";
 * const host = new PciHost();
 * host.attach({ device: 0 }, new I440fxHostBridge());
 * assert.match(formatInfoPci(host), /Bus  0, device   0, function 0:\n    Host bridge: PCI device 8086:1237/);
 * ```
 */
export function formatInfoPci(host: PciHost, ids: ReadonlyMap<number, string> = new Map()): string {
  const hex = (v: number | bigint, w: number) => v.toString(16).padStart(w, "0");
  const lines: string[] = [];
  for (const { address, device } of host.functions()) {
    const r = (offset: number, size: number) => device.readConfig(offset, size);
    const cls = r(PciConfig.CLASS_DEVICE, 2);
    lines.push(
      `  Bus ${String(address.bus).padStart(2)}, device ${
        String(address.device).padStart(3)
      }, function ${address.function}:`,
      `    ${CLASS_NAMES[cls] ?? `Class ${String(cls).padStart(4, "0")}`}: PCI device ${hex(r(0, 2), 4)}:${
        hex(r(2, 2), 4)
      }`,
      `      PCI subsystem ${hex(r(0x2c, 2), 4)}:${hex(r(0x2e, 2), 4)}`,
    );
    const pin = r(PciConfig.INTERRUPT_PIN, 1);
    if (pin) lines.push(`      IRQ ${r(PciConfig.INTERRUPT_LINE, 1)}, pin ${String.fromCharCode(64 + pin)}`);
    if (device instanceof PciFunction) {
      for (let i = 0; i < PCI_BAR_COUNT; i++) {
        const region = device.barRegion(i);
        if (!region) continue;
        const type = r(PCI_BAR0_OFFSET + 4 * i, 1) & 0xf;
        const addr = device.barAddress(i);
        const shown = addr ?? 0xffff_ffff_ffff_ffffn;
        const last = BigInt.asUintN(64, shown + region.size - 1n);
        const fmt = (
          v: bigint,
        ) => (addr === undefined ? hex(v, type & PciBarType.IO ? 4 : 8) : v.toString(16));
        const kind = type & PciBarType.IO
          ? "I/O"
          : `${type & PciBarType.MEMORY_64 ? "64" : "32"} bit ${
            type & PciBarType.PREFETCH ? "prefetchable " : ""
          }memory`;
        lines.push(`      BAR${i}: ${kind} at 0x${fmt(shown)} [0x${fmt(last)}].`);
        if (type & PciBarType.MEMORY_64 && !(type & PciBarType.IO)) i++;
      }
    }
    lines.push(`      id "${ids.get(address.device) ?? ""}"`);
  }
  return lines.join("\n") + "\n";
}

/** A PCI device the command line asks for. */
export type PcPciDeviceSpec =
  | {
    /** A virtio block device over `backing`. */
    readonly type: "virtio-blk-pci";
    /**
     * Queue notifies signal an eventfd through KVM_IOEVENTFD instead of exiting to the VMM (QEMU's
     * `ioeventfd` property; the front-end sets it unless told `ioeventfd=off`).
     */
    readonly ioeventfd?: boolean;
    /** The `-device id=` (shown by `info pci`), if any. */
    readonly id?: string;
    /** The disk. */
    readonly backing: BlockBacking;
    /** GET_ID's answer (`serial=`). */
    readonly serial?: string;
    /** Offer DISCARD where the backing can (QEMU's `discard` property; default on). */
    readonly discard?: boolean;
    /** Offer WRITE_ZEROES where the backing can (QEMU's `write-zeroes` property; default on). */
    readonly writeZeroes?: boolean;
    /**
     * Moves the backing's transfers off the thread that serves the queues, where that thread waits
     * in poll(2) between exits: the source whose readiness completes them, or null to keep them
     * synchronous (the front-end's `aio=`; `DiskBlockBacking.offload`). The machine disposes of it
     * when it closes, which makes the transfers synchronous again.
     */
    readonly offload?: () => (HostFdSource & Disposable) | null;
  }
  | {
    /** A virtio entropy device drawing from `entropy`. */
    readonly type: "virtio-rng-pci";
    /**
     * Queue notifies signal an eventfd through KVM_IOEVENTFD instead of exiting to the VMM (QEMU's
     * `ioeventfd` property; the front-end sets it unless told `ioeventfd=off`).
     */
    readonly ioeventfd?: boolean;
    /** The `-device id=`, if any. */
    readonly id?: string;
    /** Fills a buffer with random bytes. */
    readonly entropy: (buf: Uint8Array) => void;
  }
  | {
    /** A virtio network card on `backend`. */
    readonly type: "virtio-net-pci";
    /**
     * Queue notifies signal an eventfd through KVM_IOEVENTFD instead of exiting to the VMM (QEMU's
     * `ioeventfd` property; the front-end sets it unless told `ioeventfd=off`).
     */
    readonly ioeventfd?: boolean;
    /** The `-device id=`, if any. */
    readonly id?: string;
    /** Its MAC address (6 bytes). */
    readonly mac: readonly number[];
    /**
     * The virtio-net features offered (`VirtioNetOptions.features`): QEMU's defaults, less what
     * the `-device` properties switched off.
     */
    readonly features?: bigint;
    /** Where its frames go and come from. */
    readonly backend: PcNetBackend;
    /** Called after the driver changed the card's receive filter (`VirtioNetOptions.onRxFilterChanged`). */
    readonly onRxFilterChanged?: () => void;
  };

/**
 * The host side of a virtio-net card (`-netdev`): takes the frames the guest sends, and delivers
 * frames to the card itself once it knows it ({@link attach}), with `VirtioNet.receive`.
 */
export interface PcNetBackend {
  /** The card was created: deliver received frames to it. */
  attach(net: VirtioNet): void;
  /**
   * One frame the guest sent: its 12-byte virtio-net header and the Ethernet frame as spans of
   * memory (both valid during the call); false when it was dropped. With a transmit offload in
   * force (the card's CSUM or HOST_* features, offered unless a property took them away) the header
   * may ask for a checksum to finish or a segment to cut: the backend does it or drops the frame.
   */
  send(header: Uint8Array, frame: RamSpans): boolean | void;
  /**
   * What the driver accepts to receive changed (absent: the backend delivers plain frames only, and
   * the card is offered no receive offload).
   */
  setOffloads?(offloads: VirtioNetOffloads): void;
  /** The driver made receive buffers available: frames held back can go now. */
  receiveReady(): void;
}

/** A PCI device plugged into the board. */
export interface PcPciDevice {
  /** Its slot on bus 0. */
  readonly slot: number;
  /** Its spec. */
  readonly spec: PcPciDeviceSpec;
  /** The function. */
  readonly fn: VirtioPci;
  /**
   * A network card's self-announcement (QEMU's `qemu_announce_self_iter`): a RARP frame from its
   * address through its backend, and its driver asked to announce it.
   */
  readonly announce?: () => void;
}
