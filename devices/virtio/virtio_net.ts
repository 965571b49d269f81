/**
 * virtio-net (virtio 1.2 section 5.1), the smallest device a Linux guest drives, behaving as QEMU
 * 7.2's `hw/net/virtio-net.c` does with those features:
 *
 * - two queues, receive (0) and transmit (1), 256 entries each (QEMU's defaults); no control queue,
 *   no multiqueue;
 * - features: MAC and STATUS (plus the transport's VERSION_1, INDIRECT_DESC and EVENT_IDX). No
 *   checksum or segmentation offloads and no MRG_RXBUF, so every header this device writes is zero
 *   but for `num_buffers` = 1, and every receive buffer chain must hold a whole frame plus the
 *   12-byte header;
 * - configuration space: `mac` (6 bytes) then `status` (u16, {@link VIRTIO_NET_S_LINK_UP}), 8
 *   bytes, as QEMU sizes it for those two features; read-only for a virtio 1.x driver;
 * - transmit: every chain's device-readable part is the 12-byte header and the frame; the header is
 *   dropped (the driver may not ask for anything in it without offloads) and the bare Ethernet
 *   frame goes to the injected {@link VirtioNetOptions.send}. A chain with no readable part, or
 *   shorter than the header, is a protocol error (QEMU's "virtio-net header not in first
 *   element"); a frame longer than {@link VIRTIO_NET_MAX_FRAME} or refused by the backend is
 *   dropped and counted;
 * - receive: the wiring calls {@link VirtioNet.receive} with a frame from its backend. It goes into
 *   the next available chain behind a zeroed header; when no chain is available (or the driver is
 *   not ready) `receive` returns false and the caller keeps the frame for later (QEMU's
 *   `can_receive`): {@link VirtioNetOptions.onReceiveReady} says when the driver added buffers.
 *   A chain too small for the frame is given back unused (QEMU's `virtqueue_unpop`) and the frame
 *   dropped and counted; a chain with no device-writable buffer is a protocol error.
 *
 * @module
 */

import type { VirtioDevice, VirtioDeviceModel } from "./virtio_device.ts";
import type { StateObject, StateReader } from "../device_state.ts";
import { VirtioStatus } from "./virtio_device.ts";
import { type DescriptorChain, VirtioProtocolError, type Virtqueue } from "./virtqueue.ts";
import { VIRTIO_NET_MAX_FRAME } from "./virtio_net_frame.ts";

export { VIRTIO_NET_MAX_FRAME };

/** Virtio device ID of a network card. */
export const VIRTIO_ID_NET = 1;
/** QEMU's default size of the receive and of the transmit queue. */
export const VIRTIO_NET_QUEUE_SIZE = 256;
/** Index of the receive queue. */
export const VIRTIO_NET_RX_QUEUE = 0;
/** Index of the transmit queue. */
export const VIRTIO_NET_TX_QUEUE = 1;
/**
 * Bytes of the header in front of every frame of a virtio 1.x device (`struct virtio_net_hdr_v1`:
 * flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers).
 */
export const VIRTIO_NET_HDR_SIZE = 12;
/** Bytes of configuration space with MAC and STATUS offered (QEMU's `endof(status)`). */
export const VIRTIO_NET_CONFIG_SIZE = 8;
/** Configuration `status` bit: the link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** QEMU's default MAC address of the first NIC (`qemu_macaddr_default_if_unset`). */
export const VIRTIO_NET_DEFAULT_MAC: readonly number[] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/** PCI class of QEMU's virtio-net-pci (`PCI_CLASS_NETWORK_ETHERNET`). */
const PCI_CLASS_NETWORK_ETHERNET = 0x02_00_00;
/** Offset of `num_buffers` in the header. */
const NUM_BUFFERS_OFFSET = 10;

/** virtio-net feature bits offered. */
export const VirtioNetFeature = {
  /** The configuration space has a MAC address. */
  MAC: 1n << 5n,
  /** The configuration space has a link status. */
  STATUS: 1n << 16n,
} as const;

/** What the device counted (frames, not bytes). */
export interface VirtioNetStats {
  /** Frames handed to the backend. */
  txFrames: number;
  /** Transmit chains whose frame was dropped: empty, too long, or refused by the backend. */
  txDropped: number;
  /** Frames delivered to the driver. */
  rxFrames: number;
  /** Frames dropped because the receive chain at hand was too small for them (or too long a frame). */
  rxDropped: number;
}

/** Options of {@link VirtioNet}. */
export interface VirtioNetOptions {
  /** The MAC address (6 bytes; default {@link VIRTIO_NET_DEFAULT_MAC}). */
  mac?: readonly number[];
  /**
   * Takes one Ethernet frame the guest sent (no virtio-net header); the bytes are only valid during
   * the call. Returns false (or throws) when the frame could not be sent: it is dropped and counted.
   */
  send: (frame: Uint8Array) => boolean | void;
  /**
   * Called when the driver made receive buffers available (it notified the receive queue): frames
   * the backend holds back can be delivered now with {@link VirtioNet.receive}.
   */
  onReceiveReady?: () => void;
  /** Queue sizes (default 256). */
  queueSize?: number;
}

/**
 * Formats a MAC address as QEMU prints it (`52:54:00:12:34:56`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatMac } from "./virtio_net.ts";
 * assert.equal(formatMac([0x52, 0x54, 0, 0x12, 0x34, 0x56]), "52:54:00:12:34:56");
 * ```
 */
export function formatMac(mac: readonly number[]): string {
  return mac.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/**
 * The network card.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VirtioNet, VirtioNetFeature } from "./virtio_net.ts";
 * const sent: Uint8Array[] = [];
 * const net = new VirtioNet({ send: (frame) => void sent.push(frame.slice()) });
 * assert.equal(net.deviceId, 1);
 * assert.equal(net.readConfig(0, 4), 0x1200_5452); // 52:54:00:12, little-endian
 * assert.equal(net.readConfig(6, 2), 1); // VIRTIO_NET_S_LINK_UP
 * assert.ok(net.features & VirtioNetFeature.MAC);
 * assert.equal(net.receive(new Uint8Array(60)), false); // no driver yet: the caller keeps the frame
 * ```
 */
export class VirtioNet implements VirtioDeviceModel {
  /** QEMU's device name. */
  readonly name: string = "virtio-net";
  /** {@link VIRTIO_ID_NET}. */
  readonly deviceId: number = VIRTIO_ID_NET;
  /** Ethernet controller, as QEMU. */
  readonly pciClassCode: number = PCI_CLASS_NETWORK_ETHERNET;
  /** MAC and STATUS. */
  readonly features: bigint = VirtioNetFeature.MAC | VirtioNetFeature.STATUS;
  /** Receive, transmit. */
  readonly queueSizes: readonly number[];
  /** {@link VIRTIO_NET_CONFIG_SIZE}. */
  readonly configSize: number = VIRTIO_NET_CONFIG_SIZE;
  /** The MAC address. */
  readonly mac: readonly number[];
  /** Counters (kept across device resets). */
  readonly stats: VirtioNetStats = { txFrames: 0, txDropped: 0, rxFrames: 0, rxDropped: 0 };
  readonly #send: (frame: Uint8Array) => boolean | void;
  readonly #onReceiveReady: () => void;
  readonly #config = new Uint8Array(VIRTIO_NET_CONFIG_SIZE);
  readonly #header = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  /** Where a transmitted frame that is not one view of guest RAM is gathered, reused. */
  readonly #frame = new Uint8Array(VIRTIO_NET_MAX_FRAME);
  #device: VirtioDevice | undefined;

  /**
   * A network card sending through `send`.
   *
   * @throws {TypeError} if `send` is not a function.
   * @throws {RangeError} if `mac` is not 6 bytes, or the queue size not a power of two in 2–32768.
   */
  constructor(options: VirtioNetOptions) {
    if (typeof options?.send !== "function") throw new TypeError("VirtioNet: send must be a function");
    const mac = options.mac ?? VIRTIO_NET_DEFAULT_MAC;
    if (mac.length !== 6 || !mac.every((b) => Number.isInteger(b) && b >= 0 && b <= 0xff)) {
      throw new RangeError(`VirtioNet: MAC address [${mac.join(", ")}] is not 6 bytes`);
    }
    const queueSize = options.queueSize ?? VIRTIO_NET_QUEUE_SIZE;
    if (!Number.isInteger(queueSize) || queueSize < 2 || queueSize > 32768 || (queueSize & (queueSize - 1))) {
      throw new RangeError(`VirtioNet: queue size ${queueSize} is not a power of two in 2–32768`);
    }
    this.mac = [...mac];
    this.queueSizes = [queueSize, queueSize];
    this.#send = options.send;
    this.#onReceiveReady = options.onReceiveReady ?? (() => {});
    this.#config.set(mac);
    this.#config[6] = VIRTIO_NET_S_LINK_UP; // status, little-endian u16
    this.#header[NUM_BUFFERS_OFFSET] = 1; // num_buffers = 1, the rest zero (no offloads)
  }

  /** Remembers the device (the {@link VirtioDevice} constructor calls this). */
  attach(device: VirtioDevice): void {
    this.#device = device;
  }

  /** The configuration structure (MAC, link status): fixed by the options, saved to check a restore. */
  saveState(): StateObject {
    return { config: this.#config.slice() };
  }

  /** Checks that the saved configuration is this one's (a card with another MAC is refused); nothing to apply. */
  prepareState(r: StateReader): () => void {
    r.sameBytes("config", this.#config, "MAC or link status: another card?");
    return () => {};
  }

  /** Reads the configuration structure (little-endian; writes are ignored, as for a 1.x driver). */
  readConfig(offset: number, size: number): number {
    let value = 0;
    for (let i = size - 1; i >= 0; i--) value = value * 256 + this.#config[offset + i];
    return value;
  }

  /**
   * Whether {@link receive} could take a frame now (the driver is ready and has made a buffer
   * available) — a hint: `receive` decides.
   */
  get canReceive(): boolean {
    const device = this.#device;
    if (!device || !(device.status & VirtioStatus.DRIVER_OK) || device.broken || device.disabled) {
      return false;
    }
    return device.queues[VIRTIO_NET_RX_QUEUE].enabled;
  }

  /** The driver notified a queue: transmit everything queued, or hear of new receive buffers. */
  handleQueue(queue: Virtqueue, _device: VirtioDevice): void {
    if (queue.index === VIRTIO_NET_TX_QUEUE) {
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        this.#transmit(chain);
        queue.push(chain, 0);
      }
    } else if (queue.index === VIRTIO_NET_RX_QUEUE) {
      this.#onReceiveReady();
    }
  }

  /**
   * Delivers one Ethernet frame (no virtio-net header) from the backend to the driver. Returns true
   * when the frame was taken — delivered, or dropped and counted because the buffer at hand was too
   * small or the frame too long — and false when it should be offered again later: the driver is
   * not ready, has no receive buffer available, or broke the protocol (the device then needs a
   * reset). Never throws.
   */
  receive(frame: Uint8Array): boolean {
    const device = this.#device;
    if (!device || !(device.status & VirtioStatus.DRIVER_OK)) return false;
    if (frame.length > VIRTIO_NET_MAX_FRAME) {
      this.stats.rxDropped++;
      return true;
    }
    const taken = device.serviceQueue(VIRTIO_NET_RX_QUEUE, (queue) => {
      const chain = queue.pop();
      if (chain === null) return false;
      if (chain.writableLength === 0) { // no buffer is empty: no writable buffer
        throw new VirtioProtocolError("virtio-net receive queue contains no in buffers");
      }
      const length = VIRTIO_NET_HDR_SIZE + frame.length;
      if (chain.writableLength < length) {
        queue.unpop(chain); // kept for a smaller frame, as QEMU without mergeable buffers
        this.stats.rxDropped++;
        return true;
      }
      chain.write(0, this.#header);
      chain.write(VIRTIO_NET_HDR_SIZE, frame);
      queue.push(chain, length);
      this.stats.rxFrames++;
      return true;
    });
    return taken === true;
  }

  /** One transmit chain: header checked and dropped, the frame to the backend. */
  #transmit(chain: DescriptorChain): void {
    if (chain.readableLength < VIRTIO_NET_HDR_SIZE) {
      throw new VirtioProtocolError(
        `virtio-net transmit chain of ${chain.readableLength} readable bytes has no ${VIRTIO_NET_HDR_SIZE}-byte header`,
      );
    }
    const length = chain.readableLength - VIRTIO_NET_HDR_SIZE;
    if (length === 0 || length > VIRTIO_NET_MAX_FRAME) {
      this.stats.txDropped++;
      return;
    }
    // The frame in place when it is one piece of RAM the memory gives a view of (Linux puts the
    // header and a linear frame in one buffer), else copied into the reused buffer: either way
    // valid only during the call, as `send` is told.
    const pieces = chain.pieces(false, VIRTIO_NET_HDR_SIZE, length);
    let frame = pieces.length === 1 ? pieces[0].view : null;
    if (frame === null) {
      frame = this.#frame.subarray(0, length);
      chain.read(VIRTIO_NET_HDR_SIZE, frame);
    }
    let sent: boolean | void;
    try {
      sent = this.#send(frame);
    } catch {
      sent = false; // the backend failed: the frame is lost, as on a wire
    }
    if (sent === false) this.stats.txDropped++;
    else this.stats.txFrames++;
  }
}
