/**
 * Self-announcement of network cards, as QEMU's `net/announce.c` does it after an incoming
 * migration and for QMP's `announce-self`: a few rounds, each sending one RARP frame per card from
 * the card's address (so that switches and bridges learn where it now is) and asking a driver that
 * can (virtio-net's GUEST_ANNOUNCE) to announce the card itself. The rounds are spaced by
 * {@link announceDelay}. Pure: the frame's bytes and the schedule; the machine sends and waits.
 *
 * @module
 */

/** QEMU's `AnnounceParameters` (QMP `announce-self`, and the migration's `announce-*` parameters). */
export interface AnnounceParameters {
  /** Milliseconds before the second round. */
  readonly initial: number;
  /** The longest gap between rounds, in milliseconds. */
  readonly max: number;
  /** How many rounds. */
  readonly rounds: number;
  /** How much longer each gap is than the one before, in milliseconds. */
  readonly step: number;
}

/**
 * QEMU 7.2's defaults for the announcement after a migration (`announce-initial` 50,
 * `announce-max` 550, `announce-rounds` 5, `announce-step` 100): this product uses them after a
 * restore, and the monitor's `announce_self` uses them too.
 */
export const DEFAULT_ANNOUNCE: AnnounceParameters = { initial: 50, max: 550, rounds: 5, step: 100 };

/**
 * The bounds QEMU 7.2 puts on the migration's announce parameters (`migrate_params_check`), which
 * this product holds `announce-self` to as well: QEMU itself takes any integer there, and a
 * negative round count never ends.
 */
export const ANNOUNCE_LIMITS: Readonly<Record<keyof AnnounceParameters, readonly [number, number]>> = {
  initial: [0, 100_000],
  max: [0, 100_000],
  rounds: [0, 1000],
  step: [1, 10_000],
};

/**
 * The wait before the next round when `left` rounds are still to come (QEMU's
 * `qemu_announce_timer_step`): `initial`, then `step` longer each round, never past `max`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { announceDelay, DEFAULT_ANNOUNCE } from "./net_announce.ts";
 * // Five rounds: the first at once, then gaps of 50, 150, 250 and 350 ms.
 * assert.deepEqual([4, 3, 2, 1].map((left) => announceDelay(DEFAULT_ANNOUNCE, left)), [50, 150, 250, 350]);
 * assert.equal(announceDelay({ initial: 50, max: 200, rounds: 9, step: 100 }, 1), 200); // capped
 * ```
 */
export function announceDelay(params: AnnounceParameters, left: number): number {
  const delay = params.initial + (params.rounds - left - 1) * params.step;
  return delay < 0 || delay > params.max ? params.max : delay;
}

/**
 * The first member of `params` outside {@link ANNOUNCE_LIMITS}, with its bounds, or undefined.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { announceProblem } from "./net_announce.ts";
 * assert.equal(announceProblem({ initial: 50, max: 550, rounds: 5, step: 100 }), undefined);
 * assert.equal(announceProblem({ initial: 50, max: 550, rounds: -1, step: 100 }), "'rounds' must be from 0 to 1000");
 * ```
 */
export function announceProblem(params: AnnounceParameters): string | undefined {
  for (const name of ["initial", "max", "rounds", "step"] as const) {
    const [low, high] = ANNOUNCE_LIMITS[name];
    const value = params[name];
    if (!Number.isInteger(value) || value < low || value > high) {
      return `'${name}' must be from ${low} to ${high}`;
    }
  }
  return undefined;
}

/** Bytes of a self-announcement frame: the Ethernet minimum without the FCS. */
export const ANNOUNCE_FRAME_SIZE = 60;
/** The RARP ethertype. */
const ETH_P_RARP = 0x8035;
/** ARP's Ethernet hardware type, its IPv4 protocol type, and RARP's request opcode. */
const ARP_HTYPE_ETH = 1;
const ARP_PTYPE_IP = 0x0800;
const RARP_REQUEST = 3;

/**
 * The frame a card announces itself with (QEMU's `announce_self_create`): a broadcast RARP request
 * from `mac` about `mac`, protocol addresses zero, padded with zeros to 60 bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { selfAnnounceFrame } from "./net_announce.ts";
 * const frame = selfAnnounceFrame(Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56));
 * assert.equal(frame.length, 60);
 * assert.deepEqual([...frame.subarray(0, 14)], [255, 255, 255, 255, 255, 255, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x80, 0x35]);
 * assert.equal(frame[21], 3); // a reverse request
 * ```
 *
 * @throws {RangeError} when `mac` is not 6 bytes.
 */
export function selfAnnounceFrame(mac: Uint8Array): Uint8Array {
  if (mac.length !== 6) throw new RangeError(`selfAnnounceFrame: a MAC is 6 bytes, not ${mac.length}`);
  const frame = new Uint8Array(ANNOUNCE_FRAME_SIZE);
  const view = new DataView(frame.buffer);
  frame.fill(0xff, 0, 6);
  frame.set(mac, 6);
  view.setUint16(12, ETH_P_RARP);
  view.setUint16(14, ARP_HTYPE_ETH);
  view.setUint16(16, ARP_PTYPE_IP);
  frame[18] = 6;
  frame[19] = 4;
  view.setUint16(20, RARP_REQUEST);
  frame.set(mac, 22); // sender hardware address; its protocol address (28–31) stays zero
  frame.set(mac, 32); // target hardware address; its protocol address (38–41) and the padding stay zero
  return frame;
}
