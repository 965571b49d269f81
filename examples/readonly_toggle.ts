/**
 * Flipping a RAM region read-only while a guest runs under KVM, and what each side sees.
 *
 * The guest (guests/readonly_loop.S, real mode) writes 1, 2, 3, … to a scratch page at 0x8000,
 * reads each value back and reports both on port 0x10. From that port's device callback the script
 * calls `scratch.setReadonly(true)` after the 2nd report and `setReadonly(false)` after the 4th.
 * Printed: every KVM_SET_USER_MEMORY_REGION the KVM listener makes (its `trace` hook: a READONLY
 * flip is a delete, size 0, then a re-create, as the kernel refuses the change in place); every
 * MMIO exit (a store to the read-only slot, which the memory API drops); and what the guest read
 * back after each store (landed or dropped).
 *
 * Run (needs /dev/kvm with KVM_CAP_READONLY_MEM, and binutils):
 *   node_modules/deno/deno run --allow-ffi --allow-read --allow-write --allow-run=as,ld examples/readonly_toggle.ts
 *
 * @module
 */

import {
  AddressSpace,
  copyBootWrites,
  decodeExit,
  GuestMemory,
  KVM_CAP_READONLY_MEM,
  KvmMemoryListener,
  loadFlat,
  MemoryRegion,
  regsFor,
  serveExit,
  sregsFor,
  transaction,
  UNASSIGNED_IO_OPS,
} from "../mod.ts";
import { assembleGuest, fail, formatMemslotCall, hex, openKvm } from "./_util.ts";

const SCRIPT = "readonly_toggle";
const RAM_SIZE = 0x8000n;
const SCRATCH_START = 0x8000n;
const SCRATCH_SIZE = 0x1000n;
const REPORT_PORT = 0x10;
const GUEST_START = 0x1000;
/** Stores the guest makes (its CX), and after which reports the script flips the page. */
const ROUNDS = 6;
const READONLY_AFTER = 2;
const WRITABLE_AFTER = 4;
/** More exits than the guest makes: a runaway guest fails instead of hanging. */
const MAX_EXITS = 64;

using kvm = openKvm(SCRIPT);
if (kvm.checkExtension(KVM_CAP_READONLY_MEM) === 0) fail(SCRIPT, "this KVM lacks KVM_CAP_READONLY_MEM");
const image = await assembleGuest(SCRIPT, "readonly_loop.S", GUEST_START);
using vm = kvm.createVm();
using ramMemory = new GuestMemory(RAM_SIZE);
using scratchMemory = new GuestMemory(SCRATCH_SIZE);

const scratch = MemoryRegion.ram("scratch", SCRATCH_SIZE, { backing: scratchMemory });
const report = MemoryRegion.io("report", 2, {
  write: (_offset, value) => {
    const wrote = (Number(value) >> 8) & 0xff;
    const seen = Number(value) & 0xff;
    console.log(`guest: wrote ${wrote}, read back ${seen}: ${wrote === seen ? "landed" : "dropped"}`);
    // Between exits, on the thread that owns the address spaces: the listener updates the slot now.
    if (wrote === READONLY_AFTER || wrote === WRITABLE_AFTER) {
      console.log(`host: scratch.setReadonly(${wrote === READONLY_AFTER})`);
      scratch.setReadonly(wrote === READONLY_AFTER);
    }
  },
});
const system = MemoryRegion.container("system", 1n << 64n);
const ioRoot = MemoryRegion.io("io", 0x1_0000, UNASSIGNED_IO_OPS);
transaction(() => {
  system.addSubregion(0, MemoryRegion.ram("ram", RAM_SIZE, { backing: ramMemory }));
  system.addSubregion(SCRATCH_START, scratch);
  ioRoot.addSubregion(REPORT_PORT, report);
});
using memory = new AddressSpace(system, "memory");
using io = new AddressSpace(ioRoot, "I/O");
memory.registerListener(KvmMemoryListener.forVm(vm, { trace: (c) => console.log(formatMemslotCall(c)) }));

const plan = loadFlat(image, { addr: GUEST_START, mode: "real", cs: { selector: 0, base: 0 } });
copyBootWrites(plan.writes, (addr, data) => memory.writeRom(addr, data));
using vcpu = vm.createVcpu(0);
vcpu.setSregs(sregsFor(vcpu.getSregs(), plan.cpu));
vcpu.setRegs(regsFor(vcpu.getRegs(), { ...plan.cpu, gpr: { rcx: BigInt(ROUNDS) } }));

// A loop of our own rather than VcpuRunner, to see each exit before the memory API serves it.
for (let exits = 0;; exits++) {
  if (exits === MAX_EXITS) fail(SCRIPT, `no hlt after ${MAX_EXITS} exits`);
  vcpu.run();
  const exit = decodeExit(vcpu.runPage);
  if (exit.kind === "hlt") break;
  if (!serveExit(vcpu.runPage, vcpu.runView, { memory, io })) fail(SCRIPT, `unexpected exit: ${exit.kind}`);
  if (exit.kind === "mmio") {
    console.log(
      `exit: MMIO ${exit.isWrite ? "write" : "read"} ${hex(exit.physAddr)}/${exit.len} = ${exit.data[0]}` +
        ` (read-only slot); scratch still holds ${scratchMemory.bytes[0]}`,
    );
  }
}
console.log(`guest halted; scratch holds ${scratchMemory.bytes[0]}`);
console.log("releasing (closing the address spaces deletes the memslots):");
