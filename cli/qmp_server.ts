/**
 * The VM thread's side of the QMP sockets: starts the QMP Worker (which owns the sockets), takes
 * the commands it posts, runs them, and sends back replies and events. See `qmp_worker.ts` for
 * the client side and `qmp_channel.ts` for what crosses threads.
 *
 * @module
 */

import { ListenError } from "./listen_error.ts";
import type { VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import type { Doorbell } from "../machine/runner.ts";
import { QmpChannel } from "./qmp_channel.ts";
import { type Json, JsonStreamer, toQmpJson } from "./qmp_json.ts";
import type { QmpListenSpec } from "./qmp_options.ts";
import { QMP_VERSION, QmpError, qmpErrorReply, qmpEvent, qmpReturn, type QmpVersion } from "./qmp_session.ts";
import type { QmpWorkerMessage, QmpWorkerReport } from "./qmp_worker.ts";

/** A `-qmp` socket that could not be opened: the message is the one line to print. */
export class QmpListenError extends ListenError {}

/** How long {@link QmpServer.close} waits for the Worker to flush and close its sockets. */
const CLOSE_TIMEOUT_MS = 2000;

/**
 * The QMP sockets of one run.
 *
 * @example
 * ```ts ignore
 * const qmp = await QmpServer.start([parseQmpOption("unix:/tmp/q.sock,server=on,wait=off")]);
 * qmp.attach({ kick: vcpuKickTarget(pc.vcpu) });
 * // in the run's hook, on the VM thread:
 * qmp.serve((name, args) => runQmpCommand(commands, name, args));
 * await qmp.close();
 * ```
 */
export class QmpServer {
  readonly #worker: Worker;
  readonly #channel = new QmpChannel();
  readonly #connected: Promise<void>;
  readonly #closed: Promise<void>;
  #closing = false;

  private constructor(worker: Worker, connected: Promise<void>, closed: Promise<void>) {
    this.#worker = worker;
    this.#connected = connected;
    this.#closed = closed;
  }

  /**
   * Starts the Worker and binds every listener; with none refused, the server. Otherwise nothing
   * stays open or on disk.
   *
   * @throws {QmpListenError} naming the option and why, in QEMU's words.
   */
  static async start(specs: QmpListenSpec[], version: QmpVersion = QMP_VERSION): Promise<QmpServer> {
    const worker = new Worker(new URL("./qmp_worker.ts", import.meta.url), { type: "module" });
    let listening!: (failure?: string) => void;
    let connected!: () => void;
    let closed!: () => void;
    const bound = new Promise<string | undefined>((resolve) => listening = resolve);
    const connectedP = new Promise<void>((resolve) => connected = resolve);
    const closedP = new Promise<void>((resolve) => closed = resolve);
    worker.onmessage = (e: MessageEvent<QmpWorkerReport>) => {
      const report = e.data;
      if (report.kind === "listening") listening();
      else if (report.kind === "failed") listening(report.message);
      else if (report.kind === "connected") connected();
      else if (report.kind === "closed") closed();
    };
    worker.onerror = (e) => {
      e.preventDefault();
      listening(`-qmp: the QMP worker failed: ${e.message}`);
      closed();
    };
    const server = new QmpServer(worker, connectedP, closedP);
    server.#send({ kind: "listen", specs, channel: server.#channel.buffer, version });
    const failure = await bound;
    if (failure !== undefined) {
      worker.terminate();
      throw new QmpListenError(failure);
    }
    return server;
  }

  /** Settles when the first client connects (for `wait=on`). */
  get connected(): Promise<void> {
    return this.#connected;
  }

  /** Tells the Worker how to wake the VM thread: kick the vCPU it runs, or ring the runner's doorbell. */
  attach(target: { kick?: VcpuKickTarget; doorbell?: Doorbell }): void {
    this.#send({ kind: "attach", ...target });
  }

  /**
   * VM thread: runs the posted command, if any, with `run` (which returns the command's value or
   * throws a {@link QmpError}) and replies. Returns whether there was one.
   */
  serve(run: (name: string, args: { [key: string]: Json }) => Json): boolean {
    const text = this.#channel.take();
    if (text === null) return false;
    const parsed = new JsonStreamer().feed(new TextEncoder().encode(text))[0];
    const command = parsed?.kind === "value"
      ? parsed.value as { name: string; args: { [key: string]: Json } }
      : null;
    let reply: Json;
    try {
      if (command === null) throw new QmpError("GenericError", "internal error: unreadable command");
      reply = qmpReturn(run(command.name, command.args));
    } catch (e) {
      // Whatever a command meets (a KVM error reading registers, say) is the client's answer, not a crash.
      reply = qmpErrorReply(e instanceof QmpError ? e : new QmpError("GenericError", (e as Error).message));
    }
    this.#send({ kind: "reply", text: toQmpJson(reply) });
    return true;
  }

  /** Sends event `name` (with `data`, if any) to every negotiated client, timestamped now. */
  event(name: string, data?: Json): void {
    const now = performance.timeOrigin + performance.now();
    this.#send({ kind: "event", text: toQmpJson(qmpEvent(name, data, now)) });
  }

  /** VM thread: sleeps until a command is posted, or `timeoutMs` passes (the stopped loop). */
  wait(timeoutMs: number): void {
    this.#channel.wait(timeoutMs);
  }

  /** The same, without blocking the thread. */
  waitAsync(timeoutMs: number): Promise<void> {
    return this.#channel.waitAsync(timeoutMs);
  }

  /** VM thread: no kick from the Worker reaches a vCPU after this returns (call before unmapping). */
  fenceKicks(): void {
    this.#channel.close();
  }

  /**
   * Flushes what clients are owed, closes every client and listener, removes the socket files,
   * and ends the Worker. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closing) return await this.#closed;
    this.#closing = true;
    this.fenceKicks();
    this.#send({ kind: "close" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#closed,
      new Promise((resolve) => timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)),
    ]);
    clearTimeout(timer);
    this.#worker.terminate();
  }

  #send(message: QmpWorkerMessage): void {
    this.#worker.postMessage(message);
  }
}
