/**
 * The host side of the virtio devices: a raw disk image behind virtio-blk (pread, pwrite and
 * fdatasync on a {@link DiskImage} holding QEMU's locks), the kernel's CSPRNG behind virtio-rng,
 * and a TAP interface behind virtio-net.
 *
 * @module
 */

import type { BlockBacking, RamSpans, VirtioNet, VirtioNetOffloads } from "../devices/virtio/mod.ts";
import { VIRTIO_NET_MAX_FRAME } from "../devices/virtio/virtio_net_frame.ts";
import {
  type DiskImage,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
} from "../kvm/disk_image.ts";
import { getRandom } from "../kvm/get_random.ts";
import { IoRing } from "../kvm/io_ring.ts";
import { KvmError } from "../kvm/kvm_error.ts";
import {
  type Tap,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_UFO,
  VIRTIO_NET_HDR_SIZE,
} from "../kvm/tap.ts";
import type { PcNetBackend } from "./pc/pc_pci.ts";
import type { HostFdSource } from "./runner.ts";

/** The errors of an fallocate mode the file system (or file) does not have. */
const UNSUPPORTED = new Set(["EOPNOTSUPP", "ENOSYS", "ENODEV", "ENOTTY"]);
/** The other fallocate errors after which QEMU's write-zeroes tries its next way. */
const FALL_BACK = new Set(["EINVAL", "EBUSY"]);
/** Bytes of zeros written per call where fallocate cannot zero a range. */
const ZERO_CHUNK = 0x10_0000;

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
export class DiskBlockBacking implements BlockBacking, Disposable {
  readonly #image: DiskImage;
  readonly #unmap: boolean;
  #ring: IoRing | null = null;
  /** Zeros for a WRITE_ZEROES the file system cannot do with fallocate (made on first use). */
  #zeros: Uint8Array | null = null;

  /**
   * The disk behind `image`. With `unmap` (QEMU's `-drive discard=unmap`) a DISCARD frees the
   * range's blocks, as may a WRITE_ZEROES that allows it; without (QEMU's default,
   * `discard=ignore`) a DISCARD does nothing.
   */
  constructor(image: DiskImage, options: { unmap?: boolean } = {}) {
    this.#image = image;
    this.#unmap = options.unmap ?? false;
  }

  /**
   * DISCARD: with `unmap`, the range's blocks are freed (`fallocate` PUNCH_HOLE, the size kept); a
   * file system that cannot is not an error (QEMU's file-posix gives up on discards then), nor is
   * `unmap` off (QEMU's `discard=ignore`). (An image that is a host block device gets the same
   * `fallocate` calls, which the kernel turns into zero-outs there; QEMU uses the BLKDISCARD and
   * BLKZEROOUT ioctls instead. Not done here.)
   *
   * @throws {KvmError} for any other failure (EIO; EBADF for a read-only image with `unmap`).
   */
  discard(offset: bigint, length: bigint): void {
    if (!this.#unmap || length === 0n) return;
    try {
      this.#image.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    } catch (error) {
      if (!(error instanceof KvmError) || !UNSUPPORTED.has(error.code)) throw error;
    }
  }

  /**
   * WRITE_ZEROES, as QEMU's file-posix: with `mayUnmap` and `unmap`, the blocks are freed (PUNCH_HOLE;
   * QEMU's `handle_aiocb_write_zeroes_unmap`); otherwise, or where that cannot be done, the range is
   * zeroed in place (`fallocate` ZERO_RANGE), or — on a file system without it, such as tmpfs —
   * punched and allocated again (PUNCH_HOLE, then plain fallocate), and only where neither works are
   * zeros written (`handle_aiocb_write_zeroes`, then the block layer's bounce buffer). It runs on the
   * thread that serves the queue, as every step but the last is a quick metadata change.
   *
   * @throws {KvmError} when the zeros cannot be written (EIO, ENOSPC).
   */
  writeZeroes(offset: bigint, length: bigint, mayUnmap: boolean): void {
    if (length === 0n) return;
    const image = this.#image;
    const attempts: (() => void)[] = [
      ...(mayUnmap && this.#unmap
        ? [() => image.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)]
        : []),
      () => image.fallocate(FALLOC_FL_ZERO_RANGE, offset, length),
      () => {
        image.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
        image.fallocate(0, offset, length);
      },
    ];
    for (const attempt of attempts) {
      try {
        attempt();
        return;
      } catch (error) {
        // EINVAL: some file systems refuse a range that is not block-aligned; EBUSY: a hole that
        // cannot be punched now (QEMU falls back on both).
        if (!(error instanceof KvmError) || !(UNSUPPORTED.has(error.code) || FALL_BACK.has(error.code))) {
          throw error;
        }
      }
    }
    const zeros = this.#zeros ??= new Uint8Array(ZERO_CHUNK);
    for (let at = 0n; at < length;) {
      const n = length - at < BigInt(ZERO_CHUNK) ? Number(length - at) : ZERO_CHUNK;
      this.#image.write(zeros.subarray(0, n), offset + at);
      at += BigInt(n);
    }
  }

  /**
   * Starts span transfers on an io_uring from now on (see `kvm/io_ring.ts`): with `workers`, each
   * one's copy runs in one of io_uring's kernel workers (QEMU's `aio=threads`); without, the kernel
   * copies what the page cache holds at once and hands the rest to a worker (QEMU's `aio=io_uring`).
   * Returns the ring's fd as a source for the thread that serves the queues to wait on (its `ready`
   * runs the completions); call it only where that thread waits in poll(2) between exits. Disposing
   * of the source drains and closes the ring: transfers are synchronous again.
   *
   * @throws {KvmError} with op `"io_uring_setup"` when the kernel refuses a ring.
   * @throws {TypeError} when a ring is open already.
   */
  offload(options: { workers?: boolean } = {}): HostFdSource & Disposable {
    if (this.#ring !== null) throw new TypeError("DiskBlockBacking: transfers are offloaded already");
    const ring = this.#ring = IoRing.open(256, { workers: options.workers ?? false });
    return {
      fd: ring.fd,
      armed: () => true,
      ready: () => void ring.reap(),
      [Symbol.dispose]: () => this.close(),
    };
  }

  /** Starts a transfer on the ring, when there is one and it has room. */
  startSpans(isWrite: boolean, offset: bigint, spans: RamSpans, done: (ok: boolean) => void): boolean {
    const op = isWrite ? "pwritev" : "preadv";
    return this.#begin((ring) =>
      this.#image.startSpans(ring, op, spans, offset, (error) => done(error === null))
    );
  }

  /**
   * Starts fdatasync on the ring, when there is one and it has room: a FLUSH that does not stop the
   * VM thread while the storage writes back.
   */
  startFlush(done: (ok: boolean) => void): boolean {
    return this.#begin((ring) => this.#image.startFdatasync(ring, (error) => done(error === null)));
  }

  /**
   * Has `start` put an operation on the ring, if there is one; what the kernel finished inside the
   * submission (page-cache data, without `workers`) completes before this returns.
   */
  #begin(start: (ring: IoRing) => boolean): boolean {
    const ring = this.#ring;
    if (ring === null || !start(ring)) return false;
    ring.reap();
    return true;
  }

  /** Waits for the ring's transfers in flight and runs their completions. */
  drain(): void {
    this.#ring?.drain();
  }

  /** Drains and closes the ring (the image stays the caller's to close). Idempotent. */
  close(): void {
    const ring = this.#ring;
    this.#ring = null;
    ring?.close();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
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

  /** preadv: a request's pieces of guest RAM in one call. */
  readv(offset: bigint, into: readonly Uint8Array[]): void {
    this.#image.readv(into, offset);
  }

  /** pwritev. */
  writev(offset: bigint, from: readonly Uint8Array[]): void {
    this.#image.writev(from, offset);
  }

  /** preadv straight into spans of guest RAM (no view per page). */
  readSpans(offset: bigint, into: RamSpans): void {
    this.#image.readSpans(into, offset);
  }

  /** pwritev straight from spans of guest RAM. */
  writeSpans(offset: bigint, from: RamSpans): void {
    this.#image.writeSpans(from, offset);
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

/** What {@link TapNetBackend} uses of a {@link Tap} (tests give a fake). */
export type TapLike = Pick<Tap, "read" | "writeSpans" | "setOffloads" | "vnetHeaderSize" | "fd">;

/** What a {@link TapNetBackend} counted. */
export interface TapNetStats {
  /** Frames the tap refused (queue full, interface down, a frame it found malformed). */
  txErrors: number;
  /** Frames read from the tap. */
  rxFrames: number;
}

/**
 * virtio-net's backend on a {@link Tap} (QEMU's `-netdev tap` with its virtio-net header, vhost
 * off). Both speak the same 12-byte header: sending writes the card's header and the frame's spans
 * of guest RAM in one `writev` (the kernel checks the header, finishes checksums, and keeps a large
 * segment whole until something needs it cut); receiving hands the card the tap's header beside
 * the frame. The offloads the driver accepts become the tap's (TUNSETOFFLOAD, as QEMU's
 * `tap_fd_set_offload`), so the kernel gives the guest only what it can take.
 *
 * Receiving is pulled: {@link pump} reads until the tap is empty or the card has no buffer, then
 * holds that frame until the driver adds buffers ({@link receiveReady} pumps again). The tap stays
 * the caller's to close.
 *
 * @example
 * ```ts ignore
 * using tap = Tap.open({ name: "kvmts0" });
 * const backend = new TapNetBackend(tap);
 * const spec = { type: "virtio-net-pci", mac: VIRTIO_NET_DEFAULT_MAC, backend } as const;
 * // … await PcMachine.create({ pciDevices: [spec] }); when the tap is readable: backend.pump()
 * ```
 */
export class TapNetBackend implements PcNetBackend {
  /** The tap. */
  readonly tap: TapLike;
  /** Counters. */
  readonly stats: TapNetStats = { txErrors: 0, rxFrames: 0 };
  /** Called after a pump that left the tap empty (the RX poller may wait on the tap again). */
  onDrained: () => void = () => {};
  readonly #in: Uint8Array;
  #drained = false;
  #failed = false;
  #pending = 0; // bytes of a frame read and not yet taken by the card (header included), or 0
  #offloads = 0;
  #net: VirtioNet | undefined;

  /**
   * A backend on `tap`, opened with the card's 12-byte header.
   *
   * @throws {RangeError} if the tap's header is another size.
   */
  constructor(tap: TapLike) {
    if (tap.vnetHeaderSize !== VIRTIO_NET_HDR_SIZE) {
      throw new RangeError(
        `TapNetBackend: the tap's virtio-net header is ${tap.vnetHeaderSize} bytes, not ${VIRTIO_NET_HDR_SIZE}`,
      );
    }
    this.tap = tap;
    this.#in = new Uint8Array(VIRTIO_NET_HDR_SIZE + VIRTIO_NET_MAX_FRAME);
  }

  /** The card to deliver to. */
  attach(net: VirtioNet): void {
    this.#net = net;
  }

  /** Writes `header` and the frame to the tap; false (counted) when the tap refuses it. */
  send(header: Uint8Array, frame: RamSpans): boolean {
    try {
      if (this.tap.writeSpans(header, frame) !== null) return true;
    } catch (error) {
      if (!(error instanceof KvmError)) throw error;
    }
    this.stats.txErrors++;
    return false;
  }

  /**
   * The driver accepts these offloads: the tap's TUNSETOFFLOAD bits follow (QEMU's
   * `tap_fd_set_offload`: nothing without checksums; UFO left out where the kernel refuses it). A
   * tap that refuses keeps what it had, and the card drops any frame that needs more than its
   * driver accepted.
   */
  setOffloads(offloads: VirtioNetOffloads): void {
    let bits = 0;
    if (offloads.csum) {
      bits = TUN_F_CSUM | (offloads.tso4 ? TUN_F_TSO4 : 0) | (offloads.tso6 ? TUN_F_TSO6 : 0) |
        ((offloads.tso4 || offloads.tso6) && offloads.ecn ? TUN_F_TSO_ECN : 0) |
        (offloads.ufo ? TUN_F_UFO : 0);
    }
    if (bits === this.#offloads || this.#failed) return;
    // A kernel that does not know TUN_F_UFO refuses the whole set: then without it (QEMU's retry).
    for (const tryBits of bits & TUN_F_UFO ? [bits, bits & ~TUN_F_UFO] : [bits]) {
      try {
        this.tap.setOffloads(tryBits);
        this.#offloads = tryBits;
        return;
      } catch (error) {
        if (!(error instanceof KvmError)) throw error;
      }
    }
  }

  /** The tap's TUNSETOFFLOAD bits now. */
  get offloads(): number {
    return this.#offloads;
  }

  /** The driver added receive buffers: deliver what waits. */
  receiveReady(): void {
    this.pump();
  }

  /** Whether the last {@link pump} left the tap empty and nothing held back. */
  get drained(): boolean {
    return this.#drained;
  }

  /**
   * Moves frames from the tap to the card until the tap is empty (then {@link onDrained} runs and
   * this returns true) or the card takes no more (the frame is kept; false). A tap whose read fails
   * (it was deleted under us) is not read again: receiving stops, sending goes on failing.
   */
  pump(): boolean {
    const net = this.#net;
    if (net === undefined || this.#failed) return false;
    this.#drained = false;
    for (;;) {
      if (this.#pending === 0) {
        let length: number | null;
        try {
          length = this.tap.read(this.#in);
        } catch (error) {
          if (!(error instanceof KvmError)) throw error;
          this.#failed = true;
          return false;
        }
        if (length === null) {
          this.#drained = true;
          this.onDrained();
          return true;
        }
        if (length < VIRTIO_NET_HDR_SIZE) continue; // cannot happen with IFF_VNET_HDR; nothing to deliver
        this.#pending = length;
        this.stats.rxFrames++;
      }
      const packet = this.#in;
      if (
        !net.receive(
          packet.subarray(VIRTIO_NET_HDR_SIZE, this.#pending),
          packet.subarray(0, VIRTIO_NET_HDR_SIZE),
        )
      ) {
        return false;
      }
      this.#pending = 0;
    }
  }
}
