import assert from "node:assert/strict";
import fc from "fast-check";
import { StateReader } from "../device_state.ts";
import {
  VIRTIO_NET_MAC_TABLE_ENTRIES,
  VIRTIO_NET_OK,
  VirtioNetCtrlMac,
  VirtioNetCtrlVlan,
  VirtioNetRxFilter,
} from "./virtio_net_ctrl.ts";

const OWN = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const key = (mac: readonly number[]) => mac.join(":");

/**
 * The filter as virtio 1.2 5.1.6.5.1–3 and QEMU's `receive_filter` describe it, with sets: a list
 * longer than the table holds is "every such address" (null).
 */
class Model {
  promisc = true;
  modes = [false, false, false, false, false]; // allmulti, alluni, nomulti, nouni, nobcast
  mac = key(OWN);
  uni: Set<string> | null = new Set();
  multi: Set<string> | null = new Set();
  vlans = new Set<number>();

  /** Without CTRL_VLAN every id starts in the table (QEMU's commands still change it). */
  constructor(vlanFiltering: boolean) {
    if (!vlanFiltering) { for (let vid = 0; vid < 4096; vid++) this.vlans.add(vid); }
  }

  accepts(dst: number[], vid: number | undefined): boolean {
    if (this.promisc) return true;
    if (vid !== undefined && !this.vlans.has(vid)) return false;
    const [allmulti, alluni, nomulti, nouni, nobcast] = this.modes;
    if (dst[0] & 1) {
      if (key(dst) === key(BROADCAST)) return !nobcast;
      return !nomulti && (allmulti || this.multi === null || this.multi.has(key(dst)));
    }
    return !nouni && (alluni || this.uni === null || key(dst) === this.mac || this.uni.has(key(dst)));
  }
}

type Command =
  | { kind: "mode"; cmd: number; on: boolean }
  | { kind: "addr"; mac: number[] }
  | { kind: "table"; uni: number[][]; multi: number[][] }
  | { kind: "vlan"; add: boolean; vid: number };

/** A small pool of addresses, so that frames often hit the ones the commands named. */
const POOL = [OWN, BROADCAST, [0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2], [0x33, 0x33, 0, 0, 0, 1], [
  0x33,
  0x33,
  0,
  0,
  0,
  2,
], [0x01, 0x00, 0x5e, 0, 0, 1]];
const address = fc.oneof(
  fc.constantFrom(...POOL),
  fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 }),
);
/** VLAN ids: word and bit edges of the table (0, 31, 32, 4095) often, anything else too. */
const VID = fc.oneof(fc.constantFrom(0, 1, 31, 32, 33, 4095), fc.integer({ min: 0, max: 4095 }));
const list = fc.oneof(
  fc.array(address, { maxLength: 4 }),
  fc.integer({ min: 0, max: 70 }).map((n) => Array.from({ length: n }, (_, i) => [0x33, 0x33, 0, 0, 1, i])),
);
const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ kind: fc.constant("mode" as const), cmd: fc.integer({ min: 0, max: 5 }), on: fc.boolean() }),
  fc.record({ kind: fc.constant("addr" as const), mac: address }),
  fc.record({ kind: fc.constant("table" as const), uni: list, multi: list }),
  fc.record({ kind: fc.constant("vlan" as const), add: fc.boolean(), vid: VID }),
);
const frame = fc.record({ dst: address, vid: fc.option(VID, { nil: undefined }) });

const le32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24];

function apply(filter: VirtioNetRxFilter, model: Model, c: Command): void {
  let answer: number;
  switch (c.kind) {
    case "mode":
      answer = filter.rxMode(c.cmd, new Uint8Array([c.on ? 1 : 0]));
      if (c.cmd === 0) model.promisc = c.on;
      else model.modes[c.cmd - 1] = c.on;
      break;
    case "addr":
      answer = filter.macCommand(VirtioNetCtrlMac.ADDR_SET, new Uint8Array(c.mac));
      model.mac = key(c.mac);
      break;
    case "table": {
      const data = [...le32(c.uni.length), ...c.uni.flat(), ...le32(c.multi.length), ...c.multi.flat()];
      answer = filter.macCommand(VirtioNetCtrlMac.TABLE_SET, new Uint8Array(data));
      const uniFits = c.uni.length <= VIRTIO_NET_MAC_TABLE_ENTRIES;
      model.uni = uniFits ? new Set(c.uni.map(key)) : null;
      const used = uniFits ? c.uni.length : 0;
      model.multi = used + c.multi.length <= VIRTIO_NET_MAC_TABLE_ENTRIES ? new Set(c.multi.map(key)) : null;
      break;
    }
    case "vlan":
      answer = filter.vlanCommand(
        c.add ? VirtioNetCtrlVlan.ADD : VirtioNetCtrlVlan.DEL,
        new Uint8Array([c.vid & 0xff, c.vid >> 8]),
      );
      if (c.add) model.vlans.add(c.vid);
      else model.vlans.delete(c.vid);
      break;
  }
  assert.equal(answer, VIRTIO_NET_OK);
}

function ethernet(dst: number[], vid: number | undefined): Uint8Array {
  const f = new Uint8Array(64);
  f.set(dst);
  f.set(vid === undefined ? [0x08, 0x00] : [0x81, 0x00, 0xe0 | (vid >> 8), vid & 0xff], 12);
  return f;
}

Deno.test("VirtioNetRxFilter: after any commands, every frame is passed or kept as the model of the spec says", () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(command, { maxLength: 12 }),
      fc.array(frame, { minLength: 1, maxLength: 12 }),
      (vlanFiltering, commands, frames) => {
        const filter = new VirtioNetRxFilter(OWN);
        filter.setVlanFiltering(vlanFiltering);
        const model = new Model(vlanFiltering);
        for (const c of commands) apply(filter, model, c);
        for (const { dst, vid } of frames) {
          assert.equal(filter.accepts(ethernet(dst, vid)), model.accepts(dst, vid), `${key(dst)} vid ${vid}`);
        }
        // A snapshot of the filter behaves the same in a filter of its own.
        const copy = new VirtioNetRxFilter(OWN);
        copy.prepareState(new StateReader("virtio-net-pci", filter.saveState()))();
        assert.deepEqual(copy.describe(), filter.describe());
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("VirtioNetRxFilter: a reset forgets the table, the VLANs and the address set, and is promiscuous again", () => {
  const filter = new VirtioNetRxFilter(OWN);
  filter.rxMode(0, new Uint8Array([0]));
  filter.macCommand(VirtioNetCtrlMac.ADDR_SET, new Uint8Array([2, 0, 0, 0, 0, 1]));
  filter.vlanCommand(VirtioNetCtrlVlan.ADD, new Uint8Array([3, 0]));
  filter.reset();
  const d = filter.describe();
  assert.deepEqual(
    [d.promiscuous, d.mac, d.unicastTable, d.multicastTable, d.vlanTable],
    [true, OWN, [], [], []],
  );
});

Deno.test("VirtioNetRxFilter state: a table that is not whole addresses, or a mode bit out of range, is refused", () => {
  const saved = new VirtioNetRxFilter(OWN).saveState();
  const filter = new VirtioNetRxFilter(OWN);
  assert.throws(
    () => filter.prepareState(new StateReader("virtio-net-pci", { ...saved, macs: new Uint8Array(7) })),
    /"macs" is 7 bytes, not whole addresses/,
  );
  assert.throws(
    () => filter.prepareState(new StateReader("virtio-net-pci", { ...saved, rxMode: 0x40 })),
    /rxMode/,
  );
  assert.throws(
    () => filter.prepareState(new StateReader("virtio-net-pci", { ...saved, firstMulti: 1 })),
    /firstMulti/,
  );
});
