/**
 * A TAP network interface for virtio-net: `/dev/net/tun` attached with TUNSETIFF as a layer-2 tap
 * with a virtio-net header in front of every frame, non-blocking.
 *
 * @module
 */

import { EAGAIN, EINVAL } from "./_errno.ts";
import { libc } from "./_libc.ts";
import { decodeFromBytes, encodeToBytes, IFREQ_LAYOUT } from "./_structs.ts";
import { closeFd, ioctlBuf, ioctlU64, O_NONBLOCK, O_RDWR, openPath, retryOnEintr } from "./_syscalls.ts";
import type { BufferSpans } from "./disk_image.ts";
import { bufferAddress, IOV_MAX, IOVEC_SIZE, iovecScratch, putIovec } from "./io_ring.ts";
import { IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ } from "./ioctls.ts";
import { errnoName, KvmError } from "./kvm_error.ts";

/** The clone device every TUN/TAP interface is attached through. */
export const TUN_DEVICE_PATH = "/dev/net/tun";
/**
 * The virtio-net header of virtio 1.x (`struct virtio_net_hdr_mrg_rxbuf`, 12 bytes: flags,
 * gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers), the default header size.
 */
export const VIRTIO_NET_HDR_SIZE = 12;
/** The legacy header without `num_buffers`, and the least TUNSETVNETHDRSZ accepts. */
export const VIRTIO_NET_HDR_LEGACY_SIZE = 10;
/** `IFNAMSIZ`: an interface name is at most 15 bytes and a NUL. */
export const IFNAMSIZ = 16;

/** TUNSETOFFLOAD: the reader takes frames with a partial checksum (`include/uapi/linux/if_tun.h`). */
export const TUN_F_CSUM = 0x01;
/** TUNSETOFFLOAD: … and TCPv4 segments larger than the MTU (only with {@link TUN_F_CSUM}). */
export const TUN_F_TSO4 = 0x02;
/** TUNSETOFFLOAD: … and TCPv6 segments larger than the MTU (only with {@link TUN_F_CSUM}). */
export const TUN_F_TSO6 = 0x04;
/** TUNSETOFFLOAD: … and those with ECN. */
export const TUN_F_TSO_ECN = 0x08;
/** TUNSETOFFLOAD: … and UDP frames larger than the MTU (Linux 4.14 and later accept and ignore it). */
export const TUN_F_UFO = 0x10;

/** What to do about the failures of opening a tap, keyed by `op:code`. */
const TAP_HINTS: Readonly<Record<string, string>> = {
  "open:ENOENT": "the kernel has no TUN/TAP device: `modprobe tun`; in a container, pass /dev/net/tun in",
  "open:ENODEV": "the kernel has no TUN/TAP driver: `modprobe tun`",
  "open:EACCES": "no permission to open the TUN/TAP device read-write (it is usually mode 0666; check the " +
    "container's device policy)",
  "TUNSETIFF:EPERM": "creating a tap needs CAP_NET_ADMIN (root); an unprivileged user can attach to a " +
    "persistent tap made for it beforehand: `ip tuntap add dev NAME mode tap vnet_hdr user $USER`",
  "TUNSETIFF:EBUSY": "another fd is attached to this tap already (close it, or use another name)",
  "TUNSETIFF:EINVAL":
    "the name is not a valid interface name, or an interface of that name exists and is not " +
    "a single-queue tap",
  "TUNSETVNETHDRSZ:EINVAL": `the virtio-net header is at least ${VIRTIO_NET_HDR_LEGACY_SIZE} bytes`,
  "write:EIO": "the interface is down: `ip link set dev NAME up`",
  "writev:EIO": "the interface is down: `ip link set dev NAME up`",
};

function tapError(op: string, errno: number, detail: string): KvmError {
  const code = errnoName(errno);
  const key = op.startsWith("open ") ? `open:${code}` : `${op}:${code}`;
  return new KvmError(op, errno, { detail, hint: TAP_HINTS[key] });
}

/** Options of {@link Tap.open}. */
export interface TapOptions {
  /**
   * The interface name (at most 15 bytes). An existing tap of that name is attached; otherwise
   * one is created, which needs CAP_NET_ADMIN. The kernel picks `tapN` when omitted.
   */
  readonly name?: string;
  /** Bytes of virtio-net header per frame, both directions: {@link VIRTIO_NET_HDR_SIZE} (12) by default. */
  readonly vnetHeaderSize?: number;
  /**
   * TUNSETOFFLOAD's `TUN_F_*` bits (checksum, TSO, UFO) the reader accepts: 0 (the default)
   * makes the kernel hand over only complete frames with a valid checksum and no GSO.
   */
  readonly offloads?: number;
  /** The clone device, {@link TUN_DEVICE_PATH} unless given (tests use a missing path). */
  readonly devicePath?: string;
}

/**
 * One queue of a TAP interface, owned by this object: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, a
 * 12-byte virtio-net header, no offloads, non-blocking. {@link Tap.read} and {@link Tap.write}
 * move one frame each, header included. A tap the kernel created for this fd disappears when it
 * closes (unless made persistent with `ip tuntap`). {@link Tap.close} is idempotent; `using` works.
 *
 * @example
 * ```ts ignore
 * import assert from "node:assert/strict";
 * import { Tap, VIRTIO_NET_HDR_SIZE } from "./mod.ts";
 * using tap = Tap.open({ name: "kvmts0" }); // as root; then `ip link set kvmts0 up`
 * const frame = new Uint8Array(VIRTIO_NET_HDR_SIZE + 1514);
 * const length = tap.read(frame); // null: nothing queued
 * if (length !== null) assert.ok(length >= VIRTIO_NET_HDR_SIZE + 14);
 * ```
 */
export class Tap implements Disposable {
  #fd: number;
  readonly #name: string;
  readonly #vnetHeaderSize: number;

  private constructor(fd: number, name: string, vnetHeaderSize: number) {
    this.#fd = fd;
    this.#name = name;
    this.#vnetHeaderSize = vnetHeaderSize;
  }

  /**
   * Opens the clone device and attaches to (or creates) the tap.
   *
   * @throws {RangeError} when `vnetHeaderSize` or `offloads` are not non-negative integers.
   * @throws {KvmError} one per failure, with op `open /dev/net/tun` (ENOENT: no TUN driver),
   * `TUNSETIFF` (EPERM: not allowed to create taps, EBUSY: attached elsewhere, EINVAL: a name that
   * is too long, invalid or used by another kind of interface), `TUNSETVNETHDRSZ` or `TUNSETOFFLOAD`;
   * the message names the interface and says what to do.
   */
  static open(options: TapOptions = {}): Tap {
    const name = options.name ?? "";
    const vnetHeaderSize = options.vnetHeaderSize ?? VIRTIO_NET_HDR_SIZE;
    const offloads = options.offloads ?? 0;
    for (const [what, value] of [["vnetHeaderSize", vnetHeaderSize], ["offloads", offloads]] as const) {
      if (!Number.isInteger(value) || value < 0 || value > 0x7fff_ffff) {
        throw new RangeError(`Tap.open: ${what} must be a non-negative integer, got ${value}`);
      }
    }
    const nameBytes = new TextEncoder().encode(name);
    const described = `tap "${name || "tap%d"}"`;
    if (nameBytes.length >= IFNAMSIZ || nameBytes.includes(0)) {
      // The kernel would cut or refuse the name; say so before anything is created.
      throw new KvmError("TUNSETIFF", EINVAL, {
        detail: described,
        hint: `an interface name is at most ${
          IFNAMSIZ - 1
        } bytes with no NUL (this one has ${nameBytes.length})`,
      });
    }
    const path = options.devicePath ?? TUN_DEVICE_PATH;
    let fd: number;
    try {
      fd = openPath(path, O_RDWR | O_NONBLOCK);
    } catch (error) {
      if (!(error instanceof KvmError)) throw error;
      throw tapError(error.op, error.errno, described);
    }
    try {
      const ifrName = new Uint8Array(IFNAMSIZ);
      ifrName.set(nameBytes);
      const ifreq = encodeToBytes(IFREQ_LAYOUT, { ifrName, ifrFlags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR });
      call(() => ioctlBuf(fd, TUNSETIFF, ifreq, "TUNSETIFF"), described);
      const raw = decodeFromBytes(IFREQ_LAYOUT, ifreq).ifrName;
      const actual = new TextDecoder().decode(
        raw.subarray(0, raw.indexOf(0) < 0 ? IFNAMSIZ : raw.indexOf(0)),
      );
      const sizeArg = new Uint8Array(4);
      new DataView(sizeArg.buffer).setInt32(0, vnetHeaderSize, true);
      call(
        () => ioctlBuf(fd, TUNSETVNETHDRSZ, sizeArg, "TUNSETVNETHDRSZ"),
        `tap "${actual}", ${vnetHeaderSize}`,
      );
      call(() => ioctlU64(fd, TUNSETOFFLOAD, BigInt(offloads), "TUNSETOFFLOAD"), `tap "${actual}"`);
      return new Tap(fd, actual, vnetHeaderSize);
    } catch (error) {
      closeFd(fd);
      throw error;
    }
  }

  /** The interface name the kernel gave (or confirmed), e.g. `"tap0"`. */
  get name(): string {
    return this.#name;
  }

  /** The fd (-1 after close), for a poll loop or a Worker. */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@link Tap.close} has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Bytes of virtio-net header in front of every frame read or written. */
  get vnetHeaderSize(): number {
    return this.#vnetHeaderSize;
  }

  /**
   * Reads one frame the host sent to the interface into `into`: the virtio-net header (the kernel
   * writes the 10-byte legacy part and zero-fills the rest, so `num_buffers` is the device's to
   * set), then the Ethernet frame. Returns the byte count, or `null` when no frame is queued. A frame longer than
   * `into` is cut short; give room for the header and 65550 bytes (the kernel's largest).
   *
   * @throws {KvmError} with op `"read"` on failure (EINVAL: `into` is shorter than the header).
   */
  read(into: Uint8Array): number | null {
    const fd = this.#open();
    const result = retryOnEintr(() => libc().read(fd, into, BigInt(into.length)));
    if (result === -EAGAIN) return null;
    if (result < 0) throw tapError("read", -result, `tap "${this.#name}"`);
    return result;
  }

  /**
   * Sends one frame to the host: `from` holds the virtio-net header, then the Ethernet frame.
   * Returns the bytes taken (all of `from`), or `null` when the kernel's queue is full.
   *
   * @throws {KvmError} with op `"write"` on failure (EIO: the interface is down; EINVAL: shorter
   * than the header or a malformed header).
   */
  write(from: Uint8Array): number | null {
    const fd = this.#open();
    const result = retryOnEintr(() => libc().write(fd, from, BigInt(from.length)));
    if (result === -EAGAIN) return null;
    if (result < 0) throw tapError("write", -result, `tap "${this.#name}", ${from.length} bytes`);
    return result;
  }

  /**
   * Sends one frame to the host from pieces of memory, without copying them: `header` (the
   * virtio-net header, {@link vnetHeaderSize} bytes), then the frame's spans, in one `writev`.
   * Returns the bytes taken, or `null` when the kernel's queue is full. Spans beyond the kernel's
   * 1024 iovecs are gathered into one copy first.
   *
   * @throws {KvmError} with op `"writev"` on failure (EIO: the interface is down; EINVAL: a
   * malformed header, or a frame the header's offloads do not fit).
   */
  writeSpans(header: Uint8Array, frame: BufferSpans): number | null {
    const fd = this.#open();
    const { count } = frame;
    let total = header.length;
    for (let i = 0; i < count; i++) total += frame.lengths[i];
    if (count + 1 > IOV_MAX) {
      const flat = new Uint8Array(total);
      flat.set(header);
      let at = header.length;
      for (let i = 0; i < count; i++) {
        flat.set(new Uint8Array(frame.buffers[i], frame.offsets[i], frame.lengths[i]), at);
        at += frame.lengths[i];
      }
      return this.write(flat);
    }
    const words = iovecScratch();
    putIovec(words, 0, bufferAddress(header.buffer) + header.byteOffset, header.length);
    for (let i = 0; i < count; i++) {
      putIovec(words, i + 1, bufferAddress(frame.buffers[i]) + frame.offsets[i], frame.lengths[i]);
    }
    const iov = new Uint8Array(words.buffer, 0, (count + 1) * IOVEC_SIZE);
    const result = retryOnEintr(() => libc().writev(fd, iov, count + 1));
    if (result === -EAGAIN) return null;
    if (result < 0) throw tapError("writev", -result, `tap "${this.#name}", ${total} bytes`);
    return result;
  }

  /**
   * Tells the kernel which offloads the reader takes (TUNSETOFFLOAD, `TUN_F_*` bits): with 0,
   * {@link read} gets only whole frames with valid checksums; with {@link TUN_F_CSUM} and TSO bits,
   * frames with partial checksums and segments up to 64 KiB, as the header says.
   *
   * @throws {KvmError} with op `TUNSETOFFLOAD` (EINVAL: a bit this kernel does not know).
   */
  setOffloads(offloads: number): void {
    const fd = this.#open();
    call(() => ioctlU64(fd, TUNSETOFFLOAD, BigInt(offloads), "TUNSETOFFLOAD"), `tap "${this.#name}"`);
  }

  /** Closes the fd (a non-persistent tap then disappears). Idempotent. */
  close(): void {
    const fd = this.#fd;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Same as {@link Tap.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(): number {
    if (this.#fd < 0) throw new Deno.errors.BadResource(`the Tap "${this.#name}" was used after close()`);
    return this.#fd;
  }
}

/** Runs one ioctl of the setup, re-throwing its failure with the tap's hint and name. */
function call(ioctl: () => number, detail: string): void {
  try {
    ioctl();
  } catch (error) {
    if (!(error instanceof KvmError)) throw error;
    throw tapError(error.op, error.errno, detail);
  }
}
