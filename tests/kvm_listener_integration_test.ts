/**
 * The whole chain with a real KVM: memory API → `KvmMemoryListener.forVm` → real memslots, and
 * vCPU exits → `serveExit` → the memory API's address spaces. Guest RAM is a `GuestMemory`
 * backing of a `MemoryRegion.ram`. The guests are tiny real-mode programs built from
 * tests/guests/*.S (CPL0 code is emulated here at ~1 µs per instruction, docs/kvm-abi.md §8).
 *
 * Each test skips, with the reason printed once, where /dev/kvm cannot be opened.
 */
import assert from "node:assert/strict";
import { AddressSpace, MemoryRegion, type MemoryRegionOps, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import { assertDirtyPages, enterRealMode, ifKvm, reportKvmSkip } from "../kvm/_testing.ts";
import { decodeExit, type VcpuExit } from "../kvm/exit.ts";
import { GuestMemory } from "../kvm/guest_memory.ts";
import { KVM_CAP_READONLY_MEM, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY } from "../kvm/ioctls.ts";
import { Kvm } from "../kvm/kvm.ts";
import { type ExitSpaces, serveExit } from "../kvm/serve_exit.ts";
import { KvmMemoryListener } from "../kvm/kvm_memory_listener.ts";
import type { UserMemoryRegion, Vm } from "../kvm/vm.ts";
import type { Vcpu } from "../kvm/vcpu.ts";
import { assemble, guestSource } from "./guests/assemble.ts";

reportKvmSkip("tests/kvm_listener_integration_test.ts");

const ENTRY = 0x1000;
/** 64 KiB of RAM holds every guest but the dirty-log one. */
const RAM_SIZE = 0x10000n;
/** The dirty-log guest writes up to 0x9ffff. */
const DIRTY_RAM_SIZE = 0x100000n;
/** The test port device: ports 0x10–0x13. */
const TEST_PORT = 0x10;
/** More exits than any guest here makes: a runaway guest fails instead of hanging. */
const MAX_EXITS = 64;

/** A device that logs `r off/size` and `w off/size=value` (hex) and answers reads with `read`. */
function device(read: (offset: number, size: number) => number = () => 0) {
  const calls: string[] = [];
  const ops: MemoryRegionOps = {
    read: (o, s) => {
      calls.push(`r ${o.toString(16)}/${s}`);
      return read(o, s);
    },
    write: (o, v, s) => void calls.push(`w ${o.toString(16)}/${s}=${v.toString(16)}`),
  };
  return { calls, ops };
}

/**
 * A minimal board on `vm`: `pc.ram` (backed by `ram`) at 0 in "memory", a test port device in
 * "I/O", and the KVM listener registered. Dispose it (closing both address spaces, so the listener
 * deletes its slots) before the VM closes.
 */
function board(vm: Vm, ram: GuestMemory) {
  const system = MemoryRegion.container("system", 1n << 64n);
  const pcRam = MemoryRegion.ram("pc.ram", ram.size, { backing: ram });
  system.addSubregion(0, pcRam);
  const ioRoot = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  const port = device(() => 0x99);
  ioRoot.addSubregion(TEST_PORT, MemoryRegion.io("test-port", 4, port.ops));
  const memory = new AddressSpace(system, "memory");
  const io = new AddressSpace(ioRoot, "I/O");
  const listener = KvmMemoryListener.forVm(vm);
  memory.registerListener(listener);
  return {
    system,
    pcRam,
    port,
    listener,
    spaces: { memory, io } as ExitSpaces,
    [Symbol.dispose]() {
      memory.close();
      io.close();
    },
  };
}

function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}

function bytesHex(data: Uint8Array): string {
  return [...data].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** One exit as text, after it was handled (so a read shows the value the guest receives). */
function describeExit(exit: VcpuExit): string {
  if (exit.kind === "io") {
    return `${exit.direction} ${hex(exit.port)}/${exit.size}x${exit.count} ${bytesHex(exit.data)}`;
  }
  if (exit.kind === "mmio") {
    return `mmio ${exit.isWrite ? "w" : "r"} ${hex(exit.physAddr)}/${exit.len} ${bytesHex(exit.data)}`;
  }
  return JSON.stringify(exit, (_k, v) => typeof v === "bigint" ? hex(v) : v);
}

/**
 * Runs the vCPU until `hlt`, serving every exit through `serveExit`; after each one `afterExit`
 * may act as the host (flip a region, check memory). Returns the exits as text.
 */
function runToHlt(
  vcpu: Vcpu,
  spaces: ExitSpaces,
  afterExit?: (exit: VcpuExit, index: number) => void,
): string[] {
  const exits: string[] = [];
  for (let i = 0; i < MAX_EXITS; i++) {
    vcpu.run();
    const exit = decodeExit(vcpu.runPage);
    if (exit.kind === "hlt") return exits;
    assert.ok(
      serveExit(vcpu.runPage, vcpu.runView, spaces),
      `an exit serveExit does not serve: ${describeExit(exit)}`,
    );
    exits.push(describeExit(exit));
    afterExit?.(exit, i);
  }
  assert.fail(`no hlt after ${MAX_EXITS} exits: ${exits.join(", ")}`);
}

/** The kernel's slot (as the Vm recorded it) that starts at `gpa`. */
function slotAt(vm: Vm, gpa: bigint): Readonly<UserMemoryRegion> | undefined {
  return [...vm.memorySlots.values()].find((s) => s.guestPhysAddr === gpa);
}

async function load(ram: GuestMemory, source: string): Promise<void> {
  ram.bytes.set(await assemble(guestSource(source), { base: ENTRY }), ENTRY);
}

function hasReadonlyMem(kvm: Kvm): boolean {
  if (kvm.checkExtension(KVM_CAP_READONLY_MEM) !== 0) return true;
  console.log("KVM_CAP_READONLY_MEM absent: read-only slot test skipped");
  return false;
}

Deno.test({
  name: "(a) a real-mode guest's port I/O reaches a device in the I/O address space through serveExit",
  ...ifKvm,
  async fn() {
    using ram = new GuestMemory(RAM_SIZE);
    await load(ram, "port_io.S");
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using b = board(vm, ram);
    assert.deepEqual(slotAt(vm, 0n), {
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: RAM_SIZE,
      userspaceAddr: ram.hostAddress,
    });
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    const exits = runToHlt(vcpu, b.spaces);
    assert.ok(exits.every((e) => !e.startsWith("mmio")), `code and data come from the slot: ${exits}`);
    // in8 from 0x10 answered 0x99, which the guest sent to 0x11; then "hello" by rep outsb.
    assert.deepEqual(b.port.calls, [
      "w 0/1=41",
      "w 0/2=4342",
      "w 0/4=47464544",
      "r 0/1",
      "w 1/1=99",
      "w 0/1=68",
      "w 0/1=65",
      "w 0/1=6c",
      "w 0/1=6c",
      "w 0/1=6f",
    ]);
  },
});

Deno.test({
  name: "(b) a ROM region: reads come from its read-only slot, a write exits and the memory API drops it",
  ...ifKvm,
  async fn() {
    using ram = new GuestMemory(RAM_SIZE);
    using romMemory = new GuestMemory(0x1000);
    await load(ram, "rom_access.S");
    using kvm = Kvm.open();
    if (!hasReadonlyMem(kvm)) return;
    using vm = kvm.createVm();
    using b = board(vm, ram);
    const rom = MemoryRegion.rom("test.rom", 0x1000, { backing: romMemory });
    b.system.addSubregion(0xd0000, rom);
    b.spaces.memory.writeRom(0xd0010, new Uint8Array([0xa5]));
    assert.equal(romMemory.bytes[0x10], 0xa5, "writeRom filled the GuestMemory behind the slot");
    assert.equal(slotAt(vm, 0xd0000n)?.flags, KVM_MEM_READONLY);
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    assert.deepEqual(runToHlt(vcpu, b.spaces), [
      "out 0x10/1x1 a5", // the load of 0xd0010 did not exit
      "mmio w 0xd0010/1 5a",
      "out 0x10/1x1 a5",
      "mmio r 0xd1008/2 0000", // a hole next to the ROM reads 0
      "out 0x12/2x1 0000",
    ]);
    assert.equal(romMemory.bytes[0x10], 0xa5, "the ROM is unchanged");
    assert.deepEqual(b.port.calls, ["w 0/1=a5", "w 0/1=a5", "w 2/2=0"]);
  },
});

Deno.test({
  name:
    "(c) setReadonly while the VM exists: the guest's write exits and is dropped; after flipping back it lands",
  ...ifKvm,
  async fn() {
    using ram = new GuestMemory(RAM_SIZE);
    await load(ram, "kvm_listener_readonly_flip.S");
    using kvm = Kvm.open();
    if (!hasReadonlyMem(kvm)) return;
    using vm = kvm.createVm();
    const calls: string[] = [];
    vm.onSetUserMemoryRegion = (r, error) =>
      void calls.push(`${r.slot} f${r.flags} ${hex(r.memorySize)}${error ? ` ${error.code}` : ""}`);
    using b = board(vm, ram);
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    const exits = runToHlt(vcpu, b.spaces, (exit) => {
      if (exit.kind !== "io") return;
      if (!b.pcRam.readonly) {
        assert.equal(ram.bytes[0x8000], 0x11, "the first write landed");
        b.pcRam.setReadonly(true);
        assert.equal(slotAt(vm, 0n)?.flags, KVM_MEM_READONLY);
      } else {
        assert.equal(ram.bytes[0x8000], 0x11, "the write to read-only RAM was dropped");
        b.pcRam.setReadonly(false);
        assert.equal(slotAt(vm, 0n)?.flags, 0);
      }
    });
    assert.deepEqual(exits, ["out 0x10/1x1 00", "mmio w 0x8000/1 22", "out 0x10/1x1 00"]);
    assert.equal(ram.bytes[0x8000], 0x33, "writable again");
    // Each flip was a delete (size 0) and a re-create: the kernel refuses an in-place READONLY change.
    assert.deepEqual(calls, ["0 f0 0x10000", "0 f0 0x0", "0 f2 0x10000", "0 f2 0x0", "0 f0 0x10000"]);
  },
});

Deno.test({
  name:
    "(d) dirty logging: setLog, guest writes four pages, syncDirtyLog + takeDirtyPages report those (and no page it did not run)",
  ...ifKvm,
  async fn() {
    using ram = new GuestMemory(DIRTY_RAM_SIZE);
    await load(ram, "dirty_pages.S"); // before logging starts, by the host: not dirty
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using b = board(vm, ram);
    b.pcRam.setLog(true);
    assert.equal(slotAt(vm, 0n)?.flags, KVM_MEM_LOG_DIRTY_PAGES);
    using vcpu = vm.createVcpu(0);
    const guestPages = [0x4000n, 0x7000n, 0x20000n, 0x9f000n];

    enterRealMode(vcpu, ENTRY);
    assert.deepEqual(runToHlt(vcpu, b.spaces), []);
    assert.deepEqual(b.pcRam.takeDirtyPages(), [], "nothing before the sync");
    b.spaces.memory.syncDirtyLog();
    assertDirtyPages(b.pcRam.takeDirtyPages(), guestPages, [BigInt(ENTRY) & ~0xfffn]);
    b.spaces.memory.syncDirtyLog();
    assert.deepEqual(b.pcRam.takeDirtyPages(), [], "the kernel re-armed tracking");

    // Run again, then unmap the RAM without a sync: the listener fetches the bits before the delete.
    enterRealMode(vcpu, ENTRY);
    assert.deepEqual(runToHlt(vcpu, b.spaces), []);
    b.pcRam.setEnabled(false);
    assert.equal(vm.memorySlots.size, 0);
    assertDirtyPages(b.pcRam.takeDirtyPages(), guestPages, [BigInt(ENTRY) & ~0xfffn]);
  },
});

Deno.test({
  name: "(e) the guest reads an MMIO register and writes what it read to a port: the same value",
  ...ifKvm,
  async fn() {
    using ram = new GuestMemory(RAM_SIZE);
    await load(ram, "kvm_listener_mmio_read.S");
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using b = board(vm, ram);
    const VALUE = 0xcafe_f00d;
    const regs = device((offset, size) =>
      offset === 0x10 && size === 4 ? VALUE : offset === 0x20 ? 0xbeef : 0
    );
    b.system.addSubregion(0xe0000, MemoryRegion.io("test-mmio", 0x100, regs.ops));
    assert.equal(vm.memorySlots.size, 1, "MMIO gets no slot");
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    assert.deepEqual(runToHlt(vcpu, b.spaces), [
      "mmio r 0xe0010/4 0df0feca",
      "out 0x10/4x1 0df0feca",
      "mmio r 0xe0020/2 efbe",
      "out 0x12/2x1 efbe",
    ]);
    assert.deepEqual(regs.calls, ["r 10/4", "r 20/2"]);
    assert.deepEqual(b.port.calls, [`w 0/4=${VALUE.toString(16)}`, "w 2/2=beef"]);
  },
});

Deno.test({
  name: "(f) a ROM device: romd reads from memory and writes to the ops; with romd off reads go to the ops",
  ...ifKvm,
  async fn() {
    using ram = new GuestMemory(RAM_SIZE);
    using flashMemory = new GuestMemory(0x1000);
    await load(ram, "kvm_listener_romd.S");
    using kvm = Kvm.open();
    if (!hasReadonlyMem(kvm)) return;
    using vm = kvm.createVm();
    using b = board(vm, ram);
    const ops = device((offset) => offset === 0x10 ? 0x77 : 0);
    const flash = MemoryRegion.romDevice("flash", 0x1000, ops.ops, { backing: flashMemory });
    b.system.addSubregion(0xd0000, flash);
    b.spaces.memory.writeRom(0xd0010, new Uint8Array([0xa5]));
    assert.equal(slotAt(vm, 0xd0000n)?.flags, KVM_MEM_READONLY);
    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    const exits = runToHlt(vcpu, b.spaces, (exit) => {
      if (exit.kind === "io" && exit.port === 0x11) {
        flash.setRomdMode(false);
        assert.equal(slotAt(vm, 0xd0000n), undefined, "romd off: no slot");
      }
    });
    assert.deepEqual(exits, [
      "out 0x10/1x1 a5", // romd: from memory, no exit
      "mmio w 0xd0020/1 5a",
      "out 0x11/1x1 a5",
      "mmio r 0xd0010/1 77",
      "out 0x10/1x1 77",
    ]);
    assert.deepEqual(ops.calls, ["w 20/1=5a", "r 10/1"]);
    assert.equal(flashMemory.bytes[0x20], 0, "the write went to the ops, not the memory");
  },
});
