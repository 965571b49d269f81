/**
 * A small encoder of ACPI Machine Language (AML), the bytecode of a DSDT: just the terms the PC
 * board's DSDT needs. Each function returns the encoded bytes of one term; compound terms take their
 * children as encoded bytes, so a table body is built bottom-up and measured once.
 *
 * Encodings from the ACPI Specification 6.5, chapter 20 "ACPI Machine Language (AML)
 * Specification" (§20.2 grammar: NameSeg, NameString, PkgLength, the data objects and the opcodes)
 * and chapter 6.4 "Resource Data Types for ACPI" (the resource descriptors of a
 * ResourceTemplate).
 *
 * @module
 */

/** Opcodes (ACPI 6.5 §20.2.5). */
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const ONES_OP = 0xff;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const NAME_OP = 0x08;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const METHOD_OP = 0x14;
const RETURN_OP = 0xa4;
const EXT_OP_PREFIX = 0x5b;
const DEVICE_OP = 0x82; // after ExtOpPrefix
const ROOT_CHAR = 0x5c; // '\'
const PARENT_PREFIX_CHAR = 0x5e; // '^'
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;

/** PkgLength: one byte holds up to 63; up to three more bytes extend it to 2^28 - 1 (§20.2.4). */
const PKG_LENGTH_ONE_BYTE_MAX = 0x3f;
const PKG_LENGTH_MAX = (1 << 28) - 1;
/** A package of up to 255 elements uses PackageOp's one-byte NumElements. */
const PACKAGE_MAX_ELEMENTS = 0xff;
/** Method flags: ArgCount in bits 0-2, SerializeFlag in bit 3 (§20.2.5.2). */
const METHOD_MAX_ARGS = 7;
const METHOD_SERIALIZED_BIT = 0x08;

/** Small resource item tags (ACPI 6.5 §6.4.2): type << 3 | length. */
const IRQ_NO_FLAGS_TAG = 0x22; // IRQ descriptor, 2 bytes (no information byte)
const IO_TAG = 0x47; // I/O port descriptor, 7 bytes
const END_TAG = 0x79; // end tag, 1 byte (checksum)
/** Large resource item tags (§6.4.3). */
const DWORD_ADDRESS_TAG = 0x87;
const WORD_ADDRESS_TAG = 0x88;
const EXTENDED_IRQ_TAG = 0x89;
/** I/O descriptor information byte: the device decodes 16 address bits. */
const IO_DECODE16_BIT = 0x01;
/** Address space descriptor resource types (§6.4.3.5). */
const ADDRESS_SPACE_MEMORY = 0;
const ADDRESS_SPACE_IO = 1;
const ADDRESS_SPACE_BUS = 2;
/**
 * General flags of a bridge window: producer (bit 0 clear), positive decode (bit 1 clear), minimum
 * and maximum fixed (bits 2 and 3), as a PCI root bridge's _CRS declares its windows.
 */
const ADDRESS_WINDOW_FLAGS = 0x0c;
/** I/O window type-specific flags: ISA and non-ISA ranges (`EntireRange`). */
const IO_ENTIRE_RANGE = 0x03;
/** Memory window type-specific flags: read-write (bit 0), cacheable (bits 2:1 = 1) or not (0). */
const MEMORY_READ_WRITE_BIT = 0x01;
const MEMORY_CACHEABLE = 0x02;
/** Extended interrupt descriptor flags (§6.4.3.6). */
const IRQ_CONSUMER_BIT = 0x01;
const IRQ_EDGE_BIT = 0x02;
const IRQ_ACTIVE_LOW_BIT = 0x04;
const IRQ_SHARED_BIT = 0x08;

/** Concatenates byte arrays. */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  return joined(parts);
}

/** `parts` in one new array, followed by `room` zero bytes. */
function joined(parts: readonly Uint8Array[], room = 0): Uint8Array {
  let length = room;
  for (let i = 0; i < parts.length; i++) length += parts[i].length;
  const out = new Uint8Array(length);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    out.set(parts[i], at);
    at += parts[i].length;
  }
  return out;
}

function uintIn(value: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`AML: ${what} ${value} is not an integer in 0-0x${max.toString(16)}`);
  }
  return value;
}

/** Writes the low `bytes` bytes (at most 4) of `value` little-endian at `out[at]`. */
function putLe(out: Uint8Array, at: number, value: number, bytes: number): void {
  for (let i = 0; i < bytes; i++) out[at + i] = (value >>> (8 * i)) & 0xff;
}

/** Bytes of the PkgLength of a `bodyLength`-byte body (§20.2.4): 1 to 4. */
function pkgLengthSize(bodyLength: number): number {
  uintIn(bodyLength, PKG_LENGTH_MAX, "package body length");
  if (bodyLength + 1 <= PKG_LENGTH_ONE_BYTE_MAX) return 1;
  for (let extra = 1; extra <= 3; extra++) {
    if (bodyLength + 1 + extra < 2 ** (4 + 8 * extra)) return 1 + extra;
  }
  throw new RangeError(`AML: a package of ${bodyLength} bytes passes the PkgLength limit`);
}

/** Writes the `size`-byte PkgLength (from {@link pkgLengthSize}) of a `bodyLength`-byte body at `out[at]`. */
function putPkgLength(out: Uint8Array, at: number, bodyLength: number, size: number): void {
  const total = bodyLength + size;
  if (size === 1) {
    out[at] = total;
    return;
  }
  out[at] = ((size - 1) << 6) | (total & 0x0f);
  for (let i = 1; i < size; i++) out[at + i] = (total >>> (4 + 8 * (i - 1))) & 0xff;
}

/**
 * A PkgLength covering `bodyLength` bytes plus the PkgLength's own bytes (§20.2.4).
 *
 * @throws {RangeError} when the package would pass 2^28 - 1 bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pkgLength } from "./aml.ts";
 * assert.deepEqual([...pkgLength(10)], [11]);
 * assert.deepEqual([...pkgLength(0x100)], [0x42, 0x10]); // 0x102 bytes: two-byte form
 * ```
 */
export function pkgLength(bodyLength: number): Uint8Array {
  const size = pkgLengthSize(bodyLength);
  const out = new Uint8Array(size);
  putPkgLength(out, 0, bodyLength, size);
  return out;
}

/**
 * A term with a PkgLength, in one array: `opcode` (one byte, or two when `extOpcode` is not
 * negative: ExtOpPrefix then it), the PkgLength, `head`, then `parts`.
 */
function packaged(
  opcode: number,
  extOpcode: number,
  head: Uint8Array,
  parts: readonly Uint8Array[],
): Uint8Array {
  let body = head.length;
  for (let i = 0; i < parts.length; i++) body += parts[i].length;
  const ops = extOpcode < 0 ? 1 : 2;
  const size = pkgLengthSize(body);
  const out = new Uint8Array(ops + size + body);
  out[0] = opcode;
  if (extOpcode >= 0) out[1] = extOpcode;
  putPkgLength(out, ops, body, size);
  let at = ops + size;
  out.set(head, at);
  at += head.length;
  for (let i = 0; i < parts.length; i++) {
    out.set(parts[i], at);
    at += parts[i].length;
  }
  return out;
}

const NAME_SEG = /^[A-Z_][A-Z0-9_]{0,3}$/;
const UNDERSCORE = 0x5f;

/** Writes one NameSeg, padded with underscores to 4 characters, at `out[at]`. */
function putNameSeg(out: Uint8Array, at: number, seg: string): void {
  if (!NAME_SEG.test(seg)) {
    throw new RangeError(`AML: "${seg}" is not a name segment (A-Z or _, then up to 3 of A-Z, 0-9, _)`);
  }
  for (let i = 0; i < 4; i++) out[at + i] = i < seg.length ? seg.charCodeAt(i) : UNDERSCORE;
}

/**
 * A NameString (§20.2.2): an optional `\` (root) or `^`s (parents), then dot-separated segments.
 *
 * @throws {RangeError} on a malformed segment or more than 255 segments.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nameString } from "./aml.ts";
 * assert.deepEqual([...nameString("_S5")], [0x5f, 0x53, 0x35, 0x5f]);
 * assert.deepEqual([...nameString("\\_SB.PCI0")].slice(0, 2), [0x5c, 0x2e]); // root, dual name
 * ```
 */
export function nameString(path: string): Uint8Array {
  // The prefix: one `\`, or any number of `^`; its characters are their own encoding.
  let prefix = 0;
  if (path.charCodeAt(0) === ROOT_CHAR) prefix = 1;
  else while (path.charCodeAt(prefix) === PARENT_PREFIX_CHAR) prefix++;
  if (prefix === path.length) { // NullName
    const out = new Uint8Array(prefix + 1);
    for (let i = 0; i < prefix; i++) out[i] = path.charCodeAt(i);
    return out;
  }
  const segs = path.slice(prefix).split(".");
  const count = segs.length;
  if (count > 0xff) throw new RangeError(`AML: "${path}" has more than 255 name segments`);
  const lead = count === 1 ? 0 : count === 2 ? 1 : 2; // DualNamePrefix, or MultiNamePrefix SegCount
  const out = new Uint8Array(prefix + lead + 4 * count);
  for (let i = 0; i < prefix; i++) out[i] = path.charCodeAt(i);
  if (count === 2) out[prefix] = DUAL_NAME_PREFIX;
  else if (count > 2) {
    out[prefix] = MULTI_NAME_PREFIX;
    out[prefix + 1] = count;
  }
  for (let i = 0; i < count; i++) putNameSeg(out, prefix + lead + 4 * i, segs[i]);
  return out;
}

/**
 * An integer constant in the shortest encoding: ZeroOp, OneOp, OnesOp (all 64 bits set), or a
 * Byte/Word/DWord/QWord constant (§20.2.3).
 *
 * @throws {RangeError} for a negative value or one past 2^64 - 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { integer } from "./aml.ts";
 * assert.deepEqual([...integer(0x0f)], [0x0a, 0x0f]);
 * assert.deepEqual([...integer(0x3f8)], [0x0b, 0xf8, 0x03]);
 * ```
 */
export function integer(value: number | bigint): Uint8Array {
  if (typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff) {
    return integer32(value);
  }
  const v = BigInt(value);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) {
    throw new RangeError(`AML: integer ${value} is outside 0-2^64-1`);
  }
  if (v === 0xffff_ffff_ffff_ffffn) return Uint8Array.of(ONES_OP);
  if (v <= 0xffff_ffffn) return integer32(Number(v));
  const bytes = new Uint8Array(9);
  bytes[0] = QWORD_PREFIX;
  new DataView(bytes.buffer).setBigUint64(1, v, true);
  return bytes;
}

/** {@link integer} of a value in 0-0xffffffff. */
function integer32(n: number): Uint8Array {
  if (n === 0) return Uint8Array.of(ZERO_OP);
  if (n === 1) return Uint8Array.of(ONE_OP);
  if (n <= 0xff) return Uint8Array.of(BYTE_PREFIX, n);
  if (n <= 0xffff) return Uint8Array.of(WORD_PREFIX, n & 0xff, n >>> 8);
  const out = new Uint8Array(5);
  out[0] = DWORD_PREFIX;
  putLe(out, 1, n, 4);
  return out;
}

/**
 * A string constant (ASCII, NUL-terminated).
 *
 * @throws {RangeError} for a character outside 0x01-0x7f.
 */
export function string(text: string): Uint8Array {
  const out = new Uint8Array(text.length + 2);
  out[0] = STRING_PREFIX;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 1 || c > 0x7f) throw new RangeError(`AML: string "${text}" is not ASCII without NUL`);
    out[i + 1] = c;
  }
  return out; // the last byte stays 0: the terminator
}

/** `op`, then `a`, then `b`, in one array. */
function opThen(op: number, a: Uint8Array, b?: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + a.length + (b?.length ?? 0));
  out[0] = op;
  out.set(a, 1);
  if (b !== undefined) out.set(b, 1 + a.length);
  return out;
}

/**
 * `Name(name, object)`: DefName := NameOp NameString DataRefObject.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { integer, name } from "./aml.ts";
 * assert.deepEqual([...name("_UID", integer(1))], [0x08, 0x5f, 0x55, 0x49, 0x44, 0x01]);
 * ```
 */
export function name(path: string, object: Uint8Array): Uint8Array {
  return opThen(NAME_OP, nameString(path), object);
}

/**
 * `Package(){…}` of encoded elements (DefPackage, §20.2.5.4).
 *
 * @throws {RangeError} for more than 255 elements.
 */
export function packageOf(elements: readonly Uint8Array[]): Uint8Array {
  if (elements.length > PACKAGE_MAX_ELEMENTS) {
    throw new RangeError(`AML: a package of ${elements.length} elements needs VarPackageOp`);
  }
  return packaged(PACKAGE_OP, -1, Uint8Array.of(elements.length), elements);
}

/** `Buffer(){bytes}` (DefBuffer). */
export function buffer(bytes: Uint8Array): Uint8Array {
  return packaged(BUFFER_OP, -1, integer(bytes.length), [bytes]);
}

/** `Scope(path){…}` (DefScope). */
export function scope(path: string, ...terms: Uint8Array[]): Uint8Array {
  return packaged(SCOPE_OP, -1, nameString(path), terms);
}

/** `Device(name){…}` (DefDevice). */
export function device(path: string, ...terms: Uint8Array[]): Uint8Array {
  return packaged(EXT_OP_PREFIX, DEVICE_OP, nameString(path), terms);
}

/**
 * `Method(name, args, NotSerialized or Serialized){…}` (DefMethod).
 *
 * @throws {RangeError} for more than 7 arguments.
 */
export function method(
  path: string,
  args: number,
  terms: readonly Uint8Array[],
  serialized = false,
): Uint8Array {
  const flags = uintIn(args, METHOD_MAX_ARGS, "method argument count") |
    (serialized ? METHOD_SERIALIZED_BIT : 0);
  const encoded = nameString(path);
  const head = new Uint8Array(encoded.length + 1); // NameString MethodFlags
  head.set(encoded);
  head[encoded.length] = flags;
  return packaged(METHOD_OP, -1, head, terms);
}

/** `Return(value)` (DefReturn). */
export function returnOf(value: Uint8Array): Uint8Array {
  return opThen(RETURN_OP, value);
}

/**
 * The 32-bit compressed EISA id of a PNP id such as "PNP0A03" (`EisaId()`): three letters of 5 bits
 * each and four hex digits, stored big-endian inside the little-endian integer.
 *
 * @throws {RangeError} when `id` is not three capital letters and four hex digits.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eisaId } from "./aml.ts";
 * assert.equal(eisaId("PNP0A03"), 0x030ad041);
 * ```
 */
export function eisaId(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) {
    throw new RangeError(`AML: "${id}" is not an EISA id (three capital letters, four hex digits)`);
  }
  const letter = (i: number) => id.charCodeAt(i) - 0x40;
  const big = ((letter(0) << 26) | (letter(1) << 21) | (letter(2) << 16) | parseInt(id.slice(3), 16)) >>> 0;
  // Byte-swap: the id is defined big-endian, AML integers are little-endian.
  return (((big & 0xff) << 24) | ((big & 0xff00) << 8) | ((big >>> 8) & 0xff00) | (big >>> 24)) >>> 0;
}

/** `EisaId("…")` as an AML integer. */
export function eisaIdObject(id: string): Uint8Array {
  return integer(eisaId(id));
}

/**
 * I/O port descriptor `IO(Decode16, min, max, align, length)` (ACPI 6.5 §6.4.2.5).
 *
 * @throws {RangeError} for ports past 0xffff or an alignment or length past 255.
 */
export function ioPort(min: number, max: number, align: number, length: number): Uint8Array {
  uintIn(min, 0xffff, "IO minimum");
  uintIn(max, 0xffff, "IO maximum");
  uintIn(align, 0xff, "IO alignment");
  uintIn(length, 0xff, "IO length");
  return Uint8Array.of(IO_TAG, IO_DECODE16_BIT, min & 0xff, min >>> 8, max & 0xff, max >>> 8, align, length);
}

/**
 * IRQ descriptor without its information byte, `IRQNoFlags(){irqs}`: edge-triggered, active high,
 * exclusive ISA interrupts (ACPI 6.5 §6.4.2.1).
 *
 * @throws {RangeError} for an IRQ past 15.
 */
export function irqNoFlags(irqs: readonly number[]): Uint8Array {
  let mask = 0;
  for (const irq of irqs) mask |= 1 << uintIn(irq, 15, "ISA IRQ");
  return Uint8Array.of(IRQ_NO_FLAGS_TAG, mask & 0xff, mask >>> 8);
}

/** Trigger, polarity and sharing of an {@link extendedInterrupt}. */
export interface InterruptFlags {
  /** Level- or edge-triggered. */
  readonly trigger: "level" | "edge";
  /** Active high or low. */
  readonly polarity: "high" | "low";
  /** Shared with other devices. */
  readonly shared: boolean;
}

/**
 * Extended interrupt descriptor `Interrupt(ResourceConsumer, …){gsis}` (ACPI 6.5 §6.4.3.6).
 *
 * @throws {RangeError} for no interrupt, more than 255, or one past 2^32 - 1.
 */
export function extendedInterrupt(flags: InterruptFlags, gsis: readonly number[]): Uint8Array {
  if (gsis.length === 0 || gsis.length > 0xff) {
    throw new RangeError(`AML: an Interrupt descriptor lists 1-255 interrupts, not ${gsis.length}`);
  }
  const bits = IRQ_CONSUMER_BIT | (flags.trigger === "edge" ? IRQ_EDGE_BIT : 0) |
    (flags.polarity === "low" ? IRQ_ACTIVE_LOW_BIT : 0) | (flags.shared ? IRQ_SHARED_BIT : 0);
  const body = 2 + 4 * gsis.length; // flags, count, the interrupts
  const out = new Uint8Array(3 + body);
  out[0] = EXTENDED_IRQ_TAG;
  putLe(out, 1, body, 2);
  out[3] = bits;
  out[4] = gsis.length;
  for (let i = 0; i < gsis.length; i++) putLe(out, 5 + 4 * i, uintIn(gsis[i], 0xffff_ffff, "interrupt"), 4);
  return out;
}

function addressSpace(
  tag: number,
  width: 2 | 4,
  type: number,
  typeFlags: number,
  min: number,
  max: number,
): Uint8Array {
  const limit = width === 2 ? 0xffff : 0xffff_ffff;
  uintIn(min, limit, "window minimum");
  uintIn(max, limit, "window maximum");
  if (max < min) throw new RangeError(`AML: window maximum 0x${max.toString(16)} is below its minimum`);
  // Type, general flags, type-specific flags, then granularity, minimum, maximum, translation
  // offset and length, each `width` bytes; granularity and translation stay 0.
  const body = 3 + 5 * width;
  const out = new Uint8Array(3 + body);
  out[0] = tag;
  putLe(out, 1, body, 2);
  out[3] = type;
  out[4] = ADDRESS_WINDOW_FLAGS;
  out[5] = typeFlags;
  putLe(out, 6 + width, min, width);
  putLe(out, 6 + 2 * width, max, width);
  putLe(out, 6 + 4 * width, max - min + 1, width);
  return out;
}

/**
 * `WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, count)`.
 *
 * @throws {RangeError} for bus numbers past 0xffff or max below min.
 */
export function wordBusNumber(min: number, max: number): Uint8Array {
  return addressSpace(WORD_ADDRESS_TAG, 2, ADDRESS_SPACE_BUS, 0, min, max);
}

/**
 * `WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length)`.
 *
 * @throws {RangeError} for ports past 0xffff or max below min.
 */
export function wordIo(min: number, max: number): Uint8Array {
  return addressSpace(WORD_ADDRESS_TAG, 2, ADDRESS_SPACE_IO, IO_ENTIRE_RANGE, min, max);
}

/**
 * `DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable|NonCacheable, ReadWrite,
 * 0, min, max, 0, length)`.
 *
 * @throws {RangeError} for addresses past 0xffffffff or max below min.
 */
export function dwordMemory(min: number, max: number, cacheable: boolean): Uint8Array {
  const flags = MEMORY_READ_WRITE_BIT | (cacheable ? MEMORY_CACHEABLE : 0);
  return addressSpace(DWORD_ADDRESS_TAG, 4, ADDRESS_SPACE_MEMORY, flags, min, max);
}

/**
 * `ResourceTemplate(){descriptors}`: a buffer of the descriptors and an end tag whose checksum byte
 * is 0 ("the checksum is treated as correct", §6.4.2.9).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ioPort, irqNoFlags, resourceTemplate } from "./aml.ts";
 * const crs = resourceTemplate(ioPort(0x3f8, 0x3f8, 0, 8), irqNoFlags([4]));
 * assert.deepEqual([...crs.subarray(-2)], [0x79, 0x00]);
 * ```
 */
export function resourceTemplate(...descriptors: Uint8Array[]): Uint8Array {
  const bytes = joined(descriptors, 2);
  bytes[bytes.length - 2] = END_TAG; // its checksum byte stays 0
  return buffer(bytes);
}
