/**
 * virtio-net (virtio 1.2 section 5.1), behaving as QEMU 7.2's `hw/net/virtio-net.c` does with a
 * tap backend that speaks the virtio-net header (QEMU's `-netdev tap`, vhost off):
 *
 * - three queues, receive (0) and transmit (1) of 256 entries each and control (2) of 64 (QEMU's
 *   defaults); no multiqueue;
 * - features: MAC and STATUS, and QEMU's default offloads — checksum (CSUM, GUEST_CSUM), TCP
 *   segmentation both ways (HOST_/GUEST_TSO4, TSO6, ECN), UDP fragmentation (HOST_/GUEST_UFO), the
 *   legacy GSO bit —, mergeable receive buffers (MRG_RXBUF) and the control queue with its
 *   commands (CTRL_VQ, CTRL_RX, CTRL_RX_EXTRA, CTRL_VLAN, CTRL_MAC_ADDR, CTRL_GUEST_OFFLOADS,
 *   GUEST_ANNOUNCE), each of which a QEMU property turns off ({@link virtioNetFeatures}); plus the
 *   transport's VERSION_1, INDIRECT_DESC and EVENT_IDX. A feature that needs another one (TSO needs
 *   checksumming, RX modes the control queue) is not offered without it (virtio 1.2 5.1.3.1);
 * - configuration space: `mac` (6 bytes: the card's address now, which CTRL_MAC_ADDR's command
 *   changes and a reset puts back) then `status` (u16, {@link VIRTIO_NET_S_LINK_UP}, and
 *   {@link VIRTIO_NET_S_ANNOUNCE} while an announcement is asked for), 8 bytes, as QEMU sizes it;
 *   read-only for a virtio 1.x driver;
 * - transmit: every chain's device-readable part is the 12-byte header and the frame. The header
 *   goes to the backend as the driver wrote it when a transmit offload (CSUM, HOST_*) is in force
 *   — the backend (a tap: the kernel checks it) finishes checksums and cuts segments — and as zeros
 *   otherwise; a header that asks for an offload the driver did not negotiate (NEEDS_CSUM without
 *   CSUM, a segment type without its HOST_* feature, ECN without HOST_ECN) drops the frame, which
 *   virtio 1.2 5.1.6.2.1 forbids the driver to send (QEMU passes it on). The frame goes in place,
 *   as spans of guest RAM ({@link VirtioNetOptions.send}). A chain with no readable part, or
 *   shorter than the header, is a protocol error (QEMU's "virtio-net header not in first element");
 *   a frame longer than {@link VIRTIO_NET_MAX_FRAME} or refused by the backend is dropped and
 *   counted;
 * - receive: the wiring calls {@link VirtioNet.receive} with a frame and the backend's header. The
 *   header's checksum and segmentation fields reach the driver when GUEST_CSUM is in force (a frame
 *   that needs something the driver did not accept is dropped and counted); otherwise the header is
 *   zero. Without MRG_RXBUF the frame goes into the next available chain, whose writable part must
 *   hold header and frame: a chain too small is given back unused (QEMU's `virtqueue_unpop`) and the
 *   frame dropped and counted. With MRG_RXBUF it fills as many chains as it needs, `num_buffers`
 *   says how many, and the driver sees them all at once (QEMU's `virtqueue_fill` and `flush`). When
 *   no chain (or not enough) is available, or the driver is not ready, `receive` returns false and
 *   the caller keeps the frame for later (QEMU's `can_receive`): {@link VirtioNetOptions.onReceiveReady}
 *   says when the driver added buffers. Only when every entry of the ring is out and still too
 *   small for the frame (a driver whose buffers can never hold it) is the frame dropped and
 *   counted rather than kept, so the backend never stalls on it (QEMU keeps it). A chain with no
 *   device-writable buffer is a protocol error. Before any of that, the receive filter the control
 *   queue sets decides whether the frame is for this card at all (`virtio_net_ctrl.ts`): a frame it
 *   refuses is dropped and counted in {@link VirtioNetStats.rxFiltered};
 * - control queue: each chain carries a class and command byte, the command's data, and a
 *   device-writable byte for the answer (VIRTIO_NET_OK or VIRTIO_NET_ERR); RX mode, MAC table and
 *   address, and VLAN commands go to the receive filter; GUEST_OFFLOADS SET (with
 *   CTRL_GUEST_OFFLOADS negotiated) changes the receive offloads in force, among those negotiated,
 *   and tells the backend; ANNOUNCE ACK clears the announcement bit. A chain without the two
 *   header bytes or the answer byte is a protocol error (QEMU's "ctrl missing headers"); a command
 *   whose data is larger than {@link VIRTIO_NET_CTRL_MAX_DATA} is refused, but for a MAC table,
 *   which is read in place;
 * - announcements (QEMU's GUEST_ANNOUNCE handling): after a restore ({@link VirtioNet.restored}) the
 *   driver is asked to announce the card in {@link DEFAULT_ANNOUNCE}'s five rounds, as QEMU after an
 *   incoming migration — the first at once, each next one {@link announceDelay} after the driver's
 *   ANNOUNCE ACK of the last, on the machine's {@link VirtioNetOptions.timers} (one round without
 *   them); {@link VirtioNet.announce} asks once, for a round of the machine's own self-announcement
 *   (QMP `announce-self`), unless those rounds are still running;
 * - {@link VirtioNetOptions.setOffloads} tells the backend what the driver accepts to receive
 *   (QEMU's `virtio_net_apply_guest_offloads`): at FEATURES_OK, at a GUEST_OFFLOADS command and
 *   after a snapshot's state is loaded. A reset leaves the backend as it was until the next
 *   FEATURES_OK, as QEMU's does;
 * - not here, unlike QEMU: multiqueue (QEMU's `mq` is off by default too), and the checksum fix-up of
 *   DHCP replies for old dhclients (`work_around_broken_dhclient`).
 *
 * @module
 */

import type { VirtioDevice, VirtioDeviceModel } from "./virtio_device.ts";
import type { StateObject, StateReader } from "../device_state.ts";
import { VirtioStatus } from "./virtio_device.ts";
import type { DeviceTimers } from "../device_timers.ts";
import { announceDelay, DEFAULT_ANNOUNCE } from "../net_announce.ts";
import { type DescriptorChain, RamSpans, VirtioProtocolError, type Virtqueue } from "./virtqueue.ts";
import {
  VIRTIO_NET_ERR,
  VIRTIO_NET_OK,
  VirtioNetCtrlClass,
  VirtioNetCtrlMac,
  VirtioNetRxFilter,
} from "./virtio_net_ctrl.ts";
import {
  VIRTIO_NET_DEFAULT_FEATURES,
  VIRTIO_NET_FEATURE_PROPERTIES,
  VIRTIO_NET_MAX_FRAME,
  VirtioNetFeature,
  virtioNetFeatures,
} from "./virtio_net_frame.ts";

export {
  VIRTIO_NET_DEFAULT_FEATURES,
  VIRTIO_NET_FEATURE_PROPERTIES,
  VIRTIO_NET_MAX_FRAME,
  VirtioNetFeature,
  virtioNetFeatures,
};

/** Virtio device ID of a network card. */
export const VIRTIO_ID_NET = 1;
/** QEMU's default size of the receive and of the transmit queue. */
export const VIRTIO_NET_QUEUE_SIZE = 256;
/** Index of the receive queue. */
export const VIRTIO_NET_RX_QUEUE = 0;
/** Index of the transmit queue. */
export const VIRTIO_NET_TX_QUEUE = 1;
/** Index of the control queue. */
export const VIRTIO_NET_CTRL_QUEUE = 2;
/** QEMU's size of the control queue. */
export const VIRTIO_NET_CTRL_QUEUE_SIZE = 64;
/**
 * Most bytes of data a control command is copied out of the ring with; a larger one is refused. A
 * MAC table is never copied whole: it is read where it lies, only the addresses the table can hold
 * (a longer list sets its overflow flag, as QEMU's), whatever its size.
 */
export const VIRTIO_NET_CTRL_MAX_DATA = 65_536;
/**
 * Bytes of the header in front of every frame of a virtio 1.x device (`struct virtio_net_hdr_v1`:
 * flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers).
 */
export const VIRTIO_NET_HDR_SIZE = 12;
/** Bytes of configuration space with MAC and STATUS offered (QEMU's `endof(status)`). */
export const VIRTIO_NET_CONFIG_SIZE = 8;
/** Configuration `status` bit: the link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** Configuration `status` bit: the driver is asked to announce the card (GUEST_ANNOUNCE). */
export const VIRTIO_NET_S_ANNOUNCE = 2;
/** QEMU's default MAC address of the first NIC (`qemu_macaddr_default_if_unset`). */
export const VIRTIO_NET_DEFAULT_MAC: readonly number[] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/** PCI class of QEMU's virtio-net-pci (`PCI_CLASS_NETWORK_ETHERNET`). */
const PCI_CLASS_NETWORK_ETHERNET = 0x02_00_00;
/** Offset of `num_buffers` in the header. */
const NUM_BUFFERS_OFFSET = 10;
/** The receive offloads a GUEST_OFFLOADS command may name (the GUEST_* feature bits). */
const GUEST_OFFLOADS = VirtioNetFeature.GUEST_CSUM | VirtioNetFeature.GUEST_TSO4 |
  VirtioNetFeature.GUEST_TSO6 |
  VirtioNetFeature.GUEST_ECN | VirtioNetFeature.GUEST_UFO;
/** The GUEST_OFFLOADS class's one command. */
const CTRL_GUEST_OFFLOADS_SET = 0;
/** The ANNOUNCE class's one command. */
const CTRL_ANNOUNCE_ACK = 0;

/**
 * What the driver accepts to receive, for the backend to produce (QEMU's `curr_guest_offloads`
 * handed to `qemu_set_offload`): partial checksums, and TCPv4, TCPv6 (with ECN) and UDP frames
 * larger than the MTU.
 */
export interface VirtioNetOffloads {
  /** GUEST_CSUM. */
  readonly csum: boolean;
  /** GUEST_TSO4. */
  readonly tso4: boolean;
  /** GUEST_TSO6. */
  readonly tso6: boolean;
  /** GUEST_ECN. */
  readonly ecn: boolean;
  /** GUEST_UFO. */
  readonly ufo: boolean;
}

/** What the device counted (frames, not bytes). */
export interface VirtioNetStats {
  /** Frames handed to the backend. */
  txFrames: number;
  /** Transmit chains whose frame was dropped: empty, too long, or refused by the backend. */
  txDropped: number;
  /** Frames delivered to the driver. */
  rxFrames: number;
  /**
   * Frames dropped: the receive chain at hand was too small (without MRG_RXBUF), the frame too
   * long, or its header asked for an offload the driver did not accept.
   */
  rxDropped: number;
  /** Frames the receive filter kept from the driver (not addressed to this card). */
  rxFiltered: number;
  /** Control commands answered. */
  ctrlCommands: number;
  /** Control commands refused. */
  ctrlErrors: number;
}

/** Options of {@link VirtioNet}. */
export interface VirtioNetOptions {
  /** The MAC address (6 bytes; default {@link VIRTIO_NET_DEFAULT_MAC}). */
  mac?: readonly number[];
  /**
   * The device features offered: {@link VIRTIO_NET_DEFAULT_FEATURES} by default, MAC and STATUS
   * always. A backend that cannot take or give a virtio-net header offers MAC and STATUS only.
   */
  features?: bigint;
  /**
   * Takes one frame the guest sent: the 12-byte virtio-net header to give the backend (see the
   * module documentation) and the Ethernet frame as spans of memory, in place in guest RAM where
   * it can be. Both are only valid during the call. Returns false (or throws) when the frame could
   * not be sent: it is dropped and counted.
   */
  send: (header: Uint8Array, frame: RamSpans) => boolean | void;
  /**
   * Called when the driver made receive buffers available (it notified the receive queue): frames
   * the backend holds back can be delivered now with {@link VirtioNet.receive}.
   */
  onReceiveReady?: () => void;
  /**
   * Called after each RX-mode, MAC or VLAN command that changed the receive filter (QEMU's
   * `rxfilter_notify`, which raises QMP's NIC_RX_FILTER_CHANGED).
   */
  onRxFilterChanged?: () => void;
  /** Called with what the driver accepts to receive whenever that changes (see the module documentation). */
  setOffloads?: (offloads: VirtioNetOffloads) => void;
  /** Size of the receive and the transmit queue (default 256). */
  queueSize?: number;
  /** The machine's timers, for the announcement rounds after a restore (without them: one round). */
  timers?: DeviceTimers;
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

/** The header's `flags` bit: the checksum from `csum_start` on is to be filled in. */
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** The header's `gso_type` values, and its ECN bit. */
const GSO_NONE = 0;
const GSO_TCPV4 = 1;
const GSO_UDP = 3;
const GSO_TCPV6 = 4;
const GSO_ECN = 0x80;
/** The features that make the driver's transmit header mean something. */
const TX_OFFLOADS = VirtioNetFeature.CSUM | VirtioNetFeature.HOST_TSO4 | VirtioNetFeature.HOST_TSO6 |
  VirtioNetFeature.HOST_UFO;

/** Whether the features `f` have `bit`. */
const has = (f: bigint, bit: bigint) => (f & bit) !== 0n;

/** In a {@link headerAllowance}: ECN, and NEEDS_CSUM (bits 0–4 are the gso_types). */
const ALLOW_ECN = 1 << 8;
const ALLOW_NEEDS_CSUM = 1 << 9;

/**
 * What a header may ask for in one direction, as bits (gso_type n: bit n; {@link ALLOW_ECN},
 * {@link ALLOW_NEEDS_CSUM}): the features `f` with that direction's checksum, TSO4, TSO6, UFO and
 * ECN bits. Segments only with checksums (a driver that took TSO without them broke 5.1.3.1).
 */
function headerAllowance(
  f: bigint,
  csum: bigint,
  tso4: bigint,
  tso6: bigint,
  ufo: bigint,
  ecn: bigint,
): number {
  if (!has(f, csum)) return 1 << GSO_NONE;
  return (1 << GSO_NONE) | ALLOW_NEEDS_CSUM | (has(f, tso4) ? 1 << GSO_TCPV4 : 0) |
    (has(f, tso6) ? 1 << GSO_TCPV6 : 0) | (has(f, ufo) ? 1 << GSO_UDP : 0) | (has(f, ecn) ? ALLOW_ECN : 0);
}

/** Whether `header` (flags, gso_type first) asks only for what `allowed` ({@link headerAllowance}) has. */
function headerAllowed(header: Uint8Array, allowed: number): boolean {
  const type = header[1] & ~GSO_ECN;
  return type <= GSO_TCPV6 && (allowed & (1 << type)) !== 0 &&
    (!(header[1] & GSO_ECN) || (allowed & ALLOW_ECN) !== 0) &&
    (!(header[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) || (allowed & ALLOW_NEEDS_CSUM) !== 0);
}

/**
 * The network card.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VirtioNet, VirtioNetFeature } from "./virtio_net.ts";
 * const net = new VirtioNet({ send: () => true });
 * assert.equal(net.deviceId, 1);
 * assert.equal(net.readConfig(0, 4), 0x1200_5452); // 52:54:00:12, little-endian
 * assert.equal(net.readConfig(6, 2), 1); // VIRTIO_NET_S_LINK_UP
 * assert.ok(net.features & VirtioNetFeature.MRG_RXBUF);
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
  /** The features offered ({@link VirtioNetOptions.features}). */
  readonly features: bigint;
  /** Receive, transmit, control. */
  readonly queueSizes: readonly number[];
  /** {@link VIRTIO_NET_CONFIG_SIZE}. */
  readonly configSize: number = VIRTIO_NET_CONFIG_SIZE;
  /** The MAC address as configured (the driver may change the card's own: {@link rxFilter}). */
  readonly mac: readonly number[];
  /** Counters (kept across device resets). */
  readonly stats: VirtioNetStats = {
    txFrames: 0,
    txDropped: 0,
    rxFrames: 0,
    rxDropped: 0,
    rxFiltered: 0,
    ctrlCommands: 0,
    ctrlErrors: 0,
  };
  /** The receive filter the control queue sets, with the card's address now. */
  readonly rxFilter: VirtioNetRxFilter;
  readonly #send: (header: Uint8Array, frame: RamSpans) => boolean | void;
  readonly #onReceiveReady: () => void;
  readonly #setOffloads: (offloads: VirtioNetOffloads) => void;
  readonly #onRxFilterChanged: () => void;
  /** The configuration's `status` (its `mac` is {@link rxFilter}'s address now). */
  #status = VIRTIO_NET_S_LINK_UP;
  /** The header of the frame being received. */
  readonly #header = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  /** The header of the frame being sent. */
  readonly #txHeader = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  /** Where a transmitted frame that is not in RAM the memory gives views of is gathered, reused. */
  readonly #frame = new Uint8Array(VIRTIO_NET_MAX_FRAME);
  /** The spans of the frame being sent, reused. */
  readonly #spans = new RamSpans();
  /** The chains of the frame being received, reused. */
  readonly #chains: DescriptorChain[] = [];
  #device: VirtioDevice | undefined;
  /** The features in force, as the hot paths ask them. */
  #txOffloads = false;
  #guestCsum = false;
  #mergeable = false;
  /** What a received header may ask of the driver, and a sent one of the backend ({@link headerAllowance}). */
  #rxAllowed = 1 << GSO_NONE;
  #txAllowed = 1 << GSO_NONE;
  /** The driver's features in force, and the receive offloads of them in force (QEMU's `curr_guest_offloads`). */
  #negotiated = 0n;
  #guestOffloads = 0n;
  /** The control command's data, copied out of the chain, reused. */
  #ctrlData = new Uint8Array(64);
  readonly #timers: DeviceTimers | undefined;
  /** Announcement rounds still to come after a restore (QEMU's `announce_timer.round`), and their timer. */
  #announceRounds = 0;
  #cancelAnnounce: (() => void) | undefined;

  /**
   * A network card sending through `send`.
   *
   * @throws {TypeError} if `send` is not a function.
   * @throws {RangeError} if `mac` is not 6 bytes, the queue size not a power of two in 2–32768,
   *   or `features` has a bit that is not a virtio-net feature of {@link VirtioNetFeature}.
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
    const all = Object.values(VirtioNetFeature).reduce((a, b) => a | b, 0n);
    const features = (options.features ?? VIRTIO_NET_DEFAULT_FEATURES) | VirtioNetFeature.MAC |
      VirtioNetFeature.STATUS;
    if (features & ~all) {
      throw new RangeError(`VirtioNet: features 0x${(features & ~all).toString(16)} are not virtio-net's`);
    }
    if (virtioNetFeatures([], features) !== features) {
      throw new RangeError(
        `VirtioNet: features 0x${
          features.toString(16)
        } offer a feature without the one it needs (virtio 1.2 5.1.3.1)`,
      );
    }
    this.features = features;
    this.mac = [...mac];
    this.queueSizes = [queueSize, queueSize, VIRTIO_NET_CTRL_QUEUE_SIZE];
    this.rxFilter = new VirtioNetRxFilter(mac);
    this.#send = options.send;
    this.#onReceiveReady = options.onReceiveReady ?? (() => {});
    this.#setOffloads = options.setOffloads ?? (() => {});
    this.#onRxFilterChanged = options.onRxFilterChanged ?? (() => {});
    this.#timers = options.timers;
  }

  /** Remembers the device (the {@link VirtioDevice} constructor calls this). */
  attach(device: VirtioDevice): void {
    this.#device = device;
  }

  /** Device reset: the receive filter, the card's address and the announcement as after power-on. */
  reset(): void {
    this.rxFilter.reset();
    this.#stopAnnounceRounds();
    this.#status &= ~VIRTIO_NET_S_ANNOUNCE;
    this.#guestOffloads = 0n;
  }

  /**
   * FEATURES_OK (QEMU's `virtio_net_set_features`): every receive offload negotiated is in force, and
   * with CTRL_VLAN every VLAN id starts filtered out (without it every one passes).
   */
  featuresNegotiated(f: bigint): void {
    this.#guestOffloads = f & GUEST_OFFLOADS;
    this.rxFilter.setVlanFiltering(has(f, VirtioNetFeature.CTRL_VLAN));
  }

  /**
   * The features in force changed (FEATURES_OK, a reset, a loaded snapshot): the hot paths learn
   * them, and the backend what the driver accepts to receive (not at a reset: QEMU too leaves the
   * tap as it was until the next negotiation).
   */
  featuresChanged(f: bigint): void {
    const F = VirtioNetFeature;
    this.#negotiated = f;
    this.#txOffloads = has(f, TX_OFFLOADS);
    this.#txAllowed = headerAllowance(f, F.CSUM, F.HOST_TSO4, F.HOST_TSO6, F.HOST_UFO, F.HOST_ECN);
    this.#guestCsum = has(f, F.GUEST_CSUM);
    this.#mergeable = has(f, F.MRG_RXBUF);
    if (f === 0n) {
      this.#rxAllowed = 1 << GSO_NONE;
      return; // a reset: the backend keeps its offloads until the next FEATURES_OK
    }
    this.#applyGuestOffloads();
  }

  /** The receive offloads in force go to the hot path and to the backend. */
  #applyGuestOffloads(): void {
    const F = VirtioNetFeature;
    const g = this.#guestOffloads;
    this.#rxAllowed = headerAllowance(g, F.GUEST_CSUM, F.GUEST_TSO4, F.GUEST_TSO6, F.GUEST_UFO, F.GUEST_ECN);
    this.#setOffloads({
      csum: has(g, F.GUEST_CSUM),
      tso4: has(g, F.GUEST_TSO4),
      tso6: has(g, F.GUEST_TSO6),
      ecn: has(g, F.GUEST_ECN),
      ufo: has(g, F.GUEST_UFO),
    });
  }

  /**
   * After a restore (QEMU's post-load): with GUEST_ANNOUNCE and CTRL_VQ negotiated, the driver is
   * asked to announce the card in {@link DEFAULT_ANNOUNCE}'s rounds, the first now.
   */
  restored(): void {
    this.#stopAnnounceRounds();
    if (!this.#canAnnounce()) return;
    this.#announceRounds = DEFAULT_ANNOUNCE.rounds;
    this.#announceRound();
  }

  /** Announcement rounds still to come after a restore (0 once they are over, or after a reset). */
  get announceRoundsLeft(): number {
    return this.#announceRounds;
  }

  /**
   * Asks the driver once to announce the card (gratuitous ARP and the like), for a round of the
   * machine's self-announcement (QEMU's `virtio_net_announce`): with GUEST_ANNOUNCE and CTRL_VQ
   * negotiated, and no rounds of a restore still running (they ask on their own), the status's
   * ANNOUNCE bit is set and, while the driver runs, the configuration interrupt raised; the
   * driver's ANNOUNCE ACK clears it (a reset too). Returns whether it asked.
   */
  announce(): boolean {
    if (this.#announceRounds > 0 || !this.#canAnnounce()) return false;
    this.#notifyAnnounce();
    return true;
  }

  #canAnnounce(): boolean {
    const f = this.#negotiated;
    return this.#device !== undefined && has(f, VirtioNetFeature.GUEST_ANNOUNCE) &&
      has(f, VirtioNetFeature.CTRL_VQ);
  }

  #notifyAnnounce(): void {
    this.#status |= VIRTIO_NET_S_ANNOUNCE;
    this.#device!.configChanged(); // raised only while the driver runs (QEMU's virtio_notify_config)
  }

  /** One round of a restore's announcement (QEMU's `virtio_net_announce_timer`). */
  #announceRound(): void {
    this.#cancelAnnounce = undefined;
    this.#announceRounds--;
    this.#notifyAnnounce();
    if (!this.#timers) this.#announceRounds = 0; // nothing to wait with: one round
  }

  #stopAnnounceRounds(): void {
    this.#cancelAnnounce?.();
    this.#cancelAnnounce = undefined;
    this.#announceRounds = 0;
  }

  /**
   * The configured MAC (saved to check a restore), the status, the receive offloads in force and
   * the receive filter with the card's address now.
   */
  saveState(): StateObject {
    return {
      mac: new Uint8Array(this.mac),
      status: this.#status,
      guestOffloads: this.#guestOffloads,
      rxFilter: this.rxFilter.saveState(),
    };
  }

  /** Checks a {@link saveState} result (a card with another configured MAC is refused) and returns its apply. */
  prepareState(r: StateReader): () => void {
    r.sameBytes("mac", new Uint8Array(this.mac), "another card?");
    const status = r.bits("status", VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
    const guestOffloads = r.bigint("guestOffloads", { min: 0n });
    if (guestOffloads & ~GUEST_OFFLOADS) r.fail("guestOffloads", "names a bit that is not a receive offload");
    const applyFilter = this.rxFilter.prepareState(r.object("rxFilter"));
    return () => {
      applyFilter();
      this.#status = status;
      this.#guestOffloads = guestOffloads;
    };
  }

  /** Reads the configuration structure (little-endian; writes are ignored, as for a 1.x driver). */
  readConfig(offset: number, size: number): number {
    const mac = this.rxFilter.mac;
    let value = 0;
    for (let i = offset + size - 1; i >= offset; i--) {
      value = value * 256 + (i < 6 ? mac[i] : i === 6 ? this.#status : 0);
    }
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

  /** The driver notified a queue: transmit everything queued, hear of new receive buffers, or obey commands. */
  handleQueue(queue: Virtqueue, _device: VirtioDevice): void {
    if (queue.index === VIRTIO_NET_TX_QUEUE) {
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        this.#transmit(chain);
        queue.push(chain, 0);
      }
    } else if (queue.index === VIRTIO_NET_RX_QUEUE) {
      this.#onReceiveReady();
    } else if (queue.index === VIRTIO_NET_CTRL_QUEUE) {
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        if (chain.readableLength < 2 || chain.writableLength < 1) {
          throw new VirtioProtocolError(
            `virtio-net control chain of ${chain.readableLength} readable and ${chain.writableLength} writable bytes misses its class, command or answer byte`,
          );
        }
        const answer = new Uint8Array([this.#control(chain)]);
        chain.write(0, answer);
        queue.push(chain, 1);
      }
    }
  }

  /** One control command: its answer (VIRTIO_NET_OK or VIRTIO_NET_ERR). */
  #control(chain: DescriptorChain): number {
    const head = new Uint8Array(2);
    chain.read(0, head);
    const length = chain.readableLength - 2;
    this.stats.ctrlCommands++;
    let answer: number;
    if (head[0] === VirtioNetCtrlClass.MAC && head[1] === VirtioNetCtrlMac.TABLE_SET) {
      answer = this.rxFilter.macTableSet(length, (at, into) => chain.read(2 + at, into));
      if (answer === VIRTIO_NET_OK) this.#onRxFilterChanged();
    } else if (length > VIRTIO_NET_CTRL_MAX_DATA) {
      answer = VIRTIO_NET_ERR;
    } else {
      if (this.#ctrlData.length < length) this.#ctrlData = new Uint8Array(length);
      const data = this.#ctrlData.subarray(0, length);
      chain.read(2, data);
      answer = this.#command(head[0], head[1], data);
    }
    if (answer !== VIRTIO_NET_OK) this.stats.ctrlErrors++;
    return answer;
  }

  /** Carries out command `cmd` of class `cls` with `data`. */
  #command(cls: number, cmd: number, data: Uint8Array): number {
    const filter = this.rxFilter;
    const changed = (answer: number) => {
      if (answer === VIRTIO_NET_OK) this.#onRxFilterChanged();
      return answer;
    };
    switch (cls) {
      case VirtioNetCtrlClass.RX:
        return changed(filter.rxMode(cmd, data));
      case VirtioNetCtrlClass.MAC: {
        return changed(filter.macCommand(cmd, data));
      }
      case VirtioNetCtrlClass.VLAN:
        return changed(filter.vlanCommand(cmd, data));
      case VirtioNetCtrlClass.ANNOUNCE:
        if (cmd !== CTRL_ANNOUNCE_ACK || !(this.#status & VIRTIO_NET_S_ANNOUNCE)) return VIRTIO_NET_ERR;
        this.#status &= ~VIRTIO_NET_S_ANNOUNCE;
        if (this.#announceRounds > 0 && this.#timers) {
          // The next round of a restore's announcement, a step later than the last gap.
          this.#cancelAnnounce?.();
          const delay = announceDelay(DEFAULT_ANNOUNCE, this.#announceRounds);
          this.#cancelAnnounce = this.#timers.after(delay, () => this.#announceRound());
        }
        return VIRTIO_NET_OK;
      case VirtioNetCtrlClass.GUEST_OFFLOADS: {
        if (!has(this.#negotiated, VirtioNetFeature.CTRL_GUEST_OFFLOADS)) return VIRTIO_NET_ERR;
        if (cmd !== CTRL_GUEST_OFFLOADS_SET || data.length < 8) return VIRTIO_NET_ERR;
        const offloads = new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true);
        if (offloads & ~(this.#negotiated & GUEST_OFFLOADS)) return VIRTIO_NET_ERR;
        this.#guestOffloads = offloads;
        this.#applyGuestOffloads();
        return VIRTIO_NET_OK;
      }
      default: // MQ (not offered) and anything unknown
        return VIRTIO_NET_ERR;
    }
  }

  /**
   * Delivers one Ethernet frame from the backend to the driver, behind `header` (the backend's
   * 12-byte virtio-net header; absent: a plain frame, all zeros). Returns true when the frame was
   * taken — delivered, or dropped and counted (see {@link VirtioNetStats.rxDropped}) — and false
   * when it should be offered again later: the driver is not ready, has not made enough receive
   * buffers available, or broke the protocol (the device then needs a reset). Never throws.
   */
  receive(frame: Uint8Array, header?: Uint8Array): boolean {
    const device = this.#device;
    if (!device || !(device.status & VirtioStatus.DRIVER_OK)) return false;
    if (!this.rxFilter.accepts(frame)) {
      this.stats.rxFiltered++;
      return true;
    }
    if (frame.length > VIRTIO_NET_MAX_FRAME || !this.#rxHeader(header)) {
      this.stats.rxDropped++;
      return true;
    }
    const taken = device.serviceQueue(VIRTIO_NET_RX_QUEUE, (queue) => {
      const length = VIRTIO_NET_HDR_SIZE + frame.length;
      const chains = this.#chains;
      chains.length = 0;
      let room = 0;
      while (room < length) {
        const chain = queue.pop();
        if (chain === null) { // not enough buffers yet: the frame waits for more…
          const full = queue.inUse >= queue.size; // …unless the ring is out and still too small
          for (let i = chains.length - 1; i >= 0; i--) queue.unpop(chains[i]);
          if (!full) return false;
          this.stats.rxDropped++;
          return true;
        }
        if (chain.writableLength === 0) { // no buffer is empty: no writable buffer
          throw new VirtioProtocolError("virtio-net receive queue contains no in buffers");
        }
        if (!this.#mergeable && chain.writableLength < length) {
          queue.unpop(chain); // kept for a smaller frame, as QEMU without mergeable buffers
          this.stats.rxDropped++;
          return true;
        }
        chains.push(chain);
        room += chain.writableLength;
      }
      this.#header[NUM_BUFFERS_OFFSET] = chains.length; // at most the queue size: 32768
      this.#header[NUM_BUFFERS_OFFSET + 1] = chains.length >> 8;
      let at = 0; // bytes of header and frame written so far
      for (let i = 0; i < chains.length; i++) {
        const chain = chains[i];
        const n = Math.min(chain.writableLength, length - at);
        let into = 0;
        if (at < VIRTIO_NET_HDR_SIZE) {
          into = Math.min(n, VIRTIO_NET_HDR_SIZE - at);
          chain.write(0, this.#header.subarray(at, at + into));
        }
        if (into < n) {
          const from = at + into - VIRTIO_NET_HDR_SIZE;
          chain.write(into, frame.subarray(from, from + n - into));
        }
        queue.fill(chain, n, i);
        at += n;
      }
      queue.flush(chains.length);
      chains.length = 0;
      this.stats.rxFrames++;
      return true;
    });
    return taken === true;
  }

  /**
   * Sets {@link #header} for a received frame from the backend's `header`: its offload fields when
   * GUEST_CSUM is in force, zeros otherwise. False when the frame needs an offload the driver did
   * not accept (a partial checksum or a segment type): it cannot be delivered.
   */
  #rxHeader(header: Uint8Array | undefined): boolean {
    const out = this.#header;
    out.fill(0);
    if (header === undefined) return true;
    if (!headerAllowed(header, this.#rxAllowed)) return false;
    if (this.#guestCsum) out.set(header.subarray(0, NUM_BUFFERS_OFFSET));
    return true;
  }

  /** One transmit chain: the header (the driver's, or zeros) and the frame to the backend. */
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
    // A copy of the header, read once: what the backend is given is what was looked at.
    const header = this.#txHeader;
    header.fill(0);
    if (this.#txOffloads) {
      chain.read(0, header);
      if (!headerAllowed(header, this.#txAllowed)) {
        this.stats.txDropped++; // asks for an offload it did not negotiate
        return;
      }
    }
    header[NUM_BUFFERS_OFFSET] = header[NUM_BUFFERS_OFFSET + 1] = 0; // the driver's to leave 0
    // The frame in place when every byte is in RAM the memory gives views of, else copied into
    // the reused buffer: either way valid only during the call, as `send` is told.
    const spans = this.#spans;
    if (!chain.gather(false, VIRTIO_NET_HDR_SIZE, length, spans)) {
      const frame = this.#frame.subarray(0, length);
      chain.read(VIRTIO_NET_HDR_SIZE, frame);
      spans.add(frame.buffer, frame.byteOffset, length);
    }
    let sent: boolean | void;
    try {
      sent = this.#send(header, spans);
    } catch {
      sent = false; // the backend failed: the frame is lost, as on a wire
    }
    if (sent === false) this.stats.txDropped++;
    else this.stats.txFrames++;
  }
}
