/**
 * A guest test's own deadline for a guest that may halt for good: a kick timer on this thread makes
 * `KVM_RUN` return, and once `ms` have passed the run is stopped with an error outcome instead of
 * hanging the test.
 *
 * @module
 */

import { HostTimer } from "../kvm/host_timer.ts";
import { currentThread, handleKickSignal, KICK_SIGNAL } from "../kvm/vcpu_kicker.ts";
import type { PcMachine } from "../machine/pc/pc_machine.ts";
import type { RunOutcome } from "../machine/runner.ts";

/**
 * Runs `pc` until its guest ends the run or `ms` pass. `gaveUp` says the deadline ended it; since the
 * runner plays KVM's coalesced ring back on any wake, a run that ends only after this kick ended
 * through it, not through the runner's own wake-ups.
 */
export async function runOrGiveUp(
  pc: PcMachine,
  ms: number,
): Promise<{ outcome: RunOutcome; gaveUp: boolean }> {
  handleKickSignal();
  using timer = HostTimer.create({ signal: KICK_SIGNAL, tid: currentThread().tid, repeatNs: 1e9 });
  timer.armAfter(ms * 1e6);
  const started = Date.now();
  let gaveUp = false;
  const onKick = () => {
    if (Date.now() - started < ms) return;
    gaveUp = true;
    pc.stop({
      kind: "error",
      reason: `the guest did not end the run within ${ms} ms`,
      registers: pc.registers(0),
    });
  };
  const outcome = await pc.runAsync({ onKick });
  return { outcome, gaveUp };
}
