/**
 * The framing layer of GDB's remote serial protocol: `$payload#cs` packets with a modulo-256
 * checksum, `+`/`-` acknowledgements, the out-of-band interrupt byte 0x03, and the binary escape
 * (`}` followed by the byte XOR 0x20) that `X` packets and `qXfer` replies use. Pure: bytes in,
 * events and bytes out, no sockets.
 *
 * Source: the GDB manual, "Remote Protocol" → "Overview" and "Packets" (the protocol text, not
 * any implementation).
 *
 * @module
 */

/** The byte that starts a packet. */
export const PACKET_START = 0x24; // '$'
/** The byte that ends a packet's payload; two hex digits of checksum follow. */
export const PACKET_END = 0x23; // '#'
/** The escape byte: the next byte is the original XOR {@link ESCAPE_XOR}. */
export const ESCAPE = 0x7d; // '}'
/** What an escaped byte is XOR-ed with. */
export const ESCAPE_XOR = 0x20;
/** Run-length marker in replies; a literal `*` must therefore be escaped in binary data. */
export const RUN_LENGTH = 0x2a; // '*'
/** Positive acknowledgement. */
export const ACK = 0x2b; // '+'
/** Negative acknowledgement: send the packet again. */
export const NACK = 0x2d; // '-'
/** gdb's Ctrl-C, sent outside any packet while the target runs. */
export const INTERRUPT = 0x03;

/** One thing the reader recognised in the incoming byte stream. */
export type PacketEvent =
  | {
    /** A whole packet; `ok` is false when its checksum did not match. */
    readonly kind: "packet";
    /** The payload as a Latin-1 string (one char per byte, escapes still in place). */
    readonly payload: string;
    /** Whether the checksum matched. */
    readonly ok: boolean;
  }
  | { readonly kind: "ack" }
  | { readonly kind: "nack" }
  | { readonly kind: "interrupt" }
  | {
    /** A packet longer than the reader accepts: dropped, answered like a bad checksum. */
    readonly kind: "overflow";
  };

/** Modulo-256 sum of the bytes (of a Latin-1 string). */
export function checksum(payload: string | Uint8Array): number {
  let sum = 0;
  if (typeof payload === "string") {
    for (let i = 0; i < payload.length; i++) sum += payload.charCodeAt(i);
  } else {
    for (const byte of payload) sum += byte;
  }
  return sum & 0xff;
}

const HEX_DIGITS = "0123456789abcdef";

/** Two lower-case hex digits. */
export function hex8(value: number): string {
  return HEX_DIGITS[(value >> 4) & 0xf] + HEX_DIGITS[value & 0xf];
}

/** Bytes as lower-case hex, two digits each. */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += hex8(byte);
  return out;
}

/**
 * Hex digits (an even number of them) as bytes.
 *
 * @throws {RangeError} on an odd length or a non-hex character.
 */
export function fromHex(text: string): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new RangeError(`not an even number of hex digits: ${JSON.stringify(text.slice(0, 40))}`);
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

/** Latin-1: each byte one char, lossless both ways. */
export function latin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 0x2000) {
    out += String.fromCharCode(...bytes.subarray(i, i + 0x2000));
  }
  return out;
}

/** The bytes of a Latin-1 string. */
export function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/** Whether `byte` must be escaped inside a packet: `$`, `#`, `}` and `*`. */
function needsEscape(byte: number): boolean {
  return byte === PACKET_START || byte === PACKET_END || byte === ESCAPE || byte === RUN_LENGTH;
}

/** Binary data made safe for a packet: `$ # } *` become `}` and the byte XOR 0x20. */
export function escapeBinary(data: Uint8Array): Uint8Array {
  let extra = 0;
  for (const byte of data) if (needsEscape(byte)) extra++;
  const out = new Uint8Array(data.length + extra);
  let j = 0;
  for (const byte of data) {
    if (needsEscape(byte)) {
      out[j++] = ESCAPE;
      out[j++] = byte ^ ESCAPE_XOR;
    } else {
      out[j++] = byte;
    }
  }
  return out;
}

/**
 * The inverse of {@link escapeBinary}, over a Latin-1 string (the data part of an `X` packet).
 *
 * @throws {RangeError} when the data ends in the middle of an escape.
 */
export function unescapeBinary(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  let j = 0;
  for (let i = 0; i < text.length; i++) {
    const byte = text.charCodeAt(i);
    if (byte === ESCAPE) {
      if (++i >= text.length) throw new RangeError("binary data ends inside an escape");
      out[j++] = text.charCodeAt(i) ^ ESCAPE_XOR;
    } else {
      out[j++] = byte;
    }
  }
  return out.slice(0, j);
}

/** `$payload#cs` for a payload given as a Latin-1 string or bytes (already escaped where needed). */
export function framePacket(payload: string | Uint8Array): Uint8Array {
  const body = typeof payload === "string" ? latin1Bytes(payload) : payload;
  const out = new Uint8Array(body.length + 4);
  out[0] = PACKET_START;
  out.set(body, 1);
  out[body.length + 1] = PACKET_END;
  const cs = hex8(checksum(body));
  out[body.length + 2] = cs.charCodeAt(0);
  out[body.length + 3] = cs.charCodeAt(1);
  return out;
}

const enum ReaderState {
  Idle,
  Payload,
  Checksum1,
  Checksum2,
}

/**
 * Splits an incoming byte stream into {@link PacketEvent}s. Bytes outside a packet other than
 * `+`, `-`, 0x03 and `$` are ignored (line noise); a packet longer than `maxPayload` bytes is
 * dropped and reported as `overflow`, so a client cannot make the stub buffer without bound.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PacketReader } from "./gdb_packet.ts";
 * const reader = new PacketReader();
 * const events = reader.push(new TextEncoder().encode("+$g#67\x03"));
 * assert.deepEqual(events, [{ kind: "ack" }, { kind: "packet", payload: "g", ok: true }, { kind: "interrupt" }]);
 * ```
 */
export class PacketReader {
  readonly #maxPayload: number;
  #state = ReaderState.Idle;
  #payload: number[] = [];
  #overflow = false;
  #checksumHigh = 0;

  /** `maxPayload`: the longest payload accepted (default 64 KiB). */
  constructor(maxPayload = 0x1_0000) {
    this.#maxPayload = maxPayload;
  }

  /** Feeds bytes; returns the events they complete, in order. */
  push(bytes: Uint8Array): PacketEvent[] {
    const events: PacketEvent[] = [];
    for (const byte of bytes) {
      switch (this.#state) {
        case ReaderState.Idle:
          if (byte === PACKET_START) {
            this.#state = ReaderState.Payload;
            this.#payload = [];
            this.#overflow = false;
          } else if (byte === ACK) events.push({ kind: "ack" });
          else if (byte === NACK) events.push({ kind: "nack" });
          else if (byte === INTERRUPT) events.push({ kind: "interrupt" });
          break;
        case ReaderState.Payload:
          if (byte === PACKET_END) this.#state = ReaderState.Checksum1;
          else if (this.#payload.length < this.#maxPayload) this.#payload.push(byte);
          else this.#overflow = true;
          break;
        case ReaderState.Checksum1:
          this.#checksumHigh = byte;
          this.#state = ReaderState.Checksum2;
          break;
        case ReaderState.Checksum2: {
          this.#state = ReaderState.Idle;
          if (this.#overflow) {
            events.push({ kind: "overflow" });
            break;
          }
          const digits = String.fromCharCode(this.#checksumHigh, byte);
          const body = Uint8Array.from(this.#payload);
          const ok = /^[0-9a-fA-F]{2}$/.test(digits) && parseInt(digits, 16) === checksum(body);
          events.push({ kind: "packet", payload: latin1(body), ok });
          this.#payload = [];
          break;
        }
      }
    }
    return events;
  }
}
