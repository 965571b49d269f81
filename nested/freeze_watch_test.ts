import assert from "node:assert/strict";
import { FreezeWatch } from "./freeze_watch.ts";

const S = 1000;
const limits = { quiet: 10, boot: 60, grace: 5, canWake: true };
/** The kill step a guard should give. */
const kill = (quietSeconds: number, started: boolean, triedWake: boolean) => ({
  kind: "kill",
  quietSeconds,
  started,
  triedWake,
});

Deno.test("FreezeWatch: a VM that never gives a sign of life is killed at the boot limit, without a wake-up", () => {
  const watch = new FreezeWatch(limits, 0);
  assert.deepEqual(watch.step(undefined, 59 * S), { kind: "alive" });
  assert.deepEqual(watch.step(undefined, 60 * S), kill(60, false, false));
});

Deno.test("FreezeWatch: a quiet kernel gets one wake-up, then the grace, then the kill naming it", () => {
  const watch = new FreezeWatch(limits, 0);
  assert.deepEqual(watch.step(2 * S, 11 * S), { kind: "alive" });
  assert.deepEqual(watch.step(undefined, 12 * S), { kind: "wake", quietSeconds: 10 }); // the last beat is kept
  watch.answered(true);
  assert.deepEqual(watch.step(2 * S, 16 * S), { kind: "wait" });
  assert.deepEqual(watch.step(2 * S, 17 * S), kill(15, true, true));
});

Deno.test("FreezeWatch: a sign of life after the wake-up is a wake only when the monitor took it", () => {
  const taken = new FreezeWatch(limits, 0);
  assert.equal(taken.step(0, 10 * S).kind, "wake");
  taken.answered(true);
  assert.deepEqual(taken.step(12 * S, 13 * S), { kind: "woke", quietSeconds: 10 });
  assert.deepEqual(taken.step(12 * S, 14 * S), { kind: "alive" });
  // The next freeze gets a wake-up of its own.
  assert.deepEqual(taken.step(12 * S, 22 * S), { kind: "wake", quietSeconds: 10 });

  const unanswered = new FreezeWatch(limits, 0);
  assert.equal(unanswered.step(0, 10 * S).kind, "wake");
  unanswered.answered(false);
  assert.deepEqual(unanswered.step(12 * S, 13 * S), { kind: "alive" }); // only slow: no wake reported
  assert.equal(unanswered.step(12 * S, 22 * S).kind, "wake"); // and no stale attempt skips the next one
  unanswered.answered(false);
  assert.deepEqual(unanswered.step(12 * S, 27 * S), kill(15, true, false));
});

Deno.test("FreezeWatch: without a monitor the quiet VM is killed at the limit", () => {
  const watch = new FreezeWatch({ ...limits, canWake: false }, 0);
  assert.deepEqual(watch.step(0, 10 * S), kill(10, true, false));
});
