/**
 * The console path end to end, through the real front-end in a subprocess: bytes written to its
 * stdin reach COM1 and wake a guest sleeping in `hlt` (the kernel's SIGIO for the input, relayed as a
 * kick out of KVM_RUN: cli/vm_console.ts); Ctrl-A c opens the monitor; Ctrl-A x and SIGTERM end the
 * run cleanly.
 */
import assert from "node:assert/strict";
import { ECHO, kvmAvailability } from "../mod.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`tests/console_test.ts: skipped: ${KVM.reason}`);
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const encoder = new TextEncoder();
/** How long one step may wait for the console before the session is called hung. */
const HANG_MS = 30_000;

/** One step of a session: bytes to type, or text to wait for on the console first. */
type Step = string | { until: string };

/**
 * Starts the front-end on the echo guest; once its banner is out, types the `input` steps in order
 * (a `{ until }` step waits for that text on the console).
 */
async function session(input: Step[], options: { signal?: Deno.Signal; args?: string[] } = {}) {
  const kernel = await Deno.makeTempFile({ suffix: ".echo" });
  try {
    await Deno.writeFile(kernel, ECHO);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        ...["run", "--allow-ffi", "--allow-read", "--allow-write", "--allow-sys"],
        ...[MAIN, "-m", "32M", "-kernel", kernel, ...(options.args ?? [])],
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const decoder = new TextDecoder();
    let stdout = "";
    let waiting: { text: string; resolve: () => void } | undefined;
    const reading = (async () => {
      for await (const chunk of child.stdout) {
        stdout += decoder.decode(chunk, { stream: true });
        if (waiting && stdout.includes(waiting.text)) waiting.resolve();
      }
      waiting?.resolve(); // the process ended: let the test see what it printed
    })();
    // A hang guard, not a speed check: a lost wake-up leaves the guest asleep for ever.
    const until = (text: string) =>
      stdout.includes(text) ? Promise.resolve() : new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill("SIGKILL");
          reject(new Error(`no ${JSON.stringify(text.slice(-40))} on the console after ${HANG_MS} ms`));
        }, HANG_MS);
        waiting = { text, resolve: () => (clearTimeout(timer), resolve()) };
      });
    await until("q resets\n"); // the guest is up and sleeping in hlt
    const writer = child.stdin.getWriter();
    for (const step of input) {
      if (typeof step === "string") await writer.write(encoder.encode(step));
      else await until(step.until);
    }
    if (options.signal) child.kill(options.signal);
    const [status] = await Promise.all([child.status, reading]);
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

for (const irqchip of ["on", "split"]) {
  Deno.test({
    name:
      `1,000 bytes typed one at a time, each into a guest asleep in hlt, each echoed: no wake-up is lost (kernel-irqchip=${irqchip})`,
    ignore: !KVM.available,
    async fn() {
      // Each byte is typed only after the previous one came back, so the guest is halted (or on its
      // way to hlt) every time: each byte must wake it through its own SIGIO and kick. With a split
      // irqchip COM1's interrupt goes through our own IOAPIC (and PIC) instead of KVM's.
      const letters = "abcdefghijklmnoprstuvwxyz0123456789"; // no q: q resets
      const steps: Step[] = [];
      let typed = "";
      for (let i = 0; i < 1000; i++) {
        const byte = letters[i % letters.length];
        typed += byte;
        steps.push(byte, { until: `q resets\n${typed}` });
      }
      const run = await session([...steps, "q"], { args: ["-machine", `pc,kernel-irqchip=${irqchip}`] });
      assert.equal(run.code, 0, run.stderr);
      assert.ok(run.stdout.startsWith(`echo: type; Enter starts a new line, q resets\n${typed}`));
    },
  });
}

for (const [irqchip, version] of [["on", "0x11"], ["split", "0x20"]]) {
  Deno.test({
    name:
      `Ctrl-A c opens the monitor: info mtree -f, info registers and info pic (kernel-irqchip=${irqchip}), then quit`,
    ignore: !KVM.available,
    async fn() {
      const run = await session(["\x01c", "info mtree -f\r", "info registers\r", "info pic\r", "quit\r"], {
        args: ["-machine", `pc,kernel-irqchip=${irqchip}`],
      });
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /\(qemu\) /);
      assert.match(run.stdout, /FlatView #0\n AS "memory", root: system\n AS "cpu-memory-0", root: system\n/);
      assert.match(
        run.stdout,
        /0000000000000000-000000000009ffff|0000000000000000-00000000000bffff \(prio 0, ram\): pc\.ram KVM/,
      );
      assert.match(run.stdout, /RIP=0000000000[0-9a-f]{6} /);
      // Both 8259s and the IOAPIC in QEMU's words: KVM's (IOAPIC version 0x11) or the board's own
      // (0x20). The echo guest takes COM1 through the master 8259: IRQ 4 unmasked, vectors from 0x20.
      assert.match(
        run.stdout,
        /pic0: irr=[0-9a-f]{2} imr=ef isr=[0-9a-f]{2} hprio=0 irq_base=20 rr_sel=\d elcr=00/,
      );
      assert.match(run.stdout, /pic1: irr=00 imr=ff /);
      assert.match(run.stdout, new RegExp(`ioapic0: ver=${version} id=0x00 sel=0x00\n  pin 0  `));
    },
  });
}

Deno.test({
  name: "Ctrl-A x quits; SIGTERM ends the run the same way (status 0, no stack trace)",
  ignore: !KVM.available,
  async fn() {
    const quit = await session(["\x01x"]);
    assert.equal(quit.code, 0, quit.stderr);
    assert.match(quit.stdout, /QEMU: Terminated/);
    const term = await session([], { signal: "SIGTERM" });
    assert.equal(term.code, 0, term.stderr);
    assert.equal(term.stderr, "kvm-ts: terminating on signal 15\n"); // as QEMU's line
  },
});

Deno.test({
  name: "-smp 2: input reaches the guest through the doorbell, and info registers -a reads running vCPUs",
  ignore: !KVM.available,
  async fn() {
    const run = await session(["hi\r", { until: "hi\r\n" }, "\x01c", "info registers -a\r", "quit\r"], {
      args: ["-smp", "2"],
    });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /q resets\nhi\r\n/); // echoed by the guest, from its own vCPU thread
    assert.match(run.stdout, /CPU#0\nRAX=[\s\S]*CPU#1\nRAX=/); // both read while their threads run the guest
  },
});
