/**
 * A raw disk image file for virtio-blk: positional reads and writes straight into guest memory,
 * `fdatasync`, and the byte-range locks QEMU puts on images so that QEMU and kvm-ts never both
 * write one image.
 *
 * QEMU's scheme (7.2, `block/file-posix.c` and the permission bits of `include/block/block-common.h`),
 * in our words: each user of an image names the permissions it *uses* and the ones it *shares*
 * with others. Permission bit i (0 consistent read, 1 write, 2 write unchanged, 3 resize) is
 * represented by two bytes of the file: byte 100 + i is read-locked by every user that uses it,
 * byte 200 + i by every user that does not share it. Locks are shared (F_RDLCK) open-file-
 * description locks (F_OFD_SETLK), so they never block each other; conflicts are found by asking
 * (F_OFD_GETLK with F_WRLCK) whether anybody else holds a byte: before using permission i nobody
 * may hold 200 + i, and before refusing to share i nobody may hold 100 + i. A QEMU disk device
 * without `share-rw=on` uses consistent read (and write unless read-only) and shares only
 * consistent read and write unchanged (and resize when it can follow one).
 *
 * @module
 */

import { EACCES, EAGAIN, EBADF } from "./_errno.ts";
import { lastErrno, libc } from "./_libc.ts";
import { decodeFromBytes, encodeToBytes, FLOCK_LAYOUT } from "./_structs.ts";
import { closeFd, O_RDONLY, O_RDWR, openPath, retryOnEintr } from "./_syscalls.ts";
import { bufferAddress, type IoRing, type IoRingDone, IOV_MAX, iovecScratch, putIovec } from "./io_ring.ts";
import { errnoName, KVM_ERROR_PARTIAL, KvmError } from "./kvm_error.ts";

/** `F_OFD_GETLK` (asm-generic/fcntl.h): who would block this lock? */
export const F_OFD_GETLK = 36;
/** `F_OFD_SETLK`: take or drop a lock owned by the open file description, without waiting. */
export const F_OFD_SETLK = 37;
/** `F_RDLCK`: a shared lock. */
export const F_RDLCK = 0;
/** `F_WRLCK`: an exclusive lock. */
export const F_WRLCK = 1;
/** `F_UNLCK`: no lock (F_OFD_GETLK's answer when nothing conflicts). */
export const F_UNLCK = 2;
/** `SEEK_END`. */
const SEEK_END = 2;

/**
 * Pieces of memory for {@link DiskImage.readSpans} and {@link DiskImage.writeSpans}: span `i` is
 * `lengths[i]` bytes at byte `offsets[i]` of `buffers[i]`, for `i` below `count` (devices/'
 * `RamSpans` is one).
 */
export interface BufferSpans {
  /** How many spans (the arrays may be longer). */
  readonly count: number;
  /** Each span's buffer. */
  readonly buffers: readonly ArrayBufferLike[];
  /** Each span's first byte in its buffer. */
  readonly offsets: readonly number[];
  /** Each span's length. */
  readonly lengths: readonly number[];
}

/** Views as spans, for the view-taking calls. */
function viewSpans(views: readonly Uint8Array[]): BufferSpans {
  return {
    count: views.length,
    buffers: views.map((v) => v.buffer),
    offsets: views.map((v) => v.byteOffset),
    lengths: views.map((v) => v.length),
  };
}

/** QEMU's byte of "uses permission i": 100 + i (`RAW_LOCK_PERM_BASE`). */
export const QEMU_LOCK_PERM_BASE = 100;
/** QEMU's byte of "does not share permission i": 200 + i (`RAW_LOCK_SHARED_BASE`). */
export const QEMU_LOCK_SHARED_BASE = 200;

/** QEMU's block permissions, by bit number, with the names its error messages use. */
export const QEMU_PERMISSIONS = ["consistent read", "write", "write unchanged", "resize"] as const;
/** One of {@link QEMU_PERMISSIONS}. */
export type QemuPermission = typeof QEMU_PERMISSIONS[number];

const CONSISTENT_READ = 1 << 0;
const WRITE = 1 << 1;
const WRITE_UNCHANGED = 1 << 2;

/** The sector size of a virtio-blk device. */
export const SECTOR_SIZE = 512;

/** Which QEMU lock bytes processes other than the asker hold on an image ({@link imageLocks}). */
export interface ImageLocks {
  /** Permissions somebody uses (bytes 100 + i are locked). */
  readonly used: QemuPermission[];
  /** Permissions somebody refuses to share (bytes 200 + i are locked). */
  readonly unshared: QemuPermission[];
}

/** Options of {@link DiskImage.open}. */
export interface DiskImageOptions {
  /** Open with O_RDONLY and lock as a reader (the default, `false`, opens read-write). */
  readonly readOnly?: boolean;
  /**
   * Take QEMU's locks (the default, `true`): refused while QEMU or another kvm-ts writes the image
   * (or, when opening for writing, while anybody reads it without sharing writes). `false` is
   * QEMU's `locking=off`.
   */
  readonly lock?: boolean;
  /** Share the write permission, as QEMU's `share-rw=on`: other writers are then let in. */
  readonly shareRw?: boolean;
  /**
   * The size must be a multiple of this ({@link SECTOR_SIZE} by default); pass 1 to accept any
   * size and look at {@link DiskImage.size} yourself.
   */
  readonly sectorSize?: number;
}

/** One byte-range lock request on `fd`; returns the filled-in `struct flock`, or -errno. */
function flock(fd: number, command: number, type: number, start: number): { type: number } | number {
  const bytes = encodeToBytes(FLOCK_LAYOUT, {
    lType: type,
    lWhence: 0, // SEEK_SET
    lStart: BigInt(start),
    lLen: 1n,
    lPid: 0, // OFD locks require 0
  });
  const result = retryOnEintr(() => libc().fcntl_ptr(fd, command, bytes));
  if (result < 0) return result;
  return { type: decodeFromBytes(FLOCK_LAYOUT, bytes).lType };
}

function lockError(path: string, errno: number, detail: string, hint?: string): KvmError {
  const code = errnoName(errno);
  return new KvmError(`lock ${path}`, errno, {
    detail,
    hint: hint ??
      (code === "ENOLCK" || code === "EINVAL" || code === "EOPNOTSUPP"
        ? "this file system does not support open-file-description locks; open with lock: false " +
          "(QEMU's locking=off) if no other process can open the image"
        : undefined),
  });
}

/** The QEMU lock bytes held by others on `fd`'s file. */
function probe(fd: number, path: string): ImageLocks {
  const held = (base: number) =>
    QEMU_PERMISSIONS.filter((_, bit) => {
      const answer = flock(fd, F_OFD_GETLK, F_WRLCK, base + bit);
      if (typeof answer === "number") throw lockError(path, -answer, `F_OFD_GETLK byte ${base + bit}`);
      return answer.type !== F_UNLCK;
    });
  return { used: held(QEMU_LOCK_PERM_BASE), unshared: held(QEMU_LOCK_SHARED_BASE) };
}

/**
 * Which of QEMU's lock bytes other processes (or other open files of this one) hold on the image
 * at `path`: what QEMU or a kvm-ts using it uses and refuses to share. Takes no lock itself.
 *
 * @throws {KvmError} with op `open <path>` or `lock <path>`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DiskImage, imageLocks } from "./mod.ts";
 * const path = Deno.makeTempFileSync();
 * assert.deepEqual(imageLocks(path), { used: [], unshared: [] });
 * using reader = DiskImage.open(path, { readOnly: true });
 * assert.deepEqual(imageLocks(path), { used: ["consistent read"], unshared: ["write", "resize"] });
 * reader.close();
 * Deno.removeSync(path);
 * ```
 */
export function imageLocks(path: string): ImageLocks {
  const fd = openPath(path, O_RDONLY);
  try {
    return probe(fd, path);
  } finally {
    closeFd(fd);
  }
}

function toOffset(value: number | bigint, what: string): bigint {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`${what} must be an integer, got ${value}`);
  }
  const offset = BigInt(value);
  if (offset < 0n) throw new RangeError(`${what} must not be negative, got ${offset}`);
  return offset;
}

/** `fallocate` mode: keep the file's size (with {@link FALLOC_FL_PUNCH_HOLE}). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/** `fallocate` mode: free the range's blocks; it then reads as zeros. */
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** `fallocate` mode: the range reads as zeros (blocks kept, unwritten extents where it can). */
export const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * An open raw image (or block device), owned by this object. {@link DiskImage.read} and
 * {@link DiskImage.write} are positional (pread/pwrite, no shared file position) and loop over
 * short transfers; give them a view of guest RAM (`ram.bytes.subarray(gpa, gpa + n)` of a
 * {@link GuestMemory}) and the kernel copies straight to or from the guest, no bounce buffer.
 * Accesses must stay inside {@link DiskImage.size}: a raw image never grows.
 *
 * While open it holds QEMU's locks (see the module documentation), so QEMU refuses the image
 * ("Failed to get "write" lock") while kvm-ts writes it, and kvm-ts refuses it while QEMU does.
 * {@link DiskImage.close} (idempotent; `using` works) drops them with the fd.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DiskImage } from "./mod.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".img" });
 * Deno.truncateSync(path, 1 << 20);
 * {
 *   using disk = DiskImage.open(path);
 *   disk.write(new TextEncoder().encode("hello"), 512n);
 *   disk.fdatasync();
 *   assert.throws(() => DiskImage.open(path), /"write" not shared/); // one writer at a time
 *   using reader = DiskImage.open(path, { readOnly: true, lock: false });
 *   const sector = new Uint8Array(512);
 *   assert.equal(reader.read(sector, 512n), 512);
 *   assert.equal(new TextDecoder().decode(sector.subarray(0, 5)), "hello");
 * }
 * Deno.removeSync(path);
 * ```
 */
export class DiskImage implements Disposable {
  #fd: number;
  /** The path it was opened by, for messages. */
  readonly path: string;
  /** Size in bytes at open time. */
  readonly size: bigint;
  /** Whether it was opened read-only. */
  readonly readOnly: boolean;

  private constructor(fd: number, path: string, size: bigint, readOnly: boolean) {
    this.#fd = fd;
    this.path = path;
    this.size = size;
    this.readOnly = readOnly;
  }

  /**
   * Opens `path` (close-on-exec), takes QEMU's locks unless `lock` is false, and reads the size.
   *
   * @throws {KvmError} with op `open <path>` (ENOENT, EACCES, EROFS…) or `lock <path>` (EAGAIN:
   * another process uses the image in a way this open cannot share; the message names the lock
   * and the permission, as QEMU's "Failed to get "write" lock" does).
   * @throws {RangeError} when the size is not a multiple of `sectorSize` (512 by default).
   */
  static open(path: string, options: DiskImageOptions = {}): DiskImage {
    const readOnly = options.readOnly ?? false;
    const sectorSize = options.sectorSize ?? SECTOR_SIZE;
    if (!Number.isInteger(sectorSize) || sectorSize < 1) {
      throw new RangeError(`DiskImage.open: sectorSize must be a positive integer, got ${sectorSize}`);
    }
    const fd = openPath(path, readOnly ? O_RDONLY : O_RDWR, {
      EROFS: "the file system is read-only: open the image with readOnly: true",
      EACCES: "no permission to open the image" + (readOnly ? "" : " read-write (try readOnly: true)"),
      EISDIR: "the path is a directory, not an image",
    });
    try {
      if (options.lock ?? true) {
        const uses = CONSISTENT_READ | (readOnly ? 0 : WRITE);
        const shares = CONSISTENT_READ | WRITE_UNCHANGED | (options.shareRw ? WRITE : 0);
        lockImage(fd, path, uses, shares);
      }
      const end = libc().lseek64(fd, 0n, SEEK_END);
      if (Number(end) < 0) throw new KvmError("lseek", lastErrno(), { detail: path });
      const size = BigInt(end);
      if (size % BigInt(sectorSize) !== 0n) {
        throw new RangeError(
          `disk image ${path} is ${size} bytes, not a whole number of ${sectorSize}-byte sectors ` +
            `(${size % BigInt(sectorSize)} bytes over): resize it (\`qemu-img resize -f raw ${path} ` +
            `${
              (size + BigInt(sectorSize) - 1n) / BigInt(sectorSize) * BigInt(sectorSize)
            }\`) or open it with sectorSize: 1`,
        );
      }
      return new DiskImage(fd, path, size, readOnly);
    } catch (error) {
      closeFd(fd); // drops every lock taken above with the open file description
      throw error;
    }
  }

  /** The fd (-1 after close). */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@link DiskImage.close} has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Fills `into` from the image at byte `offset`. Returns `into.length`.
   *
   * @throws {RangeError} when `[offset, offset + into.length)` is not inside the image.
   * @throws {KvmError} with op `"pread"` (EIO: the storage failed).
   */
  read(into: Uint8Array, offset: number | bigint): number {
    return this.#transfer("pread", into, offset);
  }

  /**
   * Writes all of `from` to the image at byte `offset`. Returns `from.length`. The data may sit in
   * the host's page cache until {@link DiskImage.fdatasync}.
   *
   * @throws {RangeError} when `[offset, offset + from.length)` is not inside the image.
   * @throws {KvmError} with op `"pwrite"` (EBADF: the image was opened read-only; ENOSPC, EIO).
   */
  write(from: Uint8Array, offset: number | bigint): number {
    return this.#transfer("pwrite", from, offset);
  }

  /**
   * Fills the buffers of `into`, one after the other, from byte `offset` with `preadv(2)`: one
   * system call for a request's pieces of guest RAM (views of a {@link GuestMemory}). Loops over
   * short transfers as {@link read} does. Returns the bytes read (their total length).
   *
   * @throws {RangeError} when the range is not inside the image.
   * @throws {KvmError} with op `"preadv"` or `"pread"` (EIO).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { DiskImage } from "./mod.ts";
   * const path = Deno.makeTempFileSync({ suffix: ".img" });
   * Deno.writeFileSync(path, new Uint8Array(4096).map((_, i) => i & 0xff));
   * {
   *   using disk = DiskImage.open(path, { lock: false });
   *   const a = new Uint8Array(3);
   *   const b = new Uint8Array(2);
   *   assert.equal(disk.readv([a, b], 10n), 5);
   *   assert.deepEqual([...a, ...b], [10, 11, 12, 13, 14]);
   *   disk.writev([b, a], 0n);
   *   assert.equal(disk.read(new Uint8Array(5), 0n), 5);
   * }
   * Deno.removeSync(path);
   * ```
   */
  readv(into: readonly Uint8Array[], offset: number | bigint): number {
    return this.#transferv("preadv", viewSpans(into), offset);
  }

  /**
   * Writes the buffers of `from`, one after the other, at byte `offset` with `pwritev(2)`. Returns
   * their total length.
   *
   * @throws {RangeError} when the range is not inside the image.
   * @throws {KvmError} with op `"pwritev"` or `"pwrite"` (EBADF: opened read-only; ENOSPC, EIO).
   */
  writev(from: readonly Uint8Array[], offset: number | bigint): number {
    return this.#transferv("pwritev", viewSpans(from), offset);
  }

  /**
   * {@link readv} of spans of memory instead of views: the iovecs come straight from `into`, with
   * no object per piece (virtio-blk's data in guest RAM).
   *
   * @throws {RangeError} when the range is not inside the image.
   * @throws {KvmError} with op `"preadv"` or `"pread"` (EIO).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { DiskImage } from "./mod.ts";
   * const path = Deno.makeTempFileSync({ suffix: ".img" });
   * Deno.writeFileSync(path, new Uint8Array(4096).map((_, i) => i & 0xff));
   * {
   *   using disk = DiskImage.open(path, { lock: false });
   *   const ram = new ArrayBuffer(16);
   *   const spans = { count: 2, buffers: [ram, ram], offsets: [8, 0], lengths: [3, 2] };
   *   assert.equal(disk.readSpans(spans, 10n), 5);
   *   assert.deepEqual([...new Uint8Array(ram, 8, 3), ...new Uint8Array(ram, 0, 2)], [10, 11, 12, 13, 14]);
   * }
   * Deno.removeSync(path);
   * ```
   */
  readSpans(into: BufferSpans, offset: number | bigint): number {
    return this.#transferv("preadv", into, offset);
  }

  /**
   * {@link writev} of spans of memory instead of views.
   *
   * @throws {RangeError} when the range is not inside the image.
   * @throws {KvmError} with op `"pwritev"` or `"pwrite"` (EBADF: opened read-only; ENOSPC, EIO).
   */
  writeSpans(from: BufferSpans, offset: number | bigint): number {
    return this.#transferv("pwritev", from, offset);
  }

  /**
   * `fdatasync(2)`: returns once every write so far (and the metadata needed to read it back) is
   * on stable storage — virtio-blk's FLUSH.
   *
   * @throws {KvmError} with op `"fdatasync"` (EIO: a write-back failed).
   */
  fdatasync(): void {
    const fd = this.#open();
    const result = retryOnEintr(() => libc().fdatasync(fd));
    if (result < 0) throw new KvmError("fdatasync", -result, { detail: this.path });
  }

  /**
   * `fallocate(2)` with `mode` over `length` bytes from byte `offset`: {@link FALLOC_FL_PUNCH_HOLE}
   * with {@link FALLOC_FL_KEEP_SIZE} frees the blocks (they read as zeros), {@link
   * FALLOC_FL_ZERO_RANGE} makes the range read as zeros without writing it — virtio-blk's DISCARD
   * and WRITE_ZEROES, as QEMU's file-posix driver does them.
   *
   * @throws {KvmError} with op `"fallocate"` (EOPNOTSUPP where the file system lacks the mode,
   *   EBADF for an image opened read-only).
   */
  fallocate(mode: number, offset: bigint, length: bigint): void {
    const fd = this.#open();
    const result = retryOnEintr(() => libc().fallocate(fd, mode, offset, length));
    if (result < 0) {
      throw new KvmError("fallocate", -result, {
        detail: `${this.path}: mode ${mode}, ${length} bytes at ${offset}`,
      });
    }
  }

  /** Closes the fd, dropping the locks. Idempotent. */
  close(): void {
    const fd = this.#fd;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Same as {@link DiskImage.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Starts a preadv (`op` "preadv") or pwritev of `spans` at byte `offset` on `ring`; `done` runs
   * when the ring reaps its completion. Returns false, having started nothing, when the ring cannot
   * take it now (every slot busy, more than 1024 spans): move the data with {@link readSpans} or
   * {@link writeSpans} instead. The spans must stay mapped until `done` runs.
   *
   * @throws {RangeError} as {@link readSpans} does, before anything starts.
   * @throws {TypeError} once the ring is closed.
   */
  startSpans(
    ring: IoRing,
    op: "preadv" | "pwritev",
    spans: BufferSpans,
    offset: number | bigint,
    done: IoRingDone,
  ): boolean {
    const fd = this.#open();
    const start = toOffset(offset, `${op} offset`);
    const total = this.#checkSpans(op, spans, start);
    if (total === 0) {
      done(null);
      return true;
    }
    return ring.start(op, fd, start, spans.buffers, spans.offsets, spans.lengths, spans.count, total, done);
  }

  /**
   * Starts `fdatasync` on `ring` ({@link fdatasync} without waiting): `done` runs when the ring reaps
   * it. Returns false, having started nothing, when the ring has no room: call {@link fdatasync}.
   *
   * @throws {TypeError} once the ring is closed.
   */
  startFdatasync(ring: IoRing, done: IoRingDone): boolean {
    return ring.fdatasync(this.#open(), done);
  }

  /** Checks each span lies inside its buffer and the whole inside the image; the total bytes. */
  #checkSpans(op: "preadv" | "pwritev", spans: BufferSpans, start: bigint): number {
    const { count: spanCount, buffers, offsets, lengths } = spans;
    let total = 0;
    for (let i = 0; i < spanCount; i++) {
      // The kernel would take any address: a span must lie inside its buffer.
      const o = offsets[i];
      const n = lengths[i];
      if (
        !Number.isSafeInteger(o) || !Number.isSafeInteger(n) || o < 0 || n < 0 ||
        o + n > buffers[i].byteLength
      ) {
        throw new RangeError(`${op}: span ${i} (${n} bytes at ${o}) is not inside its buffer`);
      }
      total += n;
    }
    if (start + BigInt(total) > this.size) {
      throw new RangeError(
        `${op} of ${total} bytes at ${start} is outside disk image ${this.path} (${this.size} bytes)`,
      );
    }
    return total;
  }

  /** preadv/pwritev of up to IOV_MAX spans a call; a short transfer is finished span by span. */
  #transferv(op: "preadv" | "pwritev", spans: BufferSpans, offset: number | bigint): number {
    const fd = this.#open();
    const start = toOffset(offset, `${op} offset`);
    const total = this.#checkSpans(op, spans, start);
    const { count: spanCount, buffers, offsets, lengths } = spans;
    const single = op === "preadv" ? "pread" : "pwrite";
    const words = iovecScratch();
    const iov = new Uint8Array(words.buffer);
    let at = start;
    // A request's spans nearly always share one buffer: its address is looked up when the buffer changes.
    let lastBuffer: ArrayBufferLike | undefined;
    let lastAddress = 0;
    for (let first = 0; first < spanCount; first += IOV_MAX) {
      const count = Math.min(IOV_MAX, spanCount - first);
      let length = 0;
      for (let i = 0; i < count; i++) {
        const k = first + i;
        if (buffers[k] !== lastBuffer) {
          lastBuffer = buffers[k];
          lastAddress = bufferAddress(lastBuffer);
        }
        const n = lengths[k];
        putIovec(words, i, lastAddress + offsets[k], n);
        length += n;
      }
      const result = op === "preadv"
        ? retryOnEintr(() => libc().preadv64(fd, iov, count, at))
        : retryOnEintr(() => libc().pwritev64(fd, iov, count, at));
      if (result < 0) {
        throw new KvmError(op, -result, {
          detail: `${this.path}, ${length} bytes at ${at}`,
          hint: -result === EBADF && op === "pwritev" ? "the image was opened read-only" : undefined,
        });
      }
      if (result === length) {
        at += BigInt(length);
        continue;
      }
      // A short transfer (rare on a regular file): the rest span by span, which loops and reports.
      let skip = result;
      for (let i = 0; i < count; i++) {
        const k = first + i;
        const n = lengths[k];
        const rest = skip >= n ? 0 : n - skip;
        if (rest > 0) {
          this.#transfer(
            single,
            new Uint8Array(buffers[k], offsets[k] + n - rest, rest),
            at + BigInt(n - rest),
          );
        }
        skip = Math.max(0, skip - n);
        at += BigInt(n);
      }
    }
    return total;
  }

  #transfer(op: "pread" | "pwrite", buffer: Uint8Array, offset: number | bigint): number {
    const fd = this.#open();
    const start = toOffset(offset, `${op} offset`);
    const length = BigInt(buffer.length);
    if (start + length > this.size) {
      throw new RangeError(
        `${op} of ${length} bytes at ${start} is outside disk image ${this.path} (${this.size} bytes)`,
      );
    }
    let done = 0;
    while (done < buffer.length) {
      const rest = buffer.subarray(done);
      const at = start + BigInt(done);
      const result = retryOnEintr(() =>
        op === "pread"
          ? libc().pread64(fd, rest, BigInt(rest.length), at)
          : libc().pwrite64(fd, rest, BigInt(rest.length), at)
      );
      if (result < 0) {
        throw new KvmError(op, -result, {
          detail: `${this.path}, ${rest.length} bytes at ${at}`,
          hint: -result === EBADF && op === "pwrite" ? "the image was opened read-only" : undefined,
        });
      }
      if (result === 0) {
        // The file shrank under us (size is from open time): what is left reads as end of file.
        throw new KvmError(op, 0, {
          code: KVM_ERROR_PARTIAL,
          detail: `${this.path}, ${rest.length} bytes at ${at}`,
          hint: "the image ended early: another process truncated it",
        });
      }
      done += result;
    }
    return done;
  }

  #open(): number {
    if (this.#fd < 0) throw new Deno.errors.BadResource(`disk image ${this.path} was used after close()`);
    return this.#fd;
  }
}

/**
 * QEMU's `raw_apply_lock_bytes` then `raw_check_lock_bytes`, in our words: read-lock the bytes of
 * what we use and do not share, then ask whether anybody else holds the bytes that exclude us.
 */
function lockImage(fd: number, path: string, uses: number, shares: number): void {
  const bytes: number[] = [];
  QEMU_PERMISSIONS.forEach((_, bit) => {
    if (uses & (1 << bit)) bytes.push(QEMU_LOCK_PERM_BASE + bit);
  });
  QEMU_PERMISSIONS.forEach((_, bit) => {
    if (!(shares & (1 << bit))) bytes.push(QEMU_LOCK_SHARED_BASE + bit);
  });
  for (const byte of bytes) {
    const answer = flock(fd, F_OFD_SETLK, F_RDLCK, byte);
    if (typeof answer === "number") {
      const errno = -answer;
      throw errno === EAGAIN || errno === EACCES // POSIX allows either for a conflict
        ? lockError(path, errno, `byte ${byte} is write-locked by another process`, holderHint(path))
        : lockError(path, errno, `F_OFD_SETLK byte ${byte}`);
    }
  }
  const others = probe(fd, path);
  QEMU_PERMISSIONS.forEach((name, bit) => {
    if ((uses & (1 << bit)) && others.unshared.includes(name)) {
      throw lockError(
        path,
        EAGAIN,
        `QEMU lock byte ${QEMU_LOCK_SHARED_BASE + bit}: "${name}" not shared by another user of the image` +
          ` (QEMU's "Failed to get "${name}" lock")`,
        holderHint(path),
      );
    }
  });
  QEMU_PERMISSIONS.forEach((name, bit) => {
    if (!(shares & (1 << bit)) && others.used.includes(name)) {
      throw lockError(
        path,
        EAGAIN,
        `QEMU lock byte ${QEMU_LOCK_PERM_BASE + bit}: another user of the image has "${name}", which this ` +
          `open does not share (QEMU's "Failed to get shared "${name}" lock")`,
        holderHint(path),
      );
    }
  });
}

function holderHint(path: string): string {
  return `is a QEMU (or another kvm-ts, or qemu-img) using ${path}? Stop it, or open the image ` +
    "read-only on both sides, or pass shareRw: true (QEMU: share-rw=on) where concurrent writers are safe";
}
