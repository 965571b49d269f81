/**
 * `--web [HOST:]PORT`: its parsing, apart from the page server so that the command line reads it
 * without loading the server.
 *
 * @module
 */

/** Where `--web` listens: `[HOST:]PORT`, 127.0.0.1 when no host is given. */
export interface WebListenSpec {
  hostname: string;
  port: number;
  /** Whether the host was typed (a non-loopback address needs it). */
  explicitHost: boolean;
}

/** The default host of `--web PORT`. */
export const WEB_DEFAULT_HOST = "127.0.0.1";

/**
 * Parses `--web [HOST:]PORT` (an IPv6 host in brackets); throws a one-line Error on bad input.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseWebOption } from "./web_options.ts";
 * assert.deepEqual(parseWebOption("8080"), { hostname: "127.0.0.1", port: 8080, explicitHost: false });
 * assert.deepEqual(parseWebOption("0.0.0.0:80"), { hostname: "0.0.0.0", port: 80, explicitHost: true });
 * assert.throws(() => parseWebOption("localhost:http"), /PORT/);
 * ```
 */
export function parseWebOption(text: string): WebListenSpec {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):)?(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || port > 65535) {
    throw new Error(`--web ${text}: expected [HOST:]PORT with a port from 0 to 65535`);
  }
  const host = match[1];
  if (host === undefined) return { hostname: WEB_DEFAULT_HOST, port, explicitHost: false };
  return { hostname: host.startsWith("[") ? host.slice(1, -1) : host, port, explicitHost: true };
}

/** Whether `hostname` only reaches this machine. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}
