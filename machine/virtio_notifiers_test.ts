import assert from "node:assert/strict";
import type { IoeventfdSection } from "../memory/mod.ts";
import { PcBoard } from "./pc/pc_board.ts";
import { cfg } from "./pc/_pci_test_util.ts";
import { VirtioNotifiers } from "./virtio_notifiers.ts";
import { fdTarget, signalEventfd } from "../kvm/_testing.ts";

async function board() {
  return await PcBoard.create({
    ramSize: 256n << 20n,
    pciDevices: [
      { type: "virtio-rng-pci", entropy: (b) => b.fill(7), ioeventfd: true },
      { type: "virtio-rng-pci", entropy: (b) => b.fill(7) },
    ],
  });
}

Deno.test("notify eventfds: one per queue at the queue's notify address, following BAR 4 when the guest moves it", async () => {
  using b = await board();
  const seen: IoeventfdSection[] = [];
  b.memory.registerListener({
    eventfdAdd: (fd) => seen.push(fd),
    eventfdDel: (fd) =>
      seen.splice(seen.findIndex((s) => s.eventfd === fd.eventfd && s.start === fd.start), 1),
  });
  const [rng] = b.pciDevices.map((d) => d.fn);
  using notifiers = VirtioNotifiers.create([rng]);
  assert.equal(notifiers.count, 1); // virtio-rng has one queue
  assert.deepEqual(seen.map((s) => [s.start, s.size, s.matchData]), [[rng.notifyAddress(0), 2, false]]);
  // The guest turns memory decoding off, moves BAR 4 (64-bit, at 0x20), and turns it on again.
  const c = cfg(b, 2);
  c.write(0x04, 0x0000, 2);
  assert.equal(seen.length, 0);
  c.write(0x20, 0xfd00_000c, 4);
  c.write(0x24, 0, 4);
  c.write(0x04, 0x0002, 2);
  assert.equal(rng.notifyAddress(0), 0xfd00_3000n);
  assert.deepEqual(seen.map((s) => s.start), [0xfd00_3000n]);
});

Deno.test("notify eventfds: serve() notifies exactly the signalled queues; close() removes and closes them", async () => {
  using b = await board();
  const [rng] = b.pciDevices.map((d) => d.fn);
  const notified: number[] = [];
  const original = rng.device.notifyQueue.bind(rng.device);
  rng.device.notifyQueue = (q: number) => {
    notified.push(q);
    original(q);
  };
  const notifiers = VirtioNotifiers.create([rng]);
  const [fd] = notifiers.fds;
  assert.equal(notifiers.serve(), 0);
  assert.equal(fdTarget(fd), "anon_inode:[eventfd]");
  signalEventfd(fd); // what KVM does when the guest writes the notify address, twice before we look
  signalEventfd(fd);
  assert.equal(notifiers.serve(), 1);
  assert.deepEqual(notified, [0]);
  assert.equal(notifiers.serve(), 0); // the counter was taken
  notifiers.close();
  assert.equal(rng.notifyRegion.ioeventfds.length, 0);
  assert.notEqual(fdTarget(fd), "anon_inode:[eventfd]");
});
