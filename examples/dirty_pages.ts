/**
 * Dirty-page tracking of guest RAM under KVM.
 *
 * The script turns on dirty logging of `board.ram` (`region.setLog(true)`: the KVM listener updates
 * the memslot with KVM_MEM_LOG_DIRTY_PAGES), then runs the guest (guests/dirty_writer.S, real
 * mode) twice. Each round the guest writes one byte to each page whose bit the script set in
 * EDX:EAX, and reports on port 0x10, whose device stops the VcpuRunner. The script then fetches the
 * kernel's bitmap (`memory.syncDirtyLog()`) and prints `region.takeDirtyPages()` as page numbers and
 * addresses: exactly the pages written that round. The second round writes other pages, showing the
 * bitmap was cleared in between. (The guest was loaded before logging started, so it is not dirty.)
 *
 * Run (needs /dev/kvm and binutils):
 *   node_modules/deno/deno run --allow-ffi --allow-read --allow-write --allow-run=as,ld examples/dirty_pages.ts
 *
 * @module
 */

import {
  AddressSpace,
  copyBootWrites,
  DIRTY_PAGE_SIZE,
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

const SCRIPT = "dirty_pages";
/** 64 pages: the guest's EDX:EAX has a bit for each. */
const RAM_SIZE = 64n * DIRTY_PAGE_SIZE;
const DONE_PORT = 0x10;
const GUEST_START = 0x1000;
const GUEST_PAGE = GUEST_START / Number(DIRTY_PAGE_SIZE);
/** The pages the guest writes, round by round. */
const ROUNDS = [[3, 5, 40], [7, 20, 63]];

for (const page of ROUNDS.flat()) {
  if (page === GUEST_PAGE || page < 0 || page >= 64) fail(SCRIPT, `page ${page} is the guest's or not 0-63`);
}

using kvm = openKvm(SCRIPT);
const image = await assembleGuest(SCRIPT, "dirty_writer.S", GUEST_START);
using vm = kvm.createVm();
using ramMemory = new GuestMemory(RAM_SIZE);

let written = 0;
const ram = MemoryRegion.ram("board.ram", RAM_SIZE, { backing: ramMemory });
const done = MemoryRegion.io("done", 2, {
  write: (_offset, value) => {
    written = Number(value);
    runner.stop({ kind: "exit", status: 0 });
  },
});
const system = MemoryRegion.container("system", 1n << 64n);
const ioRoot = MemoryRegion.io("io", 0x1_0000, UNASSIGNED_IO_OPS);
transaction(() => {
  system.addSubregion(0, ram);
  ioRoot.addSubregion(DONE_PORT, done);
});
using memory = new AddressSpace(system, "memory");
using io = new AddressSpace(ioRoot, "I/O");
memory.registerListener(KvmMemoryListener.forVm(vm, { trace: (c) => console.log(formatMemslotCall(c)) }));

const plan = loadFlat(image, { addr: GUEST_START, mode: "real", cs: { selector: 0, base: 0 } });
copyBootWrites(plan.writes, (addr, data) => memory.writeRom(addr, data));
console.log("host: board.ram.setLog(true)");
ram.setLog(true);

using vcpu = vm.createVcpu(0);
const runner = new VcpuRunner(vcpu, { memory, io });
for (const [round, pages] of ROUNDS.entries()) {
  const mask = pages.reduce((bits, page) => bits | (1n << BigInt(page)), 0n);
  const gpr = { rax: mask & 0xffff_ffffn, rdx: mask >> 32n };
  vcpu.setSregs(sregsFor(vcpu.getSregs(), plan.cpu));
  vcpu.setRegs(regsFor(vcpu.getRegs(), { ...plan.cpu, gpr }));
  const outcome = runner.run();
  if (outcome.kind !== "exit") fail(SCRIPT, `round ${round + 1}: ${JSON.stringify(outcome)}`);
  console.log(`round ${round + 1}: EDX:EAX = ${hex(mask)}, the guest wrote ${written} pages`);
  console.log(`  before the sync, takeDirtyPages(): [${ram.takeDirtyPages().join(", ")}]`);
  memory.syncDirtyLog();
  const dirty = ram.takeDirtyPages();
  console.log(`  after syncDirtyLog(), dirty pages: ${dirty.map((a) => a / DIRTY_PAGE_SIZE).join(", ")}`);
  console.log(
    `  at ${dirty.map(hex).join(", ")}; their first bytes: ${dirty.map((a) => ramMemory.bytes[Number(a)])}`,
  );
}
console.log("releasing (closing the address spaces deletes the memslot):");
