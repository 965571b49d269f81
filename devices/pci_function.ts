/**
 * A conventional PCI function with base address registers, a capability list and an INTx pin, as
 * QEMU 7.2's `hw/pci/pci.c` models every device:
 *
 * - BARs (`pci_register_bar`): 32-bit memory, 64-bit memory (two registers) or I/O, optionally
 *   prefetchable. The register's writable bits are `~(size - 1)`, so writing all-ones and reading
 *   back gives the size mask plus the type bits (the sizing protocol).
 * - Mapping (`pci_update_mappings` / `pci_bar_address`): after every configuration write that
 *   touches the BARs or the command register, each BAR's region is placed at its address in the
 *   bus's memory or I/O container with priority 1, moved, or removed. A BAR is unmapped while its
 *   decode bit (command bit 0 for I/O, bit 1 for memory) is clear, and when its address is 0, wraps,
 *   ends at or past 4 GiB − 1 (I/O, and 32-bit memory), or ends at 2^64 − 1 (64-bit memory: the
 *   all-ones value a guest writes while sizing).
 * - Capabilities (`pci_add_capability`): placed at the first free run of bytes from 0x40 (each
 *   taking its size rounded up to 4), linked at the head of the list at 0x34, status bit
 *   CAP_LIST set, read-only to the guest unless the capability opens bits.
 * - INTx (`pci_set_irq`): the level shows in status bit 3 and drives the pin unless the command
 *   register's INTx-disable bit is set.
 *
 * The expansion ROM BAR is not modelled (no device here has one).
 *
 * @module
 */

import { type MemoryRegion, transaction } from "../memory/mod.ts";
import { type IrqLine, IrqOutput } from "./irq_line.ts";
import { PCI_CONFIG_HEADER_SIZE, PCI_CONFIG_SPACE_SIZE, PciConfig, PciConfigSpace } from "./pci_device.ts";
import type { PciDevice, PciIdentity } from "./pci_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** Offset of BAR 0; BAR n is at `0x10 + 4n`. */
export const PCI_BAR0_OFFSET = 0x10;
/** Number of BARs of a type-0 header. */
export const PCI_BAR_COUNT = 6;
/** The capability pointer. */
export const PCI_CAPABILITY_LIST_OFFSET = 0x34;

/** Command register bits. */
export const PciCommand = {
  /** I/O space decode enable. */
  IO: 0x0001,
  /** Memory space decode enable. */
  MEMORY: 0x0002,
  /** Bus master enable (DMA and MSI writes). */
  MASTER: 0x0004,
  /** INTx disable. */
  INTX_DISABLE: 0x0400,
} as const;

/** Status register bits. */
export const PciStatus = {
  /** An INTx interrupt is pending (whether or not INTx is disabled). */
  INTERRUPT: 0x0008,
  /** The function has a capability list. */
  CAP_LIST: 0x0010,
} as const;

/** Type bits of a BAR's low register, as {@link PciFunction.registerBar} takes them (QEMU's names). */
export const PciBarType = {
  /** A 32-bit memory BAR (no bits set). */
  MEMORY: 0x0,
  /** I/O space (bit 0). */
  IO: 0x1,
  /** A 64-bit memory BAR, taking two registers (bits 2:1 = 10). */
  MEMORY_64: 0x4,
  /** Prefetchable memory (bit 3). */
  PREFETCH: 0x8,
} as const;

/** QEMU's `PCI_BAR_UNMAPPED`: the address of a BAR that is not mapped. */
const UNMAPPED = (1n << 64n) - 1n;
const UINT32_MAX = 0xffff_ffffn;

/** Containers a function's BARs are mapped into: the bus's memory space and I/O space. */
export interface PciBusSpaces {
  /** Memory BARs go here (the board's `pci` container). */
  memory: MemoryRegion;
  /** I/O BARs go here (the board's `io` region). */
  io: MemoryRegion;
}

/** Options of {@link PciFunction}. */
export interface PciFunctionOptions extends PciIdentity {
  /** Where BARs are mapped. */
  bus: PciBusSpaces;
  /** INTx pin: 0 none (default), 1–4 INTA#–INTD#. */
  interruptPin?: number;
  /** The line INTx drives (default: none). */
  irq?: IrqLine;
  /** The name device-state errors carry (default `pci-<vendor>:<device>`); the board may set a better one. */
  stateName?: string;
}

interface Bar {
  readonly region: MemoryRegion;
  readonly type: number;
  readonly size: bigint;
  /** Mapped address, or UNMAPPED. */
  addr: bigint;
  /** When it was last mapped (a counter): of two overlapping BARs, the later one shows. */
  mappedAt: number;
}

/**
 * A PCI function with BARs, capabilities and INTx; device models extend it (or hold one) and add
 * their registers. Configuration writes follow `pci_default_write_config`; listeners added with
 * {@link PciFunction.onConfigWrite} run after it, as QEMU runs `msix_write_config`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { PciBarType, PciFunction } from "./pci_function.ts";
 * const bus = { memory: MemoryRegion.container("pci", 1n << 64n), io: MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS) };
 * const fn = new PciFunction({ vendorId: 0x1234, deviceId: 0x5678, classCode: 0xff0000, bus });
 * const mmio = MemoryRegion.io("regs", 0x1000, { read: () => 0x55 });
 * fn.registerBar(0, mmio, PciBarType.MEMORY);
 * fn.writeConfig(0x10, 0xffff_ffff, 4); // sizing
 * assert.equal(fn.readConfig(0x10, 4), 0xffff_f000);
 * fn.writeConfig(0x10, 0xfebf_1000, 4);
 * fn.writeConfig(0x04, 0x0002, 2); // memory decode on
 * assert.equal(mmio.container, bus.memory);
 * assert.equal(fn.barAddress(0), 0xfebf_1000n);
 * ```
 */
export class PciFunction implements PciDevice, Snapshottable {
  /** The configuration space. */
  readonly config: PciConfigSpace;
  /** Where BARs are mapped. */
  readonly bus: PciBusSpaces;
  /** The name device-state errors carry, such as `virtio-blk@00:03.0` (a board may rename it). */
  stateName: string;
  readonly #bars: (Bar | undefined)[] = new Array(PCI_BAR_COUNT).fill(undefined);
  /** Bytes taken by capabilities (QEMU's `used`). */
  readonly #used = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  readonly #writeListeners: ((offset: number, size: number) => void)[] = [];
  readonly #resetListeners: (() => void)[] = [];
  readonly #intx: IrqOutput;
  #irqState = false;
  #mapCount = 0;

  /**
   * A function with `identity`, no BARs and no capabilities.
   *
   * @throws {TypeError} if `bus` lacks its memory or I/O container.
   * @throws {RangeError} if `interruptPin` is not 0–4.
   */
  constructor(options: PciFunctionOptions) {
    if (!options.bus || typeof options.bus !== "object" || !options.bus.memory || !options.bus.io) {
      throw new TypeError("PciFunction: bus must give the memory and I/O containers");
    }
    const pin = options.interruptPin ?? 0;
    if (!Number.isInteger(pin) || pin < 0 || pin > 4) {
      throw new RangeError(`PciFunction: interrupt pin ${pin} is not 0–4`);
    }
    this.config = new PciConfigSpace(options);
    this.config.bytes[PciConfig.INTERRUPT_PIN] = pin;
    this.bus = options.bus;
    this.#intx = new IrqOutput(options.irq);
    const hex = (v: number) => v.toString(16).padStart(4, "0");
    this.stateName = options.stateName ?? `pci-${hex(options.vendorId)}:${hex(options.deviceId)}`;
  }

  // ------------------------------------------------------------------ BARs

  /**
   * Declares BAR `index` backed by `region` (QEMU's `pci_register_bar`): the register holds the
   * type bits, its writable bits become `~(size - 1)`. A 64-bit BAR also takes register `index + 1`.
   *
   * @throws {RangeError} if `index` is not 0–5 (0–4 for 64-bit), the size is not a power of two (at
   *   least 4 for I/O, 16 for memory; I/O at most 4 GiB, 32-bit memory at most 2 GiB), the type has
   *   unknown bits, or the register(s) are taken.
   */
  registerBar(index: number, region: MemoryRegion, type: number): void {
    const io = (type & PciBarType.IO) !== 0;
    const is64 = !io && (type & PciBarType.MEMORY_64) !== 0;
    const known = io ? PciBarType.IO : PciBarType.MEMORY_64 | PciBarType.PREFETCH;
    if (!Number.isInteger(type) || (type & ~known) !== 0) {
      throw new RangeError(`PCI BAR ${index}: type 0x${type.toString(16)} has unknown bits`);
    }
    if (!Number.isInteger(index) || index < 0 || index >= PCI_BAR_COUNT - (is64 ? 1 : 0)) {
      throw new RangeError(`PCI BAR ${index} is not 0–${PCI_BAR_COUNT - (is64 ? 2 : 1)}`);
    }
    const size = region.size;
    const min = io ? 4n : 16n;
    const max = is64 ? 1n << 63n : io ? 1n << 32n : 1n << 31n;
    if (size < min || size > max || (size & (size - 1n)) !== 0n) {
      throw new RangeError(
        `PCI BAR ${index} ("${region.name}"): size 0x${size.toString(16)} is not a power of two in 0x${
          min.toString(16)
        }–0x${max.toString(16)}`,
      );
    }
    if (this.#bars[index] || (is64 && this.#bars[index + 1]) || this.#isHighHalf(index)) {
      throw new RangeError(`PCI BAR ${index} is already registered`);
    }
    this.#bars[index] = { region, type, size, addr: UNMAPPED, mappedAt: 0 };
    const at = PCI_BAR0_OFFSET + 4 * index;
    const wmask = BigInt.asUintN(64, ~(size - 1n));
    const bytes = is64 ? 8 : 4;
    for (let i = 0; i < bytes; i++) {
      this.config.bytes[at + i] = i === 0 ? type : 0;
      this.config.wmask[at + i] = Number((wmask >> BigInt(8 * i)) & 0xffn);
    }
  }

  #isHighHalf(index: number): boolean {
    const low = index > 0 ? this.#bars[index - 1] : undefined;
    return low !== undefined && (low.type & (PciBarType.IO | PciBarType.MEMORY_64)) === PciBarType.MEMORY_64;
  }

  /** The address BAR `index` is mapped at, or `undefined` while it is not mapped (or not registered). */
  barAddress(index: number): bigint | undefined {
    const bar = this.#bars[index];
    return bar && bar.addr !== UNMAPPED ? bar.addr : undefined;
  }

  /** The region of BAR `index`, if registered. */
  barRegion(index: number): MemoryRegion | undefined {
    return this.#bars[index]?.region;
  }

  /**
   * QEMU's `pci_bar_address`: where BAR `index` should be mapped given the configuration space now,
   * or UNMAPPED.
   */
  #barTarget(index: number, bar: Bar): bigint {
    const command = this.command;
    const at = PCI_BAR0_OFFSET + 4 * index;
    const size = bar.size;
    if (bar.type & PciBarType.IO) {
      if (!(command & PciCommand.IO)) return UNMAPPED;
      const addr = BigInt(this.config.read(at, 4)) & ~(size - 1n);
      const last = addr + size - 1n;
      // A 32-bit BAR must not wrap or reach 4 GiB − 1; 0 means "not assigned" on the PC.
      return addr === 0n || last >= UINT32_MAX ? UNMAPPED : addr;
    }
    if (!(command & PciCommand.MEMORY)) return UNMAPPED;
    const is64 = (bar.type & PciBarType.MEMORY_64) !== 0;
    let addr = BigInt(this.config.read(at, 4));
    if (is64) addr |= BigInt(this.config.read(at + 4, 4)) << 32n;
    addr &= ~(size - 1n);
    const last = addr + size - 1n;
    if (addr === 0n || last >= UNMAPPED) return UNMAPPED;
    if (!is64 && last >= UINT32_MAX) return UNMAPPED;
    return addr;
  }

  /** QEMU's `pci_update_mappings`: each BAR whose target changed is removed and re-added. */
  updateMappings(): void {
    for (let i = 0; i < PCI_BAR_COUNT; i++) {
      const bar = this.#bars[i];
      if (bar && this.#barTarget(i, bar) !== bar.addr) this.#place(i, bar);
    }
  }

  /** Removes BAR `i` from its container if mapped and adds it again where the config says, if anywhere. */
  #place(i: number, bar: Bar): void {
    const space = bar.type & PciBarType.IO ? this.bus.io : this.bus.memory;
    if (bar.addr !== UNMAPPED) space.removeSubregion(bar.region);
    bar.addr = this.#barTarget(i, bar);
    if (bar.addr === UNMAPPED) return;
    space.addSubregionOverlap(bar.addr, bar.region, 1);
    bar.mappedAt = ++this.#mapCount;
  }

  /** The mapped BARs' indices, the one mapped longest ago first (the order overlapping BARs stack in). */
  #mappedOrder(): number[] {
    const mapped = [...this.#bars.keys()].filter((i) => this.#bars[i] && this.#bars[i].addr !== UNMAPPED);
    return mapped.sort((i, j) => this.#bars[i]!.mappedAt - this.#bars[j]!.mappedAt);
  }

  /**
   * Maps every BAR where the configuration space says, re-adding the mapped ones in `order` (then
   * any other in index order), so that overlapping BARs stack as they did when the state was saved.
   */
  #remapInOrder(order: readonly number[]): void {
    const rest = [...this.#bars.keys()].filter((i) => !order.includes(i));
    for (const i of [...order, ...rest]) {
      const bar = this.#bars[i];
      if (bar) this.#place(i, bar);
    }
  }

  // ------------------------------------------------------------------ capabilities

  /**
   * Adds a capability of `size` bytes with ID `id` (QEMU's `pci_add_capability`): at `offset`, or at
   * the first free run of bytes from 0x40 when `offset` is 0. It becomes the head of the list. Its
   * bytes are read-only to the guest until the caller opens bits in `config.wmask`. Returns its offset.
   *
   * @throws {RangeError} if `id` is not a byte, `size` is not 2–192, no room is left, or `offset`
   *   overlaps the header or another capability or is not dword-aligned.
   */
  addCapability(id: number, size: number, offset = 0): number {
    if (!Number.isInteger(id) || id < 0 || id > 0xff) {
      throw new RangeError(`PCI capability ID ${id} is not a byte`);
    }
    const room = PCI_CONFIG_SPACE_SIZE - PCI_CONFIG_HEADER_SIZE;
    if (!Number.isInteger(size) || size < 2 || size > room) {
      throw new RangeError(`PCI capability 0x${id.toString(16)}: size ${size} is not 2–${room}`);
    }
    if (offset === 0) {
      offset = this.#findSpace(size);
      if (offset === 0) {
        throw new RangeError(`PCI capability 0x${id.toString(16)}: no room for ${size} bytes`);
      }
    } else if (
      !Number.isInteger(offset) || offset < PCI_CONFIG_HEADER_SIZE || (offset & 3) !== 0 ||
      offset + size > PCI_CONFIG_SPACE_SIZE || this.#used.subarray(offset, offset + size).some((b) => b !== 0)
    ) {
      throw new RangeError(
        `PCI capability 0x${id.toString(16)}: offset 0x${offset.toString(16)} is not free`,
      );
    }
    const bytes = this.config.bytes;
    bytes[offset] = id;
    bytes[offset + 1] = bytes[PCI_CAPABILITY_LIST_OFFSET];
    bytes[PCI_CAPABILITY_LIST_OFFSET] = offset;
    bytes[PciConfig.STATUS] |= PciStatus.CAP_LIST;
    this.#used.fill(0xff, offset, Math.min(offset + ((size + 3) & ~3), PCI_CONFIG_SPACE_SIZE));
    this.config.wmask.fill(0, offset, offset + size);
    return offset;
  }

  /** QEMU's `pci_find_space`: the first run of `size` unused bytes from 0x40, or 0. */
  #findSpace(size: number): number {
    let offset = PCI_CONFIG_HEADER_SIZE;
    for (let i = PCI_CONFIG_HEADER_SIZE; i < PCI_CONFIG_SPACE_SIZE; i++) {
      if (this.#used[i]) offset = i + 1;
      else if (i - offset + 1 === size) return offset;
    }
    return 0;
  }

  /** Offsets of the capabilities with ID `id` (every one when `id` is omitted), in list order. */
  capabilities(id?: number): number[] {
    const out: number[] = [];
    if (!(this.config.bytes[PciConfig.STATUS] & PciStatus.CAP_LIST)) return out;
    const seen = new Set<number>();
    for (let at = this.config.bytes[PCI_CAPABILITY_LIST_OFFSET]; at !== 0 && !seen.has(at);) {
      seen.add(at);
      if (id === undefined || this.config.bytes[at] === id) out.push(at);
      at = this.config.bytes[at + 1];
    }
    return out;
  }

  // ------------------------------------------------------------------ command, INTx

  /** The command register. */
  get command(): number {
    return this.config.read(PciConfig.COMMAND, 2);
  }

  /** Whether the function may master the bus (DMA, MSI writes). */
  get busMaster(): boolean {
    return (this.command & PciCommand.MASTER) !== 0;
  }

  /** Sets the INTx level (QEMU's `pci_set_irq`); ignored by a function without an interrupt pin. */
  setIrq(level: boolean): void {
    if (this.config.bytes[PciConfig.INTERRUPT_PIN] === 0) return;
    this.#irqState = level;
    if (level) this.config.bytes[PciConfig.STATUS] |= PciStatus.INTERRUPT;
    else this.config.bytes[PciConfig.STATUS] &= ~PciStatus.INTERRUPT;
    this.#driveIntx();
  }

  /** The INTx level the function asserts (before INTx disable). */
  get irqLevel(): boolean {
    return this.#irqState;
  }

  #driveIntx(): void {
    this.#intx.update(this.#irqState && !(this.command & PciCommand.INTX_DISABLE));
  }

  // ------------------------------------------------------------------ device state

  /**
   * The whole configuration space (BARs, command register, capabilities), the INTx level the
   * function asserts, and the order its mapped BARs were mapped in (`barOrder`). Subclasses add their
   * own fields next to these.
   *
   * `barOrder` is ours: QEMU's migration re-maps BARs in index order, so a guest that made two BARs
   * overlap can find the other one on top after a restore; here the one it mapped last stays on top.
   */
  saveState(): StateObject {
    return { config: this.config.bytes.slice(), intx: this.#irqState, barOrder: this.#mappedOrder() };
  }

  /**
   * Puts a {@link saveState} result back: the configuration space, then the BARs mapped where it says
   * (as QEMU's `pci_update_mappings`, in one memory transaction, stacked in the saved order) and INTx
   * re-driven.
   *
   * @throws {DeviceStateError} naming the field if one is missing or of the wrong type, or if the saved
   * configuration space differs from this function's in a read-only bit (another device's state); the
   * function is then unchanged.
   */
  loadState(state: StateObject): void {
    this.preparePciState(new StateReader(this.stateName, state))();
  }

  /**
   * Checks the PCI part of a saved state (`config`, `intx`) and returns the function that applies it,
   * so a subclass can check all of its own fields before anything changes.
   */
  protected preparePciState(r: StateReader): () => void {
    // status.INTERRUPT follows the INTx level, which the device (not the guest) sets.
    const config = this.config.readSaved(r, "config", new Map([[PciConfig.STATUS, PciStatus.INTERRUPT]]));
    const intx = r.bool("intx");
    if (intx && this.config.bytes[PciConfig.INTERRUPT_PIN] === 0) {
      r.fail("intx", "is set on a function without a pin");
    }
    const barOrder = r.ints("barOrder", 0, PCI_BAR_COUNT - 1, { maxLength: PCI_BAR_COUNT });
    barOrder.forEach((index, i) => {
      if (!this.#bars[index]) r.fail("barOrder", `names BAR ${index}, which this function does not have`);
      if (barOrder.indexOf(index) !== i) r.fail("barOrder", `names BAR ${index} twice`);
    });
    return () => {
      transaction(() => {
        this.config.bytes.set(config);
        this.#remapInOrder(barOrder);
      });
      this.#irqState = intx;
      this.#driveIntx();
    };
  }

  // ------------------------------------------------------------------ config access

  /** Runs `listener(offset, size)` after every configuration write (for capabilities like MSI-X). */
  onConfigWrite(listener: (offset: number, size: number) => void): void {
    this.#writeListeners.push(listener);
  }

  /** Runs `listener` at the end of every {@link reset} (for capabilities like MSI-X). */
  onReset(listener: () => void): void {
    this.#resetListeners.push(listener);
  }

  /** A configuration read. */
  readConfig(offset: number, size: number): number {
    return this.config.read(offset, size);
  }

  /**
   * A configuration write (QEMU's `pci_default_write_config`): masked bytes, then the mappings
   * when BARs or the command register changed, INTx when the command register changed, then the
   * write listeners.
   */
  writeConfig(offset: number, value: number, size: number): void {
    this.config.write(offset, value, size);
    const end = offset + size;
    const touches = (start: number, length: number) => offset < start + length && start < end;
    if (touches(PCI_BAR0_OFFSET, 4 * PCI_BAR_COUNT) || touches(PciConfig.COMMAND, 2)) this.updateMappings();
    if (touches(PciConfig.COMMAND, 2)) this.#driveIntx();
    for (const listener of this.#writeListeners) listener(offset, size);
  }

  /**
   * PCI reset (QEMU's `pci_do_device_reset`): the header's writable bits clear, BARs hold only
   * their type bits (so every BAR is unmapped), INTx drops, then the reset listeners run.
   */
  reset(): void {
    this.config.resetHeader();
    for (let i = 0; i < PCI_BAR_COUNT; i++) {
      const bar = this.#bars[i];
      if (!bar) continue;
      const at = PCI_BAR0_OFFSET + 4 * i;
      const bytes = (bar.type & (PciBarType.IO | PciBarType.MEMORY_64)) === PciBarType.MEMORY_64 ? 8 : 4;
      this.config.bytes.fill(0, at, at + bytes);
      this.config.bytes[at] = bar.type;
    }
    this.updateMappings();
    this.setIrq(false);
    this.#driveIntx();
    for (const listener of this.#resetListeners) listener();
  }
}
