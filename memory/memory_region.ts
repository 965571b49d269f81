/**
 * Memory regions: the nodes of QEMU's acyclic region graph.
 *
 * One class covers every kind, as QEMU's single `MemoryRegion` struct does: the kind is fixed at
 * construction by one of the static constructors. Semantics follow `system/memory.c` of QEMU 7.2
 * (called `softmmu/memory.c` there) and `include/exec/memory.h`.
 *
 * @module
 */

import { type AddrInput, checkedAdd, hex16, toAddress, toPriority, toSize } from "./address.ts";
import { checkBoolean, show } from "./_check.ts";
import type { MemoryRegionOps } from "./memory_region_ops.ts";
import { _notifyCoalesced, type CoalescedRange, flushCoalescedMmio } from "./coalesced_mmio.ts";
import { type RamBacking, SparseRam } from "./ram_backing.ts";
import {
  _markIoeventfdsPending,
  _markUpdatePending,
  beginTransaction,
  commitTransaction,
} from "./transaction.ts";

/** What a region is; fixed at construction. */
export type RegionKind = "container" | "ram" | "rom" | "romDevice" | "io" | "alias" | "reservation";

/** Dirty-log clients, bit numbers of the dirty-log mask (QEMU's `DIRTY_MEMORY_*`). */
export const DirtyLogClient = { VGA: 0, CODE: 1, MIGRATION: 2 } as const;

/** Granule of the memory API's dirty bitmaps: the 4 KiB target page. */
export const DIRTY_PAGE_SIZE = 4096n;

/** Pages per chunk of a dirty bitmap (4 KiB of bits for 128 MiB): sparse, so any region size works. */
const DIRTY_CHUNK_PAGES = 1 << 15;

/** Most pages one `markDirty` may mark or one `takeDirtyPages` may return (64 GiB of 4 KiB pages). */
const MAX_DIRTY_PAGES_PER_CALL = 1 << 24;

/**
 * An eventfd a guest write to a region signals instead of the region's ops, where the accelerator
 * can (QEMU's `MemoryRegionIoeventfd`): a write of `size` bytes at `offset` (any size when 0), and,
 * with `matchData`, only of the value `data`. `eventfd` is the caller's object, opaque here (the KVM
 * layer's listener wants an `EventFd`).
 */
export interface MemoryRegionIoeventfd {
  /** Offset in the region. */
  readonly offset: bigint;
  /** Access size it matches: 1, 2, 4 or 8, or 0 for any. */
  readonly size: number;
  /** Whether only writes of `data` match. */
  readonly matchData: boolean;
  /** The value to match (0 unless `matchData`), in the guest's byte order. */
  readonly data: bigint;
  /** What to signal. */
  readonly eventfd: object;
}

/** An ioeventfd's place and match, keyed by `start` (in an address space) or `offset` (in a region). */
type IoeventfdKey = Omit<MemoryRegionIoeventfd, "offset"> & {
  readonly offset?: bigint;
  readonly start?: bigint;
};

/**
 * QEMU's `memory_region_ioeventfd_before` as a comparison: by start, size, `matchData` (without
 * first), the data when both match data, then the eventfd object (in order of first sight, where
 * QEMU compares pointers). Internal to `memory/`.
 */
export function _compareIoeventfds(a: IoeventfdKey, b: IoeventfdKey): number {
  const at = (a.start ?? a.offset)!;
  const bt = (b.start ?? b.offset)!;
  if (at !== bt) return at < bt ? -1 : 1;
  if (a.size !== b.size) return a.size < b.size ? -1 : 1;
  if (a.matchData !== b.matchData) return a.matchData ? 1 : -1;
  if (a.matchData && a.data !== b.data) return a.data < b.data ? -1 : 1;
  return eventfdOrder(a.eventfd) - eventfdOrder(b.eventfd);
}

/** A stable order for eventfd objects. */
const eventfdIds = new WeakMap<object, number>();
let nextEventfdId = 0;
function eventfdOrder(eventfd: object): number {
  let id = eventfdIds.get(eventfd);
  if (id === undefined) eventfdIds.set(eventfd, id = nextEventfdId++);
  return id;
}

/** Options of the RAM-like constructors. */
export interface RamOptions {
  /** The bytes behind the region (default: a {@link SparseRam} that commits pages on first write). */
  backing?: RamBacking;
}

/** The children list of every leaf (never mutated: the first child gets a list of its own). */
const NO_CHILDREN: MemoryRegion[] = [];

function describe(region: MemoryRegion): string {
  return `region "${region.name}"`;
}

/**
 * A memory region: container, RAM, ROM, ROM device, I/O, alias or reservation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../mod.ts";
 * const system = MemoryRegion.container("system", 1n << 64n);
 * const ram = MemoryRegion.ram("pc.ram", 0x10_0000);
 * system.addSubregion(0, ram);
 * using as = new AddressSpace(system, "memory");
 * as.write(0x100, 4, 0xdeadbeef);
 * assert.equal(as.read(0x100, 4).value, 0xdeadbeefn);
 * ```
 */
export class MemoryRegion {
  /** Name printed by `info mtree`. */
  readonly name: string;
  /** The kind chosen by the constructor. */
  readonly kind: RegionKind;
  /** Callbacks of an I/O region or ROM device; `undefined` otherwise (QEMU's unassigned ops). */
  readonly ops: MemoryRegionOps | undefined;
  /** Free-form owner description, printed by `info mtree -o`. */
  owner: string | undefined;

  #size: bigint;
  #addr = 0n;
  #priority = 0;
  #enabled = true;
  #readonly: boolean;
  #nonvolatile = false;
  #unmergeable = false;
  #romdMode = true;
  #container: MemoryRegion | null = null;
  /** Shared empty list until the first child: most regions are leaves (smaller, denser objects). */
  #subregions: MemoryRegion[] = NO_CHILDREN;
  readonly #aliasTarget: MemoryRegion | null;
  #aliasOffset = 0n;
  #backing: RamBacking | undefined;
  #logCounts: number[] | undefined;
  #dirtyLogMask = 0;
  #ioeventfds: readonly MemoryRegionIoeventfd[] = [];
  #coalesced: readonly CoalescedRange[] = [];
  #flushCoalesced = false;
  /** Dirty bitmap in chunks of DIRTY_CHUNK_PAGES pages, only those with a page ever marked. */
  #dirty: Map<number, Uint8Array> | undefined;

  private constructor(
    name: string,
    kind: RegionKind,
    size: bigint,
    ops: MemoryRegionOps | undefined,
    aliasTarget: MemoryRegion | null,
  ) {
    if (typeof name !== "string") throw new TypeError(`region name must be a string, got ${show(name)}`);
    this.name = name;
    this.kind = kind;
    this.#size = size;
    this.ops = ops;
    this.#aliasTarget = aliasTarget;
    this.#readonly = kind === "rom";
  }

  /**
   * A pure container: groups children; where none maps anything it is transparent.
   *
   * @throws {TypeError} if `name` is not a string.
   * @throws {RangeError} if `size` is negative, not an integer, or past 2^64 (2^64-1 means 2^64).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { MemoryRegion } from "./memory_region.ts";
   * const pci = MemoryRegion.container("pci", 1n << 64n);
   * assert.equal(pci.terminates, false);
   * ```
   */
  static container(name: string, size: AddrInput): MemoryRegion {
    return new MemoryRegion(name, "container", toSize(size, `container "${name}" size`), undefined, null);
  }

  /**
   * Guest RAM. Host memory is committed only for pages that are written, unless a backing is given.
   *
   * @throws {TypeError} if `name` is not a string. Or `options` is not an object, or its backing not a {@link
   * RamBacking}.
   * @throws {RangeError} if `size` is negative, not an integer, or past 2^64 (2^64-1 means 2^64). Or the
   * backing is smaller than `size`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { MemoryRegion } from "./memory_region.ts";
   * const ram = MemoryRegion.ram("pc.ram", 8n << 30n); // 8 GiB, nothing allocated yet
   * assert.equal(ram.isRam, true);
   * assert.equal(ram.readonly, false);
   * ```
   */
  static ram(name: string, size: AddrInput, options: RamOptions = {}): MemoryRegion {
    return MemoryRegion.#ramLike(name, "ram", size, undefined, options);
  }

  /**
   * Read-only memory: reads come from its bytes; guest writes are dropped. Loaders fill it through
   * {@link MemoryRegion.ramBacking} or `AddressSpace.writeRom`.
   *
   * @throws {TypeError} if `name` is not a string. Or `options` is not an object, or its backing not a {@link
   * RamBacking}.
   * @throws {RangeError} if `size` is negative, not an integer, or past 2^64 (2^64-1 means 2^64). Or the
   * backing is smaller than `size`.
   */
  static rom(name: string, size: AddrInput, options: RamOptions = {}): MemoryRegion {
    return MemoryRegion.#ramLike(name, "rom", size, undefined, options);
  }

  /**
   * A ROM device (flash): in romd mode (the initial state) reads come from its bytes and writes go
   * to `ops.write`; with romd mode off every access goes to the ops.
   *
   * @throws {TypeError} if `name` is not a string, `ops` is not an object, or the backing is not a {@link
   * RamBacking}.
   * @throws {RangeError} if `size` is negative, not an integer, or past 2^64 (2^64-1 means 2^64). Or the
   * backing is smaller than `size`.
   */
  static romDevice(
    name: string,
    size: AddrInput,
    ops: MemoryRegionOps,
    options: RamOptions = {},
  ): MemoryRegion {
    if (!ops || typeof ops !== "object") {
      throw new TypeError(`ROM device "${name}": ops are required, got ${show(ops)}`);
    }
    return MemoryRegion.#ramLike(name, "romDevice", size, ops, options);
  }

  /**
   * An MMIO or port-I/O region whose every access calls `ops`.
   *
   * @throws {TypeError} if `name` is not a string or `ops` is not an object.
   * @throws {RangeError} if `size` is negative, not an integer, or past 2^64 (2^64-1 means 2^64).
   */
  static io(name: string, size: AddrInput, ops: MemoryRegionOps): MemoryRegion {
    if (!ops || typeof ops !== "object") {
      throw new TypeError(`I/O region "${name}": ops are required, got ${show(ops)}`);
    }
    return new MemoryRegion(name, "io", toSize(size, `I/O region "${name}" size`), ops, null);
  }

  /**
   * A reservation: claims its range (hiding lower-priority siblings) but every access is invalid —
   * reads 0 and drops writes with DECODE_ERROR. For ranges an in-kernel device handles.
   *
   * @throws {TypeError} if `name` is not a string.
   * @throws {RangeError} if `size` is negative, not an integer, or past 2^64 (2^64-1 means 2^64).
   */
  static reservation(name: string, size: AddrInput): MemoryRegion {
    return new MemoryRegion(name, "reservation", toSize(size, `reservation "${name}" size`), undefined, null);
  }

  /**
   * A window `[offset, offset + size)` of `target` (any region, also another alias).
   *
   * As in QEMU 7.2 (`memory_region_init_alias`), the window may reach past the target, now or
   * after the target shrinks: only the part inside the target renders (`render_memory_region`
   * clips to the target's own size); the rest is a hole.
   *
   * @throws {TypeError} if `name` is not a string or `target` is not a MemoryRegion.
   * @throws {RangeError} if `offset` is not in [0, 2^64) or `size` not in [0, 2^64].
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { MemoryRegion } from "./memory_region.ts";
   * const ram = MemoryRegion.ram("pc.ram", 0x2000_0000);
   * const low = MemoryRegion.alias("ram-below-4g", ram, 0, 0x1000_0000);
   * assert.equal(low.aliasTarget, ram);
   * ```
   */
  static alias(name: string, target: MemoryRegion, offset: AddrInput, size: AddrInput): MemoryRegion {
    if (!(target instanceof MemoryRegion)) {
      throw new TypeError(`alias "${name}": target must be a MemoryRegion, got ${show(target)}`);
    }
    const off = toAddress(offset, `alias "${name}" offset`);
    const sz = toSize(size, `alias "${name}" size`);
    const region = new MemoryRegion(name, "alias", sz, undefined, target);
    region.#aliasOffset = off;
    return region;
  }

  static #ramLike(
    name: string,
    kind: RegionKind,
    size: AddrInput,
    ops: MemoryRegionOps | undefined,
    options: RamOptions,
  ): MemoryRegion {
    const sz = toSize(size, `${kind} "${name}" size`);
    if (options === null || typeof options !== "object") {
      throw new TypeError(`${kind} "${name}": options must be an object, got ${show(options)}`);
    }
    const region = new MemoryRegion(name, kind, sz, ops, null);
    if (options.backing !== undefined) region.#attach(options.backing);
    return region;
  }

  // ------------------------------------------------------------------ attributes

  /** Size in bytes (2^64 for a whole address space). */
  get size(): bigint {
    return this.#size;
  }
  /** Offset in its container. */
  get addr(): bigint {
    return this.#addr;
  }
  /** Priority among the children of its container (signed 32-bit). */
  get priority(): number {
    return this.#priority;
  }
  /** Whether the region (and so its subtree) renders. */
  get enabled(): boolean {
    return this.#enabled;
  }
  /** Whether the region itself is read-only (ROM, or set by {@link setReadonly}). */
  get readonly(): boolean {
    return this.#readonly;
  }
  /** Nonvolatile flag (`nv-` in mtree). */
  get nonvolatile(): boolean {
    return this.#nonvolatile;
  }
  /** Whether flat-view ranges of this region may not be merged with neighbours. */
  get unmergeable(): boolean {
    return this.#unmergeable;
  }
  /** ROM device mode: true = reads direct from memory (initial), false = every access to the ops. */
  get romdMode(): boolean {
    return this.#romdMode;
  }
  /** The container this region is a child of, or null. */
  get container(): MemoryRegion | null {
    return this.#container;
  }
  /** Children in QEMU's list order: priority descending, most recently added first among equals. */
  get subregions(): readonly MemoryRegion[] {
    return this.#subregions;
  }
  /** Target of an alias, else null. */
  get aliasTarget(): MemoryRegion | null {
    return this.#aliasTarget;
  }
  /** Offset of an alias's window in its target. */
  get aliasOffset(): bigint {
    return this.#aliasOffset;
  }
  /** Whether the region is a leaf of the flat view (fills gaps its children leave). */
  get terminates(): boolean {
    return this.kind !== "container" && this.kind !== "alias";
  }
  /** RAM or ROM: guest memory accessed directly (QEMU's `mr->ram`). ROM devices are not. */
  get isRam(): boolean {
    return this.kind === "ram" || this.kind === "rom";
  }
  /** Whether the region has RAM bytes behind it (RAM, ROM or ROM device). */
  get hasRamBacking(): boolean {
    return this.kind === "ram" || this.kind === "rom" || this.kind === "romDevice";
  }
  /** A ROM device in romd mode (QEMU's `memory_region_is_romd`). */
  get isRomd(): boolean {
    return this.kind === "romDevice" && this.#romdMode;
  }
  /** Dirty-log clients currently logging this region (bit i = client i). */
  get dirtyLogMask(): number {
    return this.#dirtyLogMask;
  }

  /**
   * The kind `info mtree` prints: `romd`, `rom`, `ram` or `i/o` (aliases take their target's;
   * pure containers print `i/o` as QEMU 7.2 does).
   */
  get mtreeType(): string {
    let mr = this.#aliasTarget ?? this;
    while (mr.#aliasTarget) mr = mr.#aliasTarget;
    if (mr.isRomd) return "romd";
    if (mr.isRam && mr.#readonly) return "rom";
    if (mr.isRam) return "ram";
    return "i/o";
  }

  /**
   * The bytes behind a RAM, ROM or ROM-device region, created on first use (sparse) unless given
   * at construction or by {@link attachRamBacking}.
   *
   * @throws {TypeError} if the region has no RAM (not RAM, ROM or a ROM device).
   */
  get ramBacking(): RamBacking {
    if (!this.hasRamBacking) throw new TypeError(`${describe(this)} (${this.kind}) has no RAM`);
    if (!this.#backing) this.#backing = new SparseRam(this.#size);
    return this.#backing;
  }

  /**
   * Gives the region its memory (for example guest RAM that KVM maps). Allowed once, before the
   * region's bytes were first used, so nobody can hold on to other bytes.
   *
   * @throws {TypeError} if the region has no RAM, already has its memory, or `backing` is not a {@link
   * RamBacking}.
   * @throws {RangeError} if the backing is smaller than the region.
   */
  attachRamBacking(backing: RamBacking): void {
    if (!this.hasRamBacking) throw new TypeError(`${describe(this)} (${this.kind}) has no RAM`);
    if (this.#backing) throw new TypeError(`${describe(this)} already has its memory`);
    this.#attach(backing);
  }

  #attach(backing: RamBacking): void {
    if (
      backing === null || typeof backing !== "object" || typeof backing.size !== "bigint" ||
      typeof backing.read !== "function" || typeof backing.write !== "function"
    ) {
      throw new TypeError(`${describe(this)}: backing must be a RamBacking, got ${show(backing)}`);
    }
    if (backing.size < this.#size) {
      throw new RangeError(
        `${describe(this)}: backing of 0x${backing.size.toString(16)} bytes is smaller than the region (0x${
          this.#size.toString(16)
        })`,
      );
    }
    this.#backing = backing;
  }

  // ------------------------------------------------------------------ graph edits

  /**
   * Maps `region` at `offset` in this container with priority 0.
   *
   * @throws {TypeError} if `region` is not a MemoryRegion, is this region, is already a child of a container,
   * or would make a cycle (through children or alias targets).
   * @throws {RangeError} if `offset` is not in [0, 2^64), the region would end past 2^64, or the priority is
   * not a signed 32-bit integer. The tree is left as it was.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { MemoryRegion } from "./memory_region.ts";
   * const system = MemoryRegion.container("system", 1n << 64n);
   * const ioapic = MemoryRegion.reservation("kvm-ioapic", 0x1000);
   * system.addSubregion(0xfec0_0000, ioapic);
   * assert.equal(ioapic.container, system);
   * assert.equal(ioapic.addr, 0xfec0_0000n);
   * assert.throws(() => system.addSubregion(0, ioapic), TypeError); // a region is mapped once
   * ```
   */
  addSubregion(offset: AddrInput, region: MemoryRegion): void {
    this.#add(offset, region, 0, "addSubregion");
  }

  /**
   * Maps `region` at `offset` with an overlap `priority`: higher wins; equal: newest wins.
   *
   * @throws {TypeError} if `region` is not a MemoryRegion, is this region, is already a child of a container,
   * or would make a cycle (through children or alias targets).
   * @throws {RangeError} if `offset` is not in [0, 2^64), the region would end past 2^64, or the priority is
   * not a signed 32-bit integer. The tree is left as it was.
   */
  addSubregionOverlap(offset: AddrInput, region: MemoryRegion, priority: number): void {
    this.#add(offset, region, priority, "addSubregionOverlap");
  }

  #add(offset: AddrInput, region: MemoryRegion, priority: number, op: string): void {
    if (!(region instanceof MemoryRegion)) {
      throw new TypeError(`${op} on ${describe(this)}: not a MemoryRegion`);
    }
    const off = toAddress(offset, `${op}: offset of ${describe(region)}`);
    const prio = toPriority(priority, `${op}: ${describe(region)}`);
    if (region === this) throw new TypeError(`${op}: ${describe(this)} cannot contain itself`);
    if (region.#container) {
      throw new TypeError(
        `${op}: ${describe(region)} is already a child of ${describe(region.#container)}` +
          (region.#container === this ? "" : "; remove it there first"),
      );
    }
    checkedAdd(off, region.#size, `${op}: ${describe(region)} at 0x${off.toString(16)} ends past 2^64`);
    if (region.#reaches(this)) {
      throw new TypeError(`${op}: adding ${describe(region)} to ${describe(this)} would make a cycle`);
    }
    beginTransaction();
    region.#container = this;
    region.#addr = off;
    region.#priority = prio;
    this.#insertChild(region);
    if (this.#enabled && region.#enabled) _markUpdatePending();
    commitTransaction();
  }

  /** Inserts before the first child whose priority is <= the new one (QEMU's list order). */
  #insertChild(region: MemoryRegion): void {
    // The list is sorted by priority, descending: binary search for the insertion point.
    if (this.#subregions === NO_CHILDREN) this.#subregions = [];
    const list = this.#subregions;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid].#priority > region.#priority) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, region);
  }

  /** Whether `other` can be reached from this region through children and alias targets. */
  #reaches(other: MemoryRegion): boolean {
    const seen = new Set<MemoryRegion>();
    const stack: MemoryRegion[] = [this];
    while (stack.length) {
      const mr = stack.pop()!;
      if (mr === other) return true;
      if (seen.has(mr)) continue;
      seen.add(mr);
      if (mr.#aliasTarget) stack.push(mr.#aliasTarget);
      for (const child of mr.#subregions) stack.push(child);
    }
    return false;
  }

  /**
   * Unmaps `region`, which must be a child of this container.
   *
   * @throws {TypeError} if `region` is not a child of this container.
   */
  removeSubregion(region: MemoryRegion): void {
    if (!(region instanceof MemoryRegion) || region.#container !== this) {
      const name = region instanceof MemoryRegion ? describe(region) : String(region);
      throw new TypeError(`removeSubregion: ${name} is not a child of ${describe(this)}`);
    }
    beginTransaction();
    this.#subregions.splice(this.#subregions.indexOf(region), 1);
    region.#container = null;
    if (this.#enabled && region.#enabled) _markUpdatePending();
    commitTransaction();
  }

  /**
   * Enables or disables the region; a disabled region renders nothing and hides nothing.
   *
   * @throws {TypeError} if `enabled` is not a boolean.
   */
  setEnabled(enabled: boolean): void {
    checkBoolean(enabled, `setEnabled of ${describe(this)}`);
    if (enabled === this.#enabled) return;
    beginTransaction();
    this.#enabled = enabled;
    _markUpdatePending();
    commitTransaction();
  }

  /**
   * Changes the size (QEMU's `memory_region_set_size`). A target that shrinks under an alias's
   * window, or an alias that grows past its target, is allowed, as in QEMU: only the part of the
   * window inside the target renders.
   *
   * @throws {RangeError} if `size` is not in [0, 2^64], the region would end past 2^64 in its container, or
   * RAM would grow past its backing.
   */
  setSize(size: AddrInput): void {
    const sz = toSize(size, `setSize of ${describe(this)}`);
    if (sz === this.#size) return;
    if (this.#container) checkedAdd(this.#addr, sz, `setSize: ${describe(this)} would end past 2^64`);
    if (this.#backing && sz > this.#backing.size) {
      throw new RangeError(
        `setSize: ${describe(this)} cannot grow past its 0x${this.#backing.size.toString(16)} bytes`,
      );
    }
    beginTransaction();
    if (sz < this.#size) this.#trimDirty(sz);
    this.#size = sz;
    _markUpdatePending();
    commitTransaction();
  }

  /**
   * Moves the region within its container. Like QEMU it is removed and re-added with the same
   * priority, so it becomes the newest among equals and wins their overlaps.
   *
   * A region without a container (an address space's root) only records its new address, as QEMU
   * 7.2's `memory_region_set_address` does: nothing is re-rendered then, and the next commit that
   * renders places the root's view at the new base.
   *
   * @throws {RangeError} if `addr` is not in [0, 2^64) or the region would end past 2^64.
   */
  setAddress(addr: AddrInput): void {
    const a = toAddress(addr, `setAddress of ${describe(this)}`);
    if (a === this.#addr) return;
    const container = this.#container;
    if (!container) {
      this.#addr = a;
      return;
    }
    checkedAdd(a, this.#size, `setAddress: ${describe(this)} at 0x${a.toString(16)} would end past 2^64`);
    beginTransaction();
    container.removeSubregion(this);
    container.#add(a, this, this.#priority, "setAddress");
    commitTransaction();
  }

  /**
   * Moves an alias's window in its target (QEMU's `memory_region_set_alias_offset`); as there, the
   * window may reach past the target, and only its part inside the target renders.
   *
   * @throws {TypeError} if the region is not an alias.
   * @throws {RangeError} if `offset` is not in [0, 2^64).
   */
  setAliasOffset(offset: AddrInput): void {
    if (!this.#aliasTarget) throw new TypeError(`setAliasOffset: ${describe(this)} is not an alias`);
    const off = toAddress(offset, `setAliasOffset of ${describe(this)}`);
    if (off === this.#aliasOffset) return;
    this.#setFlag(() => this.#aliasOffset = off);
  }

  /**
   * Makes the region read-only (inherited by everything rendered through it).
   *
   * @throws {TypeError} if `readonly` is not a boolean.
   */
  setReadonly(readonly: boolean): void {
    checkBoolean(readonly, `setReadonly of ${describe(this)}`);
    if (readonly !== this.#readonly) this.#setFlag(() => this.#readonly = readonly);
  }

  /**
   * Sets the nonvolatile flag (inherited).
   *
   * @throws {TypeError} if `nonvolatile` is not a boolean.
   */
  setNonvolatile(nonvolatile: boolean): void {
    checkBoolean(nonvolatile, `setNonvolatile of ${describe(this)}`);
    if (nonvolatile !== this.#nonvolatile) this.#setFlag(() => this.#nonvolatile = nonvolatile);
  }

  /**
   * Forbids merging of this region's flat-view ranges with their neighbours (inherited).
   *
   * @throws {TypeError} if `unmergeable` is not a boolean.
   */
  setUnmergeable(unmergeable: boolean): void {
    checkBoolean(unmergeable, `setUnmergeable of ${describe(this)}`);
    if (unmergeable !== this.#unmergeable) this.#setFlag(() => this.#unmergeable = unmergeable);
  }

  /**
   * Switches a ROM device between romd mode (true) and MMIO mode (false).
   *
   * @throws {TypeError} if the region is not a ROM device or `romd` is not a boolean.
   */
  setRomdMode(romd: boolean): void {
    if (this.kind !== "romDevice") throw new TypeError(`setRomdMode: ${describe(this)} is not a ROM device`);
    checkBoolean(romd, `setRomdMode of ${describe(this)}`);
    if (romd !== this.#romdMode) this.#setFlag(() => this.#romdMode = romd);
  }

  /**
   * Starts (`on`) or stops dirty logging for one client; calls are counted, so the mask bit is set
   * by the first start and cleared by the last stop (QEMU's `memory_region_set_log`).
   *
   * @throws {TypeError} if `on` is not a boolean or the region has no RAM.
   * @throws {RangeError} if `client` is not a {@link DirtyLogClient}, or stops a client that is not logging.
   */
  setLog(on: boolean, client: number = DirtyLogClient.VGA): void {
    checkBoolean(on, `setLog of ${describe(this)}`);
    if (
      client !== DirtyLogClient.VGA && client !== DirtyLogClient.CODE && client !== DirtyLogClient.MIGRATION
    ) {
      throw new RangeError(`setLog: unknown dirty-log client ${show(client)} for ${describe(this)}`);
    }
    if (!this.hasRamBacking) throw new TypeError(`setLog: ${describe(this)} is not RAM`);
    const counts = this.#logCounts ??= [0, 0, 0];
    if (!on && counts[client] === 0) {
      throw new RangeError(`setLog: client ${client} is not logging ${describe(this)}`);
    }
    const before = counts[client] > 0;
    counts[client] += on ? 1 : -1;
    const after = counts[client] > 0;
    if (before === after) return;
    this.#setFlag(() => {
      this.#dirtyLogMask = after ? this.#dirtyLogMask | (1 << client) : this.#dirtyLogMask & ~(1 << client);
    });
  }

  /** The region's ioeventfds, in {@link _compareIoeventfds} order. */
  get ioeventfds(): readonly MemoryRegionIoeventfd[] {
    return this.#ioeventfds;
  }

  /**
   * Has a guest write of `size` bytes at `offset` (any size when 0; only of the value `data` with
   * `matchData`) signal `eventfd` instead of running the region's write callback, where the
   * accelerator can (QEMU's `memory_region_add_eventfd`). The address spaces' listeners hear of it
   * through `eventfdAdd` at the outermost commit, at each address where the region is visible, and
   * follow the region when it moves (`eventfdDel` at the old address, `eventfdAdd` at the new). For
   * a big-endian region `data` is byte-swapped to the guest's order, as QEMU does.
   *
   * @throws {RangeError} if `size` is not 0, 1, 2, 4 or 8, `data` does not fit in `size` bytes, the
   * access passes the region's end, or the same ioeventfd is already there.
   * @throws {TypeError} if `eventfd` is not an object or `matchData` not a boolean.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { AddressSpace, MemoryRegion } from "./mod.ts";
   * const root = MemoryRegion.container("system", 1n << 64n);
   * const notify = MemoryRegion.io("notify", 0x1000, { write: () => {} });
   * root.addSubregion(0xfe00_0000n, notify);
   * using as = new AddressSpace(root, "memory");
   * const seen: bigint[] = [];
   * as.registerListener({ eventfdAdd: (fd) => seen.push(fd.start) });
   * notify.addEventfd(8, 2, false, 0n, { fd: 42 });
   * assert.deepEqual(seen, [0xfe00_0008n]);
   * ```
   */
  addEventfd(offset: AddrInput, size: number, matchData: boolean, data: bigint, eventfd: object): void {
    const fd = this.#ioeventfd(offset, size, matchData, data, eventfd, "addEventfd");
    const list = this.#ioeventfds;
    let i = 0;
    while (i < list.length && _compareIoeventfds(list[i], fd) < 0) i++;
    if (i < list.length && _compareIoeventfds(list[i], fd) === 0) {
      throw new RangeError(
        `addEventfd: ${describe(this)} already has this ioeventfd at +0x${fd.offset.toString(16)}`,
      );
    }
    beginTransaction();
    this.#ioeventfds = [...list.slice(0, i), fd, ...list.slice(i)];
    if (this.#enabled) _markIoeventfdsPending();
    commitTransaction();
  }

  /**
   * Removes an ioeventfd added with the same arguments (QEMU's `memory_region_del_eventfd`).
   *
   * @throws {RangeError} if the region has no such ioeventfd (or the arguments are malformed).
   * @throws {TypeError} if `eventfd` is not an object or `matchData` not a boolean.
   */
  delEventfd(offset: AddrInput, size: number, matchData: boolean, data: bigint, eventfd: object): void {
    const fd = this.#ioeventfd(offset, size, matchData, data, eventfd, "delEventfd");
    const i = this.#ioeventfds.findIndex((other) => _compareIoeventfds(other, fd) === 0);
    if (i < 0) {
      throw new RangeError(
        `delEventfd: ${describe(this)} has no such ioeventfd at +0x${fd.offset.toString(16)}`,
      );
    }
    beginTransaction();
    this.#ioeventfds = this.#ioeventfds.filter((_, j) => j !== i);
    if (this.#enabled) _markIoeventfdsPending();
    commitTransaction();
  }

  #ioeventfd(
    offset: AddrInput,
    size: number,
    matchData: boolean,
    data: bigint,
    eventfd: object,
    op: string,
  ): MemoryRegionIoeventfd {
    const at = toAddress(offset, `${op} of ${describe(this)}`);
    if (size !== 0 && size !== 1 && size !== 2 && size !== 4 && size !== 8) {
      throw new RangeError(`${op}: access size ${show(size)} is not 0, 1, 2, 4 or 8 (${describe(this)})`);
    }
    checkBoolean(matchData, `${op} of ${describe(this)}`);
    if (typeof eventfd !== "object" || eventfd === null) {
      throw new TypeError(`${op}: the eventfd must be an object, got ${show(eventfd)} (${describe(this)})`);
    }
    const bits = BigInt(8 * (size || 8));
    if (typeof data !== "bigint" || data < 0n || data >= 1n << bits) {
      throw new RangeError(
        `${op}: data ${show(data)} does not fit in ${size || 8} bytes (${describe(this)})`,
      );
    }
    if (at + BigInt(size) > this.#size) {
      throw new RangeError(
        `${op}: +0x${at.toString(16)} (${size} bytes) passes the end of ${describe(this)}`,
      );
    }
    let value = matchData ? data : 0n;
    if (matchData && size > 1 && this.ops?.endianness === "big") {
      let swapped = 0n;
      for (let i = 0; i < size; i++) swapped = (swapped << 8n) | ((value >> BigInt(8 * i)) & 0xffn);
      value = swapped;
    }
    return { offset: at, size, matchData, data: value, eventfd };
  }

  // ------------------------------------------------------------------ coalesced I/O

  /** The ranges whose writes may be coalesced, in the order they were added. */
  get coalesced(): readonly CoalescedRange[] {
    return this.#coalesced;
  }

  /**
   * Whether the accelerator's queue of coalesced writes is played back before any access to this
   * region (QEMU's `flush_coalesced_mmio`): set by {@link addCoalescing} and
   * {@link setFlushCoalesced}.
   */
  get flushCoalesced(): boolean {
    return this.#flushCoalesced;
  }

  /** Coalesces writes to the whole region (QEMU's `memory_region_set_coalescing`). */
  setCoalescing(): void {
    this.clearCoalescing();
    this.addCoalescing(0n, this.#size);
  }

  /**
   * Lets the accelerator queue guest writes to `[offset, offset + size)` instead of exiting for
   * each (QEMU's `memory_region_add_coalescing`): the listeners of every address space hear
   * `coalescedIoAdd` for each flat range of this region the range meets, in that space's
   * addresses, at once (not at a commit); later rebuilds follow the region. Also sets
   * {@link flushCoalesced}. Only writes whose order against other accesses does not matter until
   * the next flush may be coalesced: the handler runs later, when the queue is played back.
   *
   * @throws {RangeError} if the range is empty or passes the region's end.
   * @throws {TypeError} if `offset` or `size` is not a number or bigint.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { AddressSpace, MemoryRegion } from "./mod.ts";
   * const io = MemoryRegion.container("io", 0x10000);
   * const index = MemoryRegion.io("pci-conf-idx", 4, { write: () => {} });
   * io.addSubregion(0xcf8, index);
   * using space = new AddressSpace(io, "I/O");
   * const zones: string[] = [];
   * space.registerListener({ coalescedIoAdd: (_s, start, size) => void zones.push(`${start}+${size}`) });
   * index.addCoalescing(0, 4);
   * assert.deepEqual(zones, ["3320+4"]);
   * assert.equal(index.flushCoalesced, true);
   * ```
   */
  addCoalescing(offset: AddrInput, size: AddrInput): void {
    const what = `addCoalescing of ${describe(this)}`;
    const at = toAddress(offset, what);
    const length = toAddress(size, what);
    if (length === 0n || at + length > this.#size) {
      throw new RangeError(
        `addCoalescing: [0x${at.toString(16)}, +0x${length.toString(16)}) is empty or passes the end of ${
          describe(this)
        }`,
      );
    }
    const range: CoalescedRange = { offset: at, size: length };
    this.#coalesced = [...this.#coalesced, range];
    _notifyCoalesced(this, range, true);
    this.#flushCoalesced = true;
  }

  /**
   * Stops coalescing writes to this region (QEMU's `memory_region_clear_coalescing`): flushes the
   * queue, clears {@link flushCoalesced}, and tells the listeners `coalescedIoDel` for each range.
   * No-op when nothing is coalesced.
   */
  clearCoalescing(): void {
    if (this.#coalesced.length === 0) return;
    flushCoalescedMmio();
    this.#flushCoalesced = false;
    while (this.#coalesced.length > 0) {
      const [range, ...rest] = this.#coalesced;
      this.#coalesced = rest;
      _notifyCoalesced(this, range, false);
    }
  }

  /** Has every access to this region first flush the coalesced writes (QEMU's `memory_region_set_flush_coalesced`). */
  setFlushCoalesced(): void {
    this.#flushCoalesced = true;
  }

  /**
   * Flushes the queue and clears {@link flushCoalesced}, unless the region has coalesced ranges of
   * its own (QEMU's `memory_region_clear_flush_coalesced`).
   */
  clearFlushCoalesced(): void {
    flushCoalescedMmio();
    if (this.#coalesced.length === 0) this.#flushCoalesced = false;
  }

  /** Attribute change: rebuild if the region itself is enabled, even when unmapped (as QEMU). */
  #setFlag(apply: () => void): void {
    beginTransaction();
    apply();
    if (this.#enabled) _markUpdatePending();
    commitTransaction();
  }

  // ------------------------------------------------------------------ dirty pages

  /**
   * Marks the pages of `[offset, offset + length)` dirty (memory API writes and log syncs; QEMU's
   * `memory_region_set_dirty`).
   *
   * @throws {TypeError} if `offset` or `length` is not a number or bigint.
   * @throws {RangeError} if the range is not inside the region, or spans more than 2^24 pages.
   */
  markDirty(offset: AddrInput, length: AddrInput): void {
    const range = this.#dirtyRange("markDirty", offset, length);
    if (!range) return;
    const [first, last] = range;
    if (last - first + 1 > MAX_DIRTY_PAGES_PER_CALL) {
      throw new RangeError(
        `markDirty of ${describe(this)}: ${
          last - first + 1
        } pages at once (at most ${MAX_DIRTY_PAGES_PER_CALL})`,
      );
    }
    const chunks = this.#dirty ??= new Map();
    let index = -1;
    let bits: Uint8Array | undefined;
    for (let page = first; page <= last; page++) {
      const c = Math.floor(page / DIRTY_CHUNK_PAGES);
      if (c !== index) {
        index = c;
        bits = chunks.get(c);
        if (!bits) chunks.set(c, bits = new Uint8Array(DIRTY_CHUNK_PAGES / 8));
      }
      const bit = page - c * DIRTY_CHUNK_PAGES;
      bits![bit >> 3] |= 1 << (bit & 7);
    }
  }

  /**
   * Returns the offsets (page-aligned, region-relative) of dirty pages in `[offset, offset+length)`
   * and clears them (QEMU's test-and-clear). By default the whole region from `offset`.
   *
   * @throws {TypeError} if `offset` or `length` is not a number or bigint.
   * @throws {RangeError} if the range is not inside the region, or holds more than 2^24 dirty
   * pages (then nothing is cleared: take smaller ranges).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { MemoryRegion } from "./memory_region.ts";
   * const vram = MemoryRegion.ram("vga.vram", 0x10000);
   * vram.markDirty(0x2010, 4);
   * assert.deepEqual(vram.takeDirtyPages(), [0x2000n]);
   * assert.deepEqual(vram.takeDirtyPages(), []);
   * ```
   */
  takeDirtyPages(offset: AddrInput = 0n, length?: AddrInput): bigint[] {
    const range = this.#dirtyRange("takeDirtyPages", offset, length);
    const chunks = this.#dirty;
    if (!range || !chunks) return [];
    const [first, last] = range;
    // Only chunks that exist are visited: the cost follows what is dirty, not the region's size.
    const lo = Math.floor(first / DIRTY_CHUNK_PAGES);
    const hi = Math.floor(last / DIRTY_CHUNK_PAGES);
    const present = hi - lo + 1 <= chunks.size
      ? Array.from({ length: hi - lo + 1 }, (_, i) => lo + i).filter((c) => chunks.has(c))
      : [...chunks.keys()].filter((c) => c >= lo && c <= hi).sort((a, b) => a - b);
    const pagesOf = (c: number, take: boolean): number[] => {
      const bits = chunks.get(c)!;
      const base = c * DIRTY_CHUNK_PAGES;
      const from = Math.max(first - base, 0);
      const to = Math.min(last - base, DIRTY_CHUNK_PAGES - 1);
      const pages: number[] = [];
      for (let byte = from >> 3; byte <= to >> 3; byte++) {
        if (bits[byte] === 0) continue;
        for (let bit = byte << 3; bit < (byte + 1) << 3; bit++) {
          if (bit < from || bit > to || !(bits[byte] & (1 << (bit & 7)))) continue;
          pages.push(base + bit);
          if (take) bits[byte] &= ~(1 << (bit & 7));
        }
      }
      return pages;
    };
    let count = 0;
    for (const c of present) count += pagesOf(c, false).length;
    if (count > MAX_DIRTY_PAGES_PER_CALL) {
      throw new RangeError(
        `takeDirtyPages of ${
          describe(this)
        }: ${count} dirty pages in the range (at most ${MAX_DIRTY_PAGES_PER_CALL}); take smaller ranges`,
      );
    }
    const result: bigint[] = [];
    for (const c of present) {
      for (const page of pagesOf(c, true)) result.push(BigInt(page) * DIRTY_PAGE_SIZE);
      if (chunks.get(c)!.every((b) => b === 0)) chunks.delete(c);
    }
    return result;
  }

  /** Checks a dirty-page range lies in the region; its first and last page, or null if empty. */
  #dirtyRange(op: string, offset: AddrInput, length: AddrInput | undefined): [number, number] | null {
    const off = toAddress(offset, `${op} of ${describe(this)}: offset`);
    const len = length === undefined
      ? (off <= this.#size ? this.#size - off : 0n)
      : toSize(length, `${op} of ${describe(this)}: length`);
    if (off + len > this.#size) {
      throw new RangeError(
        `${op}: 0x${off.toString(16)}+0x${len.toString(16)} lies outside ${describe(this)} (size 0x${
          this.#size.toString(16)
        })`,
      );
    }
    if (len === 0n) return null;
    // Page numbers are below 2^52: exact as doubles.
    return [Number(off / DIRTY_PAGE_SIZE), Number((off + len - 1n) / DIRTY_PAGE_SIZE)];
  }

  /** Forgets dirty bits of pages that no longer exist after a shrink to `size`. */
  #trimDirty(size: bigint): void {
    const chunks = this.#dirty;
    if (!chunks) return;
    const end = Number((size + DIRTY_PAGE_SIZE - 1n) / DIRTY_PAGE_SIZE); // first page past the end
    for (const [c, bits] of chunks) {
      const base = c * DIRTY_CHUNK_PAGES;
      if (base >= end) chunks.delete(c);
      else if (base + DIRTY_CHUNK_PAGES > end) {
        for (let bit = end - base; bit < DIRTY_CHUNK_PAGES; bit++) bits[bit >> 3] &= ~(1 << (bit & 7));
      }
    }
  }

  /** `name` plus its absolute range, for messages. */
  toString(): string {
    return `MemoryRegion(${this.kind} "${this.name}" size 0x${this.#size.toString(16)} at ${
      hex16(this.#addr)
    })`;
  }
}
