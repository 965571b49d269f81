/**
 * The frame size limit of virtio-net, in a module of its own so that a host backend can size its
 * buffers without loading the device model (the front-end loads the models only for a run with
 * PCI devices).
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
