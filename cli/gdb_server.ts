/**
 * The VM thread's side of `-gdb`: starts the socket Worker ({@link ./gdb_worker.ts}), and gives the
 * stub what the client sent ({@link GdbServer.take}) and the client what the stub says
 * ({@link GdbServer.send}).
 *
 * @module
 */

import { ListenError } from "./listen_error.ts";
import { type ChannelWakeTarget, ChannelWorker } from "./channel_worker.ts";
import type { GdbWorkerMessage, GdbWorkerReport } from "./gdb_worker.ts";

/** The `-gdb` port could not be opened: the message is the one line to print. */
export class GdbListenError extends ListenError {}

/** What the client did since the last look. */
export type GdbClientNews =
  | { kind: "connected" }
  | { kind: "disconnected" }
  | { kind: "bytes"; bytes: Uint8Array };

/** A listening `-gdb` socket and its Worker. */
export class GdbServer {
  readonly #worker: ChannelWorker<GdbWorkerMessage>;
  readonly #port: number;

  private constructor(worker: ChannelWorker<GdbWorkerMessage>, port: number) {
    this.#worker = worker;
    this.#port = port;
  }

  /** The port it listens on. */
  get port(): number {
    return this.#port;
  }

  /**
   * Listens on `hostname:port` (port 0: any free one, see {@link port}).
   *
   * @throws {GdbListenError} with QEMU's words when the port cannot be bound.
   */
  static async start(hostname: string, port: number): Promise<GdbServer> {
    const { worker, listening } = await ChannelWorker.start<GdbWorkerMessage, GdbWorkerReport>(
      new URL("./gdb_worker.ts", import.meta.url),
      (channel) => ({ kind: "listen", hostname, port, channel }),
      (failure) =>
        new GdbListenError(`-gdb tcp:${hostname}:${port}: Failed to bind socket: ${failure.message}`),
    );
    return new GdbServer(worker, listening.port);
  }

  /** Tells the Worker how to wake the VM thread. */
  attach(target: ChannelWakeTarget): void {
    this.#worker.attach(target);
  }

  /** VM thread: what the client did, one piece at a time; null when nothing is waiting. */
  take(): GdbClientNews | null {
    const text = this.#worker.channel.take();
    if (text === null) return null;
    if (text === "C") return { kind: "connected" };
    if (text === "D") return { kind: "disconnected" };
    const bytes = new Uint8Array(text.length - 1);
    for (let i = 1; i < text.length; i++) bytes[i - 1] = text.charCodeAt(i);
    return { kind: "bytes", bytes };
  }

  /** VM thread: sleeps until the client sends something (or `timeoutMs`). */
  wait(timeoutMs: number): void {
    this.#worker.wait(timeoutMs);
  }

  /** Bytes for the client. */
  send(bytes: Uint8Array): void {
    this.#worker.send({ kind: "send", bytes: bytes.slice() });
  }

  /** VM thread: no kick from the Worker reaches a vCPU after this returns (call before unmapping). */
  fenceKicks(): void {
    this.#worker.fenceKicks();
  }

  /** Closes the socket and the Worker. Idempotent. */
  close(): Promise<void> {
    return this.#worker.close();
  }
}
