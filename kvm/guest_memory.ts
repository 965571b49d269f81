/**
 * Guest RAM as one anonymous host mapping, usable both as a memslot (`hostAddress`) and as the
 * memory API's {@link RamBacking}.
 *
 * @module
 */

import type { RamBacking } from "../memory/ram_backing.ts";
import { hostPageSize } from "./_libc.ts";
import {
  detach,
  MADV_DONTNEED,
  madvise,
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "./_syscalls.ts";

/** Largest size accepted: the x86-64 user address space (47 bits). */
const GUEST_MEMORY_MAX_SIZE = 1n << 47n;

function toSize(value: number | bigint, what: string): bigint {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`${what} must be an integer, got ${value}`);
  }
  return BigInt(value);
}

/**
 * Anonymous, private, lazily committed host memory for a guest: `mmap(PROT_READ|PROT_WRITE,
 * MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE)`. Reserving costs address space only; host pages are
 * committed when the guest or the host first writes them, so a size larger than the host's RAM is
 * fine. The bytes read as zero until written.
 *
 * Keep it open for as long as a memslot points at it: the kernel reads and writes the pages by
 * host address. After {@link GuestMemory.close} every access throws `Deno.errors.BadResource`, and
 * views previously taken from {@link GuestMemory.bytes} are detached (length 0) instead of pointing at
 * unmapped memory.
 *
 * @example
 * ```ts ignore
 * import { GuestMemory } from "./guest_memory.ts";
 * using ram = new GuestMemory(2n << 20n); // 2 MiB
 * ram.write(0x1000n, new Uint8Array([0xf4])); // hlt
 * ram.bytes[0x1001] = 0x90;
 * console.log(ram.hostAddress.toString(16));
 * ```
 */
export class GuestMemory implements RamBacking, Disposable {
  /** Size in bytes, as requested (the mapping itself is rounded up to whole host pages). */
  readonly size: bigint;
  /** Host virtual address of byte 0: page aligned, for `KVM_SET_USER_MEMORY_REGION`. */
  readonly hostAddress: bigint;
  readonly #pointer: Deno.PointerObject;
  readonly #mappedSize: bigint;
  #bytes: Uint8Array | undefined;

  /**
   * Reserves `size` bytes.
   *
   * @throws {RangeError} when `size` is not a positive integer below 2^47.
   * @throws {KvmError} with op `"mmap"` when the kernel refuses the mapping.
   */
  constructor(size: number | bigint) {
    const bytes = toSize(size, "GuestMemory size");
    if (bytes <= 0n || bytes > GUEST_MEMORY_MAX_SIZE) {
      throw new RangeError(`GuestMemory size must be in (0, 2^47], got ${bytes}`);
    }
    const page = BigInt(hostPageSize());
    this.size = bytes;
    this.#mappedSize = (bytes + page - 1n) / page * page;
    const mapping = mmap(
      this.#mappedSize,
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
      -1,
      `guest memory of 0x${bytes.toString(16)} bytes`,
    );
    this.#pointer = mapping.pointer;
    this.hostAddress = mapping.address;
    try {
      // One zero-copy, non-owning view for the life of the mapping (creating one costs ~360 ns).
      this.#bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(mapping.pointer, Number(bytes)));
    } catch (error) {
      munmap(mapping.pointer, this.#mappedSize); // e.g. larger than V8's maximum ArrayBuffer
      throw error;
    }
  }

  /** Whether {@link GuestMemory.close} has run. */
  get closed(): boolean {
    return this.#bytes === undefined;
  }

  /**
   * The whole memory as one zero-copy `Uint8Array` (the same object every time). Writes are
   * visible to the guest and vice versa.
   */
  get bytes(): Uint8Array {
    if (this.#bytes === undefined) throw this.#closedError();
    return this.#bytes;
  }

  /** Copies `out.length` bytes at `offset` into `out`. */
  read(offset: bigint, out: Uint8Array): void {
    const start = this.#check(offset, out.length);
    out.set(this.#bytes!.subarray(start, start + out.length));
  }

  /** Copies `data` into the memory at `offset`. */
  write(offset: bigint, data: Uint8Array): void {
    const start = this.#check(offset, data.length);
    this.#bytes!.set(data, start);
  }

  /**
   * Gives the host pages of `[offset, offset + length)` back to the kernel (`MADV_DONTNEED`); the
   * range then reads as zeros. Both must be multiples of the host page size.
   */
  discard(offset: bigint, length: bigint): void {
    this.#check(offset, 0);
    const page = BigInt(hostPageSize());
    if (offset % page !== 0n || length % page !== 0n || length < 0n || offset + length > this.#mappedSize) {
      throw new RangeError(
        `GuestMemory.discard: 0x${offset.toString(16)}+0x${
          length.toString(16)
        } must be page aligned and inside ` +
          `the 0x${this.size.toString(16)} bytes`,
      );
    }
    if (length > 0n) madvise(this.hostAddress + offset, length, MADV_DONTNEED, "GuestMemory.discard");
  }

  /** Unmaps the memory. Idempotent. Delete memslots that use it first. */
  close(): void {
    const bytes = this.#bytes;
    if (bytes === undefined) return;
    this.#bytes = undefined;
    detach(bytes.buffer as ArrayBuffer); // no view may reach unmapped memory
    munmap(this.#pointer, this.#mappedSize);
  }

  /** Same as {@link GuestMemory.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #check(offset: bigint, length: number): number {
    if (this.#bytes === undefined) throw this.#closedError();
    if (typeof offset !== "bigint" || offset < 0n || offset + BigInt(length) > this.size) {
      throw new RangeError(
        `GuestMemory: access of ${length} bytes at 0x${offset.toString(16)} is outside its 0x${
          this.size.toString(16)
        } bytes`,
      );
    }
    return Number(offset);
  }

  #closedError(): Error {
    return new Deno.errors.BadResource(
      `GuestMemory at 0x${this.hostAddress.toString(16)} was used after close()`,
    );
  }
}
