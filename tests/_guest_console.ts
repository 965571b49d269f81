/**
 * The front-end as a child process with its console on pipes, for the tests that boot Linux and
 * talk to its shell: wait for a pattern, type, run a command and read its answer.
 *
 * @module
 */

import assert from "node:assert/strict";
import { kernelSymbols } from "./_linux_guest.ts";
import { INIT_MARKER, SHELL_PROMPT } from "../examples/build_initramfs.ts";
import { START_FLAGS } from "../cli/start_flags.ts";

const MAIN = decodeURIComponent(new URL("../main.ts", import.meta.url).pathname);
/**
 * How long one step may take before the test gives up and prints the console: a hang guard, not a
 * measurement (`KVM_TS_STEP_DEADLINE_S` overrides it).
 */
const STEP_DEADLINE_MS = Number(Deno.env.get("KVM_TS_STEP_DEADLINE_S") ?? 15 * 60) * 1000;

/** The front-end as a child process, its console on pipes. */
export class GuestConsole implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reading: Promise<void>;
  #text = "";
  #wake: () => void = () => {};
  #closed = false;

  readonly #args: string[];

  /** The process id of the program (`ip netns exec` and the like run it in the same process). */
  get pid(): number {
    return this.#child.pid;
  }

  /**
   * Starts `main.ts args…`; with `prefix`, as `prefix… deno run … main.ts args…` (for example
   * `["ip", "netns", "exec", NS]` to run it in a network namespace). With `program`, runs
   * `prefix… program args…` instead of the front-end: QEMU with `-serial mon:stdio` has the same
   * console and the same Ctrl-A c monitor, so a benchmark drives both peers alike.
   */
  constructor(args: string[], options: { prefix?: readonly string[]; program?: string } = {}) {
    this.#args = args;
    const front = options.program === undefined
      ? [
        Deno.execPath(),
        "run",
        ...START_FLAGS,
        MAIN,
      ]
      : [options.program];
    const [command, ...before] = [...options.prefix ?? [], ...front];
    this.#child = new Deno.Command(command, {
      args: [
        ...before,
        ...args,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const decoder = new TextDecoder();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) {
        this.#text += decoder.decode(chunk, { stream: true });
        this.#wake();
      }
    };
    this.#reading = Promise.all([pump(this.#child.stdout), pump(this.#child.stderr)]).then(() => {
      this.#closed = true;
      this.#wake();
    });
  }

  /** Everything printed so far (console and front-end messages). */
  get text(): string {
    return this.#text;
  }

  /**
   * Waits until the output from `from` on matches `pattern`; returns the match and where it ends.
   * While a boot is awaited inside the nested KVM VM (`probe`, on by default for the /init marker,
   * the first prompt and a kernel banner), a console quiet for 30 s has the monitor sample every vCPU
   * each 5 s; a vCPU in protected mode found eight times in a row at the same RIP with interrupts off
   * is wedged (the emulator's stall, see {@link retryNestedStalls}) and ends the wait at once with a
   * GuestStall.
   */
  async waitFor(
    pattern: RegExp,
    from: number,
    what: string,
    probe = INSIDE_NESTED && BOOT_PATTERNS.includes(pattern.source),
  ): Promise<{ match: RegExpExecArray; end: number }> {
    const deadline = Date.now() + STEP_DEADLINE_MS;
    let seen = this.#text.length;
    let quietSince = Date.now();
    const samples: ReturnType<typeof parseRegisters>[] = [];
    for (;;) {
      const match = pattern.exec(this.#text.slice(from));
      if (match) return { match, end: from + match.index + match[0].length };
      if (this.#closed) assert.fail(`the run ended before ${what}:\n${this.#text}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        const text = this.#text;
        throw new GuestStall(
          `no ${what} after ${STEP_DEADLINE_MS / 1000} s:\n${text}\n${await this.#evidence()}`,
        );
      }
      if (this.#text.length !== seen) {
        seen = this.#text.length;
        quietSince = Date.now();
        samples.length = 0;
      } else if (probe && Date.now() - quietSince >= QUIET_BEFORE_PROBE_MS) {
        samples.push(parseRegisters(await this.#monitor("info registers -a")));
        seen = this.#text.length; // the monitor's own answer is not the guest's progress
        // A vCPU still in real mode is an application processor waiting for its start-up IPI (at the
        // reset vector, interrupts off), not a wedged one.
        const wedged = samples.length >= WEDGED_SAMPLES &&
          samples.at(-1)!.some((cpu, i) =>
            samples.slice(-WEDGED_SAMPLES).every((sample) =>
              sample[i] && sample[i].protectedMode && !sample[i].interrupts && sample[i].rip === cpu.rip
            )
          );
        if (wedged) {
          throw new GuestStall(
            `no ${what}: a vCPU is wedged with interrupts off at the same RIP in ${WEDGED_SAMPLES} samples ` +
              `${PROBE_INTERVAL_MS / 1000} s apart:\n` +
              `${this.#text}\n${await this.#evidence()}`,
          );
        }
        quietSince = Date.now() - QUIET_BEFORE_PROBE_MS + PROBE_INTERVAL_MS;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Opens the monitor, runs `command`, closes it again; what the monitor printed. */
  async #monitor(command: string): Promise<string> {
    const from = this.#text.length;
    // A probe runs beside the boot it watches: the guest may finish (and the run end) meanwhile,
    // which is the waiter's business, not the probe's.
    (await this.#send("\x01c")) && await pause(1500) &&
      (await this.#send(`${command}\r`)) && await pause(3000) &&
      (await this.#send("\x01c")) && await pause(500);
    return this.#text.slice(from);
  }

  /**
   * Where a stalled guest is: the monitor's `info registers -a`, and each RIP named from the kernel's
   * symbols when the guest booted with `nokaslr` (see `kernelSymbols`). The console alone says only
   * what came before a hang.
   */
  async #evidence(): Promise<string> {
    if (this.#closed) return "";
    const from = this.#text.length;
    (await this.#send("\x01c")) && await pause(2000) &&
      (await this.#send("info registers -a\r")) && await pause(5000) &&
      await this.#send("\x01c");
    const answer = this.#text.slice(from);
    const rips = [...answer.matchAll(/RIP=([0-9a-f]{16})/g)].map((m) => BigInt(`0x${m[1]}`));
    const kernel = this.#args[this.#args.indexOf("-kernel") + 1];
    const append = this.#args[this.#args.indexOf("-append") + 1] ?? "";
    const names = kernel && /\bnokaslr\b/.test(append) ? kernelSymbols(kernel, rips) : rips.map(() => "");
    return `the monitor then said:\n${answer}\nRIPs: ${
      rips.map((rip, i) => `${rip.toString(16)} ${names[i]}`.trim()).join(", ") || "none"
    }`;
  }

  /** Types `text` on the console. */
  async type(text: string): Promise<void> {
    if (!(await this.#send(text))) {
      const { code } = await this.#child.status;
      await this.#reading;
      assert.fail(
        `the run ended (status ${code}) before ${JSON.stringify(text)} could be typed:\n${this.#text}`,
      );
    }
  }

  /** Writes `text` to the console; false when the run has ended and its stdin is gone. */
  async #send(text: string): Promise<boolean> {
    try {
      await this.#writer.write(new TextEncoder().encode(text));
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.BrokenPipe) return false;
      throw error;
    }
  }

  /** Types a command line and returns the output that follows it, up to the next prompt. */
  async command(line: string, from: number): Promise<{ output: string; end: number }> {
    const start = this.#text.length > from ? this.#text.length : from;
    await this.type(`${line}\r`);
    const { match, end } = await this.waitFor(
      new RegExp(`\\r?\\n([\\s\\S]*?)${escape(SHELL_PROMPT)}`),
      start,
      `the answer to ${line}`,
    );
    return { output: match[1], end };
  }

  /** Waits for the process to end; its exit status. */
  async status(): Promise<number> {
    const { code } = await this.#child.status;
    await this.#reading;
    return code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.#writer.close();
    } catch { /* already closed */ }
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.#child.status;
    await this.#reading;
  }
}

/** Resolves true after `ms` milliseconds (so that it chains with `&&`). */
const pause = (ms: number) => new Promise<true>((resolve) => setTimeout(() => resolve(true), ms));

/** A console step passed its deadline: the guest stalled (its message holds the console and registers). */
/** Inside the nested KVM VM (its init sets this). */
const INSIDE_NESTED = Deno.env.get("KVM_TS_NESTED") === "1";
/** How long a boot's console may be quiet before the monitor looks at the vCPUs. */
const QUIET_BEFORE_PROBE_MS = 30_000;
/** Time between two looks. */
const PROBE_INTERVAL_MS = 5_000;
/**
 * Looks in a row that must find a vCPU at the same RIP with interrupts off before it counts as
 * wedged: 35 s. A stall of the emulator is for good, so waiting longer costs a stalled boot little,
 * while a slow machine can keep a healthy boot in one interrupts-off spot for ten seconds and more.
 */
const WEDGED_SAMPLES = 8;
/** The waits that are a boot: the /init marker, a first shell prompt, a kernel banner, the facts' end. */
const BOOT_PATTERNS = [escape(INIT_MARKER), escape(SHELL_PROMPT), "Linux version", "FACTS-END"]
  .map((text) => new RegExp(text).source);

/**
 * Each vCPU's RIP, interrupt flag and CR0.PE (protected mode) from `info registers -a` output, in
 * vCPU order.
 */
export function parseRegisters(text: string): { rip: string; interrupts: boolean; protectedMode: boolean }[] {
  return [...text.matchAll(/RIP=([0-9a-f]{16}) RFL=([0-9a-f]{8})(?:(?!RIP=)[\s\S])*?CR0=([0-9a-f]{8})/g)].map(
    (
      m,
    ) => ({
      rip: m[1],
      interrupts: (parseInt(m[2], 16) & 0x200) !== 0,
      protectedMode: (parseInt(m[3], 16) & 1) !== 0,
    }),
  );
}

export class GuestStall extends Error {
  override name = "GuestStall";
}

/** How often a stalled Linux boot is tried inside the nested KVM VM (see {@link retryNestedStalls}). */
const NESTED_ATTEMPTS = 8;

/**
 * The emulator's other known failure: the guest's kernel dies of a double fault at the first
 * instruction of its syscall entry, the user's stack still loaded (docs/nested-kvm.md).
 */
const SYSCALL_ENTRY_DOUBLE_FAULT = /traps: PANIC: double fault[\s\S]*?RIP: 0010:entry_SYSCALL_64\+0x0\//;

/**
 * What of the nested VM's known emulator failures `error` is, in a few words (a stall, or the
 * double fault at the syscall entry), or undefined for any other failure.
 */
export function nestedEmulatorFailure(error: unknown): string | undefined {
  if (error instanceof GuestStall) {
    const last = error.message.split("\n").filter((line) => /^\[\s*\d+\.\d+\]/.test(line)).at(-1) ?? "";
    const rips = /RIPs: (.*)$/m.exec(error.message)?.[1] ?? "?";
    return `guest stalled (last line ${last.trim()}; RIPs ${rips})`;
  }
  if (error instanceof Error && SYSCALL_ENTRY_DOUBLE_FAULT.test(error.message)) {
    return "guest died of a double fault at entry_SYSCALL_64+0x0";
  }
  return undefined;
}

/**
 * `fn`, tried again (up to eight times in all) when it fails with one of the emulator's known
 * failures ({@link nestedEmulatorFailure}) inside the nested KVM VM, and only there; each retry is
 * printed with the failure's evidence. `attempts` is for tests.
 *
 * Why: inside the nested VM (QEMU's TCG with emulated SVM), Linux guests can stop for good: the
 * emulator can deliver an injected interrupt twice, and the nested handler spins with IF=0 on a lock
 * its first copy holds; the same stale event arriving at the syscall entry's first instruction is a
 * double fault (QEMU's own L2 guests show both). One vCPU in the nested VM makes them rare; the retry
 * covers what is left (docs/nested-kvm.md). A hang or crash of ours would fail every attempt and still
 * fail; on a host with real KVM nothing is retried.
 */
export function retryNestedStalls(
  fn: () => Promise<void>,
  attempts = Deno.env.get("KVM_TS_NESTED") === "1" ? NESTED_ATTEMPTS : 1,
): () => Promise<void> {
  return async () => {
    for (let attempt = 1;; attempt++) {
      try {
        return await fn();
      } catch (error) {
        const known = nestedEmulatorFailure(error);
        if (known === undefined || attempt >= attempts) throw error;
        console.log(
          `${known} inside the nested VM (attempt ${attempt} of ${attempts}): the emulator's known failure, ` +
            `trying again`,
        );
      }
    }
  };
}

export function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** `printf` that prints `@name=value@` (the typed line itself holds `\100`, not `@`). */
export function tagged(name: string, shell: string): string {
  return `printf '\\100${name}=%s\\100\\n' "${shell}"`;
}

/** The value of `@name=…@` in `output` (see {@link tagged}); fails the test without one. */
export function tag(output: string, name: string): string {
  const match = new RegExp(`@${name}=([^@]*)@`).exec(output);
  assert.ok(match, `no @${name}=…@ in:\n${output}`);
  return match[1];
}
