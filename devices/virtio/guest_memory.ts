/**
 * How virtio devices reach guest memory: a narrow interface that refuses, rather than performs, any
 * access that is not wholly inside guest RAM, so a hostile descriptor can never make a device touch
 * MMIO, ROM or a hole.
 *
 * @module
 */

import { UINT64_MAX } from "../../memory/mod.ts";

/** 2^53: guest addresses below it are exact as numbers. */
const EXACT_BIG = 1n << 53n;

/**
 * Guest RAM as a device sees it (DMA). Every method checks the whole range first and does nothing
 * when any byte is not RAM the device may access.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { GuestMemory } from "./guest_memory.ts";
 * const ram = new Uint8Array(0x1000);
 * const inside = (addr: bigint, length: number) => addr + BigInt(length) <= BigInt(ram.length);
 * const memory: GuestMemory = {
 *   check: (addr, length) => inside(addr, length),
 *   read: (addr, into) => inside(addr, into.length) && (into.set(ram.subarray(Number(addr), Number(addr) + into.length)), true),
 *   write: (addr, from) => inside(addr, from.length) && (ram.set(from, Number(addr)), true),
 * };
 * assert.equal(memory.write(0xffen, new Uint8Array(4)), false); // would pass the end: nothing written
 * ```
 */
export interface GuestMemory {
  /** Whether `[addr, addr + length)` is all guest RAM (writable RAM when `forWrite`). */
  check(addr: bigint, length: number, forWrite?: boolean): boolean;
  /** Copies guest bytes at `addr` into `into`; false (and nothing read) when the range is not RAM. */
  read(addr: bigint, into: Uint8Array): boolean;
  /** Copies `from` to guest bytes at `addr`; false (and nothing written) when the range is not writable RAM. */
  write(addr: bigint, from: Uint8Array): boolean;
  /**
   * A live view of the guest's bytes at `[addr, addr + length)` (writable RAM when `forWrite`), for
   * I/O in place (QEMU's `address_space_map`); `null` when there is none — the range is not all
   * RAM, crosses a region boundary, or the memory gives no views — and the device copies with
   * {@link read} or {@link write} instead. Absent: never a view.
   */
  map?(addr: bigint, length: number, forWrite: boolean): Uint8Array | null;
  /**
   * A view of the whole RAM range holding `[addr, addr + length)` (writable RAM when `forWrite`)
   * that the device may keep across calls while {@link GuestMemoryCache.valid} says so (QEMU's
   * `MemoryRegionCache`, which virtio keeps for its rings): `null` when the range is not all RAM, is
   * not inside one range of the memory map, lies at or past 2^53, or the memory gives no views.
   * Absent: never a cache.
   */
  cache?(addr: bigint, length: number, forWrite: boolean): GuestMemoryCache | null;
  /**
   * A full memory barrier between the device's guest-memory accesses before and after it, for RAM
   * that vCPU threads change concurrently (the KVM layer gives one; absent means none is needed).
   */
  fence?(): void;
}

/**
 * A live view of one range of guest RAM, from {@link GuestMemory.cache}: what a device reads and
 * writes often (the virtqueue's rings, descriptor tables, buffers) without a look-up in the memory
 * map per access. The device must ask {@link valid} before each use (a change of the memory map
 * may have moved or removed the RAM), keep every access inside {@link bytes}, write only when
 * {@link writable}, and report each write with {@link wrote} (dirty logging: a snapshot's diff
 * relies on it).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, type RamBacking } from "../../memory/mod.ts";
 * import { AddressSpaceGuestMemory } from "./guest_memory.ts";
 * const bytes = new Uint8Array(0x2000);
 * const backing: RamBacking = {
 *   size: 0x2000n,
 *   read: (o, out) => out.set(bytes.subarray(Number(o), Number(o) + out.length)),
 *   write: (o, data) => bytes.set(data, Number(o)),
 *   view: (o, n) => bytes.subarray(Number(o), Number(o) + n),
 * };
 * const system = MemoryRegion.container("system", 1n << 64n);
 * const ram = MemoryRegion.ram("ram", 0x2000, { backing });
 * system.addSubregion(0x1_0000, ram);
 * using as = new AddressSpace(system, "memory");
 * const cache = new AddressSpaceGuestMemory(as).cache(0x1_0100n, 4, true)!;
 * assert.equal(cache.start, 0x1_0000); // the whole range of RAM
 * cache.bytes[0x100] = 7;
 * cache.wrote(0x100, 1);
 * assert.equal(bytes[0x100], 7);
 * ram.setEnabled(false); // the memory map changed: the cache must not be used any more
 * assert.equal(cache.valid(), false);
 * ```
 */
export interface GuestMemoryCache {
  /** Guest-physical address of `bytes[0]` (below 2^53, as is its end). */
  readonly start: number;
  /** The RAM's bytes, live. */
  readonly bytes: Uint8Array;
  /** A DataView over {@link bytes}. */
  readonly data: DataView;
  /** Whether the device may write it (writable RAM). */
  readonly writable: boolean;
  /** Whether the view still shows guest RAM at {@link start}: false for good once the memory map changed. */
  valid(): boolean;
  /** Records that the device wrote `[offset, offset + length)` of {@link bytes} (marks dirty pages while logging). */
  wrote(offset: number, length: number): void;
}

/**
 * What {@link AddressSpaceGuestMemory} needs of an address space: memory/'s `AddressSpace` has it
 * (its flat view's `lookup`, and `rw`).
 */
export interface GuestAddressSpace {
  /** The current flat view. */
  readonly view: {
    lookup(addr: bigint):
      | {
        start: bigint;
        size: bigint;
        offsetInRegion: bigint;
        readonly: boolean;
        region: {
          isRam: boolean;
          kind: string;
          readonly dirtyLogMask: number;
          markDirty(offset: number | bigint, length: number | bigint): void;
        };
      }
      | undefined;
  };
  /** Reads into or writes from `data` at `addr`. */
  rw(addr: bigint, data: Uint8Array, isWrite: boolean): number;
  /** A live view of one directly accessed range, or null (memory/'s `AddressSpace.map`). */
  map?(addr: bigint, length: number, isWrite: boolean): Uint8Array | null;
}

/**
 * {@link GuestMemory} over a memory-API address space: only ranges rendered as RAM count (ROM and
 * read-only RAM are readable, not writable; MMIO, ROM devices and holes are refused).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../../memory/mod.ts";
 * import { AddressSpaceGuestMemory } from "./guest_memory.ts";
 * const system = MemoryRegion.container("system", 1n << 64n);
 * system.addSubregion(0, MemoryRegion.ram("ram", 0x1000));
 * system.addSubregion(0x1000, MemoryRegion.io("mmio", 0x1000, { read: () => 0 }));
 * using as = new AddressSpace(system, "memory");
 * const memory = new AddressSpaceGuestMemory(as);
 * assert.equal(memory.check(0xff0n, 16), true);
 * assert.equal(memory.check(0xff0n, 17), false); // one byte of MMIO
 * ```
 */
export class AddressSpaceGuestMemory implements GuestMemory {
  readonly #as: GuestAddressSpace;
  readonly #fence: (() => void) | undefined;
  /** The last flat range that gave no view, and the flat view it is in. */
  #bare: { flat: unknown; start: bigint; end: bigint } | null = null;

  /** Guest memory through `as`; `fence` is the barrier {@link GuestMemory.fence} runs, if any. */
  constructor(as: GuestAddressSpace, fence?: () => void) {
    this.#as = as;
    this.#fence = fence;
  }

  /** Whether every byte of the range is rendered RAM (writable RAM when `forWrite`). */
  check(addr: bigint, length: number, forWrite = false): boolean {
    if (typeof addr !== "bigint" || !Number.isSafeInteger(length) || length < 0 || addr < 0n) return false;
    const end = addr + BigInt(length);
    if (end - 1n > UINT64_MAX) return false;
    const view = this.#as.view;
    for (let at = addr; at < end;) {
      const range = view.lookup(at);
      if (!range || !range.region.isRam) return false;
      if (forWrite && (range.readonly || range.region.kind !== "ram")) return false;
      at = range.start + range.size;
    }
    return true;
  }

  /** Reads RAM only. */
  read(addr: bigint, into: Uint8Array): boolean {
    if (!this.check(addr, into.length)) return false;
    this.#as.rw(addr, into, false);
    return true;
  }

  /** Writes writable RAM only (marking dirty pages as any write does). */
  write(addr: bigint, from: Uint8Array): boolean {
    if (!this.check(addr, from.length, true)) return false;
    this.#as.rw(addr, from, true);
    return true;
  }

  /**
   * A view where the range is RAM (writable RAM when `forWrite`) and the address space gives one:
   * within one region whose backing is a host mapping (guest RAM under KVM). Null otherwise.
   */
  map(addr: bigint, length: number, forWrite: boolean): Uint8Array | null {
    if (this.#as.map === undefined || !this.check(addr, length, forWrite)) return null;
    return this.#as.map(addr, length, forWrite);
  }

  /**
   * The whole flat range holding the range, when it is RAM (writable RAM when `forWrite`) below
   * 2^53 and the address space gives a view of it; valid while the address space's flat view is
   * the one it was made from (every change of the memory map renders a new one).
   */
  cache(addr: bigint, length: number, forWrite: boolean): GuestMemoryCache | null {
    const as = this.#as;
    if (as.map === undefined || length <= 0) return null;
    const flat = as.view;
    // RAM without views (SparseRam) has no cache: said at once the next time, not after look-ups.
    const bare = this.#bare;
    if (bare !== null && bare.flat === flat && addr >= bare.start && addr < bare.end) return null;
    if (!this.check(addr, length, forWrite)) return null;
    const range = flat.lookup(addr)!;
    const end = range.start + range.size;
    if (end > EXACT_BIG || range.offsetInRegion + range.size > EXACT_BIG || addr + BigInt(length) > end) {
      return null;
    }
    const size = Number(range.size);
    const bytes = as.map(range.start, size, false);
    if (bytes === null || bytes.length !== size) {
      this.#bare = { flat, start: range.start, end };
      return null;
    }
    const region = range.region;
    const offset = Number(range.offsetInRegion);
    return {
      start: Number(range.start),
      bytes,
      data: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      writable: !range.readonly && region.kind === "ram",
      valid: () => as.view === flat,
      wrote: (at, n) => {
        if (region.dirtyLogMask) region.markDirty(offset + at, n);
      },
    };
  }

  /** Runs the injected barrier. */
  fence(): void {
    this.#fence?.();
  }
}
