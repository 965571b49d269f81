/**
 * virtio-rng (virtio 1.2 section 5.4), as QEMU 7.2's `hw/virtio/virtio-rng.c`: one request queue
 * of 8 entries; every chain's device-writable buffers are filled from an injected entropy source
 * and returned with the number of bytes written. No configuration space, no feature bits.
 *
 * @module
 */

import type { VirtioDevice, VirtioDeviceModel } from "./virtio_device.ts";
import type { Virtqueue } from "./virtqueue.ts";

/** Virtio device ID of an entropy source. */
export const VIRTIO_ID_RNG = 4;
/** QEMU's queue size for virtio-rng. */
export const VIRTIO_RNG_QUEUE_SIZE = 8;
/** Most bytes given to one request (a hostile driver may offer buffers of up to 4 GiB). */
export const VIRTIO_RNG_MAX_CHUNK = 0x1_0000;
/**
 * QEMU's `PCI_CLASS_OTHERS` (0xff) is stored as the 16-bit class word, so the function shows base
 * class 0x00, subclass 0xff (`info pci`: "Class 0255").
 */
const PCI_CLASS_OTHERS = 0x00_ff_00;

/** Options of {@link VirtioRng}. */
export interface VirtioRngOptions {
  /** Fills `buf` with random bytes (the kvm layer reads /dev/urandom; tests give a pattern). */
  entropy: (buf: Uint8Array) => void;
}

/**
 * The entropy device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VirtioRng } from "./virtio_rng.ts";
 * const rng = new VirtioRng({ entropy: (b) => b.fill(0x5a) });
 * assert.equal(rng.deviceId, 4);
 * assert.deepEqual(rng.queueSizes, [8]);
 * ```
 */
export class VirtioRng implements VirtioDeviceModel {
  /** QEMU's device name. */
  readonly name: string = "virtio-rng";
  /** {@link VIRTIO_ID_RNG}. */
  readonly deviceId: number = VIRTIO_ID_RNG;
  /** Class word 0x00ff, as QEMU sets it. */
  readonly pciClassCode: number = PCI_CLASS_OTHERS;
  /** No device-specific features. */
  readonly features: bigint = 0n;
  /** One queue of 8. */
  readonly queueSizes: readonly number[] = [VIRTIO_RNG_QUEUE_SIZE];
  /** No configuration space. */
  readonly configSize: number = 0;
  readonly #entropy: (buf: Uint8Array) => void;

  /**
   * An entropy device drawing from `entropy`.
   *
   * @throws {TypeError} if `entropy` is not a function.
   */
  constructor(options: VirtioRngOptions) {
    if (typeof options?.entropy !== "function") throw new TypeError("VirtioRng: entropy must be a function");
    this.#entropy = options.entropy;
  }

  /** No configuration space: never called. */
  readConfig(): number {
    return 0;
  }

  /** Fills every available chain's writable part (at most {@link VIRTIO_RNG_MAX_CHUNK} bytes each). */
  handleQueue(queue: Virtqueue, _device: VirtioDevice): void {
    for (let chain = queue.pop(); chain; chain = queue.pop()) {
      const buf = new Uint8Array(Math.min(chain.writableLength, VIRTIO_RNG_MAX_CHUNK));
      this.#entropy(buf);
      const written = chain.write(0, buf);
      queue.push(chain, written);
    }
  }
}
