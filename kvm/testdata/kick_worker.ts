/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Test program for vcpu_kicker_test.ts: a Worker that kicks the vCPU described by the first message
 * after the given delay (setting a shared flag first), then reports back.
 */
import { VcpuKicker, type VcpuKickTarget } from "../vcpu_kicker.ts";

self.onmessage = (
  event: MessageEvent<{ target: VcpuKickTarget; delayMs: number; kickedFlag: Int32Array }>,
) => {
  const kicker = new VcpuKicker(event.data.target);
  setTimeout(() => {
    Atomics.store(event.data.kickedFlag, 0, 1); // before the kick: the vCPU thread checks it after
    kicker.kick();
    self.postMessage("kicked");
    self.close();
  }, event.data.delayMs);
};
