/**
 * The fence between a Worker that kicks the VM thread's vCPU and the VM thread tearing it down,
 * used by the front-end's socket channels (`cli/qmp_channel.ts`), the snapshot timer and the taps'
 * receive Worker: one Int32 cell of a SharedArrayBuffer holding OPEN, KICKING or CLOSED. Pure Atomics: machine/ holds it so that machine/ and cli/ can both use it.
 *
 * @module
 */

const OPEN = 0;
const KICKING = 1;
const CLOSED = 2;
/** How long {@link KickFence.close} sleeps at a time while a kick is in progress. */
const CLOSE_POLL_MS = 10;

/**
 * A kick fence on cell `index` of `cells` (zero, i.e. open, in a fresh buffer). Both threads build
 * one over the same buffer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KickFence } from "./kick_fence.ts";
 * const cells = new Int32Array(new SharedArrayBuffer(8));
 * const worker = new KickFence(cells, 1);
 * let kicks = 0;
 * worker.kickUnlessClosed(() => kicks++);
 * new KickFence(cells, 1).close(); // the VM thread
 * worker.kickUnlessClosed(() => kicks++);
 * assert.equal(kicks, 1);
 * ```
 */
export class KickFence {
  readonly #cells: Int32Array;
  readonly #index: number;

  /** The fence on `cells[index]`. */
  constructor(cells: Int32Array, index: number) {
    this.#cells = cells;
    this.#index = index;
  }

  /**
   * Worker: runs `kick` unless the VM thread closed the fence. {@link close} waits for a kick in
   * progress, so once it returned no kick can touch the vCPU (whose run page is about to be
   * unmapped) again.
   */
  kickUnlessClosed(kick: () => void): void {
    if (Atomics.compareExchange(this.#cells, this.#index, OPEN, KICKING) !== OPEN) return;
    try {
      kick();
    } finally {
      Atomics.store(this.#cells, this.#index, OPEN);
      Atomics.notify(this.#cells, this.#index);
    }
  }

  /** VM thread: no more kicks after this returns (waits for one in progress). */
  close(): void {
    for (;;) {
      const state = Atomics.compareExchange(this.#cells, this.#index, OPEN, CLOSED);
      if (state !== KICKING) return;
      Atomics.wait(this.#cells, this.#index, KICKING, CLOSE_POLL_MS);
    }
  }
}
