/**
 * The memory map as data (`x-query-mtree`, `x-query-memslots`): the same region trees and flat
 * views as `info mtree` and `info mtree -f` print, in the same order and with the same names,
 * kinds and priorities, but as JSON a page can draw. Addresses are QEMU's 16-digit hex strings
 * (exact for all 64 bits, and equal to the text `info mtree` prints).
 *
 * @module
 */

import type { AddressSpace, FlatView, MemoryRegion } from "../memory/mod.ts";

/** One region of a tree, placed at its absolute address. */
export interface MapRegion {
  /** The region's name. */
  name: string;
  /** `info mtree`'s kind: container, ram, rom, romd, i/o, … (of the target, for an alias). */
  kind: string;
  /** Absolute first byte, 16 hex digits. */
  start: string;
  /** Absolute last byte (QEMU's inclusive end), 16 hex digits. */
  end: string;
  /** Priority among its siblings. */
  prio: number;
  /** Whether it is enabled (`info mtree` without -D leaves disabled ones out). */
  enabled: boolean;
  /** Nonvolatile (`nv-` in the kind). */
  nv: boolean;
  /** For an alias: the target's name and the window inside it. */
  alias?: { target: string; start: string; end: string };
  /** Subregions, in `info mtree`'s display order. */
  children: MapRegion[];
}

/** One block of `info mtree`: an address space (or several sharing a root), or an alias target. */
export interface MapTree {
  /** The address spaces drawn from this root (sorted); empty for a `memory-region:` block. */
  spaces: string[];
  /** The root region, at address 0. */
  root: MapRegion;
}

/** One range of a flat view. */
export interface MapRange {
  start: string;
  end: string;
  prio: number;
  /** As `info mtree -f` prints it: `rom` for a read-only range. */
  kind: string;
  name: string;
  /** Offset inside the region, when not 0. */
  offset?: string;
  /** Whether an accelerator (KVM) maps exactly this range. */
  kvm: boolean;
}

/** One flat view of `info mtree -f`, with the address spaces that share it. */
export interface MapFlat {
  spaces: { name: string; root: string; alias?: string }[];
  root: string | null;
  ranges: MapRange[];
}

/** One KVM memslot as the KVM listener holds it. */
export interface MapMemslot {
  slot: number;
  start: string;
  /** Last byte (inclusive). */
  end: string;
  size: string;
  /** `KVM_MEM_*` flags. */
  flags: number;
  /** The RAM region it maps, and the offset of its first byte there. */
  region: string;
  regionOffset: string;
}

/** The whole map. */
export interface MapSnapshot {
  trees: MapTree[];
  aliasTargets: MapTree[];
  flat: MapFlat[];
}

const MASK64 = (1n << 64n) - 1n;

/** QEMU's 16-digit hex. */
export function hex16(value: bigint): string {
  return value.toString(16).padStart(16, "0");
}

function lastOffset(size: bigint): bigint {
  return size === 0n ? 0n : size - 1n;
}

function regionData(mr: MemoryRegion, base: bigint, queue: MemoryRegion[]): MapRegion {
  const start = (base + mr.addr) & MASK64;
  const end = (start + lastOffset(mr.size)) & MASK64;
  const target = mr.aliasTarget;
  if (target && !queue.includes(target)) queue.push(target);
  // Display order of `info mtree`: address ascending, then higher priority, then list order.
  const children = mr.subregions.slice().sort((a, b) =>
    a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : b.priority - a.priority
  );
  return {
    name: mr.name,
    kind: mr.mtreeType,
    start: hex16(start),
    end: hex16(end),
    prio: mr.priority,
    enabled: mr.enabled,
    nv: mr.nonvolatile,
    ...(target
      ? {
        alias: {
          target: target.name,
          start: hex16(mr.aliasOffset),
          end: hex16(mr.aliasOffset + lastOffset(mr.size)),
        },
      }
      : {}),
    children: children.map((c) => regionData(c, start, queue)),
  };
}

/**
 * The map of `spaces` as data: the blocks of `info mtree` (trees, then the alias targets they
 * reach) and of `info mtree -f` (flat views).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
 * import { mapSnapshot } from "./web_map.ts";
 * const system = MemoryRegion.container("system", 1n << 64n);
 * system.addSubregion(0x1000, MemoryRegion.ram("ram", 0x1000));
 * using memory = new AddressSpace(system, "memory");
 * const map = mapSnapshot([memory]);
 * assert.equal(map.trees[0].root.children[0].start, "0000000000001000");
 * assert.equal(map.flat[0].ranges[0].name, "ram");
 * ```
 */
export function mapSnapshot(spaces: readonly AddressSpace[]): MapSnapshot {
  const byRoot = new Map<MemoryRegion, AddressSpace[]>();
  for (const as of spaces) byRoot.set(as.root, [...(byRoot.get(as.root) ?? []), as]);
  const queue: MemoryRegion[] = [];
  const trees: MapTree[] = [];
  for (const [root, group] of byRoot) {
    trees.push({
      spaces: group.map((as) => as.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
      root: regionData(root, 0n, queue),
    });
  }
  const aliasTargets: MapTree[] = [];
  for (let i = 0; i < queue.length; i++) {
    aliasTargets.push({ spaces: [], root: regionData(queue[i], 0n, queue) });
  }
  const byView = new Map<FlatView, AddressSpace[]>();
  for (const as of spaces) byView.set(as.view, [...(byView.get(as.view) ?? []), as]);
  const flat: MapFlat[] = [];
  for (const [view, group] of byView) {
    flat.push({
      spaces: group.map((as) => ({
        name: as.name,
        root: as.root.name,
        ...(as.root.aliasTarget ? { alias: as.root.aliasTarget.name } : {}),
      })),
      root: view.root ? view.root.name : null,
      ranges: view.ranges.map((r) => ({
        start: hex16(r.start),
        end: hex16(r.start + lastOffset(r.size)),
        prio: r.region.priority,
        kind: `${r.nonvolatile ? "nv-" : ""}${r.readonly ? "rom" : r.region.mtreeType}`,
        name: r.region.name,
        ...(r.offsetInRegion !== 0n ? { offset: hex16(r.offsetInRegion) } : {}),
        kvm: group.some((as) =>
          as.listeners.some((l) => l.accelerator !== undefined && l.hasMemory?.(r.start, r.size) === true)
        ),
      })),
    });
  }
  return { trees, aliasTargets, flat };
}

/** What {@link memslotData} needs of a slot (`KvmMemoryListener.slots`). */
export interface SlotLike {
  readonly index: number;
  readonly start: bigint;
  readonly size: bigint;
  readonly flags: number;
  readonly region: MemoryRegion;
  readonly regionOffset: bigint;
}

/** The memslots as data, by guest address. */
export function memslotData(slots: readonly SlotLike[]): MapMemslot[] {
  return slots.slice().sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0)).map((s) => ({
    slot: s.index,
    start: hex16(s.start),
    end: hex16(s.start + lastOffset(s.size)),
    size: `0x${s.size.toString(16)}`,
    flags: s.flags,
    region: s.region.name,
    regionOffset: hex16(s.regionOffset),
  }));
}
