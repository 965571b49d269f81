/**
 * What the stdin Worker and the VM thread share. The VM thread spends its time blocked inside
 * `KVM_RUN`, where it cannot receive `postMessage`; so input bytes, monitor commands and the quit
 * request travel through a SharedArrayBuffer, and the Worker kicks the vCPU to have them looked at.
 *
 * @module
 */

import { KickFence } from "../machine/kick_fence.ts";

const RING_SIZE = 4096;
const COMMAND_SIZE = 1024;
// Int32 cells at the start of the buffer.
const HEAD = 0; // next byte to read (VM thread)
const TAIL = 1; // next byte to write (Worker)
const COMMAND_STATE = 2; // 0 empty, 1 posted, 2 done
const COMMAND_LENGTH = 3;
const QUIT = 4; // 0, QUIT_BY_USER, or minus a signal's number
const QUIT_BY_USER = 1;
const KICK_STATE = 5; // the KickFence
const CELLS = 8;
const RING_START = CELLS * 4;
const COMMAND_START = RING_START + RING_SIZE;

const EMPTY = 0;
const POSTED = 1;
const DONE = 2;

/**
 * A single-producer (Worker) single-consumer (VM thread) channel over one SharedArrayBuffer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConsoleChannel } from "./console_channel.ts";
 * const vmSide = new ConsoleChannel();
 * const workerSide = new ConsoleChannel(vmSide.buffer); // posted to the Worker
 * workerSide.pushInput(new TextEncoder().encode("ls\r"));
 * assert.equal(new TextDecoder().decode(vmSide.takeInput()), "ls\r");
 * ```
 */
export class ConsoleChannel {
  /** The shared memory; post it to the Worker. */
  readonly buffer: SharedArrayBuffer;
  readonly #cells: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #fence: KickFence;

  constructor(buffer = new SharedArrayBuffer(COMMAND_START + COMMAND_SIZE)) {
    this.buffer = buffer;
    this.#cells = new Int32Array(buffer, 0, CELLS);
    this.#bytes = new Uint8Array(buffer);
    this.#fence = new KickFence(this.#cells, KICK_STATE);
  }

  /** Worker: queues input bytes; returns how many fit (the rest is dropped, as a UART would). */
  pushInput(data: Uint8Array): number {
    const head = Atomics.load(this.#cells, HEAD);
    let tail = Atomics.load(this.#cells, TAIL);
    let n = 0;
    for (const byte of data) {
      const next = (tail + 1) % RING_SIZE;
      if (next === head) break;
      this.#bytes[RING_START + tail] = byte;
      tail = next;
      n++;
    }
    Atomics.store(this.#cells, TAIL, tail);
    return n;
  }

  /** VM thread: takes every queued input byte (empty when none). */
  takeInput(): Uint8Array {
    let head = Atomics.load(this.#cells, HEAD);
    const tail = Atomics.load(this.#cells, TAIL);
    if (head === tail) return new Uint8Array(0);
    const out: number[] = [];
    while (head !== tail) {
      out.push(this.#bytes[RING_START + head]);
      head = (head + 1) % RING_SIZE;
    }
    Atomics.store(this.#cells, HEAD, head);
    return Uint8Array.from(out);
  }

  /** Worker: posts a monitor command line (the caller then kicks the vCPU and waits). */
  postCommand(line: string): void {
    const encoded = new TextEncoder().encode(line).subarray(0, COMMAND_SIZE);
    this.#bytes.set(encoded, COMMAND_START);
    Atomics.store(this.#cells, COMMAND_LENGTH, encoded.length);
    Atomics.store(this.#cells, COMMAND_STATE, POSTED);
  }

  /** Worker: waits until the VM thread has run the posted command (or `timeoutMs` passes). */
  waitCommandDone(timeoutMs: number): boolean {
    const result = Atomics.wait(this.#cells, COMMAND_STATE, POSTED, timeoutMs);
    const done = Atomics.load(this.#cells, COMMAND_STATE) === DONE;
    if (done) Atomics.store(this.#cells, COMMAND_STATE, EMPTY);
    return done || result !== "timed-out";
  }

  /** VM thread: the posted command, if any. */
  takeCommand(): string | null {
    if (Atomics.load(this.#cells, COMMAND_STATE) !== POSTED) return null;
    const length = Atomics.load(this.#cells, COMMAND_LENGTH);
    return new TextDecoder().decode(this.#bytes.slice(COMMAND_START, COMMAND_START + length));
  }

  /** VM thread: marks the posted command done and wakes the Worker. */
  completeCommand(): void {
    Atomics.store(this.#cells, COMMAND_STATE, DONE);
    Atomics.notify(this.#cells, COMMAND_STATE);
  }

  /** Worker: runs `kick` unless the VM thread closed the channel (see {@link KickFence}). */
  kickUnlessClosed(kick: () => void): void {
    this.#fence.kickUnlessClosed(kick);
  }

  /** VM thread: no more kicks after this returns (waits for one in progress). */
  close(): void {
    this.#fence.close();
  }

  /**
   * Worker: asks the VM thread to end the run — from the user (Ctrl-A x, the monitor's `quit`), or
   * because the process got `signal` (its number: SIGTERM 15, SIGHUP 1, SIGINT 2). The first wins.
   */
  requestQuit(signal?: number): void {
    Atomics.compareExchange(this.#cells, QUIT, 0, signal === undefined ? QUIT_BY_USER : -signal);
  }

  /** VM thread: whether a quit was asked for. */
  get quitRequested(): boolean {
    return Atomics.load(this.#cells, QUIT) !== 0;
  }

  /** VM thread: the number of the signal that asked for the quit, or null (none, or the user). */
  get quitSignal(): number | null {
    const quit = Atomics.load(this.#cells, QUIT);
    return quit < 0 ? -quit : null;
  }
}
