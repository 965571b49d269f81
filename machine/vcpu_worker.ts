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
import { VcpuHandle, type VcpuHandleInit } from "../kvm/vcpu_handle.ts";
import { currentThread } from "../kvm/vcpu_kicker.ts";
import { runVcpuThread, tidCell } from "./_smp_protocol.ts";

/** The message that starts a vCPU Worker. */
export interface VcpuWorkerInit {
  /** The vCPU to run, owned by the VM thread. */
  vcpu: VcpuHandleInit;
  /** Its index in the run (its cells). */
  index: number;
  /** The cells of `_smp_protocol.ts`. */
  cells: SharedArrayBuffer;
}

self.onmessage = (event: MessageEvent<VcpuWorkerInit>) => {
  const { index } = event.data;
  const cells = new Int32Array(event.data.cells);
  const failure = runVcpuThread(cells, index, () => {
    const vcpu = new VcpuHandle(event.data.vcpu);
    Atomics.store(cells, tidCell(index), currentThread().tid);
    self.postMessage({ ready: true });
    return vcpu;
  });
  self.postMessage({ done: true, failure });
  self.close();
};
