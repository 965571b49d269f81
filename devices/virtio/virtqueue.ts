/**
 * The split virtqueue of virtio 1.2 (section 2.7), device side, as QEMU 7.2's `hw/virtio/virtio.c`
 * walks it (`virtqueue_split_pop`, `virtqueue_split_fill`/`flush`, `virtio_split_should_notify`),
 * with every guest value treated as hostile:
 *
 * - rings must lie in guest RAM, aligned (desc 16, driver 2, device 4), checked at enable;
 * - a descriptor buffer must be non-empty and lie in guest RAM (writable RAM for device-writable
 *   buffers); device-readable buffers come before device-writable ones;
 * - a chain may not be longer than its table (that would be a loop), nor have more than
 *   {@link VIRTQUEUE_MAX_ELEMENTS} buffers, nor add up to 4 GiB or more;
 * - an indirect table must be a non-empty multiple of 16 bytes, offered only with
 *   VIRTIO_F_INDIRECT_DESC, and may not hold indirect descriptors itself;
 * - the driver may not move its index by more than the queue size.
 *
 * A violation throws {@link VirtioProtocolError}; the device core turns it into NEEDS_RESET. No
 * access outside guest RAM is ever made: everything goes through {@link GuestMemory}, which refuses,
 * or through its caches (`GuestMemory.cache`, views of whole RAM ranges valid until the memory map
 * changes), against whose bounds every access is checked. The rings are read and written through
 * caches where the memory gives them (QEMU's `VRingMemoryRegionCaches`), taken at the first use after
 * enable and again whenever they are no longer valid; every write through one is reported, so dirty
 * logging sees it.
 *
 * Memory ordering (the device runs on one thread while vCPUs write the rings): the available index
 * is read, then a fence, then the ring entry and descriptors; used elements are written, then a
 * fence, then the used index; with VIRTIO_F_EVENT_IDX, `avail_event` is written, then a fence, then
 * the available index is read again before the queue is called empty; and a fence precedes reading
 * `used_event` (or the driver's flags) to decide on an interrupt.
 *
 * @module
 */

import type { GuestMemory, GuestMemoryCache } from "./guest_memory.ts";
import { type Snapshottable, type StateObject, StateReader } from "../device_state.ts";

/** Descriptor flag: the chain continues at `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device-writable. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer is a table of descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Driver-area flag: the device should not interrupt (without EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Most buffers one chain may have (QEMU's `VIRTQUEUE_MAX_SIZE`). */
export const VIRTQUEUE_MAX_ELEMENTS = 1024;
/** Largest queue size a split virtqueue may have. */
export const VIRTQUEUE_MAX_SIZE = 32768;
/** "No MSI-X vector". */
export const VIRTIO_NO_VECTOR = 0xffff;

const DESC_SIZE = 16;

/** The guest broke the virtio protocol; the device must be reset (the message says how). */
export class VirtioProtocolError extends Error {
  /** An error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "VirtioProtocolError";
  }
}

/** One buffer of a chain. */
export interface VirtqBuffer {
  /** Guest-physical address. */
  readonly addr: bigint;
  /** Length in bytes (1 to 2^32 − 1). */
  readonly len: number;
}

/** A piece of a chain's part, from {@link DescriptorChain.pieces}. */
export interface ChainPiece {
  /** Its first byte's offset in the part. */
  readonly offset: number;
  /** Its bytes. */
  readonly length: number;
  /** A live view of guest RAM, or null: copy through the chain. */
  readonly view: Uint8Array | null;
}

/**
 * Spans of guest RAM for one vectored transfer, made by {@link DescriptorChain.gather} and reused
 * from request to request: span `i` is `lengths[i]` bytes at byte `offsets[i]` of `buffers[i]` (an
 * ArrayBuffer whose bytes are guest RAM). A span that continues the one before it in the same
 * buffer is added to it. A backing's preadv/pwritev fills its iovecs from these directly: no view
 * object per page (a 1 MiB request carries up to 256 of them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RamSpans } from "./virtqueue.ts";
 * const ram = new ArrayBuffer(0x3000);
 * const spans = new RamSpans();
 * spans.add(ram, 0x1000, 0x800);
 * spans.add(ram, 0x1800, 0x800); // continues the first
 * spans.add(ram, 0x0, 0x10);
 * assert.equal(spans.count, 2);
 * assert.deepEqual([spans.offsets[0], spans.lengths[0], spans.lengths[1]], [0x1000, 0x1000, 0x10]);
 * ```
 */
export class RamSpans {
  /** How many spans (the arrays may be longer: entries past it are stale). */
  count = 0;
  /** Each span's buffer. */
  readonly buffers: ArrayBufferLike[] = [];
  /** Each span's first byte in its buffer. */
  readonly offsets: number[] = [];
  /** Each span's length. */
  readonly lengths: number[] = [];

  /** Empties the list. */
  clear(): void {
    this.count = 0;
  }

  /** Appends `length` bytes at `offset` of `buffer`, to the last span when it ends there. */
  add(buffer: ArrayBufferLike, offset: number, length: number): void {
    const last = this.count - 1;
    if (last >= 0 && this.buffers[last] === buffer && this.offsets[last] + this.lengths[last] === offset) {
      this.lengths[last] += length;
    } else {
      this.buffers[this.count] = buffer;
      this.offsets[this.count] = offset;
      this.lengths[this.count] = length;
      this.count++;
    }
  }
}

/** 2^53: a buffer that ends at or below it has an exact number for an address. */
const EXACT = 2 ** 53;
/** Copies of at most this many bytes go byte by byte (cheaper than making views for `set`). */
const SMALL_COPY = 16;

/**
 * A chain's buffers as the queue keeps them, in parallel arrays (no object per buffer: a 1 MiB
 * request has 256): buffer `i` is `lens[i]` bytes at guest address `addrs[i]` when every byte's
 * address is exact as a number (it ends at or below 2^53), NaN there and the bigint in `big`
 * otherwise; `caches[i]` is the cache of guest RAM it lies in, or null (then the address is checked
 * at every use). The queue reuses one store from chain to chain: {@link Virtqueue.push} and
 * {@link Virtqueue.unpop} give the chain's back.
 */
class ChainStore {
  addrs: Float64Array;
  lens: Uint32Array;
  caches: (GuestMemoryCache | null)[];
  big: Map<number, bigint> | null = null;

  constructor(capacity: number) {
    this.addrs = new Float64Array(capacity);
    this.lens = new Uint32Array(capacity);
    this.caches = new Array<GuestMemoryCache | null>(capacity).fill(null);
  }

  /** Doubles the capacity, keeping the first `count` buffers. */
  grow(count: number): void {
    const capacity = Math.max(16, 2 * this.lens.length);
    const addrs = new Float64Array(capacity);
    addrs.set(this.addrs.subarray(0, count));
    const lens = new Uint32Array(capacity);
    lens.set(this.lens.subarray(0, count));
    const caches = new Array<GuestMemoryCache | null>(capacity).fill(null);
    for (let i = 0; i < count; i++) caches[i] = this.caches[i];
    this.addrs = addrs;
    this.lens = lens;
    this.caches = caches;
  }

  /** Stores buffer `i`: `len` bytes at `addr`, in `cache` (or null). */
  set(i: number, addr: number | bigint, len: number, cache: GuestMemoryCache | null): void {
    if (i === this.lens.length) this.grow(i);
    if (typeof addr === "number" && addr <= EXACT - len) {
      this.addrs[i] = addr;
    } else {
      this.addrs[i] = NaN;
      (this.big ??= new Map()).set(i, BigInt(addr));
    }
    this.lens[i] = len;
    this.caches[i] = cache;
  }

  /** The guest address `skip` bytes into buffer `i`. */
  address(i: number, skip: number): bigint {
    const a = this.addrs[i];
    return a === a ? BigInt(a + skip) : this.big!.get(i)! + BigInt(skip);
  }
}

/** Whether `cache` holds the `len` bytes at `addr` (NaN: never), writable ones when `forWrite`. */
function cacheHolds(cache: GuestMemoryCache, addr: number, len: number, forWrite: boolean): boolean {
  return addr >= cache.start && addr + len <= cache.start + cache.bytes.length &&
    (cache.writable || !forWrite);
}

/** The store of a released chain: it holds nothing. */
const RELEASED = new ChainStore(0);

const NO_BUFFERS: VirtqBuffer[] = [];

/** Makes a chain from buffers the queue walked; set by the class's static block. */
let newChain: (
  memory: GuestMemory,
  head: number,
  store: ChainStore,
  count: number,
  readCount: number,
  readableLength: number,
  writableLength: number,
) => DescriptorChain;

/** Takes a chain's store away (the chain then holds nothing); set by the class's static block. */
let releaseChain: (chain: DescriptorChain) => ChainStore;

/**
 * A descriptor chain taken from the available ring: its device-readable buffers, then its
 * device-writable ones, all checked to lie in guest RAM.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DescriptorChain } from "./virtqueue.ts";
 * const ram = new Uint8Array(64);
 * const memory = {
 *   check: () => true,
 *   read: (a: bigint, into: Uint8Array) => (into.set(ram.subarray(Number(a), Number(a) + into.length)), true),
 *   write: (a: bigint, from: Uint8Array) => (ram.set(from, Number(a)), true),
 * };
 * const chain = new DescriptorChain(memory, 0, [], [{ addr: 8n, len: 4 }, { addr: 32n, len: 4 }]);
 * assert.equal(chain.write(2, new Uint8Array([1, 2, 3, 4])), 4);
 * assert.deepEqual([...ram.subarray(10, 12), ...ram.subarray(32, 34)], [1, 2, 3, 4]);
 * ```
 */
export class DescriptorChain {
  /** Index of the head descriptor (the id the used ring reports). */
  readonly head: number;
  readonly #memory: GuestMemory;
  /** The buffers, device-readable ones first: `#count` of them in `#store`. */
  #store: ChainStore;
  #count: number;
  /** How many of the buffers are device-readable. */
  #readCount: number;
  #readableLength: number;
  #writableLength: number;

  /** A chain over `memory` (made by {@link Virtqueue.pop}; tests may make one directly). */
  constructor(memory: GuestMemory, head: number, readable: VirtqBuffer[], writable: VirtqBuffer[]) {
    this.#memory = memory;
    this.head = head;
    const count = readable.length + writable.length;
    this.#store = count === 0 ? RELEASED : new ChainStore(count);
    this.#count = count;
    this.#readCount = readable.length;
    this.#readableLength = this.#writableLength = 0;
    let i = 0;
    for (const b of readable) this.#store.set(i++, b.addr, b.len, null), this.#readableLength += b.len;
    for (const b of writable) this.#store.set(i++, b.addr, b.len, null), this.#writableLength += b.len;
  }

  static {
    newChain = (memory, head, store, count, readCount, readableLength, writableLength) => {
      const chain = new DescriptorChain(memory, head, NO_BUFFERS, NO_BUFFERS);
      chain.#store = store;
      chain.#count = count;
      chain.#readCount = readCount;
      chain.#readableLength = readableLength;
      chain.#writableLength = writableLength;
      return chain;
    };
    releaseChain = (chain) => {
      const store = chain.#store;
      chain.#store = RELEASED;
      chain.#count =
        chain.#readCount =
        chain.#readableLength =
        chain.#writableLength =
          0;
      return store;
    };
  }

  #buffersOf(first: number, end: number): VirtqBuffer[] {
    const list: VirtqBuffer[] = [];
    for (let i = first; i < end; i++) {
      list.push({ addr: this.#store.address(i, 0), len: this.#store.lens[i] });
    }
    return list;
  }

  /** Device-readable buffers, in order (made on each call). */
  get readable(): readonly VirtqBuffer[] {
    return this.#buffersOf(0, this.#readCount);
  }

  /** Device-writable buffers, in order (made on each call). */
  get writable(): readonly VirtqBuffer[] {
    return this.#buffersOf(this.#readCount, this.#count);
  }

  /** Sum of the readable lengths (0 exactly when there is no readable buffer: none is empty). */
  get readableLength(): number {
    return this.#readableLength;
  }

  /** Sum of the writable lengths (0 exactly when there is no writable buffer: none is empty). */
  get writableLength(): number {
    return this.#writableLength;
  }

  /**
   * Copies readable bytes from byte `offset` of the chain into `into`; returns how many (fewer at
   * the end of the readable part).
   *
   * @throws {VirtioProtocolError} if guest RAM under a buffer went away since the chain was taken.
   */
  read(offset: number, into: Uint8Array): number {
    return this.#copy(false, offset, into);
  }

  /**
   * Copies `from` into the writable buffers from byte `offset` of the writable part; returns how
   * many bytes fit.
   *
   * @throws {VirtioProtocolError} if guest RAM under a buffer went away since the chain was taken.
   */
  write(offset: number, from: Uint8Array): number {
    return this.#copy(true, offset, from);
  }

  /**
   * Bytes `[offset, offset + length)` of the readable part (or of the writable part, `writable`),
   * split at buffer boundaries: each piece with a live view of guest RAM where the memory gives one
   * (`GuestMemory.map`), or `view` null — then copy it with {@link read} or {@link write}. Pieces
   * stop at the end of the part. A writable piece's pages count as written (dirty) at once.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { DescriptorChain } from "./virtqueue.ts";
   * const ram = new Uint8Array(0x100);
   * const memory = {
   *   check: () => true,
   *   read: () => true,
   *   write: () => true,
   *   map: (addr: bigint, length: number) => addr < 0x80n ? ram.subarray(Number(addr), Number(addr) + length) : null,
   * };
   * const chain = new DescriptorChain(memory, 0, [], [{ addr: 0x70n, len: 0x10 }, { addr: 0x80n, len: 8 }]);
   * const pieces = chain.pieces(true, 4, 0x10);
   * assert.deepEqual(pieces.map((p) => [p.offset, p.length, p.view !== null]), [[4, 12, true], [16, 4, false]]);
   * ```
   */
  pieces(writable: boolean, offset: number, length: number): ChainPiece[] {
    const pieces: ChainPiece[] = [];
    const memory = this.#memory;
    const store = this.#store;
    const { lens, caches, addrs } = store;
    const end = writable ? this.#count : this.#readCount;
    let skip = offset;
    let at = 0;
    let left = length;
    for (let i = writable ? this.#readCount : 0; i < end && left > 0; i++) {
      const len = lens[i];
      if (skip >= len) {
        skip -= len;
        at += len;
        continue;
      }
      const n = Math.min(len - skip, left);
      const cache = caches[i];
      let view: Uint8Array | null = null;
      if (cache !== null && cache.valid()) {
        const from = addrs[i] - cache.start + skip;
        view = cache.bytes.subarray(from, from + n);
        if (writable) cache.wrote(from, n);
      } else if (memory.map !== undefined) {
        view = memory.map(store.address(i, skip), n, writable);
      }
      pieces.push({ offset: at + skip, length: n, view });
      at += len;
      left -= n;
      skip = 0;
    }
    return pieces;
  }

  /**
   * Bytes `[offset, offset + length)` of the readable part (or of the writable part, `writable`) as
   * {@link RamSpans} in `spans`, when every byte of them lies in a cache of guest RAM the queue
   * holds (`GuestMemory.cache`); otherwise false, with `spans` empty — then use {@link pieces}. A
   * writable span's pages count as written (dirty) at once, as with {@link pieces}.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { DescriptorChain, RamSpans } from "./virtqueue.ts";
   * const memory = { check: () => true, read: () => true, write: () => true };
   * const chain = new DescriptorChain(memory, 0, [], [{ addr: 0x70n, len: 0x10 }]);
   * const spans = new RamSpans();
   * assert.equal(chain.gather(true, 0, 0x10, spans), false); // no cache: a chain made by hand has none
   * assert.equal(spans.count, 0);
   * ```
   */
  gather(writable: boolean, offset: number, length: number, spans: RamSpans): boolean {
    spans.clear();
    const { lens, caches, addrs } = this.#store;
    const end = writable ? this.#count : this.#readCount;
    let checked: GuestMemoryCache | null = null;
    let buffer: ArrayBufferLike | null = null;
    let base = 0; // a guest address's byte offset in `buffer`, less the address
    let skip = offset;
    let left = length;
    // RamSpans.add inlined (this loop runs once per buffer: 256 for 1 MiB).
    const { buffers, offsets, lengths } = spans;
    let count = 0;
    let lastEnd = -1; // where the last span ends in `buffer`
    for (let i = writable ? this.#readCount : 0; i < end && left > 0; i++) {
      const len = lens[i];
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const cache = caches[i];
      if (cache === null) break;
      if (cache !== checked) {
        if (!cache.valid()) break;
        checked = cache;
        buffer = cache.bytes.buffer;
        base = cache.bytes.byteOffset - cache.start;
        lastEnd = -1;
      }
      const n = len - skip < left ? len - skip : left;
      const addr = addrs[i] + skip;
      const at = base + addr;
      if (at === lastEnd) lengths[count - 1] += n;
      else {
        buffers[count] = buffer!;
        offsets[count] = at;
        lengths[count] = n;
        count++;
      }
      lastEnd = at + n;
      if (writable) cache.wrote(addr - cache.start, n);
      left -= n;
      skip = 0;
    }
    if (left === 0) {
      spans.count = count;
      return true;
    }
    spans.clear();
    return false;
  }

  /**
   * Copies between `data` and the writable part (`isWrite`) or the readable one, from byte `offset`
   * of it. The buffer holding `offset` is found from the part's nearer end: a status byte is last.
   */
  #copy(isWrite: boolean, offset: number, data: Uint8Array): number {
    const store = this.#store;
    const { lens, caches, addrs } = store;
    const first = isWrite ? this.#readCount : 0;
    const end = isWrite ? this.#count : this.#readCount;
    const partLength = isWrite ? this.#writableLength : this.#readableLength;
    if (offset >= partLength || data.length === 0) return 0;
    let i = first;
    let skip = offset;
    if (offset > partLength / 2) {
      let start = partLength; // where buffer i starts, from the end
      for (i = end; start > offset;) start -= lens[--i];
      skip = offset - start;
    } else {
      while (skip >= lens[i]) skip -= lens[i++];
    }
    let done = 0;
    for (; i < end && done < data.length; i++) {
      const n = Math.min(lens[i] - skip, data.length - done);
      const cache = caches[i];
      if (cache !== null && cache.valid()) {
        const at = addrs[i] - cache.start + skip;
        const bytes = cache.bytes;
        if (n <= SMALL_COPY) {
          // A header or a status byte: a loop costs less than the views set() needs.
          if (isWrite) { for (let k = 0; k < n; k++) bytes[at + k] = data[done + k]; }
          else for (let k = 0; k < n; k++) data[done + k] = bytes[at + k];
        } else if (isWrite) {
          bytes.set(n === data.length ? data : data.subarray(done, done + n), at);
        } else {
          data.set(bytes.subarray(at, at + n), done);
        }
        if (isWrite) cache.wrote(at, n);
      } else {
        const addr = store.address(i, skip);
        const piece = data.subarray(done, done + n);
        const ok = isWrite ? this.#memory.write(addr, piece) : this.#memory.read(addr, piece);
        if (!ok) throw new VirtioProtocolError(`buffer at 0x${addr.toString(16)} is no longer guest RAM`);
      }
      done += n;
      skip = 0;
    }
    return done;
  }
}

/** Features a queue walks the rings with. */
export interface VirtqueueFeatures {
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
}

/**
 * One split virtqueue, device side.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Virtqueue } from "./virtqueue.ts";
 * const ram = new Uint8Array(0x10000);
 * const inside = (a: bigint, n: number) => a + BigInt(n) <= BigInt(ram.length);
 * const memory = {
 *   check: inside,
 *   read: (a: bigint, into: Uint8Array) => inside(a, into.length) && (into.set(ram.subarray(Number(a), Number(a) + into.length)), true),
 *   write: (a: bigint, from: Uint8Array) => inside(a, from.length) && (ram.set(from, Number(a)), true),
 * };
 * const q = new Virtqueue(0, 8, memory);
 * q.descAddr = 0x1000n;
 * q.driverAddr = 0x2000n;
 * q.deviceAddr = 0x3000n;
 * q.enable({ indirect: false, eventIdx: false });
 * const dv = new DataView(ram.buffer);
 * dv.setBigUint64(0x1000, 0x8000n, true); // descriptor 0: 16 device-writable bytes at 0x8000
 * dv.setUint32(0x1008, 16, true);
 * dv.setUint16(0x100c, 2, true);
 * dv.setUint16(0x2004, 0, true); // avail ring[0] = 0
 * dv.setUint16(0x2002, 1, true); // avail idx = 1
 * const chain = q.pop()!;
 * chain.write(0, new Uint8Array([7]));
 * q.push(chain, 1);
 * assert.equal(dv.getUint16(0x3002, true), 1); // used idx
 * assert.equal(ram[0x8000], 7);
 * ```
 */
export class Virtqueue implements Snapshottable {
  /** Queue index. */
  readonly index: number;
  /** Largest size the device supports (what the driver reads at first). */
  readonly maxSize: number;
  /** MSI-X vector of the queue, or {@link VIRTIO_NO_VECTOR}. */
  msixVector: number = VIRTIO_NO_VECTOR;
  readonly #memory: GuestMemory;
  readonly #scratch = new Uint8Array(16);
  readonly #view = new DataView(this.#scratch.buffer);
  #size: number;
  #descAddr = 0n;
  #driverAddr = 0n;
  #deviceAddr = 0n;
  // The rings through caches of guest RAM (QEMU's VRingMemoryRegionCaches): each ring's cache and
  // the ring's offset in it, taken at the first use after enable and again after any change of the
  // memory map; null while there are none (then every access goes through GuestMemory's checks).
  #descCache: GuestMemoryCache | null = null;
  #descAt = 0;
  #availCache: GuestMemoryCache | null = null;
  #availAt = 0;
  #usedCache: GuestMemoryCache | null = null;
  #usedAt = 0;
  /** The cache the last buffer or indirect table lay in: the next one is likely in it too. */
  #dataCache: GuestMemoryCache | null = null;
  // The descriptor #loadDesc read last, and the table it reads from: a cache's DataView and the
  // table's offset in it, or (#table null) the table's guest address, read through the checks.
  // #dAddr is NaN when the address is 2^53 or more; #dBig holds it then.
  #dAddr = 0;
  #dBig = 0n;
  #dLen = 0;
  #dFlags = 0;
  #dNext = 0;
  #table: DataView | null = null;
  #tableAt = 0;
  #tableAddr = 0n;
  #enabled = false;
  #features: VirtqueueFeatures = { indirect: false, eventIdx: false };
  #lastAvail = 0;
  #usedIdx = 0;
  #inUse = 0;
  #signalledUsed = 0;
  #signalledValid = false;
  /** The chains popped since the last push or fill, in order: the ones {@link unpop} may give back. */
  readonly #popped: DescriptorChain[] = [];
  /** A chain store given back by push or unpop, for the next walk. */
  #spare: ChainStore | null = null;

  /**
   * A queue of at most `maxSize` entries (a power of two up to 32768), reading the rings through
   * `memory`.
   *
   * @throws {RangeError} if `maxSize` is not a power of two in 1–32768.
   */
  constructor(index: number, maxSize: number, memory: GuestMemory) {
    if (
      !Number.isInteger(maxSize) || maxSize < 1 || maxSize > VIRTQUEUE_MAX_SIZE || (maxSize & (maxSize - 1))
    ) {
      throw new RangeError(
        `virtqueue ${index}: size ${maxSize} is not a power of two in 1–${VIRTQUEUE_MAX_SIZE}`,
      );
    }
    this.index = index;
    this.maxSize = maxSize;
    this.#size = maxSize;
    this.#memory = memory;
  }

  /** Queue size the driver chose (a power of two, at most {@link maxSize}). */
  get size(): number {
    return this.#size;
  }
  set size(size: number) {
    this.#size = size;
    this.#dropCaches();
  }

  /** Guest-physical address of the descriptor table. */
  get descAddr(): bigint {
    return this.#descAddr;
  }
  set descAddr(addr: bigint) {
    this.#descAddr = addr;
    this.#dropCaches();
  }

  /** Guest-physical address of the driver area (available ring). */
  get driverAddr(): bigint {
    return this.#driverAddr;
  }
  set driverAddr(addr: bigint) {
    this.#driverAddr = addr;
    this.#dropCaches();
  }

  /** Guest-physical address of the device area (used ring). */
  get deviceAddr(): bigint {
    return this.#deviceAddr;
  }
  set deviceAddr(addr: bigint) {
    this.#deviceAddr = addr;
    this.#dropCaches();
  }

  /** Whether the driver enabled the queue. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Chains taken and not yet returned. */
  get inUse(): number {
    return this.#inUse;
  }

  /** The next available-ring index the device will take. */
  get lastAvailIdx(): number {
    return this.#lastAvail;
  }

  /** The used index the device last published. */
  get usedIdx(): number {
    return this.#usedIdx;
  }

  /**
   * Enables the queue with the negotiated `features` (virtio-pci's `queue_enable` = 1).
   *
   * @throws {VirtioProtocolError} if a ring is misaligned or not wholly in guest RAM (the used ring
   *   must be writable).
   */
  enable(features: VirtqueueFeatures): void {
    const n = this.size;
    const rings: [string, bigint, number, bigint, boolean][] = [
      ["descriptor table", this.descAddr, DESC_SIZE * n, 16n, false],
      ["driver area", this.driverAddr, 6 + 2 * n, 2n, false],
      ["device area", this.deviceAddr, 6 + 8 * n, 4n, true],
    ];
    for (const [what, addr, length, align, forWrite] of rings) {
      if (addr % align !== 0n) {
        throw new VirtioProtocolError(
          `queue ${this.index}: ${what} at 0x${addr.toString(16)} is not ${align}-byte aligned`,
        );
      }
      if (!this.#memory.check(addr, length, forWrite)) {
        throw new VirtioProtocolError(
          `queue ${this.index}: ${what} at 0x${addr.toString(16)} (0x${
            length.toString(16)
          } bytes) is not in guest RAM`,
        );
      }
    }
    this.#features = { ...features };
    this.#enabled = true;
    this.#dropCaches();
  }

  /** Back to the reset state: disabled, size {@link maxSize}, addresses 0, no vector, indices 0. */
  reset(): void {
    this.#enabled = false;
    this.size = this.maxSize;
    this.descAddr = this.driverAddr = this.deviceAddr = 0n;
    this.msixVector = VIRTIO_NO_VECTOR;
    this.#lastAvail =
      this.#usedIdx =
      this.#inUse =
      this.#signalledUsed =
        0;
    this.#signalledValid = false;
    this.#popped.length = 0;
    this.#dropCaches();
  }

  /**
   * The driver's settings (size, ring addresses, MSI-X vector, enable with the negotiated ring
   * features) and the device's progress: the next available index to take, the used index, the
   * chains in use, and the EVENT_IDX bookkeeping of the last interrupt decision. With these the next
   * notify after a load takes exactly the next available chain, and interrupts are suppressed or
   * raised exactly as they would have been. The rings themselves are guest RAM.
   */
  saveState(): StateObject {
    return {
      size: this.size,
      descAddr: this.descAddr,
      driverAddr: this.driverAddr,
      deviceAddr: this.deviceAddr,
      msixVector: this.msixVector,
      enabled: this.#enabled,
      indirect: this.#features.indirect,
      eventIdx: this.#features.eventIdx,
      lastAvailIdx: this.#lastAvail,
      usedIdx: this.#usedIdx,
      inUse: this.#inUse,
      signalledUsed: this.#signalledUsed,
      signalledValid: this.#signalledValid,
    };
  }

  /**
   * Puts a {@link saveState} result back. Ring placement is checked for alignment only: guest RAM
   * may not be in place yet during a restore, and a ring outside it is refused on first use as always.
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of range
   * (the queue is then unchanged).
   */
  loadState(state: StateObject): void {
    this.prepareState(new StateReader(`virtqueue ${this.index}`, state))();
  }

  /** Checks a saved queue state read through `r` and returns the function that applies it. */
  prepareState(r: StateReader): () => void {
    const size = r.int("size", 1, this.maxSize);
    if (size & (size - 1)) r.fail("size", `is ${size}, not a power of two`);
    const descAddr = r.bigint("descAddr");
    const driverAddr = r.bigint("driverAddr");
    const deviceAddr = r.bigint("deviceAddr");
    const msixVector = r.u16("msixVector");
    const enabled = r.bool("enabled");
    const indirect = r.bool("indirect");
    const eventIdx = r.bool("eventIdx");
    const lastAvail = r.u16("lastAvailIdx");
    const usedIdx = r.u16("usedIdx");
    const inUse = r.int("inUse", 0, size);
    const signalledUsed = r.u16("signalledUsed");
    const signalledValid = r.bool("signalledValid");
    if (enabled) {
      for (
        const [field, addr, align] of [["descAddr", descAddr, 16n], ["driverAddr", driverAddr, 2n], [
          "deviceAddr",
          deviceAddr,
          4n,
        ]] as const
      ) {
        if (addr % align !== 0n) r.fail(field, `is 0x${addr.toString(16)}, not ${align}-byte aligned`);
      }
    }
    return () => {
      this.size = size;
      this.descAddr = descAddr;
      this.driverAddr = driverAddr;
      this.deviceAddr = deviceAddr;
      this.msixVector = msixVector;
      this.#enabled = enabled;
      this.#features = { indirect, eventIdx };
      this.#lastAvail = lastAvail;
      this.#usedIdx = usedIdx;
      this.#inUse = inUse;
      this.#signalledUsed = signalledUsed;
      this.#signalledValid = signalledValid;
      this.#popped.length = 0;
      this.#dropCaches();
    };
  }

  /**
   * Takes the next available chain, or `null` when there is none (or the queue is not enabled).
   *
   * @throws {VirtioProtocolError} for every hostile shape listed in the module documentation.
   */
  pop(): DescriptorChain | null {
    if (!this.#enabled) return null;
    const cached = this.#ringsCached();
    let availIdx = this.#availRead(2, "available index", cached);
    if (availIdx === this.#lastAvail && this.#features.eventIdx) {
      // Tell the driver which index to notify at, then look again (its store and ours cross).
      this.#usedWrite16(this.#availEventOffset(), this.#lastAvail, "avail_event", cached);
      this.#memory.fence?.();
      availIdx = this.#availRead(2, "available index", cached);
    }
    if (availIdx === this.#lastAvail) return null;
    const ahead = (availIdx - this.#lastAvail) & 0xffff;
    if (ahead > this.#size) {
      throw new VirtioProtocolError(
        `queue ${this.index}: driver moved the available index from ${this.#lastAvail} to ${availIdx}`,
      );
    }
    if (this.#inUse >= this.#size) {
      throw new VirtioProtocolError(`queue ${this.index}: more chains in use than entries`);
    }
    this.#memory.fence?.();
    const slot = this.#lastAvail % this.#size;
    const head = this.#availRead(4 + 2 * slot, "available ring", cached);
    if (head >= this.#size) {
      throw new VirtioProtocolError(
        `queue ${this.index}: available head ${head} is not below the size ${this.#size}`,
      );
    }
    this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
    if (this.#features.eventIdx) {
      this.#usedWrite16(this.#availEventOffset(), this.#lastAvail, "avail_event", cached);
    }
    const chain = this.#walk(head, cached);
    this.#inUse++;
    this.#popped.push(chain);
    return chain;
  }

  #walk(head: number, cached: boolean): DescriptorChain {
    const store = this.#spare ?? new ChainStore(16);
    this.#spare = null;
    store.big = null;
    let readCount = 0;
    let readable = 0;
    let writable = 0;
    let max = this.#size;
    if (cached) {
      this.#table = this.#descCache!.data;
      this.#tableAt = this.#descAt;
    } else {
      this.#table = null;
      this.#tableAddr = this.#descAddr;
    }
    this.#loadDesc(head, "descriptor table");
    let inIndirect = false;
    if (this.#dFlags & VIRTQ_DESC_F_INDIRECT) {
      if (!this.#features.indirect) {
        throw new VirtioProtocolError(
          `queue ${this.index}: indirect descriptor without VIRTIO_F_INDIRECT_DESC`,
        );
      }
      const len = this.#dLen;
      const addr = this.#descAddress();
      if (len === 0 || len % DESC_SIZE !== 0) {
        throw new VirtioProtocolError(
          `queue ${this.index}: indirect table of ${len} bytes is not a non-empty multiple of 16`,
        );
      }
      const cache = this.#bufferCache(addr, len, false);
      if (cache === undefined) {
        throw new VirtioProtocolError(
          `queue ${this.index}: indirect table at 0x${addr.toString(16)} is not in guest RAM`,
        );
      }
      if (cache !== null) {
        this.#table = cache.data;
        this.#tableAt = (addr as number) - cache.start;
      } else {
        this.#table = null;
        this.#tableAddr = BigInt(addr);
      }
      max = len / DESC_SIZE;
      inIndirect = true;
      this.#loadDesc(0, "indirect table");
    }
    // The cache the last buffer lay in, once checked valid in this walk (the map cannot change
    // during it): most buffers of a request lie in it, and then cost a few comparisons.
    let known: GuestMemoryCache | null = null;
    // Its bounds (an empty range while there is none) and whether it takes writes.
    let knownStart = 0;
    let knownEnd = 0;
    let knownWritable = false;
    let count = 0;
    let flags = this.#dFlags;
    let len = this.#dLen;
    let addr = this.#dAddr;
    let next = this.#dNext;
    for (;;) {
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        throw new VirtioProtocolError(
          `queue ${this.index}: ${
            inIndirect ? "nested indirect table" : "indirect descriptor inside a chain"
          }`,
        );
      }
      if (len === 0) throw new VirtioProtocolError(`queue ${this.index}: zero-length buffer`);
      const forWrite = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      let cache: GuestMemoryCache | null | undefined = known;
      // NaN (2^53 and up) fails these comparisons: such a buffer never has a cache.
      if (!(addr >= knownStart && addr + len <= knownEnd && (knownWritable || !forWrite))) {
        const where = addr === addr ? addr : this.#dBig;
        cache = this.#bufferCache(where, len, forWrite);
        if (cache === undefined) {
          throw new VirtioProtocolError(
            `queue ${this.index}: buffer at 0x${where.toString(16)} (0x${len.toString(16)} bytes) is not ${
              forWrite ? "writable " : ""
            }guest RAM`,
          );
        }
        if (cache !== null) {
          known = cache;
          knownStart = cache.start;
          knownEnd = cache.start + cache.bytes.length;
          knownWritable = cache.writable;
        }
      }
      if (forWrite) writable += len;
      else if (writable > 0) {
        throw new VirtioProtocolError(
          `queue ${this.index}: device-readable buffer after a device-writable one`,
        );
      } else {
        readable += len;
        readCount++;
      }
      // NaN (2^53 and up) fails every comparison above, so such a buffer never has a cache.
      // ChainStore.set's common case inline (an exact address, room in the store); set does the rest.
      if (addr === addr && count < store.lens.length && addr <= EXACT - len) {
        store.addrs[count] = addr;
        store.lens[count] = len;
        store.caches[count] = cache;
      } else store.set(count, addr === addr ? addr : this.#dBig, len, cache);
      if (readable + writable > 0xffff_ffff) {
        throw new VirtioProtocolError(`queue ${this.index}: chain lengths add up to 4 GiB or more`);
      }
      if (++count > max) {
        throw new VirtioProtocolError(`queue ${this.index}: descriptor loop (chain longer than ${max})`);
      }
      if (count > VIRTQUEUE_MAX_ELEMENTS) {
        throw new VirtioProtocolError(
          `queue ${this.index}: more than ${VIRTQUEUE_MAX_ELEMENTS} buffers in one chain`,
        );
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= max) {
        throw new VirtioProtocolError(
          `queue ${this.index}: next descriptor ${next} is not below ${max}`,
        );
      }
      const table = this.#table;
      if (table !== null) {
        // #loadDesc's cached case, into locals: this loop runs once per buffer (256 for 1 MiB).
        const at = this.#tableAt + DESC_SIZE * next;
        const lo = table.getUint32(at, true);
        const hi = table.getUint32(at + 4, true);
        if (hi < 0x20_0000) addr = hi * 0x1_0000_0000 + lo;
        else {
          addr = NaN;
          this.#dBig = (BigInt(hi) << 32n) | BigInt(lo);
        }
        len = table.getUint32(at + 8, true);
        flags = table.getUint16(at + 12, true);
        next = table.getUint16(at + 14, true);
      } else {
        this.#loadDesc(next, inIndirect ? "indirect table" : "descriptor table");
        flags = this.#dFlags;
        len = this.#dLen;
        addr = this.#dAddr;
        next = this.#dNext;
      }
    }
    return newChain(this.#memory, head, store, count, readCount, readable, writable);
  }

  /** The address of the descriptor {@link #loadDesc} read last. */
  #descAddress(): number | bigint {
    const addr = this.#dAddr;
    return addr === addr ? addr : this.#dBig;
  }

  /**
   * Where a buffer (or indirect table) of `len` bytes at `addr` may be reached: the cache of guest
   * RAM it lies in, null when it is guest RAM (writable RAM when `forWrite`) but not in a cache,
   * and undefined when it is not.
   */
  #bufferCache(addr: number | bigint, len: number, forWrite: boolean): GuestMemoryCache | null | undefined {
    const memory = this.#memory;
    if (typeof addr === "number" && addr <= EXACT - len && memory.cache !== undefined) {
      const last = this.#dataCache;
      if (last !== null && cacheHolds(last, addr, len, forWrite) && last.valid()) return last;
      const cache = memory.cache(BigInt(addr), len, forWrite);
      if (cache !== null) return this.#dataCache = cache;
    }
    return memory.check(BigInt(addr), len, forWrite) ? null : undefined;
  }

  /**
   * Gives back the chain {@link pop} returned last, unused: the next {@link pop} takes it again
   * (QEMU's `virtqueue_unpop`; virtio-net keeps a receive buffer too small for a frame this way).
   * Repeated, it gives back the chains popped before it, newest first (QEMU's `virtqueue_rewind`:
   * virtio-net's mergeable receive gives back the chains of a frame that did not fit), as long as
   * nothing was pushed or filled since. The chain holds no buffers afterwards.
   *
   * @throws {RangeError} if `chain` is not the newest chain still out since the last push or fill (a
   *   device bug, not the guest's).
   */
  unpop(chain: DescriptorChain): void {
    const popped = this.#popped;
    if (popped.length === 0 || popped[popped.length - 1] !== chain) {
      throw new RangeError(`queue ${this.index}: unpop of a chain not just popped`);
    }
    popped.length--;
    this.#lastAvail = (this.#lastAvail - 1) & 0xffff;
    this.#inUse--;
    this.#takeBack(chain);
  }

  /** Takes `chain`'s store for the next walk; the chain holds nothing afterwards. */
  #takeBack(chain: DescriptorChain): void {
    const store = releaseChain(chain);
    if (store !== RELEASED) this.#spare = store;
  }

  /**
   * Returns `chain` to the driver with `written` bytes written into its writable part (clamped to
   * that part's length): the used element, a fence, then the used index ({@link fill} then
   * {@link flush} of one).
   * The chain gives its buffers back to the queue and holds none afterwards (its lengths read 0).
   *
   * @throws {VirtioProtocolError} if the used ring is no longer guest RAM.
   */
  push(chain: DescriptorChain, written: number): void {
    const cached = this.#enabled && this.#ringsCached(); // once: nothing between can change them
    this.#fill(chain, written, 0, cached);
    this.#flush(1, cached);
  }

  /**
   * Writes `chain`'s used element `offset` places after the used index, without moving the index
   * (QEMU's `virtqueue_fill`): the driver sees nothing until {@link flush}. A device that returns
   * several chains for one piece of work (virtio-net's mergeable receive buffers: the driver reads
   * them as one frame) fills each and flushes them together. `written` is clamped as in
   * {@link push}; the chain holds no buffers afterwards.
   *
   * @throws {VirtioProtocolError} if the used ring is no longer guest RAM.
   */
  fill(chain: DescriptorChain, written: number, offset: number): void {
    this.#fill(chain, written, offset, this.#enabled && this.#ringsCached());
  }

  /** {@link fill}, the rings' caches already checked (`cached`). */
  #fill(chain: DescriptorChain, written: number, offset: number, cached: boolean): void {
    this.#popped.length = 0;
    const len = Math.max(0, Math.min(Math.floor(written), chain.writableLength));
    const slot = (this.#usedIdx + offset) % this.#size;
    if (cached) {
      const used = this.#usedCache!;
      const at = this.#usedAt + 4 + 8 * slot;
      used.data.setUint32(at, chain.head, true);
      used.data.setUint32(at + 4, len, true);
      used.wrote(at, 8);
    } else {
      this.#view.setUint32(0, chain.head, true);
      this.#view.setUint32(4, len, true);
      const elem = this.#deviceAddr + 4n + BigInt(8 * slot);
      if (!this.#memory.write(elem, this.#scratch.subarray(0, 8))) {
        throw new VirtioProtocolError(`queue ${this.index}: used ring is not in guest RAM`);
      }
    }
    if (this.#inUse > 0) this.#inUse--;
    this.#takeBack(chain);
  }

  /**
   * Publishes the `count` used elements {@link fill} wrote: a fence, then the used index moves by
   * `count` (QEMU's `virtqueue_flush`).
   *
   * @throws {VirtioProtocolError} if the used ring is no longer guest RAM.
   */
  flush(count: number): void {
    this.#flush(count, this.#enabled && this.#ringsCached());
  }

  /** {@link flush}, the rings' caches already checked (`cached`). */
  #flush(count: number, cached: boolean): void {
    this.#memory.fence?.();
    this.#usedIdx = (this.#usedIdx + count) & 0xffff;
    // The fence ran no code of ours: the caches are as valid as they were a moment ago.
    this.#usedWrite16(2, this.#usedIdx, "used index", cached);
  }

  /**
   * Whether the driver wants an interrupt for what was pushed since the last call (QEMU's
   * `virtio_split_should_notify`): with EVENT_IDX, when the used index passed `used_event`;
   * otherwise unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
   *
   * @throws {VirtioProtocolError} if the driver area is no longer guest RAM.
   */
  shouldNotify(): boolean {
    this.#memory.fence?.();
    const cached = this.#enabled && this.#ringsCached();
    if (!this.#features.eventIdx) {
      return !(this.#availRead(0, "driver flags", cached) & VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
    const valid = this.#signalledValid;
    const old = this.#signalledUsed;
    const now = this.#usedIdx;
    this.#signalledValid = true;
    this.#signalledUsed = now;
    const usedEvent = this.#availRead(4 + 2 * this.#size, "used_event", cached);
    return !valid || vringNeedEvent(usedEvent, now, old);
  }

  /** Offset of `avail_event` in the device area. */
  #availEventOffset(): number {
    return 4 + 8 * this.#size;
  }

  /** Forgets the ring caches (the rings moved, resized, or the queue was enabled or reset). */
  #dropCaches(): void {
    this.#descCache = this.#availCache = this.#usedCache = null;
  }

  /**
   * Whether the rings can be reached through caches now: the ones held are still valid, or new ones
   * could be taken. Only for an enabled queue (whose ring placement was checked).
   */
  #ringsCached(): boolean {
    const used = this.#usedCache;
    if (
      used !== null && used.valid() && (this.#availCache === used || this.#availCache!.valid()) &&
      (this.#descCache === used || this.#descCache!.valid())
    ) {
      return true;
    }
    this.#dropCaches();
    const memory = this.#memory;
    if (memory.cache === undefined) return false;
    const n = this.#size;
    const usedCache = memory.cache(this.#deviceAddr, 6 + 8 * n, true);
    if (usedCache === null) return false;
    const inUsed = (addr: bigint, length: number) =>
      addr >= BigInt(usedCache.start) &&
      addr + BigInt(length) <= BigInt(usedCache.start + usedCache.bytes.length);
    const availCache = inUsed(this.#driverAddr, 6 + 2 * n)
      ? usedCache
      : memory.cache(this.#driverAddr, 6 + 2 * n, false);
    const descCache = inUsed(this.#descAddr, DESC_SIZE * n)
      ? usedCache
      : memory.cache(this.#descAddr, DESC_SIZE * n, false);
    if (availCache === null || descCache === null) return false;
    this.#usedCache = usedCache;
    this.#usedAt = Number(this.#deviceAddr) - usedCache.start;
    this.#availCache = availCache;
    this.#availAt = Number(this.#driverAddr) - availCache.start;
    this.#descCache = descCache;
    this.#descAt = Number(this.#descAddr) - descCache.start;
    this.#dataCache = usedCache;
    return true;
  }

  /** The 16-bit value at `offset` of the driver area. */
  #availRead(offset: number, what: string, cached: boolean): number {
    if (cached) return this.#availCache!.data.getUint16(this.#availAt + offset, true);
    return this.#read16(this.#driverAddr + BigInt(offset), what);
  }

  /** Writes a 16-bit `value` at `offset` of the device area. */
  #usedWrite16(offset: number, value: number, what: string, cached: boolean): void {
    if (cached) {
      const used = this.#usedCache!;
      const at = this.#usedAt + offset;
      used.data.setUint16(at, value, true);
      used.wrote(at, 2);
    } else {
      this.#write16(this.#deviceAddr + BigInt(offset), value, what);
    }
  }

  #read16(addr: bigint, what: string): number {
    if (!this.#memory.read(addr, this.#scratch.subarray(0, 2))) {
      throw new VirtioProtocolError(
        `queue ${this.index}: ${what} at 0x${addr.toString(16)} is not in guest RAM`,
      );
    }
    return this.#view.getUint16(0, true);
  }

  #write16(addr: bigint, value: number, what: string): void {
    this.#view.setUint16(0, value, true);
    if (!this.#memory.write(addr, this.#scratch.subarray(0, 2))) {
      throw new VirtioProtocolError(
        `queue ${this.index}: ${what} at 0x${addr.toString(16)} is not in guest RAM`,
      );
    }
  }

  /**
   * Reads descriptor `i` of the current table into #dAddr, #dLen, #dFlags and #dNext: from the
   * cache's view, or through the checks. The address is a number when below 2^53.
   */
  #loadDesc(i: number, what: string): void {
    let v = this.#table;
    let at = this.#tableAt + DESC_SIZE * i;
    if (v === null) {
      const addr = this.#tableAddr + BigInt(DESC_SIZE * i);
      if (!this.#memory.read(addr, this.#scratch)) {
        throw new VirtioProtocolError(
          `queue ${this.index}: ${what} entry at 0x${addr.toString(16)} is not in guest RAM`,
        );
      }
      v = this.#view;
      at = 0;
    }
    const lo = v.getUint32(at, true);
    const hi = v.getUint32(at + 4, true);
    if (hi < 0x20_0000) {
      this.#dAddr = hi * 0x1_0000_0000 + lo;
    } else {
      this.#dAddr = NaN;
      this.#dBig = (BigInt(hi) << 32n) | BigInt(lo);
    }
    this.#dLen = v.getUint32(at + 8, true);
    this.#dFlags = v.getUint16(at + 12, true);
    this.#dNext = v.getUint16(at + 14, true);
  }
}

/**
 * virtio's `vring_need_event`: whether moving the used index from `old` to `now` passed `event`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { vringNeedEvent } from "./virtqueue.ts";
 * assert.equal(vringNeedEvent(5, 6, 5), true); // the driver asked to hear about index 5 → 6
 * assert.equal(vringNeedEvent(9, 6, 5), false);
 * ```
 */
export function vringNeedEvent(event: number, now: number, old: number): boolean {
  return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
}
