/**
 * QEMU-style size arguments (`-m 256M`, `-m 8G`, `-m 512` = MiB).
 *
 * @module
 */

const UNITS: Record<string, bigint> = { B: 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n };

/**
 * Parses a size; a bare number is in `defaultUnit` (MiB for `-m`, as QEMU).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseSize } from "./size.ts";
 * assert.equal(parseSize("3584M"), 3584n << 20n);
 * assert.equal(parseSize("512"), 512n << 20n);
 * ```
 */
export function parseSize(text: string, defaultUnit: keyof typeof UNITS = "M"): bigint {
  const m = /^(\d+)(?:\.(\d+))?\s*([bBkKmMgGtT])?(?:i?[bB])?$/.exec(text.trim());
  if (!m) throw new RangeError(`"${text}" is not a size (examples: 256M, 8G, 512)`);
  const unit = UNITS[(m[3] ?? defaultUnit).toUpperCase()];
  const whole = BigInt(m[1]) * unit;
  const frac = m[2] ? (BigInt(m[2]) * unit) / 10n ** BigInt(m[2].length) : 0n;
  return whole + frac;
}

/** `256 MiB`, `8 GiB`, `64 KiB` for messages; `23.5 GiB` where the size is not a whole unit. */
export function formatSize(bytes: bigint): string {
  const units = [["TiB", 1n << 40n], ["GiB", 1n << 30n], ["MiB", 1n << 20n], ["KiB", 1n << 10n]] as const;
  for (const [unit, n] of units) {
    if (bytes >= n && bytes % n === 0n && n >= 1n << 20n) return `${bytes / n} ${unit}`;
  }
  for (const [unit, n] of units) if (bytes >= n) return `${(Number(bytes) / Number(n)).toFixed(1)} ${unit}`;
  return `${bytes} bytes`;
}
