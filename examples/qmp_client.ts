/**
 * A small QMP client: connects to a `-qmp` socket of this product or of QEMU, negotiates, runs
 * commands and collects events. Run it against a live machine:
 *
 * ```sh
 * deno task start -qmp unix:/tmp/kvm-ts.qmp,server=on,wait=off &
 * deno run --allow-read --allow-write examples/qmp_client.ts /tmp/kvm-ts.qmp
 * ```
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QmpClient } from "./qmp_client.ts";
 * // A stand-in server speaking QEMU's first two lines, on a socket of our own.
 * const path = `${Deno.makeTempDirSync()}/qmp.sock`;
 * const listener = Deno.listen({ transport: "unix", path });
 * (async () => {
 *   const conn = await listener.accept();
 *   const send = (line: string) => conn.write(new TextEncoder().encode(`${line}\r\n`));
 *   await send('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}');
 *   await conn.read(new Uint8Array(256)); // qmp_capabilities
 *   await send('{"return": {}, "id": 1}');
 *   await conn.read(new Uint8Array(256)); // query-status
 *   await send('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}');
 *   await send('{"return": {"status": "paused", "singlestep": false, "running": false}, "id": 2}');
 *   conn.close();
 * })();
 * using client = await QmpClient.connect({ path });
 * assert.deepEqual(client.greeting.QMP.version.qemu, { micro: 0, minor: 2, major: 7 });
 * assert.equal((await client.execute("query-status") as { status: string }).status, "paused");
 * assert.deepEqual(client.events.map((e) => e.event), ["STOP"]);
 * listener.close();
 * ```
 *
 * @module
 */

/** A QMP error reply, thrown by {@link QmpClient.execute}. */
export class QmpClientError extends Error {
  constructor(readonly errorClass: string, desc: string) {
    super(desc);
  }
}

/** One event as the server sent it. */
export interface QmpClientEvent {
  event: string;
  data?: unknown;
  timestamp: { seconds: number; microseconds: number };
}

// deno-lint-ignore no-explicit-any
type Message = any;

/** A connected, negotiated QMP client. */
export class QmpClient implements Disposable {
  /** The server's greeting. */
  readonly greeting: {
    QMP: { version: { qemu: Record<string, number>; package: string }; capabilities: string[] };
  };
  /** Every event received so far. */
  readonly events: QmpClientEvent[] = [];
  readonly #conn: Deno.Conn;
  readonly #lines: AsyncIterator<string>;
  #nextId = 1;

  private constructor(conn: Deno.Conn, lines: AsyncIterator<string>, greeting: Message) {
    this.#conn = conn;
    this.#lines = lines;
    this.greeting = greeting;
  }

  /** Connects to a unix socket `path`, or `hostname:port`, reads the greeting and negotiates. */
  static async connect(
    address: { path: string } | { hostname: string; port: number },
  ): Promise<QmpClient> {
    const conn = "path" in address
      ? await Deno.connect({ transport: "unix", path: address.path })
      : await Deno.connect(address);
    const lines = readLines(conn);
    const first = await lines.next();
    if (first.done) throw new Error("QMP: the server closed before its greeting");
    const client = new QmpClient(conn, lines, JSON.parse(first.value));
    await client.execute("qmp_capabilities");
    return client;
  }

  /** Runs `command` with `args`: its return value; a QMP error is thrown as {@link QmpClientError}. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const id = this.#nextId++;
    const request = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
    await this.#write(JSON.stringify(request));
    for (;;) {
      const message = await this.next();
      if (message === null) throw new Error(`QMP: the server closed before answering ${command}`);
      if (message.id !== id) continue;
      if ("error" in message) throw new QmpClientError(message.error.class, message.error.desc);
      return message.return;
    }
  }

  /** The next message that is not an event (events are collected in {@link events}); null at the end. */
  async next(): Promise<Message | null> {
    for (;;) {
      const line = await this.#lines.next();
      if (line.done) return null;
      const message = JSON.parse(line.value);
      if ("event" in message) this.events.push(message);
      else return message;
    }
  }

  /** Waits until event `name` has arrived (reading and keeping replies that come first is not done). */
  async waitEvent(name: string): Promise<QmpClientEvent> {
    for (;;) {
      const found = this.events.find((e) => e.event === name);
      if (found) return found;
      const line = await this.#lines.next();
      if (line.done) throw new Error(`QMP: the server closed before event ${name}`);
      const message = JSON.parse(line.value);
      if ("event" in message) this.events.push(message);
    }
  }

  async #write(text: string): Promise<void> {
    const bytes = new TextEncoder().encode(`${text}\n`);
    for (let n = 0; n < bytes.length;) n += await this.#conn.write(bytes.subarray(n));
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The lines of `conn`, without their CR LF. */
async function* readLines(conn: Deno.Conn): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 << 10);
  let pending = "";
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch {
      n = null;
    }
    if (n === null) return;
    pending += decoder.decode(buffer.subarray(0, n), { stream: true });
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl).replace(/\r$/, "");
      pending = pending.slice(nl + 1);
      if (line !== "") yield line;
    }
  }
}

if (import.meta.main) {
  const [target] = Deno.args;
  if (target === undefined) {
    console.error("usage: qmp_client.ts PATH | HOST:PORT");
    Deno.exit(2);
  }
  const tcp = /^(.*):(\d+)$/.exec(target);
  using client = await QmpClient.connect(
    tcp ? { hostname: tcp[1] || "127.0.0.1", port: Number(tcp[2]) } : { path: target },
  );
  console.log("version:", client.greeting.QMP.version);
  console.log("status:", await client.execute("query-status"));
  console.log("cpus:", await client.execute("query-cpus-fast"));
  console.log(await client.execute("human-monitor-command", { "command-line": "info registers" }));
}
