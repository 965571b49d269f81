/**
 * A board built from scratch with the memory API (no PcMachine), running a real guest under KVM:
 * 64 KiB of RAM and a 4 KiB ROM, both mmap'd `GuestMemory` so KVM maps them as memslots; a
 * "counter" MMIO register of this script's own at 0xd0000 (each read returns the next number);
 * a console port (0xe9) and a power-off port (0xf4) in the I/O space. The guest
 * (guests/board_demo.S, real mode) prints the ROM's message, reads the counter three times and
 * powers off. The script prints the memslots the listener made, what the guest did, and
 * `info mtree -f`, where " KVM" marks the ranges that are memslots.
 *
 * Run (needs /dev/kvm and binutils):
 *   node_modules/deno/deno run --allow-ffi --allow-read --allow-write --allow-run=as,ld examples/custom_board.ts
 *
 * @module
 */

import {
  AddressSpace,
  copyBootWrites,
  formatMtree,
  GuestMemory,
  KvmMemoryListener,
  loadFlat,
  MemoryRegion,
  regsFor,
  sregsFor,
  transaction,
  UNASSIGNED_IO_OPS,
  VcpuRunner,
} from "../mod.ts";
import { assembleGuest, fail, formatMemslotCall, hex, openKvm } from "./_util.ts";

const SCRIPT = "custom_board";
const RAM_SIZE = 0x1_0000n;
const ROM_START = 0xf_0000n;
const ROM_SIZE = 0x1000n;
const COUNTER_START = 0xd_0000n;
const COUNTER_SIZE = 0x1000n;
const IO_SPACE_SIZE = 0x1_0000;
const CONSOLE_PORT = 0xe9;
const POWER_PORT = 0xf4;
/** Where the guest is linked and loaded, and where it stores the counter values. */
const GUEST_START = 0x1000;
const RESULTS_START = 0x2000;
const READS = 3;
const ROM_MESSAGE = "Hello from board.rom! counter:";

using kvm = openKvm(SCRIPT);
const image = await assembleGuest(SCRIPT, "board_demo.S", GUEST_START);
using vm = kvm.createVm();
using ramMemory = new GuestMemory(RAM_SIZE);
using romMemory = new GuestMemory(ROM_SIZE);

// The script's own devices: plain callbacks behind I/O regions.
let count = 0;
let printed = "";
const counter = MemoryRegion.io("counter", COUNTER_SIZE, {
  read: (offset) => offset === 0 ? ++count : 0,
  write: (offset, value) => void (offset === 0 && (count = Number(value))),
});
const consolePort = MemoryRegion.io("console", 1, {
  write: (_offset, value) => void (printed += String.fromCharCode(Number(value))),
});
const powerPort = MemoryRegion.io("power-off", 1, {
  write: (_offset, value) => runner.stop({ kind: "exit", status: Number(value) }),
});

// The board, wired in one visible list.
const system = MemoryRegion.container("system", 1n << 64n);
const ioRoot = MemoryRegion.io("io", IO_SPACE_SIZE, UNASSIGNED_IO_OPS);
transaction(() => {
  system.addSubregion(0, MemoryRegion.ram("board.ram", RAM_SIZE, { backing: ramMemory }));
  system.addSubregion(ROM_START, MemoryRegion.rom("board.rom", ROM_SIZE, { backing: romMemory }));
  system.addSubregion(COUNTER_START, counter);
  ioRoot.addSubregion(CONSOLE_PORT, consolePort);
  ioRoot.addSubregion(POWER_PORT, powerPort);
});
using memory = new AddressSpace(system, "memory");
using io = new AddressSpace(ioRoot, "I/O");
memory.registerListener(KvmMemoryListener.forVm(vm, { trace: (c) => console.log(formatMemslotCall(c)) }));

// The guest in RAM, the message in the ROM (writeRom writes through read-only), the CPU at the entry.
const plan = loadFlat(image, { addr: GUEST_START, mode: "real", cs: { selector: 0, base: 0 } });
copyBootWrites(plan.writes, (addr, data) => memory.writeRom(addr, data));
memory.writeRom(ROM_START, new TextEncoder().encode(`${ROM_MESSAGE}\0`));
using vcpu = vm.createVcpu(0);
vcpu.setSregs(sregsFor(vcpu.getSregs(), plan.cpu));
vcpu.setRegs(regsFor(vcpu.getRegs(), plan.cpu));

const runner = new VcpuRunner(vcpu, { memory, io });
const outcome = runner.run();
if (outcome.kind !== "exit") fail(SCRIPT, `the guest did not power off: ${JSON.stringify(outcome)}`);

const stored = Array.from({ length: READS }, (_, i) => memory.read(RESULTS_START + 4 * i, 4).value);
console.log(`guest printed: ${JSON.stringify(printed)}`);
console.log(`guest powered off with status ${outcome.status} after ${runner.exits} I/O and MMIO exits`);
console.log(`counter register read ${count} times`);
console.log(`guest stored the counter values in RAM at ${hex(RESULTS_START)}: ${stored.join(", ")}`);
console.log(formatMtree([memory, io], { flat: true }).trimEnd());
console.log("releasing the board (closing the address spaces deletes the memslots):");
