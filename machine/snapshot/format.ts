/**
 * The snapshot state file: a versioned binary container of tagged sections with a CRC-32 over
 * everything, pure (no I/O). docs/snapshot-format.md describes it byte by byte.
 *
 * ```
 * header   "KVMTSNAP" (8) | version u32 | section count u32 | total length u64      (24 bytes)
 * section  type u32 | payload length u64 | payload (one encoded value)              (× count)
 * trailer  CRC-32 (IEEE, as zlib's) of every byte before it, u32                    (4 bytes)
 * ```
 * All integers little-endian. A payload is one value in a small self-describing encoding
 * ({@link encodeValue}): null, booleans, float64 numbers, arbitrary-size bigints, UTF-8 strings,
 * byte strings, arrays and string-keyed objects — exactly what device states and KVM's structs
 * are made of, bigints and bytes stored exactly.
 *
 * @module
 */

/** The file's first 8 bytes. */
export const SNAPSHOT_MAGIC = "KVMTSNAP";
/** The version this build writes and reads. */
export const SNAPSHOT_VERSION = 7;
/** Bytes of the header. */
export const SNAPSHOT_HEADER_SIZE = 24;
/** Bytes of the CRC-32 trailer. */
const TRAILER_SIZE = 4;

/** A value a section holds (structurally the devices' `StateValue`). */
export type SnapValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | Uint8Array
  | readonly SnapValue[]
  | { readonly [key: string]: SnapValue };

/** A state file that cannot be read: one line saying why. */
export class SnapshotFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SnapshotFormatError";
  }
}

/** One section: its type number and its value. */
export interface Section {
  /** The section type (see {@link SECTION_TYPES}). */
  readonly type: number;
  /** Its value. */
  readonly value: SnapValue;
}

/** The section types of version 1. */
export const SECTION_TYPES = {
  /** RAM size, vCPU count, firmware, boot plan, PCI devices: what the board is built from. */
  board: 1,
  /** One per vCPU, in vCPU order: KVM's vCPU state. */
  vcpu: 2,
  /** The VM: both PICs, the IOAPIC, the PIT, kvmclock. */
  vm: 3,
  /** Every device's state by name. */
  devices: 4,
  /** The memory file: kind (full or diff), size, page size, base reference. */
  memory: 5,
} as const;

// ---------------------------------------------------------------------------------------------
// CRC-32

/**
 * Tables for CRC-32 eight bytes at a time ("slicing-by-8"): table `k` (entries 256k … 256k+255)
 * is the CRC of a byte followed by k zero bytes. Table 0 is the classic byte-at-a-time table.
 */
const CRC_TABLES = (() => {
  const tables = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb8_8320 ^ (c >>> 1) : c >>> 1;
    tables[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) {
      const previous = tables[256 * (k - 1) + n];
      tables[256 * k + n] = (previous >>> 8) ^ tables[previous & 0xff];
    }
  }
  return tables;
})();

/**
 * CRC-32 (IEEE 802.3, reflected, the one of zlib and PNG) of `bytes`, continuing from `crc`.
 * Eight bytes per step: a restore checks its state file before the optimising compilers have
 * seen this loop, so it runs in the interpreter, where fewer steps is what counts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { crc32 } from "./format.ts";
 * assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf4_3926);
 * ```
 */
export function crc32(bytes: Uint8Array, crc = 0): number {
  const t = CRC_TABLES;
  let c = ~crc;
  const n = bytes.length;
  const whole = n - (n & 7);
  let i = 0;
  for (; i < whole; i += 8) {
    const low = c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    c = t[1792 + (low & 0xff)] ^ t[1536 + ((low >>> 8) & 0xff)] ^ t[1280 + ((low >>> 16) & 0xff)] ^
      t[1024 + (low >>> 24)] ^ t[768 + bytes[i + 4]] ^ t[512 + bytes[i + 5]] ^ t[256 + bytes[i + 6]] ^
      t[bytes[i + 7]];
  }
  for (; i < n; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Values

const TAG_NULL = 0;
const TAG_FALSE = 1;
const TAG_TRUE = 2;
const TAG_NUMBER = 3;
const TAG_BIGINT = 4;
const TAG_STRING = 5;
const TAG_BYTES = 6;
const TAG_ARRAY = 7;
const TAG_OBJECT = 8;

/** Nesting deeper than this is refused on decode (no stack exhaustion from a hostile file). */
const MAX_DEPTH = 64;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The CRC-32 of a whole state file (what a diff records of its base) that {@link encodeStateFile}
 * wrote or {@link decodeStateFile} accepted: the body's CRC stored in its trailer, continued over
 * the trailer, so the file is not read a second time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { crc32, encodeStateFile, stateFileCrc } from "./format.ts";
 * const bytes = encodeStateFile([{ type: 1, value: { cpus: 2 } }]);
 * assert.equal(stateFileCrc(bytes), crc32(bytes));
 * ```
 */
export function stateFileCrc(bytes: Uint8Array): number {
  const trailer = bytes.subarray(bytes.length - TRAILER_SIZE);
  return crc32(trailer, new DataView(trailer.buffer, trailer.byteOffset, TRAILER_SIZE).getUint32(0, true));
}

/** A growable byte buffer. */
class Writer {
  #bytes = new Uint8Array(4096);
  #view = new DataView(this.#bytes.buffer);
  length = 0;

  #room(n: number): void {
    if (this.length + n <= this.#bytes.length) return;
    let size = this.#bytes.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#bytes.subarray(0, this.length));
    this.#bytes = next;
    this.#view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.#room(1);
    this.#bytes[this.length++] = v;
  }

  u32(v: number): void {
    this.#room(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }

  u64(v: bigint): void {
    this.#room(8);
    this.#view.setBigUint64(this.length, v, true);
    this.length += 8;
  }

  f64(v: number): void {
    this.#room(8);
    this.#view.setFloat64(this.length, v, true);
    this.length += 8;
  }

  bytes(b: Uint8Array): void {
    this.#room(b.length);
    this.#bytes.set(b, this.length);
    this.length += b.length;
  }

  patchU64(at: number, v: bigint): void {
    this.#view.setBigUint64(at, v, true);
  }

  result(): Uint8Array {
    return this.#bytes.slice(0, this.length);
  }
}

function writeValue(w: Writer, value: SnapValue, path: string): void {
  if (value === null) return w.u8(TAG_NULL);
  switch (typeof value) {
    case "boolean":
      return w.u8(value ? TAG_TRUE : TAG_FALSE);
    case "number":
      w.u8(TAG_NUMBER);
      return w.f64(value);
    case "bigint": {
      w.u8(TAG_BIGINT);
      // sign byte, then the magnitude as little-endian bytes with a u32 length
      const negative = value < 0n;
      let magnitude = negative ? -value : value;
      const digits: number[] = [];
      while (magnitude > 0n) {
        digits.push(Number(magnitude & 0xffn));
        magnitude >>= 8n;
      }
      w.u8(negative ? 1 : 0);
      w.u32(digits.length);
      return w.bytes(Uint8Array.from(digits));
    }
    case "string": {
      const bytes = encoder.encode(value);
      w.u8(TAG_STRING);
      w.u32(bytes.length);
      return w.bytes(bytes);
    }
  }
  if (value instanceof Uint8Array) {
    w.u8(TAG_BYTES);
    w.u32(value.length);
    return w.bytes(value);
  }
  if (Array.isArray(value)) {
    w.u8(TAG_ARRAY);
    w.u32(value.length);
    value.forEach((item, i) => writeValue(w, item, `${path}[${i}]`));
    return;
  }
  if (typeof value === "object" && [Object.prototype, null].includes(Object.getPrototypeOf(value))) {
    const entries = Object.entries(value as Record<string, SnapValue>);
    w.u8(TAG_OBJECT);
    w.u32(entries.length);
    for (const [key, item] of entries) {
      const k = encoder.encode(key);
      w.u32(k.length);
      w.bytes(k);
      writeValue(w, item, `${path}.${key}`);
    }
    return;
  }
  throw new TypeError(`snapshot: ${path} is not a storable value (${Object.prototype.toString.call(value)})`);
}

/** Bounds-checked reads over a byte range; every overrun is the same clean error. */
class Reader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  at: number;
  readonly end: number;

  constructor(bytes: Uint8Array, start: number, end: number) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = start;
    this.end = end;
  }

  #need(n: number, what: string): number {
    if (n > this.end - this.at) {
      throw new SnapshotFormatError(`snapshot state: ${what} at byte ${this.at} runs past its section`);
    }
    const at = this.at;
    this.at += n;
    return at;
  }

  u8(what: string): number {
    return this.#bytes[this.#need(1, what)];
  }

  u32(what: string): number {
    return this.#view.getUint32(this.#need(4, what), true);
  }

  u64(what: string): bigint {
    return this.#view.getBigUint64(this.#need(8, what), true);
  }

  f64(what: string): number {
    return this.#view.getFloat64(this.#need(8, what), true);
  }

  bytes(n: number, what: string): Uint8Array {
    const at = this.#need(n, what);
    return this.#bytes.slice(at, at + n);
  }

  /** A UTF-8 string of `n` bytes; ASCII (every key this project writes) without a copy or a decoder call. */
  text(n: number, what: string): string {
    const at = this.#need(n, what);
    const b = this.#bytes;
    let s = "";
    for (let i = at; i < at + n; i++) {
      if (b[i] >= 0x80) return text(b.subarray(at, at + n), at + n);
      s += String.fromCharCode(b[i]);
    }
    return s;
  }
}

function readValue(r: Reader, depth: number): SnapValue {
  if (depth > MAX_DEPTH) {
    throw new SnapshotFormatError(`snapshot state: values nested deeper than ${MAX_DEPTH}`);
  }
  const tag = r.u8("a value tag");
  switch (tag) {
    case TAG_NULL:
      return null;
    case TAG_FALSE:
      return false;
    case TAG_TRUE:
      return true;
    case TAG_NUMBER:
      return r.f64("a number");
    case TAG_BIGINT: {
      const sign = r.u8("a bigint sign");
      if (sign > 1) throw new SnapshotFormatError(`snapshot state: bigint sign byte ${sign} at ${r.at - 1}`);
      const digits = r.bytes(r.u32("a bigint length"), "a bigint");
      let v = 0n;
      for (let i = digits.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(digits[i]);
      return sign ? -v : v;
    }
    case TAG_STRING:
      return r.text(r.u32("a string length"), "a string");
    case TAG_BYTES:
      return r.bytes(r.u32("a byte string length"), "a byte string");
    case TAG_ARRAY: {
      const count = r.u32("an array length");
      if (count > r.end - r.at) {
        throw new SnapshotFormatError(`snapshot state: array of ${count} items runs past its section`);
      }
      const out: SnapValue[] = [];
      for (let i = 0; i < count; i++) out.push(readValue(r, depth + 1));
      return out;
    }
    case TAG_OBJECT: {
      const count = r.u32("an object size");
      if (count > r.end - r.at) {
        throw new SnapshotFormatError(`snapshot state: object of ${count} keys runs past its section`);
      }
      const out: Record<string, SnapValue> = {};
      for (let i = 0; i < count; i++) {
        const key = r.text(r.u32("a key length"), "a key");
        const value = readValue(r, depth + 1);
        // "__proto__" is stored as a key like any other, never as the prototype.
        if (key === "__proto__") Object.defineProperty(out, key, { value, enumerable: true, writable: true });
        else out[key] = value;
      }
      return out;
    }
    default:
      throw new SnapshotFormatError(`snapshot state: unknown value tag ${tag} at byte ${r.at - 1}`);
  }
}

function text(bytes: Uint8Array, at: number): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new SnapshotFormatError(`snapshot state: a string before byte ${at} is not UTF-8`);
  }
}

/**
 * One value in the payload encoding (a section's payload).
 *
 * @throws {TypeError} naming the path of a value that cannot be stored (a function, a Map…).
 */
export function encodeValue(value: SnapValue): Uint8Array {
  const w = new Writer();
  writeValue(w, value, "value");
  return w.result();
}

/**
 * The value {@link encodeValue} wrote.
 *
 * @throws {SnapshotFormatError} for bytes that are not exactly one value.
 */
export function decodeValue(bytes: Uint8Array): SnapValue {
  const r = new Reader(bytes, 0, bytes.length);
  const value = readValue(r, 0);
  if (r.at !== bytes.length) {
    throw new SnapshotFormatError(`snapshot state: ${bytes.length - r.at} bytes after a value`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// The file

/**
 * The whole state file for `sections`, in order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeStateFile, encodeStateFile } from "./format.ts";
 * const bytes = encodeStateFile([{ type: 1, value: { ramSize: 256n << 20n, cpus: 2 } }]);
 * assert.deepEqual(decodeStateFile(bytes), [{ type: 1, value: { ramSize: 256n << 20n, cpus: 2 } }]);
 * ```
 */
export function encodeStateFile(sections: readonly Section[]): Uint8Array {
  const w = new Writer();
  w.bytes(encoder.encode(SNAPSHOT_MAGIC));
  w.u32(SNAPSHOT_VERSION);
  w.u32(sections.length);
  w.u64(0n); // total length, patched below
  for (const { type, value } of sections) {
    const payload = encodeValue(value);
    w.u32(type);
    w.u64(BigInt(payload.length));
    w.bytes(payload);
  }
  w.patchU64(16, BigInt(w.length + TRAILER_SIZE));
  const body = w.result();
  const out = new Uint8Array(body.length + TRAILER_SIZE);
  out.set(body);
  new DataView(out.buffer).setUint32(body.length, crc32(body), true);
  return out;
}

/**
 * The sections of a state file, checked in this order: the magic, the length (a shorter file is
 * "truncated"), the CRC-32 (any flipped bit), the version, then every section's bounds and values.
 *
 * @throws {SnapshotFormatError} with one line naming the first problem.
 */
export function decodeStateFile(bytes: Uint8Array): Section[] {
  if (bytes.length < SNAPSHOT_MAGIC.length || text(bytes.subarray(0, 8), 0) !== SNAPSHOT_MAGIC) {
    throw new SnapshotFormatError(`not a kvm-ts snapshot state file (no "${SNAPSHOT_MAGIC}" magic)`);
  }
  if (bytes.length < SNAPSHOT_HEADER_SIZE + TRAILER_SIZE) {
    throw new SnapshotFormatError(`snapshot state file truncated: ${bytes.length} bytes, not even a header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const total = view.getBigUint64(16, true);
  if (total > BigInt(bytes.length)) {
    throw new SnapshotFormatError(`snapshot state file truncated: ${bytes.length} of ${total} bytes`);
  }
  if (total < BigInt(bytes.length)) {
    throw new SnapshotFormatError(
      `snapshot state file corrupted: ${bytes.length} bytes where its header says ${total}`,
    );
  }
  const bodyLength = bytes.length - TRAILER_SIZE;
  const stored = view.getUint32(bodyLength, true);
  const computed = crc32(bytes.subarray(0, bodyLength));
  if (stored !== computed) {
    throw new SnapshotFormatError(
      `snapshot state file corrupted: CRC-32 0x${computed.toString(16).padStart(8, "0")} where 0x${
        stored.toString(16).padStart(8, "0")
      } was stored`,
    );
  }
  const version = view.getUint32(8, true);
  if (version !== SNAPSHOT_VERSION) {
    throw new SnapshotFormatError(
      `snapshot state file version ${version}: this build reads version ${SNAPSHOT_VERSION} only`,
    );
  }
  const count = view.getUint32(12, true);
  const r = new Reader(bytes, SNAPSHOT_HEADER_SIZE, bodyLength);
  const sections: Section[] = [];
  for (let i = 0; i < count; i++) {
    const type = r.u32(`section ${i}'s type`);
    const length = r.u64(`section ${i}'s length`);
    if (length > BigInt(r.end - r.at)) {
      throw new SnapshotFormatError(`snapshot state: section ${i} (type ${type}) runs past the file`);
    }
    const end = r.at + Number(length);
    const inner = new Reader(bytes, r.at, end);
    const value = readValue(inner, 0);
    if (inner.at !== end) {
      throw new SnapshotFormatError(`snapshot state: section ${i} has ${end - inner.at} extra bytes`);
    }
    r.at = end;
    sections.push({ type, value });
  }
  if (r.at !== bodyLength) {
    throw new SnapshotFormatError(`snapshot state: ${bodyLength - r.at} bytes after the last section`);
  }
  return sections;
}
