/**
 * The monitor behind Ctrl-A c and QMP's `human-monitor-command`: a few of QEMU's HMP commands, a
 * thin text view over {@link MonitorCommands} (the same implementations QMP runs).
 *
 * @module
 */

import { DEFAULT_ANNOUNCE } from "../devices/net_announce.ts";
import { formatSnapshotSummary, MonitorCommands } from "./monitor_commands.ts";
import { QmpError } from "./qmp_session.ts";

/** The result of one command: text to print, and whether the user asked to quit. */
export interface MonitorResult {
  output: string;
  quit: boolean;
}

const HELP = [
  "info mtree [-f] [-D]  show the memory tree (-f: flat views, -D: disabled regions too)",
  "info registers [-a]   show the registers of CPU 0 (-a: of every CPU)",
  "info pci              show the PCI functions, their BARs and interrupts",
  "info pic              show both 8259s and the IOAPIC (KVM's, or the board's own with a split irqchip)",
  "info status           show whether the guest runs",
  "info cpus             show the vCPUs and their host threads",
  "info version          show the version",
  "stop | cont | c       stop the vCPUs, let them run again",
  "system_reset          reset the machine (it stays stopped if it was)",
  "system_powerdown      press the ACPI power button (the guest's OS shuts down if it listens)",
  "memsave ADDR SIZE FILE   save SIZE bytes at virtual ADDR (CPU 0's page tables) to FILE",
  "pmemsave ADDR SIZE FILE  save SIZE bytes at physical ADDR to FILE",
  "snapshot save DIR [--diff]  write a snapshot (--diff: only pages written since the last one)",
  "announce_self [NICS] [ID]  announce the network cards (a RARP each, drivers asked to) in 5 rounds",
  "quit | q              end the emulation",
  "help                  this text",
].join("\n");

/** An HMP number: decimal, or hex with 0x (QEMU takes expressions; these are the common forms). */
function hmpNumber(word: string | undefined, what: string): bigint {
  if (word === undefined) throw new QmpError("GenericError", `missing ${what}`);
  if (!/^-?(0x[0-9a-f]+|[0-9]+)$/i.test(word)) {
    throw new QmpError("GenericError", `invalid ${what} '${word}'`);
  }
  return word.startsWith("-") ? -BigInt(word.slice(1)) : BigInt(word);
}

/**
 * Runs one monitor command line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MonitorCommands } from "./monitor_commands.ts";
 * import { runMonitorCommand } from "./monitor.ts";
 * const machine = {
 *   mtree: () => "tree\n", registers: () => "RAX=0", powerButton: () => true, cpus: 1, threadIds: () => [7],
 *   readPhysical: (_a: bigint, n: number) => new Uint8Array(n), translate: (_c: number, v: bigint) => v,
 * };
 * const commands = new MonitorCommands(machine, { event: () => {}, end: () => {} });
 * assert.equal(runMonitorCommand(commands, "info registers").output, "RAX=0\n");
 * assert.equal(runMonitorCommand(commands, "info cpus").output, "* CPU #0: thread_id=7\n");
 * assert.ok(runMonitorCommand(commands, "q").quit);
 * ```
 */
export function runMonitorCommand(commands: MonitorCommands, line: string): MonitorResult {
  const words = line.trim().split(/\s+/).filter((w) => w !== "");
  const done = (output: string, quit = false) => ({
    output: output.endsWith("\n") || output === "" ? output : `${output}\n`,
    quit,
  });
  if (words.length === 0) return done("");
  const [command, ...rest] = words;
  try {
    switch (command) {
      case "quit":
      case "q":
        commands.quit();
        return done("", true);
      case "help":
      case "?":
        return done(HELP);
      case "stop":
        commands.stop();
        return done("");
      case "cont":
      case "c":
        commands.cont();
        return done("");
      case "system_reset":
        commands.systemReset();
        return done("");
      case "system_powerdown":
        // QEMU says nothing either way; a guest that ignores the button is worth one line here.
        return done(
          commands.systemPowerdown()
            ? ""
            : "system_powerdown: the guest has not enabled the ACPI power button; nothing happens",
        );
      case "memsave":
      case "pmemsave": {
        const addr = hmpNumber(rest[0], "address");
        const size = hmpNumber(rest[1], "size");
        const file = rest[2];
        if (file === undefined) throw new QmpError("GenericError", "missing file name");
        if (command === "memsave") commands.memsave(addr, size, file);
        else commands.pmemsave(addr, size, file);
        return done("");
      }
      case "info":
        return done(info(commands, rest, line.trim()));
      case "announce_self": {
        if (rest.length > 2) throw new QmpError("GenericError", "usage: announce_self [NICS] [ID]");
        const [interfaces, id] = rest;
        commands.announceSelf(DEFAULT_ANNOUNCE, {
          ...(interfaces !== undefined ? { interfaces: interfaces.split(",").filter((n) => n !== "") } : {}),
          ...(id !== undefined ? { id } : {}),
        });
        return done("");
      }
      case "snapshot": {
        const [verb, dir, ...flags] = rest;
        if (verb !== "save" || dir === undefined || flags.some((f) => f !== "--diff")) {
          throw new QmpError("GenericError", "usage: snapshot save DIR [--diff]");
        }
        return done(formatSnapshotSummary(commands.snapshotSave(dir, flags.includes("--diff"))));
      }
    }
  } catch (e) {
    if (e instanceof QmpError) return done(`Error: ${e.message}`);
    throw e;
  }
  return done(`unknown command: '${command}'`);
}

function info(commands: MonitorCommands, rest: string[], line: string): string {
  const [item, ...flags] = rest;
  switch (item) {
    case "mtree": {
      const unknown = flags.filter((f) => f !== "-f" && f !== "-D");
      if (unknown.length) return `info mtree: unknown flag ${unknown[0]} (use -f, -D)`;
      return commands.mtree({ flat: flags.includes("-f"), disabled: flags.includes("-D") });
    }
    case "registers":
      return commands.registers(flags[0] === "-a" ? "all" : 0);
    case "pci": {
      const pci = commands.infoPci();
      if (pci !== null) return pci;
      break;
    }
    case "pic": {
      const pic = commands.infoPic();
      if (pic !== null) return pic;
      break;
    }
    case "status": {
      const state = commands.state;
      return `VM status: ${
        state === "running" ? "running" : state === "paused" ? "paused" : "paused (prelaunch)"
      }`;
    }
    case "cpus": {
      const cpus = commands.queryCpusFast() as { "cpu-index": number; "thread-id": number }[];
      return cpus.map((c) =>
        `${c["cpu-index"] === 0 ? "*" : " "} CPU #${c["cpu-index"]}: thread_id=${c["thread-id"]}`
      )
        .join("\n");
    }
    case "version": {
      const { qemu: v, package: pkg } = commands.queryVersion() as {
        qemu: { major: number; minor: number; micro: number };
        package: string;
      };
      return `${v.major}.${v.minor}.${v.micro}${pkg}`; // QEMU's format: the package follows directly
    }
  }
  // QEMU's words for an unknown info item ("help" lists what there is).
  return `unknown command: '${line.replace(/\s+/g, " ")}'`;
}
