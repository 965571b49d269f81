/**
 * The KVM side of the memory API's coalesced I/O, as QEMU's KVM listeners (`kvm_coalesce_mmio_region`,
 * `kvm_coalesce_pio_add`) and `kvm_flush_coalesced_mmio_buffer` do it:
 *
 * - {@link KvmCoalescedListener} registers each coalesced range a flat view shows as a KVM zone
 *   (`KVM_REGISTER_COALESCED_MMIO`). A guest write inside a zone then does not leave `KVM_RUN`:
 *   KVM appends it to a ring in the vCPU mapping and lets the guest go on.
 * - {@link CoalescedRing} plays the ring back through the address spaces, oldest first, when the
 *   memory API asks (`flushCoalescedMmio`: before an access to a region with `flushCoalesced`, at
 *   every transaction, at a snapshot).
 *
 * On the PC board the PCI host's CONFIG_ADDRESS port (0xcf8) and the RTC's index port (0x70) are
 * coalesced, as in QEMU: a guest that probes PCI configuration space exits once per register
 * instead of twice.
 *
 * @module
 */

import type { MemoryListener, MemoryRegionSection } from "../memory/mod.ts";
import { ListenerPriority } from "../memory/mod.ts";
import type { ExitSpaces } from "./serve_exit.ts";
import type { CoalescedZone } from "./vm.ts";

/** What the listener needs from a VM: the real `Vm`, or a recording fake in tests. */
export interface CoalescedBackend {
  /** `KVM_REGISTER_COALESCED_MMIO`; throws on failure. */
  registerCoalescedZone(zone: CoalescedZone): void;
  /** `KVM_UNREGISTER_COALESCED_MMIO`; throws on failure. */
  unregisterCoalescedZone(zone: CoalescedZone): void;
  /** True once the VM is closed: KVM dropped its zones with it. Absent: never closed. */
  readonly closed?: boolean;
}

/**
 * Keeps a VM's coalesced zones equal to the coalesced ranges of the address space it is registered
 * on: `"mmio"` for the memory space, `"pio"` for the I/O space. Register it only where KVM has the
 * capability (`KVM_CAP_COALESCED_MMIO`, and `KVM_CAP_COALESCED_PIO` for ports).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
 * import { KvmCoalescedListener } from "./kvm_coalesced_mmio.ts";
 * const zones: string[] = [];
 * const vm = {
 *   registerCoalescedZone: (z: { address: number | bigint; size: number }) => zones.push(`+${z.address}/${z.size}`),
 *   unregisterCoalescedZone: (z: { address: number | bigint; size: number }) => zones.push(`-${z.address}/${z.size}`),
 * };
 * const io = MemoryRegion.container("io", 0x10000);
 * const index = MemoryRegion.io("rtc-index", 1, { write: () => {} });
 * io.addSubregion(0x70, index);
 * index.addCoalescing(0, 1);
 * using space = new AddressSpace(io, "I/O");
 * space.registerListener(new KvmCoalescedListener(vm, "pio")); // replays the zone
 * index.setAddress(0x72);
 * assert.deepEqual(zones, ["+112/1", "-112/1", "+114/1"]);
 * ```
 */
export class KvmCoalescedListener implements MemoryListener {
  /** For messages. */
  readonly name: string;
  /** QEMU registers its KVM listeners at the accelerator's priority. */
  readonly priority: number = ListenerPriority.ACCEL;
  readonly #backend: CoalescedBackend;
  readonly #space: "pio" | "mmio";

  /** Zones KVM would have, kept here until {@link activate} (null once active). */
  #pending: Map<string, { start: bigint; size: bigint }> | null;

  /**
   * A listener for `space` (`"mmio"` on the memory address space, `"pio"` on the I/O one). With
   * `deferred`, it keeps the zones to itself until {@link activate}: until then every write exits
   * as if nothing were coalesced (correct, one exit more per write), and a VM whose guest never
   * uses the coalesced devices never has a zone — on kvm_pvm a VM with any zone takes ≈15 ms
   * longer to destroy (docs/kvm-abi.md §3).
   */
  constructor(backend: CoalescedBackend, space: "pio" | "mmio", options: { deferred?: boolean } = {}) {
    if (space !== "pio" && space !== "mmio") {
      throw new RangeError(`KvmCoalescedListener: space must be "pio" or "mmio", got ${String(space)}`);
    }
    this.#backend = backend;
    this.#space = space;
    this.name = `kvm-coalesced-${space}`;
    this.#pending = options.deferred ? new Map() : null;
  }

  /** False while a deferred listener keeps its zones to itself. */
  get active(): boolean {
    return this.#pending === null;
  }

  /**
   * Registers the zones a deferred listener kept (the view's coalesced ranges as they are now,
   * merged if {@link mergeSplitZones} was called) and registers every later change at once.
   * Returns how many it registered; 0 when already active.
   */
  activate(): number {
    const pending = this.#pending;
    if (pending === null) return 0;
    this.#pending = null;
    for (const { start, size } of pending.values()) this.#zone(true, start, size);
    return pending.size;
  }

  /** Coalesced ranges that the view splits into pieces, by their whole zone (`start+size`). */
  readonly #split = new Map<string, SplitRange>();
  #merging = false;

  /**
   * `KVM_REGISTER_COALESCED_MMIO` for a range that became coalesced (once split ranges are merged,
   * a piece of one registers its whole range instead, if not registered yet).
   */
  coalescedIoAdd(section: MemoryRegionSection, start: bigint, size: bigint): void {
    const whole = wholeRange(section, start, size);
    if (!whole) return this.#zone(true, start, size);
    const key = `${whole.start}+${whole.size}`;
    let range = this.#split.get(key);
    if (!range) this.#split.set(key, range = { ...whole, pieces: new Set(), registered: false });
    range.pieces.add(`${start}+${size}`);
    if (!this.#merging) return this.#zone(true, start, size);
    if (!range.registered) this.#zone(true, range.start, range.size);
    range.registered = true;
  }

  /**
   * `KVM_UNREGISTER_COALESCED_MMIO` for one that went (once merged, the whole range goes with its
   * last piece); nothing once the VM is closed.
   */
  coalescedIoDel(section: MemoryRegionSection, start: bigint, size: bigint): void {
    if (this.#backend.closed) return;
    const whole = wholeRange(section, start, size);
    const key = whole && `${whole.start}+${whole.size}`;
    const range = key ? this.#split.get(key) : undefined;
    if (!range) return this.#zone(false, start, size);
    range.pieces.delete(`${start}+${size}`);
    if (range.pieces.size === 0) this.#split.delete(key!);
    if (!this.#merging) return this.#zone(false, start, size);
    if (range.pieces.size === 0 && range.registered) this.#zone(false, range.start, range.size);
  }

  /**
   * Registers each coalesced range that the view splits (a region mapped over part of it, as the
   * PIIX reset control at 0xcf9 splits the PCI host's CONFIG_ADDRESS at 0xcf8) as one whole zone in
   * place of its pieces, now and from now on; returns how many it merged. QEMU registers only the
   * pieces, so a guest's 4-byte write to 0xcf8 fits no zone and exits every time; with the whole
   * zone KVM queues it. (Both at once would not do: KVM's bus keeps overlapping zones out of the
   * order its lookup needs.) Writes to what covers the gap are then queued as well and reach it
   * through the address space when the ring is played back, so the caller must play the ring back
   * before serving each exit and every few milliseconds (a guest may write the reset control and
   * halt).
   */
  mergeSplitZones(): number {
    this.#merging = true;
    let merged = 0;
    for (const range of this.#split.values()) {
      if (range.registered) continue;
      for (const piece of range.pieces) {
        const [start, size] = piece.split("+").map(BigInt);
        this.#zone(false, start, size);
      }
      this.#zone(true, range.start, range.size);
      range.registered = true;
      merged++;
    }
    return merged;
  }

  #zone(add: boolean, start: bigint, size: bigint): void {
    const pending = this.#pending;
    if (pending !== null) {
      if (add) pending.set(`${start}+${size}`, { start, size });
      else {
        // KVM_UNREGISTER_COALESCED_MMIO's rule: every zone that contains the range goes.
        for (const [key, zone] of pending) {
          if (zone.start <= start && start + size <= zone.start + zone.size) pending.delete(key);
        }
      }
      return;
    }
    const zone = { space: this.#space, address: start, size: Number(size) };
    if (add) this.#backend.registerCoalescedZone(zone);
    else this.#backend.unregisterCoalescedZone(zone);
  }
}

/** A coalesced range of a region that the view splits, and the pieces registered of it. */
interface SplitRange {
  readonly start: bigint;
  readonly size: bigint;
  readonly pieces: Set<string>;
  registered: boolean;
}

/**
 * The whole coalesced range of `section`'s region that the piece `start`/`size` belongs to, in
 * address-space coordinates, when the piece is only part of it (undefined when it is all of it).
 */
function wholeRange(
  section: MemoryRegionSection,
  start: bigint,
  size: bigint,
): { start: bigint; size: bigint } | undefined {
  const base = section.start - section.offsetInRegion;
  for (const range of section.region.coalesced) {
    const whole = base + range.offset;
    if (whole <= start && start + size <= whole + range.size) {
      return whole === start && range.size === size ? undefined : { start: whole, size: range.size };
    }
  }
  return undefined;
}

/** Bytes of `struct kvm_coalesced_mmio_ring`'s header (`first`, `last`) and of one entry. */
const RING_HEADER = 8;
const ENTRY_SIZE = 24;

/**
 * The coalesced-MMIO ring: one page of the vCPU mapping, shared by the whole VM, that KVM fills
 * (`last`) and the VMM drains (`first`). Each entry is a write: address, length (1–8), whether it
 * is a port, and its bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
 * import { CoalescedRing } from "./kvm_coalesced_mmio.ts";
 * const seen: number[] = [];
 * const io = MemoryRegion.container("io", 0x10000);
 * io.addSubregion(0x70, MemoryRegion.io("rtc-index", 1, { write: (_o, v) => void seen.push(Number(v)) }));
 * using ports = new AddressSpace(io, "I/O");
 * using memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
 * const page = new Uint8Array(4096); // as KVM fills it: one port write of 0x8f to 0x70
 * const view = new DataView(page.buffer);
 * view.setBigUint64(8, 0x70n, true);
 * view.setUint32(16, 1, true);
 * view.setUint32(20, 1, true);
 * page[24] = 0x8f;
 * view.setUint32(4, 1, true); // last
 * assert.equal(new CoalescedRing(page, { memory, io: ports }).flush(), 1);
 * assert.deepEqual(seen, [0x8f]);
 * assert.equal(view.getUint32(0, true), 1); // first caught up with last
 * ```
 */
export class CoalescedRing {
  readonly #page: Uint8Array;
  readonly #view: DataView;
  readonly #words: Uint32Array;
  readonly #spaces: ExitSpaces;
  readonly #entries: number;

  /**
   * The ring in `page` (the vCPU mapping's page at `checkExtension(KVM_CAP_COALESCED_MMIO)`),
   * played back into `spaces`.
   *
   * @throws {RangeError} if `page` is not a whole page of at least 4 KiB starting on a 4-byte boundary.
   */
  constructor(page: Uint8Array, spaces: ExitSpaces) {
    if (!(page instanceof Uint8Array) || page.length < 4096 || page.byteOffset % 4 !== 0) {
      throw new RangeError("CoalescedRing: the ring must be a 4 KiB page of the vCPU mapping");
    }
    this.#page = page;
    this.#view = new DataView(page.buffer, page.byteOffset, page.length);
    this.#words = new Uint32Array(page.buffer, page.byteOffset, 2);
    this.#spaces = spaces;
    // KVM_COALESCED_MMIO_MAX: as many entries as fit in the page after the header.
    this.#entries = Math.floor((page.length - RING_HEADER) / ENTRY_SIZE);
  }

  /**
   * Writes every queued entry, oldest first, through the "I/O" (port entries) or "memory" address
   * space, and hands each slot back to KVM once written. Returns how many were written. An entry
   * with a length outside 1–8 (KVM never writes one) is skipped.
   */
  flush(): number {
    const words = this.#words;
    const max = this.#entries;
    let first = words[0];
    let written = 0;
    // `last` is read once per pass with an atomic load: the entries before it are complete.
    for (let last = Atomics.load(words, 1); first !== last; last = Atomics.load(words, 1)) {
      if (first >= max || last >= max) {
        // Not KVM's doing: the ring's indices are corrupt. Drop what is there rather than read off the page.
        Atomics.store(words, 0, last < max ? last : 0);
        return written;
      }
      while (first !== last) {
        const at = RING_HEADER + first * ENTRY_SIZE;
        const len = this.#view.getUint32(at + 8, true);
        if (len >= 1 && len <= 8) {
          const data = this.#page.subarray(at + 16, at + 16 + len);
          if (this.#view.getUint32(at + 12, true) === 1) {
            this.#spaces.io.rw(this.#view.getUint32(at, true) & 0xffff, data, true);
          } else {
            this.#spaces.memory.rw(this.#view.getBigUint64(at, true), data, true);
          }
          written++;
        }
        first = (first + 1) % max;
        Atomics.store(words, 0, first);
      }
    }
    return written;
  }
}
