/**
 * `deno task nested -- COMMAND…`: runs COMMAND in this directory inside the nested KVM VM (QEMU's
 * TCG with an emulated AMD SVM CPU and Debian's kernel with kvm_amd), with this terminal as its
 * terminal, and exits with its status.
 *
 * @module
 */

import { NestedError, runNested } from "../nested/nested_vm.ts";
import { wokeLine } from "../nested/nested_error.ts";
import { hostTerminalSize } from "./nested_fallback.ts";

const USAGE = `usage: deno task nested [options] -- COMMAND [ARG…]

Runs COMMAND in this directory inside a VM that has a hardware-style /dev/kvm, on any Linux host:
QEMU's emulator with an AMD SVM CPU, Debian's kernel with kvm_amd, the host's files shared read-only
(writes stay in the VM unless --writable names their folder). Exits with COMMAND's status.

options:
  --timeout SECONDS   kill the VM after this long (default 3600)
  --freeze SECONDS    when its kernel gives no sign of life for this long, send it a keyboard
                      interrupt and an NMI, and kill it if that does not wake it within 30 s
                      (SECONDS if shorter; default 300; 0: never)
  --memory MIB        the VM's RAM (default 4096)
  --cpus N            its vCPUs (default 1; with --tcg multi, this host's CPU count)
  --tcg single|multi  QEMU's TCG threads: one for all vCPUs (default), or one each (faster, can freeze)
  --writable DIR      share DIR writable at the same path (repeatable)

Needs: apt-get install qemu-system-x86 linux-image-amd64 busybox-static`;

/** Exit status 128 + n for a run ended by signal n, as a shell reports it. */
const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

/** Runs the nested command line `args`; returns the exit status. */
export async function nestedMain(args: string[]): Promise<number> {
  const options: {
    timeoutSeconds?: number;
    freezeSeconds?: number;
    memoryMib?: number;
    cpus?: number;
    tcgThreads?: "multi" | "single";
    writable: string[];
  } = { writable: [] };
  let i = 0;
  const value = (flag: string, zero = false): number => {
    const text = args[++i];
    const n = Number(text);
    if (text === undefined || !/^\d+$/.test(text) || !Number.isSafeInteger(n) || (n === 0 && !zero)) {
      const wanted = zero ? "a whole number" : "a positive whole number";
      throw new RangeError(`nested: ${flag} wants ${wanted}, not ${text ?? "nothing"}`);
    }
    return n;
  };
  try {
    for (; i < args.length && args[i] !== "--"; i++) {
      const a = args[i];
      if (a === "-h" || a === "--help") {
        console.log(USAGE);
        return 0;
      } else if (a === "--timeout") options.timeoutSeconds = value(a);
      else if (a === "--freeze") options.freezeSeconds = value(a, true);
      else if (a === "--memory") options.memoryMib = value(a);
      else if (a === "--cpus") options.cpus = value(a);
      else if (a === "--tcg") {
        const mode = args[++i];
        if (mode !== "single" && mode !== "multi") {
          throw new RangeError(`nested: --tcg wants single or multi, not ${mode}`);
        }
        options.tcgThreads = mode;
      } else if (a === "--writable") {
        const dir = args[++i];
        let info: Deno.FileInfo | null = null;
        try {
          info = dir === undefined ? null : Deno.statSync(dir);
        } catch { /* reported below */ }
        if (!info?.isDirectory) {
          throw new RangeError(`nested: --writable wants a folder, not ${dir ?? "nothing"}`);
        }
        options.writable.push(Deno.realPathSync(dir));
      } else if (a.startsWith("-")) throw new RangeError(`nested: unknown option ${a} (see --help)`);
      else break;
    }
  } catch (error) {
    console.error((error as Error).message);
    return 2;
  }
  const argv = args.slice(args[i] === "--" ? i + 1 : i);
  if (argv.length === 0) {
    console.error("nested: no command given (deno task nested -- COMMAND…)");
    return 2;
  }
  try {
    const result = await runNested({
      ...options,
      argv,
      env: Deno.env.toObject(),
      stdio: "inherit",
      terminal: hostTerminalSize(),
      onWake: (quiet) => console.error(wokeLine(quiet)),
    });
    return result.status;
  } catch (error) {
    if (error instanceof NestedError) {
      console.error(error.message);
      return error.signal ? 128 + SIGNAL_NUMBERS[error.signal as keyof typeof SIGNAL_NUMBERS] : 1;
    }
    throw error;
  }
}

if (import.meta.main) Deno.exit(await nestedMain(Deno.args));
