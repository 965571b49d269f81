/**
 * The monitor behind Ctrl-A c: a few of QEMU's HMP commands.
 *
 * @module
 */

import type { MtreeOptions } from "../memory/mod.ts";

/** What the monitor can ask of a machine. */
export interface MonitorTarget {
  /** `info mtree` text. */
  mtree(options: MtreeOptions): string;
  /** `info registers` text: of CPU 0, or of all CPUs. */
  registers(cpu?: number | "all"): string;
  /** Presses the ACPI power button; whether the guest's OS listens. */
  powerButton(): boolean;
  /** `info pci` text. */
  infoPci?(): string;
}

/** The result of one command: text to print, and whether the user asked to quit. */
export interface MonitorResult {
  output: string;
  quit: boolean;
}

const HELP = [
  "info mtree [-f] [-D]  show the memory tree (-f: flat views, -D: disabled regions too)",
  "info registers [-a]   show the registers of CPU 0 (-a: of every CPU)",
  "info pci              show the PCI functions, their BARs and interrupts",
  "system_powerdown      press the ACPI power button (the guest's OS shuts down if it listens)",
  "quit | q              end the emulation",
  "help                  this text",
].join("\n");

/**
 * Runs one monitor command line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runMonitorCommand } from "./monitor.ts";
 * const target = { mtree: () => "tree\n", registers: () => "RAX=0", powerButton: () => true };
 * assert.equal(runMonitorCommand(target, "info registers").output, "RAX=0\n");
 * assert.ok(runMonitorCommand(target, "q").quit);
 * ```
 */
export function runMonitorCommand(target: MonitorTarget, line: string): MonitorResult {
  const words = line.trim().split(/\s+/).filter((w) => w !== "");
  const done = (output: string, quit = false) => ({
    output: output.endsWith("\n") || output === "" ? output : `${output}\n`,
    quit,
  });
  if (words.length === 0) return done("");
  const [command, ...rest] = words;
  if (command === "quit" || command === "q") return done("", true);
  if (command === "help" || command === "?") return done(HELP);
  if (command === "system_powerdown") {
    // QEMU says nothing either way; a guest that ignores the button is worth one line here.
    return done(
      target.powerButton()
        ? ""
        : "system_powerdown: the guest has not enabled the ACPI power button; nothing happens",
    );
  }
  if (command === "info" && rest[0] === "mtree") {
    const flags = rest.slice(1);
    const unknown = flags.filter((f) => f !== "-f" && f !== "-D");
    if (unknown.length) return done(`info mtree: unknown flag ${unknown[0]} (use -f, -D)`);
    return done(target.mtree({ flat: flags.includes("-f"), disabled: flags.includes("-D") }));
  }
  if (command === "info" && (rest[0] === "registers" || rest[0] === "cpus")) {
    return done(target.registers(rest[1] === "-a" ? "all" : 0));
  }
  if (command === "info" && rest[0] === "pci" && target.infoPci) return done(target.infoPci());
  if (command === "info") {
    return done(`info: unknown item "${rest[0] ?? ""}" (try: info mtree, info pci, info registers)`);
  }
  return done(`unknown command: '${command}' (try help)`);
}
