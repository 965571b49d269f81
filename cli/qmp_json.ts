/**
 * QMP's JSON, as QEMU 7.2 reads and writes it: a stream of values with no framing, split into
 * top-level values by counting braces and brackets over tokens (QEMU's `json-streamer.c`), each
 * parsed with QEMU's extensions (single-quoted strings, integers to 2^64) and worded errors
 * ("JSON parse error, invalid keyword 'foo'"). Pure: no sockets, no `Deno.*`.
 *
 * Bounds (QEMU's `MAX_NESTING` is 1024 and is kept; its `MAX_TOKEN_SIZE` of 64 MiB per value is
 * not): a value larger than {@link MAX_VALUE_SIZE} is refused while it arrives, with QEMU's
 * "JSON token size limit exceeded", and the rest of the token that overflowed is dropped unread.
 * QEMU first buffers a whole token (a 100 MB string costs it 100 MB); here one client costs at
 * most about 1 MiB, and no command of ours takes more than a file name.
 *
 * @module
 */

/** A JSON value as QMP carries it: integers beyond 2^53 stay exact as bigint. */
export type Json = null | boolean | number | bigint | string | Json[] | { [key: string]: Json };

/** The largest top-level value a client may send, in characters (see the module doc). */
export const MAX_VALUE_SIZE = 1 << 20;
/** QEMU's `MAX_NESTING`: braces and brackets open at once. */
export const MAX_NESTING = 1024;

/** One thing read from the stream: a value, or the error QEMU would answer it with. */
export type JsonInput = { kind: "value"; value: Json } | { kind: "error"; desc: string };

type TokenKind = "{" | "}" | "[" | "]" | ":" | "," | "string" | "number" | "keyword" | "error";
interface Token {
  kind: TokenKind;
  text: string;
  value?: Json;
}

const STRUCTURAL = new Set(["{", "}", "[", "]", ":", ","]);
const ESCAPES: Record<string, string> = {
  '"': '"',
  "'": "'",
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};
const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;
const INT64_MIN = -(1n << 63n);
const UINT64_MAX = (1n << 64n) - 1n;

/**
 * Splits a byte stream into top-level JSON values and parses each, as QEMU's QMP monitor does.
 * Feed it whatever the socket gave; it keeps partial tokens between calls.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { JsonStreamer } from "./qmp_json.ts";
 * const s = new JsonStreamer();
 * assert.deepEqual(s.feed(new TextEncoder().encode('{"execute": "stop"}{"exec')), [
 *   { kind: "value", value: { execute: "stop" } },
 * ]);
 * assert.deepEqual(s.feed(new TextEncoder().encode('ute": 1}\nfoo\n')), [
 *   { kind: "value", value: { execute: 1 } },
 *   { kind: "error", desc: "JSON parse error, invalid keyword 'foo'" },
 * ]);
 * ```
 */
export class JsonStreamer {
  readonly #decoder = new TextDecoder("utf-8", { fatal: false });
  // The lexer: the token being read and what kind it is.
  #state: "start" | "string" | "escape" | "unicode" | "number" | "keyword" | "recover" | "skip" = "start";
  #quote = '"';
  #text = "";
  #chars: string[] = [];
  #unicode = "";
  #skipping = false; // the token overflowed: read it to its end, keep nothing
  // The streamer: the tokens of the value being read.
  #tokens: Token[] = [];
  #size = 0;
  #depth = 0; // braces + brackets, as QEMU's two counts
  #braces = 0;
  #brackets = 0;
  #out: JsonInput[] = [];

  /** Reads `bytes`; returns every value (or error) they completed. */
  feed(bytes: Uint8Array): JsonInput[] {
    const text = this.#decoder.decode(bytes, { stream: true });
    for (const ch of text) this.#lex(ch);
    const out = this.#out;
    this.#out = [];
    return out;
  }

  #lex(ch: string): void {
    switch (this.#state) {
      case "recover":
        // After a lexical error QEMU skips to the next whitespace or structural character.
        if (ch === " " || ch === "\t" || ch === "\n" || ch === "\r") this.#state = "start";
        else if (STRUCTURAL.has(ch)) {
          this.#state = "start";
          this.#lex(ch);
        }
        return;
      case "start":
        return this.#start(ch);
      case "string":
        if (ch === this.#quote) {
          this.#state = "start";
          this.#emitToken({ kind: "string", text: this.#text + ch, value: this.#chars.join("") });
        } else if (ch === "\\") {
          this.#append(ch);
          this.#state = "escape";
        } else if (ch < " ") {
          this.#lexError(ch);
        } else {
          this.#append(ch);
          this.#push(ch);
        }
        return;
      case "escape":
        this.#append(ch);
        if (ch === "u") {
          this.#unicode = "";
          this.#state = "unicode";
        } else if (ESCAPES[ch] !== undefined) {
          this.#push(ESCAPES[ch]);
          this.#state = "string";
        } else {
          this.#text = this.#text.slice(0, -1);
          this.#lexError(ch);
        }
        return;
      case "unicode":
        if (!/[0-9a-fA-F]/.test(ch)) return this.#lexError(ch);
        this.#append(ch);
        this.#unicode += ch;
        if (this.#unicode.length === 4) {
          this.#push(String.fromCharCode(parseInt(this.#unicode, 16)));
          this.#state = "string";
        }
        return;
      case "number":
        if (/[0-9.eE+-]/.test(ch)) return this.#append(ch);
        this.#endNumber();
        return this.#lex(ch);
      case "keyword":
        if (/[a-zA-Z]/.test(ch)) return this.#append(ch);
        this.#state = "start";
        this.#emitToken({ kind: "keyword", text: this.#text });
        return this.#lex(ch);
    }
  }

  #start(ch: string): void {
    this.#text = "";
    this.#skipping = false;
    if (ch === " " || ch === "\t" || ch === "\n" || ch === "\r") return;
    if (STRUCTURAL.has(ch)) return this.#emitToken({ kind: ch as TokenKind, text: ch });
    if (ch === '"' || ch === "'") {
      this.#quote = ch;
      this.#chars = [];
      this.#text = ch;
      this.#state = "string";
    } else if (ch === "-" || (ch >= "0" && ch <= "9")) {
      this.#text = ch;
      this.#state = "number";
    } else if (/[a-zA-Z]/.test(ch)) {
      this.#text = ch;
      this.#state = "keyword";
    } else {
      this.#lexError(ch);
    }
  }

  /** Adds to the token's text, unless it has outgrown the bound (then it is only read). */
  #append(ch: string): void {
    if (this.#skipping) return;
    this.#text += ch;
    if (this.#size + this.#text.length > MAX_VALUE_SIZE) this.#overflow();
  }

  #push(ch: string): void {
    if (!this.#skipping) this.#chars.push(ch);
  }

  /** The value outgrew the bound mid-token: say so once, drop what was kept, read the token out. */
  #overflow(): void {
    this.#skipping = true;
    this.#text = "";
    this.#chars = [];
    this.#emitBad("JSON token size limit exceeded");
  }

  #endNumber(): void {
    this.#state = "start";
    const text = this.#text;
    if (this.#skipping) return;
    if (!NUMBER.test(text)) return this.#emitToken({ kind: "error", text });
    let value: Json;
    if (/^-?[0-9]+$/.test(text)) {
      const big = BigInt(text);
      if (big < INT64_MIN || big > UINT64_MAX) value = Number(text);
      else {value = big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)
          ? Number(big)
          : big;}
    } else {
      value = Number(text);
    }
    this.#emitToken({ kind: "number", text, value });
  }

  #lexError(ch: string): void {
    const text = this.#text + ch;
    this.#state = "recover";
    this.#emitToken({ kind: "error", text });
  }

  /** QEMU's `json_message_process_token`. */
  #emitToken(token: Token): void {
    if (this.#skipping) {
      this.#skipping = false;
      return; // the overflowed token ends here, unkept
    }
    if (token.kind === "{") this.#braces++;
    else if (token.kind === "}") this.#braces--;
    else if (token.kind === "[") this.#brackets++;
    else if (token.kind === "]") this.#brackets--;
    this.#tokens.push(token);
    this.#size += token.text.length;
    if (token.kind === "error") {
      this.#emitBad(`JSON parse error, stray '${token.text}'`);
    } else if (this.#braces < 0 || this.#brackets < 0 || (this.#braces === 0 && this.#brackets === 0)) {
      const tokens = this.#tokens;
      this.#reset();
      this.#out.push(parseTokens(tokens));
    } else if (this.#size > MAX_VALUE_SIZE) {
      this.#emitBad("JSON token size limit exceeded");
    } else if (this.#braces + this.#brackets > MAX_NESTING) {
      this.#emitBad("JSON nesting depth limit exceeded");
    }
  }

  #emitBad(desc: string): void {
    this.#reset();
    this.#out.push({ kind: "error", desc });
  }

  #reset(): void {
    this.#tokens = [];
    this.#size = 0;
    this.#braces = 0;
    this.#brackets = 0;
  }
}

class ParseError extends Error {}

/** QEMU's `json_parser_parse` over one value's tokens. */
function parseTokens(tokens: Token[]): JsonInput {
  let i = 0;
  const fail = (what: string): never => {
    throw new ParseError(`JSON parse error, ${what}`);
  };
  const next = (): Token | undefined => tokens[i++];
  const peek = (): Token | undefined => tokens[i];
  const value = (): Json => {
    const t = next();
    if (t === undefined) return fail("premature EOI");
    switch (t.kind) {
      case "{": {
        const object: { [key: string]: Json } = {};
        if (peek()?.kind === "}") {
          i++;
          return object;
        }
        for (;;) {
          const keyToken = peek();
          const key = value();
          if (keyToken?.kind !== "string") fail("key is not a string in object");
          if (next()?.kind !== ":") fail("missing : in object pair");
          const member = value();
          if (Object.hasOwn(object, key as string)) fail("duplicate key");
          Object.defineProperty(object, key as string, {
            value: member,
            enumerable: true,
            writable: true,
            configurable: true,
          });
          const sep = next();
          if (sep?.kind === "}") return object;
          if (sep?.kind !== ",") fail("expected separator in dict");
        }
      }
      case "[": {
        const array: Json[] = [];
        if (peek()?.kind === "]") {
          i++;
          return array;
        }
        for (;;) {
          array.push(value());
          const sep = next();
          if (sep?.kind === "]") return array;
          if (sep?.kind !== ",") fail("expected separator in list");
        }
      }
      case "string":
      case "number":
        return t.value as Json;
      case "keyword":
        if (t.text === "true") return true;
        if (t.text === "false") return false;
        if (t.text === "null") return null;
        return fail(`invalid keyword '${t.text}'`);
      default:
        return fail("expecting value");
    }
  };
  try {
    return { kind: "value", value: value() };
  } catch (e) {
    if (e instanceof ParseError) return { kind: "error", desc: e.message };
    throw e;
  }
}

/**
 * Writes `value` as QEMU writes QMP: `{"a": 1, "b": [true, null]}` (a space after `:` and `,`),
 * and every character outside printable ASCII as `\uXXXX` (upper-case hex).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toQmpJson } from "./qmp_json.ts";
 * assert.equal(toQmpJson({ return: {}, id: ["é", 1n << 60n] }), '{"return": {}, "id": ["\\u00E9", 1152921504606846976]}');
 * ```
 */
export function toQmpJson(value: Json): string {
  if (value === null) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "null";
  if (typeof value === "string") return quote(value);
  if (Array.isArray(value)) return `[${value.map(toQmpJson).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${quote(k)}: ${toQmpJson(v)}`).join(", ")}}`;
}

function quote(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i];
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).toUpperCase().padStart(4, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}
