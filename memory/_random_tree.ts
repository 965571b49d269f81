/**
 * Random region graphs for property tests: a list of construction steps (a fast-check arbitrary)
 * interpreted into a tree, plus an independent per-address model of what the tree maps.
 *
 * @module
 */

import fc from "fast-check";
import { ADDRESS_SPACE_SIZE } from "./address.ts";
import { MemoryRegion } from "./memory_region.ts";
import type { FlatRange } from "./flat_view.ts";

const noop = { read: () => 0, write: () => {} };

/** Granule of sizes and offsets: every boundary is a multiple of it, so probing one address per
 * granule covers every piece. */
export const GRANULE = 0x100n;
/** Offsets near the top of the address space, to exercise 2^64 arithmetic. */
export const TOP_BASE: bigint = ADDRESS_SPACE_SIZE - 0x40n * GRANULE;

/** Kinds a random node can have. */
export type NodeKind = "container" | "ram" | "rom" | "io" | "reservation" | "romDevice" | "alias";

/** One random node: its kind and size, where it is mapped, and its flags. Picks are taken modulo. */
export interface NodeSpec {
  kind: NodeKind;
  units: number;
  huge: boolean;
  parent: number;
  offsetUnits: number;
  top: boolean;
  priority: number;
  target: number;
  aliasOffsetUnits: number;
  disabled: boolean;
  readonly: boolean;
  nonvolatile: boolean;
  unmergeable: boolean;
  romdOff: boolean;
}

const rare = fc.integer({ min: 0, max: 9 }).map((x) => x === 0);

/** fast-check arbitrary of one node. */
export const nodeArb: fc.Arbitrary<NodeSpec> = fc.record({
  kind: fc.constantFrom<NodeKind>(
    "container",
    "container",
    "ram",
    "rom",
    "io",
    "reservation",
    "romDevice",
    "alias",
    "alias",
  ),
  units: fc.integer({ min: 0, max: 16 }),
  huge: rare,
  parent: fc.nat(1000),
  offsetUnits: fc.integer({ min: 0, max: 60 }),
  top: rare,
  priority: fc.integer({ min: -2, max: 2 }),
  target: fc.nat(1000),
  aliasOffsetUnits: fc.integer({ min: 0, max: 24 }),
  disabled: rare,
  readonly: rare,
  nonvolatile: rare,
  unmergeable: rare,
  romdOff: fc.boolean(),
});

/**
 * Builds a connected graph: each node is mapped into an earlier container (the root first of
 * all), aliases point at any earlier region (also other aliases). A placement the API refuses
 * (a cycle through an alias) leaves that node unmapped.
 */
export function buildTree(
  nodes: readonly NodeSpec[],
  rootHuge: boolean,
): { root: MemoryRegion; pool: MemoryRegion[] } {
  const root = MemoryRegion.container("root", rootHuge ? ADDRESS_SPACE_SIZE : 0x40n * GRANULE);
  const pool: MemoryRegion[] = [root];
  const containers: MemoryRegion[] = [root];
  nodes.forEach((s, n) => {
    const size = s.huge ? ADDRESS_SPACE_SIZE : BigInt(s.units) * GRANULE;
    const name = `${s.kind}${n}`;
    let mr: MemoryRegion;
    switch (s.kind) {
      case "container": // containers get room for several children
        mr = MemoryRegion.container(name, s.huge ? size : size * 4n + GRANULE);
        break;
      case "ram":
        mr = MemoryRegion.ram(name, size);
        break;
      case "rom":
        mr = MemoryRegion.rom(name, size);
        break;
      case "io":
        mr = MemoryRegion.io(name, size, noop);
        break;
      case "romDevice":
        mr = MemoryRegion.romDevice(name, size, noop);
        if (s.romdOff) mr.setRomdMode(false);
        break;
      case "reservation":
        mr = MemoryRegion.reservation(name, size);
        break;
      case "alias": {
        const target = pool[s.target % pool.length];
        // Windows may reach past the target (QEMU allows it; only the part inside renders).
        const offset = BigInt(s.aliasOffsetUnits) * GRANULE;
        mr = MemoryRegion.alias(name, target, offset, s.huge ? target.size : BigInt(s.units) * GRANULE);
        break;
      }
    }
    if (s.disabled) mr.setEnabled(false);
    if (s.readonly) mr.setReadonly(true);
    if (s.nonvolatile) mr.setNonvolatile(true);
    if (s.unmergeable) mr.setUnmergeable(true);
    const parent = containers[s.parent % containers.length];
    const offset = (s.top ? TOP_BASE : 0n) + BigInt(s.offsetUnits) * GRANULE;
    try {
      parent.addSubregionOverlap(offset, mr, s.priority);
    } catch (e) {
      if (!(e instanceof RangeError || e instanceof TypeError)) throw e;
    }
    pool.push(mr);
    if (s.kind === "container" || s.kind === "io") containers.push(mr); // I/O regions may have children too
  });
  return { root, pool };
}

/** What one address maps to, by the model. */
export interface Hit {
  region: MemoryRegion;
  offset: bigint;
  readonly: boolean;
  nonvolatile: boolean;
  unmergeable: boolean;
  /** The regions walked to get here: two pieces of one region reached by different paths are
   * different gap fills, which matters where they are unmergeable. */
  path: string;
}

/**
 * The independent model: resolve one address by walking the tree as the documentation states it —
 * a disabled region is absent; an address outside a region's own range is not in it; an alias
 * looks its target up at the translated address; children in list order, first hit wins; a
 * terminating region answers for whatever its children left.
 */
export function resolve(
  mr: MemoryRegion,
  base: bigint,
  addr: bigint,
  ro = false,
  nv = false,
  um = false,
  path = "",
): Hit | null {
  if (!mr.enabled) return null;
  base += mr.addr;
  ro ||= mr.readonly;
  nv ||= mr.nonvolatile;
  um ||= mr.unmergeable;
  if (addr < base || addr >= base + mr.size) return null;
  path += `/${mr.name}`;
  if (mr.aliasTarget) {
    return resolve(mr.aliasTarget, base - mr.aliasTarget.addr - mr.aliasOffset, addr, ro, nv, um, path);
  }
  for (const child of mr.subregions) {
    const hit = resolve(child, base, addr, ro, nv, um, path);
    if (hit) return hit;
  }
  return mr.terminates
    ? { region: mr, offset: addr - base, readonly: ro, nonvolatile: nv, unmergeable: um, path }
    : null;
}

/** Addresses to probe: one per granule at the bottom and at the top of the address space. */
export function probeAddresses(): bigint[] {
  const out: bigint[] = [];
  for (let i = 0n; i < 0x80n; i++) out.push(i * GRANULE, i * GRANULE + GRANULE - 1n);
  for (let a = TOP_BASE; a < ADDRESS_SPACE_SIZE; a += GRANULE) out.push(a, a + GRANULE - 1n);
  return out;
}

/** Whether QEMU's simplification would merge two neighbours (used to check maximal merging). */
export function mergeable(a: FlatRange, b: FlatRange): boolean {
  return a.start + a.size === b.start && a.region === b.region &&
    a.offsetInRegion + a.size === b.offsetInRegion &&
    a.readonly === b.readonly && a.nonvolatile === b.nonvolatile && a.romdMode === b.romdMode &&
    a.dirtyLogMask === b.dirtyLogMask && !a.unmergeable && !b.unmergeable;
}
