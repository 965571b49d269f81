/**
 * The model behind the listener property test: a listener that keeps the set of live ranges and
 * checks every callback against QEMU's diff rules (§5), and random mutations of a region graph.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type AddressSpace,
  beginTransaction,
  commitTransaction,
  type FlatRange,
  type MemoryListener,
  type MemoryRegion,
  type MemoryRegionSection,
  transaction,
} from "../mod.ts";
import { GRANULE, TOP_BASE } from "./_random_tree.ts";

const hex = (v: bigint) => v.toString(16);

/** Everything a listener can tell about a range, as one string. */
export function key(s: MemoryRegionSection | FlatRange, mask = s.dirtyLogMask): string {
  return `${hex(s.start)}+${hex(s.size)} ${s.region.name}@${hex(s.offsetInRegion)} ` +
    `${+s.readonly}${+s.romdMode}${+s.nonvolatile}${+s.unmergeable} m${mask}`;
}

/** Keeps the set of live ranges and checks every callback against QEMU's diff rules. */
export class LiveSet implements MemoryListener {
  readonly name = "live";
  readonly live = new Map<bigint, { s: MemoryRegionSection; mask: number }>();
  rebuilds = 0;
  /** Set around (un)registration: the replay's log calls follow the add / precede the del. */
  replaying: false | "in" | "out" = false;
  #phase: "idle" | "del" | "add" = "idle";
  #lastDel = -1n;
  #lastAdd = -1n;
  #last: MemoryRegionSection | undefined;
  #touched: string[] = [];
  constructor(readonly as: () => AddressSpace) {}
  begin() {
    assert.equal(this.#phase, "idle", "begin inside begin/commit");
    this.#phase = "del";
    this.#lastDel = this.#lastAdd = -1n;
    this.#touched = [];
    this.rebuilds++;
  }
  regionDel(s: MemoryRegionSection) {
    assert.equal(this.#phase, "del", `del ${key(s)} after an add or outside begin/commit`);
    assert.ok(s.start > this.#lastDel, "dels not ascending");
    this.#lastDel = s.start;
    const l = this.live.get(s.start);
    assert.ok(l, `del of ${key(s)}, which is not live`);
    assert.deepEqual([l.s.size, l.s.region, l.s.offsetInRegion], [s.size, s.region, s.offsetInRegion]);
    this.live.delete(s.start);
  }
  #addPass(s: MemoryRegionSection) {
    assert.notEqual(this.#phase, "idle", "callback outside begin/commit");
    this.#phase = "add";
    assert.ok(s.start > this.#lastAdd, "adds/nops not ascending");
    this.#lastAdd = s.start;
  }
  regionAdd(s: MemoryRegionSection) {
    this.#addPass(s);
    for (const { s: l } of this.live.values()) {
      assert.ok(
        l.start + l.size <= s.start || s.start + s.size <= l.start,
        `add ${key(s)} overlaps ${key(l)}`,
      );
    }
    this.live.set(s.start, { s, mask: this.replaying ? 0 : s.dirtyLogMask });
    this.#last = s;
    this.#touched.push(key(s));
  }
  regionNop(s: MemoryRegionSection) {
    this.#addPass(s);
    const l = this.live.get(s.start);
    assert.ok(l && key(l.s, 0) === key(s, 0), `nop of ${key(s)}, which is not live`);
    this.#last = s;
    this.#touched.push(key(s));
  }
  #log(s: MemoryRegionSection, oldMask: number, newMask: number, starting: boolean) {
    const l = this.live.get(s.start);
    assert.ok(l && key(l.s, 0) === key(s, 0), `log call for ${key(s)}, which is not live`);
    if (this.replaying) assert.equal(starting ? oldMask : newMask, 0, "replay log call not from/to 0");
    else assert.ok(this.#phase === "add" && s === this.#last, "log call off the nop path");
    if (this.replaying && starting) assert.ok(s === this.#last, "replay logStart not right after its add");
    assert.equal(oldMask, l.mask);
    assert.ok(starting ? newMask & ~oldMask : oldMask & ~newMask, "log call without a change of bits");
    l.mask = newMask;
  }
  logStart(s: MemoryRegionSection, o: number, n: number) {
    this.#log(s, o, n, true);
  }
  logStop(s: MemoryRegionSection, o: number, n: number) {
    this.#log(s, o, n, false);
  }
  commit() {
    this.#phase = "idle";
    if (this.replaying !== "out") this.check();
  }
  check() {
    const view = this.as().flatView().map((r) => key(r));
    const live = [...this.live.values()].sort((a, b) => (a.s.start < b.s.start ? -1 : 1)).map((l) =>
      key(l.s, l.mask)
    );
    assert.deepEqual(live, view, "live set differs from the flat view");
  }
  checkRebuildCoverage() {
    assert.deepEqual(this.#touched, this.as().flatView().map((r) => key(r)), "adds + nops != new view");
  }
}

/** One random edit of the graph (`i`, `c` pick regions modulo the pool). */
export type Mut =
  | { op: "enabled" | "readonly" | "nonvolatile" | "unmergeable" | "romd" | "log"; i: number; on: boolean }
  | { op: "address" | "aliasOffset" | "size" | "remove"; i: number; units: number; top: boolean }
  | { op: "add"; i: number; c: number; units: number; top: boolean; prio: number }
  | { op: "replay" }
  | { op: "txn"; manual: boolean; body: Mut[] };

const FLAGS = ["enabled", "readonly", "nonvolatile", "unmergeable", "romd", "log"] as const;
const MOVES = ["address", "aliasOffset", "size", "remove"] as const;
const i = fc.nat(1000);
const units = fc.integer({ min: 0, max: 40 });
const top = fc.integer({ min: 0, max: 9 }).map((x) => x === 0);
const basicMut: fc.Arbitrary<Mut> = fc.oneof(
  fc.record({ op: fc.constantFrom(...FLAGS), i, on: fc.boolean() }),
  fc.record({ op: fc.constantFrom(...MOVES), i, units, top }),
  fc.record({ op: fc.constant("add" as const), i, c: i, units, top, prio: fc.integer({ min: -2, max: 2 }) }),
);
const txnOf = (body: fc.Arbitrary<Mut>): fc.Arbitrary<Mut> =>
  fc.record({
    op: fc.constant("txn" as const),
    manual: fc.boolean(),
    body: fc.array(body, { maxLength: 6 }),
  });
/** Transactions of edits, sometimes with a nested transaction inside. */
const txnArb = txnOf(fc.oneof({ arbitrary: basicMut, weight: 4 }, { arbitrary: txnOf(basicMut), weight: 1 }));
/** Edits, transactions of edits, and unregister + register replays. */
export const mutArb: fc.Arbitrary<Mut> = fc.oneof(
  { arbitrary: basicMut, weight: 8 },
  { arbitrary: txnArb, weight: 2 },
  { arbitrary: fc.constant({ op: "replay" as const }), weight: 1 },
);

function snapshot(pool: MemoryRegion[]): string {
  return JSON.stringify(pool.map((r) => [
    r.container?.name,
    hex(r.addr),
    r.priority,
    hex(r.size),
    r.enabled,
    r.readonly,
    r.nonvolatile,
    r.unmergeable,
    r.romdMode,
    r.dirtyLogMask,
    hex(r.aliasOffset),
    r.subregions.map((c) => c.name),
  ]));
}

/** Applies `m`; a refused edit must throw TypeError/RangeError and change nothing. */
export function apply(m: Mut, pool: MemoryRegion[], as: AddressSpace, live: LiveSet): void {
  if (m.op === "txn") {
    if (!m.manual) return transaction(() => m.body.forEach((b) => apply(b, pool, as, live)));
    beginTransaction();
    try {
      m.body.forEach((b) => apply(b, pool, as, live));
    } finally {
      commitTransaction();
    }
    return;
  }
  if (m.op === "replay") {
    live.replaying = "out";
    as.unregisterListener(live);
    assert.equal(live.live.size, 0, "unregister did not delete every live range");
    live.replaying = "in";
    as.registerListener(live);
    live.replaying = false;
    return;
  }
  // Most picks go where the mutation applies (the refused paths are still hit often).
  const pick = (fit: (x: MemoryRegion) => boolean) => {
    const fits = pool.filter(fit);
    return fits.length ? fits[m.i % fits.length] : pool[m.i % pool.length];
  };
  const r = m.op === "log"
    ? pick((x) => x.hasRamBacking)
    : m.op === "romd"
    ? pick((x) => x.kind === "romDevice")
    : m.op === "aliasOffset"
    ? pick((x) => x.aliasTarget !== null)
    : m.op === "add"
    ? pick((x) => x.container === null && x !== pool[0])
    : pool[m.i % pool.length];
  // The AS root's own address is rendered but, as in QEMU, moving an unmapped region (or mapping it
  // into a disabled container) requests no rebuild: the view would go stale by design.
  if ((m.op === "address" || m.op === "add") && r === pool[0]) return;
  const at = (u: number, top: boolean) => (top ? TOP_BASE : 0n) + BigInt(u) * GRANULE;
  const before = snapshot(pool);
  try {
    switch (m.op) {
      case "enabled":
        return r.setEnabled(m.on);
      case "readonly":
        return r.setReadonly(m.on);
      case "nonvolatile":
        return r.setNonvolatile(m.on);
      case "unmergeable":
        return r.setUnmergeable(m.on);
      case "romd":
        return r.setRomdMode(m.on);
      case "log":
        return r.setLog(m.on);
      case "address":
        return r.setAddress(at(m.units, m.top));
      case "aliasOffset":
        return r.setAliasOffset(at(m.units % 9, m.top));
      case "size":
        return r.setSize(m.top ? (1n << 64n) - 1n : BigInt(m.units) * GRANULE);
      case "remove":
        return r.container?.removeSubregion(r);
      case "add":
        return pool[m.c % pool.length].addSubregionOverlap(at(m.units, m.top), r, m.prio);
    }
  } catch (e) {
    if (!(e instanceof TypeError || e instanceof RangeError)) throw e;
    assert.equal(snapshot(pool), before, `refused ${m.op} changed the tree: ${e.message}`);
  }
}
