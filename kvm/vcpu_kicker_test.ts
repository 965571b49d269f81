import assert from "node:assert/strict";
import { GuestMemory } from "./guest_memory.ts";
import { KVM_EXIT_INTR } from "./ioctls.ts";
import { Kvm } from "./kvm.ts";
import { KICK_SIGNAL, vcpuKickTarget } from "./vcpu_kicker.ts";
import { enterRealMode, ifKvm, mapRam, reportKvmSkip } from "./_testing.ts";

reportKvmSkip("vcpu_kicker_test.ts");

Deno.test("KICK_SIGNAL is SIGUSR2 (SIGUSR1 starts Deno's inspector)", () => {
  assert.equal(KICK_SIGNAL, 12);
});

Deno.test({
  name: "a vCPU halted in the kernel (in-kernel irqchip, interrupts off) returns from KVM_RUN when kicked",
  ...ifKvm,
  async fn() {
    const onSignal = () => {};
    Deno.addSignalListener("SIGUSR2", onSignal); // without a handler the signal would end the process
    const worker = new Worker(new URL("./testdata/kick_worker.ts", import.meta.url), { type: "module" });
    try {
      using kvm = Kvm.open();
      using vm = kvm.createVm();
      vm.createIrqchip(); // hlt now sleeps inside KVM_RUN instead of exiting
      using ram = new GuestMemory(0x10000);
      mapRam(vm, ram);
      ram.bytes.set([0xfa, 0xf4, 0xeb, 0xfd], 0x1000); // cli; hlt; jmp back to hlt
      using vcpu = vm.createVcpu(0);
      enterRealMode(vcpu, 0x1000);
      const kicked = new Promise((resolve) => worker.onmessage = resolve);
      const kickedFlag = new Int32Array(new SharedArrayBuffer(4));
      worker.postMessage({ target: vcpuKickTarget(vcpu), delayMs: 100, kickedFlag });
      const reason = vcpu.run(); // blocks this thread in the guest's hlt until the kick
      assert.equal(Atomics.load(kickedFlag, 0), 1, "KVM_RUN returned before the other thread kicked");
      await kicked;
      assert.equal(reason, KVM_EXIT_INTR);
      // The flag stays set until the vCPU thread clears it: the next run returns at once too.
      assert.equal(vcpu.run(), KVM_EXIT_INTR);
      vcpu.setImmediateExit(false);
      assert.equal(vcpu.runPage[1], 0);
    } finally {
      worker.terminate();
      Deno.removeSignalListener("SIGUSR2", onSignal);
    }
  },
});
