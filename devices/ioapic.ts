/**
 * The I/O APIC in userspace, for a split irqchip (`-machine kernel-irqchip=split`: local APICs in
 * KVM, PIC, IOAPIC and PIT here), as QEMU 7.2's `hw/intc/ioapic.c` over `hw/intc/ioapic_common.c`
 * with the Intel 82093AA register set:
 *
 * | offset | register  | access                                                                  |
 * |--------|-----------|-------------------------------------------------------------------------|
 * | 0x00   | IOREGSEL  | the register index (8 bits), any access size                            |
 * | 0x10   | IOWIN     | the selected register, 32-bit accesses only (others read 0 / are dropped) |
 * | 0x40   | EOI       | version 0x20 only: a 32-bit write of a vector EOIs it (as {@link Ioapic.eoi}) |
 *
 * Offsets are taken modulo 0x100 inside the 4 KiB region "ioapic" (QEMU's `addr &= 0xff`). Indexed
 * registers: 0x00 ID (bits 24-27 writable), 0x01 version (`version | 23 << 16`, read-only), 0x02
 * arbitration (reads as the ID, read-only), 0x10-0x3f the 24 redirection entries as low/high 32-bit
 * halves; anything else reads 0 and ignores writes. Delivery status (bit 12) and remote IRR (bit 14)
 * are read-only; every other bit, reserved ones included, reads back what was written (QEMU's
 * `IOAPIC_RW_BITS`). Writing an entry edge-triggered clears its remote IRR (QEMU's
 * `ioapic_fix_edge_remote_irr`, the trick Linux's `__eoi_ioapic_pin` uses on version 0x11).
 *
 * Interrupts ({@link Ioapic.setIrq}, QEMU's `ioapic_set_irq`): input 0 is pin 2 (ISA IRQ 0 is GSI 2,
 * as the MADT's interrupt source override says). A level-triggered pin follows its line in IRR and
 * is delivered when the line is high, the entry unmasked and remote IRR clear; delivery sets remote
 * IRR, which only an EOI of the entry's vector clears ({@link Ioapic.eoi}: KVM's
 * `KVM_EXIT_IOAPIC_EOI`, or the EOI register), after which a line still high is delivered again. An
 * edge-triggered pin is delivered on every high call while unmasked (QEMU keeps no previous level
 * for edge pins), and a high call on a masked edge pin is lost (82093AA). Deliveries are MSI
 * messages built from the entry (QEMU's `ioapic_entry_parse`):
 *
 * - address: `0xfee00000 | entry[63:48] << 4 | destination mode << 2`: destination ID at bits
 *   19:12, and entry bits 55:48 (reserved, or the extended destination ID Linux puts in 55:49
 *   under `KVM_FEATURE_MSI_EXT_DEST_ID`) at bits 11:4;
 * - data: `vector | delivery mode << 8 | trigger mode << 15` (no polarity, no level-assert bit 14).
 *
 * In split mode KVM needs the same messages as GSI routes 0-23 (QEMU's `ioapic_update_kvm_routes`):
 * the kernel builds each vCPU's EOI-exit bitmap from the level-triggered ones, which is what makes
 * EOIs of those vectors exit to userspace. {@link Ioapic.routes} gives them and `onRoutesChange`
 * says when they changed, before the delivery that the change may cause.
 *
 * Not modelled: a second IOAPIC, interrupt remapping (QEMU sends the message through the IOMMU's
 * address space), QEMU's resample-fd kick on EOI (for VFIO), and the PIC acknowledge QEMU does when
 * it parses an ExtINT entry for a route (routes of ExtINT entries carry the entry's vector field;
 * deliveries ask `extIntVector`; KVM's local APIC ignores ExtINT messages anyway).
 *
 * @module
 */

import { formatIoapicInfo } from "./ioapic_info.ts";
import { MemoryRegion } from "../memory/mod.ts";
import type { IrqLine } from "./irq_line.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** Pins (redirection entries) of the IOAPIC: QEMU's `IOAPIC_NUM_PINS` (a name `kvm/` exports already). */
export const IOAPIC_PINS = 24;
/** Where the PC maps it (QEMU's `IO_APIC_DEFAULT_ADDRESS`). */
export const IOAPIC_DEFAULT_BASE = 0xfec0_0000n;
/** Size of the "ioapic" region. */
export const IOAPIC_REGION_SIZE = 0x1000;
/** QEMU 7.2's default version (the `version` property; 0x11 is the other one it accepts). */
export const IOAPIC_DEFAULT_VERSION = 0x20;
/** MSI address base: the local APICs' interrupt window (QEMU's `APIC_DEFAULT_ADDRESS`). */
export const IOAPIC_MSI_ADDRESS_BASE = 0xfee0_0000;

/** IOREGSEL: the register index. */
export const IOAPIC_IOREGSEL_OFFSET = 0x00;
/** IOWIN: the selected register. */
export const IOAPIC_IOWIN_OFFSET = 0x10;
/** EOI register (version 0x20). */
export const IOAPIC_EOI_OFFSET = 0x40;

/** Register index of the ID register. */
export const IOAPIC_REG_ID = 0x00;
/** Register index of the version register. */
export const IOAPIC_REG_VER = 0x01;
/** Register index of the arbitration register. */
export const IOAPIC_REG_ARB = 0x02;
/** Register index of the low half of redirection entry 0; entry n is at 0x10 + 2n (low), 0x11 + 2n (high). */
export const IOAPIC_REG_REDTBL_BASE = 0x10;

/** Redirection entry bits (82093AA §3.2.4), in the low 32-bit half. */
export const IOAPIC_VECTOR_MASK = 0xff;
/** Delivery mode, bits 10:8: see {@link IoapicDeliveryMode}. */
export const IOAPIC_DELIVERY_MODE_SHIFT = 8;
/** Destination mode: 1 logical, 0 physical. */
export const IOAPIC_DEST_MODE_BIT = 1 << 11;
/** Delivery status (read-only; this model never sets it, as QEMU). */
export const IOAPIC_DELIVERY_STATUS_BIT = 1 << 12;
/** Pin polarity: 1 active low (the model, as QEMU, only stores it). */
export const IOAPIC_POLARITY_BIT = 1 << 13;
/** Remote IRR (read-only): a level interrupt was delivered and not yet EOIed. */
export const IOAPIC_REMOTE_IRR_BIT = 1 << 14;
/** Trigger mode: 1 level, 0 edge. */
export const IOAPIC_TRIGGER_LEVEL_BIT = 1 << 15;
/** Interrupt mask. */
export const IOAPIC_MASKED_BIT = 1 << 16;

/** Delivery modes of a redirection entry (the same numbers go into MSI data bits 10:8). */
export const IoapicDeliveryMode = {
  FIXED: 0,
  LOWEST_PRIORITY: 1,
  SMI: 2,
  NMI: 4,
  INIT: 5,
  EXTINT: 7,
} as const;

/** QEMU's `SUCCESSIVE_IRQ_MAX_COUNT`: EOIs that each re-deliver a level pin before a pause. */
export const IOAPIC_STORM_EOI_COUNT = 10_000;
/** The pause QEMU then takes before re-delivering (`NANOSECONDS_PER_SECOND / 100`), in ms. */
export const IOAPIC_STORM_DELAY_MS = 10;

const RO_BITS = IOAPIC_DELIVERY_STATUS_BIT | IOAPIC_REMOTE_IRR_BIT;
const ID_SHIFT = 24;
const ID_MASK = 0xf;
const VER_ENTRIES_SHIFT = 16;
const PIN_MASK = (1 << IOAPIC_PINS) - 1;

/** An MSI message: a 32-bit write of `data` at `address`. */
export interface IoapicMsiMessage {
  /** Message address (below 4 GiB: the APIC window). */
  address: number;
  /** Message data. */
  data: number;
}

/** One delivery: the pin it came from and its message. */
export interface IoapicDelivery extends IoapicMsiMessage {
  /** The pin (0-23): the GSI whose MSI route carries the same message. */
  pin: number;
}

/** The GSI route of a pin, as QEMU keeps KVM's routes 0-23 in split mode. */
export interface IoapicRoute extends IoapicMsiMessage {
  /** The pin, and the GSI of its route. */
  pin: number;
  /** Whether the entry is masked: QEMU leaves a masked pin's route as it was (see {@link Ioapic.routes}). */
  masked: boolean;
}

/** Options of {@link Ioapic}. */
export interface IoapicOptions {
  /**
   * Sends one interrupt. QEMU in split mode raises GSI `pin` (`kvm_set_irq`, lowered again at once
   * for an edge entry), whose route holds the same message; `KVM_SIGNAL_MSI` with
   * `address`/`data` does the same without the route.
   */
  deliver: (delivery: IoapicDelivery) => void;
  /**
   * Told when a pin's route (message or masked state) changed: after a redirection-entry write,
   * before the delivery it may cause; after a reset if anything changed; always after a load
   * (QEMU's `post_load`). The board updates GSIs 0-23 and commits.
   */
  onRoutesChange?: (routes: readonly IoapicRoute[]) => void;
  /** Version register value: 0x20 (default, with the EOI register) or 0x11. */
  version?: 0x11 | 0x20;
  /** The vector of an ExtINT delivery: the i8259's interrupt acknowledge (QEMU's `pic_read_irq`). */
  extIntVector?: () => number;
  /**
   * Runs `service` after `delayMs` of guest time: the interrupt-storm guard (QEMU's
   * `delayed_ioapic_service_timer`). Without it a storming level pin is re-delivered at once.
   */
  schedule?: (delayMs: number, service: () => void) => void;
}

/**
 * The userspace IOAPIC: region "ioapic" (4 KiB, mapped at 0xfec00000 with priority 0).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
 * import { type IoapicDelivery, Ioapic } from "./ioapic.ts";
 * const system = MemoryRegion.container("system", 1n << 32n);
 * const sent: IoapicDelivery[] = [];
 * const ioapic = new Ioapic({ deliver: (d) => void sent.push(d) });
 * ioapic.map(system);
 * using memory = new AddressSpace(system, "memory");
 * memory.write(0xfec0_0000, 4, 0x01); // IOREGSEL: version
 * assert.equal(memory.read(0xfec0_0010, 4).value, 0x0017_0020n);
 * memory.write(0xfec0_0000, 4, 0x13); // pin 1, high half: destination APIC 1
 * memory.write(0xfec0_0010, 4, 0x0100_0000);
 * memory.write(0xfec0_0000, 4, 0x12); // pin 1, low half: vector 0x31, level, unmasked
 * memory.write(0xfec0_0010, 4, 0x8031);
 * ioapic.setIrq(1, true);
 * assert.deepEqual(sent, [{ pin: 1, address: 0xfee0_1000, data: 0x8031 }]);
 * ioapic.eoi(0x31); // the line is still high: delivered again
 * assert.equal(sent.length, 2);
 * ```
 */
export class Ioapic implements Snapshottable {
  /** Region "ioapic". */
  readonly region: MemoryRegion;
  /** The version register's low byte (0x20 or 0x11). */
  readonly version: number;
  readonly #deliver: (delivery: IoapicDelivery) => void;
  readonly #onRoutesChange: ((routes: readonly IoapicRoute[]) => void) | undefined;
  readonly #extIntVector: (() => number) | undefined;
  readonly #schedule: ((delayMs: number, service: () => void) => void) | undefined;
  /** Low and high halves of the redirection entries. */
  readonly #lo = new Uint32Array(IOAPIC_PINS);
  readonly #hi = new Uint32Array(IOAPIC_PINS);
  /** Successive EOIs that re-delivered each pin (QEMU's `irq_eoi`, not saved). */
  readonly #irqEoi = new Uint32Array(IOAPIC_PINS);
  /** Input statistics (QEMU's `irq_count`/`irq_level`, for `info irq`; not saved). */
  readonly #irqCount = new Array<number>(IOAPIC_PINS).fill(0);
  readonly #irqLevel = new Uint8Array(IOAPIC_PINS);
  #reported: IoapicRoute[] = [];
  #id = 0;
  #ioregsel = 0;
  #irr = 0;
  #delayedPending = false;

  /**
   * An IOAPIC in its reset state (every entry masked).
   *
   * @throws {TypeError} if `deliver` (or a given callback) is not a function.
   * @throws {RangeError} if `version` is not 0x11 or 0x20 (QEMU refuses others too).
   */
  constructor(options: IoapicOptions) {
    if (typeof options.deliver !== "function") throw new TypeError("ioapic: deliver must be a function");
    for (const name of ["onRoutesChange", "extIntVector", "schedule"] as const) {
      if (options[name] !== undefined && typeof options[name] !== "function") {
        throw new TypeError(`ioapic: ${name} must be a function`);
      }
    }
    const version = options.version ?? IOAPIC_DEFAULT_VERSION;
    if (version !== 0x11 && version !== 0x20) {
      throw new RangeError(`ioapic: version 0x${Number(version).toString(16)} is not 0x11 or 0x20`);
    }
    this.version = version;
    this.#deliver = options.deliver;
    this.#onRoutesChange = options.onRoutesChange;
    this.#extIntVector = options.extIntVector;
    this.#schedule = options.schedule;
    // QEMU's ioapic_io_ops: no access constraints, so any size is valid and the core splits 8-byte
    // accesses into two 4-byte ones (the second, at 0x14 or 0x44, hits no register).
    this.region = MemoryRegion.io("ioapic", IOAPIC_REGION_SIZE, {
      read: (offset, size) => this.#read(offset, size),
      write: (offset, value, size) => this.#write(offset, Number(value), size),
      endianness: "little",
    });
    this.#resetState();
    this.#reported = this.routes();
  }

  /** Maps "ioapic" into `system` at `base` (default 0xfec00000), priority 0 as QEMU's `sysbus_mmio_map`. */
  map(system: MemoryRegion, base: bigint = IOAPIC_DEFAULT_BASE): void {
    system.addSubregion(base, this.region);
  }

  /** The APIC ID in the ID register (0-15). */
  get id(): number {
    return this.#id;
  }

  /** IOREGSEL. */
  get ioregsel(): number {
    return this.#ioregsel;
  }

  /** The interrupt request register: bit n set while pin n's request is pending (level: the line is high). */
  get irr(): number {
    return this.#irr;
  }

  /** Redirection entry `pin` as a 64-bit value. */
  entry(pin: number): bigint {
    this.#checkPin(pin, "entry");
    return (BigInt(this.#hi[pin]) << 32n) | BigInt(this.#lo[pin]);
  }

  /** Input statistics as QEMU's `info irq`: rising edges seen on each input (before the 0 → 2 swap). */
  irqCounts(): number[] {
    return [...this.#irqCount];
  }

  /**
   * Input `input` (0-23) goes to `level` (QEMU's `ioapic_set_irq`); input 0 is pin 2.
   *
   * @throws {RangeError} for an input outside 0-23.
   */
  setIrq(input: number, level: boolean | number): void {
    this.#checkPin(input, "setIrq: input");
    const high = level ? 1 : 0;
    if (high !== this.#irqLevel[input]) {
      this.#irqLevel[input] = high;
      if (high) this.#irqCount[input]++;
    }
    const pin = input === 0 ? 2 : input;
    const mask = 1 << pin;
    const lo = this.#lo[pin];
    if (lo & IOAPIC_TRIGGER_LEVEL_BIT) {
      if (high) {
        this.#irr |= mask;
        if (!(lo & IOAPIC_REMOTE_IRR_BIT)) this.#service();
      } else {
        this.#irr &= ~mask;
      }
    } else if (high && !(lo & IOAPIC_MASKED_BIT)) {
      this.#irr |= mask;
      this.#service();
    }
  }

  /** An {@link IrqLine} driving input `input` (for ISA devices and PCI INTx wiring). */
  line(input: number): IrqLine {
    this.#checkPin(input, "line: input");
    return { set: (level) => this.setIrq(input, level) };
  }

  /**
   * The guest EOIed `vector` (QEMU's `ioapic_eoi_broadcast`; `KVM_EXIT_IOAPIC_EOI` in split mode):
   * every level-triggered entry with that vector loses its remote IRR, and one whose line is
   * still high and that is unmasked is delivered again, except that after
   * {@link IOAPIC_STORM_EOI_COUNT} such EOIs in a row the re-delivery waits
   * {@link IOAPIC_STORM_DELAY_MS} (`schedule`).
   */
  eoi(vector: number): void {
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const lo = this.#lo[pin];
      if ((lo & IOAPIC_VECTOR_MASK) !== vector || !(lo & IOAPIC_TRIGGER_LEVEL_BIT)) continue;
      if (!(lo & IOAPIC_REMOTE_IRR_BIT)) continue;
      this.#lo[pin] = lo & ~IOAPIC_REMOTE_IRR_BIT;
      if (!(lo & IOAPIC_MASKED_BIT) && this.#irr & (1 << pin)) {
        if (++this.#irqEoi[pin] >= IOAPIC_STORM_EOI_COUNT && this.#schedule !== undefined) {
          this.#irqEoi[pin] = 0;
          if (!this.#delayedPending) {
            this.#delayedPending = true;
            this.#schedule(IOAPIC_STORM_DELAY_MS, () => {
              this.#delayedPending = false;
              this.#service();
            });
          }
        } else {
          if (this.#irqEoi[pin] >= IOAPIC_STORM_EOI_COUNT) this.#irqEoi[pin] = 0;
          this.#service();
        }
      } else {
        this.#irqEoi[pin] = 0;
      }
    }
  }

  /**
   * The 24 pins' MSI messages, as GSI routes 0-23. QEMU in split mode updates only the unmasked
   * pins' routes (a masked pin keeps its last route, first address 0 data 0) and then commits
   * (`kvm_irqchip_update_msi_route` for each, `kvm_irqchip_commit_routes`); a board doing the same
   * skips the entries with `masked` set.
   */
  routes(): IoapicRoute[] {
    const routes: IoapicRoute[] = [];
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const lo = this.#lo[pin];
      routes.push({
        pin,
        ...this.#message(pin, lo & IOAPIC_VECTOR_MASK),
        masked: (lo & IOAPIC_MASKED_BIT) !== 0,
      });
    }
    return routes;
  }

  /** Power-on state (QEMU's `ioapic_reset_common`): ID 0, IOREGSEL 0, IRR 0, every entry masked (0x10000). */
  reset(): void {
    this.#resetState();
    this.#routesMayHaveChanged(false);
  }

  /**
   * The state as QEMU's HMP `info pic` prints an IOAPIC (`ioapic_print_redtbl`): version, ID,
   * IOREGSEL, one line per pin, then IRR and remote IRR.
   */
  info(): string {
    return formatIoapicInfo({
      version: this.version,
      id: this.#id,
      ioregsel: this.#ioregsel,
      irr: this.#irr,
      entries: Array.from({ length: IOAPIC_PINS }, (_, pin) => this.entry(pin)),
    });
  }

  /**
   * QEMU's vmstate "ioapic" (version 3): `id`, `ioregsel`, `irr` and the 24 entries (`ioredtbl`,
   * bigints), with the `version` this device was built with (QEMU's property, checked on load).
   * The storm counters and a pending delayed service are not saved (QEMU does not migrate them).
   */
  saveState(): StateObject {
    return {
      version: this.version,
      id: this.#id,
      ioregsel: this.#ioregsel,
      irr: this.#irr,
      ioredtbl: Array.from({ length: IOAPIC_PINS }, (_, pin) => this.entry(pin)),
    };
  }

  /**
   * Puts a {@link saveState} result back, then reports every route (QEMU's `post_load` →
   * `ioapic_update_kvm_routes`); nothing is delivered.
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of
   * range, `version` differs from this device's, or an entry holds a state no guest can produce
   * (delivery status set, remote IRR on an edge entry); the device is then unchanged.
   */
  loadState(state: StateObject): void {
    const r = new StateReader("ioapic", state);
    const version = r.u8("version");
    if (version !== this.version) {
      r.fail("version", `is 0x${version.toString(16)}, this IOAPIC's is 0x${this.version.toString(16)}`);
    }
    const id = r.int("id", 0, ID_MASK);
    const ioregsel = r.u8("ioregsel");
    const irr = r.bits("irr", PIN_MASK);
    r.array("ioredtbl", { length: IOAPIC_PINS });
    const table = new StateReader("ioapic", state.ioredtbl, "ioredtbl");
    const lo = new Uint32Array(IOAPIC_PINS);
    const hi = new Uint32Array(IOAPIC_PINS);
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const entry = table.bigint(pin);
      lo[pin] = Number(entry & 0xffff_ffffn);
      hi[pin] = Number(entry >> 32n);
      if (lo[pin] & IOAPIC_DELIVERY_STATUS_BIT) table.fail(pin, "has delivery status (bit 12) set");
      if ((lo[pin] & (IOAPIC_REMOTE_IRR_BIT | IOAPIC_TRIGGER_LEVEL_BIT)) === IOAPIC_REMOTE_IRR_BIT) {
        table.fail(pin, "has remote IRR (bit 14) set on an edge-triggered entry");
      }
    }
    this.#id = id;
    this.#ioregsel = ioregsel;
    this.#irr = irr;
    this.#lo.set(lo);
    this.#hi.set(hi);
    this.#irqEoi.fill(0);
    this.#routesMayHaveChanged(true);
  }

  #resetState(): void {
    this.#id = 0;
    this.#ioregsel = 0;
    this.#irr = 0;
    this.#lo.fill(IOAPIC_MASKED_BIT);
    this.#hi.fill(0);
  }

  #checkPin(pin: number, what: string): void {
    if (!Number.isInteger(pin) || pin < 0 || pin >= IOAPIC_PINS) {
      throw new RangeError(`ioapic ${what} ${pin} is not 0-${IOAPIC_PINS - 1}`);
    }
  }

  /** The MSI message of entry `pin` with `vector` (QEMU's `ioapic_entry_parse`). */
  #message(pin: number, vector: number): IoapicMsiMessage {
    const lo = this.#lo[pin];
    const destIdx = this.#hi[pin] >>> 16; // destination ID [63:56] and bits [55:48]
    const destMode = (lo >> 11) & 1;
    const address = (IOAPIC_MSI_ADDRESS_BASE | (destIdx << 4) | (destMode << 2)) >>> 0;
    const deliveryMode = (lo >> IOAPIC_DELIVERY_MODE_SHIFT) & 7;
    const trigger = (lo >> 15) & 1;
    return { address, data: (vector | (deliveryMode << 8) | (trigger << 15)) >>> 0 };
  }

  /** Delivers every pending, unmasked pin, lowest first (QEMU's `ioapic_service`). */
  #service(): void {
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const mask = 1 << pin;
      if (!(this.#irr & mask)) continue;
      const lo = this.#lo[pin];
      if (lo & IOAPIC_MASKED_BIT) continue;
      if (lo & IOAPIC_TRIGGER_LEVEL_BIT) {
        if (lo & IOAPIC_REMOTE_IRR_BIT) continue; // the guest is still handling the last one
        this.#lo[pin] = lo | IOAPIC_REMOTE_IRR_BIT;
      } else {
        this.#irr &= ~mask;
      }
      const extInt = ((lo >> IOAPIC_DELIVERY_MODE_SHIFT) & 7) === IoapicDeliveryMode.EXTINT;
      const vector = extInt && this.#extIntVector ? this.#extIntVector() & 0xff : lo & IOAPIC_VECTOR_MASK;
      this.#deliver({ pin, ...this.#message(pin, vector) });
    }
  }

  /** Reports the routes if they differ from the last report (or always, `force`). */
  #routesMayHaveChanged(force: boolean): void {
    const routes = this.routes();
    const same = routes.every((r, i) => {
      const old = this.#reported[i];
      return r.address === old.address && r.data === old.data && r.masked === old.masked;
    });
    if (same && !force) return;
    this.#reported = routes;
    this.#onRoutesChange?.(routes.map((r) => ({ ...r })));
  }

  #read(offset: number, size: number): number {
    offset &= 0xff;
    if (offset === IOAPIC_IOREGSEL_OFFSET) return this.#ioregsel;
    if (offset !== IOAPIC_IOWIN_OFFSET || size !== 4) return 0;
    const sel = this.#ioregsel;
    if (sel === IOAPIC_REG_ID || sel === IOAPIC_REG_ARB) return (this.#id << ID_SHIFT) >>> 0;
    if (sel === IOAPIC_REG_VER) return this.version | ((IOAPIC_PINS - 1) << VER_ENTRIES_SHIFT);
    const pin = (sel - IOAPIC_REG_REDTBL_BASE) >> 1;
    if (pin < 0 || pin >= IOAPIC_PINS) return 0;
    return sel & 1 ? this.#hi[pin] : this.#lo[pin];
  }

  #write(offset: number, value: number, size: number): void {
    offset &= 0xff;
    if (offset === IOAPIC_IOREGSEL_OFFSET) {
      this.#ioregsel = value & 0xff;
    } else if (offset === IOAPIC_IOWIN_OFFSET && size === 4) {
      const sel = this.#ioregsel;
      if (sel === IOAPIC_REG_ID) {
        this.#id = (value >>> ID_SHIFT) & ID_MASK;
        return;
      }
      const pin = (sel - IOAPIC_REG_REDTBL_BASE) >> 1;
      if (pin < 0 || pin >= IOAPIC_PINS) return; // version, arbitration, nothing
      if (sel & 1) {
        this.#hi[pin] = value >>> 0;
      } else {
        let lo = (value & ~RO_BITS) | (this.#lo[pin] & RO_BITS);
        if (!(lo & IOAPIC_TRIGGER_LEVEL_BIT)) lo &= ~IOAPIC_REMOTE_IRR_BIT; // ioapic_fix_edge_remote_irr
        this.#lo[pin] = lo >>> 0;
      }
      this.#irqEoi[pin] = 0;
      // QEMU 8.0 (commit "Update KVM routes before redelivering IRQ, on RTE update") updates the
      // routes before servicing; 7.2 did it after every write, so a re-delivery could take a stale route.
      this.#routesMayHaveChanged(false);
      this.#service();
    } else if (offset === IOAPIC_EOI_OFFSET && size === 4 && this.version === 0x20) {
      this.eoi(value >>> 0);
    }
  }
}
