import assert from "node:assert/strict";
import { EventFd } from "../kvm/mod.ts";
import { NetRxPoller } from "./net_rx.ts";

Deno.test("NetRxPoller: a readable fd rings the doorbell once, and again only after resume", async () => {
  using event = new EventFd();
  const bell = new Int32Array(new SharedArrayBuffer(8));
  const poller = NetRxPoller.start({
    fds: [event.fd],
    doorbell: { buffer: bell.buffer as SharedArrayBuffer, index: 1, waitingIndex: 0, eventfd: -1 },
  });
  try {
    // A hang guard, not a speed check: the Worker's start alone took seconds on a loaded machine.
    const rung = async (from: number) => {
      const deadline = Date.now() + 30_000;
      while (Atomics.load(bell, 1) === from) {
        assert.ok(Date.now() < deadline, "no doorbell within 30 s");
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(Atomics.load(bell, 1), 0, "nothing readable: no ring");
    event.write();
    await rung(0);
    assert.equal(poller.signalled, true);
    await new Promise((r) => setTimeout(r, 250)); // still readable, but the Worker waits for resume
    assert.equal(Atomics.load(bell, 1), 1);
    event.read(); // the VM thread drained it
    poller.resume();
    assert.equal(poller.signalled, false);
    event.write();
    await rung(1);
    assert.equal(Atomics.load(bell, 1), 2);
  } finally {
    poller.close();
    poller.close();
  }
  assert.throws(() => NetRxPoller.start({ fds: [] }), TypeError);
});
