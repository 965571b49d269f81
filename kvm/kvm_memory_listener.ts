/**
 * The KVM memory listener: turns an address space's flat-view changes into memslots, with the rules
 * of QEMU 7.2's `accel/kvm/kvm-all.c` (`kvm_set_phys_mem`, `kvm_set_user_memory_region`,
 * `kvm_mem_flags`, `kvm_log_start/stop/sync`). See `docs/qemu-memory-semantics.md` §10.
 *
 * @module
 */

import { ENOENT, ENOSPC } from "./_errno.ts";
import {
  DIRTY_PAGE_SIZE,
  ListenerPriority,
  type MemoryListener,
  type MemoryRegionSection,
} from "../memory/mod.ts";
import type { MemoryRegion } from "../memory/mod.ts";
import {
  KVM_CAP_NR_MEMSLOTS,
  KVM_CAP_READONLY_MEM,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
} from "./ioctls.ts";
import { KvmError } from "./kvm_error.ts";
import type { UserMemoryRegion, Vm } from "./vm.ts";

const SET_REGION = "KVM_SET_USER_MEMORY_REGION";

/** What the listener needs from a VM: the real {@link Vm}, or a recording fake in tests. */
export interface MemslotBackend {
  /** `KVM_SET_USER_MEMORY_REGION`; throws on failure. */
  setUserMemoryRegion(region: Readonly<UserMemoryRegion>): void;
  /** `KVM_GET_DIRTY_LOG` of a slot (the full slot id): one bit per page, least significant first. */
  getDirtyLog(slot: number, pages: number): Uint8Array;
  /**
   * True once the VM is closed: KVM freed its memslots with it, so a range that goes only frees
   * its slot here (no call). Absent: the backend is never closed.
   */
  readonly closed?: boolean;
}

/** One `KVM_SET_USER_MEMORY_REGION` as the trace hook sees it. */
export interface MemslotCall extends Readonly<UserMemoryRegion> {
  /** The failure, if the kernel refused the call. */
  readonly error?: unknown;
}

/** A memslot the listener holds. */
export interface Memslot {
  /** Slot index (without the address-space id). */
  readonly index: number;
  /** Guest-physical start. */
  readonly start: bigint;
  /** Size in bytes. */
  readonly size: bigint;
  /** Host virtual address of the first byte. */
  readonly hostAddress: bigint;
  /** `KVM_MEM_*` flags. */
  readonly flags: number;
  /** The RAM-backed region the slot maps. */
  readonly region: MemoryRegion;
  /** Offset of the slot's first byte inside `region`. */
  readonly regionOffset: bigint;
}

/** Options of {@link KvmMemoryListener}. */
export interface KvmMemoryListenerOptions {
  /** Address-space id: 0 for normal memory, 1 for x86 SMM (slot ids carry it in bits 16+). */
  asId?: number;
  /** Number of slots the kernel offers (`KVM_CAP_NR_MEMSLOTS`). */
  maxSlots: number;
  /** Whether `KVM_MEM_READONLY` is available (`KVM_CAP_READONLY_MEM`). */
  readonlyMem: boolean;
  /** Host page size (4096 on x86-64). */
  hostPageSize?: bigint;
  /** Name for messages and traces. */
  name?: string;
  /** Called after every `KVM_SET_USER_MEMORY_REGION`, successful or not. */
  trace?: (call: MemslotCall) => void;
}

/**
 * Maps the RAM, ROM and romd ranges of one address space as KVM memslots.
 *
 * Policy on a known QEMU quirk: read-only-ness comes from the region (`mr.readonly`, or a ROM device
 * in romd mode), not from an alias on the path, exactly as QEMU 7.2's `kvm_mem_flags` does; so a
 * read-only alias of writable RAM (PAM's `pam-rom`) maps writable, and guest writes through it land
 * in RAM — the same as the memory API's own dispatch, which also decides directness on the region.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
 * import { KvmMemoryListener } from "./kvm_memory_listener.ts";
 * const calls: string[] = [];
 * const backend = {
 *   setUserMemoryRegion: (r: { slot: number; memorySize: bigint }) => void calls.push(`${r.slot}:${r.memorySize}`),
 *   getDirtyLog: () => new Uint8Array(8),
 * };
 * const ram = MemoryRegion.ram("ram", 0x10000, {
 *   backing: { size: 0x10000n, hostAddress: 0x7f00_0000_0000n, read() {}, write() {} },
 * });
 * const system = MemoryRegion.container("system", 1n << 64n);
 * system.addSubregion(0, ram);
 * using memory = new AddressSpace(system, "memory");
 * memory.registerListener(new KvmMemoryListener(backend, { maxSlots: 32, readonlyMem: true }));
 * assert.equal(calls[0], "0:65536");
 * ```
 */
export class KvmMemoryListener implements MemoryListener {
  /** For messages. */
  readonly name: string;
  /** QEMU's MEMORY_LISTENER_PRIORITY_ACCEL. */
  readonly priority: number = ListenerPriority.ACCEL;
  /** Printed by `info mtree -f` after ranges KVM maps exactly. */
  readonly accelerator = "KVM";
  readonly #backend: MemslotBackend;
  readonly #asId: number;
  readonly #maxSlots: number;
  readonly #readonlyMem: boolean;
  readonly #pageSize: bigint;
  readonly #trace: ((call: MemslotCall) => void) | undefined;
  /** Indexed by slot index; null = free (QEMU's size-0 entries). */
  readonly #slots: (Memslot | null)[] = [];
  /** The same slots by guest start address, for exact-match lookups. */
  readonly #byStart = new Map<bigint, Memslot>();

  /**
   * A listener that keeps `backend`'s memslots equal to the RAM of the address space it is
   * registered on. {@link KvmMemoryListener.forVm} fills `maxSlots` and `readonlyMem` from the kernel.
   *
   * @throws {RangeError} when `options.asId` is not 0–32767 or `options.maxSlots` not 1–65536.
   */
  constructor(backend: MemslotBackend, options: KvmMemoryListenerOptions) {
    const asId = options.asId ?? 0;
    if (!Number.isInteger(asId) || asId < 0 || asId > 0x7fff) {
      throw new RangeError(`KVM listener: address-space id ${asId} is not 0–32767`);
    }
    if (!Number.isInteger(options.maxSlots) || options.maxSlots <= 0 || options.maxSlots > 0x10000) {
      throw new RangeError(`KVM listener: slot count ${options.maxSlots} is not 1–65536`);
    }
    this.#backend = backend;
    this.#asId = asId;
    this.#maxSlots = options.maxSlots;
    this.#readonlyMem = options.readonlyMem;
    this.#pageSize = options.hostPageSize ?? 4096n;
    this.#trace = options.trace;
    this.name = options.name ?? (asId === 0 ? "kvm-memory" : `kvm-as${asId}`);
  }

  /** A listener for `vm`, with the slot count and read-only support its kernel reports. */
  static forVm(
    vm: Vm,
    options: Omit<KvmMemoryListenerOptions, "maxSlots" | "readonlyMem"> = {},
  ): KvmMemoryListener {
    return new KvmMemoryListener(vm, {
      ...options,
      maxSlots: vm.checkExtension(KVM_CAP_NR_MEMSLOTS) || 32,
      readonlyMem: vm.checkExtension(KVM_CAP_READONLY_MEM) > 0,
    });
  }

  /** The slots in use, by index. */
  get slots(): readonly Memslot[] {
    return this.#slots.filter((s): s is Memslot => s !== null);
  }

  /** Whether a slot maps exactly `[start, start + size)` (the ` KVM` mark of `info mtree -f`). */
  hasMemory(start: bigint, size: bigint): boolean {
    return this.#find(start, size) !== undefined;
  }

  regionAdd(section: MemoryRegionSection): void {
    this.#setPhysMem(section, true);
  }

  regionDel(section: MemoryRegionSection): void {
    this.#setPhysMem(section, false);
  }

  /**
   * An unchanged range whose region changed READONLY: possible when the range is read-only through
   * an alias either way (the diff compares the rendered flag), so no del/add comes. QEMU 7.2 has no
   * `region_nop` here and keeps the stale flag; re-flagging keeps the slots what the region's flags
   * say whatever the history, as a slot created now would be.
   */
  regionNop(section: MemoryRegionSection): void {
    const aligned = this.#align(section);
    const slot = aligned && this.#find(aligned.start, aligned.size);
    if (slot && (this.#flags(slot.region) ^ slot.flags) & KVM_MEM_READONLY) this.#updateFlags(section);
  }

  /** First dirty-log client on a range: turn on `KVM_MEM_LOG_DIRTY_PAGES` on its slot. */
  logStart(section: MemoryRegionSection, oldMask: number): void {
    if (oldMask === 0) this.#updateFlags(section);
  }

  /** Last client gone: turn it off. */
  logStop(section: MemoryRegionSection, _oldMask: number, newMask: number): void {
    if (newMask === 0) this.#updateFlags(section);
  }

  /** Moves the kernel's dirty bits of the range's slot into its region's dirty bitmap. */
  logSync(section: MemoryRegionSection): void {
    const aligned = this.#align(section);
    if (!aligned) return;
    const slot = this.#find(aligned.start, aligned.size);
    if (slot) this.#syncDirty(slot);
  }

  // ------------------------------------------------------------------ internals

  /** QEMU's `kvm_align_section`: start rounded up, size down to host pages; null if nothing is left. */
  #align(section: MemoryRegionSection): { start: bigint; size: bigint } | null {
    const page = this.#pageSize;
    const start = (section.start + page - 1n) & -page;
    const delta = start - section.start;
    if (delta > section.size) return null;
    const size = (section.size - delta) & -page;
    return size === 0n ? null : { start, size };
  }

  /** QEMU's `kvm_mem_flags`: from the region, not the section. */
  #flags(region: MemoryRegion): number {
    let flags = 0;
    if (region.dirtyLogMask !== 0) flags |= KVM_MEM_LOG_DIRTY_PAGES;
    if ((region.readonly || region.isRomd) && this.#readonlyMem) flags |= KVM_MEM_READONLY;
    return flags;
  }

  /** The slot mapping exactly [start, start + size) (slots never overlap: one per start). */
  #find(start: bigint, size: bigint): Memslot | undefined {
    const slot = this.#byStart.get(start);
    return slot && slot.size === size ? slot : undefined;
  }

  /** Records `slot` at its index (or frees `index` when `slot` is null). */
  #setSlot(index: number, slot: Memslot | null): void {
    const old = this.#slots[index];
    if (old) this.#byStart.delete(old.start);
    this.#slots[index] = slot;
    if (slot) this.#byStart.set(slot.start, slot);
  }

  #setPhysMem(section: MemoryRegionSection, add: boolean): void {
    const region = section.region;
    if (!region.hasRamBacking) return; // MMIO and reservations: every access exits
    if (!region.isRam) {
      // A ROM device: a read-only slot in romd mode; with romd off, no slot so everything traps.
      if (!this.#readonlyMem) return;
      if (!region.romdMode) add = false;
    }
    const aligned = this.#align(section);
    if (!aligned) return; // sub-page pieces stay MMIO
    const { start, size } = aligned;
    if (!add) {
      const slot = this.#find(start, size);
      if (!slot) return;
      if (this.#backend.closed) {
        // The slot went with the VM (an address space closed after its VM, as PcMachine closes them).
        this.#setSlot(slot.index, null);
        return;
      }
      if (slot.flags & KVM_MEM_LOG_DIRTY_PAGES) this.#syncDirty(slot); // keep the bits of the last round
      this.#call({ ...slot, size: 0n });
      this.#setSlot(slot.index, null);
      return;
    }
    const regionOffset = section.offsetInRegion + (start - section.start);
    const base = region.ramBacking.hostAddress;
    if (base === undefined) {
      throw new TypeError(
        `KVM: region "${region.name}" has no host mapping; give it a GuestMemory backing before mapping it`,
      );
    }
    const hostAddress = base + regionOffset;
    if (hostAddress % this.#pageSize !== 0n) {
      throw new RangeError(
        `KVM: region "${region.name}" at 0x${start.toString(16)} maps host address 0x${
          hostAddress.toString(16)
        }, which is not page aligned (offset 0x${regionOffset.toString(16)} in the region)`,
      );
    }
    const index = this.#slots.indexOf(null) >= 0 ? this.#slots.indexOf(null) : this.#slots.length;
    if (index >= this.#maxSlots) {
      throw new KvmError(SET_REGION, ENOSPC, {
        detail: `mapping "${region.name}" at 0x${start.toString(16)}`,
        hint:
          `all ${this.#maxSlots} memslots (KVM_CAP_NR_MEMSLOTS) are in use; map fewer separate RAM ranges`,
      });
    }
    const slot: Memslot = {
      index,
      start,
      size,
      hostAddress,
      flags: this.#flags(region),
      region,
      regionOffset,
    };
    this.#call(slot);
    this.#setSlot(index, slot);
  }

  /** QEMU's `kvm_section_update_flags` + `kvm_slot_update_flags` for an exactly matching slot. */
  #updateFlags(section: MemoryRegionSection): void {
    const aligned = this.#align(section);
    if (!aligned) return;
    const slot = this.#find(aligned.start, aligned.size);
    if (!slot) return; // trapping every access: no slot to update
    const flags = this.#flags(slot.region);
    if (flags === slot.flags) return;
    // The kernel refuses an in-place READONLY change (EINVAL, Linux 75d61fbcf563): delete first.
    if ((flags ^ slot.flags) & KVM_MEM_READONLY) {
      if (slot.flags & KVM_MEM_LOG_DIRTY_PAGES) this.#syncDirty(slot); // as on any delete
      this.#call({ ...slot, size: 0n });
      this.#setSlot(slot.index, null);
    }
    const updated = { ...slot, flags };
    this.#call(updated);
    this.#setSlot(slot.index, updated);
  }

  #syncDirty(slot: Memslot): void {
    const pages = Number(slot.size / this.#pageSize);
    let bitmap: Uint8Array;
    try {
      bitmap = this.#backend.getDirtyLog(this.#slotId(slot), pages);
    } catch (e) {
      if (e instanceof KvmError && e.errno === ENOENT) return; // no logging on this slot
      throw e;
    }
    for (let page = 0; page < pages; page++) {
      if (bitmap[page >> 3] & (1 << (page & 7))) {
        slot.region.markDirty(slot.regionOffset + BigInt(page) * this.#pageSize, DIRTY_PAGE_SIZE);
      }
    }
  }

  #slotId(slot: Memslot): number {
    return slot.index | (this.#asId << 16);
  }

  #call(slot: Memslot): void {
    const region: UserMemoryRegion = {
      slot: this.#slotId(slot),
      flags: slot.flags,
      guestPhysAddr: slot.start,
      memorySize: slot.size,
      userspaceAddr: slot.hostAddress,
    };
    try {
      this.#backend.setUserMemoryRegion(region);
    } catch (error) {
      this.#trace?.({ ...region, error });
      throw error;
    }
    this.#trace?.(region);
  }
}
