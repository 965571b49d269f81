/**
 * The VM thread's side of `-gdb`: starts the socket Worker ({@link ./gdb_worker.ts}), and gives the
 * stub what the client sent ({@link GdbServer.take}) and the client what the stub says
 * ({@link GdbServer.send}).
 *
 * @module
 */

import { ListenError } from "./listen_error.ts";
import type { Doorbell } from "../machine/runner.ts";
import type { VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import { QmpChannel } from "./qmp_channel.ts";
import type { GdbWorkerMessage, GdbWorkerReport } from "./gdb_worker.ts";

/** The `-gdb` port could not be opened: the message is the one line to print. */
export class GdbListenError extends ListenError {}

/** What the client did since the last look. */
export type GdbClientNews =
  | { kind: "connected" }
  | { kind: "disconnected" }
  | { kind: "bytes"; bytes: Uint8Array };

/** How long {@link GdbServer.close} waits for the Worker. */
const CLOSE_TIMEOUT_MS = 2000;

/** A listening `-gdb` socket and its Worker. */
export class GdbServer {
  readonly #worker: Worker;
  readonly #channel = new QmpChannel();
  readonly #closed: Promise<void>;
  #port = 0;
  #closing = false;

  private constructor(worker: Worker, closed: Promise<void>) {
    this.#worker = worker;
    this.#closed = closed;
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
    const worker = new Worker(new URL("./gdb_worker.ts", import.meta.url), { type: "module" });
    let closed!: () => void;
    const closedP = new Promise<void>((resolve) => closed = resolve);
    const first = new Promise<GdbWorkerReport>((resolve) => {
      worker.onmessage = (e: MessageEvent<GdbWorkerReport>) => {
        if (e.data.kind === "closed") closed();
        else resolve(e.data);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        resolve({ kind: "failed", message: e.message });
      };
    });
    const server = new GdbServer(worker, closedP);
    server.#send({ kind: "listen", hostname, port, channel: server.#channel.buffer });
    const report = await first;
    if (report.kind !== "listening") {
      worker.terminate();
      const why = report.kind === "failed" ? report.message : "the socket Worker ended";
      throw new GdbListenError(`-gdb tcp:${hostname}:${port}: Failed to bind socket: ${why}`);
    }
    server.#port = report.port;
    return server;
  }

  #send(message: GdbWorkerMessage): void {
    this.#worker.postMessage(message);
  }

  /** Tells the Worker how to wake the VM thread. */
  attach(target: { kick?: VcpuKickTarget; doorbell?: Doorbell }): void {
    this.#send({ kind: "attach", ...target });
  }

  /** VM thread: what the client did, one piece at a time; null when nothing is waiting. */
  take(): GdbClientNews | null {
    const text = this.#channel.take();
    if (text === null) return null;
    if (text === "C") return { kind: "connected" };
    if (text === "D") return { kind: "disconnected" };
    const bytes = new Uint8Array(text.length - 1);
    for (let i = 1; i < text.length; i++) bytes[i - 1] = text.charCodeAt(i);
    return { kind: "bytes", bytes };
  }

  /** VM thread: sleeps until the client sends something (or `timeoutMs`). */
  wait(timeoutMs: number): void {
    this.#channel.wait(timeoutMs);
  }

  /** Bytes for the client. */
  send(bytes: Uint8Array): void {
    this.#send({ kind: "send", bytes: bytes.slice() });
  }

  /** VM thread: no kick from the Worker reaches a vCPU after this returns (call before unmapping). */
  fenceKicks(): void {
    this.#channel.close();
  }

  /** Closes the socket and the Worker. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.fenceKicks();
    this.#send({ kind: "close" });
    await Promise.race([this.#closed, new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS))]);
    this.#worker.terminate();
  }
}
