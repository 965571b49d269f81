/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A vCPU Worker without KVM (smp_runner_test.ts): the real thread loop, `runVcpuThread`, over a
 * fake vCPU whose `KVM_RUN` writes the next exit of a script into a shared, hand-built `kvm_run`
 * page, as KVM would. After the script it reports what each `in` read back from the page.
 *
 * @module
 */

import { writeExitReason, writeIoExit } from "../../kvm/fake_exit.ts";
import { KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_SHUTDOWN } from "../../kvm/ioctls.ts";
import { runVcpuThread, tidCell } from "../_smp_protocol.ts";

/** One step of the script: an `out` of one byte, an `in` of one byte, a kick, or the end. */
export type ScriptStep = { out: number; port: number } | { in: number } | "kick" | "shutdown";

/** The message that starts this Worker. */
export interface ScriptedVcpuInit {
  /** The protocol's cells. */
  cells: SharedArrayBuffer;
  /** This vCPU's index. */
  index: number;
  /** The bytes of its run page (a SharedArrayBuffer of a fake mapping). */
  page: SharedArrayBuffer;
  /** Its exits, in order. */
  script: ScriptStep[];
}

self.onmessage = (event: MessageEvent<ScriptedVcpuInit>) => {
  const { index, script } = event.data;
  const cells = new Int32Array(event.data.cells);
  const run = { page: new Uint8Array(event.data.page), view: new DataView(event.data.page) };
  const inputs: number[] = [];
  let kicksCleared = 0;
  let step = 0;
  let pendingIn: Uint8Array | undefined;
  const failure = runVcpuThread(cells, index, () => {
    Atomics.store(cells, tidCell(index), 1000 + index); // a thread id, never kicked here
    self.postMessage({ ready: true });
    return {
      run() {
        // The previous exit has been served: an `in`'s result is in the page now.
        if (pendingIn) inputs.push(pendingIn[0]);
        pendingIn = undefined;
        const next = script[step++] ?? "shutdown";
        if (next === "kick") {
          run.page[1] = 1; // immediate_exit, as a kicker sets it
          writeExitReason(run, KVM_EXIT_INTR);
          return KVM_EXIT_INTR;
        }
        if (next === "shutdown") {
          writeExitReason(run, KVM_EXIT_SHUTDOWN);
          return KVM_EXIT_SHUTDOWN;
        }
        if ("out" in next) writeIoExit(run, { direction: "out", port: next.port, size: 1, data: [next.out] });
        else pendingIn = writeIoExit(run, { direction: "in", port: next.in, size: 1 });
        return KVM_EXIT_IO;
      },
      setImmediateExit(on: boolean) {
        if (!on && run.page[1] === 1) kicksCleared++;
        run.page[1] = on ? 1 : 0;
      },
    };
  });
  self.postMessage({ done: true, failure, inputs, kicksCleared });
  self.close();
};
