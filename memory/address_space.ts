/**
 * Address spaces: a root region, its current flat view, its listeners, and guest accesses.
 *
 * Rendering, diffing and listener order follow QEMU 7.2's `system/memory.c`; accesses follow
 * `flatview_read_continue`/`flatview_write_continue` and `access_with_adjusted_size` (QEMU's
 * `docs/devel/memory.rst` describes them).
 *
 * @module
 */

import { ADDRESS_SPACE_SIZE, type AddrInput, toAddress, UINT64_MAX } from "./address.ts";
import { _viewIndex, FlatView, flatViewRoot } from "./flat_view.ts";
import type { FlatRange } from "./flat_view.ts";
import type { IoeventfdSection, MemoryListener } from "./memory_listener.ts";
import { checkBoolean, checkBytes, show } from "./_check.ts";
import { _compareIoeventfds, MemoryRegion } from "./memory_region.ts";
import { type MemoryRegionOps, MemTxResult } from "./memory_region_ops.ts";
import { _setRebuildHook } from "./transaction.ts";
import { _setCoalescedHook, type CoalescedRange, flushCoalescedMmio } from "./coalesced_mmio.ts";
import { _sparseRead, _sparseWrite, SparseRam } from "./ram_backing.ts";

/** Result of {@link AddressSpace.read}. */
export interface ReadResult {
  /** The value read, little-endian assembled (0 where nothing answered). */
  value: bigint;
  /** OR of the {@link MemTxResult} codes of every piece. */
  result: number;
}

interface Registration {
  listener: MemoryListener;
  as: AddressSpace;
  priority: number;
}

/** Every address space, in creation order (QEMU's `address_spaces` list). */
const addressSpaces: AddressSpace[] = [];
/** Every registered listener, ascending priority, FIFO among equals (QEMU's `memory_listeners`). */
const allListeners: Registration[] = [];

/** QEMU's `unassigned_mem_ops`: every access invalid (its `accepts` refuses everything). */
const UNASSIGNED_MEM_OPS: MemoryRegionOps = { valid: { accepts: () => false } };

/**
 * Devices (identified by their ops object) currently inside one of their own handlers, innermost
 * last: a stack, as handlers return in the reverse order they were entered.
 */
const engagedDevices: MemoryRegionOps[] = [];

function insertByPriority(list: Registration[], reg: Registration): void {
  let i = list.length;
  while (i > 0 && list[i - 1].priority > reg.priority) i--;
  list.splice(i, 0, reg);
}

/** Runs `fn` for each item, remembering the first error and going on (so state stays coherent). */
class ErrorCollector {
  error: unknown = undefined;
  failed = false;
  run(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (!this.failed) {
        this.failed = true;
        this.error = e;
      }
    }
  }
  throwIfFailed(): void {
    if (this.failed) throw this.error;
  }
}

/** Installs a view in an address space and delivers the differences; set by the class's static block. */
let setView: (as: AddressSpace, next: FlatView, errors: ErrorCollector) => void;
/** Brings an address space's ioeventfds up to its view; set by the class's static block. */
let updateIoeventfds: (as: AddressSpace, errors: ErrorCollector) => void;
/** Whether an address space was closed; set by the class's static block. */
let isClosed: (as: AddressSpace) => boolean;
/** An address space's listener registrations, ascending priority; set by the class's static block. */
let listenersOf: (as: AddressSpace) => readonly Registration[];

/**
 * QEMU's `memory_region_transaction_commit`: render each distinct FlatView root once, before any
 * listener hears of it (`flatviews_reset`); call every listener's `begin`; install each address
 * space's view, looked up by its root when its turn comes (`address_space_set_flatview`); call
 * every `commit`. The list of address spaces may change in any callback: one closed is skipped,
 * one created is visited too and gets the view of its own root.
 */
function rebuildAll(regions: boolean): void {
  if (!regions) {
    // Only an ioeventfd changed: no render, no begin/commit (QEMU's commit does the same).
    const errors = new ErrorCollector();
    for (const as of addressSpaces.slice()) if (!isClosed(as)) updateIoeventfds(as, errors);
    errors.throwIfFailed();
    return;
  }
  const views = new Map<MemoryRegion | null, FlatView>();
  const viewOf = (as: AddressSpace): FlatView => {
    const root = flatViewRoot(as.root);
    let view = views.get(root);
    if (!view) {
      view = FlatView.renderFrom(root);
      views.set(root, view);
    }
    return view;
  };
  for (const as of addressSpaces) viewOf(as);
  const errors = new ErrorCollector();
  for (const reg of allListeners.slice()) if (reg.listener.begin) errors.run(() => reg.listener.begin!());
  const visited = new Set<AddressSpace>();
  let i = 0;
  while (i < addressSpaces.length) {
    const as = addressSpaces[i];
    if (visited.has(as)) {
      i++;
      continue;
    }
    visited.add(as);
    if (!isClosed(as)) {
      setView(as, viewOf(as), errors);
      updateIoeventfds(as, errors);
    }
    // Callbacks may have edited the list before this entry: then rescan, skipping those done.
    i = addressSpaces[i] === as ? i + 1 : 0;
  }
  for (const reg of allListeners.slice()) if (reg.listener.commit) errors.run(() => reg.listener.commit!());
  errors.throwIfFailed();
}
_setRebuildHook(rebuildAll);

/**
 * Where a coalesced range of `range.region` lands in one flat range, in address-space coordinates
 * (QEMU's `flat_range_coalesced_io_notify`), or null if they do not meet.
 */
function coalescedZone(r: FlatRange, range: CoalescedRange): [bigint, bigint] | null {
  const start = range.offset + r.start - r.offsetInRegion;
  const lo = start > r.start ? start : r.start;
  const end = start + range.size;
  const rEnd = r.start + r.size;
  const hi = end < rEnd ? end : rEnd;
  return lo < hi ? [lo, hi - lo] : null;
}

/**
 * A registration replay's coalesced ranges for one flat range, as QEMU's
 * `flat_range_coalesced_io_notify_listener_add_del`: in the region's order, stopping at the first
 * range that does not meet the flat range (the rebuild path skips it and goes on).
 */
function replayCoalesced(r: FlatRange, call: (start: bigint, size: bigint) => void): void {
  for (const range of r.region.coalesced) {
    const zone = coalescedZone(r, range);
    if (!zone) return;
    call(zone[0], zone[1]);
  }
}

/** Tells `listeners` of one range of a flat range's region: adds lowest priority first, dels highest first. */
function notifyCoalesced(
  listeners: readonly Registration[],
  r: FlatRange,
  range: CoalescedRange,
  add: boolean,
  errors: ErrorCollector,
): void {
  const zone = coalescedZone(r, range);
  if (!zone) return;
  if (add) {
    for (const reg of listeners) {
      if (reg.listener.coalescedIoAdd) errors.run(() => reg.listener.coalescedIoAdd!(r, zone[0], zone[1]));
    }
  } else {
    for (let i = listeners.length - 1; i >= 0; i--) {
      const reg = listeners[i];
      if (reg.listener.coalescedIoDel) errors.run(() => reg.listener.coalescedIoDel!(r, zone[0], zone[1]));
    }
  }
}

/** QEMU's `memory_region_update_coalesced_range`: one range of `region`, every address space, at once. */
_setCoalescedHook((region, range, add) => {
  const errors = new ErrorCollector();
  for (const as of addressSpaces.slice()) {
    if (isClosed(as)) continue;
    const listeners = listenersOf(as);
    if (listeners.length === 0) continue;
    for (const r of as.flatView()) if (r.region === region) notifyCoalesced(listeners, r, range, add, errors);
  }
  errors.throwIfFailed();
});

/** QEMU's `flatrange_equal`: everything but the dirty-log mask. */
function sameRange(a: FlatRange, b: FlatRange): boolean {
  return a.region === b.region && a.start === b.start && a.size === b.size &&
    a.offsetInRegion === b.offsetInRegion && a.romdMode === b.romdMode && a.readonly === b.readonly &&
    a.nonvolatile === b.nonvolatile && a.unmergeable === b.unmergeable;
}

/** 2^53: every integer below it is exactly a double. */
const EXACT = 2 ** 53;
const EXACT_BIG = 1n << 53n;

/** The low byte of an offset (a double below 2^53, or a bigint): all alignment needs. */
function lowByte(offset: number | bigint): number {
  return typeof offset === "number" ? offset % 256 : Number(offset & 0xffn);
}

/** QEMU's `memory_access_size`: the largest piece the region takes at an offset whose low byte is `low`. */
function accessSize(ops: MemoryRegionOps, remaining: number, low: number): number {
  let max = ops.valid?.max || 4;
  if (!ops.impl?.unaligned) {
    const align = low & -low;
    if (align !== 0 && align < max) max = align;
  }
  let l = remaining < max ? remaining : max;
  // pow2floor
  while (l & (l - 1)) l &= l - 1;
  return l;
}

function byteSwap(value: bigint, size: number): bigint {
  let out = 0n;
  for (let i = 0; i < size; i++) out = (out << 8n) | ((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** {@link byteSwap} of a value below 2^32 (`size` ≤ 4). */
function byteSwapSmall(value: number, size: number): number {
  let out = 0;
  for (let i = 0; i < size; i++) out = out * 256 + ((value >>> (8 * i)) & 0xff);
  return out;
}

function loadLE(buf: Uint8Array, at: number, size: number): bigint {
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[at + i]);
  return v;
}

function storeLE(buf: Uint8Array, at: number, size: number, value: bigint): void {
  for (let i = 0; i < size; i++) buf[at + i] = Number((value >> BigInt(8 * i)) & 0xffn);
}

/** An integer double modulo 2^32 (exact: `%` on doubles is). */
function low32(value: number): number {
  const r = value % 4294967296;
  return r < 0 ? r + 4294967296 : r;
}

/** QEMU's `memory_region_access_valid`, for an offset whose low byte is `low`. */
function accessValid(
  ops: MemoryRegionOps,
  offset: number,
  low: number,
  size: number,
  isWrite: boolean,
): boolean {
  const valid = ops.valid;
  if (valid?.accepts && !valid.accepts(offset, size, isWrite)) return false;
  // An absent `valid` is QEMU's all-zero one: any size, but `unaligned` false.
  if (!valid?.unaligned && (low & (size - 1)) !== 0) return false;
  if (!valid?.max) return true;
  return size <= valid.max && size >= (valid.min ?? 0);
}

/** A device's read result as a bigint; the error names the region when it is not an integer. */
function readValue(region: MemoryRegion, offset: number | bigint, raw: unknown): bigint {
  try {
    return BigInt(raw as bigint);
  } catch {
    throw new TypeError(`region "${region.name}": read at 0x${offset.toString(16)} returned ${raw}`);
  }
}

/**
 * One chunk to a region through its ops: validation, endianness, re-entrancy guard and
 * `access_with_adjusted_size` (split into `impl.max` pieces, widen to `impl.min`). `offset` is a
 * double when it is below 2^53, else a bigint. Pieces of up to 4 bytes are assembled on doubles;
 * 8-byte ones on bigints.
 */
function dispatch(
  region: MemoryRegion,
  offset: number | bigint,
  size: number,
  isWrite: boolean,
  buf: Uint8Array,
  at: number,
): number {
  if (region.flushCoalesced) flushCoalescedMmio();
  const ops = region.ops ?? UNASSIGNED_MEM_OPS;
  const off = Number(offset);
  if (!accessValid(ops, off, lowByte(offset), size, isWrite)) {
    if (!isWrite) buf.fill(0, at, at + size);
    return MemTxResult.DECODE_ERROR;
  }
  const bigEndian = ops.endianness === "big";
  const guarded = !ops.reentrant && region.kind === "io" && !region.readonly;
  if (guarded) {
    if (engagedDevices.includes(ops)) {
      if (!isWrite) buf.fill(0, at, at + size);
      return MemTxResult.ACCESS_ERROR;
    }
    engagedDevices.push(ops);
  }
  try {
    const implMin = ops.impl?.min || 1;
    const implMax = ops.impl?.max || 4;
    const k = Math.max(Math.min(size, implMax), implMin);
    if (k <= 4 && size <= 4) {
      // Every value here is below 2^32: doubles, exact. Pieces never overlap (k < size) or there
      // is one (k ≥ size), so adding them is OR-ing them.
      const unit = 2 ** (8 * k);
      if (isWrite) {
        let value = 0;
        for (let i = size - 1; i >= 0; i--) value = value * 256 + buf[at + i];
        if (bigEndian) value = byteSwapSmall(value, size);
        if (!ops.write) return MemTxResult.OK;
        for (let i = 0; i < size; i += k) {
          const shift = bigEndian ? (size - k - i) * 8 : i * 8;
          const piece = shift >= 0 ? Math.floor(value / 2 ** shift) % unit : value * 2 ** -shift;
          ops.write(off + i, piece, k);
        }
      } else {
        let value = 0;
        if (ops.read) {
          for (let i = 0; i < size; i += k) {
            const shift = bigEndian ? (size - k - i) * 8 : i * 8;
            const raw = ops.read(off + i, k);
            const tmp = typeof raw === "number" && Number.isInteger(raw)
              ? low32(raw) % unit
              : Number(BigInt.asUintN(8 * k, readValue(region, offset, raw)));
            value += shift >= 0 ? tmp * 2 ** shift : Math.floor(tmp / 2 ** -shift);
          }
        }
        if (bigEndian) value = byteSwapSmall(value, size);
        for (let i = 0; i < size; i++) buf[at + i] = (value >>> (8 * i)) & 0xff;
      }
      return MemTxResult.OK;
    }
    const mask = (1n << BigInt(8 * k)) - 1n;
    if (isWrite) {
      let value = loadLE(buf, at, size);
      if (bigEndian) value = byteSwap(value, size);
      if (!ops.write) return MemTxResult.OK;
      for (let i = 0; i < size; i += k) {
        const shift = bigEndian ? (size - k - i) * 8 : i * 8;
        const piece = (shift >= 0 ? value >> BigInt(shift) : value << BigInt(-shift)) & mask;
        ops.write(off + i, k === 8 ? piece : Number(piece), k);
      }
    } else {
      let value = 0n;
      if (ops.read) {
        for (let i = 0; i < size; i += k) {
          const shift = bigEndian ? (size - k - i) * 8 : i * 8;
          const tmp = readValue(region, offset, ops.read(off + i, k)) & mask;
          value |= shift >= 0 ? tmp << BigInt(shift) : tmp >> BigInt(-shift);
        }
      }
      if (bigEndian) value = byteSwap(value, size);
      storeLE(buf, at, size, value);
    }
    return MemTxResult.OK;
  } finally {
    if (guarded) engagedDevices.pop();
  }
}

function checkListener(listener: MemoryListener, op: string): void {
  if (listener === null || typeof listener !== "object") {
    throw new TypeError(`${op}: a listener is an object of callbacks, got ${show(listener)}`);
  }
}

function checkAccessSize(size: number, op: string): void {
  if (size !== 1 && size !== 2 && size !== 4 && size !== 8) {
    throw new RangeError(`${op}: access size ${show(size)} is not 1, 2, 4 or 8`);
  }
}

/**
 * A named address space (QEMU's `AddressSpace`): a root region rendered to a flat view.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, MemTxResult, UNASSIGNED_IO_OPS } from "../mod.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * const { value, result } = ports.read(0x3f8, 1); // nothing there: all-ones, OK
 * assert.equal(value, 0xffn);
 * assert.equal(result, MemTxResult.OK);
 * ```
 */
export class AddressSpace {
  /** Name printed by `info mtree` ("memory", "I/O", …). */
  readonly name: string;
  /** The root region. */
  readonly root: MemoryRegion;
  #view: FlatView;
  readonly #listeners: Registration[] = [];
  /** The ioeventfds of the current view, in `_compareIoeventfds` order (QEMU's `as->ioeventfds`). */
  #ioeventfds: IoeventfdSection[] = [];
  #closed = false;
  readonly #scratch = new Uint8Array(8);
  readonly #scratchView = new DataView(this.#scratch.buffer);
  /** The scratch buffer's first `size` bytes, by `size` (1, 2, 4, 8; the others unused). */
  readonly #scratchOf = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((n) => this.#scratch.subarray(0, n));
  #scratchBusy = false;

  /**
   * Creates the address space and renders its view at once (QEMU's `address_space_init`), sharing
   * the view of an address space whose root reduces to the same FlatView root.
   *
   * @throws {TypeError} if `root` is not a MemoryRegion or `name` is not a string.
   */
  constructor(root: MemoryRegion, name: string) {
    if (typeof name !== "string") {
      throw new TypeError(`AddressSpace: name must be a string, got ${show(name)}`);
    }
    if (!(root instanceof MemoryRegion)) {
      throw new TypeError(`AddressSpace "${name}": root must be a MemoryRegion, got ${show(root)}`);
    }
    this.root = root;
    this.name = name;
    // Share the FlatView of an address space with the same FlatView root, as QEMU does.
    const fvRoot = flatViewRoot(root);
    const twin = addressSpaces.find((as) => as.#view.root === fvRoot && flatViewRoot(as.root) === fvRoot);
    this.#view = twin ? twin.#view : FlatView.render(root);
    this.#ioeventfds = this.#collectIoeventfds();
    addressSpaces.push(this);
  }

  /** The current flat view's ranges (as of the last commit). */
  flatView(): readonly FlatRange[] {
    return this.#view.ranges;
  }

  /** The current FlatView object (shared between address spaces with the same FlatView root). */
  get view(): FlatView {
    return this.#view;
  }

  /** The ioeventfds visible in this address space, by address (QEMU's `as->ioeventfds`). */
  get ioeventfds(): readonly IoeventfdSection[] {
    return this.#ioeventfds;
  }

  /** Listeners registered on this address space, ascending priority. */
  get listeners(): readonly MemoryListener[] {
    return this.#listeners.map((r) => r.listener);
  }

  /** Every live address space in creation order. */
  static all(): readonly AddressSpace[] {
    return addressSpaces.slice();
  }

  // ------------------------------------------------------------------ listeners

  /**
   * Registers `listener` and replays the current view to it as adds (with `logStart` for logged
   * ranges) between `begin` and `commit`. If the replay throws, the listener is not registered.
   *
   * @throws {TypeError} if the address space is closed, `listener` is not an object, or it is already
   * registered (here or on another address space).
   * @throws {RangeError} if its priority is not an integer.
   * @throws Whatever the listener throws during the replay; it is then not registered.
   */
  registerListener(listener: MemoryListener): void {
    this.#checkOpen("registerListener");
    checkListener(listener, `registerListener on AS "${this.name}"`);
    if (allListeners.some((r) => r.listener === listener)) {
      throw new TypeError(
        `registerListener on AS "${this.name}": listener ${listener.name ?? ""} is already registered`,
      );
    }
    const priority = listener.priority ?? 0;
    if (typeof priority !== "number" || !Number.isInteger(priority)) {
      throw new RangeError(
        `registerListener on AS "${this.name}": priority ${show(priority)} is not an integer`,
      );
    }
    const reg: Registration = { listener, as: this, priority };
    insertByPriority(this.#listeners, reg);
    insertByPriority(allListeners, reg);
    try {
      listener.begin?.();
      for (const r of this.#view.ranges) {
        listener.regionAdd?.(r);
        if (listener.coalescedIoAdd) {
          replayCoalesced(r, (start, size) => listener.coalescedIoAdd!(r, start, size));
        }
        if (r.dirtyLogMask) listener.logStart?.(r, 0, r.dirtyLogMask);
      }
      // Unlike QEMU 7.2, the ioeventfds are replayed too: a listener registered after a device
      // added its eventfds (the KVM layer attaches to a board that already exists) must hear of them.
      for (const fd of this.#ioeventfds) listener.eventfdAdd?.(fd);
      listener.commit?.();
    } catch (e) {
      this.#removeRegistration(reg);
      throw e;
    }
  }

  /**
   * Replays the current view to `listener` as deletes, then removes it. No-op if not registered.
   *
   * @throws {TypeError} if `listener` is not an object.
   * @throws Whatever the listener throws during the replay; it is removed all the same.
   */
  unregisterListener(listener: MemoryListener): void {
    checkListener(listener, `unregisterListener on AS "${this.name}"`);
    const reg = this.#listeners.find((r) => r.listener === listener);
    if (!reg) return;
    try {
      listener.begin?.();
      for (const r of this.#view.ranges) {
        if (r.dirtyLogMask) listener.logStop?.(r, r.dirtyLogMask, 0);
        if (listener.coalescedIoDel) {
          replayCoalesced(r, (start, size) => listener.coalescedIoDel!(r, start, size));
        }
        listener.regionDel?.(r);
      }
      for (const fd of this.#ioeventfds) listener.eventfdDel?.(fd);
      listener.commit?.();
    } finally {
      this.#removeRegistration(reg);
    }
  }

  #removeRegistration(reg: Registration): void {
    this.#listeners.splice(this.#listeners.indexOf(reg), 1);
    allListeners.splice(allListeners.indexOf(reg), 1);
  }

  /**
   * Asks listeners to sync dirty bits of logged ranges (of `region` only, if given) into the
   * regions' dirty bitmaps (QEMU's `memory_region_sync_dirty_bitmap`).
   *
   * @throws {TypeError} if `region` is given and is not a MemoryRegion.
   */
  syncDirtyLog(region?: MemoryRegion): void {
    if (region !== undefined && !(region instanceof MemoryRegion)) {
      throw new TypeError(`syncDirtyLog of AS "${this.name}": expected a MemoryRegion, got ${show(region)}`);
    }
    for (const reg of this.#listeners.slice()) {
      const sync = reg.listener.logSync;
      if (!sync) continue;
      for (const r of this.#view.ranges) {
        if (r.dirtyLogMask && (!region || r.region === region)) sync.call(reg.listener, r);
      }
    }
  }

  static {
    setView = (as, next, errors) => as.#setView(next, errors);
    updateIoeventfds = (as, errors) => as.#updateIoeventfds(errors);
    isClosed = (as) => as.#closed;
    listenersOf = (as) => as.#listeners;
  }

  /**
   * Every ioeventfd of the regions in the view, at its absolute address (QEMU's
   * `address_space_update_ioeventfds`): a region's ioeventfd counts for each flat range of the region
   * it intersects, shifted by where that range puts the region.
   */
  #collectIoeventfds(): IoeventfdSection[] {
    const out: IoeventfdSection[] = [];
    for (const r of this.#view.ranges) {
      const fds = r.region.ioeventfds;
      if (fds.length === 0) continue;
      const end = r.start + r.size;
      for (const fd of fds) {
        const start = fd.offset + r.start - r.offsetInRegion;
        const fdEnd = start + BigInt(fd.size);
        // QEMU's addrrange_intersects (a size-0 ioeventfd intersects where its start lies inside).
        if ((r.start >= start && r.start < fdEnd) || (start >= r.start && start < end)) {
          out.push({ start, size: fd.size, matchData: fd.matchData, data: fd.data, eventfd: fd.eventfd });
        }
      }
    }
    return out.sort(_compareIoeventfds);
  }

  /**
   * QEMU's `address_space_add_del_ioeventfds`: walks the old and new lists in order; one only in the
   * old goes to `eventfdDel` (lowest priority first), one only in the new to `eventfdAdd` (highest
   * first).
   */
  #updateIoeventfds(errors: ErrorCollector): void {
    const old = this.#ioeventfds;
    const next = this.#collectIoeventfds();
    this.#ioeventfds = next;
    if (this.#listeners.length === 0) return;
    const forward = this.#listeners.slice();
    const reverse = forward.slice().reverse();
    let i = 0;
    let j = 0;
    while (i < old.length || j < next.length) {
      const order = i === old.length ? 1 : j === next.length ? -1 : _compareIoeventfds(old[i], next[j]);
      if (order < 0) {
        const fd = old[i++];
        for (const r of forward) if (r.listener.eventfdDel) errors.run(() => r.listener.eventfdDel!(fd));
      } else if (order > 0) {
        const fd = next[j++];
        for (const r of reverse) if (r.listener.eventfdAdd) errors.run(() => r.listener.eventfdAdd!(fd));
      } else {
        i++;
        j++;
      }
    }
  }

  /** Installs a new view and delivers the differences (QEMU's `address_space_set_flatview`). */
  #setView(next: FlatView, errors: ErrorCollector): void {
    const old = this.#view;
    this.#view = next;
    if (old === next || this.#listeners.length === 0) return;
    const forward = this.#listeners.slice();
    const reverse = forward.slice().reverse();
    const a = old.ranges;
    const b = next.ranges;
    for (const adding of [false, true]) {
      let i = 0;
      let j = 0;
      while (i < a.length || j < b.length) {
        const o = a[i];
        const n = b[j];
        if (o && (!n || o.start < n.start || (o.start === n.start && !sameRange(o, n)))) {
          if (!adding) {
            for (const range of o.region.coalesced) notifyCoalesced(forward, o, range, false, errors);
            for (const r of reverse) if (r.listener.regionDel) errors.run(() => r.listener.regionDel!(o));
          }
          i++;
        } else if (o && n && sameRange(o, n)) {
          if (adding) {
            for (const r of forward) if (r.listener.regionNop) errors.run(() => r.listener.regionNop!(n));
            if (n.dirtyLogMask & ~o.dirtyLogMask) {
              for (const r of forward) {
                if (r.listener.logStart) {
                  errors.run(() => r.listener.logStart!(n, o.dirtyLogMask, n.dirtyLogMask));
                }
              }
            }
            if (o.dirtyLogMask & ~n.dirtyLogMask) {
              for (const r of reverse) {
                if (r.listener.logStop) {
                  errors.run(() => r.listener.logStop!(n, o.dirtyLogMask, n.dirtyLogMask));
                }
              }
            }
          }
          i++;
          j++;
        } else {
          if (adding) {
            for (const r of forward) if (r.listener.regionAdd) errors.run(() => r.listener.regionAdd!(n));
            for (const range of n.region.coalesced) notifyCoalesced(forward, n, range, true, errors);
          }
          j++;
        }
      }
    }
  }

  // ------------------------------------------------------------------ accesses

  /**
   * Reads `size` (1, 2, 4 or 8) bytes at `addr`, little-endian, as a guest access would.
   *
   * @throws {RangeError} if `size` is not 1, 2, 4 or 8.
   * @throws {RangeError} if `addr` is not in [0, 2^64) or the access would pass 2^64 ({TypeError} if it is
   * not a number or bigint).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { AddressSpace, MemoryRegion, MemTxResult } from "../mod.ts";
   * using as = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
   * assert.deepEqual(as.read(0x1000, 4), { value: 0n, result: MemTxResult.DECODE_ERROR }); // a hole
   * ```
   */
  read(addr: AddrInput, size: number): ReadResult {
    if (size !== 4 && size !== 1 && size !== 2 && size !== 8) {
      checkAccessSize(size, `read of AS "${this.name}"`);
    }
    const a = this.#address(addr, "read of");
    // A device handler may re-enter this address space while an outer access still holds the
    // scratch buffer: it then gets a fresh one (no closure on the common path: this is per access).
    const outer = !this.#scratchBusy;
    const buf = outer ? this.#scratchOf[size] : new Uint8Array(8).subarray(0, size);
    const dv = outer ? this.#scratchView : new DataView(buf.buffer);
    this.#scratchBusy = true;
    try {
      const result = this.#rw(a, buf, size, false);
      const value = size === 4
        ? BigInt(dv.getUint32(0, true))
        : size === 1
        ? BigInt(buf[0])
        : size === 2
        ? BigInt(dv.getUint16(0, true))
        : dv.getBigUint64(0, true);
      return { value, result };
    } finally {
      if (outer) this.#scratchBusy = false;
    }
  }

  /**
   * Writes the low `size` bytes of `value` at `addr`, little-endian. Returns the result code.
   *
   * @throws {RangeError} if `size` is not 1, 2, 4 or 8, or `value` is a non-integer number.
   * @throws {TypeError} if `value` is not a number or bigint.
   * @throws {RangeError} if `addr` is not in [0, 2^64) or the access would pass 2^64 ({TypeError} if it is
   * not a number or bigint).
   */
  write(addr: AddrInput, size: number, value: number | bigint): number {
    if (size !== 4 && size !== 1 && size !== 2 && size !== 8) {
      checkAccessSize(size, `write of AS "${this.name}"`);
    }
    const a = this.#address(addr, "write of");
    if (typeof value !== "bigint" && typeof value !== "number") {
      throw new TypeError(`write of AS "${this.name}": value ${show(value)} is not a number or bigint`);
    }
    if (typeof value === "number" && !Number.isInteger(value)) {
      throw new RangeError(`write of AS "${this.name}": value ${value} is not an integer`);
    }
    const outer = !this.#scratchBusy;
    const buf = outer ? this.#scratchOf[size] : new Uint8Array(8).subarray(0, size);
    const dv = outer ? this.#scratchView : new DataView(buf.buffer);
    this.#scratchBusy = true;
    try {
      // The low bytes of the value modulo 2^64, little-endian; only the first `size` are used.
      if (typeof value === "number" && size <= 4) dv.setUint32(0, low32(value), true);
      else dv.setBigUint64(0, typeof value === "bigint" ? value : BigInt(value), true);
      return this.#rw(a, buf, size, true);
    } finally {
      if (outer) this.#scratchBusy = false;
    }
  }

  /**
   * Reads `length` bytes at `addr`, crossing region boundaries (QEMU's `address_space_read`).
   *
   * @throws {TypeError} if `length` is not a number.
   * @throws {RangeError} if `length` is negative or not an integer.
   * @throws {RangeError} if `addr` is not in [0, 2^64) or the access would pass 2^64 ({TypeError} if it is
   * not a number or bigint).
   */
  readBytes(addr: AddrInput, length: number): { data: Uint8Array; result: number } {
    if (typeof length !== "number") {
      throw new TypeError(`readBytes of AS "${this.name}": length ${show(length)} is not a number`);
    }
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`readBytes of AS "${this.name}": length ${length} is not a byte count`);
    }
    const data = new Uint8Array(length);
    const result = this.rw(addr, data, false);
    return { data, result };
  }

  /**
   * Writes `data` at `addr`, crossing region boundaries (QEMU's `address_space_write`).
   *
   * @throws {TypeError} if `data` is not a Uint8Array.
   * @throws {RangeError} if `addr` is not in [0, 2^64) or the access would pass 2^64 ({TypeError} if it is
   * not a number or bigint).
   */
  writeBytes(addr: AddrInput, data: Uint8Array): number {
    checkBytes(data, `writeBytes of AS "${this.name}"`);
    return this.rw(addr, data, true);
  }

  /**
   * Reads into or writes from `data` at `addr` (QEMU's `address_space_rw`); `data` may be a view
   * of a shared page (a vCPU's exit data) so no copy is made.
   *
   * @throws {TypeError} if `data` is not a Uint8Array or `isWrite` not a boolean.
   * @throws {RangeError} if `addr` is not in [0, 2^64) or the access would pass 2^64 ({TypeError} if it is
   * not a number or bigint).
   */
  rw(addr: AddrInput, data: Uint8Array, isWrite: boolean): number {
    if (!(data instanceof Uint8Array)) checkBytes(data, `access to AS "${this.name}"`);
    if (typeof isWrite !== "boolean") checkBoolean(isWrite, `access to AS "${this.name}": isWrite`);
    return this.#rw(this.#address(addr, "access to"), data, data.length, isWrite);
  }

  /**
   * A live view of `[addr, addr + length)` for a device's DMA (QEMU's `address_space_map`), or
   * `null`. There is a view when the range lies in one flat range whose region is accessed directly
   * — the rule {@link rw} follows (`memory_access_is_direct`): writable RAM for a write; RAM, ROM or
   * a ROM device in romd mode for a read — and whose backing can give one (`RamBacking.view`).
   * Otherwise (MMIO, a hole, a range that crosses into another region, or a backing without views)
   * it is `null`, and the caller copies through {@link rw}: QEMU's bounce buffer. For a write the
   * range is marked dirty at once where logging is on (QEMU does it at unmap: the same here, as the
   * caller writes before anything else runs on this thread). Use the view before the next change
   * of the memory map.
   *
   * @throws {RangeError} if `length` is not a byte count, or `addr` is not in [0, 2^64) or the
   * range would pass 2^64 ({TypeError} if it is not a number or bigint).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { AddressSpace, MemoryRegion, type RamBacking } from "./mod.ts";
   * const bytes = new Uint8Array(0x2000);
   * const backing: RamBacking = {
   *   size: 0x2000n,
   *   read: (o, out) => out.set(bytes.subarray(Number(o), Number(o) + out.length)),
   *   write: (o, data) => bytes.set(data, Number(o)),
   *   view: (o, n) => bytes.subarray(Number(o), Number(o) + n),
   * };
   * const system = MemoryRegion.container("system", 1n << 64n);
   * system.addSubregion(0, MemoryRegion.ram("ram", 0x2000, { backing }));
   * system.addSubregion(0x2000, MemoryRegion.io("mmio", 0x1000, { read: () => 0 }));
   * using as = new AddressSpace(system, "memory");
   * as.map(0x100n, 4, true)!.set([1, 2, 3, 4]);
   * assert.deepEqual([...bytes.subarray(0x100, 0x104)], [1, 2, 3, 4]);
   * assert.equal(as.map(0x1ff0n, 0x20, false), null); // crosses into MMIO: copy instead
   * ```
   */
  map(addr: AddrInput, length: number, isWrite: boolean): Uint8Array | null {
    if (typeof length !== "number" || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`map of AS "${this.name}": length ${show(length)} is not a byte count`);
    }
    checkBoolean(isWrite, `map of AS "${this.name}": isWrite`);
    const a = toAddress(addr, `map of AS "${this.name}"`);
    this.#checkEnd(a, length);
    if (length === 0) return null;
    const fr = this.#view.lookup(a);
    if (!fr) return null;
    const mr = fr.region;
    const direct = isWrite ? mr.kind === "ram" && !mr.readonly : mr.isRam || mr.isRomd;
    const inRange = a - fr.start;
    if (!direct || BigInt(length) > fr.size - inRange) return null;
    const offset = fr.offsetInRegion + inRange;
    const view = mr.ramBacking.view?.(offset, length);
    if (view === undefined) return null;
    if (isWrite && mr.dirtyLogMask) mr.markDirty(offset, BigInt(length));
    return view;
  }

  /**
   * Writes `data` into RAM, ROM and ROM devices in romd mode at `addr` whatever their read-only
   * state, skipping everything else: how loaders put firmware into ROM (QEMU's `address_space_write_rom`).
   *
   * @throws {TypeError} if `data` is not a Uint8Array.
   * @throws {RangeError} if `addr` is not in [0, 2^64) or the access would pass 2^64 ({TypeError} if it is
   * not a number or bigint).
   */
  writeRom(addr: AddrInput, data: Uint8Array): void {
    checkBytes(data, `writeRom to AS "${this.name}"`);
    let a = toAddress(addr, `writeRom to AS "${this.name}"`);
    this.#checkEnd(a, data.length);
    let done = 0;
    while (done < data.length) {
      const fr = this.#view.lookup(a);
      let l: number;
      if (!fr) {
        const nextStart = this.#view.ranges.find((r) => r.start > a)?.start;
        l = nextStart === undefined
          ? data.length - done
          : Math.min(data.length - done, Number(nextStart - a));
      } else {
        const inRange = a - fr.start;
        l = Math.min(data.length - done, Number(fr.size - inRange));
        const mr = fr.region;
        // QEMU's address_space_write_rom: RAM or romd only (a ROM device in MMIO mode is skipped),
        // and the write is dirty-logged like any other (invalidate_and_set_dirty).
        if (mr.isRam || mr.isRomd) {
          mr.ramBacking.write(fr.offsetInRegion + inRange, data.subarray(done, done + l));
          if (mr.dirtyLogMask) mr.markDirty(fr.offsetInRegion + inRange, BigInt(l));
        }
      }
      done += l;
      a += BigInt(l);
    }
  }

  #checkEnd(addr: bigint, length: number): void {
    if (addr + BigInt(length) > ADDRESS_SPACE_SIZE) {
      throw new RangeError(
        `access of ${length} bytes at 0x${addr.toString(16)} in AS "${this.name}" passes 2^64`,
      );
    }
  }

  /**
   * `addr` checked as {@link toAddress} does, without a bigint for a number: a safe integer stays a
   * double, the access path's currency below 2^53.
   */
  #address(addr: AddrInput, op: string): number | bigint {
    if (typeof addr === "number") {
      if (addr >= 0 && Number.isSafeInteger(addr)) return addr;
    } else if (typeof addr === "bigint" && addr >= 0n && addr <= UINT64_MAX) {
      return addr;
    }
    return toAddress(addr, `${op} AS "${this.name}"`);
  }

  /**
   * QEMU's `flatview_read_continue` / `flatview_write_continue`. An access below 2^53 (nearly all)
   * runs on doubles, exact there; past it, or where a range's offset in its region is, on bigints.
   */
  #rw(addr: number | bigint, buf: Uint8Array, length: number, isWrite: boolean): number {
    let n: number;
    if (typeof addr === "number") n = addr;
    else if (addr < EXACT_BIG) n = Number(addr);
    else return this.#rwExact(addr, buf, 0, length, isWrite, MemTxResult.OK);
    if (length > EXACT - n) return this.#rwExact(BigInt(n), buf, 0, length, isWrite, MemTxResult.OK);
    const index = _viewIndex(this.#view);
    const { starts, ends, offsets, regions } = index;
    let result: number = MemTxResult.OK;
    let done = 0;
    while (done < length) {
      const remaining = length - done;
      const i = index.find(n);
      let l: number;
      if (i < 0) {
        // io_mem_unassigned: region-relative offset == address.
        l = accessSize(UNASSIGNED_MEM_OPS, remaining, n % 256);
        if (!isWrite) buf.fill(0, done, done + l);
        result |= MemTxResult.DECODE_ERROR;
      } else {
        const offset = offsets[i] + (n - starts[i]);
        if (offset >= EXACT) return this.#rwExact(BigInt(n), buf, done, length, isWrite, result);
        const mr = regions[i];
        const direct = isWrite ? mr.kind === "ram" && !mr.readonly : mr.isRam || mr.isRomd;
        if (direct) {
          const left = ends[i] - n;
          l = left < remaining ? left : remaining;
          const piece = l === buf.length ? buf : buf.subarray(done, done + l);
          // The memory API's own SparseRam takes the offset as a double; any other, as a bigint.
          const backing = mr.ramBacking;
          if (isWrite) {
            if (backing instanceof SparseRam) _sparseWrite(backing, offset, piece);
            else backing.write(BigInt(offset), piece);
            if (mr.dirtyLogMask) mr.markDirty(offset, l);
          } else if (backing instanceof SparseRam) {
            _sparseRead(backing, offset, piece);
          } else {
            backing.read(BigInt(offset), piece);
          }
        } else {
          l = accessSize(mr.ops ?? UNASSIGNED_MEM_OPS, remaining, offset % 256);
          result |= dispatch(mr, offset, l, isWrite, buf, done);
        }
      }
      done += l;
      n += l;
    }
    return result;
  }

  /** {@link #rw} on bigints, from byte `done` of the access (at `addr`) on. */
  #rwExact(
    addr: bigint,
    buf: Uint8Array,
    done: number,
    length: number,
    isWrite: boolean,
    result: number,
  ): number {
    if (done === 0) this.#checkEnd(addr, length);
    const view = this.#view;
    while (done < length) {
      const remaining = length - done;
      const fr = view.lookup(addr);
      let l: number;
      if (!fr) {
        // io_mem_unassigned: region-relative offset == address.
        l = accessSize(UNASSIGNED_MEM_OPS, remaining, lowByte(addr));
        if (!isWrite) buf.fill(0, done, done + l);
        result |= MemTxResult.DECODE_ERROR;
      } else {
        const mr = fr.region;
        const inRange = addr - fr.start;
        const offset = fr.offsetInRegion + inRange;
        const direct = isWrite ? mr.kind === "ram" && !mr.readonly : mr.isRam || mr.isRomd;
        if (direct) {
          const left = fr.size - inRange;
          l = left < BigInt(remaining) ? Number(left) : remaining;
          const piece = buf.subarray(done, done + l);
          if (isWrite) {
            mr.ramBacking.write(offset, piece);
            if (mr.dirtyLogMask) mr.markDirty(offset, BigInt(l));
          } else {
            mr.ramBacking.read(offset, piece);
          }
        } else {
          l = accessSize(mr.ops ?? UNASSIGNED_MEM_OPS, remaining, lowByte(offset));
          result |= dispatch(mr, offset < EXACT_BIG ? Number(offset) : offset, l, isWrite, buf, done);
        }
      }
      done += l;
      addr += BigInt(l);
    }
    return result;
  }

  // ------------------------------------------------------------------ lifetime

  #checkOpen(op: string): void {
    if (this.#closed) throw new TypeError(`${op}: address space "${this.name}" is closed`);
  }

  /**
   * Unregisters every listener (they receive deletes for the whole view) and removes the address
   * space from the rebuild list. Idempotent.
   *
   * @throws The first error a listener threw while unregistered; every listener is still removed.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const errors = new ErrorCollector();
    for (const reg of this.#listeners.slice().reverse()) {
      errors.run(() => this.unregisterListener(reg.listener));
    }
    addressSpaces.splice(addressSpaces.indexOf(this), 1);
    errors.throwIfFailed();
  }

  /** {@link close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
