/**
 * The console path end to end, through the real front-end in a subprocess: bytes written to its
 * stdin reach COM1 and wake a guest sleeping in `hlt` (the stdin Worker kicks KVM_RUN); Ctrl-A c
 * opens the monitor; Ctrl-A x and SIGTERM end the run cleanly.
 */
import assert from "node:assert/strict";
import { ECHO, kvmAvailability } from "../mod.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`tests/console_test.ts: skipped: ${KVM.reason}`);
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const encoder = new TextEncoder();

/** Starts the front-end on the echo guest; `input` chunks are written once the banner appeared. */
async function session(input: string[], options: { signal?: Deno.Signal } = {}) {
  const kernel = await Deno.makeTempFile({ suffix: ".echo" });
  try {
    await Deno.writeFile(kernel, ECHO);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        "--allow-write",
        "--allow-sys",
        MAIN,
        "-m",
        "32M",
        "-kernel",
        kernel,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const decoder = new TextDecoder();
    let stdout = "";
    const reader = child.stdout.getReader();
    const banner = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        stdout += decoder.decode(value, { stream: true });
        if (stdout.includes("q resets\n")) return;
      }
    })();
    await banner; // the guest is up and sleeping in hlt
    const writer = child.stdin.getWriter();
    for (const chunk of input) await writer.write(encoder.encode(chunk));
    if (options.signal) child.kill(options.signal);
    const rest = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        stdout += decoder.decode(value, { stream: true });
      }
    })();
    const [status] = await Promise.all([child.status, rest]);
    await writer.close().catch(() => {});
    const stderr = decoder.decode(await new Response(child.stderr).arrayBuffer());
    return { code: status.code, stdout, stderr };
  } finally {
    await Deno.remove(kernel);
  }
}

Deno.test({
  name: "typed input wakes the halted guest through the UART interrupt; q resets and ends with status 0",
  ignore: !KVM.available,
  async fn() {
    const run = await session(["hello\r", "q"]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /q resets\nhello\r\n\necho: q pressed, resetting\n$/);
  },
});

Deno.test({
  name: "Ctrl-A c opens the monitor: info mtree -f and info registers, then quit",
  ignore: !KVM.available,
  async fn() {
    const run = await session(["\x01c", "info mtree -f\r", "info registers\r", "quit\r"]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /\(qemu\) /);
    assert.match(run.stdout, /FlatView #0\n AS "memory", root: system\n AS "cpu-memory-0", root: system\n/);
    assert.match(
      run.stdout,
      /0000000000000000-000000000009ffff|0000000000000000-00000000000bffff \(prio 0, ram\): pc\.ram KVM/,
    );
    assert.match(run.stdout, /RIP=0000000000[0-9a-f]{6} /);
  },
});

Deno.test({
  name: "Ctrl-A x quits; SIGTERM ends the run the same way (status 0, no stack trace)",
  ignore: !KVM.available,
  async fn() {
    const quit = await session(["\x01x"]);
    assert.equal(quit.code, 0, quit.stderr);
    assert.match(quit.stdout, /QEMU: Terminated/);
    const term = await session([], { signal: "SIGTERM" });
    assert.equal(term.code, 0, term.stderr);
    assert.equal(term.stderr, "");
  },
});
