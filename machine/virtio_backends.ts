/**
 * The host side of the virtio devices: a raw disk image behind virtio-blk (pread, pwrite and
 * fdatasync on a {@link DiskImage} holding QEMU's locks) and the kernel's CSPRNG behind virtio-rng.
 *
 * @module
 */

import type { BlockBacking } from "../devices/virtio/mod.ts";
import { type DiskImage, getRandom } from "../kvm/mod.ts";

/**
 * {@link BlockBacking} over an open {@link DiskImage}; the image stays the caller's to close. A
 * failing call throws, and VirtioBlk completes the request with IOERR.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DiskImage } from "../kvm/mod.ts";
 * import { DiskBlockBacking } from "./virtio_backends.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.truncateSync(path, 4096);
 * {
 *   using image = DiskImage.open(path);
 *   const disk = new DiskBlockBacking(image);
 *   disk.write(512n, new Uint8Array([1, 2, 3]));
 *   disk.flush();
 *   const back = new Uint8Array(3);
 *   disk.read(512n, back);
 *   assert.deepEqual([...back], [1, 2, 3]);
 *   assert.equal(disk.size, 4096n);
 * }
 * Deno.removeSync(path);
 * ```
 */
export class DiskBlockBacking implements BlockBacking {
  readonly #image: DiskImage;

  /** The disk behind `image`. */
  constructor(image: DiskImage) {
    this.#image = image;
  }

  /** The image's size in bytes. */
  get size(): bigint {
    return this.#image.size;
  }

  /** Whether the image was opened read-only. */
  get readOnly(): boolean {
    return this.#image.readOnly;
  }

  /** pread. */
  read(offset: bigint, into: Uint8Array): void {
    this.#image.read(into, offset);
  }

  /** pwrite. */
  write(offset: bigint, from: Uint8Array): void {
    this.#image.write(from, offset);
  }

  /** fdatasync. */
  flush(): void {
    this.#image.fdatasync();
  }
}

/**
 * Entropy for virtio-rng: `getrandom(2)` on the host (the kernel's CSPRNG, as QEMU's default
 * `rng-random` backend reads /dev/urandom).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hostEntropy } from "./virtio_backends.ts";
 * const buf = new Uint8Array(64);
 * hostEntropy(buf);
 * assert.ok(buf.some((b) => b !== 0));
 * ```
 */
export function hostEntropy(buf: Uint8Array): void {
  getRandom(buf);
}
