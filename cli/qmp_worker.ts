/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The QMP Worker: listens on every `-qmp` socket, speaks the protocol with each client (greeting,
 * negotiation, JSON framing and errors: `qmp_session.ts`, `qmp_json.ts`), and hands the commands,
 * one at a time and in arrival order, to the VM thread through a {@link QmpChannel}. Replies and
 * events come back by message. It runs on its own thread because the VM thread is inside
 * `KVM_RUN` most of the time.
 *
 * Isolation: a client's input is parsed as it arrives, with a bounded buffer (`qmp_json.ts`); a
 * client has at most one command in flight, so a flood waits its turn behind the others; one that
 * does not read its replies stops being read, and is dropped once {@link MAX_QUEUED_OUTPUT} of
 * replies and events wait for it. Nothing a client sends reaches the VM thread but a checked
 * command object.
 *
 * @module
 */

import type { VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import { QmpChannel, vmWaker } from "./qmp_channel.ts";
import { JsonStreamer, toQmpJson } from "./qmp_json.ts";
import type { QmpListenSpec } from "./qmp_options.ts";
import {
  QmpError,
  qmpErrorReply,
  type QmpExecute,
  qmpGreeting,
  QmpSession,
  type QmpVersion,
} from "./qmp_session.ts";

/** Messages from the VM thread to this Worker. */
export type QmpWorkerMessage =
  | { kind: "listen"; specs: QmpListenSpec[]; channel: SharedArrayBuffer; version: QmpVersion }
  | { kind: "attach"; kick?: VcpuKickTarget; doorbell?: import("../kvm/doorbell.ts").Doorbell }
  | { kind: "reply"; text: string }
  | { kind: "event"; text: string }
  | { kind: "close" };

/** Messages from this Worker to the VM thread. */
export type QmpWorkerReport =
  | { kind: "listening" }
  | { kind: "failed"; message: string }
  | { kind: "connected" }
  | { kind: "closed" };

/** Replies and events that may wait for a client that does not read, before it is dropped. */
export const MAX_QUEUED_OUTPUT = 8 << 20;
/** Read this much of a client's input at a time. */
const READ_SIZE = 64 << 10;
/** Stop reading a client while this much output waits for it. */
const READ_PAUSE_OUTPUT = 256 << 10;

const encoder = new TextEncoder();
const post = (report: QmpWorkerReport) => self.postMessage(report);

class Client {
  readonly session = new QmpSession();
  readonly streamer = new JsonStreamer();
  #queued = 0;
  #writing: Promise<void> = Promise.resolve();
  closed = false;

  constructor(readonly conn: Deno.Conn) {}

  /** Queues one line of output; drops the client if too much waits. */
  send(text: string): void {
    if (this.closed) return;
    const bytes = encoder.encode(`${text}\r\n`);
    this.#queued += bytes.length;
    if (this.#queued > MAX_QUEUED_OUTPUT) return this.close();
    this.#writing = this.#writing.then(async () => {
      if (this.closed) return;
      try {
        for (let n = 0; n < bytes.length;) n += await this.conn.write(bytes.subarray(n));
      } catch {
        this.close();
      }
      this.#queued -= bytes.length;
    });
  }

  /** Settles once the output queue is short enough to read more input. */
  async drain(): Promise<void> {
    while (!this.closed && this.#queued > READ_PAUSE_OUTPUT) await this.#writing;
  }

  /** Settles once everything queued has been written (or the client is gone). */
  flushed(): Promise<void> {
    return this.#writing;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed by the peer
    }
  }
}

let channel: QmpChannel | undefined;
let version: QmpVersion | undefined;
let notify: (() => void) | undefined;
const listeners: Deno.Listener[] = [];
const socketPaths: string[] = [];
const clients = new Set<Client>();
let closing = false;
let announcedConnection = false;
/** Commands wait here, in arrival order, until the VM thread is attached and free. */
const queue: { execute: QmpExecute; resolve: (reply: string) => void }[] = [];
let inFlight: ((reply: string) => void) | undefined;

function pump(): void {
  if (inFlight || !notify || !channel || closing) return;
  const next = queue.shift();
  if (!next) return;
  const text = toQmpJson({ name: next.execute.name, args: next.execute.args });
  if (!channel.post(text)) {
    next.resolve(toQmpJson(qmpErrorReply(new QmpError("GenericError", "JSON token size limit exceeded"))));
    return pump();
  }
  inFlight = next.resolve;
  const kick = notify;
  channel.kickUnlessClosed(kick);
}

/** Runs `execute` on the VM thread; the reply text, with the client's id put in QEMU's place. */
function dispatch(execute: QmpExecute): Promise<string> {
  return new Promise<string>((resolve) => {
    queue.push({ execute, resolve });
    pump();
  }).then((text) => {
    if (execute.id === undefined || text === "") return text;
    // The VM thread answers without the id: put it where QEMU does (after "return", before "error").
    const id = toQmpJson(execute.id);
    return text.startsWith('{"return": ')
      ? `${text.slice(0, -1)}, "id": ${id}}`
      : `{"id": ${id}, ${text.slice(1)}`;
  });
}

async function serveClient(conn: Deno.Conn): Promise<void> {
  const client = new Client(conn);
  clients.add(client);
  if (!announcedConnection) {
    announcedConnection = true;
    post({ kind: "connected" });
  }
  client.send(toQmpJson(qmpGreeting(version)));
  const buffer = new Uint8Array(READ_SIZE);
  try {
    while (!client.closed) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch {
        n = null;
      }
      if (n === null) break;
      for (const input of client.streamer.feed(buffer.subarray(0, n))) {
        if (client.closed) break;
        if (input.kind === "error") {
          client.send(toQmpJson({ error: { class: "GenericError", desc: input.desc } }));
          continue;
        }
        const step = client.session.handle(input.value);
        if (step.kind === "reply") client.send(toQmpJson(step.reply));
        else {
          const reply = await dispatch(step.execute);
          if (reply !== "") client.send(reply); // "" : the machine is going away
        }
        await client.drain();
      }
      await client.drain();
    }
  } finally {
    client.close();
    clients.delete(client);
  }
}

async function acceptLoop(listener: Deno.Listener): Promise<void> {
  for (;;) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch {
      return; // closed
    }
    if (closing) {
      conn.close();
      continue;
    }
    serveClient(conn).catch(() => {});
  }
}

/** The errno words QEMU prints after "Failed to bind socket". */
function why(e: unknown): string {
  if (e instanceof Deno.errors.AddrInUse) return "Address already in use";
  if (e instanceof Deno.errors.NotFound) return "No such file or directory";
  if (e instanceof Deno.errors.NotCapable) {
    return "Deno needs --allow-net for sockets (deno task start has it)";
  }
  if (e instanceof Deno.errors.PermissionDenied) {
    return "Permission denied";
  }
  if (e instanceof Deno.errors.AddrNotAvailable) return "Cannot assign requested address";
  return e instanceof Error ? e.message : String(e);
}

/** Binds one listener, as QEMU does: a stale socket file at the path is replaced, nothing else. */
function listen(spec: QmpListenSpec): Deno.Listener {
  if (spec.kind === "unix") {
    try {
      if (Deno.lstatSync(spec.path).isSocket) Deno.removeSync(spec.path);
    } catch {
      // nothing there (or unreadable): bind says what is wrong
    }
    try {
      const listener = Deno.listen({ transport: "unix", path: spec.path });
      socketPaths.push(spec.path);
      return listener;
    } catch (e) {
      throw new Error(`-qmp ${spec.text}: Failed to bind socket to ${spec.path}: ${why(e)}`);
    }
  }
  try {
    return Deno.listen({ hostname: spec.host === "" ? "0.0.0.0" : spec.host, port: spec.port });
  } catch (e) {
    const reason = e instanceof Deno.errors.AddrInUse
      ? "Failed to find an available port: Address already in use"
      : `Failed to bind socket: ${why(e)}`;
    throw new Error(`-qmp ${spec.text}: ${reason}`);
  }
}

async function closeAll(): Promise<void> {
  closing = true;
  for (const listener of listeners) {
    try {
      listener.close();
    } catch {
      // already closed
    }
  }
  listeners.length = 0;
  for (const path of socketPaths) {
    try {
      Deno.removeSync(path);
    } catch {
      // already gone
    }
  }
  socketPaths.length = 0;
  // Whatever was queued (the SHUTDOWN event, quit's reply) goes out before the sockets close.
  const timeout = new Promise((resolve) => setTimeout(resolve, 1000));
  await Promise.race([Promise.all([...clients].map((c) => c.flushed())), timeout]);
  for (const client of clients) client.close();
  for (const pending of queue.splice(0)) pending.resolve("");
  inFlight?.("");
}

self.onmessage = async (event: MessageEvent<QmpWorkerMessage>) => {
  const message = event.data;
  switch (message.kind) {
    case "listen": {
      channel = new QmpChannel(message.channel);
      version = message.version;
      try {
        for (const spec of message.specs) listeners.push(listen(spec));
      } catch (e) {
        await closeAll();
        post({ kind: "failed", message: (e as Error).message });
        return;
      }
      for (const listener of listeners) acceptLoop(listener);
      post({ kind: "listening" });
      return;
    }
    case "attach": {
      notify = vmWaker(message);
      pump();
      return;
    }
    case "reply": {
      const resolve = inFlight;
      inFlight = undefined;
      resolve?.(message.text);
      pump();
      return;
    }
    case "event":
      for (const client of clients) if (client.session.negotiated) client.send(message.text);
      return;
    case "close":
      await closeAll();
      post({ kind: "closed" });
      return;
  }
};
