/**
 * What the QMP Worker and the VM thread share. The VM thread spends its time inside `KVM_RUN` (or
 * asleep on the SMP doorbell, or in the stopped loop), where it cannot receive `postMessage`; so
 * the Worker hands it one command at a time through a SharedArrayBuffer and kicks it, and it
 * answers with `postMessage` (which a blocked sender can still send).
 *
 * @module
 */

import { KickFence } from "../machine/kick_fence.ts";

export { vmWaker, type VmWakeTarget } from "../kvm/doorbell.ts";

// Int32 cells at the start of the buffer.
const STATE = 0; // EMPTY or POSTED
const LENGTH = 1;
const NEWS = 2; // bumped with every post: the stopped loop sleeps on it
const KICK_STATE = 3; // the KickFence
const CELLS = 4;
const DATA_START = CELLS * 4;
/** The largest command text (ASCII JSON) the channel carries. */
export const QMP_CHANNEL_DATA_SIZE = 2 << 20;

const EMPTY = 0;
const POSTED = 1;

/**
 * A one-slot mailbox from the Worker (poster) to the VM thread (taker). The gdb stub's Worker uses
 * it too, for the client's bytes (as a string of char codes 0–255).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QmpChannel } from "./qmp_channel.ts";
 * const vm = new QmpChannel();
 * const worker = new QmpChannel(vm.buffer);
 * assert.ok(worker.post('{"name": "stop"}'));
 * assert.equal(worker.post('{"name": "cont"}'), false); // not taken yet: nothing is overwritten
 * assert.equal(vm.take(), '{"name": "stop"}');
 * assert.equal(vm.take(), null);
 * ```
 */
export class QmpChannel {
  /** The shared memory; post it to the Worker. */
  readonly buffer: SharedArrayBuffer;
  readonly #cells: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #fence: KickFence;

  constructor(buffer = new SharedArrayBuffer(DATA_START + QMP_CHANNEL_DATA_SIZE)) {
    this.buffer = buffer;
    this.#cells = new Int32Array(buffer, 0, CELLS);
    this.#bytes = new Uint8Array(buffer, DATA_START);
    this.#fence = new KickFence(this.#cells, KICK_STATE);
  }

  /**
   * Worker: posts a command's text; false when the slot still holds the last one (the VM thread
   * has not taken it: nothing is overwritten) or the text does not fit.
   */
  post(text: string): boolean {
    if (Atomics.load(this.#cells, STATE) === POSTED) return false;
    const { written, read } = new TextEncoder().encodeInto(text, this.#bytes);
    if (read !== text.length) return false;
    Atomics.store(this.#cells, LENGTH, written);
    Atomics.store(this.#cells, STATE, POSTED);
    Atomics.add(this.#cells, NEWS, 1);
    Atomics.notify(this.#cells, NEWS);
    return true;
  }

  /** VM thread: the posted command, which empties the slot; null when there is none. */
  take(): string | null {
    if (Atomics.load(this.#cells, STATE) !== POSTED) return null;
    const length = Atomics.load(this.#cells, LENGTH);
    const text = new TextDecoder().decode(this.#bytes.slice(0, length));
    Atomics.store(this.#cells, STATE, EMPTY);
    Atomics.notify(this.#cells, STATE);
    return text;
  }

  /** Worker: settles once the slot is empty (the VM thread took what was posted), or after `timeoutMs`. */
  async waitEmptyAsync(timeoutMs: number): Promise<void> {
    if (Atomics.load(this.#cells, STATE) !== POSTED) return;
    const result = Atomics.waitAsync(this.#cells, STATE, POSTED, timeoutMs);
    if (result.async) await result.value;
  }

  /** VM thread: sleeps until a post (or `timeoutMs`); returns at once if one is waiting. */
  wait(timeoutMs: number): void {
    const seen = Atomics.load(this.#cells, NEWS);
    if (Atomics.load(this.#cells, STATE) === POSTED) return;
    Atomics.wait(this.#cells, NEWS, seen, timeoutMs);
  }

  /** The same without blocking the thread (for a VM side on an event loop: tests). */
  async waitAsync(timeoutMs: number): Promise<void> {
    const seen = Atomics.load(this.#cells, NEWS);
    if (Atomics.load(this.#cells, STATE) === POSTED) return;
    const result = Atomics.waitAsync(this.#cells, NEWS, seen, timeoutMs);
    if (result.async) await result.value;
  }

  /** Worker: runs `kick` unless the VM thread closed the channel (see {@link KickFence}). */
  kickUnlessClosed(kick: () => void): void {
    this.#fence.kickUnlessClosed(kick);
  }

  /** VM thread: no more kicks after this returns (waits for one in progress). */
  close(): void {
    this.#fence.close();
  }
}
