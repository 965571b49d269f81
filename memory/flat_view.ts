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
  starts: BigUint64Array;
  lasts: BigUint64Array;
  /** Offset inside the region of the range's first byte. */
  offsets: BigUint64Array;
  regions: MemoryRegion[] = [];
  /** READONLY_BIT | NONVOLATILE_BIT | UNMERGEABLE_BIT | ROMD_BIT. */
  flags: Uint8Array;
  /** Dirty-log masks. */
  masks: Uint8Array;

  constructor(capacity = 64) {
    this.starts = new BigUint64Array(capacity);
    this.lasts = new BigUint64Array(capacity);
    this.offsets = new BigUint64Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.masks = new Uint8Array(capacity);
  }

  /**
   * The first `order.length` ranges, range `order[k]` at `k`, all but their regions (storing
   * 100,000 references into a new array costs more than looking them up through `order`): copied
   * as 32-bit words, so no bigint is made.
   */
  permuted(order: Uint32Array): RangeTable {
    const n = order.length;
    const t = new RangeTable(n);
    for (const key of ["starts", "lasts", "offsets"] as const) {
      const from = new Uint32Array(this[key].buffer, 0, 2 * this.count);
      const to = new Uint32Array(t[key].buffer, 0, 2 * n);
      for (let k = 0; k < n; k++) {
        const i = 2 * order[k];
        to[2 * k] = from[i];
        to[2 * k + 1] = from[i + 1];
      }
    }
    for (let k = 0; k < n; k++) {
      const i = order[k];
      t.flags[k] = this.flags[i];
      t.masks[k] = this.masks[i];
    }
    t.count = n;
    return t;
  }

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

  /**
   * Merges each range into the one before where QEMU's `flatview_simplify` would, in place. A pass of
   * its own after the sweep: checking for a merge at every append made the 100,000-region render about
   * a tenth slower (29-31 ms against 26-27 ms, alternating), though that benchmark never merges.
   */
  simplify(): void {
    const { starts, lasts, offsets, flags, masks, regions } = this;
    let w = 0;
    for (let r = 0; r < this.count; r++) {
      const p = w - 1;
      if (
        p >= 0 && regions[p] === regions[r] && flags[p] === flags[r] && masks[p] === masks[r] &&
        !(flags[r] & UNMERGEABLE_BIT) && lasts[p] + 1n === starts[r] &&
        offsets[p] + (starts[r] - starts[p]) === offsets[r]
      ) {
        lasts[p] = lasts[r];
        continue;
      }
      if (w !== r) {
        starts[w] = starts[r];
        lasts[w] = lasts[r];
        offsets[w] = offsets[r];
        flags[w] = flags[r];
        masks[w] = masks[r];
        regions[w] = regions[r];
      }
      w++;
    }
    this.count = w;
    regions.length = w;
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
  // The leaf's romd mode and dirty-log mask are read here, while the region is in the cache.
  if (mr.terminates) {
    out.push(mr, start, end, start - base, flags | (mr.romdMode ? ROMD_BIT : 0), mr.dirtyLogMask);
  }
}

/** A binary min-heap of positions in start order, by their fill's rank: a lower rank is an earlier fill and wins. */
class RankHeap {
  readonly #items: number[] = [];
  readonly #ranks: Uint32Array;
  constructor(ranks: Uint32Array) {
    this.#ranks = ranks;
  }
  get size(): number {
    return this.#items.length;
  }
  peek(): number {
    return this.#items[0];
  }
  push(position: number): void {
    const items = this.#items;
    const ranks = this.#ranks;
    const rank = ranks[position];
    let i = items.length;
    items.push(position);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (ranks[items[parent]] <= rank) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = position;
  }
  /**
   * Drops every position for which `dead` holds and restores the heap order (Floyd's build, linear).
   * The sweep drops ended fills only when they reach the top, and ended fills of a low priority
   * under a live one of a higher priority would pile up otherwise.
   */
  prune(dead: (position: number) => boolean): void {
    const items = this.#items;
    const ranks = this.#ranks;
    let n = 0;
    for (let i = 0; i < items.length; i++) if (!dead(items[i])) items[n++] = items[i];
    items.length = n;
    for (let start = (n >> 1) - 1; start >= 0; start--) {
      const moving = items[start];
      const rank = ranks[moving];
      let i = start;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && ranks[items[child + 1]] < ranks[items[child]]) child++;
        if (ranks[items[child]] >= rank) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = moving;
    }
  }
  pop(): void {
    const items = this.#items;
    const ranks = this.#ranks;
    const last = items.pop()!;
    if (items.length === 0) return;
    const lastRank = ranks[last];
    let i = 0;
    const n = items.length;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && ranks[items[child + 1]] < ranks[items[child]]) child++;
      if (ranks[items[child]] >= lastRank) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = last;
  }
}

/** Appends the piece [start, end) of the fill at position `k` of `sorted` (rank `order[k]`) to the view. */
function emit(
  out: RangeTable,
  sorted: RangeTable,
  regions: readonly MemoryRegion[],
  order: Uint32Array,
  k: number,
  start: bigint,
  end: bigint,
): void {
  const fillStart = sorted.starts[k];
  const offset = start === fillStart ? sorted.offsets[k] : sorted.offsets[k] + (start - fillStart);
  out.push(regions[order[k]], start, end, offset, sorted.flags[k], sorted.masks[k]);
}

/** Whether the platform stores the low 32-bit word of a 64-bit value first. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The indices of the first `n` values, ordered by value (ties in index order): a least-significant-
 * digit radix sort on the bytes of the 64-bit values, read as 32-bit words (no bigint). A byte that
 * is the same in every value costs one counting pass and no move; in practice most high bytes are.
 */
function sortByValue(values: BigUint64Array, n: number): Uint32Array {
  const words = new Uint32Array(values.buffer, values.byteOffset, 2 * n);
  const [loWord, hiWord] = LITTLE_ENDIAN ? [0, 1] : [1, 0];
  // Counts of every byte position at once: 8 × 256.
  const counts = new Uint32Array(8 * 256);
  for (let i = 0; i < n; i++) {
    const lo = words[2 * i + loWord];
    const hi = words[2 * i + hiWord];
    counts[lo & 0xff]++;
    counts[256 + ((lo >>> 8) & 0xff)]++;
    counts[512 + ((lo >>> 16) & 0xff)]++;
    counts[768 + (lo >>> 24)]++;
    counts[1024 + (hi & 0xff)]++;
    counts[1280 + ((hi >>> 8) & 0xff)]++;
    counts[1536 + ((hi >>> 16) & 0xff)]++;
    counts[1792 + (hi >>> 24)]++;
  }
  // The permutation travels with both words of its values, so every pass reads sequentially.
  let order = new Uint32Array(n);
  let los = new Uint32Array(n);
  let his = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    order[i] = i;
    los[i] = words[2 * i + loWord];
    his[i] = words[2 * i + hiWord];
  }
  let order2 = new Uint32Array(n);
  let los2 = new Uint32Array(n);
  let his2 = new Uint32Array(n);
  for (let digit = 0; digit < 8; digit++) {
    const base = digit * 256;
    const shift = (digit & 3) * 8;
    const keys = digit < 4 ? los : his;
    if (n === 0 || counts[base + ((keys[0] >>> shift) & 0xff)] === n) continue; // one value: no move
    let sum = 0;
    for (let b = base; b < base + 256; b++) {
      const c = counts[b];
      counts[b] = sum;
      sum += c;
    }
    for (let k = 0; k < n; k++) {
      const at = counts[base + (((digit < 4 ? los[k] : his[k]) >>> shift) & 0xff)]++;
      order2[at] = order[k];
      los2[at] = los[k];
      his2[at] = his[k];
    }
    [order, order2] = [order2, order];
    [los, los2] = [los2, los];
    [his, his2] = [his2, his];
  }
  return order;
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
  // The fills in start order, so that the sweep reads them in sequence; the heap keeps their ranks.
  const order = sortByValue(fills.starts, n);
  const sorted = fills.permuted(order);
  const { starts, lasts } = sorted;
  const heap = new RankHeap(order);
  // Reading a BigUint64Array allocates a bigint, so the values the loop keeps comparing are cached.
  let next = 0;
  let nextStart = starts[0];
  let x = nextStart;
  // The piece being grown: fill `piece` over [pieceStart, x), ending at the latest at pieceEnd.
  let piece = -1;
  let pieceStart = 0n;
  let pieceEnd = 0n;
  // Past this size the heap is pruned of ended fills, and the bound set to twice what is left.
  let pruneAt = 64;
  const ended = (position: number) => lasts[position] < x;
  for (;;) {
    while (next < n && nextStart <= x) {
      heap.push(next++);
      if (next < n) nextStart = starts[next];
    }
    if (heap.size > pruneAt) {
      heap.prune(ended);
      pruneAt = Math.max(64, 2 * heap.size);
    }
    while (heap.size > 0 && (heap.peek() === piece ? pieceEnd <= x : lasts[heap.peek()] < x)) heap.pop();
    if (heap.size === 0) {
      if (piece >= 0) emit(out, sorted, fills.regions, order, piece, pieceStart, x);
      piece = -1;
      if (next === n) {
        out.simplify();
        return out;
      }
      x = nextStart;
      continue;
    }
    const top = heap.peek();
    if (top !== piece) {
      if (piece >= 0) emit(out, sorted, fills.regions, order, piece, pieceStart, x);
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

/** 2^53: every integer below it is exactly a double. */
const EXACT_BIG = 1n << 53n;

/**
 * A view's ranges as doubles, for the access path (internal to `memory/`). Below 2^53 a double
 * holds an address exactly, and rounding never reorders two addresses, so for an address below
 * 2^53 a search on these doubles is exact with no bigint at all: a start or end past 2^53 rounds
 * to a double at or past 2^53, still above the address. Offsets past 2^53 are not exact; callers
 * see that from the sum (offset + distance ≥ 2^53) and take the bigint path.
 *
 * A search starts from a bucket directory: the span from the first start to the last start below
 * 2^53 cut into at most twice as many equal power-of-two buckets as there are ranges, each holding
 * the last range starting at or before the bucket's first address. The answer lies between the
 * entries of a bucket and the next one, usually the same range or two apart, so a lookup over
 * 10,000 ranges takes a step or two instead of fourteen unpredictable ones.
 */
export class _ViewIndex {
  /** Each range's start, as a double. */
  readonly starts: Float64Array;
  /** Each range's exclusive end, as a double. */
  readonly ends: Float64Array;
  /** Each range's offset in its region, as a double. */
  readonly offsets: Float64Array;
  /** Each range's region. */
  readonly regions: readonly MemoryRegion[];
  readonly #table: RangeTable;
  /** The range found last: an access usually lands in the same one again. */
  #last = -1;
  /** The first start (+∞ when no range starts below 2^53). */
  readonly #base: number;
  /** From the first to the last start below 2^53. */
  readonly #span: number;
  /** The last range starting below 2^53. */
  readonly #lastLow: number;
  /** 2^-shift: bucket `b` covers [base + b·2^shift, base + (b+1)·2^shift). */
  readonly #scale: number;
  /** Per bucket, and one past the last: the last range starting at or before the bucket's start. */
  readonly #buckets: Int32Array;

  constructor(table: RangeTable) {
    const n = table.count;
    this.#table = table;
    const starts = this.starts = new Float64Array(n);
    this.ends = new Float64Array(n);
    this.offsets = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      starts[i] = Number(table.starts[i]);
      this.ends[i] = Number(table.lasts[i] + 1n);
      this.offsets[i] = Number(table.offsets[i]);
    }
    this.regions = table.regions;
    let m = 0;
    while (m < n && starts[m] < 2 ** 53) m++;
    this.#lastLow = m - 1;
    this.#base = m > 0 ? starts[0] : Infinity;
    const span = this.#span = m > 0 ? starts[m - 1] - starts[0] : 0;
    let shift = 0;
    while (span / 2 ** shift > 2 * m) shift++;
    this.#scale = 2 ** -shift;
    const count = Math.floor(span / 2 ** shift) + 1;
    const buckets = this.#buckets = new Int32Array(count + 1);
    for (let b = 0, i = 0; b <= count && m > 0; b++) {
      const at = this.#base + b * 2 ** shift;
      while (i + 1 < m && starts[i + 1] <= at) i++;
      buckets[b] = i;
    }
  }

  /** The index of the range holding `addr`, an integer in [0, 2^53), or -1 for a hole. */
  find(addr: number): number {
    const last = this.#last;
    const starts = this.starts;
    const ends = this.ends;
    if (last >= 0 && addr >= starts[last] && addr < ends[last]) return last;
    const rel = addr - this.#base;
    if (!(rel >= 0)) return -1;
    let lo: number;
    let hi: number;
    if (rel >= this.#span) {
      lo = hi = this.#lastLow;
    } else {
      const b = Math.floor(rel * this.#scale);
      lo = this.#buckets[b];
      hi = this.#buckets[b + 1];
    }
    // The last range in [lo, hi] starting at or before addr (starts[lo] is).
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (starts[mid] <= addr) lo = mid;
      else hi = mid - 1;
    }
    if (addr >= ends[lo]) return -1;
    return this.#last = lo;
  }

  /**
   * The index of the range holding `addr`, any bigint, or -1. Past 2^53 the search on doubles lands
   * at or after the right range (the last start whose double is at most the address's); exact
   * comparisons step back over the few starts that only rounding put below the address.
   */
  findExact(addr: bigint): number {
    if (addr >= 0n && addr < EXACT_BIG) return this.find(Number(addr));
    const starts = this.starts;
    const key = Number(addr);
    let lo = 0;
    let hi = starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid] <= key) lo = mid + 1;
      else hi = mid - 1;
    }
    const exact = this.#table.starts;
    let i = hi;
    while (i >= 0 && exact[i] > addr) i--;
    if (i < 0 || addr > this.#table.lasts[i]) return -1;
    return i;
  }
}

/** A view's index, made on first use; set by FlatView's static block. */
let indexOf: (view: FlatView) => _ViewIndex;

/** The numeric index of `view` for the access path (internal to `memory/`). */
export function _viewIndex(view: FlatView): _ViewIndex {
  return indexOf(view);
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
  #index: _ViewIndex | undefined;

  static {
    indexOf = (view) => view.#index ??= new _ViewIndex(view.#table);
  }

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
   * search compares doubles, not bigints: below 2^53 they are exact; above, rounding never reorders
   * two addresses, and exact comparisons step back over the few starts that only rounding put below
   * `addr` (where doubles are coarser than bytes).
   */
  lookup(addr: bigint): FlatRange | undefined {
    const i = indexOf(this).findExact(addr);
    return i < 0 ? undefined : this.ranges[i];
  }
}
