/**
 * virtio-net's receive filter and the control-queue commands that set it (virtio 1.2 5.1.6.5),
 * behaving as QEMU 7.2's `hw/net/virtio-net.c` does:
 *
 * - **RX mode** (class 0, CTRL_RX; the last three need CTRL_RX_EXTRA to be offered, but QEMU takes
 *   them regardless, and so does this): PROMISC, ALLMULTI, ALLUNI, NOMULTI, NOUNI, NOBCAST, each
 *   with one byte, on or off;
 * - **MAC** (class 1): TABLE_SET — a unicast then a multicast list, each a little-endian u32 count
 *   and that many 6-byte addresses; a unicast list longer than the table's 64 entries, or a
 *   multicast list longer than the entries the unicast one left, sets that list's overflow flag
 *   (every such address accepted) instead of being stored — and ADDR_SET (CTRL_MAC_ADDR), the
 *   card's own address, which the configuration space then shows;
 * - **VLAN** (class 2, CTRL_VLAN): ADD and DEL of one little-endian u16 id below 4096;
 * - the filter QEMU applies to each received frame (`receive_filter`): everything while promiscuous
 *   (the state after a reset, until the driver says otherwise); a VLAN-tagged frame only when its id
 *   was added (every id when CTRL_VLAN was not negotiated); broadcast unless NOBCAST; other
 *   multicast unless NOMULTI, with ALLMULTI, a multicast overflow, or an address of the multicast
 *   list; unicast unless NOUNI, with ALLUNI, a unicast overflow, the card's address, or one of the
 *   unicast list.
 *
 * A malformed command (a payload too short, an address that is not 6 bytes, a table whose counts do
 * not match its bytes, an id out of range, an unknown command) is answered VIRTIO_NET_ERR and
 * changes nothing; bytes past a payload's end are ignored, as QEMU ignores them.
 *
 * @module
 */

import type { StateObject, StateReader } from "../device_state.ts";

/** The driver's command was carried out. */
export const VIRTIO_NET_OK = 0;
/** The driver's command was refused (nothing changed). */
export const VIRTIO_NET_ERR = 1;

/** Command classes (the first byte of a control command). */
export const VirtioNetCtrlClass = {
  RX: 0,
  MAC: 1,
  VLAN: 2,
  ANNOUNCE: 3,
  MQ: 4,
  GUEST_OFFLOADS: 5,
} as const;

/** RX-mode commands (class {@link VirtioNetCtrlClass.RX}). */
export const VirtioNetCtrlRx = {
  PROMISC: 0,
  ALLMULTI: 1,
  ALLUNI: 2,
  NOMULTI: 3,
  NOUNI: 4,
  NOBCAST: 5,
} as const;

/** MAC commands (class {@link VirtioNetCtrlClass.MAC}). */
export const VirtioNetCtrlMac = { TABLE_SET: 0, ADDR_SET: 1 } as const;
/** VLAN commands (class {@link VirtioNetCtrlClass.VLAN}). */
export const VirtioNetCtrlVlan = { ADD: 0, DEL: 1 } as const;

/** Addresses the MAC table holds, unicast and multicast together (QEMU's `MAC_TABLE_ENTRIES`). */
export const VIRTIO_NET_MAC_TABLE_ENTRIES = 64;
/** VLAN ids (QEMU's `MAX_VLAN`). */
const MAX_VLAN = 4096;
const ETH_ALEN = 6;
/** The RX modes as bits of one number: bit n is RX command n's flag (virtio 1.2 5.1.6.5.1). */
const PROMISC = 1 << VirtioNetCtrlRx.PROMISC;
const ALLMULTI = 1 << VirtioNetCtrlRx.ALLMULTI;
const ALLUNI = 1 << VirtioNetCtrlRx.ALLUNI;
const NOMULTI = 1 << VirtioNetCtrlRx.NOMULTI;
const NOUNI = 1 << VirtioNetCtrlRx.NOUNI;
const NOBCAST = 1 << VirtioNetCtrlRx.NOBCAST;
const ALL_MODES = 0x3f;

/** What a {@link VirtioNetRxFilter} holds ({@link VirtioNetRxFilter.describe}). */
export interface VirtioNetRxFilterInfo {
  /** Every frame passes. */
  promiscuous: boolean;
  /** The other RX modes. */
  rxMode: {
    /** Every multicast frame passes. */
    allmulti: boolean;
    /** Every unicast frame passes. */
    alluni: boolean;
    /** No multicast frame passes (broadcast aside). */
    nomulti: boolean;
    /** No unicast frame passes. */
    nouni: boolean;
    /** No broadcast frame passes. */
    nobcast: boolean;
  };
  /** The card's address now. */
  mac: readonly number[];
  /** The unicast list was too long for the table: every unicast address passes. */
  unicastOverflow: boolean;
  /** The multicast list was too long: every multicast address passes. */
  multicastOverflow: boolean;
  /** The unicast addresses of the table. */
  unicastTable: number[][];
  /** The multicast addresses of the table. */
  multicastTable: number[][];
  /** The VLAN ids that pass, ascending. */
  vlanTable: number[];
}

/** A byte-wise comparison of 6 bytes of `a` at `i` with `b` at `j`. */
function sameMac(a: Uint8Array, i: number, b: Uint8Array | readonly number[], j: number): boolean {
  for (let k = 0; k < ETH_ALEN; k++) if (a[i + k] !== b[j + k]) return false;
  return true;
}

/**
 * The receive filter's state and the commands that change it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VIRTIO_NET_OK, VirtioNetCtrlRx, VirtioNetRxFilter } from "./virtio_net_ctrl.ts";
 * const mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
 * const filter = new VirtioNetRxFilter(mac);
 * const to = (dst: number[]) => new Uint8Array([...dst, ...mac, 0x08, 0x00]);
 * const other = [0x52, 0x54, 0, 0x12, 0x34, 0x99];
 * assert.ok(filter.accepts(to(other))); // promiscuous after a reset, as QEMU
 * assert.equal(filter.rxMode(VirtioNetCtrlRx.PROMISC, new Uint8Array([0])), VIRTIO_NET_OK);
 * assert.ok(!filter.accepts(to(other)));
 * assert.ok(filter.accepts(to(mac)));
 * assert.ok(filter.accepts(to([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))); // broadcast
 * ```
 */
export class VirtioNetRxFilter {
  /** The card's address as configured (what a reset goes back to). */
  readonly configuredMac: readonly number[];
  /** The card's address now (ADDR_SET changes it). */
  readonly mac: Uint8Array;
  /** The RX modes in force ({@link PROMISC} and the others). */
  #modes = PROMISC;
  /** The MAC table: `inUse` addresses, the unicast ones before `firstMulti`. */
  readonly #macs = new Uint8Array(VIRTIO_NET_MAC_TABLE_ENTRIES * ETH_ALEN);
  #inUse = 0;
  #firstMulti = 0;
  #uniOverflow = false;
  #multiOverflow = false;
  /** One bit per VLAN id. */
  readonly #vlans = new Uint32Array(MAX_VLAN / 32);

  /** A filter for a card with address `mac`, in its reset state. */
  constructor(mac: readonly number[]) {
    this.configuredMac = [...mac];
    this.mac = new Uint8Array(mac);
  }

  /** QEMU's `virtio_net_reset`: promiscuous, no table, no VLAN, the configured address. */
  reset(): void {
    this.#modes = PROMISC;
    this.#macs.fill(0);
    this.#inUse = this.#firstMulti = 0;
    this.#uniOverflow = this.#multiOverflow = false;
    this.mac.set(this.configuredMac);
    this.#vlans.fill(0);
  }

  /**
   * The driver's features are in force: with CTRL_VLAN every id starts filtered out, without it
   * every tagged frame passes (QEMU's `virtio_net_set_features`).
   */
  setVlanFiltering(on: boolean): void {
    this.#vlans.fill(on ? 0 : 0xffff_ffff);
  }

  /** Whether a received Ethernet `frame` (no virtio-net header) reaches the driver. */
  accepts(frame: Uint8Array): boolean {
    const modes = this.#modes;
    if (modes & PROMISC) return true;
    if (frame.length >= 16 && frame[12] === 0x81 && frame[13] === 0x00) {
      const vid = ((frame[14] << 8) | frame[15]) & 0xfff;
      if (!(this.#vlans[vid >> 5] & (1 << (vid & 31)))) return false;
    }
    if (frame.length < ETH_ALEN) return false;
    if (frame[0] & 1) {
      if (frame[0] === 0xff && frame.subarray(1, ETH_ALEN).every((b) => b === 0xff)) {
        return !(modes & NOBCAST);
      }
      if (modes & NOMULTI) return false;
      if ((modes & ALLMULTI) || this.#multiOverflow) return true;
      for (let i = this.#firstMulti; i < this.#inUse; i++) {
        if (sameMac(this.#macs, i * ETH_ALEN, frame, 0)) return true;
      }
      return false;
    }
    if (modes & NOUNI) return false;
    if ((modes & ALLUNI) || this.#uniOverflow || sameMac(frame, 0, this.mac, 0)) return true;
    for (let i = 0; i < this.#firstMulti; i++) if (sameMac(this.#macs, i * ETH_ALEN, frame, 0)) return true;
    return false;
  }

  /** An RX-mode command: `data` starts with the on/off byte. */
  rxMode(cmd: number, data: Uint8Array): number {
    const bit = 1 << cmd;
    if (!(bit & ALL_MODES) || data.length < 1) return VIRTIO_NET_ERR;
    this.#modes = data[0] !== 0 ? this.#modes | bit : this.#modes & ~bit;
    return VIRTIO_NET_OK;
  }

  /** A MAC command (TABLE_SET or ADDR_SET) with its payload. */
  macCommand(cmd: number, data: Uint8Array): number {
    if (cmd === VirtioNetCtrlMac.ADDR_SET) {
      if (data.length !== ETH_ALEN) return VIRTIO_NET_ERR;
      this.mac.set(data);
      return VIRTIO_NET_OK;
    }
    if (cmd !== VirtioNetCtrlMac.TABLE_SET) return VIRTIO_NET_ERR;
    return this.macTableSet(data.length, (at, into) => into.set(data.subarray(at, at + into.length)));
  }

  /**
   * A TABLE_SET of `length` bytes that `read(at, into)` copies from (so that a device can read a
   * large one where it lies): checked as QEMU checks it — a unicast count, at least that many
   * addresses' bytes, a multicast count, exactly that many addresses' bytes to the end — and only
   * the addresses the table can hold are read; a unicast list longer than its 64 entries, or a
   * multicast list longer than the entries left, sets that list's overflow flag instead.
   */
  macTableSet(length: number, read: (at: number, into: Uint8Array) => void): number {
    const word = new Uint8Array(4);
    const u32 = (at: number) => {
      if (at + 4 > length) return -1;
      read(at, word);
      return new DataView(word.buffer).getUint32(0, true);
    };
    const uni = u32(0);
    if (uni < 0 || uni * ETH_ALEN > length - 4) return VIRTIO_NET_ERR;
    const multiAt = 4 + uni * ETH_ALEN;
    const multi = u32(multiAt);
    if (multi < 0 || multi * ETH_ALEN !== length - multiAt - 4) return VIRTIO_NET_ERR;
    const uniOverflow = uni > VIRTIO_NET_MAC_TABLE_ENTRIES;
    const firstMulti = uniOverflow ? 0 : uni;
    const multiOverflow = firstMulti + multi > VIRTIO_NET_MAC_TABLE_ENTRIES;
    this.#macs.fill(0);
    if (!uniOverflow) read(4, this.#macs.subarray(0, uni * ETH_ALEN));
    if (!multiOverflow) {
      read(multiAt + 4, this.#macs.subarray(firstMulti * ETH_ALEN, (firstMulti + multi) * ETH_ALEN));
    }
    this.#firstMulti = firstMulti;
    this.#inUse = firstMulti + (multiOverflow ? 0 : multi);
    this.#uniOverflow = uniOverflow;
    this.#multiOverflow = multiOverflow;
    return VIRTIO_NET_OK;
  }

  /** A VLAN command: `data` starts with the little-endian id. */
  vlanCommand(cmd: number, data: Uint8Array): number {
    if (data.length < 2) return VIRTIO_NET_ERR;
    const vid = data[0] | (data[1] << 8);
    if (vid >= MAX_VLAN) return VIRTIO_NET_ERR;
    if (cmd === VirtioNetCtrlVlan.ADD) this.#vlans[vid >> 5] |= 1 << (vid & 31);
    else if (cmd === VirtioNetCtrlVlan.DEL) this.#vlans[vid >> 5] &= ~(1 << (vid & 31));
    else return VIRTIO_NET_ERR;
    return VIRTIO_NET_OK;
  }

  /** What the filter holds, as QMP's `query-rx-filter` reports it (tables oldest entry first). */
  describe(): VirtioNetRxFilterInfo {
    const entry = (i: number) => [...this.#macs.subarray(i * ETH_ALEN, (i + 1) * ETH_ALEN)];
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => entry(from + k));
    const vlans: number[] = [];
    for (let vid = 0; vid < MAX_VLAN; vid++) if (this.#vlans[vid >> 5] & (1 << (vid & 31))) vlans.push(vid);
    return {
      promiscuous: (this.#modes & PROMISC) !== 0,
      rxMode: {
        allmulti: (this.#modes & ALLMULTI) !== 0,
        alluni: (this.#modes & ALLUNI) !== 0,
        nomulti: (this.#modes & NOMULTI) !== 0,
        nouni: (this.#modes & NOUNI) !== 0,
        nobcast: (this.#modes & NOBCAST) !== 0,
      },
      mac: [...this.mac],
      unicastOverflow: this.#uniOverflow,
      multicastOverflow: this.#multiOverflow,
      unicastTable: range(0, this.#firstMulti),
      multicastTable: range(this.#firstMulti, this.#inUse),
      vlanTable: vlans,
    };
  }

  /** The whole filter, for a snapshot. */
  saveState(): StateObject {
    return {
      rxMode: this.#modes,
      mac: this.mac.slice(),
      macs: this.#macs.slice(0, this.#inUse * ETH_ALEN),
      firstMulti: this.#firstMulti,
      uniOverflow: this.#uniOverflow,
      multiOverflow: this.#multiOverflow,
      vlans: new Uint8Array(this.#vlans.buffer.slice(0)),
    };
  }

  /** Checks a {@link saveState} result and returns the function that applies it. */
  prepareState(r: StateReader): () => void {
    const modes = r.bits("rxMode", ALL_MODES);
    const mac = r.bytes("mac", { length: ETH_ALEN });
    const macs = r.bytes("macs", { maxLength: VIRTIO_NET_MAC_TABLE_ENTRIES * ETH_ALEN });
    if (macs.length % ETH_ALEN) r.fail("macs", `is ${macs.length} bytes, not whole addresses`);
    const inUse = macs.length / ETH_ALEN;
    const firstMulti = r.int("firstMulti", 0, inUse);
    const uniOverflow = r.bool("uniOverflow");
    const multiOverflow = r.bool("multiOverflow");
    const vlans = r.bytes("vlans", { length: MAX_VLAN / 8 });
    return () => {
      this.#modes = modes;
      this.mac.set(mac);
      this.#macs.fill(0);
      this.#macs.set(macs);
      this.#inUse = inUse;
      this.#firstMulti = firstMulti;
      this.#uniOverflow = uniOverflow;
      this.#multiOverflow = multiOverflow;
      new Uint8Array(this.#vlans.buffer).set(vlans);
    };
  }
}
