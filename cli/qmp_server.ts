/**
 * The VM thread's side of the QMP sockets: starts the QMP Worker (which owns the sockets), takes
 * the commands it posts, runs them, and sends back replies and events. See `qmp_worker.ts` for
 * the client side and `qmp_channel.ts` for what crosses threads.
 *
 * @module
 */

import { ListenError } from "./listen_error.ts";
import { ChannelServer, ChannelWorker } from "./channel_worker.ts";
import { type Json, JsonStreamer, toQmpJson } from "./qmp_json.ts";
import type { QmpListenSpec } from "./qmp_options.ts";
import { QMP_VERSION, QmpError, qmpErrorReply, qmpEvent, qmpReturn, type QmpVersion } from "./qmp_session.ts";
import type { QmpWorkerMessage, QmpWorkerReport } from "./qmp_worker.ts";

/** A `-qmp` socket that could not be opened: the message is the one line to print. */
export class QmpListenError extends ListenError {}

/**
 * The QMP sockets of one run. `close` flushes what clients are owed, closes every client and
 * listener and removes the socket files.
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
export class QmpServer extends ChannelServer<QmpWorkerMessage> {
  readonly #connected: Promise<void>;

  private constructor(worker: ChannelWorker<QmpWorkerMessage>, connected: Promise<void>) {
    super(worker);
    this.#connected = connected;
  }

  /**
   * Starts the Worker and binds every listener; with none refused, the server. Otherwise nothing
   * stays open or on disk.
   *
   * @throws {QmpListenError} naming the option and why, in QEMU's words.
   */
  static async start(specs: QmpListenSpec[], version: QmpVersion = QMP_VERSION): Promise<QmpServer> {
    let connected!: () => void;
    const connectedP = new Promise<void>((resolve) => connected = resolve);
    const { worker } = await ChannelWorker.start<QmpWorkerMessage, QmpWorkerReport>(
      new URL("./qmp_worker.ts", import.meta.url),
      (channel) => ({ kind: "listen", specs, channel, version }),
      (failure) =>
        new QmpListenError(
          failure.kind === "failed" ? failure.message : `-qmp: the QMP worker failed: ${failure.message}`,
        ),
      (later) => {
        if (later.kind === "connected") connected();
      },
    );
    return new QmpServer(worker, connectedP);
  }

  /** Settles when the first client connects (for `wait=on`). */
  get connected(): Promise<void> {
    return this.#connected;
  }

  /**
   * VM thread: runs the posted command, if any, with `run` (which returns the command's value or
   * throws a {@link QmpError}) and replies. Returns whether there was one.
   */
  serve(run: (name: string, args: { [key: string]: Json }) => Json): boolean {
    const text = this.takePosted();
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
    this.post({ kind: "reply", text: toQmpJson(reply) });
    return true;
  }

  /** Sends event `name` (with `data`, if any) to every negotiated client, timestamped now. */
  event(name: string, data?: Json): void {
    const now = performance.timeOrigin + performance.now();
    this.post({ kind: "event", text: toQmpJson(qmpEvent(name, data, now)) });
  }
}
