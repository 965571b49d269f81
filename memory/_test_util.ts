/**
 * Helpers shared by the memory tests: compact views of flat ranges.
 *
 * @module
 */

import type { FlatRange } from "./flat_view.ts";
import type { MemoryRegionOps } from "./memory_region_ops.ts";

/** `start-end name@offset [ro]` per range, hex, for readable assertions. */
export function describeRanges(ranges: readonly FlatRange[]): string[] {
  return ranges.map((r) =>
    `${r.start.toString(16)}-${(r.start + r.size - 1n).toString(16)} ${r.region.name}@${
      r.offsetInRegion.toString(16)
    }${r.readonly ? " ro" : ""}`
  );
}

/** Simple device ops that record every call. */
export function recordingOps(width = 4) {
  const calls: string[] = [];
  return {
    calls,
    ops: {
      read: (offset: number, size: number) => {
        calls.push(`r ${offset.toString(16)}/${size}`);
        return 0x11223344_55667788n >> BigInt(8 * (8 - Math.min(size, width)));
      },
      write: (offset: number, value: number | bigint, size: number) => {
        calls.push(`w ${offset.toString(16)}/${size}=${value.toString(16)}`);
      },
    },
  };
}

/** Little-endian value of `size` bytes at `offset` of a register file whose byte `o` is 0xa0 + o:
 * any splitting or chunking of an access shows in the bytes read. */
export function pattern(offset: number, size: number): bigint {
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt((0xa0 + offset + i) & 0xff);
  return v;
}

/** A device that logs every callback as `r off/size` or `w off/size=value` (hex). */
export function loggingDevice(extra: Partial<MemoryRegionOps> = {}, read = pattern) {
  const calls: string[] = [];
  const ops: MemoryRegionOps = {
    read: (o, s) => {
      calls.push(`r ${o.toString(16)}/${s}`);
      const v = BigInt(read(o, s));
      return s === 8 ? v : Number(v);
    },
    write: (o, v, s) => void calls.push(`w ${o.toString(16)}/${s}=${v.toString(16)}`),
    ...extra,
  };
  return { calls, ops };
}
