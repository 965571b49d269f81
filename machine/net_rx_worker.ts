/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The network receive Worker: waits in `poll(2)` on the taps' fds, which the VM thread cannot do
 * while it is inside `KVM_RUN` or asleep on its doorbell, and wakes it when a frame is queued —
 * then waits until the VM thread says it emptied them (`NetRxPoller.resume`), so that a tap the
 * guest cannot take frames from yet does not make it spin. Protocol in `net_rx.ts`.
 *
 * @module
 */

import { pollReadable } from "../kvm/poll.ts";
import { vmWaker } from "../kvm/doorbell.ts";
import { type NetRxWorkerInit, POLL_SLICE_MS, RxCells, RxState } from "./net_rx.ts";

self.onmessage = (event: MessageEvent<NetRxWorkerInit>) => {
  const { buffer, fds, kick, doorbell } = event.data;
  const cells = new RxCells(buffer);
  const wake = vmWaker({ kick, doorbell });
  self.postMessage("ready");
  while (!cells.stopped) {
    if (cells.state === RxState.SIGNALLED) {
      cells.waitWhileSignalled(POLL_SLICE_MS);
      continue;
    }
    if (pollReadable(fds, POLL_SLICE_MS).length === 0) continue;
    cells.state = RxState.SIGNALLED;
    cells.kickUnlessClosed(wake);
  }
  self.close();
};
