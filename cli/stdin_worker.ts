/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The stdin Worker: reads the terminal while the VM thread is inside `KVM_RUN`, handles the Ctrl-A
 * escapes (x quit, c monitor, h help, Ctrl-A Ctrl-A a literal Ctrl-A) as QEMU's `-nographic` does,
 * edits monitor lines, and kicks the vCPU whenever there is something for it.
 *
 * @module
 */

// Only the kicker: this Worker starts while the VM is being created, and every module counts.
import { VcpuKicker, type VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import { ConsoleChannel } from "./console_channel.ts";

/** The first message the Worker receives. */
export interface StdinWorkerInit {
  channel: SharedArrayBuffer;
  /** The vCPU to kick out of KVM_RUN when there is news (a one-vCPU machine on the VM thread). */
  kick?: VcpuKickTarget;
  /** Or the doorbell the VM thread sleeps on (a multi-vCPU machine). */
  doorbell?: { buffer: SharedArrayBuffer; index: number };
}

const CTRL_A = 0x01;
const PROMPT = "(qemu) ";
const HELP =
  "\r\nC-a h    print this help\r\nC-a x    exit emulator\r\nC-a c    switch between console and monitor\r\nC-a C-a  sends C-a\r\n";

const encoder = new TextEncoder();
const write = (text: string) => Deno.stdout.writeSync(encoder.encode(text));

// Signals first, before the VM exists: the VM thread is blocked in KVM_RUN and cannot see them, so
// SIGTERM and SIGHUP end the run through the channel (and the terminal is restored on the way out).
let terminate = () => void (terminated = true);
let terminated = false;
Deno.addSignalListener("SIGTERM", () => terminate());
Deno.addSignalListener("SIGHUP", () => terminate());
self.postMessage("ready"); // the VM thread starts the guest only after this: no signal is missed

self.onmessage = async (event: MessageEvent<StdinWorkerInit>) => {
  const channel = new ConsoleChannel(event.data.channel);
  const { kick, doorbell } = event.data;
  const vcpuKicker = kick ? new VcpuKicker(kick) : undefined;
  const bell = doorbell ? new Int32Array(doorbell.buffer) : undefined;
  const notify = () => {
    if (vcpuKicker) vcpuKicker.kick();
    else if (bell && doorbell) {
      Atomics.add(bell, doorbell.index, 1);
      Atomics.notify(bell, doorbell.index);
    }
  };
  const kicker = { kick: () => channel.kickUnlessClosed(notify) };
  let escape = false;
  let monitor = false;
  let line = "";

  const runCommand = (command: string) => {
    channel.postCommand(command);
    kicker.kick();
    // The VM thread prints the output; wait so the prompt comes after it.
    while (!channel.waitCommandDone(1000)) kicker.kick();
  };

  const handle = (byte: number) => {
    if (escape) {
      escape = false;
      if (byte === 0x78 /* x */) {
        write("QEMU: Terminated\r\n");
        channel.requestQuit();
        kicker.kick();
      } else if (byte === 0x63 /* c */) {
        monitor = !monitor;
        line = "";
        write(monitor ? `\r\n${PROMPT}` : "\r\n");
      } else if (byte === 0x68 /* h */) {
        write(HELP);
      } else if (byte === CTRL_A && !monitor) {
        channel.pushInput(Uint8Array.of(CTRL_A));
        kicker.kick();
      }
      return;
    }
    if (byte === CTRL_A) {
      escape = true;
    } else if (!monitor) {
      channel.pushInput(Uint8Array.of(byte));
      kicker.kick();
    } else if (byte === 0x0d || byte === 0x0a) {
      write("\r\n");
      const command = line.trim();
      line = "";
      if (command) runCommand(command);
      if (!channel.quitRequested) write(PROMPT);
    } else if (byte === 0x7f || byte === 0x08) {
      if (line.length > 0) {
        line = line.slice(0, -1);
        write("\b \b");
      }
    } else if (byte >= 0x20 && byte < 0x7f) {
      line += String.fromCharCode(byte);
      write(String.fromCharCode(byte));
    }
  };

  terminate = () => {
    channel.requestQuit();
    kicker.kick();
  };
  if (terminated) terminate();

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
