/**
 * The text encoding of the generated guest modules (`hello64.ts`, `firmware.ts`, …): an image is
 * its size, a fill byte, and base64 lines for the spans that differ from the fill, so that a
 * 256 KiB firmware of mostly zeros stays a few lines long. Pure: no `Deno.*`.
 *
 * Each line of the encoded text is `<hex offset> <base64 of at most 48 bytes>`; blank lines are
 * ignored. Bytes not covered by a line hold the fill byte.
 *
 * @module
 */

/** Bytes per encoded line (64 base64 characters). */
const BYTES_PER_LINE = 48;
/** A run of fill bytes at least this long ends a span (shorter runs stay inline). */
const MIN_FILL_GAP = 32;

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** The engine's own decoder (`Uint8Array.fromBase64`, V8 ≥ 14) when it has one: no string per byte. */
const nativeFromBase64 = (Uint8Array as unknown as { fromBase64?: (text: string) => Uint8Array }).fromBase64;

function fromBase64(text: string): Uint8Array {
  if (nativeFromBase64) return nativeFromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * The byte value that occurs most often in `image` (the smallest such value on a tie; 0 for an
 * empty image).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mostFrequentByte } from "./_image.ts";
 * assert.equal(mostFrequentByte(new Uint8Array([0xff, 0xff, 1])), 0xff);
 * ```
 */
export function mostFrequentByte(image: Uint8Array): number {
  const counts = new Array<number>(256).fill(0);
  for (const byte of image) counts[byte]++;
  let best = 0;
  for (let value = 1; value < 256; value++) if (counts[value] > counts[best]) best = value;
  return best;
}

/**
 * Encodes `image` as lines of `<hex offset> <base64>` covering every byte that differs from
 * `fill` (plus short fill runs between them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeImage, encodeImage } from "./_image.ts";
 * const image = new Uint8Array(100).fill(0xff);
 * image[70] = 1;
 * const text = encodeImage(image, 0xff);
 * assert.equal(text, "000046 AQ==\n");
 * assert.equal(decodeImage(100, 0xff, text)[70], 1);
 * ```
 */
export function encodeImage(image: Uint8Array, fill: number): string {
  const lines: string[] = [];
  const width = Math.max(6, image.length.toString(16).length);
  let i = 0;
  while (i < image.length) {
    if (image[i] === fill) {
      i++;
      continue;
    }
    // A span: from i up to the next run of MIN_FILL_GAP fill bytes (or the end).
    let end = i;
    let gap = 0;
    for (let j = i; j < image.length && gap < MIN_FILL_GAP; j++) {
      if (image[j] === fill) {
        gap++;
      } else {
        gap = 0;
        end = j + 1;
      }
    }
    for (let start = i; start < end; start += BYTES_PER_LINE) {
      const chunk = image.subarray(start, Math.min(end, start + BYTES_PER_LINE));
      lines.push(`${start.toString(16).padStart(width, "0")} ${toBase64(chunk)}`);
    }
    i = end;
  }
  return lines.map((line) => `${line}\n`).join("");
}

/**
 * Rebuilds an image of `size` bytes from the text {@link encodeImage} produced.
 * Throws a `RangeError` for a malformed line or one that reaches past `size`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeImage } from "./_image.ts";
 * const image = decodeImage(8, 0, "000002 AQI=\n");
 * assert.equal(image.join(","), "0,0,1,2,0,0,0,0");
 * ```
 */
export function decodeImage(size: number, fill: number, text: string): Uint8Array {
  const image = new Uint8Array(size).fill(fill);
  const spans: { offset: number; length: number }[] = [];
  const pattern = /^([0-9a-f]+) ([A-Za-z0-9+/=]+)$/;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const match = pattern.exec(line.trim());
    if (match === null) throw new RangeError(`malformed image line: ${JSON.stringify(line)}`);
    const offset = parseInt(match[1], 16);
    const bytes = fromBase64(match[2]);
    if (offset + bytes.length > size) {
      throw new RangeError(`image line at offset 0x${match[1]} reaches past the image size ${size}`);
    }
    image.set(bytes, offset);
    spans.push({ offset, length: bytes.length });
  }
  if (fill === 0) ZERO_FILLED.set(image, spans);
  return image;
}

/** The images {@link decodeImage} made with a zero fill, with the spans that hold their other bytes. */
const ZERO_FILLED = new WeakMap<Uint8Array, readonly { offset: number; length: number }[]>();

/**
 * Where `image`'s non-zero bytes can be, when it was decoded here with a zero fill: every byte outside
 * these spans is 0. Undefined for any other array (a file read from disk, a copy).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeImage, nonZeroSpans } from "./_image.ts";
 * const image = decodeImage(4096, 0, "000100 AQI=\n");
 * assert.deepEqual(nonZeroSpans(image), [{ offset: 0x100, length: 2 }]);
 * assert.equal(nonZeroSpans(image.slice()), undefined);
 * ```
 */
export function nonZeroSpans(image: Uint8Array): readonly { offset: number; length: number }[] | undefined {
  return ZERO_FILLED.get(image);
}
