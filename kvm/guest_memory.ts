/**
 * Guest RAM as one anonymous host mapping, usable both as a memslot (`hostAddress`) and as the
 * memory API's {@link RamBacking}.
 *
 * @module
 */

import type { RamBacking } from "../memory/ram_backing.ts";
import { hostPageSize, lastErrno, libc } from "./_libc.ts";
import { KvmError } from "./kvm_error.ts";
import { closeFd, O_RDONLY, openPath } from "./_syscalls.ts";
import {
  detach,
  MADV_DONTNEED,
  MADV_HUGEPAGE,
  MADV_NOHUGEPAGE,
  madvise,
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  mmap,
  mmapAligned,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from "./_syscalls.ts";

/** A transparent huge page on x86-64: 2 MiB. */
const HUGE_PAGE_SIZE = 2n << 20n;

/** Largest size accepted: the x86-64 user address space (47 bits). */
const GUEST_MEMORY_MAX_SIZE = 1n << 47n;

/** A file's length, through `lseek(fd, 0, SEEK_END)`. */
function fileLength(fd: number): bigint {
  const end = libc().lseek64(fd, 0n, SEEK_END);
  if (Number(end) < 0) throw new KvmError("lseek", lastErrno());
  return BigInt(end);
}

/** `SEEK_END`. */
const SEEK_END = 2;

function toSize(value: number | bigint, what: string): bigint {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`${what} must be an integer, got ${value}`);
  }
  return BigInt(value);
}

/** The file behind a {@link GuestMemory.fromFile} mapping (the fd stays the caller's). */
export interface GuestMemoryFile {
  /** An open descriptor of the file. */
  readonly fd: number;
  /** Where in the file byte 0 of the memory is (page aligned). */
  readonly offset: bigint;
  /** The file's path, for messages. */
  readonly path: string;
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
  /**
   * Host virtual address of byte 0, for `KVM_SET_USER_MEMORY_REGION`: page aligned, and 2 MiB
   * aligned from 2 MiB of memory on (so that KVM can map the guest with 2 MiB pages).
   */
  readonly hostAddress: bigint;
  readonly #pointer: Deno.PointerObject;
  readonly #mappedSize: bigint;
  #bytes: Uint8Array | undefined;

  /**
   * Reserves `size` bytes (anonymous), or maps them privately from `file` (see {@link GuestMemory.fromFile}).
   *
   * @throws {RangeError} when `size` is not a positive integer below 2^47.
   * @throws {KvmError} with op `"mmap"` when the kernel refuses the mapping.
   */
  constructor(size: number | bigint, file?: GuestMemoryFile) {
    const bytes = toSize(size, "GuestMemory size");
    if (bytes <= 0n || bytes > GUEST_MEMORY_MAX_SIZE) {
      throw new RangeError(`GuestMemory size must be in (0, 2^47], got ${bytes}`);
    }
    const page = BigInt(hostPageSize());
    this.size = bytes;
    this.#mappedSize = (bytes + page - 1n) / page * page;
    // From 2 MiB on, at a 2 MiB boundary, as QEMU aligns its RAM blocks: KVM maps a guest's 2 MiB
    // with one large page only where the guest address and the host address agree modulo 2 MiB (a
    // memslot whose start disagrees gets 4 KiB pages throughout), and RAM starts at guest address 0.
    const map = this.#mappedSize >= HUGE_PAGE_SIZE
      ? (length: bigint, prot: number, flags: number, fd: number, detail: string, offset?: bigint) =>
        mmapAligned(length, HUGE_PAGE_SIZE, prot, flags, fd, detail, offset)
      : mmap;
    const mapping = file === undefined
      ? map(
        this.#mappedSize,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
        -1,
        `guest memory of 0x${bytes.toString(16)} bytes`,
      )
      : map(
        this.#mappedSize,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_NORESERVE,
        file.fd,
        `guest memory of 0x${bytes.toString(16)} bytes from ${file.path} at 0x${file.offset.toString(16)}`,
        file.offset,
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

  /**
   * Guest memory whose initial bytes are `size` bytes of the file at `path` from `offset` (a
   * multiple of the host page size): `mmap(MAP_PRIVATE)` of the file, so nothing is read or copied
   * up front — a page is read from the file (or the page cache) when first touched, and a write
   * makes a private copy the file never sees. A file shorter than `offset + size` is refused. The file's
   * descriptor is closed before this returns (the mapping keeps the file).
   *
   * @throws {KvmError} op `open PATH` when the file cannot be opened, `"mmap"` when it cannot be mapped.
   * @throws {RangeError} for a bad size or offset, or a file too short.
   */
  static fromFile(path: string, offset: bigint, size: number | bigint): GuestMemory {
    const page = BigInt(hostPageSize());
    if (offset < 0n || offset % page !== 0n) {
      throw new RangeError(
        `GuestMemory.fromFile: offset 0x${offset.toString(16)} of ${path} is not page aligned`,
      );
    }
    const fd = openPath(path, O_RDONLY);
    try {
      const length = fileLength(fd);
      const end = offset + toSize(size, "GuestMemory size");
      if (length < end) {
        throw new RangeError(
          `${path} is ${length} bytes, shorter than the 0x${end.toString(16)} it should hold`,
        );
      }
      return new GuestMemory(size, { fd, offset, path });
    } finally {
      closeFd(fd);
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
   * `[offset, offset + length)` of the mapping itself (a `subarray` of {@link bytes}): a device's
   * pread lands straight in guest RAM.
   *
   * @throws {RangeError} when the bytes are not all inside the memory.
   */
  view(offset: bigint, length: number): Uint8Array {
    const start = this.#check(offset, length);
    return this.#bytes!.subarray(start, start + length);
  }

  /**
   * Asks for transparent huge pages over the whole 2 MiB blocks of host memory inside
   * `[offset, offset + length)` (`MADV_HUGEPAGE`, as QEMU advises its RAM): a first touch then
   * fills 2 MiB instead of 4 KiB, and KVM maps the guest with 2 MiB pages. It matters where the
   * host's THP mode is `madvise` (with `always` every anonymous range gets them anyway). Returns
   * false when the host refuses (no THP) or no whole block lies inside; the memory works the same.
   *
   * @throws {RangeError} when the range is not inside the memory.
   */
  adviseHugePages(offset: bigint, length: bigint): boolean {
    this.#checkAdviceRange("adviseHugePages", offset, length);
    const block = HUGE_PAGE_SIZE;
    const start = (this.hostAddress + offset + block - 1n) / block * block;
    const end = (this.hostAddress + offset + length) / block * block;
    return end > start && this.#advise(start, end - start, MADV_HUGEPAGE, "adviseHugePages");
  }

  /**
   * Keeps `[offset, offset + length)` (widened to host pages) on 4 KiB pages, whatever the host's THP
   * mode (`MADV_NOHUGEPAGE`): for ranges the VMM writes a few bytes of, where a huge page would cost
   * 2 MiB of RSS. Returns false when the host refuses (no THP: there are no huge pages anyway).
   *
   * @throws {RangeError} when the range is not inside the memory.
   */
  avoidHugePages(offset: bigint, length: bigint): boolean {
    this.#checkAdviceRange("avoidHugePages", offset, length);
    const page = BigInt(hostPageSize());
    const start = (this.hostAddress + offset) / page * page;
    const end = (this.hostAddress + offset + length + page - 1n) / page * page;
    return end > start && this.#advise(start, end - start, MADV_NOHUGEPAGE, "avoidHugePages");
  }

  #checkAdviceRange(op: string, offset: bigint, length: bigint): void {
    if (offset < 0n || length < 0n || offset + length > this.size) {
      throw new RangeError(
        `${op}: [0x${offset.toString(16)}, +0x${length.toString(16)}) is outside 0x${
          this.size.toString(16)
        } bytes`,
      );
    }
  }

  #advise(start: bigint, length: bigint, advice: number, op: string): boolean {
    try {
      madvise(start, length, advice, `GuestMemory.${op}`);
      return true;
    } catch {
      return false; // no transparent huge pages on this host
    }
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
