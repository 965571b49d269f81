/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A vCPU thread of an SMP run: loops on a synchronous `KVM_RUN` of one vCPU and hands every port
 * I/O and MMIO exit to the VM thread, which owns the devices and the memory API (the only way JS
 * isolates can share them: QEMU's big lock, as a thread). See `_smp_protocol.ts`.
 *
 * @module
 */

// Only what the loop needs: every module costs start-up time in each vCPU's isolate.
import { KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_MMIO } from "../kvm/ioctls.ts";
import { VcpuHandle, type VcpuHandleInit } from "../kvm/vcpu_handle.ts";
import { currentThread } from "../kvm/vcpu_kicker.ts";
import {
  DONE,
  DOORBELL,
  EXIT_PENDING,
  FAILED,
  PAUSE,
  PAUSED,
  RUNNING,
  stateCell,
  STOP,
  STOPPED,
  tidCell,
} from "./_smp_protocol.ts";

/** The message that starts a vCPU Worker. */
export interface VcpuWorkerInit {
  vcpu: VcpuHandleInit;
  index: number;
  cells: SharedArrayBuffer;
}

self.onmessage = (event: MessageEvent<VcpuWorkerInit>) => {
  const { index } = event.data;
  const cells = new Int32Array(event.data.cells);
  const state = stateCell(index);
  const ring = () => {
    Atomics.add(cells, DOORBELL, 1);
    Atomics.notify(cells, DOORBELL);
  };
  let failure: string | undefined;
  try {
    const vcpu = new VcpuHandle(event.data.vcpu);
    Atomics.store(cells, tidCell(index), currentThread().tid);
    self.postMessage({ ready: true });
    while (Atomics.load(cells, STOP) === 0) {
      const reason = vcpu.run();
      if (reason === KVM_EXIT_INTR) {
        vcpu.setImmediateExit(false); // a kick: look at STOP and PAUSE, then run on
        if (Atomics.load(cells, PAUSE) !== 0) {
          Atomics.store(cells, state, PAUSED);
          ring();
          while (Atomics.load(cells, PAUSE) !== 0 && Atomics.load(cells, STOP) === 0) {
            Atomics.wait(cells, PAUSE, 1, 100);
          }
          Atomics.store(cells, state, RUNNING);
        }
        continue;
      }
      if (reason === KVM_EXIT_IO || reason === KVM_EXIT_MMIO) {
        Atomics.store(cells, state, EXIT_PENDING);
        ring();
        while (Atomics.load(cells, state) === EXIT_PENDING) Atomics.wait(cells, state, EXIT_PENDING);
        continue;
      }
      Atomics.store(cells, state, STOPPED);
      ring();
      break;
    }
  } catch (e) {
    failure = e instanceof Error ? e.message : String(e);
    Atomics.store(cells, state, FAILED);
    ring();
  }
  if (Atomics.load(cells, state) === RUNNING) Atomics.store(cells, state, DONE);
  self.postMessage({ done: true, failure });
  self.close();
};
