/**
 * The frame size limit and the feature bits of virtio-net, in a module of its own so that a host
 * backend can size its buffers, and the front-end check a `-device`'s properties, without loading
 * the device model (the front-end loads the models only for a run with PCI devices).
 *
 * @module
 */

/**
 * Largest frame passed either way: 14 bytes of Ethernet header, a 64 KiB payload and a VLAN tag
 * (the most a TAP device takes or gives without GSO).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VIRTIO_NET_MAX_FRAME } from "./virtio_net_frame.ts";
 * assert.equal(VIRTIO_NET_MAX_FRAME, 14 + 65_536);
 * ```
 */
export const VIRTIO_NET_MAX_FRAME = 65_550;

/** virtio-net feature bits (virtio 1.2 5.1.3; GSO is the legacy bit QEMU still offers). */
export const VirtioNetFeature = {
  /** The device takes frames with a partial checksum (the header's NEEDS_CSUM). */
  CSUM: 1n << 0n,
  /** The driver takes frames with a partial checksum, and DATA_VALID. */
  GUEST_CSUM: 1n << 1n,
  /** The driver can change the receive offloads in force through the control queue. */
  CTRL_GUEST_OFFLOADS: 1n << 2n,
  /** The configuration space has a MAC address. */
  MAC: 1n << 5n,
  /** Legacy "any GSO type" (a virtio 1.x driver does not accept it; QEMU offers it). */
  GSO: 1n << 6n,
  /** The driver takes TCPv4 segments larger than the MTU. */
  GUEST_TSO4: 1n << 7n,
  /** The driver takes TCPv6 segments larger than the MTU. */
  GUEST_TSO6: 1n << 8n,
  /** The driver takes them with ECN. */
  GUEST_ECN: 1n << 9n,
  /** The driver takes UDP frames larger than the MTU. */
  GUEST_UFO: 1n << 10n,
  /** The device takes TCPv4 segments larger than the MTU. */
  HOST_TSO4: 1n << 11n,
  /** The device takes TCPv6 segments larger than the MTU. */
  HOST_TSO6: 1n << 12n,
  /** The device takes them with ECN. */
  HOST_ECN: 1n << 13n,
  /** The device takes UDP frames larger than the MTU. */
  HOST_UFO: 1n << 14n,
  /** The driver's receive buffers can be merged for one frame (`num_buffers`). */
  MRG_RXBUF: 1n << 15n,
  /** The configuration space has a link status. */
  STATUS: 1n << 16n,
  /** There is a control queue (queue 2). */
  CTRL_VQ: 1n << 17n,
  /** Its RX-mode commands: promiscuous, all-multicast. */
  CTRL_RX: 1n << 18n,
  /** Its VLAN filter. */
  CTRL_VLAN: 1n << 19n,
  /** Its further RX-mode commands: all-unicast, no multicast, no unicast, no broadcast. */
  CTRL_RX_EXTRA: 1n << 20n,
  /** The device asks the driver to announce itself (gratuitous ARP) after a restore. */
  GUEST_ANNOUNCE: 1n << 21n,
  /** The driver can set the card's MAC address through the control queue. */
  CTRL_MAC_ADDR: 1n << 23n,
} as const;

/** QEMU's virtio-net-pci properties that switch an offered feature off (all on by default). */
export const VIRTIO_NET_FEATURE_PROPERTIES: Readonly<Record<string, bigint>> = {
  csum: VirtioNetFeature.CSUM,
  guest_csum: VirtioNetFeature.GUEST_CSUM,
  gso: VirtioNetFeature.GSO,
  guest_tso4: VirtioNetFeature.GUEST_TSO4,
  guest_tso6: VirtioNetFeature.GUEST_TSO6,
  guest_ecn: VirtioNetFeature.GUEST_ECN,
  guest_ufo: VirtioNetFeature.GUEST_UFO,
  host_tso4: VirtioNetFeature.HOST_TSO4,
  host_tso6: VirtioNetFeature.HOST_TSO6,
  host_ecn: VirtioNetFeature.HOST_ECN,
  host_ufo: VirtioNetFeature.HOST_UFO,
  mrg_rxbuf: VirtioNetFeature.MRG_RXBUF,
  ctrl_vq: VirtioNetFeature.CTRL_VQ,
  ctrl_rx: VirtioNetFeature.CTRL_RX,
  ctrl_vlan: VirtioNetFeature.CTRL_VLAN,
  ctrl_rx_extra: VirtioNetFeature.CTRL_RX_EXTRA,
  ctrl_mac_addr: VirtioNetFeature.CTRL_MAC_ADDR,
  ctrl_guest_offloads: VirtioNetFeature.CTRL_GUEST_OFFLOADS,
  guest_announce: VirtioNetFeature.GUEST_ANNOUNCE,
};

/** Each feature with the one it needs offered beside it (virtio 1.2 5.1.3.1). */
const FEATURE_NEEDS: readonly (readonly [feature: bigint, needs: bigint])[] = [
  [VirtioNetFeature.GUEST_TSO4, VirtioNetFeature.GUEST_CSUM],
  [VirtioNetFeature.GUEST_TSO6, VirtioNetFeature.GUEST_CSUM],
  [VirtioNetFeature.GUEST_UFO, VirtioNetFeature.GUEST_CSUM],
  [VirtioNetFeature.GUEST_ECN, VirtioNetFeature.GUEST_TSO4 | VirtioNetFeature.GUEST_TSO6],
  [VirtioNetFeature.HOST_TSO4, VirtioNetFeature.CSUM],
  [VirtioNetFeature.HOST_TSO6, VirtioNetFeature.CSUM],
  [VirtioNetFeature.HOST_UFO, VirtioNetFeature.CSUM],
  [VirtioNetFeature.HOST_ECN, VirtioNetFeature.HOST_TSO4 | VirtioNetFeature.HOST_TSO6],
  [VirtioNetFeature.CTRL_RX, VirtioNetFeature.CTRL_VQ],
  [VirtioNetFeature.CTRL_VLAN, VirtioNetFeature.CTRL_VQ],
  [VirtioNetFeature.GUEST_ANNOUNCE, VirtioNetFeature.CTRL_VQ],
  [VirtioNetFeature.CTRL_MAC_ADDR, VirtioNetFeature.CTRL_VQ],
  // Not in 5.1.3.1's list, but its commands travel on the control queue (Linux's driver stops on one without it).
  [VirtioNetFeature.CTRL_GUEST_OFFLOADS, VirtioNetFeature.CTRL_VQ],
  // After CTRL_RX's own rule: a chain of prerequisites is followed in this order.
  [VirtioNetFeature.CTRL_RX_EXTRA, VirtioNetFeature.CTRL_RX],
];

/**
 * The device features a card offers with the QEMU properties in `off` switched off: MAC, STATUS,
 * and every offload, MRG_RXBUF and control-queue feature that is on (or those of `from`), less
 * those whose prerequisite is off (TSO without checksumming, RX mode without the control queue). Unknown property names are ignored here (the front-end checks
 * them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { virtioNetFeatures, VirtioNetFeature as F } from "./virtio_net_frame.ts";
 * assert.equal(virtioNetFeatures([]) & F.HOST_TSO4, F.HOST_TSO4); // QEMU's defaults: all on
 * const noCsum = virtioNetFeatures(["csum"]);
 * assert.equal(noCsum & (F.CSUM | F.HOST_TSO4 | F.HOST_ECN), 0n); // TSO needs checksumming
 * assert.equal(noCsum & F.GUEST_TSO4, F.GUEST_TSO4);
 * ```
 */
export function virtioNetFeatures(off: Iterable<string>, from?: bigint): bigint {
  let features = from ?? Object.values(VIRTIO_NET_FEATURE_PROPERTIES).reduce(
    (all, bit) => all | bit,
    VirtioNetFeature.MAC | VirtioNetFeature.STATUS,
  );
  for (const name of off) features &= ~(VIRTIO_NET_FEATURE_PROPERTIES[name] ?? 0n);
  for (const [feature, needs] of FEATURE_NEEDS) {
    if (!(features & needs)) features &= ~feature;
  }
  return features;
}

/** The offered features when no property is given: {@link virtioNetFeatures} of nothing. */
export const VIRTIO_NET_DEFAULT_FEATURES: bigint = virtioNetFeatures([]);
