/**
 * Memory listeners: how other layers (the KVM memslot listener, tracers, tests) follow the flat
 * view of an address space, with QEMU's callbacks, priorities and call order
 * (`include/exec/memory.h`, `MemoryListener`).
 *
 * @module
 */

import type { MemoryRegion } from "./memory_region.ts";

/** A piece of a flat view as a listener sees it (QEMU's `MemoryRegionSection`). */
export interface MemoryRegionSection {
  /** Absolute start in the address space (QEMU's `offset_within_address_space`). */
  readonly start: bigint;
  /** Size in bytes. */
  readonly size: bigint;
  /** The terminal region. */
  readonly region: MemoryRegion;
  /** Offset of `start` inside `region`. */
  readonly offsetInRegion: bigint;
  /** Read-only as rendered (inherited along the path). */
  readonly readonly: boolean;
  /** Nonvolatile as rendered. */
  readonly nonvolatile: boolean;
  /** Unmergeable as rendered. */
  readonly unmergeable: boolean;
  /** The region's romd mode when rendered. */
  readonly romdMode: boolean;
  /** The region's dirty-log mask when rendered. */
  readonly dirtyLogMask: number;
}

/** An ioeventfd where it sits in an address space (QEMU's section, match data, data and notifier). */
export interface IoeventfdSection {
  /** Absolute address of the write it matches. */
  readonly start: bigint;
  /** Access size it matches: 1, 2, 4 or 8, or 0 for any. */
  readonly size: number;
  /** Whether only writes of `data` match. */
  readonly matchData: boolean;
  /** The value to match (0 unless `matchData`). */
  readonly data: bigint;
  /** The object given to `MemoryRegion.addEventfd`. */
  readonly eventfd: object;
}

/** Listener priorities of QEMU: accelerators and device backends register at 10. */
export const ListenerPriority = { MIN: 0, ACCEL: 10, DEV_BACKEND: 10 } as const;

/**
 * Callbacks an address space calls when its flat view changes. All are optional.
 *
 * Order (as QEMU): `begin`/`commit` around every rebuild, for every registered listener, lowest
 * priority first; within a rebuild each address space delivers all `regionDel`s (highest priority
 * first, ascending addresses) before any `regionAdd`/`regionNop` (lowest priority first);
 * `logStart` lowest first, `logStop` highest first; `coalescedIoDel` comes just before the
 * `regionDel` of its range and `coalescedIoAdd` just after the `regionAdd`. Registering replays the
 * current view as adds, unregistering as dels.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, type MemoryListener } from "../mod.ts";
 * const root = MemoryRegion.container("system", 1n << 32n);
 * using as = new AddressSpace(root, "memory");
 * const seen: string[] = [];
 * const listener: MemoryListener = { regionAdd: (s) => void seen.push(s.region.name) };
 * as.registerListener(listener);
 * root.addSubregion(0, MemoryRegion.ram("ram", 0x1000));
 * assert.deepEqual(seen, ["ram"]);
 * as.unregisterListener(listener);
 * ```
 */
export interface MemoryListener {
  /** Name for messages. */
  readonly name?: string;
  /** Order among listeners (default 0): lower first for adds, higher first for deletes. */
  readonly priority?: number;
  /** Before the differences of a rebuild or a (un)registration replay. */
  begin?(): void;
  /** After them. */
  commit?(): void;
  /** A range appeared or changed (the new section). */
  regionAdd?(section: MemoryRegionSection): void;
  /** A range disappeared or changed (the old section). */
  regionDel?(section: MemoryRegionSection): void;
  /** A range is unchanged by this rebuild. */
  regionNop?(section: MemoryRegionSection): void;
  /** Dirty-log clients were gained on an unchanged range (`oldMask` → `newMask`). */
  logStart?(section: MemoryRegionSection, oldMask: number, newMask: number): void;
  /** Dirty-log clients were lost on an unchanged range. */
  logStop?(section: MemoryRegionSection, oldMask: number, newMask: number): void;
  /** Asked to move dirty bits of a logged range into its region's dirty bitmap. */
  logSync?(section: MemoryRegionSection): void;
  /**
   * An ioeventfd became visible at `fd.start` (`MemoryRegion.addEventfd`, or its region appeared or
   * moved there); called highest priority first, as QEMU calls `eventfd_add`.
   */
  eventfdAdd?(fd: IoeventfdSection): void;
  /** An ioeventfd is gone from `fd.start`; called lowest priority first (QEMU's `eventfd_del`). */
  eventfdDel?(fd: IoeventfdSection): void;
  /**
   * Writes to `[start, start + size)` (address-space addresses, inside `section`) may now be
   * coalesced: a range of `section.region` added with `MemoryRegion.addCoalescing`, or a flat range
   * of such a region that appeared. Lowest priority first (QEMU's `coalesced_io_add`).
   */
  coalescedIoAdd?(section: MemoryRegionSection, start: bigint, size: bigint): void;
  /** Writes there may no longer be coalesced; highest priority first (QEMU's `coalesced_io_del`). */
  coalescedIoDel?(section: MemoryRegionSection, start: bigint, size: bigint): void;
  /**
   * For `info mtree -f`: an accelerator's name (QEMU prints " KVM") appended to each range for
   * which {@link hasMemory} says it holds a mapping of exactly that start and size.
   */
  readonly accelerator?: string;
  /** Whether the accelerator maps exactly `[start, start + size)`. */
  hasMemory?(start: bigint, size: bigint): boolean;
}
