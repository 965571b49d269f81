/**
 * `serveExit` without KVM: exits written into hand-built `kvm_run` pages and served through real
 * address spaces, as QEMU's `kvm_cpu_exec` does (`kvm_handle_io` to the I/O space,
 * `address_space_rw` for MMIO). Results must land in the page, where KVM reads them.
 */
import assert from "node:assert/strict";
import { AddressSpace, MemoryRegion, type MemoryRegionOps, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import {
  fakeRunPage,
  writeExitReason,
  writeFailEntryExit,
  writeInternalErrorExit,
  writeIoExit,
  writeMmioExit,
  writeSystemEventExit,
} from "./fake_exit.ts";
import {
  KVM_EXIT_DEBUG,
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_HLT,
  KVM_EXIT_INTR,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_UNKNOWN,
  KVM_SYSTEM_EVENT_RESET,
} from "./ioctls.ts";
import { serveExit } from "./serve_exit.ts";

/** A device that logs `r off/size` and `w off/size=value` (hex) and reads `next()`. */
function device(next: (offset: number, size: number) => number = () => 0) {
  const calls: string[] = [];
  const ops: MemoryRegionOps = {
    read: (o, s) => {
      calls.push(`r ${o.toString(16)}/${s}`);
      return next(o, s);
    },
    write: (o, v, s) => void calls.push(`w ${o.toString(16)}/${s}=${v.toString(16)}`),
  };
  return { calls, ops };
}

/** A PC-like pair: an I/O space whose root reads all-ones, and an empty memory space. */
function spaces() {
  const ioRoot = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  const system = MemoryRegion.container("system", 1n << 64n);
  const io = new AddressSpace(ioRoot, "I/O");
  const memory = new AddressSpace(system, "memory");
  return {
    ioRoot,
    system,
    spaces: { io, memory },
    [Symbol.dispose]() {
      memory.close();
      io.close();
    },
  };
}

const run = fakeRunPage();
/** Serves whatever exit `run` holds. */
function serve(t: ReturnType<typeof spaces>): boolean {
  return serveExit(run.page, run.view, t.spaces);
}

Deno.test("out of 1, 2 and 4 bytes reaches the device at its region-relative offset", () => {
  using t = spaces();
  const uart = device();
  t.ioRoot.addSubregion(0x3f8, MemoryRegion.io("serial", 8, uart.ops));
  writeIoExit(run, { direction: "out", port: 0x3f9, size: 1, data: [0x41] });
  assert.equal(serve(t), true);
  writeIoExit(run, { direction: "out", port: 0x3fa, size: 2, data: [0x34, 0x12] });
  assert.equal(serve(t), true);
  writeIoExit(run, { direction: "out", port: 0x3fc, size: 4, data: [0x78, 0x56, 0x34, 0x12] });
  assert.equal(serve(t), true);
  assert.deepEqual(uart.calls, ["w 1/1=41", "w 2/2=1234", "w 4/4=12345678"]);
});

Deno.test("in writes the device's value into the run page, little-endian", () => {
  using t = spaces();
  const dev = device((o, s) => s === 2 ? 0xbeef : 0x11 + o);
  t.ioRoot.addSubregion(0x60, MemoryRegion.io("dev", 4, dev.ops));
  const byte = writeIoExit(run, { direction: "in", port: 0x61, size: 1 });
  assert.equal(serve(t), true);
  assert.deepEqual([...byte], [0x12]);
  const word = writeIoExit(run, { direction: "in", port: 0x62, size: 2 });
  assert.equal(serve(t), true);
  assert.deepEqual([...word], [0xef, 0xbe]);
  assert.deepEqual(dev.calls, ["r 1/1", "r 2/2"]);
});

Deno.test("string I/O (count 3): three accesses to the same port, advancing through the data", () => {
  using t = spaces();
  let n = 0;
  const dev = device(() => 0xa0 + n++);
  t.ioRoot.addSubregion(0x1f0, MemoryRegion.io("ide", 8, dev.ops));
  writeIoExit(run, { direction: "out", port: 0x1f0, size: 2, count: 3, data: [1, 2, 3, 4, 5, 6] });
  assert.equal(serve(t), true);
  const ins = writeIoExit(run, { direction: "in", port: 0x1f0, size: 2, count: 3 });
  assert.equal(serve(t), true);
  assert.deepEqual(dev.calls, ["w 0/2=201", "w 0/2=403", "w 0/2=605", "r 0/2", "r 0/2", "r 0/2"]);
  assert.deepEqual([...ins], [0xa0, 0, 0xa1, 0, 0xa2, 0]);
});

Deno.test("an unassigned port reads all-ones of each size; writes to it are ignored", () => {
  using t = spaces();
  for (const size of [1, 2, 4] as const) {
    const data = writeIoExit(run, { direction: "in", port: 0x80, size });
    assert.equal(serve(t), true);
    assert.deepEqual([...data], new Array(size).fill(0xff), `${size}-byte in`);
  }
  writeIoExit(run, { direction: "out", port: 0x80, size: 1, data: [0x55] });
  assert.equal(serve(t), true);
});

Deno.test("MMIO write and read through an alias reach the device at region-relative offsets", () => {
  using t = spaces();
  const dev = device((o, s) => (o << 8) | s);
  const mmio0 = MemoryRegion.io("hpet", 0x1000, dev.ops);
  t.system.addSubregion(0xfed0_0000n, MemoryRegion.alias("hpet-window", mmio0, 0x100, 0x100));
  writeMmioExit(run, { physAddr: 0xfed0_0010n, isWrite: true, len: 4, data: [0x78, 0x56, 0x34, 0x12] });
  assert.equal(serve(t), true);
  const read = writeMmioExit(run, { physAddr: 0xfed0_0020n, isWrite: false, len: 2 });
  assert.equal(serve(t), true);
  assert.deepEqual(dev.calls, ["w 110/4=12345678", "r 120/2"]);
  assert.deepEqual([...read], [0x02, 0x20], "0x12002 truncated to 2 bytes, little-endian");
});

Deno.test("MMIO: a hole reads 0; RAM is accessed directly; a ROM drops the write", () => {
  using t = spaces();
  t.system.addSubregion(0x10000, MemoryRegion.ram("ram", 0x1000));
  t.system.addSubregion(0x20000, MemoryRegion.rom("rom", 0x1000));
  t.spaces.memory.writeRom(0x20000, new Uint8Array([0x5a]));
  const hole = writeMmioExit(run, { physAddr: 0x30000n, isWrite: false, len: 8 });
  hole.fill(0xaa);
  assert.equal(serve(t), true);
  assert.deepEqual([...hole], [0, 0, 0, 0, 0, 0, 0, 0]);
  writeMmioExit(run, { physAddr: 0x10004n, isWrite: true, len: 2, data: [1, 2] });
  assert.equal(serve(t), true);
  assert.equal(t.spaces.memory.read(0x10004, 2).value, 0x0201n);
  writeMmioExit(run, { physAddr: 0x20000n, isWrite: true, len: 1, data: [0xee] });
  assert.equal(serve(t), true);
  assert.equal(t.spaces.memory.read(0x20000, 1).value, 0x5an, "the ROM is unchanged");
});

Deno.test("every other exit returns false and touches no device", () => {
  using t = spaces();
  const dev = device();
  t.ioRoot.addSubregion(0, MemoryRegion.io("everything", 0x10000, dev.ops));
  t.system.addSubregion(0, MemoryRegion.io("all-memory", 1n << 64n, dev.ops));
  const others: [string, () => void][] = [
    ["hlt", () => writeExitReason(run, KVM_EXIT_HLT)],
    ["shutdown", () => writeExitReason(run, KVM_EXIT_SHUTDOWN)],
    ["intr", () => writeExitReason(run, KVM_EXIT_INTR)],
    ["debug", () => writeExitReason(run, KVM_EXIT_DEBUG)],
    ["exception", () => writeExitReason(run, KVM_EXIT_EXCEPTION)],
    ["unknown", () => writeExitReason(run, KVM_EXIT_UNKNOWN)],
    ["fail entry", () => writeFailEntryExit(run, 0x80000021n, 0)],
    ["internal error", () => writeInternalErrorExit(run, 1, [7n])],
    ["system event", () => writeSystemEventExit(run, KVM_SYSTEM_EVENT_RESET)],
  ];
  for (const [name, write] of others) {
    write();
    assert.equal(serve(t), false, name);
  }
  assert.deepEqual(dev.calls, []);
});
