import assert from "node:assert/strict";
import type { DeviceTimers } from "../device_timers.ts";
import { VmTimers } from "../../machine/vm_timers.ts";
import fc from "fast-check";
import { StateReader } from "../device_state.ts";
import { ByteRam, DriverQueue, ViewRam } from "./_test_util.ts";
import { type RamSpans, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./virtqueue.ts";
import { VirtioDevice, VirtioFeature, VirtioStatus } from "./virtio_device.ts";
import { VIRTIO_NET_ERR, VIRTIO_NET_OK, VirtioNetCtrlClass as C } from "./virtio_net_ctrl.ts";
import {
  VIRTIO_NET_CTRL_MAX_DATA,
  VIRTIO_NET_CTRL_QUEUE,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_MAX_FRAME,
  VIRTIO_NET_RX_QUEUE,
  VIRTIO_NET_TX_QUEUE,
  VirtioNet,
  VirtioNetFeature,
  virtioNetFeatures,
  type VirtioNetOffloads,
} from "./virtio_net.ts";

const SIZE = 16;
const RX = { desc: 0x1000n, avail: 0x2000n, used: 0x3000n };
const TX = { desc: 0x4000n, avail: 0x5000n, used: 0x6000n };
const CTRL = { desc: 0x7000n, avail: 0x8000n, used: 0x9000n };
const CTRL_BUF = 0x60_0000;
/** Receive buffers: slot i at RX_BUF + i * 0x1_0000 (room for the largest frame). */
const RX_BUF = 0x10_0000;
const TX_BUF = 0x40_0000;

/**
 * A card whose queues the driver set up; guest RAM is a plain array, or (`views`) an address
 * space's RAM that gives views, so the queues use caches and frames can be sent in place.
 */
function setup(
  options: {
    eventIdx?: boolean;
    rxDriverOk?: boolean;
    views?: boolean;
    accept?: bigint;
    offer?: bigint;
    timers?: DeviceTimers;
  } = {},
) {
  const ram = options.views ? new ViewRam(0x80_0000) : new ByteRam(0x80_0000);
  const sent: Uint8Array[] = [];
  /** The header handed to `send` with each frame. */
  const headers: Uint8Array[] = [];
  /** Whether each frame handed to `send` was guest RAM itself. */
  const inPlace: boolean[] = [];
  /** Every `setOffloads` call. */
  const offloads: VirtioNetOffloads[] = [];
  let ready = 0;
  let accept = true;
  let filterChanges = 0;
  const net = new VirtioNet({
    send: (header, frame) => {
      sent.push(spanBytes(frame));
      headers.push(header.slice());
      inPlace.push(frame.buffers.slice(0, frame.count).every((b) => b === ram.bytes.buffer));
      return accept;
    },
    onReceiveReady: () => void ready++,
    setOffloads: (o) => void offloads.push(o),
    onRxFilterChanged: () => void filterChanges++,
    queueSize: SIZE,
    features: options.offer,
    timers: options.timers,
  });
  const log: string[] = [];
  const dev = new VirtioDevice(net, { memory: ram, log: (l) => log.push(l) });
  const interrupts: number[] = [];
  dev.interrupt = (v) => void interrupts.push(v);
  dev.setDriverFeatures(
    VirtioFeature.VERSION_1 | (options.eventIdx ? VirtioFeature.EVENT_IDX : 0n) | (options.accept ?? 0n),
  );
  dev.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
  for (
    const [i, r] of [[VIRTIO_NET_RX_QUEUE, RX], [VIRTIO_NET_TX_QUEUE, TX], [
      VIRTIO_NET_CTRL_QUEUE,
      CTRL,
    ]] as const
  ) {
    const q = dev.queues[i];
    q.size = SIZE;
    q.descAddr = r.desc;
    q.driverAddr = r.avail;
    q.deviceAddr = r.used;
    q.msixVector = i;
    dev.enableQueue(i);
  }
  if (options.rxDriverOk ?? true) dev.setStatus(dev.status | VirtioStatus.DRIVER_OK);
  const rx = new DriverQueue(ram, SIZE, RX.desc, RX.avail, RX.used);
  const tx = new DriverQueue(ram, SIZE, TX.desc, TX.avail, TX.used);
  const ctrl = new DriverQueue(ram, SIZE, CTRL.desc, CTRL.avail, CTRL.used);
  let rxNext = 0;
  let txNext = 0;
  let ctrlNext = 0;
  /**
   * Sends one control command (class, command, data) with a one-byte answer buffer, notifies, and
   * returns the answer (or -1 when the chain was not used).
   */
  const command = (cls: number, cmd: number, data: ArrayLike<number> = []) => {
    const id = (ctrlNext++ * 2) % SIZE;
    const at = CTRL_BUF + id * 0x1000;
    ram.bytes.set([cls, cmd, ...Array.from(data)], at);
    ram.bytes[at + 0xfff] = 0xee;
    ctrl.setDesc(CTRL.desc, id, {
      addr: BigInt(at),
      len: 2 + data.length,
      flags: VIRTQ_DESC_F_NEXT,
      next: id + 1,
    });
    ctrl.setDesc(CTRL.desc, id + 1, { addr: BigInt(at + 0xfff), len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    const used = ctrl.usedIdx();
    ctrl.offer(id);
    dev.notifyQueue(VIRTIO_NET_CTRL_QUEUE);
    if (ctrl.usedIdx() === used) return -1;
    assert.deepEqual(ctrl.usedElem(used), { id, len: 1 });
    return ram.bytes[at + 0xfff];
  };

  /** Posts a receive buffer of `len` bytes (split in two descriptors when `split`); returns its id. */
  const postRx = (len: number, split = false) => {
    const id = rxNext++ % SIZE;
    const addr = BigInt(RX_BUF + id * 0x1_0000);
    if (split && len > 1) {
      // Two descriptors, id and id + SIZE/2 as the second (ids stay below SIZE/2 in such tests).
      const half = Math.floor(len / 2);
      rx.setDesc(RX.desc, id, {
        addr,
        len: half,
        flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
        next: id + 8,
      });
      rx.setDesc(RX.desc, id + 8, {
        addr: addr + BigInt(half),
        len: len - half,
        flags: VIRTQ_DESC_F_WRITE,
        next: 0,
      });
    } else rx.setDesc(RX.desc, id, { addr, len, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    rx.offer(id);
    return id;
  };
  /** What the driver finds in used element `i` of the receive queue: the header and the frame. */
  const takeRx = (i: number) => {
    const { id, len } = rx.usedElem(i);
    const at = RX_BUF + id * 0x1_0000;
    return {
      id,
      header: ram.bytes.slice(at, at + VIRTIO_NET_HDR_SIZE),
      frame: ram.bytes.slice(at + 12, at + len),
    };
  };
  /** Queues a transmit chain (header + frame, the frame cut in `pieces`) without notifying. */
  const queueTx = (frame: Uint8Array, pieces = 1, header = new Uint8Array(VIRTIO_NET_HDR_SIZE)) => {
    const id = (txNext++ * 4) % SIZE;
    const at = TX_BUF + (id / 4) * 0x2_0000;
    ram.bytes.set(header, at);
    ram.bytes.set(frame, at + VIRTIO_NET_HDR_SIZE);
    const cuts = [0, VIRTIO_NET_HDR_SIZE];
    for (let p = 1; p < pieces; p++) cuts.push(VIRTIO_NET_HDR_SIZE + Math.floor((frame.length * p) / pieces));
    cuts.push(VIRTIO_NET_HDR_SIZE + frame.length);
    const bounds = cuts.filter((c, i) => i === 0 || c > cuts[i - 1]);
    for (let k = 0; k + 1 < bounds.length; k++) {
      tx.setDesc(TX.desc, id + k, {
        addr: BigInt(at + bounds[k]),
        len: bounds[k + 1] - bounds[k],
        flags: k + 2 < bounds.length ? VIRTQ_DESC_F_NEXT : 0,
        next: id + k + 1,
      });
    }
    tx.offer(id);
  };
  return {
    ram,
    net,
    dev,
    log,
    sent,
    headers,
    inPlace,
    offloads,
    interrupts,
    rx,
    tx,
    ctrl,
    command,
    postRx,
    takeRx,
    queueTx,
    ready: () => ready,
    filterChanges: () => filterChanges,
    refuse: () => void (accept = false),
    [Symbol.dispose]: () => ram instanceof ViewRam && ram[Symbol.dispose](),
  };
}

/** The bytes of `spans`, in order. */
function spanBytes(spans: RamSpans): Uint8Array {
  const out = new Uint8Array(spans.lengths.slice(0, spans.count).reduce((a, b) => a + b, 0));
  let at = 0;
  for (let i = 0; i < spans.count; i++) {
    out.set(new Uint8Array(spans.buffers[i], spans.offsets[i], spans.lengths[i]), at);
    at += spans.lengths[i];
  }
  return out;
}

/** A card's counters before anything happened. */
const NO_STATS = {
  txFrames: 0,
  txDropped: 0,
  rxFrames: 0,
  rxDropped: 0,
  rxFiltered: 0,
  ctrlCommands: 0,
  ctrlErrors: 0,
};

const frameOf = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

Deno.test("VirtioNet: identity, features and configuration space as QEMU lays them out", () => {
  const net = new VirtioNet({ send: () => {}, mac: [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef] });
  assert.equal(net.deviceId, 1);
  assert.equal(net.pciClassCode, 0x02_00_00);
  assert.deepEqual(net.queueSizes, [256, 256, 64]);
  // QEMU 7.2's virtio-net-pci on a tap with a virtio-net header offers these: checksums, GSO, TSO,
  // ECN and UFO both ways, MRG_RXBUF, MAC, STATUS, and the control queue with RX, RX_EXTRA, VLAN,
  // GUEST_ANNOUNCE, CTRL_MAC_ADDR and CTRL_GUEST_OFFLOADS (no MQ: its `mq` is off).
  assert.equal(net.features, 0xbf_ffe7n);
  assert.equal(net.features & VirtioNetFeature.MRG_RXBUF, 1n << 15n);
  assert.equal(net.configSize, 8);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => net.readConfig(i, 1)), [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
  assert.equal(net.readConfig(6, 2), 1, "VIRTIO_NET_S_LINK_UP");
  assert.throws(() => new VirtioNet({ send: () => {}, mac: [1, 2, 3] }), RangeError);
  assert.throws(() => new VirtioNet({ send: () => {}, mac: [1, 2, 3, 4, 5, 256] }), RangeError);
  assert.throws(() => new VirtioNet({ send: 1 as unknown as () => void }), TypeError);
  const dev = new VirtioDevice(net, { memory: new ByteRam(16) });
  assert.equal(dev.hostFeatures & VirtioFeature.EVENT_IDX, VirtioFeature.EVENT_IDX);
  assert.equal(dev.queues.length, 3);
});

Deno.test("VirtioNet: transmit drops the header and hands the frame, whatever its pieces, to send", () => {
  const { sent, dev, tx, queueTx, interrupts, net } = setup();
  queueTx(frameOf(60));
  queueTx(frameOf(1514, 3), 3);
  dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.deepEqual(sent, [frameOf(60), frameOf(1514, 3)]);
  assert.equal(tx.usedIdx(), 2);
  assert.deepEqual(tx.usedElem(0), { id: 0, len: 0 });
  assert.deepEqual(interrupts, [VIRTIO_NET_TX_QUEUE]);
  assert.equal(net.stats.txFrames, 2);
});

Deno.test("VirtioNet: a frame in RAM with views is sent in place, in one piece or several; without views it is gathered", () => {
  using t = setup({ views: true });
  t.queueTx(frameOf(1500));
  t.queueTx(frameOf(1500, 5), 2);
  t.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.deepEqual(t.sent, [frameOf(1500), frameOf(1500, 5)]);
  assert.deepEqual(t.inPlace, [true, true]);
  const plain = setup();
  plain.queueTx(frameOf(1500));
  plain.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.deepEqual(plain.sent, [frameOf(1500)]);
  assert.deepEqual(plain.inPlace, [false]);
  assert.equal(t.tx.usedIdx(), 2);
  assert.equal((t.ram as ViewRam).checked, 0, "rings and buffers through caches");
});

Deno.test("VirtioNet: a header-only, an over-long or a refused frame is dropped and counted; the chain still completes", () => {
  const { sent, dev, tx, queueTx, net, refuse, ram } = setup();
  queueTx(new Uint8Array(0));
  queueTx(new Uint8Array(VIRTIO_NET_MAX_FRAME + 1));
  dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.equal(sent.length, 0);
  refuse();
  queueTx(frameOf(100));
  dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.equal(sent.length, 1);
  assert.deepEqual(net.stats, { ...NO_STATS, txDropped: 3 });
  assert.equal(tx.usedIdx(), 3);
  assert.equal(dev.status & VirtioStatus.DEVICE_NEEDS_RESET, 0);
  assert.equal(ram.refused, 0);
});

Deno.test("VirtioNet: a transmit chain without a whole header makes the device need a reset", () => {
  for (const shape of ["short", "writable"] as const) {
    const { dev, tx, log, sent } = setup();
    if (shape === "short") tx.setDesc(TX.desc, 0, { addr: BigInt(TX_BUF), len: 8, flags: 0, next: 0 });
    else tx.setDesc(TX.desc, 0, { addr: BigInt(TX_BUF), len: 64, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    tx.offer(0);
    dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
    assert.ok(dev.status & VirtioStatus.DEVICE_NEEDS_RESET, shape);
    assert.match(log[0], /virtio-net: virtio-net transmit chain of \d+ readable bytes has no 12-byte header/);
    assert.equal(sent.length, 0);
  }
});

Deno.test("VirtioNet: receive writes a zero header with num_buffers 1 and the frame, and interrupts", () => {
  const { net, postRx, takeRx, rx, interrupts } = setup();
  postRx(2048, true);
  assert.equal(net.receive(frameOf(1000)), true);
  assert.equal(rx.usedIdx(), 1);
  assert.equal(rx.usedElem(0).len, 12 + 1000);
  const got = takeRx(0);
  assert.deepEqual([...got.header], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
  assert.deepEqual(got.frame, frameOf(1000));
  assert.deepEqual(interrupts, [VIRTIO_NET_RX_QUEUE]);
  assert.equal(net.stats.rxFrames, 1);
});

Deno.test("VirtioNet: back-pressure — no buffer or no driver means false, and the driver's notify says when to retry", () => {
  const early = setup({ rxDriverOk: false });
  early.postRx(2048);
  assert.equal(early.net.canReceive, false);
  assert.equal(early.net.receive(frameOf(60)), false, "DRIVER_OK not set yet");
  assert.equal(early.rx.usedIdx(), 0);

  const { net, postRx, rx, dev, ready, interrupts } = setup({ eventIdx: true });
  assert.equal(net.canReceive, true);
  assert.equal(net.receive(frameOf(60)), false, "no buffer");
  assert.equal(rx.availEvent(), 0, "the driver is asked to notify at the next buffer");
  postRx(2048);
  dev.notifyQueue(VIRTIO_NET_RX_QUEUE);
  assert.equal(ready(), 1, "onReceiveReady");
  assert.equal(net.receive(frameOf(60)), true);
  assert.equal(rx.usedIdx(), 1);
  assert.equal(interrupts.length, 1);
  // Reset: the driver is gone again.
  dev.reset();
  assert.equal(net.receive(frameOf(60)), false);
});

Deno.test("VirtioNet: a frame delivered from inside the driver's receive notify raises one interrupt, not two", () => {
  const pending = [frameOf(70), frameOf(80)];
  const ram = new ByteRam(0x80_0000);
  const net: VirtioNet = new VirtioNet({
    send: () => {},
    queueSize: SIZE,
    onReceiveReady: () => {
      while (pending.length > 0 && net.receive(pending[0])) pending.shift();
    },
  });
  const dev = new VirtioDevice(net, { memory: ram });
  const interrupts: number[] = [];
  dev.interrupt = (v) => void interrupts.push(v);
  dev.setDriverFeatures(VirtioFeature.VERSION_1);
  dev.setStatus(VirtioStatus.FEATURES_OK);
  const q = dev.queues[0];
  [q.size, q.descAddr, q.driverAddr, q.deviceAddr] = [SIZE, RX.desc, RX.avail, RX.used];
  dev.enableQueue(0);
  dev.setStatus(dev.status | VirtioStatus.DRIVER_OK);
  const rx = new DriverQueue(ram, SIZE, RX.desc, RX.avail, RX.used);
  rx.setDesc(RX.desc, 0, { addr: BigInt(RX_BUF), len: 2048, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  rx.offer(0);
  dev.notifyQueue(0);
  assert.equal(pending.length, 1, "one buffer, one frame; the other waits");
  assert.equal(interrupts.length, 1);
});

Deno.test("VirtioNet: a buffer too small for the frame is kept for the next one and the frame dropped", () => {
  const { net, postRx, rx, takeRx } = setup();
  postRx(12 + 100);
  assert.equal(net.receive(frameOf(101)), true, "taken: dropped");
  assert.equal(rx.usedIdx(), 0, "the buffer was not used");
  assert.equal(net.stats.rxDropped, 1);
  assert.equal(net.receive(frameOf(100)), true);
  assert.equal(rx.usedIdx(), 1);
  assert.deepEqual(takeRx(0).frame, frameOf(100));
  assert.equal(net.receive(new Uint8Array(VIRTIO_NET_MAX_FRAME + 1)), true);
  assert.equal(net.stats.rxDropped, 2);
});

Deno.test("VirtioNet: a receive chain with no writable buffer makes the device need a reset", () => {
  const { net, rx, dev, log } = setup();
  rx.setDesc(RX.desc, 0, { addr: BigInt(RX_BUF), len: 2048, flags: 0, next: 0 });
  rx.offer(0);
  assert.equal(net.receive(frameOf(60)), false);
  assert.ok(dev.status & VirtioStatus.DEVICE_NEEDS_RESET);
  assert.match(log[0], /receive queue contains no in buffers/);
  assert.equal(net.receive(frameOf(60)), false, "broken until reset");
  // A hostile index is caught by the shared queue code the same way.
  const other = setup();
  other.rx.setAvailIdx(SIZE + 5);
  assert.equal(other.net.receive(frameOf(60)), false);
  assert.ok(other.dev.status & VirtioStatus.DEVICE_NEEDS_RESET);
});

Deno.test("VirtioNet: random frames sent and received arrive byte-identical, in order (property)", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          rx: fc.boolean(),
          frame: fc.uint8Array({ minLength: 1, maxLength: 2000 }),
          pieces: fc.integer({ min: 1, max: 3 }),
          split: fc.boolean(),
        }),
        { minLength: 1, maxLength: 24 },
      ),
      fc.boolean(),
      fc.boolean(),
      (ops, eventIdx, views) => {
        using t = setup({ eventIdx, views });
        const received: Uint8Array[] = [];
        let rxSeen = 0;
        const expectedRx: Uint8Array[] = [];
        const expectedTx: Uint8Array[] = [];
        let txBatch = 0;
        for (const op of ops) {
          if (op.rx) {
            t.postRx(12 + op.frame.length + 3, op.split && (t.rx.availIdx % SIZE) < 8);
            assert.equal(t.net.receive(op.frame), true);
            expectedRx.push(op.frame);
            while (rxSeen !== t.rx.usedIdx()) received.push(t.takeRx(rxSeen++).frame);
          } else {
            t.queueTx(op.frame, op.pieces);
            expectedTx.push(op.frame);
            if (++txBatch === 3) {
              t.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
              txBatch = 0;
            }
          }
        }
        t.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
        assert.deepEqual(received, expectedRx);
        assert.deepEqual(t.sent, expectedTx);
        assert.equal(t.dev.status & VirtioStatus.DEVICE_NEEDS_RESET, 0);
        assert.equal(t.ram.refused, 0);
      },
    ),
    { numRuns: 150 },
  );
});

// ---- Offloads and mergeable receive buffers (QEMU's defaults) ----

const F = VirtioNetFeature;
/** A virtio-net header: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
function netHeader(flags: number, gsoType: number, gsoSize = 0, csumStart = 0, csumOffset = 0) {
  const h = new Uint8Array(12);
  const v = new DataView(h.buffer);
  h[0] = flags;
  h[1] = gsoType;
  v.setUint16(2, 54, true);
  v.setUint16(4, gsoSize, true);
  v.setUint16(6, csumStart, true);
  v.setUint16(8, csumOffset, true);
  return h;
}

Deno.test("virtioNetFeatures: QEMU's property names switch features off; one whose prerequisite is off goes too", () => {
  assert.equal(virtioNetFeatures([]), 0xbf_ffe7n);
  assert.equal(virtioNetFeatures(["mrg_rxbuf"]) & F.MRG_RXBUF, 0n);
  const noGuestCsum = virtioNetFeatures(["guest_csum"]);
  assert.equal(noGuestCsum & (F.GUEST_CSUM | F.GUEST_TSO4 | F.GUEST_TSO6 | F.GUEST_ECN | F.GUEST_UFO), 0n);
  assert.equal(noGuestCsum & F.HOST_TSO4, F.HOST_TSO4, "the other direction keeps its offloads");
  assert.equal(virtioNetFeatures(["host_tso4", "host_tso6"]) & F.HOST_ECN, 0n, "ECN needs a TSO");
  assert.equal(virtioNetFeatures(["host_tso4"]) & F.HOST_ECN, F.HOST_ECN);
  const bench = ["csum", "guest_csum", "gso", "host_tso4", "host_tso6", "host_ecn", "host_ufo"];
  const control = F.CTRL_VQ | F.CTRL_RX | F.CTRL_RX_EXTRA | F.CTRL_VLAN | F.CTRL_MAC_ADDR |
    F.CTRL_GUEST_OFFLOADS | F.GUEST_ANNOUNCE;
  assert.equal(
    virtioNetFeatures([...bench, "guest_tso4", "guest_tso6", "guest_ecn", "guest_ufo", "mrg_rxbuf"]),
    F.MAC | F.STATUS | control,
  );
  // Without the control queue none of its commands is offered; without RX mode, no extra modes.
  assert.equal(virtioNetFeatures(["ctrl_vq"]) & control, 0n);
  assert.equal(virtioNetFeatures(["ctrl_rx"]) & (F.CTRL_RX | F.CTRL_RX_EXTRA), 0n);
  assert.equal(virtioNetFeatures(["ctrl_rx_extra"]) & control, control & ~F.CTRL_RX_EXTRA);
  assert.throws(
    () => new VirtioNet({ send: () => {}, features: 1n << 40n }),
    /features 0x10000000000 are not virtio-net's/,
  );
});

Deno.test("VirtioNet: the driver's transmit header reaches the backend only with a transmit offload in force", () => {
  const header = netHeader(1, 1, 1448, 34, 16); // NEEDS_CSUM, TCPv4 segments of 1448
  header[10] = 7; // num_buffers: the driver's to leave 0
  const plain = setup();
  plain.queueTx(frameOf(3000), 2, header);
  plain.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.deepEqual([...plain.headers[0]], new Array(12).fill(0), "nothing negotiated: zeros");
  const offload = setup({ accept: F.CSUM | F.HOST_TSO4 });
  offload.queueTx(frameOf(3000), 2, header);
  offload.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.deepEqual(offload.headers[0], Uint8Array.from([...header.subarray(0, 10), 0, 0]));
  assert.deepEqual(offload.sent, [frameOf(3000)]);
});

Deno.test("VirtioNet: setOffloads follows FEATURES_OK and a loaded state; a reset leaves the backend as it was", () => {
  const t = setup({ accept: F.GUEST_CSUM | F.GUEST_TSO4 | F.GUEST_ECN | F.HOST_TSO6 | F.CSUM });
  assert.deepEqual(t.offloads, [{ csum: true, tso4: true, tso6: false, ecn: true, ufo: false }]);
  const saved = t.dev.saveState();
  t.dev.reset();
  assert.equal(t.offloads.length, 1, "a reset leaves the backend as it was (QEMU too)");
  t.dev.setDriverFeatures(VirtioFeature.VERSION_1);
  t.dev.setStatus(VirtioStatus.FEATURES_OK);
  assert.deepEqual(t.offloads.at(-1), { csum: false, tso4: false, tso6: false, ecn: false, ufo: false });
  t.dev.loadState(saved);
  assert.deepEqual(t.offloads.at(-1), { csum: true, tso4: true, tso6: false, ecn: true, ufo: false });
  // A state saved before FEATURES_OK has nothing in force yet: the backend is not told anything.
  const early = new VirtioNet({ send: () => {}, setOffloads: (o) => void t.offloads.push(o) });
  const dev = new VirtioDevice(early, { memory: new ByteRam(16) });
  dev.setDriverFeatures(VirtioFeature.VERSION_1 | F.GUEST_CSUM);
  const calls = t.offloads.length;
  dev.loadState(dev.saveState());
  assert.equal(t.offloads.length, calls);
});

Deno.test("VirtioNet: the backend's receive header reaches a driver with GUEST_CSUM; a frame needing more than it accepted is dropped", () => {
  const csum = setup({ accept: F.GUEST_CSUM | F.GUEST_TSO4 });
  csum.postRx(0x1_0000);
  assert.equal(csum.net.receive(frameOf(3000), netHeader(1, 1, 1448, 34, 16)), true);
  assert.deepEqual(
    csum.takeRx(0).header,
    Uint8Array.from([...netHeader(1, 1, 1448, 34, 16).subarray(0, 10), 1, 0]),
  );
  for (
    const [header, why] of [
      [netHeader(0, 4), "TCPv6 not accepted"],
      [netHeader(0, 0x81), "ECN not accepted"],
      [netHeader(0, 2), "no such type"],
    ] as const
  ) {
    assert.equal(csum.net.receive(frameOf(100), header), true, why);
  }
  assert.equal(csum.net.stats.rxDropped, 3);
  assert.equal(csum.rx.usedIdx(), 1);

  const plain = setup();
  plain.postRx(2048);
  assert.equal(plain.net.receive(frameOf(100), netHeader(2, 0)), true); // DATA_VALID: not for this driver
  assert.deepEqual([...plain.takeRx(0).header], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
  assert.equal(plain.net.receive(frameOf(100), netHeader(1, 0, 0, 34, 16)), true, "a partial checksum");
  assert.equal(plain.net.stats.rxDropped, 1);
});

/**
 * The frame a mergeable receive left in used elements `first`…: the header (which may straddle
 * buffers), its num_buffers, and the frame's bytes.
 */
function takeMerged(t: ReturnType<typeof setup>, first: number) {
  const parts: Uint8Array[] = [];
  let bytes = 0;
  let count = Infinity;
  for (let i = 0; i < count; i++) {
    const { id, len } = t.rx.usedElem(first + i);
    parts.push(t.ram.bytes.slice(RX_BUF + id * 0x1_0000, RX_BUF + id * 0x1_0000 + len));
    bytes += len;
    if (count === Infinity && bytes >= 12) {
      const joined = new Uint8Array(bytes);
      parts.reduce((n, p) => (joined.set(p, n), n + p.length), 0);
      count = joined[10] | (joined[11] << 8);
    }
  }
  const all = new Uint8Array(bytes);
  parts.reduce((n, p) => (all.set(p, n), n + p.length), 0);
  return { header: all.slice(0, 12), count, frame: all.slice(12) };
}

Deno.test("VirtioNet: with MRG_RXBUF a frame fills as many buffers as it needs, published at once; too few wait", () => {
  const t = setup({ accept: F.MRG_RXBUF | F.GUEST_CSUM | F.GUEST_TSO4, eventIdx: true });
  const rxQueue = t.dev.queues[VIRTIO_NET_RX_QUEUE];
  const flushes: number[] = [];
  const flush = rxQueue.flush.bind(rxQueue);
  rxQueue.flush = (count: number) => (flushes.push(count), flush(count));
  for (let i = 0; i < 3; i++) t.postRx(1536);
  const big = frameOf(5000, 9);
  assert.equal(t.net.receive(big, netHeader(1, 1, 1448)), false, "3 × 1536 bytes hold no 5012");
  assert.equal(t.rx.usedIdx(), 0, "nothing used");
  assert.equal(t.dev.queues[VIRTIO_NET_RX_QUEUE].inUse, 0, "the chains went back");
  t.postRx(1536);
  assert.equal(t.net.receive(big, netHeader(1, 1, 1448)), true);
  assert.equal(t.rx.usedIdx(), 4);
  assert.deepEqual(flushes, [4], "the driver sees the four at once");
  assert.deepEqual([0, 1, 2, 3].map((i) => t.rx.usedElem(i).len), [1536, 1536, 1536, 5012 - 3 * 1536]);
  const got = takeMerged(t, 0);
  assert.equal(got.count, 4);
  assert.deepEqual(got.frame, big);
  assert.deepEqual([...got.header.subarray(0, 2)], [1, 1]);
  assert.equal(t.interrupts.length, 1);
  // A small frame takes one buffer, num_buffers 1.
  t.postRx(1536);
  assert.equal(t.net.receive(frameOf(60)), true);
  assert.equal(takeMerged(t, 4).count, 1);
  assert.equal(t.net.stats.rxDropped, 0);
});

Deno.test("VirtioNet: mergeable receive of random frames into random buffers arrives byte-identical, or is dropped only when the whole ring is too small (property)", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          frame: fc.uint8Array({ minLength: 1, maxLength: 9000 }),
          // Buffers below the 12-byte header too: the header then straddles them.
          buffers: fc.array(fc.integer({ min: 1, max: 4000 }), { minLength: 1, maxLength: 6 }),
        }),
        { minLength: 1, maxLength: 8 },
      ),
      fc.boolean(),
      (ops, views) => {
        using t = setup({ accept: F.MRG_RXBUF, views });
        const waiting: number[] = []; // posted buffers not yet used, in order
        let seen = 0;
        for (const op of ops) {
          for (const len of op.buffers) if (waiting.length < SIZE) t.postRx(len), waiting.push(len);
          for (;;) {
            const dropped = t.net.stats.rxDropped;
            if (t.net.receive(op.frame)) {
              if (t.net.stats.rxDropped > dropped) {
                assert.equal(waiting.length, SIZE, "dropped with room left in the ring");
                assert.ok(
                  waiting.reduce((a, b) => a + b, 0) < 12 + op.frame.length,
                  "dropped though it fitted",
                );
                assert.equal(t.rx.usedIdx(), seen);
              } else {
                const got = takeMerged(t, seen);
                assert.deepEqual(got.frame, op.frame);
                waiting.splice(0, got.count);
                seen = t.rx.usedIdx();
              }
              break;
            }
            assert.ok(waiting.length < SIZE, "kept while the ring was full");
            t.postRx(4000);
            waiting.push(4000);
          }
        }
        assert.equal(t.dev.status & VirtioStatus.DEVICE_NEEDS_RESET, 0);
        assert.equal(t.dev.queues[VIRTIO_NET_RX_QUEUE].inUse, 0);
        assert.equal(t.ram.refused, 0);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("VirtioNet: the driver's transmit header may ask only for what it negotiated; anything else drops the frame", () => {
  const t = setup({ accept: F.CSUM | F.HOST_TSO4 });
  t.queueTx(frameOf(3000), 1, netHeader(1, 1, 1448, 34, 16)); // TCPv4 segments: negotiated
  t.queueTx(frameOf(3000), 1, netHeader(1, 4, 1448, 54, 16)); // TCPv6: not
  t.queueTx(frameOf(3000), 1, netHeader(1, 0x81, 1448, 34, 16)); // ECN: not
  t.queueTx(frameOf(3000), 1, netHeader(0, 2)); // no such type
  t.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.equal(t.sent.length, 1);
  assert.deepEqual(t.net.stats, { ...NO_STATS, txFrames: 1, txDropped: 3 });
  assert.equal(t.tx.usedIdx(), 4, "every chain completes");
  const onlyGuest = setup({ accept: F.GUEST_CSUM });
  onlyGuest.queueTx(frameOf(100), 1, netHeader(1, 0, 0, 34, 16)); // no transmit offload: zeros go
  onlyGuest.dev.notifyQueue(VIRTIO_NET_TX_QUEUE);
  assert.deepEqual([...onlyGuest.headers[0]], new Array(12).fill(0));
});

Deno.test("VirtioNet: a frame that the whole ring, every entry out, cannot hold is dropped and the buffers kept", () => {
  const t = setup({ accept: F.MRG_RXBUF });
  for (let i = 0; i < SIZE; i++) t.postRx(64);
  assert.equal(t.net.receive(frameOf(2000)), true, "taken: dropped");
  assert.equal(t.net.stats.rxDropped, 1);
  assert.equal(t.rx.usedIdx(), 0);
  assert.equal(t.dev.queues[VIRTIO_NET_RX_QUEUE].inUse, 0, "every buffer given back");
  assert.equal(t.net.receive(frameOf(100)), true);
  assert.deepEqual(takeMerged(t, 0).frame, frameOf(100));
  assert.equal(takeMerged(t, 0).count, 2);
});

Deno.test("VirtioNet: features that offer TSO without checksums are refused", () => {
  assert.throws(
    () => new VirtioNet({ send: () => {}, features: F.HOST_TSO4 }),
    /offer a feature without the one it needs/,
  );
  assert.doesNotThrow(() => new VirtioNet({ send: () => {}, features: F.HOST_TSO4 | F.CSUM }));
});

// ---- Device state (issue 11) ----

Deno.test("VirtioNet state: after a load the next frame lands in the next posted buffer, as without it", () => {
  for (const eventIdx of [false, true]) {
    const a = setup({ eventIdx });
    a.postRx(1514);
    a.postRx(1514);
    assert.equal(a.net.receive(new Uint8Array(60).fill(1)), true);
    const saved = a.dev.saveState();
    const b = setup({ eventIdx });
    b.dev.loadState(saved);
    b.ram.bytes.set(a.ram.bytes);
    a.interrupts.length = 0;
    const frame = new Uint8Array(70).fill(2);
    assert.equal(b.net.receive(frame), true);
    assert.equal(a.net.receive(frame), true);
    assert.deepEqual(b.takeRx(1), a.takeRx(1));
    assert.equal(b.takeRx(1).id, 1);
    assert.deepEqual(b.interrupts, a.interrupts);
    assert.deepEqual(b.dev.saveState(), a.dev.saveState());
  }
});

Deno.test("VirtioNet state: the configured MAC is checked; another card's state is refused", () => {
  const net = new VirtioNet({ send: () => {} });
  const state = net.saveState();
  assert.deepEqual(state.mac, new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
  assert.equal(state.status, 1);
  const other = new VirtioNet({ send: () => {}, mac: [2, 0, 0, 0, 0, 1] });
  assert.throws(
    () => other.prepareState(new StateReader("virtio-net-pci", state)),
    /virtio-net-pci: state field "mac" differs from this device's at byte 0 \(another card/,
  );
  assert.doesNotThrow(() => net.prepareState(new StateReader("virtio-net-pci", state))());
  const dev = new VirtioDevice(other, { memory: new ByteRam(16) });
  const before = dev.saveState();
  assert.throws(() => dev.loadState({ ...before, model: state }), /"model.mac" differs/);
  assert.deepEqual(dev.saveState(), before);
});

// ---- The control queue and the receive filter (virtio 1.2 5.1.6.5; QEMU 7.2's behaviour) ----

const CONTROL = F.CTRL_VQ | F.CTRL_RX | F.CTRL_RX_EXTRA | F.CTRL_VLAN | F.CTRL_MAC_ADDR |
  F.CTRL_GUEST_OFFLOADS |
  F.GUEST_ANNOUNCE;
const OWN = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/** An Ethernet frame to `dst` (an optional 802.1Q tag with `vid`), 60 bytes. */
const frameTo = (dst: readonly number[], vid?: number) => {
  const f = new Uint8Array(60);
  f.set(dst);
  f.set([2, 0, 0, 0, 0, 9], 6);
  if (vid === undefined) f.set([0x08, 0x00], 12);
  else f.set([0x81, 0x00, vid >> 8, vid & 0xff, 0x08, 0x00], 12);
  return f;
};
const le32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24];
/** A MAC TABLE_SET payload. */
const table = (
  uni: number[][],
  multi: number[][],
) => [...le32(uni.length), ...uni.flat(), ...le32(multi.length), ...multi.flat()];

Deno.test("VirtioNet control: Linux's rx-mode sequence turns promiscuity off; the filter then passes only what is for the card", () => {
  const t = setup({ accept: CONTROL });
  for (let i = 0; i < 8; i++) t.postRx(1514);
  const other = [0x52, 0x54, 0, 0x12, 0x34, 0x99];
  assert.equal(t.net.receive(frameTo(other)), true);
  assert.equal(t.net.stats.rxFrames, 1, "promiscuous after a reset, as QEMU");
  const mcast = [0x33, 0x33, 0, 0, 0, 1];
  assert.equal(t.command(C.RX, 0, [0]), VIRTIO_NET_OK); // PROMISC off
  assert.equal(t.command(C.RX, 1, [0]), VIRTIO_NET_OK); // ALLMULTI off
  assert.equal(t.command(C.MAC, 0, table([], [mcast])), VIRTIO_NET_OK);
  const before = t.net.stats.rxFrames;
  for (const dst of [other, OWN, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], mcast, [0x33, 0x33, 0, 0, 0, 2]]) {
    assert.equal(t.net.receive(frameTo(dst)), true);
  }
  assert.equal(t.net.stats.rxFrames - before, 3, "own, broadcast, the listed multicast");
  assert.equal(t.net.stats.rxFiltered, 2);
  assert.equal(t.command(C.RX, 1, [1]), VIRTIO_NET_OK); // ALLMULTI on
  assert.equal(t.net.receive(frameTo([0x33, 0x33, 0, 0, 0, 2])), true);
  assert.equal(t.net.stats.rxFrames - before, 4);
  assert.equal(t.command(C.RX, 5, [1]), VIRTIO_NET_OK); // NOBCAST
  assert.equal(t.net.receive(frameTo([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])), true);
  assert.equal(t.net.stats.rxFiltered, 3);
  assert.deepEqual(t.net.stats.ctrlCommands, 5);
});

Deno.test("VirtioNet control: ADDR_SET changes the card's address in the configuration space and the filter; a reset puts it back", () => {
  const t = setup({ accept: CONTROL });
  for (let i = 0; i < 8; i++) t.postRx(1514);
  const next = [0x52, 0x54, 0, 0x12, 0x34, 0x99];
  assert.equal(t.command(C.RX, 0, [0]), VIRTIO_NET_OK);
  assert.equal(t.command(C.MAC, 1, next), VIRTIO_NET_OK);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => t.net.readConfig(i, 1)), next);
  t.net.receive(frameTo(next));
  t.net.receive(frameTo(OWN));
  assert.deepEqual([t.net.stats.rxFrames, t.net.stats.rxFiltered], [1, 1]);
  assert.deepEqual(t.net.mac, OWN, "the configured address stays");
  t.dev.reset();
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => t.net.readConfig(i, 1)), OWN);
  assert.equal(t.net.rxFilter.describe().promiscuous, true);
});

Deno.test("VirtioNet control: a malformed or unknown command is answered ERR and changes nothing", () => {
  const t = setup({ accept: CONTROL });
  assert.equal(t.command(C.RX, 0, [0]), VIRTIO_NET_OK);
  assert.equal(t.command(C.MAC, 0, table([OWN], [[0x33, 0x33, 0, 0, 0, 1]])), VIRTIO_NET_OK);
  const filter = t.net.rxFilter.describe();
  const bad: [number, number, number[]][] = [
    [C.RX, 6, [1]], // no such mode
    [C.RX, 0, []], // no on/off byte
    [C.MAC, 1, [1, 2, 3, 4, 5]], // an address of 5 bytes
    [C.MAC, 0, [...le32(2), ...OWN, ...le32(0)]], // 2 unicast addresses announced, 1 given
    [C.MAC, 0, [...le32(0), ...le32(1), ...OWN, 0]], // multicast bytes not a whole count
    [C.MAC, 0, le32(0)], // no multicast count
    [C.MAC, 2, []],
    [C.VLAN, 0, [0x00, 0x10]], // id 4096
    [C.VLAN, 2, [1, 0]],
    [C.ANNOUNCE, 0, []], // nothing announced
    [C.MQ, 0, [1, 0]], // no multiqueue
    [C.GUEST_OFFLOADS, 0, [0, 0, 0, 0, 0, 0, 0, 0]], // not negotiated below
    [9, 0, []],
  ];
  const plain = setup({ accept: F.CTRL_VQ | F.CTRL_RX });
  assert.equal(plain.command(C.GUEST_OFFLOADS, 0, [0, 0, 0, 0, 0, 0, 0, 0]), VIRTIO_NET_ERR);
  for (const [cls, cmd, data] of bad.slice(0, -2)) {
    assert.equal(t.command(cls, cmd, data), VIRTIO_NET_ERR, `${cls}/${cmd} [${data}]`);
  }
  assert.equal(t.command(9, 0), VIRTIO_NET_ERR);
  assert.deepEqual(t.net.rxFilter.describe(), filter);
  assert.equal(t.net.stats.ctrlErrors, bad.length - 1);
  assert.equal(t.filterChanges(), 2, "only the two commands that changed the filter are reported");
  assert.equal(t.dev.status & VirtioStatus.DEVICE_NEEDS_RESET, 0);
});

Deno.test("VirtioNet control: a table too long for 64 entries sets that list's overflow: every such address passes", () => {
  const t = setup({ accept: CONTROL });
  for (let i = 0; i < 8; i++) t.postRx(1514);
  assert.equal(t.command(C.RX, 0, [0]), VIRTIO_NET_OK);
  const many = Array.from({ length: 65 }, (_, i) => [0x33, 0x33, 0, 0, 1, i]);
  assert.equal(t.command(C.MAC, 0, table([[2, 0, 0, 0, 0, 1]], many)), VIRTIO_NET_OK);
  const d = t.net.rxFilter.describe();
  assert.deepEqual([d.unicastOverflow, d.multicastOverflow, d.unicastTable.length, d.multicastTable.length], [
    false,
    true,
    1,
    0,
  ]);
  t.net.receive(frameTo([0x33, 0x33, 9, 9, 9, 9]));
  t.net.receive(frameTo([2, 0, 0, 0, 0, 1]));
  t.net.receive(frameTo([2, 0, 0, 0, 0, 2]));
  assert.deepEqual([t.net.stats.rxFrames, t.net.stats.rxFiltered], [2, 1]);
});

Deno.test("VirtioNet control: with CTRL_VLAN a tagged frame passes only for an id added; without it every id passes", () => {
  const t = setup({ accept: CONTROL });
  for (let i = 0; i < 8; i++) t.postRx(1514);
  assert.equal(t.command(C.RX, 0, [0]), VIRTIO_NET_OK);
  t.net.receive(frameTo(OWN, 5));
  assert.equal(t.net.stats.rxFiltered, 1);
  assert.equal(t.command(C.VLAN, 0, [5, 0]), VIRTIO_NET_OK);
  t.net.receive(frameTo(OWN, 5));
  t.net.receive(frameTo(OWN, 0x2005)); // the priority bits are not the id
  assert.equal(t.net.stats.rxFrames, 2);
  assert.equal(t.command(C.VLAN, 1, [5, 0]), VIRTIO_NET_OK);
  t.net.receive(frameTo(OWN, 5));
  assert.equal(t.net.stats.rxFiltered, 2);
  const noVlan = setup({ accept: CONTROL & ~F.CTRL_VLAN });
  noVlan.postRx(1514);
  assert.equal(noVlan.command(C.RX, 0, [0]), VIRTIO_NET_OK);
  noVlan.net.receive(frameTo(OWN, 77));
  assert.equal(noVlan.net.stats.rxFrames, 1);
});

Deno.test("VirtioNet control: GUEST_OFFLOADS SET changes what the backend may give, among the offloads negotiated", () => {
  const t = setup({ accept: CONTROL | F.GUEST_CSUM | F.GUEST_TSO4 });
  t.postRx(1514);
  t.postRx(1514);
  assert.deepEqual(t.offloads.at(-1), { csum: true, tso4: true, tso6: false, ecn: false, ufo: false });
  const u64 = (n: bigint) => Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
  assert.equal(t.command(C.GUEST_OFFLOADS, 0, u64(F.GUEST_TSO6)), VIRTIO_NET_ERR, "not negotiated");
  assert.equal(t.command(C.GUEST_OFFLOADS, 0, u64(F.GUEST_CSUM)), VIRTIO_NET_OK);
  assert.deepEqual(t.offloads.at(-1), { csum: true, tso4: false, tso6: false, ecn: false, ufo: false });
  const segment = netHeader(1, 1, 1448, 34, 16); // a TCPv4 segment from the backend: no longer taken
  assert.equal(t.net.receive(frameOf(3000), segment), true);
  assert.deepEqual([t.net.stats.rxFrames, t.net.stats.rxDropped], [0, 1]);
  assert.equal(t.command(C.GUEST_OFFLOADS, 0, u64(0n)), VIRTIO_NET_OK);
  assert.equal(t.net.receive(frameOf(100), netHeader(1, 0, 0, 34, 16)), true); // a partial checksum
  assert.equal(t.net.stats.rxDropped, 2);
  assert.equal(t.net.receive(frameOf(100)), true);
  assert.equal(t.net.stats.rxFrames, 1);
});

Deno.test("VirtioNet control: announce() raises ANNOUNCE with a configuration interrupt; the driver's ACK clears it", () => {
  const t = setup({ accept: CONTROL });
  t.dev.configVector = 7;
  assert.equal(t.net.announce(), true);
  assert.equal(t.net.readConfig(6, 2), 3, "LINK_UP | ANNOUNCE");
  assert.deepEqual(t.interrupts, [7]);
  assert.equal(t.command(C.ANNOUNCE, 0), VIRTIO_NET_OK);
  assert.equal(t.net.readConfig(6, 2), 1);
  assert.equal(t.command(C.ANNOUNCE, 0), VIRTIO_NET_ERR, "nothing to acknowledge");
  assert.equal(setup({ accept: CONTROL & ~F.GUEST_ANNOUNCE }).net.announce(), false);
  // Before DRIVER_OK the bit is set all the same, as QEMU's post-load does; no interrupt goes out.
  const early = setup({ accept: CONTROL, rxDriverOk: false });
  assert.equal(early.net.announce(), true);
  assert.equal(early.net.readConfig(6, 2), 3);
  assert.deepEqual(early.interrupts, []);
});

Deno.test("VirtioNet: after a restore the driver is asked to announce in QEMU's five rounds, each a step after the last ACK", () => {
  let now = 0;
  const timers = new VmTimers(() => {}, () => now);
  const t = setup({ accept: CONTROL, timers });
  t.dev.configVector = 7;
  const asked: number[] = []; // when the ANNOUNCE bit was raised
  const ack = () => {
    assert.equal(t.net.readConfig(6, 2), 3, `ANNOUNCE set at ${now} ms`);
    asked.push(now);
    assert.equal(t.command(C.ANNOUNCE, 0), VIRTIO_NET_OK);
  };
  t.net.restored();
  ack();
  for (let ms = 0; ms <= 2000 && t.net.announceRoundsLeft + timers.size > 0; ms += 10) {
    now = ms;
    timers.runDue();
    if (t.net.readConfig(6, 2) & 2) ack();
  }
  // QEMU's virtio_net_announce_timer + qemu_announce_timer_step with 50/550/5/100: gaps of 50, 150,
  // 250 and 350 ms after each acknowledgement (here acknowledged at once).
  assert.deepEqual(asked, [0, 50, 200, 450, 800]);
  assert.deepEqual(
    t.interrupts.filter((v) => v === 7),
    [7, 7, 7, 7, 7],
    "a configuration interrupt each round",
  );
  assert.equal(t.net.announceRoundsLeft, 0);
  assert.equal(t.net.announce(), true, "once the rounds are over, a self-announcement asks again");
});

Deno.test("VirtioNet: a self-announcement does not ask while a restore's rounds run; a reset ends them", () => {
  const now = 0;
  const timers = new VmTimers(() => {}, () => now);
  const t = setup({ accept: CONTROL, timers });
  t.net.restored();
  assert.equal(t.net.announceRoundsLeft, 4);
  assert.equal(t.net.announce(), false, "the rounds ask on their own (QEMU's virtio_net_announce)");
  assert.equal(t.command(C.ANNOUNCE, 0), VIRTIO_NET_OK);
  assert.equal(timers.size, 1);
  t.net.reset();
  assert.equal(timers.size, 0, "the next round's timer is cancelled");
  assert.equal(t.net.announceRoundsLeft, 0);
  assert.equal(t.net.readConfig(6, 2) & 2, 0);
  // Without the feature, a restore asks nothing; without timers, one round.
  const plain = setup({ accept: CONTROL & ~F.GUEST_ANNOUNCE, timers });
  plain.net.restored();
  assert.equal(plain.net.announceRoundsLeft, 0);
  assert.equal(plain.net.readConfig(6, 2), 1);
  const untimed = setup({ accept: CONTROL });
  untimed.net.restored();
  assert.equal(untimed.net.readConfig(6, 2), 3);
  assert.equal(untimed.command(C.ANNOUNCE, 0), VIRTIO_NET_OK);
  assert.equal(untimed.net.announceRoundsLeft, 0);
});

Deno.test("VirtioNet control: a chain without its class, command or answer byte makes the device need a reset", () => {
  for (const shape of ["one byte", "no answer"] as const) {
    const t = setup({ accept: CONTROL });
    t.ram.bytes.set([0, 0, 0], CTRL_BUF);
    const readable = shape === "one byte" ? 1 : 3;
    t.ctrl.setDesc(CTRL.desc, 0, {
      addr: BigInt(CTRL_BUF),
      len: readable,
      flags: shape === "one byte" ? VIRTQ_DESC_F_NEXT : 0,
      next: 1,
    });
    t.ctrl.setDesc(CTRL.desc, 1, {
      addr: BigInt(CTRL_BUF + 0x100),
      len: 1,
      flags: VIRTQ_DESC_F_WRITE,
      next: 0,
    });
    t.ctrl.offer(0);
    t.dev.notifyQueue(VIRTIO_NET_CTRL_QUEUE);
    assert.ok(t.dev.status & VirtioStatus.DEVICE_NEEDS_RESET, shape);
    assert.match(t.log[0], /virtio-net control chain of \d+ readable and \d+ writable bytes misses/);
  }
});

Deno.test("VirtioNet state: the receive filter, the card's address and the offloads in force travel in a snapshot", () => {
  const a = setup({ accept: CONTROL | F.GUEST_CSUM });
  assert.equal(a.command(C.RX, 0, [0]), VIRTIO_NET_OK);
  assert.equal(a.command(C.MAC, 1, [2, 0, 0, 0, 0, 7]), VIRTIO_NET_OK);
  assert.equal(a.command(C.MAC, 0, table([[2, 0, 0, 0, 0, 8]], [[0x33, 0x33, 0, 0, 0, 1]])), VIRTIO_NET_OK);
  assert.equal(a.command(C.VLAN, 0, [9, 0]), VIRTIO_NET_OK);
  assert.equal(a.command(C.GUEST_OFFLOADS, 0, [0, 0, 0, 0, 0, 0, 0, 0]), VIRTIO_NET_OK);
  const saved = a.dev.saveState();
  const b = setup();
  b.dev.loadState(saved);
  assert.deepEqual(b.net.rxFilter.describe(), a.net.rxFilter.describe());
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => b.net.readConfig(i, 1)), [2, 0, 0, 0, 0, 7]);
  assert.deepEqual(b.offloads.at(-1), { csum: false, tso4: false, tso6: false, ecn: false, ufo: false });
  assert.deepEqual(b.dev.saveState(), saved);
});

Deno.test("VirtioNet control: a MAC table larger than the copy limit is read in place: overflow set, counts still checked", () => {
  const t = setup({ accept: CONTROL });
  for (let i = 0; i < 4; i++) t.postRx(1514);
  assert.equal(t.command(C.RX, 0, [0]), VIRTIO_NET_OK);
  /** Sends a TABLE_SET whose payload is `payload`, from a buffer of its own; the answer byte. */
  const bigTable = (payload: Uint8Array) => {
    const at = 0x70_0000;
    t.ram.bytes.set([C.MAC, 0], at);
    t.ram.bytes.set(payload, at + 2);
    t.ctrl.setDesc(CTRL.desc, 8, {
      addr: BigInt(at),
      len: 2 + payload.length,
      flags: VIRTQ_DESC_F_NEXT,
      next: 9,
    });
    t.ctrl.setDesc(CTRL.desc, 9, { addr: BigInt(at - 1), len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    t.ctrl.offer(8);
    t.dev.notifyQueue(VIRTIO_NET_CTRL_QUEUE);
    return t.ram.bytes[at - 1];
  };
  const many = 12_000; // 72,000 bytes of multicast addresses
  const payload = new Uint8Array(4 + 6 + 4 + many * 6);
  const view = new DataView(payload.buffer);
  view.setUint32(0, 1, true);
  payload.set([2, 0, 0, 0, 0, 5], 4);
  view.setUint32(10, many, true);
  for (let i = 0; i < many; i++) payload.set([0x33, 0x33, 0, 0, i >> 8, i & 0xff], 14 + i * 6);
  assert.ok(payload.length > VIRTIO_NET_CTRL_MAX_DATA);
  assert.equal(bigTable(payload), VIRTIO_NET_OK);
  const d = t.net.rxFilter.describe();
  assert.deepEqual([d.unicastTable, d.multicastOverflow, d.unicastOverflow], [
    [[2, 0, 0, 0, 0, 5]],
    true,
    false,
  ]);
  t.net.receive(frameTo([0x33, 0x33, 0xaa, 0xbb, 0xcc, 0xdd]));
  t.net.receive(frameTo([2, 0, 0, 0, 0, 5]));
  assert.equal(t.net.stats.rxFrames, 2);
  // The same payload one byte short: the multicast count no longer matches; nothing changes.
  assert.equal(t.command(C.MAC, 0, table([], [])), VIRTIO_NET_OK);
  const before = t.net.rxFilter.describe();
  assert.equal(bigTable(payload.subarray(0, payload.length - 1)), VIRTIO_NET_ERR);
  assert.deepEqual(t.net.rxFilter.describe(), before);
});
