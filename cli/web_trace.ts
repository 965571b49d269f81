/**
 * The timeline of the live page: every memory-listener call on the traced address spaces
 * (`regionAdd`, `regionDel`, `regionNop`, `logStart`, `logStop`) and every
 * `KVM_SET_USER_MEMORY_REGION` the KVM listener makes, in the order they happen, grouped by the
 * rebuild (commit) they belong to.
 *
 * Two listeners record the calls, so that each sits beside the KVM listener's ioctls in the order a
 * reader expects: one at the lowest priority hears the add pass (adds run lowest priority first,
 * so it records `regionAdd` just before KVM maps it), one above the accelerators hears the delete
 * pass (deletes run highest first, so `regionDel` is recorded just before KVM unmaps it).
 *
 * @module
 */

import { ListenerPriority } from "../memory/mod.ts";
import type { AddressSpace, MemoryListener, MemoryRegionSection } from "../memory/mod.ts";
import { hex16 } from "./web_map.ts";

/** One entry of the timeline. */
export type TimelineEntry =
  & { seq: number; time: number; batch: number }
  & (
    | {
      kind: "regionAdd" | "regionDel" | "regionNop" | "logStart" | "logStop";
      as: string;
      start: string;
      end: string;
      region: string;
      offset: string;
      readonly: boolean;
      dirtyLog: number;
    }
    | {
      kind: "memslot";
      slot: number;
      flags: number;
      gpa: string;
      size: string;
      host: string;
      error?: string;
    }
  );

/** What {@link Timeline.memslot} is given: a `KVM_SET_USER_MEMORY_REGION` (the KVM trace hook's). */
export interface MemslotCallLike {
  readonly slot: number;
  readonly flags: number;
  readonly guestPhysAddr: bigint;
  readonly memorySize: bigint;
  readonly userspaceAddr: bigint;
  readonly error?: unknown;
}

/** Entries kept for a page that connects later. */
export const TIMELINE_KEEP = 4000;
/** Above the accelerators' priority: hears deletes before KVM does. */
const DELETE_PRIORITY = ListenerPriority.ACCEL + 1;

/**
 * Records the timeline of some address spaces; {@link take} hands out what is new.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
 * import { Timeline } from "./web_trace.ts";
 * const system = MemoryRegion.container("system", 1n << 64n);
 * using memory = new AddressSpace(system, "memory");
 * const timeline = new Timeline([memory]);
 * system.addSubregion(0, MemoryRegion.ram("ram", 0x1000));
 * assert.deepEqual(timeline.take().map((e) => e.kind), ["regionAdd"]);
 * timeline.close();
 * ```
 */
export class Timeline {
  readonly #spaces: AddressSpace[];
  readonly #listeners: MemoryListener[] = [];
  readonly #entries: TimelineEntry[] = [];
  #fresh: TimelineEntry[] = [];
  #seq = 0;
  #batch = 0;
  #replaying = false;
  /** Called after each rebuild that recorded something. */
  onCommit: (() => void) | undefined;

  /** Starts recording `spaces` (the current map is not replayed into the timeline). */
  constructor(spaces: readonly AddressSpace[]) {
    this.#spaces = [...spaces];
    for (const as of this.#spaces) {
      const section =
        (kind: "regionAdd" | "regionDel" | "regionNop" | "logStart" | "logStop") =>
        (s: MemoryRegionSection) => {
          if (!this.#replaying) this.#section(kind, as.name, s);
        };
      const adds: MemoryListener = {
        name: `web-timeline-add:${as.name}`,
        priority: ListenerPriority.MIN,
        begin: () => {
          if (as === this.#spaces[0]) this.#batch++;
        },
        regionAdd: section("regionAdd"),
        regionNop: section("regionNop"),
        logStart: section("logStart"),
        commit: () => {
          if (this.#fresh.length > 0) this.onCommit?.();
        },
      };
      const deletes: MemoryListener = {
        name: `web-timeline-del:${as.name}`,
        priority: DELETE_PRIORITY,
        regionDel: section("regionDel"),
        logStop: section("logStop"),
      };
      this.#replaying = true;
      try {
        as.registerListener(adds);
        as.registerListener(deletes);
      } finally {
        this.#replaying = false;
      }
      this.#listeners.push(adds, deletes);
    }
  }

  /** Records one `KVM_SET_USER_MEMORY_REGION` (pass it the KVM listener's trace calls). */
  memslot(call: MemslotCallLike): void {
    this.#push({
      kind: "memslot",
      slot: call.slot,
      flags: call.flags,
      gpa: hex16(call.guestPhysAddr),
      size: `0x${call.memorySize.toString(16)}`,
      host: `0x${call.userspaceAddr.toString(16)}`,
      ...(call.error === undefined ? {} : { error: String((call.error as Error)?.message ?? call.error) }),
    });
  }

  /** The entries recorded since the last call. */
  take(): TimelineEntry[] {
    const fresh = this.#fresh;
    this.#fresh = [];
    return fresh;
  }

  /** The last {@link TIMELINE_KEEP} entries. */
  get entries(): readonly TimelineEntry[] {
    return this.#entries;
  }

  /** Stops recording (unregisters the listeners, hearing nothing of their replay). Idempotent. */
  close(): void {
    this.#replaying = true;
    for (const [i, listener] of this.#listeners.entries()) {
      this.#spaces[i >> 1].unregisterListener(listener); // a no-op once the space was closed
    }
    this.#listeners.length = 0;
  }

  #section(
    kind: "regionAdd" | "regionDel" | "regionNop" | "logStart" | "logStop",
    as: string,
    s: MemoryRegionSection,
  ): void {
    this.#push({
      kind,
      as,
      start: hex16(s.start),
      end: hex16(s.start + (s.size === 0n ? 0n : s.size - 1n)),
      region: s.region.name,
      offset: hex16(s.offsetInRegion),
      readonly: s.readonly,
      dirtyLog: s.dirtyLogMask,
    });
  }

  #push(entry: Omit<TimelineEntry, "seq" | "time" | "batch"> & Partial<TimelineEntry>): void {
    const full = { ...entry, seq: this.#seq++, time: Date.now(), batch: this.#batch } as TimelineEntry;
    this.#entries.push(full);
    if (this.#entries.length > TIMELINE_KEEP) this.#entries.splice(0, this.#entries.length - TIMELINE_KEEP);
    this.#fresh.push(full);
    if (this.#fresh.length > TIMELINE_KEEP) this.#fresh.splice(0, this.#fresh.length - TIMELINE_KEEP);
  }
}
