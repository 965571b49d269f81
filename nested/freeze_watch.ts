/**
 * The freeze guards' decision, apart from how they read a sign of life: `runNested` watches the file
 * the VM's init touches, the test runner its driver's heartbeat. Given the newest sign of life, a
 * guard waits; or, once a kernel that ran has been quiet too long, tries to wake it
 * (`wakeNestedVm`: a lost timer interrupt leaves an idling kernel halted until any interrupt) and
 * gives it a grace period; or kills it.
 *
 * @module
 */

/** What a guard does after {@link FreezeWatch.step}. */
export type FreezeStep =
  | { kind: "alive" }
  /** The sign of life came back after a wake-up the monitor took: report it. */
  | { kind: "woke"; quietSeconds: number }
  /** Send the wake-up now, then report whether the monitor took it ({@link FreezeWatch.answered}). */
  | { kind: "wake"; quietSeconds: number }
  /** A wake-up was sent: its grace period runs. */
  | { kind: "wait" }
  /** Kill the VM. `started`: it had given a sign of life; `triedWake`: the monitor took a wake-up. */
  | { kind: "kill"; quietSeconds: number; started: boolean; triedWake: boolean };

/** The limits of one guard, in seconds. */
export interface FreezeLimits {
  /** Quiet allowed once the VM gave a sign of life. */
  quiet: number;
  /** Quiet allowed from the start before the first sign of life. */
  boot: number;
  /** How long a woken VM gets to give a sign of life again. */
  grace: number;
  /** Whether a wake-up can be sent at all (the VM has a monitor). */
  canWake: boolean;
}

/**
 * One guard's state: the last sign of life seen (kept when a later read finds none) and the
 * wake-up in flight.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FreezeWatch } from "./freeze_watch.ts";
 * const watch = new FreezeWatch({ quiet: 10, boot: 60, grace: 5, canWake: true }, 0);
 * assert.deepEqual(watch.step(1_000, 5_000), { kind: "alive" });
 * assert.deepEqual(watch.step(1_000, 11_000), { kind: "wake", quietSeconds: 10 });
 * watch.answered(true);
 * assert.deepEqual(watch.step(1_000, 13_000), { kind: "wait" });
 * assert.deepEqual(watch.step(14_000, 15_000), { kind: "woke", quietSeconds: 10 });
 * ```
 */
export class FreezeWatch {
  #beat: number | undefined;
  #woken: { at: number; quietSeconds: number; answered?: boolean } | undefined;

  /** A guard with `limits`, for a VM started at `startedMs`. */
  constructor(readonly limits: FreezeLimits, readonly startedMs: number) {}

  /** The decision at `nowMs`, given the newest sign of life read (undefined: none could be read). */
  step(beatMs: number | undefined, nowMs: number): FreezeStep {
    if (beatMs !== undefined) this.#beat = beatMs;
    const beat = this.#beat;
    const woken = this.#woken;
    if (woken !== undefined && beat !== undefined && beat > woken.at) {
      this.#woken = undefined; // a VM that was only slow, with a monitor that did not answer, is no wake
      if (woken.answered) return { kind: "woke", quietSeconds: woken.quietSeconds };
    }
    const quietSeconds = Math.round((nowMs - (beat ?? this.startedMs)) / 1000);
    const limit = beat === undefined ? this.limits.boot : this.limits.quiet;
    if (quietSeconds < limit) return { kind: "alive" };
    if (this.#woken === undefined && beat !== undefined && this.limits.canWake) {
      this.#woken = { at: nowMs, quietSeconds };
      return { kind: "wake", quietSeconds };
    }
    if (this.#woken !== undefined && (nowMs - this.#woken.at) / 1000 < this.limits.grace) {
      return { kind: "wait" };
    }
    return {
      kind: "kill",
      quietSeconds,
      started: beat !== undefined,
      triedWake: this.#woken?.answered === true,
    };
  }

  /** Whether the monitor took the wake-up {@link step} asked for. */
  answered(answered: boolean): void {
    if (this.#woken) this.#woken.answered = answered;
  }
}
