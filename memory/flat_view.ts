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
import type { MemoryRegion } from "./memory_region.ts";

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
 * The terminal fills of one render, in render order (index = rank), as parallel typed arrays: a
 * 100,000-region render would otherwise keep several hundred thousand small objects alive long
 * enough for the garbage collector to copy them. Every value fits in 64 unsigned bits: starts and
 * offsets are below 2^64, and ends are kept inclusive (`last`).
 */
class Fills {
  count = 0;
  starts = new BigUint64Array(64);
  lasts = new BigUint64Array(64);
  /** Offset inside the region of the fill's first byte. */
  offsets = new BigUint64Array(64);
  regions: MemoryRegion[] = [];
  /** Bit 0 readonly, bit 1 nonvolatile, bit 2 unmergeable. */
  flags = new Uint8Array(64);

  push(region: MemoryRegion, start: bigint, end: bigint, offset: bigint, flags: number): void {
    if (this.count === this.starts.length) this.#grow();
    const i = this.count++;
    this.starts[i] = start;
    this.lasts[i] = end - 1n;
    this.offsets[i] = offset;
    this.flags[i] = flags;
    this.regions.push(region);
  }

  #grow(): void {
    const n = this.starts.length * 2;
    const grow64 = (a: BigUint64Array) => {
      const b = new BigUint64Array(n);
      b.set(a);
      return b;
    };
    this.starts = grow64(this.starts);
    this.lasts = grow64(this.lasts);
    this.offsets = grow64(this.offsets);
    const f = new Uint8Array(n);
    f.set(this.flags);
    this.flags = f;
  }
}

const READONLY_BIT = 1;
const NONVOLATILE_BIT = 2;
const UNMERGEABLE_BIT = 4;

/** QEMU's `render_memory_region` steps 1–7, recording terminal fills in render order. */
function collect(
  mr: MemoryRegion,
  base: bigint,
  clipStart: bigint,
  clipEnd: bigint,
  flags: number,
  out: Fills,
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
  if (mr.terminates) out.push(mr, start, end, start - base, flags);
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

/** QEMU's `can_merge` (with the `unmergeable` rule of newer QEMU). */
function canMerge(a: FlatRange, b: FlatRange): boolean {
  return a.start + a.size === b.start &&
    a.region === b.region &&
    a.offsetInRegion + a.size === b.offsetInRegion &&
    a.dirtyLogMask === b.dirtyLogMask &&
    a.romdMode === b.romdMode &&
    a.readonly === b.readonly &&
    a.nonvolatile === b.nonvolatile &&
    !a.unmergeable && !b.unmergeable;
}

/** Appends fill `i`'s piece [start, end), merging it where QEMU's `flatview_simplify` would. */
function emit(out: FlatRange[], fills: Fills, i: number, start: bigint, end: bigint): void {
  const region = fills.regions[i];
  const flags = fills.flags[i];
  const r: FlatRange = {
    start,
    size: end - start,
    region,
    offsetInRegion: fills.offsets[i] + (start - fills.starts[i]),
    readonly: (flags & READONLY_BIT) !== 0,
    romdMode: region.romdMode,
    nonvolatile: (flags & NONVOLATILE_BIT) !== 0,
    unmergeable: (flags & UNMERGEABLE_BIT) !== 0,
    dirtyLogMask: region.dirtyLogMask,
  };
  const prev = out[out.length - 1];
  if (prev && canMerge(prev, r)) out[out.length - 1] = { ...prev, size: prev.size + r.size };
  else out.push(r);
}

/**
 * The lowest-rank envelope of the fills, simplified. One sort by start; the sweep then walks from
 * boundary to boundary, the next boundary being the nearer of the next start and the end of the
 * current winner (fills that ended are dropped lazily when they reach the heap's top).
 */
function envelope(fills: Fills): FlatRange[] {
  const out: FlatRange[] = [];
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
  let next = 0;
  let x = starts[order[0]];
  // The piece being grown: fill `piece` over [pieceStart, x).
  let piece = -1;
  let pieceStart = 0n;
  for (;;) {
    while (next < n && starts[order[next]] <= x) heap.push(order[next++]);
    while (heap.size > 0 && lasts[heap.peek()] < x) heap.pop();
    if (heap.size === 0) {
      if (piece >= 0) emit(out, fills, piece, pieceStart, x);
      piece = -1;
      if (next === n) return out;
      x = starts[order[next]];
      continue;
    }
    const top = heap.peek();
    if (top !== piece) {
      if (piece >= 0) emit(out, fills, piece, pieceStart, x);
      piece = top;
      pieceStart = x;
    }
    const end = lasts[top] + 1n;
    const nextStart = next < n ? starts[order[next]] : end;
    x = nextStart < end ? nextStart : end;
  }
}

/**
 * Renders `root` as QEMU renders a FlatView root: at `root.addr`, clipped to [0, 2^64), simplified.
 *
 * @example
 * ```ts
 * import { MemoryRegion, renderFlatRanges } from "../mod.ts";
 * const a = MemoryRegion.container("a", 0x8000);
 * a.addSubregion(0x1000, MemoryRegion.ram("r", 0x1000));
 * console.assert(renderFlatRanges(a)[0].start === 0x1000n);
 * ```
 */
export function renderFlatRanges(root: MemoryRegion | null): FlatRange[] {
  if (!root) return [];
  const fills = new Fills();
  collect(root, 0n, 0n, ADDRESS_SPACE_SIZE, 0, fills);
  return envelope(fills);
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
 * import { FlatView, MemoryRegion } from "../mod.ts";
 * const ram = MemoryRegion.ram("ram", 0x1000);
 * const view = FlatView.render(ram);
 * console.assert(view.lookup(0x800n)?.region === ram && view.lookup(0x1000n) === undefined);
 * ```
 */
export class FlatView {
  /** The region the view was rendered from (its FlatView root), or null for an empty view. */
  readonly root: MemoryRegion | null;
  /** The ranges, sorted by start, disjoint. */
  readonly ranges: readonly FlatRange[];
  #last: FlatRange | undefined;
  #starts: bigint[] | undefined;
  #ends: bigint[] | undefined;

  constructor(root: MemoryRegion | null, ranges: readonly FlatRange[]) {
    this.root = root;
    this.ranges = ranges;
  }

  /** Renders the FlatView of an address-space root (after reducing it to its FlatView root). */
  static render(asRoot: MemoryRegion | null): FlatView {
    const root = asRoot ? flatViewRoot(asRoot) : null;
    return new FlatView(root, Object.freeze(renderFlatRanges(root)));
  }

  /** The range containing `addr`, by binary search (with a one-entry cache for repeated hits). */
  lookup(addr: bigint): FlatRange | undefined {
    const last = this.#last;
    if (last && addr >= last.start && addr < last.start + last.size) return last;
    // Parallel arrays of bounds: comparisons only, no bigint allocated per step.
    const starts = this.#starts ??= this.ranges.map((r) => r.start);
    const ends = this.#ends ??= this.ranges.map((r) => r.start + r.size);
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (addr < starts[mid]) hi = mid - 1;
      else if (addr >= ends[mid]) lo = mid + 1;
      else return this.#last = this.ranges[mid];
    }
    return undefined;
  }
}
