import assert from "node:assert/strict";
import fc from "fast-check";
import type { RingerInit } from "./_doorbell_ringer_worker.ts";
import { DoorbellWait, ringDoorbell } from "./doorbell.ts";
import { EventFd } from "./event_fd.ts";
import { PollSet } from "./poll.ts";

/** Far longer than any ring takes to arrive: a wait that lasts this long missed one. */
const LOST_WAKE_MS = 30_000;

Deno.test("ringDoorbell writes the eventfd only while the owner says it waits", () => {
  using event = new EventFd();
  const cells = new Int32Array(new SharedArrayBuffer(8));
  ringDoorbell(cells, 0, 1, event.fd);
  assert.equal(event.read(), 0n);
  Atomics.store(cells, 1, 1);
  ringDoorbell(cells, 0, 1, event.fd);
  ringDoorbell(cells, 0, 1, event.fd);
  assert.equal(event.read(), 2n);
  assert.equal(cells[0], 3);
});

Deno.test("DoorbellWait: the caller's readable fds are reported even while the counter moves", () => {
  using owner = new DoorbellWait(new SharedArrayBuffer(8), 0, 1);
  using notify = new EventFd();
  const poll = new PollSet(2);
  poll.setFd(1, notify.fd);
  const { buffer, index, waitingIndex, eventfd } = owner.doorbell;
  const seen = owner.counter;
  ringDoorbell(new Int32Array(buffer), index, waitingIndex, eventfd);
  notify.write();
  assert.equal(owner.wait(seen, poll, LOST_WAKE_MS), 1, "the notify is seen without sleeping");
  assert.equal(poll.readable(1), true);
  assert.equal(owner.timedOut, false);
  assert.equal(Atomics.load(new Int32Array(buffer), waitingIndex), 0, "not waiting any more");
  notify.read();
  // Nothing moved, nothing readable: a zero timeout is a timeout.
  assert.equal(owner.wait(owner.counter, poll, 0), 0);
  assert.equal(owner.timedOut, true);
  // A ring while the owner sleeps wakes it through the eventfd.
  ringDoorbell(new Int32Array(buffer), index, waitingIndex, eventfd); // WAITING is 0: no write
  assert.equal(owner.wait(owner.counter, poll, 0), 0, "the counter was read after the ring");
});

/** Runs Workers ringing with `pauses` each, while this thread serves and waits as SmpRunner does. */
async function ringAndServe(pauses: number[][], serveSpins: number[]): Promise<void> {
  using owner = new DoorbellWait(new SharedArrayBuffer(8), 0, 1);
  const poll = new PollSet(1);
  const url = new URL("./_doorbell_ringer_worker.ts", import.meta.url);
  const total = pauses.reduce((sum, p) => sum + p.length, 0);
  const workers = pauses.map(() => new Worker(url, { type: "module" }));
  const done = workers.map((w) => new Promise<void>((resolve) => w.onmessage = () => resolve()));
  try {
    workers.forEach((w, i) =>
      w.postMessage({ doorbell: owner.doorbell, pauses: pauses[i] } satisfies RingerInit)
    );
    let sink = 0;
    for (let round = 0; owner.counter < total; round++) {
      const seen = owner.counter;
      const spins = serveSpins[round % serveSpins.length]; // "serving" between the read and the wait
      for (let i = 0; i < spins; i++) sink += i & 1;
      owner.wait(seen, poll, LOST_WAKE_MS);
      assert.equal(owner.timedOut, false, `a ring was lost: the wait slept ${LOST_WAKE_MS} ms (${sink})`);
    }
    assert.equal(owner.counter, total);
    await Promise.all(done);
  } finally {
    for (const w of workers) w.terminate();
  }
}

Deno.test({
  name: "DoorbellWait: no ring is lost, whatever the interleaving of rings, serving and waits",
  sanitizeResources: false, // Workers' message ports close after the test's last tick
  async fn() {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.nat(20_000), { minLength: 1, maxLength: 300 }), { minLength: 1, maxLength: 2 }),
        fc.array(fc.nat(20_000), { minLength: 1, maxLength: 20 }),
        ringAndServe,
      ),
      { numRuns: 8 },
    );
  },
});
