/**
 * Costs on the exit path that do not depend on the guest: decoding a run page, and one KVM_RUN
 * that returns at once (`immediate_exit`), i.e. the FFI call plus the kernel's ioctl entry.
 * The full guest round trip, against C, is `bench/exit_roundtrip.ts`.
 *
 * @module
 */

import { decodeExit } from "./exit.ts";
import { GuestMemory } from "./guest_memory.ts";
import { KVM_EXIT_INTR } from "./ioctls.ts";
import { Kvm, kvmAvailability } from "./kvm.ts";

const page = new Uint8Array(12288);
const view = new DataView(page.buffer);
view.setUint32(8, 2, true); // KVM_EXIT_IO
view.setUint8(32, 1);
view.setUint8(33, 1);
view.setUint16(34, 0x3f8, true);
view.setUint32(36, 1, true);
view.setBigUint64(40, 4096n, true);

Deno.bench("decodeExit: io out, 1 byte", () => {
  decodeExit(page);
});

const kvmProbe = kvmAvailability();
if (!kvmProbe.available) console.log(`kvm/exit_bench.ts: KVM benchmarks skipped: ${kvmProbe.reason}`);

Deno.bench({
  name: "Vcpu.run with immediate_exit (FFI + ioctl entry, no guest)",
  ignore: !kvmProbe.available,
  fn(b) {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using ram = new GuestMemory(0x10000);
    vm.setUserMemoryRegion({
      slot: 0,
      flags: 0,
      guestPhysAddr: 0n,
      memorySize: ram.size,
      userspaceAddr: ram.hostAddress,
    });
    using vcpu = vm.createVcpu(0);
    vcpu.setImmediateExit(true);
    b.start();
    for (let i = 0; i < 10_000; i++) if (vcpu.run() !== KVM_EXIT_INTR) throw new Error("entered the guest");
    b.end();
  },
});

Deno.bench({
  name: "Kvm.checkExtension (one ioctl with an integer argument)",
  ignore: !kvmProbe.available,
  fn(b) {
    using kvm = Kvm.open();
    b.start();
    for (let i = 0; i < 10_000; i++) kvm.checkExtension(81);
    b.end();
  },
});
