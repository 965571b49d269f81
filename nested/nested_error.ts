/**
 * The nested VM's one error class, apart from the VM's code so that the front-end can name it
 * without loading that code on runs that never go to the nested VM.
 *
 * @module
 */

/** The nested VM cannot be started or did not run its command: one line that says why. */
export class NestedError extends Error {
  /** Where the VM's console log is, when there is one. */
  readonly log?: string;
  /** The signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), if one did. */
  readonly signal?: Deno.Signal;
  /** The VM froze (its kernel gave no sign of life) and was killed. */
  readonly frozen: boolean;
  constructor(message: string, log?: string, signal?: Deno.Signal, frozen = false) {
    super(log ? `${message} (console log: ${log})` : message);
    this.name = "NestedError";
    this.log = log;
    this.signal = signal;
    this.frozen = frozen;
  }
}

/**
 * The line a front-end prints when the freeze guard woke the VM (`NestedOptions.onWake`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { wokeLine } from "./nested_error.ts";
 * assert.equal(
 *   wokeLine(301),
 *   "nested VM: no sign of life from its kernel for 301 s; a keyboard interrupt and an NMI woke it",
 * );
 * ```
 */
export function wokeLine(quietSeconds: number): string {
  return `nested VM: no sign of life from its kernel for ${quietSeconds} s; a keyboard interrupt and an NMI woke it`;
}
