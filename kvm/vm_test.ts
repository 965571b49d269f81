import assert from "node:assert/strict";
import { assemble, guestSource } from "../tests/guests/assemble.ts";
import { assertDirtyPages, enterRealMode, ifKvm, mapRam, reportKvmSkip } from "./_testing.ts";
import { decodeExit, type VcpuExit } from "./exit.ts";
import { GuestMemory } from "./guest_memory.ts";
import {
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_CAP_READONLY_MEM,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_EXIT_HLT,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
} from "./ioctls.ts";
import { Kvm } from "./kvm.ts";
import { KvmError } from "./kvm_error.ts";
import { dirtyBitmapSize, type UserMemoryRegion } from "./vm.ts";

reportKvmSkip("kvm/vm_test.ts");

const PAGE_SIZE = 4096;
const RAM_SIZE = 2n << 20n;
const RAM_PAGES = Number(RAM_SIZE) / PAGE_SIZE;
const ENTRY = 0x1000;
/** The pages tests/guests/dirty_pages.S writes, and the page its code runs from. */
const WRITTEN_PAGES = [0x4, 0x7, 0x20, 0x9f];
const CODE_PAGE = ENTRY / PAGE_SIZE;

function isKvmError(code: string) {
  return (error: unknown) => error instanceof KvmError && error.code === code;
}

/** Page numbers whose bit is set in a KVM dirty bitmap. */
function dirtyPages(bitmap: Uint8Array): number[] {
  const pages: number[] = [];
  bitmap.forEach((byte, i) => {
    for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pages.push(i * 8 + bit);
  });
  return pages;
}

Deno.test("dirtyBitmapSize rounds up to 64-page words", () => {
  assert.equal(dirtyBitmapSize(1), 8);
  assert.equal(dirtyBitmapSize(64), 8);
  assert.equal(dirtyBitmapSize(65), 16);
  assert.equal(dirtyBitmapSize(512), 64);
});

Deno.test({
  name:
    "memslots: create, overlap EEXIST, unaligned EINVAL, in-place READONLY flip EINVAL, delete + re-create",
  ...ifKvm,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using ram = new GuestMemory(0x20000);
    const trace: [UserMemoryRegion, string | undefined][] = [];
    vm.onSetUserMemoryRegion = (region, error) => trace.push([{ ...region }, error?.code]);
    const slot0 = {
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: 0x10000n,
      userspaceAddr: ram.hostAddress,
    };
    vm.setUserMemoryRegion(slot0);
    assert.throws(
      () =>
        vm.setUserMemoryRegion({
          ...slot0,
          slot: 1,
          guestPhysAddr: 0x8000n,
          userspaceAddr: ram.hostAddress + 0x10000n,
        }),
      isKvmError("EEXIST"),
    );
    assert.throws(
      () => vm.setUserMemoryRegion({ ...slot0, slot: 2, guestPhysAddr: 0x20800n }),
      (error: unknown) => {
        assert.ok(error instanceof KvmError);
        assert.equal(error.code, "EINVAL");
        assert.equal(error.op, "KVM_SET_USER_MEMORY_REGION");
        assert.match(error.message, /slot 2, gpa 0x20800/);
        return true;
      },
    );
    if (kvm.checkExtension(KVM_CAP_READONLY_MEM) !== 0) {
      assert.throws(
        () => vm.setUserMemoryRegion({ ...slot0, flags: KVM_MEM_READONLY }),
        isKvmError("EINVAL"),
      );
      vm.setUserMemoryRegion({ ...slot0, memorySize: 0n });
      vm.setUserMemoryRegion({ ...slot0, flags: KVM_MEM_READONLY });
      assert.equal(vm.memorySlots.get(0)?.flags, KVM_MEM_READONLY);
    }
    // Only LOG_DIRTY_PAGES may change in place; a move (new GPA) is allowed too.
    vm.setUserMemoryRegion({
      ...vm.memorySlots.get(0)!,
      flags: vm.memorySlots.get(0)!.flags | KVM_MEM_LOG_DIRTY_PAGES,
    });
    vm.setUserMemoryRegion({ ...vm.memorySlots.get(0)!, guestPhysAddr: 0x100000n });
    assert.equal(vm.memorySlots.get(0)?.guestPhysAddr, 0x100000n);
    vm.setUserMemoryRegion({ ...slot0, memorySize: 0n });
    assert.equal(vm.memorySlots.size, 0);
    assert.deepEqual(trace.map(([r, code]) => [r.slot, code]).slice(0, 3), [[0, undefined], [1, "EEXIST"], [
      2,
      "EINVAL",
    ]]);
    assert.ok(trace.length >= 6);
  },
});

Deno.test({
  name:
    "read-only slot: reads stay in the kernel, a write exits as MMIO with isWrite; a hole exits as an MMIO read",
  ...ifKvm,
  async fn() {
    using kvm = Kvm.open();
    if (kvm.checkExtension(KVM_CAP_READONLY_MEM) === 0) {
      console.log("KVM_CAP_READONLY_MEM absent: read-only slot test skipped");
      return;
    }
    using vm = kvm.createVm();
    using ram = new GuestMemory(0x10000);
    using rom = new GuestMemory(PAGE_SIZE);
    const ROM_GPA = 0xd0000n;
    mapRam(vm, ram);
    vm.setUserMemoryRegion({
      slot: 1,
      flags: KVM_MEM_READONLY,
      guestPhysAddr: ROM_GPA,
      memorySize: rom.size,
      userspaceAddr: rom.hostAddress,
    });
    rom.bytes[0x10] = 0xa5;
    ram.bytes.set(await assemble(guestSource("rom_access.S"), { base: ENTRY }), ENTRY);
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    const next = (): VcpuExit => {
      vcpu.run();
      return decodeExit(vcpu.runPage);
    };

    let exit = next();
    assert.ok(exit.kind === "io" && exit.port === 0x10 && exit.data[0] === 0xa5, JSON.stringify(exit));

    exit = next();
    assert.equal(exit.kind, "mmio");
    if (exit.kind !== "mmio") return;
    assert.equal(exit.physAddr, ROM_GPA + 0x10n);
    assert.equal(exit.len, 1);
    assert.equal(exit.isWrite, true);
    assert.deepEqual([...exit.data], [0x5a]);
    assert.equal(rom.bytes[0x10], 0xa5, "the write did not reach the read-only memory");

    exit = next();
    assert.ok(exit.kind === "io" && exit.data[0] === 0xa5, "the ROM byte is unchanged for the guest too");

    exit = next();
    assert.ok(exit.kind === "mmio" && !exit.isWrite && exit.physAddr === 0xd1008n && exit.len === 2);
    exit.data.set([0xef, 0xbe]); // the value the guest's load receives

    exit = next();
    assert.ok(exit.kind === "io" && exit.port === 0x12 && exit.size === 2);
    assert.deepEqual([...exit.data], [0xef, 0xbe]);

    assert.equal(vcpu.run(), KVM_EXIT_HLT);
  },
});

Deno.test({
  name:
    "dirty log: the guest writes four pages, getDirtyLog reports those (and no other it did not run), then nothing",
  ...ifKvm,
  async fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using ram = new GuestMemory(RAM_SIZE);
    ram.bytes.set(await assemble(guestSource("dirty_pages.S"), { base: ENTRY }), ENTRY);
    ram.bytes[0x5000] = 1; // host writes are not logged
    vm.setUserMemoryRegion({
      slot: 0,
      flags: KVM_MEM_LOG_DIRTY_PAGES,
      guestPhysAddr: 0n,
      memorySize: ram.size,
      userspaceAddr: ram.hostAddress,
    });
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    assert.equal(vcpu.run(), KVM_EXIT_HLT);
    const bitmap = vm.getDirtyLog(0, RAM_PAGES);
    assert.equal(bitmap.length, RAM_PAGES / 8);
    assertDirtyPages(dirtyPages(bitmap), WRITTEN_PAGES, [CODE_PAGE]);
    assert.equal(ram.bytes[0x9fffe], 1);
    assert.deepEqual(dirtyPages(vm.getDirtyLog(0, RAM_PAGES)), [], "GET_DIRTY_LOG re-arms tracking");

    enterRealMode(vcpu, ENTRY);
    assert.equal(vcpu.run(), KVM_EXIT_HLT);
    assertDirtyPages(dirtyPages(vm.getDirtyLog(0, RAM_PAGES)), WRITTEN_PAGES, [CODE_PAGE], "tracked again");
  },
});

Deno.test({
  name: "dirty log with manual protection: bits stay until clearDirtyLog",
  ...ifKvm,
  async fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    if (vm.checkExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) === 0) {
      console.log("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 absent: clearDirtyLog test skipped");
      return;
    }
    vm.enableCap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [BigInt(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)]);
    using ram = new GuestMemory(RAM_SIZE);
    ram.bytes.set(await assemble(guestSource("dirty_pages.S"), { base: ENTRY }), ENTRY);
    vm.setUserMemoryRegion({
      slot: 0,
      flags: KVM_MEM_LOG_DIRTY_PAGES,
      guestPhysAddr: 0n,
      memorySize: ram.size,
      userspaceAddr: ram.hostAddress,
    });
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    assert.equal(vcpu.run(), KVM_EXIT_HLT);
    const first = dirtyPages(vm.getDirtyLog(0, RAM_PAGES));
    assertDirtyPages(first, WRITTEN_PAGES, [CODE_PAGE]);
    assert.deepEqual(dirtyPages(vm.getDirtyLog(0, RAM_PAGES)), first, "not cleared by GET");
    // Clear pages 64..255 (first_page and num_pages multiples of 64): only 0x9f goes.
    vm.clearDirtyLog(0, 64, 192);
    assert.deepEqual(dirtyPages(vm.getDirtyLog(0, RAM_PAGES)), first.filter((page) => page !== 0x9f));
    // A bitmap selects which pages of the range to clear.
    const only7 = new Uint8Array(dirtyBitmapSize(RAM_PAGES));
    only7[0] = 1 << 7;
    vm.clearDirtyLog(0, 0, RAM_PAGES, only7);
    assert.deepEqual(
      dirtyPages(vm.getDirtyLog(0, RAM_PAGES)),
      first.filter((page) => page !== 0x9f && page !== 7),
    );
    vm.clearDirtyLog(0, 0, RAM_PAGES);
    assert.deepEqual(dirtyPages(vm.getDirtyLog(0, RAM_PAGES)), []);
    assert.throws(() => vm.clearDirtyLog(0, 3, 64), isKvmError("EINVAL"));
  },
});

Deno.test({
  name: "getDirtyLog on a slot without logging is ENOENT with a hint",
  ...ifKvm,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using ram = new GuestMemory(0x10000);
    mapRam(vm, ram);
    assert.throws(() => vm.getDirtyLog(0, 16), (error: unknown) => {
      assert.ok(error instanceof KvmError && error.code === "ENOENT");
      assert.match(error.message, /KVM_MEM_LOG_DIRTY_PAGES/);
      return true;
    });
  },
});

Deno.test({
  name: "irqchip, PIT, IRQ lines, TSS and identity-map addresses",
  ...ifKvm,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.setTssAddr(0xfffb_d000n);
    vm.setIdentityMapAddr(0xfffb_c000n);
    vm.createIrqchip();
    assert.throws(() => vm.createIrqchip(), KvmError);
    vm.createPit2();
    vm.irqLine(4, true);
    vm.irqLine(4, false);
    using vcpu = vm.createVcpu(0);
    const lapic = vcpu.getLapic();
    assert.equal(lapic.length, 1024);
    vcpu.setLapic(lapic);
  },
});
