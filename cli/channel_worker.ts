/**
 * The VM thread's end of a socket Worker: the lifecycle that `QmpServer`, `GdbServer` and
 * `WebServer` share. Each starts a Worker that owns its sockets, posts it a `listen` message
 * carrying a {@link QmpChannel}'s buffer, and waits for the first report (listening, or why not).
 * Afterwards the Worker hands the clients' input to the VM thread through the channel and wakes
 * it (the `attach` message: kick the vCPU or ring the runner's doorbell); the VM thread sleeps on
 * the channel ({@link ChannelWorker.wait}), fences the kicks before its vCPUs' run pages go
 * ({@link ChannelWorker.fenceKicks}), and closes the Worker with a bounded wait for its `closed`
 * report ({@link ChannelWorker.close}). {@link ChannelServer} is the base class that gives each
 * server those calls as its public API, with `post` and `takePosted` for its own protocol.
 *
 * Loaded only with `-qmp`, `-gdb` or `--web` (`cli/main.ts` imports those modules lazily), so it
 * imports nothing but the channel and types.
 *
 * @module
 */

import type { VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import type { Doorbell } from "../machine/runner.ts";
import { QmpChannel } from "./qmp_channel.ts";
import { bundledModule } from "../machine/bundled_module.ts";

/** How long {@link ChannelWorker.close} waits for the Worker to flush and close its sockets. */
export const CHANNEL_WORKER_CLOSE_TIMEOUT_MS = 2000;

/** The report every socket Worker sends last, once its sockets are closed. */
export interface ClosedReport {
  /** The tag. */
  kind: "closed";
}

/** Why a socket Worker is not listening: its own `failed` report, or how it ended instead. */
export type ListenFailure =
  | { kind: "failed"; message: string }
  | { kind: "worker-error"; message: string };

/** How the VM thread is woken: kick the vCPU it runs, or ring the runner's doorbell. */
export interface ChannelWakeTarget {
  /** The one vCPU the VM thread runs. */
  kick?: VcpuKickTarget;
  /** The SMP runner's doorbell. */
  doorbell?: Doorbell;
}

/**
 * A started socket Worker and the channel it feeds. `Message` is what the Worker accepts; every
 * Worker of this kind accepts `attach` (a {@link ChannelWakeTarget}) and `close`.
 *
 * @example
 * ```ts ignore
 * const { worker } = await ChannelWorker.start<GdbWorkerMessage, GdbWorkerReport>(
 *   new URL("./gdb_worker.ts", import.meta.url),
 *   (channel) => ({ kind: "listen", hostname: "127.0.0.1", port: 0, channel }),
 *   (failure) => new GdbListenError(failure.message),
 * );
 * worker.attach({ kick: vcpuKickTarget(pc.vcpu) });
 * worker.wait(100); // VM thread: until the client sends something
 * await worker.close();
 * ```
 */
export class ChannelWorker<Message extends { kind: string }> {
  /** The VM thread's side of the channel the Worker posts into. */
  readonly channel: QmpChannel;
  readonly #worker: Worker;
  readonly #closed: Promise<void>;
  #closing: Promise<void> | undefined;

  private constructor(worker: Worker, channel: QmpChannel, closed: Promise<void>) {
    this.#worker = worker;
    this.channel = channel;
    this.#closed = closed;
  }

  /**
   * Starts the Worker module at `url` and posts it `listen(channel buffer)`. Its first report
   * other than `closed` must be `listening`: then it settles with the Worker and that report, and
   * later reports go to `onReport`. Otherwise the Worker is ended and `refuse` makes the error to
   * throw, from the Worker's `failed` report or from how it died (`worker-error`).
   */
  static async start<
    Message extends { kind: string },
    Report extends { kind: string },
  >(
    url: URL,
    listen: (channel: SharedArrayBuffer) => Message,
    refuse: (failure: ListenFailure) => Error,
    onReport: (report: Report) => void = () => {},
  ): Promise<{ worker: ChannelWorker<Message>; listening: Extract<Report, { kind: "listening" }> }> {
    const handle = new Worker(bundledModule(url), { type: "module" });
    let first: ((report: Report | ListenFailure) => void) | undefined;
    let closed!: () => void;
    const reported = new Promise<Report | ListenFailure>((resolve) => first = resolve);
    const closedP = new Promise<void>((resolve) => closed = resolve);
    handle.onmessage = (e: MessageEvent<Report | ClosedReport>) => {
      const report = e.data;
      if (report.kind === "closed") closed();
      else if (first) {
        first(report as Report);
        first = undefined;
      } else onReport(report as Report);
    };
    handle.onerror = (e) => {
      e.preventDefault();
      first?.({ kind: "worker-error", message: e.message });
      first = undefined;
      closed();
    };
    const worker = new ChannelWorker<Message>(handle, new QmpChannel(), closedP);
    worker.send(listen(worker.channel.buffer));
    const report = await reported;
    if (report.kind === "listening") {
      return { worker, listening: report as Extract<Report, { kind: "listening" }> };
    }
    handle.terminate();
    const failure = report as { kind: string; message?: unknown };
    throw refuse(
      failure.kind === "failed" || failure.kind === "worker-error"
        ? failure as ListenFailure
        : { kind: "worker-error", message: `it reported "${failure.kind}" before listening` },
    );
  }

  /** Posts `message` to the Worker. */
  send(message: Message): void {
    this.#worker.postMessage(message);
  }

  /** Tells the Worker how to wake the VM thread. */
  attach(target: ChannelWakeTarget): void {
    this.#worker.postMessage({ kind: "attach", ...target });
  }

  /** VM thread: sleeps until the Worker posts, or `timeoutMs` passes. */
  wait(timeoutMs: number): void {
    this.channel.wait(timeoutMs);
  }

  /** The same, without blocking the thread. */
  waitAsync(timeoutMs: number): Promise<void> {
    return this.channel.waitAsync(timeoutMs);
  }

  /** VM thread: no kick from the Worker reaches a vCPU after this returns (call before unmapping). */
  fenceKicks(): void {
    this.channel.close();
  }

  /**
   * Fences the kicks, asks the Worker to close its sockets, waits for its `closed` report (at most
   * {@link CHANNEL_WORKER_CLOSE_TIMEOUT_MS}) and ends it. Idempotent: a second call settles with the
   * first.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.fenceKicks();
    this.#worker.postMessage({ kind: "close" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#closed,
      new Promise((resolve) => timer = setTimeout(resolve, CHANNEL_WORKER_CLOSE_TIMEOUT_MS)),
    ]);
    clearTimeout(timer);
    this.#worker.terminate();
  }
}

/**
 * What every socket server shows the VM thread besides its own protocol: `attach`, `wait`,
 * `waitAsync`, `fenceKicks` and `close`, over the {@link ChannelWorker} its `start` made.
 *
 * @example
 * ```ts ignore
 * class EchoServer extends ChannelServer<EchoMessage> {
 *   static async start(): Promise<EchoServer> {
 *     const { worker } = await ChannelWorker.start<EchoMessage, EchoReport>(url, listen, refuse);
 *     return new EchoServer(worker);
 *   }
 *   echo(): void {
 *     const text = this.takePosted();
 *     if (text !== null) this.post({ kind: "reply", text });
 *   }
 * }
 * ```
 */
export abstract class ChannelServer<Message extends { kind: string }> {
  readonly #worker: ChannelWorker<Message>;

  /** A server over `worker`, from {@link ChannelWorker.start}. */
  protected constructor(worker: ChannelWorker<Message>) {
    this.#worker = worker;
  }

  /** Tells the Worker how to wake the VM thread: kick the vCPU it runs, or ring the runner's doorbell. */
  attach(target: ChannelWakeTarget): void {
    this.#worker.attach(target);
  }

  /** VM thread: sleeps until the Worker posts (a command, a client's bytes), or `timeoutMs` passes. */
  wait(timeoutMs: number): void {
    this.#worker.wait(timeoutMs);
  }

  /** The same, without blocking the thread (a board without vCPUs, tests). */
  waitAsync(timeoutMs: number): Promise<void> {
    return this.#worker.waitAsync(timeoutMs);
  }

  /** VM thread: no kick from the Worker reaches a vCPU after this returns (call before unmapping). */
  fenceKicks(): void {
    this.#worker.fenceKicks();
  }

  /**
   * Has the Worker flush what its clients are owed and close every client and listener, then ends
   * it (see {@link ChannelWorker.close}). Idempotent.
   */
  close(): Promise<void> {
    return this.#worker.close();
  }

  /** Posts `message` to the Worker. */
  protected post(message: Message): void {
    this.#worker.send(message);
  }

  /** VM thread: what the Worker posted, which empties the slot; null when nothing is waiting. */
  protected takePosted(): string | null {
    return this.#worker.channel.take();
  }
}
