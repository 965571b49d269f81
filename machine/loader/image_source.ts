/**
 * Where a loader reads an image from, and how a boot plan's writes reach guest memory without the
 * whole image in the JavaScript heap. A loader reads only the headers it needs through an
 * {@link ImageSource}; the kernel's and the initrd's bytes stay in their files and the plan names
 * ranges of them ({@link BootSourceWrite}), which {@link copyBootWrites} copies in bounded chunks
 * when the guest is loaded (and again at every reset, as Cloud Hypervisor re-reads its kernel).
 * An image already in memory is a {@link BytesSource}: its plan holds views of it, as before.
 *
 * @module
 */

import type { BootWrite } from "./boot_plan.ts";

/**
 * The bytes of an image, read by position: a file kept open (the front-end's), or memory
 * ({@link BytesSource}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BytesSource, readSource } from "./image_source.ts";
 * const source = new BytesSource(new Uint8Array([1, 2, 3, 4]));
 * assert.equal(source.size, 4);
 * assert.deepEqual(readSource(source, 1, 2), new Uint8Array([2, 3]));
 * ```
 */
export interface ImageSource {
  /** Bytes in the image. */
  readonly size: number;
  /**
   * Fills `target` with the image's bytes from `offset`.
   *
   * @throws {RangeError} when `[offset, offset + target.length)` is not inside the image.
   * @throws {LoaderError} (CHANGED) from a file that changed since it was opened.
   */
  readInto(offset: number, target: Uint8Array): void;
}

/**
 * An image held in memory. Loaders given one put views of its bytes in their plans, so a plan
 * of an in-memory image holds bytes only ({@link BootPlan.writes} entries with `data`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BytesSource } from "./image_source.ts";
 * const target = new Uint8Array(2);
 * new BytesSource(new Uint8Array([5, 6, 7])).readInto(1, target);
 * assert.deepEqual(target, new Uint8Array([6, 7]));
 * ```
 */
export class BytesSource implements ImageSource {
  /** The image. */
  readonly bytes: Uint8Array;

  /** A source over `bytes` (not copied). */
  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  /** `bytes.length`. */
  get size(): number {
    return this.bytes.length;
  }

  /** Copies `[offset, offset + target.length)` into `target`. */
  readInto(offset: number, target: Uint8Array): void {
    checkRange(this, offset, target.length);
    target.set(this.bytes.subarray(offset, offset + target.length));
  }
}

/**
 * Zeros, as many as asked for: the source of a file-backed kernel's bss, so that it is not
 * allocated as an array.
 */
export const ZERO_SOURCE: ImageSource = {
  size: Number.MAX_SAFE_INTEGER,
  readInto(offset: number, target: Uint8Array): void {
    checkRange(ZERO_SOURCE, offset, target.length);
    target.fill(0);
  },
};

/** Throws RangeError unless `[offset, offset + length)` lies inside `source`. */
export function checkRange(source: ImageSource, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > source.size
  ) {
    throw new RangeError(`image read [${offset}, +${length}) is outside the ${source.size}-byte image`);
  }
}

/**
 * Fills `target` with `file`'s bytes from `offset` (a seek, then reads until it is full): the read of
 * every image source over a file. A file that ends first throws what `ended(at)` returns, `at` being
 * the offset it ended at.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readFileAt } from "./image_source.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeFileSync(path, new Uint8Array([1, 2, 3]));
 * using file = Deno.openSync(path);
 * const target = new Uint8Array(2);
 * readFileAt(file, 1, target, () => new Error("short"));
 * assert.deepEqual(target, new Uint8Array([2, 3]));
 * assert.throws(() => readFileAt(file, 2, target, (at) => new Error(`ended at ${at}`)), /ended at 3/);
 * Deno.removeSync(path);
 * ```
 */
export function readFileAt(
  file: Deno.FsFile,
  offset: number,
  target: Uint8Array,
  ended: (at: number) => Error,
): void {
  file.seekSync(offset, Deno.SeekMode.Start);
  for (let done = 0; done < target.length;) {
    const n = file.readSync(target.subarray(done));
    if (n === null || n === 0) throw ended(offset + done);
    done += n;
  }
}

/** `image` as a source: itself, or a {@link BytesSource} over a `Uint8Array`. */
export function imageSource(image: Uint8Array | ImageSource): ImageSource {
  return image instanceof Uint8Array ? new BytesSource(image) : image;
}

/**
 * `length` bytes of `source` from `offset`, in a new array (a view for a {@link BytesSource}).
 *
 * @throws {RangeError} when the range is not inside the image.
 */
export function readSource(source: ImageSource, offset: number, length: number): Uint8Array {
  checkRange(source, offset, length);
  if (source instanceof BytesSource) {
    const { bytes } = source;
    return offset === 0 && length === bytes.length ? bytes : bytes.subarray(offset, offset + length);
  }
  const bytes = new Uint8Array(length);
  source.readInto(offset, bytes);
  return bytes;
}

/**
 * The first `length` bytes of `source`, or all of it when it is shorter: what a header parser
 * looks at.
 */
export function readHead(source: ImageSource, length: number): Uint8Array {
  return readSource(source, 0, Math.min(length, source.size));
}

/** A write of `[offset, offset + length)` of `source` to a guest address. */
export interface BootSourceWrite {
  /** Guest-physical address of the first byte. */
  addr: bigint;
  /** Where the bytes are. */
  source: ImageSource;
  /** First byte in the source. */
  offset: number;
  /** Bytes. */
  length: number;
}

/** Bytes a {@link BootWrite} places. */
export function bootWriteLength(write: BootWrite): number {
  return "data" in write ? write.data.length : write.length;
}

/** Largest chunk {@link copyBootWrites} reads at once: 1 MiB. */
export const BOOT_COPY_CHUNK_SIZE = 0x10_0000;

/** How {@link copyBootWrites} copies. */
export interface CopyBootWritesOptions {
  /** Largest chunk read at once (default {@link BOOT_COPY_CHUNK_SIZE}). */
  chunkSize?: number;
  /**
   * The target's bytes at `addr` as one writable view of plain RAM, or null where it is not (the
   * board's `AddressSpace.map` for writing): such chunks are read from their source straight into it.
   */
  map?: (addr: bigint, length: number) => Uint8Array | null;
}

/**
 * Places `writes` through `write` (the board's `AddressSpace.writeRom`): bytes as they are, a
 * source range in chunks of at most {@link BOOT_COPY_CHUNK_SIZE} bytes through one reused buffer,
 * so the image is never held whole. With `map` (the board's `AddressSpace.map` for writing), a
 * chunk whose target is plain RAM is read from its source straight into guest memory: one copy
 * instead of two (a Linux kernel is tens of MiB).
 *
 * @throws what a source's `readInto` throws (a file that changed) and what `write` throws.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BytesSource, copyBootWrites } from "./image_source.ts";
 * const memory = new Uint8Array(16);
 * const source = new BytesSource(new Uint8Array([1, 2, 3, 4]));
 * copyBootWrites(
 *   [{ addr: 0n, data: new Uint8Array([9]) }, { addr: 8n, source, offset: 1, length: 3 }],
 *   (addr, bytes) => memory.set(bytes, Number(addr)),
 * );
 * assert.deepEqual([...memory.subarray(0, 1)], [9]);
 * assert.deepEqual([...memory.subarray(8, 11)], [2, 3, 4]);
 * ```
 */
export function copyBootWrites(
  writes: readonly BootWrite[],
  write: (addr: bigint, bytes: Uint8Array) => void,
  options: CopyBootWritesOptions = {},
): void {
  const { chunkSize = BOOT_COPY_CHUNK_SIZE, map } = options;
  let buffer: Uint8Array | undefined;
  for (const w of writes) {
    if ("data" in w) {
      write(w.addr, w.data);
      continue;
    }
    if (w.source instanceof BytesSource) {
      write(w.addr, readSource(w.source, w.offset, w.length));
      continue;
    }
    checkRange(w.source, w.offset, w.length);
    for (let done = 0; done < w.length;) {
      const length = Math.min(chunkSize, w.length - done);
      const addr = w.addr + BigInt(done);
      const target = map?.(addr, length);
      if (target) {
        w.source.readInto(w.offset + done, target);
      } else {
        buffer ??= new Uint8Array(chunkSize);
        const chunk = buffer.subarray(0, length);
        w.source.readInto(w.offset + done, chunk);
        write(addr, chunk);
      }
      done += length;
    }
  }
}
