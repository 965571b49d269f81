/**
 * The KVM memory listener without KVM: a real `AddressSpace` drives the listener, whose calls go to
 * a recording fake that also enforces the kernel's memslot rules (docs/kvm-abi.md §4), so every
 * sequence the tests pin is one the kernel would accept. Rules: docs/qemu-memory-semantics.md §10.
 */
import { EEXIST, EFAULT, EINVAL, ENOENT } from "./_errno.ts";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AddressSpace,
  DirtyLogClient,
  type FlatRange,
  formatMtree,
  MemoryRegion,
  type RamBacking,
  transaction,
} from "../memory/mod.ts";
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY } from "./ioctls.ts";
import { KvmError } from "./kvm_error.ts";
import {
  KvmMemoryListener,
  type KvmMemoryListenerOptions,
  type MemslotBackend,
  type MemslotCall,
} from "./kvm_memory_listener.ts";
import { dirtyBitmapSize, type UserMemoryRegion } from "./vm.ts";

const PAGE_SIZE = 0x1000n;
const LOG = KVM_MEM_LOG_DIRTY_PAGES;
const RO = KVM_MEM_READONLY;
const SET_REGION = "KVM_SET_USER_MEMORY_REGION";
const hex = (v: bigint | number) => `0x${v.toString(16)}`;

// ------------------------------------------------------------------ fakes

/** Page-aligned fake host addresses: each fake backing gets its own 4 GiB window. */
let nextHostAddress = 0x7f00_0000_0000n;

/** A RAM backing with a host address and no memory behind it (reads zero, writes vanish). */
function fakeBacking(size: number | bigint): RamBacking & { readonly hostAddress: bigint } {
  const hostAddress = nextHostAddress;
  nextHostAddress += 0x1_0000_0000n;
  return { size: BigInt(size), hostAddress, read: (_offset, out) => void out.fill(0), write() {} };
}

function host(region: MemoryRegion): bigint {
  const address = region.ramBacking.hostAddress;
  assert.ok(address !== undefined);
  return address;
}

function ram(name: string, size: number | bigint): MemoryRegion {
  return MemoryRegion.ram(name, size, { backing: fakeBacking(size) });
}

function rom(name: string, size: number | bigint): MemoryRegion {
  return MemoryRegion.rom(name, size, { backing: fakeBacking(size) });
}

function romDevice(name: string, size: number | bigint): MemoryRegion {
  return MemoryRegion.romDevice(name, size, { read: () => 0, write() {} }, { backing: fakeBacking(size) });
}

/** How the tests write one `KVM_SET_USER_MEMORY_REGION`. */
function set(slot: number, flags: number, gpa: bigint | number, size: bigint | number, hva: bigint): string {
  return `set slot=${hex(slot)} flags=${flags} gpa=${hex(gpa)} size=${hex(size)} hva=${hex(hva)}`;
}

/** A delete: the slot's own fields with size 0 (QEMU's `kvm_set_phys_mem`). */
function del(slot: number, flags: number, gpa: bigint | number, hva: bigint): string {
  return set(slot, flags, gpa, 0, hva);
}

function dirty(slot: number, pages: number): string {
  return `dirty slot=${hex(slot)} pages=${pages}`;
}

function describeCall(r: Readonly<UserMemoryRegion>): string {
  return set(r.slot, r.flags, r.guestPhysAddr, r.memorySize, r.userspaceAddr);
}

/**
 * A recording {@link MemslotBackend} that behaves like the kernel's memslot table
 * (`__kvm_set_memory_region`): alignment, slot range, delete of a missing slot (EINVAL), overlap
 * with another live slot (EEXIST), in-place change of size, host address or READONLY (EINVAL).
 */
class FakeKvm implements MemslotBackend {
  /** Every call in order: `set …` and `dirty …` lines. */
  readonly log: string[] = [];
  /** Every `setUserMemoryRegion` argument. */
  readonly calls: UserMemoryRegion[] = [];
  /** Errors the fake's kernel rules raised (the listener broke a rule); `fail` ones are not here. */
  readonly ruleErrors: KvmError[] = [];
  /** getDirtyLog calls the kernel would refuse with ENOENT (no such slot, or not logging). */
  readonly enoent: string[] = [];
  /** The live slots, by slot id, as the kernel has them. */
  readonly live = new Map<number, Readonly<UserMemoryRegion>>();
  /** The bitmap the next getDirtyLog of a slot id returns (then cleared, as GET re-arms). */
  readonly dirtyBits = new Map<number, Uint8Array>();
  /** Makes a call fail: return the error to throw, or undefined to let it through. */
  fail: ((r: Readonly<UserMemoryRegion>) => KvmError | undefined) | undefined;

  constructor(readonly maxSlots = 32) {}

  setUserMemoryRegion(region: Readonly<UserMemoryRegion>): void {
    const r = { ...region };
    this.calls.push(r);
    this.log.push(describeCall(r));
    const injected = this.fail?.(r);
    if (injected) throw injected;
    const error = this.#kernelRules(r);
    if (error) {
      this.ruleErrors.push(error);
      throw error;
    }
    if (r.memorySize === 0n) this.live.delete(r.slot);
    else this.live.set(r.slot, r);
  }

  getDirtyLog(slot: number, pages: number): Uint8Array {
    this.log.push(dirty(slot, pages));
    const s = this.live.get(slot);
    if (!s || !(s.flags & LOG) || BigInt(pages) * PAGE_SIZE !== s.memorySize) {
      this.enoent.push(dirty(slot, pages));
      throw new KvmError("KVM_GET_DIRTY_LOG", ENOENT, { detail: `slot ${slot}` });
    }
    const bitmap = new Uint8Array(dirtyBitmapSize(pages));
    const bits = this.dirtyBits.get(slot);
    if (bits) bitmap.set(bits.subarray(0, bitmap.length));
    this.dirtyBits.delete(slot);
    return bitmap;
  }

  /** The live table as sorted text, slot ids included. */
  table(): string[] {
    return [...this.live.values()].sort((a, b) => Number(a.guestPhysAddr - b.guestPhysAddr)).map(
      describeCall,
    );
  }

  #kernelRules(r: UserMemoryRegion): KvmError | undefined {
    const refuse = (errno: number, why: string) =>
      new KvmError(SET_REGION, errno, { detail: `${describeCall(r)}: ${why}` });
    if (r.flags & ~(LOG | RO)) return refuse(EINVAL, "unknown flags");
    if ((r.slot & 0xffff) >= this.maxSlots) return refuse(EINVAL, "slot index out of range");
    if (r.memorySize % PAGE_SIZE || r.guestPhysAddr % PAGE_SIZE || r.userspaceAddr % PAGE_SIZE) {
      return refuse(EINVAL, "not page aligned");
    }
    const old = this.live.get(r.slot);
    if (r.memorySize === 0n) return old ? undefined : refuse(EINVAL, "delete of a slot that does not exist");
    if (old) {
      if (old.memorySize !== r.memorySize || old.userspaceAddr !== r.userspaceAddr) {
        return refuse(EINVAL, "size or host address changed in place");
      }
      if ((old.flags ^ r.flags) & RO) return refuse(EINVAL, "READONLY changed in place");
    }
    for (const other of this.live.values()) {
      if (other.slot === r.slot || other.slot >> 16 !== r.slot >> 16) continue;
      if (
        other.guestPhysAddr < r.guestPhysAddr + r.memorySize &&
        r.guestPhysAddr < other.guestPhysAddr + other.memorySize
      ) {
        return refuse(EEXIST, `overlaps ${describeCall(other)}`);
      }
    }
    return undefined;
  }
}

/** An empty "memory" address space with a KVM listener on a fresh fake; closes the AS on dispose. */
function setup(options: Partial<KvmMemoryListenerOptions> = {}) {
  const system = MemoryRegion.container("system", 1n << 64n);
  const as = new AddressSpace(system, "memory");
  const kvm = new FakeKvm(options.maxSlots ?? 32);
  const traced: MemslotCall[] = [];
  const listener = new KvmMemoryListener(kvm, {
    maxSlots: 32,
    readonlyMem: true,
    trace: (call) => void traced.push(call),
    ...options,
  });
  as.registerListener(listener);
  return {
    system,
    as,
    kvm,
    listener,
    traced,
    /** The log since the last `take()`. */
    take(): string[] {
      return kvm.log.splice(0);
    },
    [Symbol.dispose]() {
      as.close();
    },
  };
}

// ------------------------------------------------------------------ adds, deletes, slot ids

Deno.test("RAM: slot 0, flags 0, host = base + offset; a second region gets slot 1", () => {
  using t = setup();
  const a = ram("ram-a", 0x10000);
  t.system.addSubregion(0, a);
  assert.deepEqual(t.take(), [set(0, 0, 0, 0x10000, host(a))]);
  // A window into the middle of another RAM: the host address is base + offset in the region.
  const b = ram("ram-b", 0x40000);
  t.system.addSubregion(0x100000, MemoryRegion.alias("b-window", b, 0x8000, 0x4000));
  assert.deepEqual(t.take(), [set(1, 0, 0x100000, 0x4000, host(b) + 0x8000n)]);
  assert.ok(t.listener.hasMemory(0n, 0x10000n) && t.listener.hasMemory(0x100000n, 0x4000n));
  assert.deepEqual(t.listener.slots.map((s) => [s.index, s.regionOffset]), [[0, 0n], [1, 0x8000n]]);
  assert.deepEqual(t.kvm.ruleErrors, []);
});

Deno.test("delete: a size-0 call on the same slot id; the freed index is reused next", () => {
  using t = setup();
  const a = ram("ram-a", 0x10000);
  const b = ram("ram-b", 0x10000);
  const c = ram("ram-c", 0x2000);
  t.system.addSubregion(0, a);
  t.system.addSubregion(0x100000, b);
  t.take();
  t.system.removeSubregion(a);
  assert.deepEqual(t.take(), [del(0, 0, 0, host(a))]);
  assert.equal(t.listener.hasMemory(0n, 0x10000n), false);
  t.system.addSubregion(0x200000, c);
  assert.deepEqual(t.take(), [set(0, 0, 0x200000, 0x2000, host(c))], "index 0 is free again");
  assert.deepEqual(t.kvm.table(), [
    set(1, 0, 0x100000, 0x10000, host(b)),
    set(0, 0, 0x200000, 0x2000, host(c)),
  ]);
});

Deno.test("slot ids carry asId << 16 (address space 1, as x86 SMM)", () => {
  using t = setup({ asId: 1 });
  const a = ram("smram", 0x20000);
  const b = ram("other", 0x1000);
  t.system.addSubregion(0xa0000, a);
  t.system.addSubregion(0x100000, b);
  a.setLog(true);
  t.kvm.dirtyBits.set(0x10000, new Uint8Array([0b10]));
  t.as.syncDirtyLog();
  t.system.removeSubregion(a);
  assert.deepEqual(t.take(), [
    set(0x10000, 0, 0xa0000, 0x20000, host(a)),
    set(0x10001, 0, 0x100000, 0x1000, host(b)),
    set(0x10000, LOG, 0xa0000, 0x20000, host(a)),
    dirty(0x10000, 32),
    dirty(0x10000, 32), // the delete syncs the last round first
    del(0x10000, LOG, 0xa0000, host(a)),
  ]);
  assert.deepEqual(a.takeDirtyPages(), [0x1000n]);
  assert.deepEqual(t.listener.slots.map((s) => s.index), [1], "Memslot.index has no address-space id");
});

// ------------------------------------------------------------------ read-only slots

Deno.test("ROM ⇒ KVM_MEM_READONLY (2)", () => {
  using t = setup();
  const bios = rom("pc.bios", 0x20000);
  t.system.addSubregion(0xfffe0000n, bios);
  assert.deepEqual(t.take(), [set(0, RO, 0xfffe0000n, 0x20000, host(bios))]);
});

Deno.test("setReadonly on mapped RAM: size-0 delete, then re-add with READONLY; and back", () => {
  using t = setup();
  const a = ram("ram", 0x10000);
  t.system.addSubregion(0x100000, a);
  t.take();
  a.setReadonly(true);
  assert.deepEqual(t.take(), [del(0, 0, 0x100000, host(a)), set(0, RO, 0x100000, 0x10000, host(a))]);
  a.setReadonly(false);
  assert.deepEqual(t.take(), [del(0, RO, 0x100000, host(a)), set(0, 0, 0x100000, 0x10000, host(a))]);
  assert.deepEqual(t.kvm.ruleErrors, [], "never an in-place READONLY change");
});

Deno.test("without READONLY_MEM: a ROM maps without the flag, ROM devices get no slot", () => {
  using t = setup({ readonlyMem: false });
  const bios = rom("pc.bios", 0x10000);
  const flash = romDevice("flash", 0x10000);
  t.system.addSubregion(0xf0000, bios);
  t.system.addSubregion(0x200000, flash);
  flash.setRomdMode(false);
  flash.setRomdMode(true);
  flash.setLog(true);
  assert.deepEqual(t.take(), [set(0, 0, 0xf0000, 0x10000, host(bios))]);
  assert.equal(t.listener.hasMemory(0x200000n, 0x10000n), false);
});

Deno.test("ROM device: romd ⇒ read-only slot; romd off ⇒ only a delete; back on ⇒ re-added", () => {
  using t = setup();
  const flash = romDevice("pflash", 0x20000);
  t.system.addSubregion(0xfffe0000n, flash);
  assert.deepEqual(t.take(), [set(0, RO, 0xfffe0000n, 0x20000, host(flash))]);
  flash.setRomdMode(false);
  assert.deepEqual(t.take(), [del(0, RO, 0xfffe0000n, host(flash))], "no add: every access traps");
  assert.equal(t.listener.hasMemory(0xfffe0000n, 0x20000n), false);
  flash.setRomdMode(true);
  assert.deepEqual(t.take(), [set(0, RO, 0xfffe0000n, 0x20000, host(flash))]);
});

Deno.test("pure MMIO and reservations get no slot", () => {
  using t = setup();
  t.system.addSubregion(0xfed00000n, MemoryRegion.io("hpet", 0x1000, { read: () => 0 }));
  t.system.addSubregion(0xfec00000n, MemoryRegion.reservation("kvm-ioapic", 0x1000));
  assert.deepEqual(t.take(), []);
  assert.equal(t.listener.hasMemory(0xfed00000n, 0x1000n), false);
  assert.equal(t.listener.hasMemory(0xfec00000n, 0x1000n), false);
});

Deno.test("policy: a read-only alias of writable RAM (pam-rom) maps WITHOUT KVM_MEM_READONLY", () => {
  using t = setup();
  const pcRam = ram("pc.ram", 0x100000);
  t.system.addSubregion(0, pcRam);
  t.take();
  const pamRom = MemoryRegion.alias("pam-rom", pcRam, 0xc0000, 0x4000);
  pamRom.setReadonly(true);
  t.system.addSubregionOverlap(0xc0000, pamRom, 1);
  // QEMU 7.2's kvm_mem_flags takes READONLY from the region (mr->readonly || romd), not from the
  // section, so an alias-level read-only window over writable RAM stays writable under KVM. We chose
  // to keep that behaviour (docs/qemu-memory-semantics.md §10, §11 item 5); the memory API's own dispatch
  // agrees, since it also decides directness on the region.
  assert.deepEqual(t.take(), [
    del(0, 0, 0, host(pcRam)),
    set(0, 0, 0, 0xc0000, host(pcRam)),
    set(1, 0, 0xc0000, 0x4000, host(pcRam) + 0xc0000n),
    set(2, 0, 0xc4000, 0x3c000, host(pcRam) + 0xc4000n),
  ]);
  assert.ok(t.as.flatView()[1].readonly, "the section itself is read-only");
});

Deno.test("setReadonly of RAM seen only through a read-only alias still re-flags that slot (no stale flags)", () => {
  // The range under the read-only alias is read-only before and after the flip, so the diff reports
  // it unchanged (regionNop); its slot must still follow the region's new READONLY flag, as a slot
  // created after the flip would. A logged slot syncs its bits before that delete.
  using t = setup();
  const pcRam = ram("pc.ram", 0x100000);
  t.system.addSubregion(0, pcRam);
  const view = MemoryRegion.alias("ro-view", pcRam, 0xc0000, 0x4000);
  view.setReadonly(true);
  t.system.addSubregion(0x200000, view);
  pcRam.setLog(true);
  t.take();
  t.kvm.dirtyBits.set(1, new Uint8Array([0b100]));
  pcRam.setReadonly(true);
  assert.deepEqual(t.take(), [
    dirty(0, 0x100),
    del(0, LOG, 0, host(pcRam)),
    set(0, LOG | RO, 0, 0x100000, host(pcRam)),
    dirty(1, 4),
    del(1, LOG, 0x200000, host(pcRam) + 0xc0000n),
    set(1, LOG | RO, 0x200000, 0x4000, host(pcRam) + 0xc0000n),
  ]);
  assert.deepEqual(pcRam.takeDirtyPages(), [0xc2000n], "no dirty bit lost in the re-flag");
  pcRam.setReadonly(false);
  assert.deepEqual(t.kvm.table(), [
    set(0, LOG, 0, 0x100000, host(pcRam)),
    set(1, LOG, 0x200000, 0x4000, host(pcRam) + 0xc0000n),
  ]);
  assert.deepEqual(t.kvm.ruleErrors, []);
});

// ------------------------------------------------------------------ host-page trimming

Deno.test("trimming: a section at 0x800 of size 0x2000 maps [0x1000, +0x1000), host advanced by 0x800", () => {
  using t = setup();
  const a = ram("ram", 0x10000);
  // An alias keeps the host address congruent with the guest address (offset 0x800 at 0x800).
  t.system.addSubregion(0x800, MemoryRegion.alias("window", a, 0x800, 0x2000));
  assert.deepEqual(t.take(), [set(0, 0, 0x1000, 0x1000, host(a) + 0x800n + 0x800n)]);
  assert.deepEqual(t.listener.slots.map((s) => s.regionOffset), [0x1000n]);
  assert.equal(t.listener.hasMemory(0x800n, 0x2000n), false, "the section itself is not mapped exactly");
  assert.equal(t.listener.hasMemory(0x1000n, 0x1000n), true);
});

Deno.test("trimming: a section smaller than a page, or covering no whole page, gets no slot", () => {
  using t = setup();
  const a = ram("ram", 0x10000);
  t.system.addSubregion(0x10000, MemoryRegion.alias("small", a, 0, 0x800)); // < 1 page
  t.system.addSubregion(0x20800, MemoryRegion.alias("straddle", a, 0x800, 0x1000)); // [0x20800, 0x21800)
  t.system.addSubregion(0x30100, MemoryRegion.alias("tail", a, 0x100, 0x100)); // start rounds past its end
  assert.deepEqual(t.take(), []);
  assert.equal(t.listener.hasMemory(0x10000n, 0x800n), false);
  assert.equal(t.listener.hasMemory(0x20800n, 0x1000n), false);
  assert.equal(t.listener.hasMemory(0x30100n, 0x100n), false);
  assert.deepEqual(t.listener.slots, []);
});

Deno.test("trimming: a host address that cannot be page aligned is a RangeError naming the region", () => {
  using t = setup();
  const a = ram("odd-ram", 0x10000);
  // RAM at 0x800 from offset 0: the trimmed slot at 0x1000 would start at host base + 0x800.
  assert.throws(() => t.system.addSubregion(0x800, a), (e: unknown) => {
    assert.ok(e instanceof RangeError);
    assert.match(e.message, /"odd-ram"/);
    return true;
  });
  assert.deepEqual(t.take(), []);
});

// ------------------------------------------------------------------ PAM-like split, info mtree -f

Deno.test("PAM-like split: del of the old slot, then the pieces; info mtree -f marks KVM exactly", () => {
  using t = setup();
  const pcRam = ram("pc.ram", 0x100000);
  const pci = MemoryRegion.container("pci", 1n << 32n);
  const optrom = rom("optrom", 0x3000);
  pci.addSubregion(0xc0000, MemoryRegion.io("pci-mmio", 0x800, { read: () => 0 }));
  pci.addSubregion(0xc1000, optrom);
  const ram2 = ram("ram2", 0x4000);
  t.system.addSubregion(0, pcRam);
  t.system.addSubregion(0x200800, MemoryRegion.alias("tiny", ram2, 0x800, 0x1800)); // sub-page ends
  assert.deepEqual(t.take(), [
    set(0, 0, 0, 0x100000, host(pcRam)),
    set(1, 0, 0x201000, 0x1000, host(ram2) + 0x1000n),
  ]);

  t.system.addSubregionOverlap(0xc0000, MemoryRegion.alias("pam-pci", pci, 0xc0000, 0x4000), 1);
  assert.deepEqual(t.take(), [
    del(0, 0, 0, host(pcRam)),
    set(0, 0, 0, 0xc0000, host(pcRam)),
    set(2, RO, 0xc1000, 0x3000, host(optrom)),
    set(3, 0, 0xc4000, 0x3c000, host(pcRam) + 0xc4000n),
  ]);
  assert.equal(
    formatMtree([t.as], { flat: true }),
    [
      "FlatView #0",
      ' AS "memory", root: system',
      " Root memory region: system",
      "  0000000000000000-00000000000bffff (prio 0, ram): pc.ram KVM",
      "  00000000000c0000-00000000000c07ff (prio 0, i/o): pci-mmio",
      "  00000000000c0800-00000000000c0fff (prio 0, ram): pc.ram @00000000000c0800",
      "  00000000000c1000-00000000000c3fff (prio 0, rom): optrom KVM",
      "  00000000000c4000-00000000000fffff (prio 0, ram): pc.ram @00000000000c4000 KVM",
      "  0000000000200800-0000000000201fff (prio 0, ram): ram2 @0000000000000800",
      "",
      "",
    ].join("\n"),
  );
  assert.deepEqual(t.kvm.ruleErrors, []);
});

// ------------------------------------------------------------------ dirty logging

Deno.test("setLog: first client sets LOG_DIRTY_PAGES in place, a second does nothing, the last stop clears", () => {
  using t = setup();
  const vram = ram("vga.vram", 0x20000);
  t.system.addSubregion(0xa0000, vram);
  t.take();
  vram.setLog(true, DirtyLogClient.VGA);
  assert.deepEqual(t.take(), [set(0, LOG, 0xa0000, 0x20000, host(vram))], "one call, same slot, no delete");
  vram.setLog(true, DirtyLogClient.MIGRATION);
  assert.deepEqual(t.take(), []);
  vram.setLog(false, DirtyLogClient.VGA);
  assert.deepEqual(t.take(), [], "a client still logs");
  vram.setLog(false, DirtyLogClient.MIGRATION);
  assert.deepEqual(t.take(), [set(0, 0, 0xa0000, 0x20000, host(vram))]);
  assert.deepEqual(t.kvm.ruleErrors, []);
});

Deno.test("syncDirtyLog: getDirtyLog(slot id, pages) marks exactly the returned pages, at the slot's region offset", () => {
  using t = setup();
  const vram = ram("vram", 0x20000);
  const other = ram("other", 0x4000);
  t.system.addSubregion(0x100000, MemoryRegion.alias("vram-lo", vram, 0, 0x8000));
  t.system.addSubregion(0x200000, MemoryRegion.alias("vram-hi", vram, 0x10000, 0x8000));
  t.system.addSubregion(0x300000, other); // not logged: never asked
  vram.setLog(true);
  t.take();
  t.kvm.dirtyBits.set(0, new Uint8Array([0b0000_0101]));
  // Slot 1 starts at offset 0x10000 of vram; bits 8 and 9 lie past its 8 pages and are ignored.
  t.kvm.dirtyBits.set(1, new Uint8Array([0b1000_0001, 0b11]));
  t.as.syncDirtyLog();
  assert.deepEqual(t.take(), [dirty(0, 8), dirty(1, 8)]);
  assert.deepEqual(vram.takeDirtyPages(), [0x0n, 0x2000n, 0x10000n, 0x17000n]);
  assert.deepEqual(other.takeDirtyPages(), []);
  t.as.syncDirtyLog();
  assert.deepEqual(vram.takeDirtyPages(), [], "a second sync finds nothing new");
  assert.deepEqual(t.kvm.enoent, []);
});

Deno.test("a logged slot that is deleted syncs its bits first", () => {
  using t = setup();
  const vram = ram("vram", 0x8000);
  t.system.addSubregion(0xa0000, vram);
  vram.setLog(true);
  t.take();
  t.kvm.dirtyBits.set(0, new Uint8Array([0b0100_0000]));
  t.system.removeSubregion(vram);
  assert.deepEqual(t.take(), [dirty(0, 8), del(0, LOG, 0xa0000, host(vram))]);
  assert.deepEqual(vram.takeDirtyPages(), [0x6000n]);
});

Deno.test("getDirtyLog ENOENT is tolerated, other errors propagate", () => {
  const kvm = new FakeKvm();
  const listener = new KvmMemoryListener({
    setUserMemoryRegion: (r) => kvm.setUserMemoryRegion(r),
    getDirtyLog: () => {
      throw new KvmError("KVM_GET_DIRTY_LOG", failWith);
    },
  }, { maxSlots: 32, readonlyMem: true });
  let failWith = ENOENT;
  const system = MemoryRegion.container("system", 1n << 64n);
  using as = new AddressSpace(system, "memory");
  as.registerListener(listener);
  const vram = ram("vram", 0x8000);
  system.addSubregion(0, vram);
  vram.setLog(true);
  as.syncDirtyLog();
  failWith = EFAULT;
  assert.throws(() => as.syncDirtyLog(), (e: unknown) => e instanceof KvmError && e.code === "EFAULT");
  failWith = ENOENT;
});

// ------------------------------------------------------------------ failures

Deno.test("slot exhaustion: KvmError ENOSPC naming the region, out of the mutator; the others untouched", () => {
  using t = setup({ maxSlots: 2 });
  const a = ram("first", 0x1000);
  const b = ram("second", 0x1000);
  t.system.addSubregion(0x10000, a);
  t.system.addSubregion(0x20000, b);
  t.take();
  assert.throws(() => t.system.addSubregion(0x30000, ram("third", 0x1000)), (e: unknown) => {
    assert.ok(e instanceof KvmError);
    assert.equal(e.code, "ENOSPC");
    assert.equal(e.op, SET_REGION);
    assert.match(e.message, /"third"/);
    return true;
  });
  assert.deepEqual(t.take(), [], "no call for the third region, none for the first two");
  assert.deepEqual(t.kvm.table(), [set(0, 0, 0x10000, 0x1000, host(a)), set(1, 0, 0x20000, 0x1000, host(b))]);
  assert.deepEqual(t.listener.slots.map((s) => s.region.name), ["first", "second"]);
  assert.equal(t.listener.hasMemory(0x30000n, 0x1000n), false);
});

Deno.test("a backend failure propagates and the listener records no slot; trace sees the failed call", () => {
  using t = setup();
  const efault = new KvmError(SET_REGION, EFAULT);
  t.kvm.fail = (r) => r.guestPhysAddr === 0x10000n ? efault : undefined;
  const bad = ram("bad", 0x1000);
  assert.throws(() => t.system.addSubregion(0x10000, bad), (e: unknown) => e === efault);
  assert.equal(t.listener.hasMemory(0x10000n, 0x1000n), false);
  assert.deepEqual(t.listener.slots, []);
  const good = ram("good", 0x1000);
  t.system.addSubregion(0x20000, good);
  assert.deepEqual(t.take(), [set(0, 0, 0x10000, 0x1000, host(bad)), set(0, 0, 0x20000, 0x1000, host(good))]);
  assert.deepEqual(t.traced.map((c) => [describeCall(c), c.error]), [
    [set(0, 0, 0x10000, 0x1000, host(bad)), efault],
    [set(0, 0, 0x20000, 0x1000, host(good)), undefined],
  ]);
  assert.ok(!("error" in t.traced[1]), "a successful call carries no error field");
});

Deno.test("a region without a host address (default sparse RAM) is a TypeError naming it", () => {
  using t = setup();
  assert.throws(() => t.system.addSubregion(0, MemoryRegion.ram("sparse.ram", 0x10000)), (e: unknown) => {
    assert.ok(e instanceof TypeError);
    assert.match(e.message, /"sparse\.ram"/);
    return true;
  });
  assert.deepEqual(t.take(), []);
});

Deno.test("trace sees every call, in order, as the backend got it", () => {
  using t = setup();
  const a = ram("ram", 0x10000);
  t.system.addSubregion(0, a);
  a.setReadonly(true);
  a.setLog(true);
  t.system.removeSubregion(a);
  assert.equal(t.traced.length, t.kvm.calls.length);
  assert.deepEqual(t.traced.map(describeCall), t.kvm.calls.map(describeCall));
  assert.equal(t.traced.length, 5); // add, del + add (READONLY), flags (LOG), del
});

// ------------------------------------------------------------------ registration

Deno.test("registering on an existing view replays adds; unregistering deletes every slot", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  const pcRam = ram("pc.ram", 0x100000);
  const bios = rom("pc.bios", 0x10000);
  const flash = romDevice("flash", 0x10000);
  system.addSubregion(0, pcRam);
  system.addSubregion(0x200000, MemoryRegion.io("mmio", 0x1000, { read: () => 0 }));
  system.addSubregion(0xfff00000n, flash);
  system.addSubregion(0xffff0000n, bios);
  pcRam.setLog(true);
  using as = new AddressSpace(system, "memory");
  const kvm = new FakeKvm();
  const listener = new KvmMemoryListener(kvm, { maxSlots: 32, readonlyMem: true });
  as.registerListener(listener);
  assert.deepEqual(kvm.log.splice(0), [
    set(0, LOG, 0, 0x100000, host(pcRam)),
    set(1, RO, 0xfff00000n, 0x10000, host(flash)),
    set(2, RO, 0xffff0000n, 0x10000, host(bios)),
  ]);
  kvm.dirtyBits.set(0, new Uint8Array([0, 0b1]));
  as.unregisterListener(listener);
  assert.deepEqual(kvm.log.splice(0), [
    dirty(0, 0x100),
    del(0, LOG, 0, host(pcRam)),
    del(1, RO, 0xfff00000n, host(flash)),
    del(2, RO, 0xffff0000n, host(bios)),
  ]);
  assert.deepEqual(pcRam.takeDirtyPages(), [0x8000n]);
  assert.deepEqual(listener.slots, []);
  assert.equal(kvm.live.size, 0);
  assert.deepEqual(kvm.ruleErrors, []);
});

Deno.test("on a closed VM a range that goes only frees its slot: no call, no dirty sync, no error", () => {
  const system = MemoryRegion.container("system", 1n << 64n);
  const pcRam = ram("pc.ram", 0x100000);
  const bios = rom("pc.bios", 0x10000);
  system.addSubregion(0, pcRam);
  system.addSubregion(0xffff0000n, bios);
  pcRam.setLog(true);
  const as = new AddressSpace(system, "memory");
  const kvm = Object.assign(new FakeKvm(), { closed: false });
  const traced: MemslotCall[] = [];
  const listener = new KvmMemoryListener(kvm, {
    maxSlots: 32,
    readonlyMem: true,
    trace: (c) => void traced.push(c),
  });
  as.registerListener(listener);
  assert.equal(listener.slots.length, 2);
  kvm.log.splice(0);
  traced.splice(0);
  kvm.closed = true; // KVM freed the slots with the VM
  as.close();
  assert.deepEqual(kvm.log, []);
  assert.deepEqual(traced, []);
  assert.deepEqual(listener.slots, []);
});

Deno.test("forVm-style options are validated", () => {
  const kvm = new FakeKvm();
  assert.throws(() => new KvmMemoryListener(kvm, { maxSlots: 0, readonlyMem: true }), RangeError);
  assert.throws(() => new KvmMemoryListener(kvm, { maxSlots: 32, readonlyMem: true, asId: -1 }), RangeError);
  assert.equal(new KvmMemoryListener(kvm, { maxSlots: 32, readonlyMem: true, asId: 1 }).name, "kvm-as1");
});

// ------------------------------------------------------------------ property

/** What the slot table must be: the page-trimmed RAM, ROM and romd ranges of the flat view. */
function expectedSlots(ranges: readonly FlatRange[], readonlyMem: boolean): string[] {
  const out: string[] = [];
  for (const r of ranges) {
    const mr = r.region;
    if (!mr.hasRamBacking) continue;
    if (!mr.isRam && (!readonlyMem || !mr.romdMode)) continue;
    const start = (r.start + PAGE_SIZE - 1n) & -PAGE_SIZE;
    if (start - r.start > r.size) continue;
    const size = (r.size - (start - r.start)) & -PAGE_SIZE;
    if (size === 0n) continue;
    const flags = (mr.dirtyLogMask ? LOG : 0) | (readonlyMem && (mr.readonly || mr.isRomd) ? RO : 0);
    out.push(
      `flags=${flags} gpa=${hex(start)} size=${hex(size)} hva=${
        hex(host(mr) + r.offsetInRegion + start - r.start)
      }`,
    );
  }
  return out;
}

type Mutation =
  | { op: "pam"; segment: number; attribute: number }
  | { op: "romd"; on: boolean }
  | { op: "readonly"; target: number; on: boolean }
  | { op: "log"; target: number; client: number; on: boolean }
  | { op: "enable"; target: number; on: boolean }
  | { op: "move"; position: number }
  | { op: "sync" };
type Step = Mutation | { op: "transaction"; steps: Mutation[] };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("pam" as const), segment: fc.nat(4), attribute: fc.nat(3) }),
  fc.record({ op: fc.constant("romd" as const), on: fc.boolean() }),
  fc.record({ op: fc.constant("readonly" as const), target: fc.nat(1), on: fc.boolean() }),
  fc.record({ op: fc.constant("log" as const), target: fc.nat(2), client: fc.nat(2), on: fc.boolean() }),
  fc.record({ op: fc.constant("enable" as const), target: fc.nat(3), on: fc.boolean() }),
  fc.record({ op: fc.constant("move" as const), position: fc.nat(2) }),
  fc.constant({ op: "sync" as const }),
);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: mutationArb },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("transaction" as const),
      steps: fc.array(mutationArb, { minLength: 2, maxLength: 5 }),
    }),
  },
);

/** Guest addresses of the movable unaligned RAM window; all ≡ 0x800 (mod page) like its offset. */
const TINY_POSITIONS = [0x300800n, 0x301800n, 0x17f800n];

/** A small PC-like board: RAM below/above "4G", PCI hole with VGA and an option ROM, BIOS, PAM, flash. */
function pcLike() {
  const system = MemoryRegion.container("system", 1n << 64n);
  const pcRam = ram("pc.ram", 0x200000);
  const pci = MemoryRegion.container("pci", 1n << 32n);
  const optrom = rom("pc.rom", 0x8000);
  const bios = rom("pc.bios", 0x20000);
  const flash = romDevice("flash", 0x10000);
  const ramAbove = MemoryRegion.alias("ram-above-4g", pcRam, 0x180000, 0x80000);
  const smram = MemoryRegion.alias("smram-region", pci, 0xa0000, 0x20000);
  const ioapic = MemoryRegion.io("unaligned-mmio", 0x800, { read: () => 0 });
  const tiny = MemoryRegion.alias("tiny", pcRam, 0x1f0800, 0x2800);
  const segments: MemoryRegion[][] = [];
  transaction(() => {
    system.addSubregion(0, MemoryRegion.alias("ram-below-4g", pcRam, 0, 0x180000));
    system.addSubregion(0x1_0000_0000n, ramAbove);
    system.addSubregionOverlap(0, pci, -1);
    pci.addSubregion(0xa0000, MemoryRegion.io("vga-lowmem", 0x20000, { read: () => 0 }));
    pci.addSubregion(0xc8000, optrom);
    pci.addSubregion(0xfffe0000n, bios);
    pci.addSubregion(0xe0000, MemoryRegion.alias("isa-bios", bios, 0, 0x20000));
    system.addSubregionOverlap(0xa0000, smram, 1);
    smram.setEnabled(false);
    system.addSubregionOverlap(0x70800, ioapic, 2);
    system.addSubregion(TINY_POSITIONS[0], tiny);
    system.addSubregion(0xffe00000n, flash);
    for (
      const [start, size] of [[0xc0000n, 0x4000n], [0xc4000n, 0x4000n], [0xc8000n, 0x4000n], [
        0xcc000n,
        0x4000n,
      ], [0xf0000n, 0x10000n]]
    ) {
      const pamRom = MemoryRegion.alias("pam-rom", pcRam, start, size);
      pamRom.setReadonly(true);
      const aliases = [
        MemoryRegion.alias("pam-pci", pci, start, size),
        pamRom,
        MemoryRegion.alias("pam-pci", pcRam, start, size), // write-only, approximated as RAM
        MemoryRegion.alias("pam-ram", pcRam, start, size),
      ];
      for (const alias of aliases) {
        alias.setEnabled(false);
        system.addSubregionOverlap(start, alias, 1);
      }
      aliases[0].setEnabled(true);
      segments.push(aliases);
    }
  });
  return { system, pcRam, optrom, flash, segments, toggles: [ramAbove, smram, ioapic, tiny], tiny };
}

Deno.test("property: after every commit the kernel's slots are exactly the trimmed RAM/ROM/romd ranges", () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(stepArb, { minLength: 1, maxLength: 30, size: "max" }),
      (readonlyMem, steps) => {
        const board = pcLike();
        const kvm = new FakeKvm(64);
        const listener = new KvmMemoryListener(kvm, { maxSlots: 64, readonlyMem });
        const logged = [board.pcRam, board.optrom, board.flash];
        const logCounts = logged.map(() => [0, 0, 0]);
        const apply = (m: Mutation): void => {
          switch (m.op) {
            case "pam": {
              const aliases = board.segments[m.segment];
              transaction(() => aliases.forEach((a, i) => a.setEnabled(i === m.attribute)));
              break;
            }
            case "romd":
              board.flash.setRomdMode(m.on);
              break;
            case "readonly":
              [board.pcRam, board.optrom][m.target].setReadonly(m.on);
              break;
            case "log": {
              const counts = logCounts[m.target];
              if (!m.on && counts[m.client] === 0) return;
              counts[m.client] += m.on ? 1 : -1;
              logged[m.target].setLog(m.on, m.client);
              break;
            }
            case "enable":
              board.toggles[m.target].setEnabled(m.on);
              break;
            case "move":
              board.tiny.setAddress(TINY_POSITIONS[m.position]);
              break;
            case "sync":
              as.syncDirtyLog();
              break;
          }
        };
        const check = (what: string): void => {
          assert.deepEqual(kvm.ruleErrors.map((e) => e.message), [], `${what}: a call the kernel refuses`);
          assert.deepEqual(kvm.enoent, [], `${what}: getDirtyLog of a slot that does not log`);
          const table = [...kvm.live.values()].sort((a, b) => Number(a.guestPhysAddr - b.guestPhysAddr));
          assert.deepEqual(
            table.map((r) =>
              `flags=${r.flags} gpa=${hex(r.guestPhysAddr)} size=${hex(r.memorySize)} hva=${
                hex(r.userspaceAddr)
              }`
            ),
            expectedSlots(as.flatView(), readonlyMem),
            `${what}: slot table differs from the flat view`,
          );
          // The listener's own table agrees with the kernel's, slot ids included.
          assert.deepEqual(
            listener.slots.map((s) => `${s.index} ${hex(s.start)}+${hex(s.size)} f${s.flags}`).sort(),
            [...kvm.live.values()].map((r) =>
              `${r.slot} ${hex(r.guestPhysAddr)}+${hex(r.memorySize)} f${r.flags}`
            ).sort(),
          );
          for (const r of table) assert.ok(listener.hasMemory(r.guestPhysAddr, r.memorySize));
        };
        const as = new AddressSpace(board.system, "memory");
        try {
          as.registerListener(listener);
          check("registration");
          for (const step of steps) {
            if (step.op === "transaction") transaction(() => step.steps.forEach(apply));
            else apply(step);
            check(JSON.stringify(step));
          }
        } finally {
          as.close();
        }
        assert.equal(kvm.live.size, 0, "unregistering deleted every slot");
        assert.deepEqual(kvm.ruleErrors, []);
      },
    ),
    { seed: 0x6b76_6d31, numRuns: 400 },
  );
});
