/**
 * MSI-X for a {@link PciFunction}, as QEMU 7.2's `hw/pci/msix.c`: the 12-byte capability (message
 * control with the enable and function-mask bits, table and PBA locations), the vector table
 * ("msix-table", 16 bytes a vector: address low, address high, data, vector control) and the pending
 * bit array ("msix-pba", one bit a vector, in 64-bit words) as I/O regions inside a BAR.
 *
 * A vector is masked while MSI-X is disabled, the function mask is set, or its own mask bit is set;
 * {@link Msix.notify} on a masked vector sets its pending bit instead of sending, and unmasking a
 * pending vector sends it then (`msix_handle_mask_update`). Messages are sent only while the function
 * is bus master (QEMU writes them through the bus-master address space, which is off otherwise).
 *
 * Not modelled: QEMU's per-vector use counts (`msix_vector_use`); every vector below the table size
 * may fire.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { PciBarType, type PciFunction } from "./pci_function.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** Capability ID of MSI-X. */
export const PCI_CAP_ID_MSIX = 0x11;
/** Length of the MSI-X capability. */
export const MSIX_CAP_SIZE = 12;
/** Bytes of one table entry. */
export const MSIX_ENTRY_SIZE = 16;
/** Most vectors a function may have. */
export const MSIX_MAX_VECTORS = 2048;
/** Message control: MSI-X enable (bit 15). */
export const MSIX_ENABLE_BIT = 0x8000;
/** Message control: function mask (bit 14). */
export const MSIX_MASKALL_BIT = 0x4000;
/** Vector control: the vector's mask bit. */
export const MSIX_VECTOR_MASK_BIT = 0x1;
/** Size of the BAR {@link Msix.exclusiveBar} creates (QEMU's `msix_init_exclusive_bar`, up to 128 vectors). */
export const MSIX_EXCLUSIVE_BAR_SIZE = 0x1000;
/** Offset of the PBA in that BAR. */
export const MSIX_EXCLUSIVE_PBA_OFFSET = 0x800;

/** A vector's message and whether it is masked, as the KVM layer needs it for GSI routing. */
export interface MsixVectorState {
  /** Message address (64-bit). */
  address: bigint;
  /** Message data. */
  data: number;
  /** Whether the vector is masked (by its own bit, the function mask, or MSI-X being disabled). */
  masked: boolean;
}

/** Options of {@link Msix}. */
export interface MsixOptions {
  /** Number of vectors, 1–2048. */
  vectors: number;
  /** The region of the BAR that holds the table and the PBA (their regions are added to it). */
  bar: MemoryRegion;
  /** Index of that BAR. */
  barIndex: number;
  /** Offset of the table in the BAR (8-byte aligned). */
  tableOffset: number;
  /** Offset of the PBA in the BAR (8-byte aligned). */
  pbaOffset: number;
  /** Sends a message: a 32-bit write of `data` at `address` (the board's MSI path, or KVM_SIGNAL_MSI). */
  deliver: (address: bigint, data: number) => void;
  /**
   * Told whenever a vector's address, data or masked state changes (for GSI routing and irqfd).
   * Not called at construction; every vector starts masked with address 0 and data 0.
   */
  onVectorChange?: (vector: number, state: MsixVectorState) => void;
}

/**
 * MSI-X of one function.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { Msix } from "./msix.ts";
 * import { PciFunction } from "./pci_function.ts";
 * const bus = { memory: MemoryRegion.container("pci", 1n << 64n), io: MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS) };
 * const fn = new PciFunction({ vendorId: 0x1af4, deviceId: 0x1044, classCode: 0xff0000, bus });
 * const sent: string[] = [];
 * const msix = Msix.exclusiveBar(fn, { name: "demo", vectors: 2, barIndex: 1, deliver: (a, d) => sent.push(`${a.toString(16)}:${d}`) });
 * using memory = new AddressSpace(bus.memory, "memory");
 * fn.writeConfig(0x14, 0xfebf_1000, 4);
 * fn.writeConfig(0x04, 0x6, 2); // memory decode, bus master
 * memory.write(0xfebf_1000, 4, 0xfee0_0000); // vector 0: address
 * memory.write(0xfebf_1008, 4, 0x41); // data
 * memory.write(0xfebf_100c, 4, 0); // unmask the vector
 * fn.writeConfig(msix.capability + 2, 0x8000, 2); // MSI-X enable
 * msix.notify(0);
 * assert.deepEqual(sent, ["fee00000:65"]);
 * ```
 */
export class Msix implements Snapshottable {
  /** Offset of the capability in configuration space. */
  readonly capability: number;
  /** Number of vectors. */
  readonly vectors: number;
  /** Region "msix-table". */
  readonly tableRegion: MemoryRegion;
  /** Region "msix-pba". */
  readonly pbaRegion: MemoryRegion;
  readonly #fn: PciFunction;
  readonly #table: Uint8Array;
  readonly #tableView: DataView;
  readonly #pba: Uint8Array;
  readonly #deliver: (address: bigint, data: number) => void;
  readonly #onVectorChange: ((vector: number, state: MsixVectorState) => void) | undefined;
  /** Last state reported to onVectorChange, per vector. */
  readonly #reported: MsixVectorState[];
  #functionMasked = true;

  /**
   * MSI-X for `fn` (QEMU's `msix_init`): adds the capability, maps the table and PBA regions into
   * `bar`, masks every vector.
   *
   * @throws {RangeError} if `vectors` is not 1–2048, an offset is not 8-byte aligned or the table or
   *   PBA does not fit in the BAR region, or the capability does not fit.
   * @throws {TypeError} if `deliver` is not a function.
   */
  constructor(fn: PciFunction, options: MsixOptions) {
    const { vectors, bar, barIndex, tableOffset, pbaOffset } = options;
    if (!Number.isInteger(vectors) || vectors < 1 || vectors > MSIX_MAX_VECTORS) {
      throw new RangeError(`MSI-X: ${vectors} vectors is not 1–${MSIX_MAX_VECTORS}`);
    }
    if (typeof options.deliver !== "function") throw new TypeError("MSI-X: deliver must be a function");
    if (options.onVectorChange !== undefined && typeof options.onVectorChange !== "function") {
      throw new TypeError("MSI-X: onVectorChange must be a function");
    }
    const tableSize = vectors * MSIX_ENTRY_SIZE;
    const pbaSize = Math.ceil(vectors / 64) * 8;
    for (
      const [what, offset, size] of [["table", tableOffset, tableSize], ["PBA", pbaOffset, pbaSize]] as const
    ) {
      if (!Number.isInteger(offset) || offset < 0 || offset % 8 !== 0 || BigInt(offset + size) > bar.size) {
        throw new RangeError(
          `MSI-X ${what} at 0x${offset.toString(16)} (0x${
            size.toString(16)
          } bytes) is not 8-byte aligned inside "${bar.name}"`,
        );
      }
    }
    if (!Number.isInteger(barIndex) || barIndex < 0 || barIndex > 5) {
      throw new RangeError(`MSI-X: BAR ${barIndex} is not 0–5`);
    }
    this.#fn = fn;
    this.vectors = vectors;
    this.#deliver = options.deliver;
    this.#onVectorChange = options.onVectorChange;
    this.#table = new Uint8Array(tableSize);
    this.#tableView = new DataView(this.#table.buffer);
    this.#pba = new Uint8Array(pbaSize);
    this.#reported = Array.from({ length: vectors }, () => ({ address: 0n, data: 0, masked: true }));

    const cap = this.capability = fn.addCapability(PCI_CAP_ID_MSIX, MSIX_CAP_SIZE);
    fn.config.setWord(cap + 2, vectors - 1);
    const setLong = (at: number, value: number) => {
      fn.config.setWord(at, value & 0xffff);
      fn.config.setWord(at + 2, value >>> 16);
    };
    setLong(cap + 4, tableOffset | barIndex);
    setLong(cap + 8, pbaOffset | barIndex);
    fn.config.wmask[cap + 3] |= (MSIX_ENABLE_BIT | MSIX_MASKALL_BIT) >> 8;
    this.#maskAll();

    // Table and PBA take 4- and 8-byte accesses, implemented as 4 (msix_table_mmio_ops).
    const access = { valid: { min: 4, max: 8 }, impl: { min: 4, max: 4 } };
    this.tableRegion = MemoryRegion.io("msix-table", tableSize, {
      read: (offset) => this.#tableView.getUint32(offset, true),
      write: (offset, value) => this.#writeTable(offset, Number(value)),
      endianness: "little",
      ...access,
    });
    this.pbaRegion = MemoryRegion.io("msix-pba", pbaSize, {
      read: (offset) => new DataView(this.#pba.buffer).getUint32(offset, true),
      write: () => {}, // the PBA is read-only
      endianness: "little",
      ...access,
    });
    bar.addSubregion(tableOffset, this.tableRegion);
    bar.addSubregion(pbaOffset, this.pbaRegion);
    fn.onConfigWrite((offset, size) => this.#configWritten(offset, size));
    fn.onReset(() => this.reset());
  }

  /**
   * MSI-X in a BAR of its own (QEMU's `msix_init_exclusive_bar`): a 4 KiB 32-bit memory BAR
   * "`name`-msix" with the table at 0 and the PBA at 0x800, registered as BAR `barIndex`.
   *
   * @throws {RangeError} if `vectors` is not 1–128 (more would need a larger BAR), or as
   *   {@link PciFunction.registerBar} and the constructor.
   */
  static exclusiveBar(
    fn: PciFunction,
    options: Omit<MsixOptions, "bar" | "tableOffset" | "pbaOffset"> & { name: string },
  ): Msix {
    if (!Number.isInteger(options.vectors) || options.vectors < 1 || options.vectors > 128) {
      throw new RangeError(`MSI-X exclusive BAR: ${options.vectors} vectors is not 1–128`);
    }
    const bar = MemoryRegion.container(`${options.name}-msix`, MSIX_EXCLUSIVE_BAR_SIZE);
    const msix = new Msix(fn, { ...options, bar, tableOffset: 0, pbaOffset: MSIX_EXCLUSIVE_PBA_OFFSET });
    fn.registerBar(options.barIndex, bar, PciBarType.MEMORY);
    return msix;
  }

  /** Whether MSI-X is enabled (message control bit 15). */
  get enabled(): boolean {
    return (this.#control() & MSIX_ENABLE_BIT) !== 0;
  }

  /** Whether every vector is masked: MSI-X disabled or the function mask set. */
  get functionMasked(): boolean {
    return this.#functionMasked;
  }

  /** Whether `vector` is masked (QEMU's `msix_is_masked`). */
  isMasked(vector: number): boolean {
    return this.#vectorMasked(this.#check(vector), this.#functionMasked);
  }

  /** Whether `vector`'s pending bit is set. */
  isPending(vector: number): boolean {
    this.#check(vector);
    return (this.#pba[vector >> 3] & (1 << (vector & 7))) !== 0;
  }

  /** `vector`'s message and masked state. */
  vectorState(vector: number): MsixVectorState {
    this.#check(vector);
    const at = vector * MSIX_ENTRY_SIZE;
    const address = BigInt(this.#tableView.getUint32(at, true)) |
      (BigInt(this.#tableView.getUint32(at + 4, true)) << 32n);
    return { address, data: this.#tableView.getUint32(at + 8, true), masked: this.isMasked(vector) };
  }

  /**
   * Signals `vector` (QEMU's `msix_notify`): sends its message, or sets its pending bit while it is
   * masked. A vector outside the table is ignored.
   */
  notify(vector: number): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.vectors) return;
    if (this.isMasked(vector)) {
      this.#pba[vector >> 3] |= 1 << (vector & 7);
      return;
    }
    this.#send(vector);
  }

  /**
   * The vector table and the pending bits. The enable and function-mask bits live in the function's
   * configuration space and are saved with it ({@link PciFunction.saveState}).
   */
  saveState(): StateObject {
    return { table: this.#table.slice(), pba: this.#pba.slice() };
  }

  /**
   * Puts a {@link saveState} result back; load the function's state first (the enable and mask bits
   * come from its configuration space). As QEMU's `msix_load`: the function mask is recomputed, a
   * pending vector that is not masked fires, and `onVectorChange` is told about every vector whose
   * address, data or mask differs from what it was last told, so GSI routing can be rebuilt.
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong size, or has pending
   * bits past the last vector (MSI-X is then unchanged).
   */
  loadState(state: StateObject): void {
    this.prepareState(new StateReader(this.#fn.stateName, state))();
  }

  /** Checks a saved MSI-X state read through `r` and returns the function that applies it. */
  prepareState(r: StateReader): () => void {
    const table = r.bytes("table", { length: this.#table.length });
    const pba = r.bytes("pba", { length: this.#pba.length });
    for (let v = this.vectors; v < pba.length * 8; v++) {
      if (pba[v >> 3] & (1 << (v & 7))) {
        r.fail("pba", `has vector ${v} pending, past the last vector ${this.vectors - 1}`);
      }
    }
    return () => {
      this.#table.set(table);
      this.#pba.set(pba);
      const control = this.#control();
      this.#functionMasked = !(control & MSIX_ENABLE_BIT) || (control & MSIX_MASKALL_BIT) !== 0;
      for (let v = 0; v < this.vectors; v++) {
        this.#maskUpdated(v, true);
        this.#report(v);
      }
    };
  }

  /** QEMU's `msix_reset`: enable and function mask clear, table and PBA zeroed, every vector masked. */
  reset(): void {
    const at = this.capability + 3;
    this.#fn.config.bytes[at] &= ~this.#fn.config.wmask[at];
    this.#table.fill(0);
    this.#pba.fill(0);
    this.#functionMasked = true;
    this.#maskAll();
    for (let v = 0; v < this.vectors; v++) this.#report(v);
  }

  #check(vector: number): number {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.vectors) {
      throw new RangeError(`MSI-X vector ${vector} is not 0–${this.vectors - 1}`);
    }
    return vector;
  }

  #control(): number {
    return this.#fn.config.read(this.capability + 2, 2);
  }

  #vectorMasked(vector: number, functionMasked: boolean): boolean {
    return functionMasked || (this.#table[vector * MSIX_ENTRY_SIZE + 12] & MSIX_VECTOR_MASK_BIT) !== 0;
  }

  #maskAll(): void {
    for (let v = 0; v < this.vectors; v++) this.#table[v * MSIX_ENTRY_SIZE + 12] |= MSIX_VECTOR_MASK_BIT;
  }

  #send(vector: number): void {
    if (!this.#fn.busMaster) return;
    // Every completion interrupt comes here: the message straight from the table, no state object.
    const view = this.#tableView;
    const at = vector * MSIX_ENTRY_SIZE;
    const high = view.getUint32(at + 4, true);
    const low = BigInt(view.getUint32(at, true));
    this.#deliver(high === 0 ? low : (BigInt(high) << 32n) | low, view.getUint32(at + 8, true));
  }

  #writeTable(offset: number, value: number): void {
    const vector = Math.floor(offset / MSIX_ENTRY_SIZE);
    const wasMasked = this.isMasked(vector);
    this.#tableView.setUint32(offset, value >>> 0, true);
    this.#maskUpdated(vector, wasMasked);
    this.#report(vector);
  }

  /** QEMU's `msix_handle_mask_update`: an unmasked vector with its pending bit set fires now. */
  #maskUpdated(vector: number, wasMasked: boolean): void {
    const masked = this.isMasked(vector);
    if (masked === wasMasked || masked || !this.isPending(vector)) return;
    this.#pba[vector >> 3] &= ~(1 << (vector & 7));
    this.#send(vector);
  }

  /** QEMU's `msix_write_config`: after a write covering the control byte, recompute the function mask. */
  #configWritten(offset: number, size: number): void {
    const at = this.capability + 3;
    if (!(offset <= at && at < offset + size)) return;
    const wasMasked = this.#functionMasked;
    const control = this.#control();
    this.#functionMasked = !(control & MSIX_ENABLE_BIT) || (control & MSIX_MASKALL_BIT) !== 0;
    if (this.enabled) this.#fn.setIrq(false); // MSI-X replaces INTx (pci_device_deassert_intx)
    if (this.#functionMasked === wasMasked) return;
    for (let v = 0; v < this.vectors; v++) {
      this.#maskUpdated(v, this.#vectorMasked(v, wasMasked));
      this.#report(v);
    }
  }

  #report(vector: number): void {
    if (!this.#onVectorChange) return;
    const now = this.vectorState(vector);
    const last = this.#reported[vector];
    if (now.address === last.address && now.data === last.data && now.masked === last.masked) return;
    this.#reported[vector] = now;
    this.#onVectorChange(vector, { ...now });
  }
}
