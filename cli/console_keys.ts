/**
 * What the console does with each typed byte, as QEMU's `-nographic` mux does: Ctrl-A x quits,
 * Ctrl-A c toggles the monitor, Ctrl-A h lists the keys, Ctrl-A Ctrl-A sends a Ctrl-A; in monitor
 * mode bytes edit a command line. Pure: it returns what should happen and echoes through `out`.
 * Used by the VM thread's console (`vm_console.ts`).
 *
 * @module
 */

const CTRL_A = 0x01;
/** The monitor prompt. */
export const PROMPT = "(qemu) ";
const HELP =
  "\r\nC-a h    print this help\r\nC-a x    exit emulator\r\nC-a c    switch between console and monitor\r\nC-a C-a  sends C-a\r\n";

/** The outcome of one byte. */
export type KeyAction =
  | { kind: "guest"; byte: number }
  | { kind: "command"; line: string }
  | { kind: "quit" }
  | { kind: "none" };

/**
 * The console's key state machine.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConsoleKeys } from "./console_keys.ts";
 * const keys = new ConsoleKeys(() => {});
 * assert.equal(keys.handle(0x61).kind, "guest");
 * keys.handle(0x01);
 * assert.equal(keys.handle(0x78).kind, "quit"); // Ctrl-A x
 * ```
 */
export class ConsoleKeys {
  readonly #out: (text: string) => void;
  #escape = false;
  #monitor = false;
  #line = "";

  constructor(out: (text: string) => void) {
    this.#out = out;
  }

  /** Whether the monitor has the keyboard. */
  get monitor(): boolean {
    return this.#monitor;
  }

  /** Handles one byte typed on the console. */
  handle(byte: number): KeyAction {
    const out = this.#out;
    if (this.#escape) {
      this.#escape = false;
      if (byte === 0x78 /* x */) {
        out("QEMU: Terminated\r\n");
        return { kind: "quit" };
      }
      if (byte === 0x63 /* c */) {
        this.#monitor = !this.#monitor;
        this.#line = "";
        out(this.#monitor ? `\r\n${PROMPT}` : "\r\n");
      } else if (byte === 0x68 /* h */) {
        out(HELP);
      } else if (byte === CTRL_A && !this.#monitor) {
        return { kind: "guest", byte: CTRL_A };
      }
      return { kind: "none" };
    }
    if (byte === CTRL_A) {
      this.#escape = true;
      return { kind: "none" };
    }
    if (!this.#monitor) return { kind: "guest", byte };
    if (byte === 0x0d || byte === 0x0a) {
      out("\r\n");
      const line = this.#line.trim();
      this.#line = "";
      if (line) return { kind: "command", line };
      out(PROMPT);
    } else if (byte === 0x7f || byte === 0x08) {
      if (this.#line.length > 0) {
        this.#line = this.#line.slice(0, -1);
        out("\b \b");
      }
    } else if (byte >= 0x20 && byte < 0x7f) {
      this.#line += String.fromCharCode(byte);
      out(String.fromCharCode(byte));
    }
    return { kind: "none" };
  }

  /** After a command ran: the next prompt (unless the monitor was left meanwhile). */
  prompt(): void {
    if (this.#monitor) this.#out(PROMPT);
  }
}
