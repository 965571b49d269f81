/**
 * The `deno run` front-end: QEMU-style flags, and the only code that touches stdout/stderr and the
 * process exit status.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { AddressSpace, formatMtree } from "../mod.ts";
import { buildPcMemory } from "../machine/pc/pc_memory.ts";
import { parseSize } from "./size.ts";

const USAGE = `usage: deno task start [options]

Builds the i440fx PC memory map with the memory API and prints it as QEMU's monitor does.

options:
  -m SIZE             guest RAM (default 128M; a bare number is MiB, as in QEMU)
  --dump-mtree[=-f]   print 'info mtree' (or 'info mtree -f' with =-f); both by default
  -h, --help          this text
`;

/** QEMU spells long options with one dash (`-kernel`); node's parseArgs wants two. */
function normalizeArgs(args: string[]): string[] {
  return args.map((a) => (/^-[a-z][a-z0-9-]+/.test(a) ? `-${a}` : a));
}

/** Thrown for bad command lines: printed as one line, exit status 2. */
class UsageError extends Error {}

/**
 * Runs the command line `args` and returns the exit status. Never throws for bad input: it prints
 * one line naming what was wrong.
 */
export function main(
  args: string[],
  out = (s: string) => console.log(s),
  err = (s: string) => console.error(s),
): number {
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args: normalizeArgs(args),
        options: {
          m: { type: "string", short: "m" },
          "dump-mtree": { type: "string" },
          help: { type: "boolean", short: "h" },
        },
        allowPositionals: false,
        strict: true,
      });
    } catch (e) {
      throw new UsageError((e as Error).message.split("\n")[0]);
    }
    const { values } = parsed;
    if (values.help) {
      out(USAGE.trimEnd());
      return 0;
    }
    let ramSize: bigint;
    try {
      ramSize = parseSize(values.m ?? "128M");
    } catch (e) {
      throw new UsageError(`-m: ${(e as Error).message}`);
    }
    const mode = values["dump-mtree"];
    if (mode !== undefined && mode !== "" && mode !== "-f") {
      throw new UsageError(`--dump-mtree: expected nothing or =-f, got "${mode}"`);
    }
    const pc = buildPcMemory({ ramSize });
    using memory = new AddressSpace(pc.system, "memory");
    using io = new AddressSpace(pc.io, "I/O");
    if (mode === undefined || mode === "") {
      out(formatMtree([memory, io]).trimEnd() + (mode === undefined ? "\n" : ""));
    }
    if (mode === undefined || mode === "-f") out(formatMtree([memory, io], { flat: true }).trimEnd());
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`error: ${e.message} (try --help)`);
      return 2;
    }
    if (e instanceof RangeError || e instanceof TypeError) {
      err(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
