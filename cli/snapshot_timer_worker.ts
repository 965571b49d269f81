/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The `--snapshot-after` timer: a Worker that sleeps for the duration, marks the snapshot due and
 * kicks the vCPU (one vCPU on the VM thread) or rings the doorbell (several), so the VM thread takes
 * the snapshot at its next hook. Kicks pass a {@link KickFence} that the VM thread closes before the
 * vCPU's run page goes.
 *
 * @module
 */

import { type Doorbell, vmWaker } from "../kvm/doorbell.ts";
import type { VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import { KickFence } from "../machine/kick_fence.ts";

/** What the VM thread posts to the timer Worker. */
export interface SnapshotTimerInit {
  /** The kick fence's one cell. */
  fence: SharedArrayBuffer;
  /** Cell 0: set to 1 when the snapshot is due. */
  due: SharedArrayBuffer;
  /** Milliseconds to wait. */
  delayMs: number;
  /** The vCPU to kick (one vCPU). */
  kick?: VcpuKickTarget;
  /** Or the doorbell (several vCPUs). */
  doorbell?: Doorbell;
}

self.postMessage("ready"); // the VM thread starts the guest (and the clock) only after this

self.onmessage = (event: MessageEvent<SnapshotTimerInit>) => {
  const { fence: buffer, due, delayMs, kick, doorbell } = event.data;
  const fence = new KickFence(new Int32Array(buffer), 0);
  const cell = new Int32Array(due);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, delayMs);
  Atomics.store(cell, 0, 1);
  const wake = vmWaker({ kick, doorbell });
  // Kick until the VM thread has taken it (a kick can land between two hooks), or closed.
  for (let tries = 0; Atomics.load(cell, 0) === 1 && tries < 1000; tries++) {
    fence.kickUnlessClosed(wake);
    Atomics.wait(cell, 0, 1, 100);
  }
};
