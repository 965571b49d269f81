/**
 * The VM thread's side of `-gdb`: starts the socket Worker ({@link ./gdb_worker.ts}), and gives the
 * stub what the client sent ({@link GdbServer.take}) and the client what the stub says
 * ({@link GdbServer.send}).
 *
 * @module
 */

import { ListenError } from "./listen_error.ts";
import { ChannelServer, ChannelWorker } from "./channel_worker.ts";
import type { GdbWorkerMessage, GdbWorkerReport } from "./gdb_worker.ts";

/** The `-gdb` port could not be opened: the message is the one line to print. */
export class GdbListenError extends ListenError {}

/** What the client did since the last look. */
export type GdbClientNews =
  | { kind: "connected" }
  | { kind: "disconnected" }
  | { kind: "bytes"; bytes: Uint8Array };

/** A listening `-gdb` socket and its Worker. */
export class GdbServer extends ChannelServer<GdbWorkerMessage> {
  readonly #port: number;

  private constructor(worker: ChannelWorker<GdbWorkerMessage>, port: number) {
    super(worker);
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

  /** VM thread: what the client did, one piece at a time; null when nothing is waiting. */
  take(): GdbClientNews | null {
    const text = this.takePosted();
    if (text === null) return null;
    if (text === "C") return { kind: "connected" };
    if (text === "D") return { kind: "disconnected" };
    const bytes = new Uint8Array(text.length - 1);
    for (let i = 1; i < text.length; i++) bytes[i - 1] = text.charCodeAt(i);
    return { kind: "bytes", bytes };
  }

  /** Bytes for the client. */
  send(bytes: Uint8Array): void {
    this.post({ kind: "send", bytes: bytes.slice() });
  }
}
