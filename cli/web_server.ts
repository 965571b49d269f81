/**
 * The VM thread's side of `--web`: starts the web Worker (which owns the HTTP server and the
 * WebSockets, `web_worker.ts`), takes the commands the pages send, runs them, and sends back
 * replies and pushes. The same shape as `QmpServer`: the VM thread is in `KVM_RUN` most of the time,
 * so commands come through a channel with a kick (`channel_worker.ts`), and everything else goes by
 * message.
 *
 * @module
 */

import { ListenError } from "./listen_error.ts";
import type { WebListenSpec } from "./web_options.ts";
import { ChannelServer, ChannelWorker } from "./channel_worker.ts";
import type { WebWorkerMessage, WebWorkerReport } from "./web_worker.ts";

/** `--web` could not listen: the message is the one line to print. */
export class WebListenError extends ListenError {}

/** Random bytes in the access token. */
const TOKEN_BYTES = 16;

/**
 * The page server of one run. `close` closes every page's socket and the server.
 *
 * @example
 * ```ts ignore
 * const web = await WebServer.start(parseWebOption("8080"));
 * console.log(web.url);
 * web.attach({ kick: vcpuKickTarget(pc.vcpu) });
 * web.serve((name, args) => run(name, args)); // in the run's hook, on the VM thread
 * await web.close();
 * ```
 */
export class WebServer extends ChannelServer<WebWorkerMessage> {
  readonly #token: string;
  readonly #address: { hostname: string; port: number };

  private constructor(
    worker: ChannelWorker<WebWorkerMessage>,
    token: string,
    address: { hostname: string; port: number },
  ) {
    super(worker);
    this.#token = token;
    this.#address = address;
  }

  /**
   * Starts the Worker and listens; with `spec.port` 0 the system picks the port (see {@link url}).
   *
   * @throws {WebListenError} naming the address and why.
   */
  static async start(spec: WebListenSpec): Promise<WebServer> {
    const bytes = crypto.getRandomValues(new Uint8Array(TOKEN_BYTES));
    const token = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    const { worker, listening } = await ChannelWorker.start<WebWorkerMessage, WebWorkerReport>(
      new URL("./web_worker.ts", import.meta.url),
      (channel) => ({ kind: "listen", hostname: spec.hostname, port: spec.port, channel, token }),
      (failure) =>
        new WebListenError(
          failure.kind === "failed" ? failure.message : `--web: the web worker failed: ${failure.message}`,
        ),
    );
    return new WebServer(worker, token, { hostname: listening.hostname, port: listening.port });
  }

  /** The page's address, with the access token. */
  get url(): string {
    const host = this.#address.hostname.includes(":")
      ? `[${this.#address.hostname}]`
      : this.#address.hostname;
    return `http://${host}:${this.#address.port}/?token=${this.#token}`;
  }

  /** The port listened on. */
  get port(): number {
    return this.#address.port;
  }

  /**
   * VM thread: runs the posted command, if any, with `run` (its value, or a thrown error as the
   * reply's error) and replies. Returns whether there was one.
   */
  serve(run: (name: string, args: Record<string, unknown>) => unknown): boolean {
    const text = this.takePosted();
    if (text === null) return false;
    let reply: string;
    try {
      const { name, args } = JSON.parse(text) as { name: string; args: Record<string, unknown> };
      reply = JSON.stringify({ return: run(name, args) ?? {} });
    } catch (e) {
      const error = e as { name?: string; message?: string; errorClass?: string };
      reply = JSON.stringify({
        error: { class: error.errorClass ?? "GenericError", desc: error.message ?? String(e) },
      });
    }
    this.post({ kind: "reply", text: reply });
    return true;
  }

  /** Sends `data` to every page as a push of `kind`. */
  push(kind: string, data: unknown): void {
    this.post({ kind: "push", text: JSON.stringify({ push: kind, data }) });
  }
}
