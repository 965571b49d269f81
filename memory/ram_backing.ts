/**
 * The bytes behind a RAM, ROM or ROM-device region.
 *
 * The memory API never assumes where guest RAM lives: by default a region gets a {@link SparseRam}
 * that commits host memory only for pages that are written, so a board with 8 GiB of RAM costs
 * nothing until the guest (or a loader) touches it. A later layer (the KVM layer's mmap'd guest
 * memory) supplies its own backing, and then the same bytes are seen by the memory API's reads and
 * writes and by the guest.
 *
 * @module
 */

import { show } from "./_check.ts";

/** What a RAM-like region needs from its memory. Offsets are relative to the region's byte 0. */
export interface RamBacking {
  /** Size in bytes. */
  readonly size: bigint;
  /**
   * Host virtual address of byte 0 when the memory is one host mapping (KVM needs it for a memslot);
   * `undefined` for memory the host kernel cannot see, such as {@link SparseRam}.
   */
  readonly hostAddress?: bigint;
  /** Copies `out.length` bytes starting at `offset` into `out`. Untouched memory reads as zero. */
  read(offset: bigint, out: Uint8Array): void;
  /** Copies `data` into the memory starting at `offset`. */
  write(offset: bigint, data: Uint8Array): void;
  /**
   * A live view of `[offset, offset + length)` — reads and writes through it are the memory's —
   * when the memory can give one (one host mapping); `undefined` otherwise, and callers copy
   * through {@link read} and {@link write} instead. Lets a device do I/O in place (QEMU's
   * `address_space_map`). Throws a RangeError when the bytes are not all inside the memory.
   */
  view?(offset: bigint, length: number): Uint8Array | undefined;
}

/** SparseRam's read and write at an offset given as a double; set by its static block. */
let sparseRead: (ram: SparseRam, start: number, out: Uint8Array) => void;
let sparseWrite: (ram: SparseRam, start: number, data: Uint8Array) => void;

/**
 * `ram.read(BigInt(start), out)` without the bigint, for the memory API's access path, which works
 * on doubles: `start` is an integer in [0, 2^53). Internal to `memory/`.
 */
export function _sparseRead(ram: SparseRam, start: number, out: Uint8Array): void {
  sparseRead(ram, start, out);
}

/** `ram.write(BigInt(start), data)` without the bigint, as {@link _sparseRead}. Internal to `memory/`. */
export function _sparseWrite(ram: SparseRam, start: number, data: Uint8Array): void {
  sparseWrite(ram, start, data);
}

/** Page granule of {@link SparseRam}: 4 KiB, the x86 page. */
export const SPARSE_PAGE_SIZE = 4096;

/**
 * RAM that allocates a 4 KiB page the first time it is written; reads of untouched pages return
 * zeros without allocating.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SparseRam } from "./ram_backing.ts";
 * const ram = new SparseRam(8n << 30n); // 8 GiB, nothing committed
 * ram.write(0x1000n, new Uint8Array([1, 2]));
 * const out = new Uint8Array(2);
 * ram.read(0x1000n, out);
 * assert.deepEqual([...out], [1, 2]);
 * assert.equal(ram.committedPages, 1);
 * ```
 */
export class SparseRam implements RamBacking {
  readonly size: bigint;
  /**
   * Pages by number, in chunks of 4096 (16 MiB), for a memory of at most 16 TiB: two array loads
   * find a page, or find that it was never written (the chunk or the page is absent).
   */
  readonly #dir: (Uint8Array | undefined)[][] | undefined;
  /** Pages by number, for a bigger memory. */
  readonly #pages: Map<number, Uint8Array> | undefined;
  #committed = 0;
  /** The size as a double when it is at most 2^53 (exact), else -1. */
  readonly #exactSize: number;

  /**
   * Sparse memory of `size` bytes, all zero.
   *
   * @throws {TypeError} if `size` is not a bigint.
   * @throws {RangeError} if `size` is negative.
   */
  constructor(size: bigint) {
    if (typeof size !== "bigint") throw new TypeError(`SparseRam: size ${show(size)} is not a bigint`);
    if (size < 0n) throw new RangeError(`SparseRam: size ${size} is negative`);
    this.size = size;
    this.#exactSize = size <= 1n << 53n ? Number(size) : -1;
    // Page numbers then stay below 2^32, and chunk numbers below 2^20.
    if (size <= 1n << 44n) this.#dir = [];
    else this.#pages = new Map();
  }

  /** Number of 4 KiB pages that hold memory (for tests and statistics). */
  get committedPages(): number {
    return this.#committed;
  }

  /** Page `page`, or undefined if it was never written. */
  #page(page: number): Uint8Array | undefined {
    const dir = this.#dir;
    if (dir === undefined) return this.#pages!.get(page);
    return dir[page >>> 12]?.[page & 0xfff];
  }

  /** A new zero page `page`, recorded. */
  #commit(page: number): Uint8Array {
    const bytes = new Uint8Array(SPARSE_PAGE_SIZE);
    this.#committed++;
    const dir = this.#dir;
    if (dir === undefined) this.#pages!.set(page, bytes);
    else (dir[page >>> 12] ??= new Array(0x1000))[page & 0xfff] = bytes;
    return bytes;
  }

  /**
   * Copies `out.length` bytes at `offset` into `out`; untouched pages read as zero.
   *
   * @throws {RangeError} if the bytes are not all inside the memory.
   */
  read(offset: bigint, out: Uint8Array): void {
    this.#readAt(this.#check(offset, out.length), out);
  }

  static {
    sparseRead = (ram, start, out) => {
      if (out.length <= ram.#exactSize - start) ram.#readAt(start, out);
      else ram.read(BigInt(start), out);
    };
    sparseWrite = (ram, start, data) => {
      if (data.length <= ram.#exactSize - start) ram.#writeAt(start, data);
      else ram.write(BigInt(start), data);
    };
  }

  #readAt(start: number, out: Uint8Array): void {
    let page = Math.floor(start / SPARSE_PAGE_SIZE);
    let inPage = start % SPARSE_PAGE_SIZE;
    let done = 0;
    while (done < out.length) {
      const n = Math.min(SPARSE_PAGE_SIZE - inPage, out.length - done);
      const bytes = this.#page(page);
      if (!bytes) out.fill(0, done, done + n);
      else if (n === 1) out[done] = bytes[inPage];
      else out.set(bytes.subarray(inPage, inPage + n), done);
      done += n;
      page++;
      inPage = 0;
    }
  }

  /**
   * Copies `data` in at `offset`, committing the pages it touches.
   *
   * @throws {RangeError} if the bytes are not all inside the memory.
   */
  write(offset: bigint, data: Uint8Array): void {
    this.#writeAt(this.#check(offset, data.length), data);
  }

  #writeAt(start: number, data: Uint8Array): void {
    let page = Math.floor(start / SPARSE_PAGE_SIZE);
    let inPage = start % SPARSE_PAGE_SIZE;
    let done = 0;
    while (done < data.length) {
      const n = Math.min(SPARSE_PAGE_SIZE - inPage, data.length - done);
      const bytes = this.#page(page) ?? this.#commit(page);
      bytes.set(data.subarray(done, done + n), inPage);
      done += n;
      page++;
      inPage = 0;
    }
  }

  /** Checks the access lies inside the memory and returns its start as a number (sizes < 2^53). */
  #check(offset: bigint, length: number): number {
    // No bigint arithmetic when the size is exact as a double: then so is every offset up to it.
    if (offset >= 0n && offset <= this.size && this.#exactSize >= 0) {
      const start = Number(offset);
      if (length <= this.#exactSize - start) return start;
    }
    if (offset < 0n || offset + BigInt(length) > this.size) {
      throw new RangeError(
        `SparseRam: access of ${length} bytes at 0x${offset.toString(16)} is outside its 0x${
          this.size.toString(16)
        } bytes`,
      );
    }
    return Number(offset);
  }
}
