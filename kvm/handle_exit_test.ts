/**
 * `handleExit` without KVM: hand-made exits routed through real address spaces, as QEMU's
 * `kvm_cpu_exec` does (`kvm_handle_io` to the I/O space, `address_space_rw` for MMIO).
 */
import assert from "node:assert/strict";
import { AddressSpace, MemoryRegion, type MemoryRegionOps, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import { decodeExit, type IoExit, type MmioExit, type VcpuExit } from "./exit.ts";
import { handleExit } from "./handle_exit.ts";
import { KVM_EXIT_IO, KVM_EXIT_IO_IN } from "./ioctls.ts";

/** Where KVM puts port data in the run page (`io.data_offset`, normally the second page). */
const IO_DATA_OFFSET = 4096;

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

function io(
  direction: "in" | "out",
  port: number,
  size: number,
  data: number[] | Uint8Array,
  count = 1,
): IoExit {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  assert.equal(bytes.length, size * count, "test data covers count × size bytes");
  return { kind: "io", direction, size, port, count, dataOffset: IO_DATA_OFFSET, data: bytes };
}

function mmio(physAddr: bigint, isWrite: boolean, data: number[]): MmioExit {
  return { kind: "mmio", physAddr, len: data.length, isWrite, data: new Uint8Array(data) };
}

Deno.test("out of 1, 2 and 4 bytes reaches the device at its region-relative offset", () => {
  using t = spaces();
  const uart = device();
  t.ioRoot.addSubregion(0x3f8, MemoryRegion.io("serial", 8, uart.ops));
  assert.equal(handleExit(io("out", 0x3f9, 1, [0x41]), t.spaces), true);
  assert.equal(handleExit(io("out", 0x3fa, 2, [0x34, 0x12]), t.spaces), true);
  assert.equal(handleExit(io("out", 0x3fc, 4, [0x78, 0x56, 0x34, 0x12]), t.spaces), true);
  assert.deepEqual(uart.calls, ["w 1/1=41", "w 2/2=1234", "w 4/4=12345678"]);
});

Deno.test("in fills the exit's data view, little-endian, in place", () => {
  using t = spaces();
  const dev = device((o, s) => s === 2 ? 0xbeef : 0x11 + o);
  t.ioRoot.addSubregion(0x60, MemoryRegion.io("dev", 4, dev.ops));
  const byte = io("in", 0x61, 1, [0]);
  assert.equal(handleExit(byte, t.spaces), true);
  assert.deepEqual([...byte.data], [0x12]);
  // Through a decoded run page: the result lands in the page, where KVM reads it on the next KVM_RUN.
  const page = new Uint8Array(IO_DATA_OFFSET + 64);
  const view = new DataView(page.buffer);
  view.setUint32(8, KVM_EXIT_IO, true); // exit_reason
  view.setUint8(32, KVM_EXIT_IO_IN); // io.direction
  view.setUint8(33, 2); // io.size
  view.setUint16(34, 0x62, true); // io.port
  view.setUint32(36, 1, true); // io.count
  view.setBigUint64(40, BigInt(IO_DATA_OFFSET), true); // io.data_offset
  const exit = decodeExit(page);
  assert.equal(handleExit(exit, t.spaces), true);
  assert.deepEqual([...page.subarray(IO_DATA_OFFSET, IO_DATA_OFFSET + 2)], [0xef, 0xbe]);
  assert.deepEqual(dev.calls, ["r 1/1", "r 2/2"]);
});

Deno.test("string I/O (count 3): three accesses to the same port, advancing through the data", () => {
  using t = spaces();
  let n = 0;
  const dev = device(() => 0xa0 + n++);
  t.ioRoot.addSubregion(0x1f0, MemoryRegion.io("ide", 8, dev.ops));
  assert.equal(handleExit(io("out", 0x1f0, 2, [1, 2, 3, 4, 5, 6], 3), t.spaces), true);
  const ins = io("in", 0x1f0, 2, new Uint8Array(6), 3);
  assert.equal(handleExit(ins, t.spaces), true);
  assert.deepEqual(dev.calls, ["w 0/2=201", "w 0/2=403", "w 0/2=605", "r 0/2", "r 0/2", "r 0/2"]);
  assert.deepEqual([...ins.data], [0xa0, 0, 0xa1, 0, 0xa2, 0]);
});

Deno.test("an unassigned port reads all-ones of each size; writes to it are ignored", () => {
  using t = spaces();
  for (const size of [1, 2, 4]) {
    const exit = io("in", 0x80, size, new Uint8Array(size));
    assert.equal(handleExit(exit, t.spaces), true);
    assert.deepEqual([...exit.data], new Array(size).fill(0xff), `${size}-byte in`);
  }
  assert.equal(handleExit(io("out", 0x80, 1, [0x55]), t.spaces), true);
});

Deno.test("MMIO write and read through an alias reach the device at region-relative offsets", () => {
  using t = spaces();
  const dev = device((o, s) => (o << 8) | s);
  const mmio0 = MemoryRegion.io("hpet", 0x1000, dev.ops);
  t.system.addSubregion(0xfed0_0000n, MemoryRegion.alias("hpet-window", mmio0, 0x100, 0x100));
  assert.equal(handleExit(mmio(0xfed0_0010n, true, [0x78, 0x56, 0x34, 0x12]), t.spaces), true);
  const read = mmio(0xfed0_0020n, false, [0xaa, 0xaa]);
  assert.equal(handleExit(read, t.spaces), true);
  assert.deepEqual(dev.calls, ["w 110/4=12345678", "r 120/2"]);
  assert.deepEqual([...read.data], [0x02, 0x20], "0x12002 truncated to 2 bytes, little-endian");
});

Deno.test("MMIO: a hole reads 0; RAM is accessed directly; a ROM drops the write", () => {
  using t = spaces();
  const ram = MemoryRegion.ram("ram", 0x1000);
  const rom = MemoryRegion.rom("rom", 0x1000);
  t.system.addSubregion(0x10000, ram);
  t.system.addSubregion(0x20000, rom);
  t.spaces.memory.writeRom(0x20000, new Uint8Array([0x5a]));
  const hole = mmio(0x30000n, false, [0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa]);
  assert.equal(handleExit(hole, t.spaces), true);
  assert.deepEqual([...hole.data], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(handleExit(mmio(0x10004n, true, [1, 2]), t.spaces), true);
  assert.equal(t.spaces.memory.read(0x10004, 2).value, 0x0201n);
  assert.equal(handleExit(mmio(0x20000n, true, [0xee]), t.spaces), true);
  assert.equal(t.spaces.memory.read(0x20000, 1).value, 0x5an, "the ROM is unchanged");
});

Deno.test("non-I/O exits return false and touch no device", () => {
  using t = spaces();
  const dev = device();
  t.ioRoot.addSubregion(0, MemoryRegion.io("everything", 0x10000, dev.ops));
  const others: VcpuExit[] = [
    { kind: "hlt" },
    { kind: "shutdown" },
    { kind: "intr" },
    { kind: "failEntry", reason: 0x80000021n, cpu: 0 },
    { kind: "internalError", suberror: 1, data: [] },
    { kind: "systemEvent", type: 1, data: [] },
    { kind: "debug", exception: 1, pc: 0x1000n, dr6: 0n, dr7: 0n },
    { kind: "exception", exception: 6, errorCode: 0 },
    { kind: "unknown", reason: 0, hardwareExitReason: 0n },
  ];
  for (const exit of others) assert.equal(handleExit(exit, t.spaces), false, exit.kind);
  assert.deepEqual(dev.calls, []);
});
