/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The stdin Worker: reads the terminal while the VM thread is inside `KVM_RUN`, handles the Ctrl-A
 * escapes (x quit, c monitor, h help, Ctrl-A Ctrl-A a literal Ctrl-A) as QEMU's `-nographic` does,
 * edits monitor lines, and kicks the vCPU whenever there is something for it.
 *
 * @module
 */

// Only the waker: this Worker starts while the VM is being created, and every module counts.
import { type Doorbell, vmWaker } from "../kvm/doorbell.ts";
import type { VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import { ConsoleChannel } from "./console_channel.ts";
import { ConsoleKeys } from "./console_keys.ts";

/** The first message the Worker receives. */
export interface StdinWorkerInit {
  channel: SharedArrayBuffer;
  /** The vCPU to kick out of KVM_RUN when there is news (a one-vCPU machine on the VM thread). */
  kick?: VcpuKickTarget;
  /** Or the doorbell the VM thread sleeps on (a multi-vCPU machine). */
  doorbell?: Doorbell;
}

const encoder = new TextEncoder();
const write = (text: string) => Deno.stdout.writeSync(encoder.encode(text));

// Signals first, before the VM exists: the VM thread is blocked in KVM_RUN and cannot see them, so
// SIGTERM, SIGHUP and SIGINT end the run through the channel (and the terminal is restored on the
// way out), as QEMU's do (SHUTDOWN reason host-signal). In raw mode Ctrl-C is a key for the guest.
const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
let terminate = (signal: number) => void (terminated ??= signal);
let terminated: number | undefined;
for (const [name, number] of Object.entries(SIGNALS)) {
  Deno.addSignalListener(name as Deno.Signal, () => terminate(number));
}
self.postMessage("ready"); // the VM thread starts the guest only after this: no signal is missed

self.onmessage = async (event: MessageEvent<StdinWorkerInit>) => {
  const channel = new ConsoleChannel(event.data.channel);
  const notify = vmWaker(event.data);
  const kicker = { kick: () => channel.kickUnlessClosed(notify) };
  const keys = new ConsoleKeys(write);
  const handle = (byte: number) => {
    const action = keys.handle(byte);
    if (action.kind === "guest") {
      channel.pushInput(Uint8Array.of(action.byte));
      kicker.kick();
    } else if (action.kind === "quit") {
      channel.requestQuit();
      kicker.kick();
    } else if (action.kind === "command") {
      channel.postCommand(action.line);
      kicker.kick();
      // The VM thread prints the output; wait so the prompt comes after it.
      while (!channel.waitCommandDone(1000)) kicker.kick();
      if (!channel.quitRequested) keys.prompt();
    }
  };

  terminate = (signal) => {
    channel.requestQuit(signal);
    kicker.kick();
  };
  if (terminated !== undefined) terminate(terminated);

  const buffer = new Uint8Array(256);
  for (;;) {
    let n: number | null;
    try {
      n = await Deno.stdin.read(buffer);
    } catch {
      n = null; // no usable stdin (closed, not readable): the guest runs on without input
    }
    if (n === null) break;
    for (const byte of buffer.subarray(0, n)) handle(byte);
    if (channel.quitRequested) break;
  }
  // Stay alive after the end of input: the signal listeners above must outlive stdin (`< /dev/null`,
  // a closed pipe); the VM thread terminates this Worker when the run is over.
};
