/**
 * The front-end as a child process with its console on pipes, for the tests that boot Linux and
 * talk to its shell: wait for a pattern, type, run a command and read its answer.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SHELL_PROMPT } from "../examples/build_initramfs.ts";

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

  constructor(args: string[]) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        "--allow-write",
        "--allow-sys=systemMemoryInfo",
        "--allow-run",
        "--allow-env",
        MAIN,
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

  /** Waits until the output from `from` on matches `pattern`; returns the match and where it ends. */
  async waitFor(
    pattern: RegExp,
    from: number,
    what: string,
  ): Promise<{ match: RegExpExecArray; end: number }> {
    const deadline = Date.now() + STEP_DEADLINE_MS;
    for (;;) {
      const match = pattern.exec(this.#text.slice(from));
      if (match) return { match, end: from + match.index + match[0].length };
      if (this.#closed) assert.fail(`the run ended before ${what}:\n${this.#text}`);
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`no ${what} after ${STEP_DEADLINE_MS / 1000} s:\n${this.#text}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Types `text` on the console. */
  async type(text: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(text));
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

export function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
