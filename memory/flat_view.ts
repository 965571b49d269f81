/**
 * Flat views: the sorted, disjoint ranges a region tree renders to.
 *
 * QEMU's `render_memory_region` walks the tree depth-first (children in list order, then a
 * terminating region fills the gaps of its clip range) and inserts each piece into a sorted array,
 * where whatever was inserted first wins. Inserting into an array is quadratic for a container
 * with 100,000 children, so this renderer does the same walk but only records, for each
 * terminating region, its clipped range and its position in the walk (its rank). The flat view
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

interface Candidate {
  rank: number;
  start: bigint;
  end: bigint;
  region: MemoryRegion;
  base: bigint;
  readonly: boolean;
  nonvolatile: boolean;
  unmergeable: boolean;
}

/** QEMU's `render_memory_region` steps 1–7, recording terminal fills in render order. */
function collect(
  mr: MemoryRegion,
  base: bigint,
  clipStart: bigint,
  clipEnd: bigint,
  readonly: boolean,
  nonvolatile: boolean,
  unmergeable: boolean,
  out: Candidate[],
): void {
  if (!mr.enabled) return;
  base += mr.addr;
  readonly ||= mr.readonly;
  nonvolatile ||= mr.nonvolatile;
  unmergeable ||= mr.unmergeable;
  const ownEnd = base + mr.size;
  const start = base > clipStart ? base : clipStart;
  const end = ownEnd < clipEnd ? ownEnd : clipEnd;
  if (start >= end) return;
  const target = mr.aliasTarget;
  if (target) {
    collect(target, base - target.addr - mr.aliasOffset, start, end, readonly, nonvolatile, unmergeable, out);
    return;
  }
  for (const child of mr.subregions) {
    collect(child, base, start, end, readonly, nonvolatile, unmergeable, out);
  }
  if (!mr.terminates) return;
  out.push({ rank: out.length, start, end, region: mr, base, readonly, nonvolatile, unmergeable });
}

/** A binary min-heap of candidates keyed by rank. */
class RankHeap {
  readonly #items: Candidate[] = [];
  get size(): number {
    return this.#items.length;
  }
  peek(): Candidate {
    return this.#items[0];
  }
  push(c: Candidate): void {
    const items = this.#items;
    let i = items.length;
    items.push(c);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent].rank <= c.rank) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = c;
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
      if (child + 1 < n && items[child + 1].rank < items[child].rank) child++;
      if (items[child].rank >= last.rank) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = last;
  }
}

function compareBigint(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The lowest-rank envelope of the candidates, as maximal per-candidate pieces. */
function envelope(candidates: Candidate[]): FlatRange[] {
  if (candidates.length === 0) return [];
  const byStart = candidates.slice().sort((a, b) => compareBigint(a.start, b.start) || a.rank - b.rank);
  const points: bigint[] = new Array(candidates.length * 2);
  for (let i = 0; i < candidates.length; i++) {
    points[2 * i] = candidates[i].start;
    points[2 * i + 1] = candidates[i].end;
  }
  points.sort(compareBigint);
  const heap = new RankHeap();
  const pieces: { c: Candidate; start: bigint; end: bigint }[] = [];
  let next = 0;
  for (let p = 0; p < points.length - 1; p++) {
    const x = points[p];
    const y = points[p + 1];
    if (x === y) continue;
    while (next < byStart.length && byStart[next].start <= x) heap.push(byStart[next++]);
    while (heap.size > 0 && heap.peek().end <= x) heap.pop();
    if (heap.size === 0) continue;
    const top = heap.peek();
    const last = pieces[pieces.length - 1];
    if (last && last.c === top && last.end === x) last.end = y;
    else pieces.push({ c: top, start: x, end: y });
  }
  return pieces.map(({ c, start, end }) => ({
    start,
    size: end - start,
    region: c.region,
    offsetInRegion: start - c.base,
    readonly: c.readonly,
    romdMode: c.region.romdMode,
    nonvolatile: c.nonvolatile,
    unmergeable: c.unmergeable,
    dirtyLogMask: c.region.dirtyLogMask,
  }));
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

/** QEMU's `flatview_simplify`: one left-to-right merging pass. */
function simplify(ranges: FlatRange[]): FlatRange[] {
  const out: FlatRange[] = [];
  for (const r of ranges) {
    const prev = out[out.length - 1];
    if (prev && canMerge(prev, r)) out[out.length - 1] = { ...prev, size: prev.size + r.size };
    else out.push(r);
  }
  return out;
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
  const candidates: Candidate[] = [];
  collect(root, 0n, 0n, ADDRESS_SPACE_SIZE, false, false, false, candidates);
  return simplify(envelope(candidates));
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
    if (last && addr >= last.start && addr - last.start < last.size) return last;
    const ranges = this.ranges;
    let lo = 0;
    let hi = ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = ranges[mid];
      if (addr < r.start) hi = mid - 1;
      else if (addr - r.start >= r.size) lo = mid + 1;
      else {
        this.#last = r;
        return r;
      }
    }
    return undefined;
  }
}
