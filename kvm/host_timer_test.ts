import assert from "node:assert/strict";
import { HostTimer } from "./host_timer.ts";
import { SignalRelay } from "./signal_relay.ts";
import { currentThread } from "./vcpu_kicker.ts";

/** `SIGALRM`: counted by a relay here, so it cannot end the test process. */
const SIGALRM = 14;

/** Spins until `relay` counted `n` SIGALRMs, or 2 s pass; returns the count. */
function waitForCount(relay: SignalRelay, n: number): number {
  const end = performance.now() + 2000;
  while (relay.count(SIGALRM) < n && performance.now() < end) {
    // the signal is handled on this thread, between two instructions of this loop
  }
  return relay.count(SIGALRM);
}

Deno.test({
  name: "HostTimer signals the thread once after its delay, again every repeat period, and not when disarmed",
  permissions: { ffi: true },
  fn() {
    using relay = SignalRelay.install([SIGALRM]);
    const start = relay.count(SIGALRM);
    using timer = HostTimer.create({ signal: SIGALRM, tid: currentThread().tid, repeatNs: 1_000_000 });
    assert.equal(relay.count(SIGALRM), start, "nothing before it is armed");
    timer.armAfter(2_000_000);
    assert.ok(waitForCount(relay, start + 1) >= start + 1, "it fires");
    assert.ok(waitForCount(relay, start + 3) >= start + 3, "it repeats until disarmed");
    timer.disarm();
    const stopped = relay.count(SIGALRM);
    const end = performance.now() + 20;
    while (performance.now() < end) {
      // 20 ms: at 1 ms a period, a timer still armed would have fired here
    }
    assert.ok(relay.count(SIGALRM) <= stopped + 1, "at most one signal already on its way");
  },
});

Deno.test({
  name: "HostTimer refuses a repeat period that is not positive, and is closed once",
  permissions: { ffi: true },
  fn() {
    assert.throws(
      () => HostTimer.create({ signal: SIGALRM, tid: currentThread().tid, repeatNs: 0 }),
      /repeat/,
    );
    const timer = HostTimer.create({ signal: SIGALRM, tid: currentThread().tid });
    timer.close();
    timer.close();
    assert.throws(() => timer.armAfter(1), /closed/);
  },
});
