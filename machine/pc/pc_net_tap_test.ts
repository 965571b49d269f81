/**
 * virtio-net-pci on the board against a real tap: needs root, /dev/net/tun and iproute2's `ip`,
 * and skips (saying why) without them. The tap lives in a private network namespace, so nothing of
 * the host's networking is touched. No KVM: the test is the driver, through the board's BARs.
 */
import assert from "node:assert/strict";
import { Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN } from "../../kvm/mod.ts";
import { VirtioNetFeature } from "../../devices/virtio/mod.ts";
import { ip, tapSkipReason } from "../../kvm/_testing.ts";
import { NetRxPoller } from "../net_rx.ts";
import { TapNetBackend } from "../virtio_backends.ts";
import { PcBoard } from "./pc_board.ts";
import { netDriver } from "./_pci_test_util.ts";

const SKIP = tapSkipReason();
if (SKIP) console.log(`machine/pc/pc_net_tap_test.ts: skipped: ${SKIP}`);

const MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/** An ARP "who has 10.78.0.1?" from 10.78.0.2 at {@link MAC}. */
function arpRequest(): Uint8Array {
  const f = new Uint8Array(42);
  const v = new DataView(f.buffer);
  f.fill(0xff, 0, 6);
  f.set(MAC, 6);
  v.setUint16(12, 0x0806);
  v.setUint16(14, 1);
  v.setUint16(16, 0x0800);
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, 1);
  f.set(MAC, 22);
  f.set([10, 78, 0, 2], 28);
  f.set([10, 78, 0, 1], 38);
  return f;
}

/**
 * A board whose virtio-net card (driver accepting `accept`) is on a real tap at 10.78.0.1/24 in a
 * namespace of its own; `until` sends nothing itself: it pumps the tap into eight recycled receive
 * buffers until `match` accepts a received header and frame, and returns them.
 */
async function onRealTap(
  accept: number,
  run: (t: {
    backend: TapNetBackend;
    send: (frame: Uint8Array, header?: Uint8Array) => void;
    until: (
      what: string,
      match: (frame: Uint8Array) => boolean,
    ) => Promise<{ header: Uint8Array; frame: Uint8Array }>;
  }) => Promise<void>,
) {
  const suffix = `${Deno.pid % 100_000}${Math.floor(Math.random() * 100)}`;
  const namespace = `kvmts-nn${suffix}`;
  const name = `kvmtn${suffix}`;
  ip("netns", "add", namespace);
  try {
    using tap = Tap.open({ name });
    ip("link", "set", "dev", name, "netns", namespace);
    ip("-n", namespace, "addr", "add", "10.78.0.1/24", "dev", name);
    ip("-n", namespace, "link", "set", "dev", name, "up");
    const backend = new TapNetBackend(tap);
    using b = await PcBoard.create({
      ramSize: 64n << 20n,
      pciDevices: [{ type: "virtio-net-pci", mac: MAC, backend }],
    });
    const d = netDriver(b, 2, accept);
    for (let i = 0; i < 8; i++) d.post(0x40_0000 + i * 0x1000, 0x1000);
    // The receive Worker rings a doorbell when the tap is readable; the test is the VM thread.
    const bell = new Int32Array(new SharedArrayBuffer(8));
    using poller = NetRxPoller.start({
      fds: [tap.fd],
      doorbell: { buffer: bell.buffer as SharedArrayBuffer, index: 0, waitingIndex: 1, eventfd: -1 },
    });
    backend.onDrained = () => poller.resume();
    let sent = 0;
    let seen = 0;
    await run({
      backend,
      send: (frame, header) => {
        d.send(frame, 0x30_0000 + (sent % 4) * 0x1000, header);
        assert.equal(d.usedIdx(1), ++sent, "transmitted");
      },
      async until(what, match) {
        const deadline = Date.now() + 5000;
        for (;;) {
          assert.ok(Date.now() < deadline, `no ${what} within 5 s`);
          const rung = Atomics.load(bell, 0);
          if (poller.signalled) backend.pump();
          for (; seen < d.usedIdx(0); seen++) {
            const got = new Uint8Array(d.usedLen(0, seen));
            b.memory.rw(0x40_0000 + (seen % 8) * 0x1000, got, false);
            d.post(0x40_0000 + (seen % 8) * 0x1000, 0x1000); // recycle the buffer
            if (match(got.subarray(12))) {
              seen++;
              return { header: got.subarray(0, 12), frame: got.subarray(12) };
            }
          }
          await new Promise((r) => setTimeout(r, Atomics.load(bell, 0) === rung ? 5 : 0));
        }
      },
    });
  } finally {
    ip("netns", "del", namespace);
  }
}

const isArpReply = (f: Uint8Array) => f.length >= 42 && f[12] === 0x08 && f[13] === 0x06 && f[21] === 2;

Deno.test({
  name:
    "PC PCI: virtio-net on a real tap — the guest's ARP request is answered by the namespace, the reply lands in the guest's buffer",
  ignore: SKIP !== undefined,
  async fn() {
    await onRealTap(0, async ({ send, until }) => {
      send(arpRequest());
      const reply = await until("ARP reply", isArpReply);
      assert.deepEqual([...reply.header], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "zero header, num_buffers 1");
      const frame = reply.frame;
      assert.deepEqual([...frame.subarray(0, 6)], MAC, "to our MAC");
      assert.deepEqual([...frame.subarray(28, 32)], [10, 78, 0, 1], "from the namespace's address");
      assert.deepEqual([...frame.subarray(38, 42)], [10, 78, 0, 2]);
    });
  },
});

/** An ICMP echo request from 10.78.0.2 to 10.78.0.1 at `to`, its ICMP checksum left 0 (`partial`) or right. */
function echoRequest(to: Uint8Array, partial: boolean): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + 32);
  const v = new DataView(f.buffer);
  f.set(to, 0);
  f.set(MAC, 6);
  v.setUint16(12, 0x0800);
  f.set([0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 78, 0, 2, 10, 78, 0, 1], 14);
  v.setUint16(16, f.length - 14);
  v.setUint16(24, internetChecksum(f.subarray(14, 34)));
  f[34] = 8; // echo request
  v.setUint16(38, 0x4b54); // identifier
  v.setUint16(40, 1); // sequence
  for (let i = 42; i < f.length; i++) f[i] = i;
  if (!partial) v.setUint16(36, internetChecksum(f.subarray(34)));
  return f;
}

/** RFC 1071's checksum of `bytes`. */
function internetChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i] << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

Deno.test({
  name:
    "PC PCI: virtio-net on a real tap — with checksum offload the kernel takes the guest's partial checksum (NEEDS_CSUM) and answers the ping; the tap's offloads follow the driver's",
  ignore: SKIP !== undefined,
  async fn() {
    const accept = Number(
      VirtioNetFeature.CSUM | VirtioNetFeature.HOST_TSO4 | VirtioNetFeature.GUEST_CSUM |
        VirtioNetFeature.GUEST_TSO4 | VirtioNetFeature.GUEST_TSO6 | VirtioNetFeature.GUEST_ECN |
        VirtioNetFeature.MRG_RXBUF,
    );
    await onRealTap(accept, async ({ backend, send, until }) => {
      assert.equal(backend.offloads, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN, "TUNSETOFFLOAD");
      send(arpRequest());
      const arp = await until("ARP reply", isArpReply);
      const theirs = arp.frame.slice(6, 12);
      // The ICMP checksum is the kernel's to fill in: from byte 34 (csum_start), at offset 2.
      const header = new Uint8Array(12);
      header[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
      new DataView(header.buffer).setUint16(6, 34, true);
      new DataView(header.buffer).setUint16(8, 2, true);
      send(echoRequest(theirs, true), header);
      const reply = await until("echo reply", (f) => f.length >= 42 && f[23] === 1 && f[34] === 0);
      assert.deepEqual([...reply.frame.subarray(26, 30)], [10, 78, 0, 1]);
      assert.equal(new DataView(reply.frame.buffer, reply.frame.byteOffset).getUint16(38), 0x4b54);
      assert.equal(reply.header[10], 1, "num_buffers 1: it fits one buffer");
    });
  },
});
