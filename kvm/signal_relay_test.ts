import assert from "node:assert/strict";
import { libc } from "./_libc.ts";
import { O_NONBLOCK, O_RDWR, openPath } from "./_syscalls.ts";
import { EventFd } from "./event_fd.ts";
import { pollReadable } from "./poll.ts";
import { SIGIO, signalOnInput, SignalRelay, SIGUSR1 } from "./signal_relay.ts";
import { currentThread, handleKickSignal } from "./vcpu_kicker.ts";

/** The handler address a `sigaction` query reports for `signal`. */
function handlerOf(signal: number): bigint {
  const old = new Uint8Array(152);
  assert.equal(libc().sigaction(signal, null as unknown as Uint8Array, old), 0);
  return new DataView(old.buffer).getBigUint64(0, true);
}

/** Lets a process-directed signal be handled (on whichever thread the kernel picked). */
const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

Deno.test("a relayed signal is counted and writes the target eventfd, from whichever thread takes it", async () => {
  using eventfd = new EventFd({ nonBlocking: true });
  using relay = SignalRelay.install([SIGUSR1]);
  relay.target({ kind: "eventfd", fd: eventfd.fd });
  const before = relay.count(SIGUSR1);
  Deno.kill(Deno.pid, "SIGUSR1"); // process-directed: any thread of this process may run the handler
  await settle();
  assert.equal(relay.count(SIGUSR1), before + 1);
  assert.deepEqual(pollReadable([eventfd.fd], 1000), [eventfd.fd]);
  assert.equal(eventfd.read(), 1n);
});

Deno.test("the kick target: the flag byte is set before the thread is signalled", async () => {
  handleKickSignal(); // SIGUSR2 must not end the process
  const flag = new Uint8Array(new ArrayBuffer(8));
  using relay = SignalRelay.install([SIGUSR1]);
  relay.target({
    kind: "kick",
    ...currentThread(),
    flagAddress: Deno.UnsafePointer.value(Deno.UnsafePointer.of(flag)),
  });
  Deno.kill(Deno.pid, "SIGUSR1");
  await settle();
  assert.equal(flag[0], 1);
  relay.target({ kind: "none" }); // the flag's memory may go now: no handler writes it again
  flag[0] = 0;
  Deno.kill(Deno.pid, "SIGUSR1");
  await settle();
  assert.equal(flag[0], 0);
});

Deno.test("close puts the previous action back; a bad signal number installs nothing", () => {
  const before = handlerOf(SIGUSR1);
  const relay = SignalRelay.install([SIGUSR1]);
  assert.notEqual(handlerOf(SIGUSR1), before);
  relay.close();
  relay.close(); // idempotent
  assert.equal(handlerOf(SIGUSR1), before);
  assert.throws(() => SignalRelay.install([SIGUSR1, 64]), /64 is not a signal number from 1 to 63/);
  assert.equal(handlerOf(SIGUSR1), before);
});

Deno.test("signalOnInput: bytes written into a FIFO raise SIGIO for the named thread; the flags come back", async () => {
  const dir = await Deno.makeTempDir();
  const fifo = `${dir}/fifo`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(made.success);
  const fd = openPath(fifo, O_RDWR | O_NONBLOCK);
  using eventfd = new EventFd({ nonBlocking: true });
  const relay = SignalRelay.install([SIGIO]);
  try {
    relay.target({ kind: "eventfd", fd: eventfd.fd });
    const flagsBefore = libc().fcntl_int(fd, 3, /* F_GETFL */ 0n);
    const restore = signalOnInput(fd, currentThread().tid);
    const count = relay.count(SIGIO);
    assert.equal(libc().write(fd, new Uint8Array([0x61]), 1n), 1n);
    await settle();
    assert.equal(relay.count(SIGIO), count + 1);
    assert.deepEqual(pollReadable([eventfd.fd], 1000), [eventfd.fd]);
    restore();
    assert.equal(libc().fcntl_int(fd, 3, 0n), flagsBefore);
    assert.equal(libc().write(fd, new Uint8Array([0x62]), 1n), 1n);
    await settle();
    assert.equal(relay.count(SIGIO), count + 1); // no O_ASYNC any more: no SIGIO
  } finally {
    relay.close();
    libc().close(fd);
    await Deno.remove(dir, { recursive: true });
  }
});
