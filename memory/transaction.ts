/**
 * Memory transactions: nested begin/commit around every change of the region graph.
 *
 * As in QEMU (`memory_region_transaction_begin/commit` in `system/memory.c`), there is one
 * transaction depth for the whole process. Every mutator of a region wraps itself in
 * begin/commit, and only the outermost commit does work: if something visible changed, every
 * address space re-renders its flat view and its listeners receive the differences.
 *
 * @module
 */

import { show } from "./_check.ts";
import { flushCoalescedMmio } from "./coalesced_mmio.ts";

/**
 * What the outermost commit calls when an update is pending (installed by `address_space.ts`):
 * `regions` true re-renders the flat views (and brings the ioeventfds up to date with them); false
 * updates only the address spaces' ioeventfds, as QEMU's commit does when just an eventfd changed.
 */
type RebuildHook = (regions: boolean) => void;

let depth = 0;
let updatePending = false;
let ioeventfdPending = false;
let rebuild: RebuildHook = () => {};

/** Installs the function that re-renders every address space. Internal to `memory/`. */
export function _setRebuildHook(hook: RebuildHook): void {
  rebuild = hook;
}

/** Records that the next outermost commit must re-render. Internal to `memory/`. */
export function _markUpdatePending(): void {
  updatePending = true;
}

/**
 * Records that the next outermost commit must bring the address spaces' ioeventfds up to date
 * (QEMU's `ioeventfd_update_pending`). Internal to `memory/`.
 */
export function _markIoeventfdsPending(): void {
  ioeventfdPending = true;
}

/** Current nesting depth (0 outside any transaction). */
export function transactionDepth(): number {
  return depth;
}

/**
 * Opens a transaction; changes made until the matching {@link commitTransaction} are rendered once.
 * Coalesced writes still queued are played back first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { beginTransaction, commitTransaction, transactionDepth } from "./transaction.ts";
 * beginTransaction();
 * assert.equal(transactionDepth(), 1);
 * commitTransaction();
 * ```
 */
export function beginTransaction(): void {
  // As QEMU: writes an accelerator queued are played back before the graph changes.
  flushCoalescedMmio();
  depth++;
}

/**
 * Closes a transaction. The outermost commit re-renders the flat views if anything visible changed
 * and delivers the differences to the listeners. A listener that throws does not stop the others:
 * every address space is still brought up to date, and the first error is re-thrown afterwards.
 *
 * @throws {Error} if no transaction is open.
 * @throws The first error a listener threw during the rebuild, after every address space is updated.
 */
export function commitTransaction(): void {
  if (depth === 0) throw new Error("commitTransaction: no transaction is open");
  depth--;
  // A listener that edits regions while a rebuild runs gets its change rendered by one more
  // rebuild afterwards, never by a nested one — even if a listener threw in the first rebuild.
  let failed = false;
  let error: unknown;
  while (depth === 0 && (updatePending || ioeventfdPending)) {
    const regions = updatePending;
    updatePending = false;
    ioeventfdPending = false;
    depth++;
    try {
      rebuild(regions);
    } catch (e) {
      if (!failed) [failed, error] = [true, e];
    } finally {
      depth--;
    }
  }
  if (failed) throw error;
}

/**
 * Runs `fn` inside a transaction and commits even when `fn` throws (then `fn`'s error wins).
 *
 * @throws {TypeError} if `fn` is not a function.
 * @throws Whatever `fn` throws (the transaction is committed first), else what {@link commitTransaction}
 * throws.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, transaction } from "../mod.ts";
 * const system = MemoryRegion.container("system", 1n << 32n);
 * using as = new AddressSpace(system, "memory");
 * let rebuilds = 0;
 * as.registerListener({ begin: () => void rebuilds++ });
 * rebuilds = 0; // registering replays the view once
 * transaction(() => {
 *   system.addSubregion(0, MemoryRegion.ram("a", 0x1000));
 *   system.addSubregion(0x1000, MemoryRegion.ram("b", 0x1000));
 * });
 * assert.equal(rebuilds, 1); // one re-render for both
 * ```
 */
export function transaction<T>(fn: () => T): T {
  if (typeof fn !== "function") throw new TypeError(`transaction: expected a function, got ${show(fn)}`);
  beginTransaction();
  let result: T;
  try {
    result = fn();
  } catch (error) {
    try {
      commitTransaction();
    } catch {
      // fn's error is the one the caller needs to see
    }
    throw error;
  }
  commitTransaction();
  return result;
}
