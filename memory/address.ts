/**
 * Checked arithmetic on guest addresses and sizes.
 *
 * Guest-physical addresses, sizes and offsets are `bigint` everywhere: QEMU's root regions are
 * 2^64 bytes long, so an end address can be 2^64 exactly, and alias arithmetic produces negative
 * intermediate bases. Public inputs accept `number | bigint` and are converted once, here.
 *
 * @module
 */

import { show } from "./_check.ts";

/** A guest address, size or offset as a caller may pass it. */
export type AddrInput = number | bigint;

/** 2^64: the size of a whole 64-bit address space (QEMU's `int128_2_64()`). */
export const ADDRESS_SPACE_SIZE: bigint = 1n << 64n;

/** 2^64 - 1. Passed as a size it means 2^64, as QEMU's `UINT64_MAX` does. */
export const UINT64_MAX: bigint = ADDRESS_SPACE_SIZE - 1n;

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

function integral(value: unknown, what: string): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new RangeError(`${what}: ${value} is not an integer`);
    if (!Number.isSafeInteger(value)) {
      throw new RangeError(`${what}: ${value} is beyond 2^53; pass a bigint for exact values`);
    }
    return BigInt(value);
  }
  throw new TypeError(`${what}: expected a number or bigint, got ${show(value)}`);
}

/**
 * Converts an address or offset to a bigint in [0, 2^64).
 *
 * @throws {TypeError} if `value` is not a number or bigint.
 * @throws {RangeError} if it is negative, past 2^64-1, a fraction, or an unsafe number; the message starts
 * with `what`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toAddress } from "./address.ts";
 * assert.equal(toAddress(0x1000, "offset"), 0x1000n);
 * assert.throws(() => toAddress(-1, "offset"), RangeError);
 * ```
 */
export function toAddress(value: AddrInput, what: string): bigint {
  const v = integral(value, what);
  if (v < 0n) throw new RangeError(`${what}: ${value} is negative`);
  if (v > UINT64_MAX) throw new RangeError(`${what}: 0x${v.toString(16)} is beyond 2^64-1`);
  return v;
}

/**
 * Converts a size to a bigint in [0, 2^64]; 2^64-1 means 2^64, as in QEMU.
 *
 * @throws {TypeError} if `value` is not a number or bigint.
 * @throws {RangeError} if it is negative, past 2^64, a fraction, or an unsafe number; the message starts with
 * `what`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ADDRESS_SPACE_SIZE, toSize } from "./address.ts";
 * assert.equal(toSize(0xffff_ffff_ffff_ffffn, "size"), ADDRESS_SPACE_SIZE);
 * ```
 */
export function toSize(value: AddrInput, what: string): bigint {
  const v = integral(value, what);
  if (v < 0n) throw new RangeError(`${what}: ${value} is negative`);
  if (v === UINT64_MAX) return ADDRESS_SPACE_SIZE;
  if (v > ADDRESS_SPACE_SIZE) throw new RangeError(`${what}: 0x${v.toString(16)} is beyond 2^64`);
  return v;
}

/**
 * Checks a priority is a signed 32-bit integer, as QEMU's `int priority`.
 *
 * @throws {RangeError} if `value` is not a signed 32-bit integer, naming `what`.
 */
export function toPriority(value: number, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < INT32_MIN || value > INT32_MAX) {
    throw new RangeError(`${what}: priority ${value} is not a signed 32-bit integer`);
  }
  return value;
}

/**
 * `a + b`, refusing a result past `limit` (2^64 by default) instead of wrapping.
 *
 * @throws {RangeError} if `a + b` passes `limit`, naming `what`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkedAdd } from "./address.ts";
 * assert.equal(checkedAdd(0xffff_f000n, 0x1000n, "end"), 0x1_0000_0000n);
 * assert.throws(() => checkedAdd(1n << 63n, 1n << 63n, "end", 1n << 63n), RangeError);
 * ```
 */
export function checkedAdd(a: bigint, b: bigint, what: string, limit = ADDRESS_SPACE_SIZE): bigint {
  const sum = a + b;
  if (sum > limit) {
    throw new RangeError(`${what}: 0x${a.toString(16)} + 0x${b.toString(16)} passes 0x${limit.toString(16)}`);
  }
  return sum;
}

/** Rounds `value` up to a multiple of `align` (a power of two). */
export function alignUp(value: bigint, align: bigint): bigint {
  return (value + align - 1n) & -align;
}

/** Rounds `value` down to a multiple of `align` (a power of two). */
export function alignDown(value: bigint, align: bigint): bigint {
  return value & -align;
}

/** Whether the half-open ranges [aStart, aStart+aSize) and [bStart, bStart+bSize) share a byte. */
export function rangesOverlap(aStart: bigint, aSize: bigint, bStart: bigint, bSize: bigint): boolean {
  return aSize > 0n && bSize > 0n && aStart < bStart + bSize && bStart < aStart + aSize;
}

/** `%016x` of a value taken modulo 2^64, as QEMU prints `hwaddr`s. */
export function hex16(value: bigint): string {
  return BigInt.asUintN(64, value).toString(16).padStart(16, "0");
}
