/**
 * virtio-net-pci on the board against a real tap: needs root, /dev/net/tun and iproute2's `ip`,
 * and skips (saying why) without them. The tap lives in a private network namespace, so nothing of
 * the host's networking is touched. No KVM: the test is the driver, through the board's BARs.
 */
import assert from "node:assert/strict";
import { Tap } from "../../kvm/mod.ts";
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

Deno.test({
  name:
    "PC PCI: virtio-net on a real tap — the guest's ARP request is answered by the namespace, the reply lands in the guest's buffer",
  ignore: SKIP !== undefined,
  async fn() {
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
      const d = netDriver(b, 2);
      for (let i = 0; i < 8; i++) d.post(0x40_0000 + i * 0x1000);
      // The receive Worker rings a doorbell when the tap is readable; the test is the VM thread.
      const bell = new Int32Array(new SharedArrayBuffer(8));
      using poller = NetRxPoller.start({
        fds: [tap.fd],
        doorbell: { buffer: bell.buffer as SharedArrayBuffer, index: 0, waitingIndex: 1, eventfd: -1 },
      });
      backend.onDrained = () => poller.resume();
      d.send(arpRequest());
      assert.equal(d.usedIdx(1), 1, "transmitted");
      const deadline = Date.now() + 5000;
      let reply: Uint8Array | undefined;
      let seen = 0;
      while (reply === undefined) {
        assert.ok(Date.now() < deadline, "no ARP reply within 5 s");
        const rung = Atomics.load(bell, 0);
        if (poller.signalled) backend.pump();
        for (; seen < d.usedIdx(0); seen++) {
          const len = d.usedLen(0, seen);
          const got = new Uint8Array(len);
          b.memory.rw(0x40_0000 + (seen % 8) * 0x1000, got, false);
          const frame = got.subarray(12);
          if (frame.length >= 42 && frame[12] === 0x08 && frame[13] === 0x06 && frame[21] === 2) reply = got;
          d.post(0x40_0000 + (seen % 8) * 0x1000); // recycle the buffer
        }
        if (reply === undefined) {
          await new Promise((r) => setTimeout(r, Atomics.load(bell, 0) === rung ? 5 : 0));
        }
      }
      assert.deepEqual(
        [...reply.subarray(0, 12)],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        "zero header, num_buffers 1",
      );
      const frame = reply.subarray(12);
      assert.deepEqual([...frame.subarray(0, 6)], MAC, "to our MAC");
      assert.deepEqual([...frame.subarray(28, 32)], [10, 78, 0, 1], "from the namespace's address");
      assert.deepEqual([...frame.subarray(38, 42)], [10, 78, 0, 2]);
    } finally {
      ip("netns", "del", namespace);
    }
  },
});
