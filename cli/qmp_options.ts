/**
 * `-qmp` as QEMU 7.2 parses it for the socket backends: `unix:PATH` and `tcp:[HOST]:PORT`, with
 * `server` and `wait` as booleans (`on`/`off`, and the old bare `server` and `nowait`). Only the
 * listening side exists here, so `server=off` is refused. Errors are QEMU's words, without the
 * option it prefixes them with.
 *
 * @module
 */

/** One `-qmp` listener. */
export type QmpListenSpec =
  & { text: string; wait: boolean }
  & ({ kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number });

/** A `-qmp` the front-end cannot take. */
export class QmpOptionError extends Error {}

const TRUE = new Set(["on", "yes", "true", "y"]);
const FALSE = new Set(["off", "no", "false", "n"]);

/**
 * Parses one `-qmp` value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseQmpOption } from "./qmp_options.ts";
 * assert.deepEqual(parseQmpOption("unix:/tmp/q.sock,server=on,wait=off"), {
 *   text: "unix:/tmp/q.sock,server=on,wait=off", kind: "unix", path: "/tmp/q.sock", wait: false,
 * });
 * assert.deepEqual(parseQmpOption("tcp::4444,server,nowait"), {
 *   text: "tcp::4444,server,nowait", kind: "tcp", host: "", port: 4444, wait: false,
 * });
 * assert.throws(() => parseQmpOption("unix:/tmp/q.sock,server=maybe"), /Parameter 'server' expects 'on' or 'off'/);
 * ```
 */
export function parseQmpOption(text: string): QmpListenSpec {
  // QEMU's option syntax: commas separate, a doubled comma is a comma.
  const parts = text.replaceAll(",,", "\0").split(",").map((p) => p.replaceAll("\0", ","));
  const [address, ...props] = parts;
  const colon = address.indexOf(":");
  const backend = colon < 0 ? address : address.slice(0, colon);
  if (backend !== "unix" && backend !== "tcp") {
    throw new QmpOptionError(
      !["udp", "telnet", "websocket", "file", "pipe", "stdio", "vc", "pty", "null", "mon"].includes(backend)
        ? `'${text}' is not a valid char driver`
        : `the '${backend}' backend is not supported (only unix: and tcp:)`,
    );
  }
  const rest = address.slice(colon + 1);
  let server = false;
  let wait = true;
  for (const prop of props) {
    const eq = prop.indexOf("=");
    const key = eq < 0 ? prop : prop.slice(0, eq);
    const value = eq < 0 ? undefined : prop.slice(eq + 1);
    const flag = (): boolean => {
      if (value === undefined) return true;
      if (TRUE.has(value)) return true;
      if (FALSE.has(value)) return false;
      throw new QmpOptionError(`Parameter '${key}' expects 'on' or 'off'`);
    };
    if (key === "server") server = flag();
    else if (key === "wait") wait = flag();
    else if (key === "nowait" && value === undefined) wait = false;
    else if (key === "nodelay" && backend === "tcp") flag(); // QMP's replies are small: nothing to tune
    else throw new QmpOptionError(`Invalid parameter '${key}'`);
  }
  if (!server) {
    throw new QmpOptionError(
      `only listening sockets are supported: add server=on (this front-end does not connect out)`,
    );
  }
  if (backend === "unix") {
    if (rest === "") throw new QmpOptionError(`parse error: ${text}`);
    return { text, kind: "unix", path: rest, wait };
  }
  const match = /^(\[[^\]]*\]|[^:]*):([0-9]+)$/.exec(rest);
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) throw new QmpOptionError(`parse error: ${text}`);
  const host = match[1].startsWith("[") ? match[1].slice(1, -1) : match[1];
  return { text, kind: "tcp", host, port, wait };
}
