/**
 * Helpers shared by the memory tests: compact views of flat ranges.
 *
 * @module
 */

import type { FlatRange } from "./flat_view.ts";

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
