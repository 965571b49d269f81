/**
 * The compressed kernel inside a bzImage (boot.rst, protocol 2.08+: `payload_offset` and
 * `payload_length`), so a helper can turn a bzImage into the ELF `vmlinux` it carries with the
 * system's decompressors, and boot that instead (docs/kvm-abi.md §8: the in-guest decompressor is too
 * slow on an emulating host). Pure: this finds the bytes and names the format; running `xz`,
 * `gzip` or `zstd` is the caller's business ({@link decompressCommand} says how).
 *
 * The kernel build appends the uncompressed size as a little-endian u32 to every format but gzip,
 * whose own trailer ends with that same field (ISIZE) (scripts/Makefile.lib: `size_append`;
 * arch/x86/boot/compressed/mkpiggy.c reads it back). So the payload's last 4 bytes are always the
 * size, and the stream a decompressor should get is the payload less them, except for gzip.
 *
 * @module
 */

import { LoaderError } from "./loader_error.ts";
import { LINUX_HEADER_MAGIC, ZP } from "./_linux_boot.ts";
import { hex, span, viewOf } from "./_plan.ts";

/** The compression formats Linux can build into a bzImage (CONFIG_KERNEL_*). */
export type PayloadFormat = "gzip" | "bzip2" | "lzma" | "xz" | "lzo" | "lz4" | "zstd";

/** The first protocol with `payload_offset` / `payload_length`. */
export const PAYLOAD_MIN_PROTOCOL = 0x0208;
/** Length of the size the kernel build appends (u32, little-endian). */
const SIZE_TRAILER = 4;
const SECTOR_SIZE = 512;
const DEFAULT_SETUP_SECTS = 4;

/** Leading bytes of each format (what `file` and the kernel's decompress.c look for). */
const MAGICS: readonly [PayloadFormat, readonly number[]][] = [
  ["gzip", [0x1f, 0x8b]],
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
  ["bzip2", [0x42, 0x5a, 0x68]], // "BZh"
  ["lzo", [0x89, 0x4c, 0x5a, 0x4f]], // "\x89LZO"
  ["lz4", [0x02, 0x21, 0x4c, 0x18]], // legacy frame
  ["lzma", [0x5d, 0x00, 0x00]], // lzma-alone: properties 0x5d, dictionary size low bytes
];

/** The compressed kernel of a bzImage. */
export interface BzImagePayload {
  /** Format, sniffed from the first bytes. */
  format: PayloadFormat;
  /** File offset of the payload: protected-mode kernel offset + `payload_offset`. */
  offset: number;
  /** The `payload_length` bytes (a view into the image). */
  data: Uint8Array;
  /** What to feed the decompressor: `data` less the appended size (all of `data` for gzip). */
  stream: Uint8Array;
  /** The uncompressed size: the payload's last 4 bytes (mod 2^32). */
  uncompressedSize: number;
}

/**
 * The compression format `bytes` start with, or undefined.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { payloadFormat } from "./bzimage_payload.ts";
 * assert.equal(payloadFormat(new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])), "xz");
 * assert.equal(payloadFormat(new Uint8Array([0x7f, 0x45])), undefined);
 * ```
 */
export function payloadFormat(bytes: Uint8Array): PayloadFormat | undefined {
  for (const [format, magic] of MAGICS) {
    if (bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b)) return format;
  }
  return undefined;
}

/**
 * The command that decompresses `format` from stdin to stdout, e.g. `["xz", "-dc"]` (lzma through
 * xz's lzma-alone support, lzo through `lzop`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decompressCommand } from "./bzimage_payload.ts";
 * assert.equal(decompressCommand("zstd").join(" "), "zstd -dc");
 * ```
 */
export function decompressCommand(format: PayloadFormat): readonly string[] {
  switch (format) {
    case "gzip":
      return ["gzip", "-dc"];
    case "bzip2":
      return ["bzip2", "-dc"];
    case "lzma":
      return ["xz", "--format=lzma", "-dc"];
    case "xz":
      return ["xz", "-dc"];
    case "lzo":
      return ["lzop", "-dc"];
    case "lz4":
      return ["lz4", "-dc"];
    case "zstd":
      return ["zstd", "-dc"];
  }
}

/**
 * Finds the compressed kernel of a bzImage. Throws {@link LoaderError}: TRUNCATED (the file ends
 * before the header or the payload), BAD_MAGIC (no "HdrS"), PROTOCOL_TOO_OLD (before 2.08, no
 * payload fields), UNKNOWN_FORMAT (an empty payload or one in no known format).
 *
 * @example
 * ```ts ignore
 * const payload = bzImagePayload(Deno.readFileSync("/boot/vmlinuz"));
 * const [cmd, ...args] = decompressCommand(payload.format); // then pipe payload.stream through it
 * ```
 */
export function bzImagePayload(image: Uint8Array): BzImagePayload {
  const format = "bzImage payload";
  const headerEnd = ZP.PAYLOAD_LENGTH + 4;
  if (image.length < headerEnd) {
    throw new LoaderError(
      "TRUNCATED",
      `${format}: the file is ${image.length} bytes; the setup header's payload fields end at ${
        hex(headerEnd)
      }`,
    );
  }
  const view = viewOf(image);
  if (view.getUint32(ZP.HEADER, true) !== LINUX_HEADER_MAGIC) {
    throw new LoaderError("BAD_MAGIC", `${format}: no "HdrS" signature at ${hex(ZP.HEADER)}: not a bzImage`);
  }
  const protocol = view.getUint16(ZP.VERSION, true);
  if (protocol < PAYLOAD_MIN_PROTOCOL) {
    throw new LoaderError(
      "PROTOCOL_TOO_OLD",
      `${format}: boot protocol ${hex(protocol)} has no payload_offset/payload_length (needs 0x208 or later)`,
    );
  }
  const setupSects = image[ZP.SETUP_HEADER] === 0 ? DEFAULT_SETUP_SECTS : image[ZP.SETUP_HEADER];
  const offset = (setupSects + 1) * SECTOR_SIZE + view.getUint32(ZP.PAYLOAD_OFFSET, true);
  const length = view.getUint32(ZP.PAYLOAD_LENGTH, true);
  if (length <= SIZE_TRAILER) {
    throw new LoaderError("UNKNOWN_FORMAT", `${format}: payload_length ${length} leaves no compressed data`);
  }
  if (offset + length > image.length) {
    throw new LoaderError(
      "TRUNCATED",
      `${format}: the payload ${span(BigInt(offset), BigInt(length))} passes the end of the file ` +
        `(${hex(image.length)})`,
    );
  }
  const data = image.subarray(offset, offset + length);
  const kind = payloadFormat(data);
  if (kind === undefined) {
    const first = [...data.subarray(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new LoaderError(
      "UNKNOWN_FORMAT",
      `${format}: the payload at ${
        hex(offset)
      } starts with ${first}: not gzip, bzip2, lzma, xz, lzo, lz4 or zstd`,
    );
  }
  return {
    format: kind,
    offset,
    data,
    stream: kind === "gzip" ? data : data.subarray(0, length - SIZE_TRAILER),
    uncompressedSize: viewOf(data).getUint32(length - SIZE_TRAILER, true),
  };
}
