import assert from "node:assert/strict";
import fc from "fast-check";
import { _viewIndex, FlatView } from "./flat_view.ts";
import { MemoryRegion } from "./memory_region.ts";
import { buildTree, type Hit, mergeable, nodeArb, probeAddresses, resolve } from "./_random_tree.ts";
import type { FlatRange } from "./flat_view.ts";

/** Fixed seed: every run checks the same 1,000 trees; change it to explore others. */
const SEED = 0x5eed_2026;
const PROBES = probeAddresses();
const TOP = 1n << 64n;

Deno.test("flat view equals a brute-force per-address model on 1,000 random trees", () => {
  fc.assert(
    fc.property(
      fc.array(nodeArb, { minLength: 1, maxLength: 60, size: "max" }),
      fc.boolean(),
      (nodes, rootHuge) => {
        const { root } = buildTree(nodes, rootHuge);
        const view = FlatView.render(root);
        const ranges = view.ranges;
        // Structure: sorted, disjoint, non-empty, maximally merged.
        for (let i = 0; i < ranges.length; i++) {
          assert.ok(ranges[i].size > 0n, "empty range");
          if (i > 0) {
            assert.ok(ranges[i - 1].start + ranges[i - 1].size <= ranges[i].start, "overlap or unsorted");
            assert.ok(!mergeable(ranges[i - 1], ranges[i]), "two ranges QEMU would merge");
          }
        }
        // Content: every probed address maps exactly as the model says.
        let prev: { fr: FlatRange | undefined; hit: Hit | null } = { fr: undefined, hit: null };
        for (const addr of PROBES) {
          const hit = resolve(root, 0n, addr);
          const fr = view.lookup(addr);
          // Boundaries of unmergeable pieces: one range never spans two gap fills, and two abutting
          // ranges that only unmergeable keeps apart are different gap fills.
          if (fr && hit && prev.fr && prev.hit && fr.unmergeable) {
            if (prev.fr === fr) {
              assert.equal(
                hit.path,
                prev.hit.path,
                `unmergeable range spans two pieces at 0x${addr.toString(16)}`,
              );
            } else if (prev.fr.start + prev.fr.size === fr.start && prev.fr.region === fr.region) {
              assert.notEqual(
                hit.path,
                prev.hit.path,
                `one unmergeable piece split at 0x${addr.toString(16)}`,
              );
            }
          }
          prev = { fr, hit };
          if (!hit) {
            assert.equal(fr, undefined, `0x${addr.toString(16)} should be a hole`);
            continue;
          }
          assert.ok(fr, `0x${addr.toString(16)} should map ${hit.region.name}`);
          assert.equal(fr.region, hit.region, `region at 0x${addr.toString(16)}`);
          assert.equal(fr.offsetInRegion + (addr - fr.start), hit.offset, `offset at 0x${addr.toString(16)}`);
          assert.equal(fr.readonly, hit.readonly, `readonly at 0x${addr.toString(16)}`);
          assert.equal(fr.nonvolatile, hit.nonvolatile, `nonvolatile at 0x${addr.toString(16)}`);
          assert.equal(fr.unmergeable, hit.unmergeable, `unmergeable at 0x${addr.toString(16)}`);
          assert.equal(fr.romdMode, hit.region.romdMode, `romd at 0x${addr.toString(16)}`);
        }
      },
    ),
    { seed: SEED, numRuns: 1000 },
  );
});

Deno.test("lookup equals a linear scan, dense ranges above 2^53 (where doubles are coarser than bytes) included", () => {
  fc.assert(
    fc.property(
      // Start offsets and sizes of small RAM pieces near the top of the space and near zero.
      fc.uniqueArray(fc.bigInt({ min: 0n, max: 1n << 16n }), { minLength: 1, maxLength: 40 }),
      fc.array(fc.bigInt({ min: 0n, max: (1n << 16n) + 64n }), { minLength: 20, maxLength: 20 }),
      fc.boolean(),
      (offsets, probes, high) => {
        const base = high ? TOP - (1n << 17n) : 0n;
        const root = MemoryRegion.container("root", TOP);
        const starts = [...offsets].sort((a, b) => (a < b ? -1 : 1));
        const pieces: { start: bigint; end: bigint; region: MemoryRegion }[] = [];
        starts.forEach((offset, i) => {
          const start = base + offset;
          const room = (i + 1 < starts.length ? base + starts[i + 1] : start + 16n) - start;
          const size = room < 16n ? room : 1n + (offset % 15n); // tiny, never overlapping
          const region = MemoryRegion.ram(`r${i}`, size);
          root.addSubregion(start, region);
          pieces.push({ start, end: start + size, region });
        });
        const view = FlatView.render(root);
        for (const p of probes) {
          const addr = base + p;
          const model = pieces.find((piece) => addr >= piece.start && addr < piece.end);
          assert.equal(view.lookup(addr)?.region, model?.region, `0x${addr.toString(16)}`);
        }
      },
    ),
    { seed: SEED, numRuns: 300 },
  );
});

Deno.test("the view index (doubles, buckets, one-entry cache) equals a linear scan, across 2^53 and up to 2^64", () => {
  const P53 = 1n << 53n;
  // Bases where doubles are exact, where they stop being (2^53) and where they are coarse (2^64);
  // or, for fine buckets, all near zero.
  const WIDE = [0n, P53 - 0x80n, P53 - 1n, TOP - 0x200n];
  const NARROW = [0n, 0x100n, 0x1000n, 0x1040n];
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(
        fc.record({ base: fc.nat(3), at: fc.nat(0x100), size: fc.bigInt({ min: 1n, max: 0x60n }) }),
        { minLength: 1, maxLength: 40 },
      ),
      fc.boolean(),
      fc.array(fc.record({ base: fc.nat(3), at: fc.integer({ min: -2, max: 0x180 }) }), {
        minLength: 1,
        maxLength: 80,
      }),
      (wide, pieces, huge, probes) => {
        const bases = wide ? WIDE : NARROW;
        const root = MemoryRegion.container("root", TOP);
        pieces.forEach((p, i) => {
          let start = bases[p.base] + BigInt(p.at);
          if (start + p.size > TOP) start = TOP - p.size;
          root.addSubregionOverlap(start, MemoryRegion.ram(`r${i}`, p.size), i % 3);
        });
        // A low-priority region from 2^52 to the top: ranges ending past 2^53 and at 2^64.
        if (huge) root.addSubregionOverlap(1n << 52n, MemoryRegion.ram("huge", TOP - (1n << 52n)), -1);
        const view = FlatView.render(root);
        const index = _viewIndex(view);
        const ranges = view.ranges;
        for (const p of probes) {
          const addr = bases[p.base] + BigInt(p.at);
          const model = ranges.findIndex((r) => addr >= r.start && addr < r.start + r.size);
          const what = `0x${addr.toString(16)}`;
          assert.equal(index.findExact(addr), model, what);
          if (addr >= 0n && addr < P53) assert.equal(index.find(Number(addr)), model, what);
          assert.equal(view.lookup(addr), model < 0 ? undefined : ranges[model], what);
        }
      },
    ),
    { seed: SEED, numRuns: 500 },
  );
});

Deno.test("ranges at random 64-bit addresses come out sorted by start (every byte of the start counts)", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.bigInt({ min: 0n, max: (TOP >> 4n) - 1n }), { minLength: 1, maxLength: 60 }),
      (slots) => {
        // 16-byte slots: disjoint regions whose starts differ in any byte, the top one included.
        const root = MemoryRegion.container("root", TOP);
        slots.forEach((slot, i) => root.addSubregion(slot << 4n, MemoryRegion.ram(`r${i}`, 8 + (i % 8))));
        const starts = FlatView.render(root).ranges.map((r) => r.start);
        const sorted = slots.map((slot) => slot << 4n).sort((a, b) => (a < b ? -1 : 1));
        assert.deepEqual(starts, sorted);
      },
    ),
    { seed: SEED, numRuns: 300 },
  );
});

Deno.test("hundreds of overlapping children at mixed priorities: the first in list order wins everywhere", () => {
  // Enough overlap that the sweep's heap passes its pruning size many times over.
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          at: fc.nat(0x3ff),
          units: fc.integer({ min: 1, max: 0x60 }),
          priority: fc.integer({ min: -2, max: 3 }),
        }),
        { minLength: 100, maxLength: 400 },
      ),
      (children) => {
        const root = MemoryRegion.container("root", TOP);
        children.forEach((c, i) =>
          root.addSubregionOverlap(
            BigInt(c.at) * 0x10n,
            MemoryRegion.ram(`r${i}`, c.units * 0x10),
            c.priority,
          )
        );
        const view = FlatView.render(root);
        for (let addr = 0n; addr < 0x4600n; addr += 0x10n) {
          // QEMU's list order: priority descending, the most recently added first among equals.
          const model = root.subregions.find((c) => addr >= c.addr && addr < c.addr + c.size);
          assert.equal(view.lookup(addr)?.region, model, `0x${addr.toString(16)}`);
        }
      },
    ),
    { seed: SEED, numRuns: 100 },
  );
});
