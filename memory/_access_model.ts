/**
 * A slow, plain model of guest accesses for property tests: QEMU's `flatview_read_continue` /
 * `flatview_write_continue`, `memory_access_size` and `access_with_adjusted_size`, all in bigints,
 * finding each range by a linear scan of the view's ranges. `AddressSpace` does the same work on
 * doubles where they are exact; the tests check both give the same bytes, results and device calls.
 * (No re-entrancy guard: the generated devices never re-enter.)
 *
 * @module
 */

import type { FlatRange } from "./flat_view.ts";
import type { MemoryRegion } from "./memory_region.ts";
import { type MemoryRegionOps, MemTxResult } from "./memory_region_ops.ts";

const UNASSIGNED: MemoryRegionOps = { valid: { accepts: () => false } };

function find(ranges: readonly FlatRange[], addr: bigint): FlatRange | undefined {
  return ranges.find((r) => addr >= r.start && addr < r.start + r.size);
}

function accessSize(ops: MemoryRegionOps, remaining: number, offset: bigint): number {
  let max = ops.valid?.max || 4;
  if (!ops.impl?.unaligned) {
    const align = Number(offset & -offset & 0xffn);
    if (align !== 0 && align < max) max = align;
  }
  let l = Math.min(remaining, max);
  while (l & (l - 1)) l &= l - 1;
  return l;
}

function valid(ops: MemoryRegionOps, offset: bigint, size: number, isWrite: boolean): boolean {
  const v = ops.valid;
  if (v?.accepts && !v.accepts(Number(offset), size, isWrite)) return false;
  if (!v?.unaligned && offset % BigInt(size) !== 0n) return false;
  if (!v?.max) return true;
  return size <= v.max && size >= (v.min ?? 0);
}

function swap(value: bigint, size: number): bigint {
  let out = 0n;
  for (let i = 0; i < size; i++) out = (out << 8n) | ((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

function dispatch(
  mr: MemoryRegion,
  offset: bigint,
  size: number,
  isWrite: boolean,
  bytes: Uint8Array,
): number {
  const ops = mr.ops ?? UNASSIGNED;
  if (!valid(ops, offset, size, isWrite)) {
    if (!isWrite) bytes.fill(0);
    return MemTxResult.DECODE_ERROR;
  }
  const big = ops.endianness === "big";
  const k = Math.max(Math.min(size, ops.impl?.max || 4), ops.impl?.min || 1);
  const mask = (1n << BigInt(8 * k)) - 1n;
  const shiftOf = (i: number) => BigInt(big ? (size - k - i) * 8 : i * 8);
  if (isWrite) {
    let value = 0n;
    for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
    if (big) value = swap(value, size);
    for (let i = 0; i < size && ops.write; i += k) {
      const s = shiftOf(i);
      const piece = (s >= 0n ? value >> s : value << -s) & mask;
      ops.write(Number(offset) + i, k === 8 ? piece : Number(piece), k);
    }
  } else {
    let value = 0n;
    for (let i = 0; i < size && ops.read; i += k) {
      const s = shiftOf(i);
      const tmp = BigInt(ops.read(Number(offset) + i, k)) & mask;
      value |= s >= 0n ? tmp << s : tmp >> -s;
    }
    if (big) value = swap(value, size);
    for (let i = 0; i < size; i++) bytes[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  }
  return MemTxResult.OK;
}

/** The model of `AddressSpace.rw` over `ranges` (the caller checks the access ends by 2^64). */
export function modelRw(
  ranges: readonly FlatRange[],
  addr: bigint,
  data: Uint8Array,
  isWrite: boolean,
): number {
  let result = 0;
  let done = 0;
  while (done < data.length) {
    const remaining = data.length - done;
    const fr = find(ranges, addr);
    let l: number;
    if (!fr) {
      l = accessSize(UNASSIGNED, remaining, addr);
      if (!isWrite) data.fill(0, done, done + l);
      result |= MemTxResult.DECODE_ERROR;
    } else {
      const mr = fr.region;
      const offset = fr.offsetInRegion + (addr - fr.start);
      const direct = isWrite ? mr.kind === "ram" && !mr.readonly : mr.isRam || mr.isRomd;
      if (direct) {
        const left = fr.start + fr.size - addr;
        l = left < BigInt(remaining) ? Number(left) : remaining;
        const piece = data.subarray(done, done + l);
        if (isWrite) {
          mr.ramBacking.write(offset, piece);
          if (mr.dirtyLogMask) mr.markDirty(offset, BigInt(l));
        } else {
          mr.ramBacking.read(offset, piece);
        }
      } else {
        l = accessSize(mr.ops ?? UNASSIGNED, remaining, offset);
        result |= dispatch(mr, offset, l, isWrite, data.subarray(done, done + l));
      }
    }
    done += l;
    addr += BigInt(l);
  }
  return result;
}
