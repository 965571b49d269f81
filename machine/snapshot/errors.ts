/**
 * The errors of snapshots that are not about the state file's bytes.
 *
 * @module
 */

/**
 * A snapshot that cannot be used as asked: a restore whose flags contradict it (another `-m`,
 * `-smp` or set of devices), a missing base or disk, a diff with nothing to build on. One line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SnapshotMismatchError } from "./errors.ts";
 * assert.equal(new SnapshotMismatchError("x").name, "SnapshotMismatchError");
 * ```
 */
export class SnapshotMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SnapshotMismatchError";
  }
}
