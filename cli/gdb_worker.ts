/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The gdb stub's socket Worker. The VM thread sits in `KVM_RUN` (or on the SMP doorbell), where it
 * cannot read a socket; this Worker listens on the `-gdb` port, takes one client at a time (as QEMU,
 * a second connection is closed at once), and hands what the client sends to the VM thread through
 * a {@link QmpChannel} (a string of char codes 0–255, prefixed `C` on connection, `D` on
 * disconnection, `B` for bytes), waking it as the console does. What the stub answers comes back as
 * `send` messages and goes to the client.
 *
 * @module
 */

import { QmpChannel, vmWaker, type VmWakeTarget } from "./qmp_channel.ts";

/** From the VM thread to the Worker. */
export type GdbWorkerMessage =
  | { kind: "listen"; hostname: string; port: number; channel: SharedArrayBuffer }
  | ({ kind: "attach" } & VmWakeTarget)
  | { kind: "send"; bytes: Uint8Array }
  | { kind: "close" };

/** From the Worker to the VM thread. */
export type GdbWorkerReport =
  | { kind: "listening"; port: number }
  | { kind: "failed"; message: string }
  | { kind: "closed" };

/** The largest piece of client input handed over at once (the channel holds 2 MiB). */
const CHUNK = 64 * 1024;

let channel: QmpChannel | undefined;
let wake: (() => void) | undefined;
let listener: Deno.TcpListener | undefined;
let client: Deno.TcpConn | undefined;
/** What the client sent that the VM thread has not taken yet, in order. */
const pending: string[] = [];
let pumping = false;

function post(report: GdbWorkerReport): void {
  self.postMessage(report);
}

function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return text;
}

/** Hands `pending` to the VM thread one post at a time (each waits for the last to be taken). */
async function pump(): Promise<void> {
  if (pumping || !channel || !wake) return;
  pumping = true;
  try {
    while (pending.length > 0) {
      await channel.waitEmptyAsync(1000);
      if (!channel.post(pending[0])) continue; // the slot is still full: wait on
      pending.shift();
      channel.kickUnlessClosed(wake);
    }
  } finally {
    pumping = false;
  }
}

function hand(text: string): void {
  pending.push(text);
  void pump();
}

async function serve(conn: Deno.TcpConn): Promise<void> {
  client = conn;
  conn.setNoDelay(true);
  hand("C");
  const buffer = new Uint8Array(CHUNK);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      hand(`B${latin1(buffer.subarray(0, n))}`);
    }
  } catch { /* reset by the peer: a disconnection */ }
  if (client === conn) {
    client = undefined;
    hand("D");
  }
  try {
    conn.close();
  } catch { /* closed already */ }
}

async function acceptLoop(l: Deno.TcpListener): Promise<void> {
  for (;;) {
    let conn: Deno.TcpConn;
    try {
      conn = await l.accept();
    } catch {
      return; // closed
    }
    if (client) conn.close(); // one debugger at a time
    else void serve(conn);
  }
}

/** Messages are handled one after another: a `close` never overtakes the `send` before it. */
let queue: Promise<void> = Promise.resolve();
self.onmessage = (e: MessageEvent<GdbWorkerMessage>) => {
  queue = queue.then(() => handle(e.data));
};

async function handle(message: GdbWorkerMessage): Promise<void> {
  switch (message.kind) {
    case "listen":
      channel = new QmpChannel(message.channel);
      try {
        listener = Deno.listen({ hostname: message.hostname, port: message.port });
      } catch (error) {
        post({ kind: "failed", message: (error as Error).message });
        return;
      }
      void acceptLoop(listener);
      post({ kind: "listening", port: (listener.addr as Deno.NetAddr).port });
      return;
    case "attach":
      wake = vmWaker(message);
      void pump();
      return;
    case "send":
      try {
        if (client) {
          for (let done = 0; done < message.bytes.length;) {
            done += await client.write(message.bytes.subarray(done));
          }
        }
      } catch { /* the client went away: its reader says so */ }
      return;
    case "close":
      try {
        listener?.close();
      } catch { /* closed */ }
      try {
        client?.close();
      } catch { /* closed */ }
      client = undefined;
      post({ kind: "closed" });
      return;
  }
}
