/**
 * Flat views: the sorted, disjoint ranges a region tree renders to.
 *
 * QEMU's `render_memory_region` walks the tree depth-first (children in list order, then a
 * terminating region fills the gaps of its clip range) and inserts each piece into a sorted array,
 * where whatever was inserted first wins. Inserting into an array is quadratic for a container
 * with 100,000 children, so this renderer does the same walk but only records, for each
 * terminating region, its clipped range and its position in the walk (its rank), in typed arrays. The flat view
 * is then the lowest-rank envelope of those ranges, computed by one sweep over the sorted range
 * boundaries with a heap of active candidates: the same result in O(n log n).
 *
 * @module
 */

import { ADDRESS_SPACE_SIZE } from "./address.ts";
import { show } from "./_check.ts";
import { MemoryRegion } from "./memory_region.ts";

/** One range of a flat view: a piece of a terminal region at an absolute address. */
export interface FlatRange {
  /** Absolute start address in the address space. */
  readonly start: bigint;
  /** Size in bytes (> 0). */
  readonly size: bigint;
  /** The terminal region (never an alias or a pure container). */
  readonly region: MemoryRegion;
  /** Offset of `start` inside `region`. */
  readonly offsetInRegion: bigint;
  /** Read-only, OR-ed over every region and alias on the render path. */
  readonly readonly: boolean;
  /** The region's romd mode when rendered. */
  readonly romdMode: boolean;
  /** Nonvolatile, OR-ed over the render path. */
  readonly nonvolatile: boolean;
  /** Unmergeable, OR-ed over the render path. */
  readonly unmergeable: boolean;
  /** The region's dirty-log mask when rendered. */
  readonly dirtyLogMask: number;
}

/**
 * Ranges as parallel typed arrays: the fills of a render (index = rank) and the rendered view
 * itself. A 100,000-region render would otherwise keep several hundred thousand small objects
 * (ranges and their bigints) alive long enough for the garbage collector to copy them. Every value
 * fits in 64 unsigned bits: starts and offsets are below 2^64, and ends are kept inclusive (`lasts`).
 */
class RangeTable {
  count = 0;
  starts = new BigUint64Array(64);
  lasts = new BigUint64Array(64);
  /** Offset inside the region of the range's first byte. */
  offsets = new BigUint64Array(64);
  regions: MemoryRegion[] = [];
  /** READONLY_BIT | NONVOLATILE_BIT | UNMERGEABLE_BIT | ROMD_BIT. */
  flags = new Uint8Array(64);
  /** Dirty-log masks. */
  masks = new Uint8Array(64);

  push(region: MemoryRegion, start: bigint, end: bigint, offset: bigint, flags: number, mask: number): void {
    if (this.count === this.starts.length) this.#grow();
    const i = this.count++;
    this.starts[i] = start;
    this.lasts[i] = end - 1n;
    this.offsets[i] = offset;
    this.flags[i] = flags;
    this.masks[i] = mask;
    this.regions[i] = region;
  }

  /** Appends, merging into the previous range where QEMU's `flatview_simplify` would. */
  pushMerged(
    region: MemoryRegion,
    start: bigint,
    end: bigint,
    offset: bigint,
    flags: number,
    mask: number,
  ): void {
    const p = this.count - 1;
    if (
      p >= 0 && this.regions[p] === region && this.flags[p] === flags && this.masks[p] === mask &&
      !(flags & UNMERGEABLE_BIT) && this.lasts[p] + 1n === start &&
      this.offsets[p] + (start - this.starts[p]) === offset
    ) {
      this.lasts[p] = end - 1n;
    } else {
      this.push(region, start, end, offset, flags, mask);
    }
  }

  #grow(): void {
    const n = this.starts.length * 2;
    const grow = <T extends BigUint64Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a as never);
      return b;
    };
    this.starts = grow(this.starts, (k) => new BigUint64Array(k));
    this.lasts = grow(this.lasts, (k) => new BigUint64Array(k));
    this.offsets = grow(this.offsets, (k) => new BigUint64Array(k));
    this.flags = grow(this.flags, (k) => new Uint8Array(k));
    this.masks = grow(this.masks, (k) => new Uint8Array(k));
  }

  /** Range `i` as an object. */
  range(i: number): FlatRange {
    const start = this.starts[i];
    const flags = this.flags[i];
    return Object.freeze({
      start,
      size: this.lasts[i] - start + 1n,
      region: this.regions[i],
      offsetInRegion: this.offsets[i],
      readonly: (flags & READONLY_BIT) !== 0,
      romdMode: (flags & ROMD_BIT) !== 0,
      nonvolatile: (flags & NONVOLATILE_BIT) !== 0,
      unmergeable: (flags & UNMERGEABLE_BIT) !== 0,
      dirtyLogMask: this.masks[i],
    });
  }
}

const READONLY_BIT = 1;
const NONVOLATILE_BIT = 2;
const UNMERGEABLE_BIT = 4;
const ROMD_BIT = 8;

/** QEMU's `render_memory_region` steps 1–7, recording terminal fills in render order. */
function collect(
  mr: MemoryRegion,
  base: bigint,
  clipStart: bigint,
  clipEnd: bigint,
  flags: number,
  out: RangeTable,
): void {
  if (!mr.enabled) return;
  base += mr.addr;
  if (mr.readonly) flags |= READONLY_BIT;
  if (mr.nonvolatile) flags |= NONVOLATILE_BIT;
  if (mr.unmergeable) flags |= UNMERGEABLE_BIT;
  const ownEnd = base + mr.size;
  const start = base > clipStart ? base : clipStart;
  const end = ownEnd < clipEnd ? ownEnd : clipEnd;
  if (start >= end) return;
  const target = mr.aliasTarget;
  if (target) {
    collect(target, base - target.addr - mr.aliasOffset, start, end, flags, out);
    return;
  }
  for (const child of mr.subregions) collect(child, base, start, end, flags, out);
  if (mr.terminates) out.push(mr, start, end, start - base, flags, 0);
}

/** A binary min-heap of fill indices; a lower index is an earlier fill and wins. */
class RankHeap {
  readonly #items: number[] = [];
  get size(): number {
    return this.#items.length;
  }
  peek(): number {
    return this.#items[0];
  }
  push(rank: number): void {
    const items = this.#items;
    let i = items.length;
    items.push(rank);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= rank) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = rank;
  }
  pop(): void {
    const items = this.#items;
    const last = items.pop()!;
    if (items.length === 0) return;
    let i = 0;
    const n = items.length;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && items[child + 1] < items[child]) child++;
      if (items[child] >= last) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = last;
  }
}

/** Appends fill `i`'s piece [start, end) to the view, taking romd and the dirty mask from the leaf. */
function emit(out: RangeTable, fills: RangeTable, i: number, start: bigint, end: bigint): void {
  const region = fills.regions[i];
  const fillStart = fills.starts[i];
  const offset = start === fillStart ? fills.offsets[i] : fills.offsets[i] + (start - fillStart);
  const flags = fills.flags[i] | (region.romdMode ? ROMD_BIT : 0);
  out.pushMerged(region, start, end, offset, flags, region.dirtyLogMask);
}

/**
 * The lowest-rank envelope of the fills, simplified. One sort by start; the sweep then walks from
 * boundary to boundary, the next boundary being the nearer of the next start and the end of the
 * current winner (fills that ended are dropped lazily when they reach the heap's top).
 */
function envelope(fills: RangeTable): RangeTable {
  const out = new RangeTable();
  const n = fills.count;
  if (n === 0) return out;
  const { starts, lasts } = fills;
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  // Sort on doubles (rounding keeps the order, weakly) and settle ties exactly: reading a
  // BigUint64Array allocates, and a comparator runs n log n times.
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) keys[i] = Number(starts[i]);
  order.sort((a, b) => keys[a] - keys[b] || (starts[a] < starts[b] ? -1 : starts[a] > starts[b] ? 1 : 0));
  const heap = new RankHeap();
  // Reading a BigUint64Array allocates a bigint, so the values the loop keeps comparing are cached.
  let next = 0;
  let nextStart = starts[order[0]];
  let x = nextStart;
  // The piece being grown: fill `piece` over [pieceStart, x), ending at the latest at pieceEnd.
  let piece = -1;
  let pieceStart = 0n;
  let pieceEnd = 0n;
  for (;;) {
    while (next < n && nextStart <= x) {
      heap.push(order[next++]);
      if (next < n) nextStart = starts[order[next]];
    }
    while (heap.size > 0 && (heap.peek() === piece ? pieceEnd <= x : lasts[heap.peek()] < x)) heap.pop();
    if (heap.size === 0) {
      if (piece >= 0) emit(out, fills, piece, pieceStart, x);
      piece = -1;
      if (next === n) return out;
      x = nextStart;
      continue;
    }
    const top = heap.peek();
    if (top !== piece) {
      if (piece >= 0) emit(out, fills, piece, pieceStart, x);
      piece = top;
      pieceStart = x;
      pieceEnd = lasts[top] + 1n;
    }
    x = next < n && nextStart < pieceEnd ? nextStart : pieceEnd;
  }
}

/**
 * The region a FlatView is rendered from, as QEMU's `memory_region_get_flatview_root`: walk down
 * through an alias that shows its whole target from offset 0, and into the only enabled child of a
 * pure container when that child sits at 0 and fits in it. A pure container with no enabled
 * child, or a disabled region, gives `null` (an empty view). Address spaces with the same
 * FlatView root share one FlatView.
 */
export function flatViewRoot(region: MemoryRegion): MemoryRegion | null {
  let mr = region;
  while (mr.enabled) {
    const target = mr.aliasTarget;
    if (target) {
      if (mr.aliasOffset === 0n && mr.size >= target.size) {
        mr = target;
        continue;
      }
    } else if (!mr.terminates) {
      let found = 0;
      let next: MemoryRegion | null = null;
      for (const child of mr.subregions) {
        if (!child.enabled) continue;
        if (++found > 1) {
          next = null;
          break;
        }
        if (child.addr === 0n && mr.size >= child.size) next = child;
      }
      if (found === 0) return null;
      if (next) {
        mr = next;
        continue;
      }
    }
    return mr;
  }
  return null;
}

/**
 * An immutable rendered view: sorted, disjoint ranges with binary-search lookup.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FlatView, MemoryRegion } from "../mod.ts";
 * const ram = MemoryRegion.ram("ram", 0x1000);
 * const view = FlatView.render(ram);
 * assert.equal(view.lookup(0x800n)?.region, ram);
 * assert.equal(view.lookup(0x1000n), undefined);
 * ```
 */
export class FlatView {
  /** The region the view was rendered from (its FlatView root), or null for an empty view. */
  readonly root: MemoryRegion | null;
  readonly #table: RangeTable;
  #ranges: readonly FlatRange[] | undefined;
  #starts: bigint[] | undefined;
  #ends: bigint[] | undefined;
  /** Each start as a double: the search runs on these, two exact comparisons settle it. */
  #keys: Float64Array | undefined;
  #last: FlatRange | undefined;

  private constructor(root: MemoryRegion | null, table: RangeTable) {
    this.root = root;
    this.#table = table;
  }

  /**
   * Renders the FlatView of an address-space root (after reducing it to its FlatView root).
   *
   * @throws {TypeError} if `asRoot` is neither a MemoryRegion nor null.
   */
  static render(asRoot: MemoryRegion | null): FlatView {
    if (asRoot !== null && !(asRoot instanceof MemoryRegion)) {
      throw new TypeError(`FlatView.render: expected a MemoryRegion or null, got ${show(asRoot)}`);
    }
    return FlatView.renderFrom(asRoot ? flatViewRoot(asRoot) : null);
  }

  /**
   * Renders `root` itself (no FlatView-root reduction): at `root.addr`, clipped to [0, 2^64).
   *
   * @throws {TypeError} if `root` is neither a MemoryRegion nor null.
   */
  static renderFrom(root: MemoryRegion | null): FlatView {
    if (root !== null && !(root instanceof MemoryRegion)) {
      throw new TypeError(`FlatView.renderFrom: expected a MemoryRegion or null, got ${show(root)}`);
    }
    const fills = new RangeTable();
    if (root) collect(root, 0n, 0n, ADDRESS_SPACE_SIZE, 0, fills);
    return new FlatView(root, envelope(fills));
  }

  /** Number of ranges. */
  get length(): number {
    return this.#table.count;
  }

  /**
   * The ranges, sorted by start, disjoint. The view is stored compactly; these objects are made
   * on first use and then kept.
   */
  get ranges(): readonly FlatRange[] {
    if (!this.#ranges) {
      const table = this.#table;
      const ranges = new Array<FlatRange>(table.count);
      for (let i = 0; i < table.count; i++) ranges[i] = table.range(i);
      this.#ranges = Object.freeze(ranges);
    }
    return this.#ranges;
  }

  /**
   * The range containing `addr`, by binary search (with a one-entry cache for repeated hits). The
   * search compares doubles, not bigints: rounding to a double never reorders two addresses, so the
   * last start whose double is at most `addr`'s is at or after the right range, and exact comparisons
   * step back over the few starts that only rounding put below `addr` (above 2^53, where doubles are
   * coarser than bytes).
   */
  lookup(addr: bigint): FlatRange | undefined {
    const last = this.#last;
    if (last && addr >= last.start && addr < last.start + last.size) return last;
    const starts = this.#starts ??= this.ranges.map((r) => r.start);
    const ends = this.#ends ??= this.ranges.map((r) => r.start + r.size);
    const keys = this.#keys ??= Float64Array.from(starts, Number);
    const key = Number(addr);
    let lo = 0;
    let hi = keys.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (keys[mid] <= key) lo = mid + 1;
      else hi = mid - 1;
    }
    let i = hi; // the last start whose double is at most addr's
    while (i >= 0 && starts[i] > addr) i--;
    if (i < 0 || addr >= ends[i]) return undefined;
    return this.#last = this.ranges[i];
  }
}
