/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The web Worker of `--web`: owns the HTTP server (`Deno.serve`) and the pages' WebSockets. It
 * serves the page's files (`web/`, read once at start), checks the access token on every request,
 * and hands the pages' commands, one at a time and in arrival order, to the VM thread through a
 * {@link QmpChannel} (kicking the vCPU or ringing the doorbell, as the QMP Worker does). Replies
 * come back by message and go to the page that asked; pushes (map changes, timeline, serial, run
 * state) go to every page.
 *
 * Access: the URL printed at start carries a random token. A request with `?token=` right sets an
 * HttpOnly, SameSite=Strict cookie, so the page's own files and its WebSocket need no token in their
 * URL; a request with neither is answered 403, and a WebSocket upgrade without it is refused (403,
 * no upgrade), as is one from another origin.
 *
 * @module
 */

import { QmpChannel, vmWaker } from "./qmp_channel.ts";

/** Messages from the VM thread to this Worker. */
export type WebWorkerMessage =
  | { kind: "listen"; hostname: string; port: number; channel: SharedArrayBuffer; token: string }
  | {
    kind: "attach";
    kick?: import("../kvm/vcpu_kicker.ts").VcpuKickTarget;
    doorbell?: import("../kvm/doorbell.ts").Doorbell;
  }
  | { kind: "reply"; text: string }
  | { kind: "push"; text: string }
  | { kind: "close" };

/** Messages from this Worker to the VM thread. */
export type WebWorkerReport =
  | { kind: "listening"; hostname: string; port: number }
  | { kind: "failed"; message: string }
  | { kind: "closed" };

/** The cookie that carries the token after the first request. */
export const TOKEN_COOKIE = "kvmts_token";
/** A page's message larger than this is refused (commands are small). */
const MAX_MESSAGE = 64 << 10;
/** Commands one page may have waiting; more are answered with an error at once. */
const MAX_QUEUED_PER_PAGE = 32;
/** A page that does not read its pushes is dropped once this much waits for it. */
const MAX_BUFFERED = 16 << 20;

const ASSETS: Record<string, { file: string; type: string }> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/app.css": { file: "app.css", type: "text/css; charset=utf-8" },
};
const assets = new Map<string, Uint8Array<ArrayBuffer>>();

let channel: QmpChannel | undefined;
let notify: (() => void) | undefined;
let token = "";
let server: Deno.HttpServer | undefined;
const sockets = new Set<WebSocket>();
const queue: { socket: WebSocket; id: unknown; text: string }[] = [];
let inFlight: { socket: WebSocket; id: unknown } | undefined;
const queuedBy = new Map<WebSocket, number>();

const post = (report: WebWorkerReport) => self.postMessage(report);

/** Compares without an early exit, so the time taken does not tell how much of a guess was right. */
function sameToken(given: string | null | undefined): boolean {
  if (!given || given.length !== token.length) return false;
  let diff = 0;
  for (let i = 0; i < token.length; i++) diff |= given.charCodeAt(i) ^ token.charCodeAt(i);
  return diff === 0;
}

function cookieToken(request: Request): string | undefined {
  const header = request.headers.get("cookie") ?? "";
  for (const part of header.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === TOKEN_COOKIE) return value.join("=");
  }
  return undefined;
}

function send(socket: WebSocket, text: string): void {
  if (socket.readyState !== WebSocket.OPEN) return;
  if (socket.bufferedAmount > MAX_BUFFERED) {
    socket.close(1008, "too much output waiting");
    return;
  }
  socket.send(text);
}

function pump(): void {
  if (inFlight || !notify || !channel) return;
  const next = queue.shift();
  if (!next) return;
  queuedBy.set(next.socket, (queuedBy.get(next.socket) ?? 1) - 1);
  if (next.socket.readyState !== WebSocket.OPEN) return pump();
  if (!channel.post(next.text)) {
    send(
      next.socket,
      JSON.stringify({ id: next.id, error: { class: "GenericError", desc: "command too large" } }),
    );
    return pump();
  }
  inFlight = { socket: next.socket, id: next.id };
  channel.kickUnlessClosed(notify);
}

function onSocketMessage(socket: WebSocket, data: unknown): void {
  if (typeof data !== "string" || data.length > MAX_MESSAGE) {
    send(socket, JSON.stringify({ error: { class: "GenericError", desc: "expected a JSON text message" } }));
    return;
  }
  let message: { id?: unknown; execute?: unknown; arguments?: unknown };
  try {
    message = JSON.parse(data);
  } catch {
    send(socket, JSON.stringify({ error: { class: "GenericError", desc: "invalid JSON" } }));
    return;
  }
  const { id, execute, arguments: args } = message ?? {};
  if (typeof execute !== "string" || (args !== undefined && (typeof args !== "object" || args === null))) {
    send(
      socket,
      JSON.stringify({ id, error: { class: "GenericError", desc: "expected {execute, arguments}" } }),
    );
    return;
  }
  const waiting = queuedBy.get(socket) ?? 0;
  if (waiting >= MAX_QUEUED_PER_PAGE) {
    send(socket, JSON.stringify({ id, error: { class: "GenericError", desc: "too many commands waiting" } }));
    return;
  }
  queuedBy.set(socket, waiting + 1);
  queue.push({ socket, id, text: JSON.stringify({ name: execute, args: args ?? {} }) });
  pump();
}

function handle(request: Request): Response {
  const url = new URL(request.url);
  const given = url.searchParams.get("token");
  const fromCookie = cookieToken(request);
  if (!sameToken(given) && !sameToken(fromCookie)) {
    return new Response("403 Forbidden: this page needs the token printed at start (…/?token=…)\n", {
      status: 403,
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  const headers: Record<string, string> = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  };
  if (given) {
    headers["set-cookie"] = `${TOKEN_COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`;
  }
  if (url.pathname === "/ws") {
    const origin = request.headers.get("origin");
    if (origin !== null && origin !== url.origin) {
      return new Response("403 Forbidden: cross-origin WebSocket\n", { status: 403 });
    }
    if ((request.headers.get("upgrade") ?? "").toLowerCase() !== "websocket") {
      return new Response("400 Bad Request: expected a WebSocket upgrade\n", { status: 400 });
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => sockets.add(socket);
    socket.onmessage = (e) => onSocketMessage(socket, e.data);
    socket.onclose = () => {
      sockets.delete(socket);
      queuedBy.delete(socket);
    };
    socket.onerror = () => {};
    return response;
  }
  if (url.pathname === "/favicon.ico") return new Response(null, { status: 204, headers });
  const asset = ASSETS[url.pathname];
  const body = asset && assets.get(url.pathname);
  if (!asset || !body) return new Response("404 Not Found\n", { status: 404, headers });
  return new Response(body, {
    headers: {
      ...headers,
      "content-type": asset.type,
      // Everything the page uses comes from this server; nothing inline but styles of SVG.
      "content-security-policy":
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
    },
  });
}

function why(e: unknown): string {
  if (e instanceof Deno.errors.AddrInUse) return "Address already in use";
  if (e instanceof Deno.errors.AddrNotAvailable) return "Cannot assign requested address";
  if (e instanceof Deno.errors.NotCapable) return "Deno needs --allow-net (deno task start has it)";
  if (e instanceof Deno.errors.PermissionDenied) return "Permission denied";
  return e instanceof Error ? e.message : String(e);
}

async function close(): Promise<void> {
  for (const socket of sockets) {
    try {
      socket.close(1001, "the machine is going away");
    } catch {
      // already closing
    }
  }
  sockets.clear();
  queue.length = 0;
  inFlight = undefined;
  await server?.shutdown().catch(() => {});
}

self.onmessage = async (event: MessageEvent<WebWorkerMessage>) => {
  const message = event.data;
  switch (message.kind) {
    case "listen": {
      channel = new QmpChannel(message.channel);
      token = message.token;
      try {
        for (const [path, { file }] of Object.entries(ASSETS)) {
          assets.set(path, await Deno.readFile(new URL(`./web/${file}`, import.meta.url)));
        }
      } catch (e) {
        post({ kind: "failed", message: `--web: cannot read the page's files: ${why(e)}` });
        return;
      }
      try {
        let listening!: (addr: Deno.NetAddr) => void;
        const bound = new Promise<Deno.NetAddr>((resolve) => listening = resolve);
        server = Deno.serve({
          hostname: message.hostname,
          port: message.port,
          onListen: (addr) => listening(addr as Deno.NetAddr),
          onError: () => new Response("500 Internal Server Error\n", { status: 500 }),
        }, handle);
        const addr = await bound;
        post({ kind: "listening", hostname: addr.hostname, port: addr.port });
      } catch (e) {
        post({
          kind: "failed",
          message: `--web ${message.hostname}:${message.port}: cannot listen: ${why(e)}`,
        });
      }
      return;
    }
    case "attach":
      notify = vmWaker(message);
      pump();
      return;
    case "reply": {
      const target = inFlight;
      inFlight = undefined;
      if (target) send(target.socket, `{"id":${JSON.stringify(target.id ?? null)},${message.text.slice(1)}`);
      pump();
      return;
    }
    case "push":
      for (const socket of sockets) send(socket, message.text);
      return;
    case "close":
      await close();
      post({ kind: "closed" });
      return;
  }
};
