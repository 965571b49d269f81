/**
 * The `deno run` front-end: QEMU-style flags, the terminal, the monitor, exit codes. The only code
 * that touches stdin/stdout/stderr and the process exit status.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { handleKickSignal, Kvm, KvmError, type MemslotCall, vcpuKickTarget } from "../kvm/mod.ts";
import { HELLO64 } from "../machine/guests/hello64.ts"; // only the image this command may run
import { type CpuMode, detectFormat, LoaderError, loadFlat } from "../machine/loader/mod.ts";
import { MAX_CPUS, PcBoard } from "../machine/pc/pc_board.ts";
import { PcMachine } from "../machine/pc/pc_machine.ts";
import type { RunOutcome } from "../machine/vcpu_runner.ts";
import { ConsoleChannel } from "./console_channel.ts";
import { runMonitorCommand } from "./monitor.ts";
import { formatSize, parseSize } from "./size.ts";
import type { StdinWorkerInit } from "./stdin_worker.ts";

const USAGE = `usage: deno task start [options]

Runs an x86 PC guest under KVM, QEMU style. With no -kernel it runs the built-in guest, which
prints from 64-bit long mode, reads the IOAPIC, takes a UART interrupt, loops in ring 3 and resets.

options:
  -m SIZE                 guest RAM (default 128M; a bare number is MiB, as in QEMU)
  -smp N                  number of vCPUs (default 1; cpus=N is accepted too), each on its own thread
  -kernel FILE            boot FILE as QEMU's -kernel does: Linux bzImage or ELF vmlinux (64-bit
                          entry), or Multiboot v1 (a.out kludge or ELF32)
  -append TEXT            kernel command line
  -initrd FILE            initial ramdisk (Linux kernels)
  -device loader,file=FILE,addr=ADDR[,mode=real|protected32|long64]
                          a flat binary at ADDR, entered there in that mode (default real), as
                          QEMU's generic loader; long64 gets identity page tables and a GDT
  -bios FILE              firmware for pc.bios (default: the built-in 256 KiB image)
  -serial stdio|null|file:PATH
                          where COM1 goes (default stdio)
  -nographic              accepted for QEMU compatibility (there is no display)
  -no-reboot              a guest reset ends the run with status 0 (the default)
  -reboot                 a guest reset restarts the guest instead
  --dump-mtree[=-f]       print 'info mtree' (or 'info mtree -f') of the board and exit
  --trace-memslots        print every KVM_SET_USER_MEMORY_REGION call on stderr
  --timings               print where the time went (start-up, VM creation, guest run) on stderr
  -h, --help              this text

While the guest runs: Ctrl-A x quits, Ctrl-A c toggles the monitor (info mtree [-f], info registers,
quit), Ctrl-A h lists the keys. Exit status: the guest's isa-debug-exit status ((value << 1) | 1),
0 after a reset or quit, 1 when the guest crashes or a run fails, 2 for a bad command line.`;

/** Where the front-end reads and writes; the defaults are the process's own. */
export interface CliIo {
  /** Text for stdout (a newline is added). */
  out(text: string): void;
  /** Text for stderr (a newline is added). */
  err(text: string): void;
  /** Raw guest console bytes. */
  console(bytes: Uint8Array): void;
}

const encoder = new TextEncoder();
const PROCESS_IO: CliIo = {
  out: (text) => console.log(text),
  err: (text) => console.error(text),
  console: (bytes) => {
    let done = 0;
    while (done < bytes.length) done += Deno.stdout.writeSync(bytes.subarray(done));
  },
};

/** A bad command line: printed as one line, exit status 2. */
class UsageError extends Error {}

/** The parsed command line. */
export interface CliOptions {
  ramSize: bigint;
  cpus: number;
  kernel?: { path: string; image: Uint8Array };
  append: string;
  initrd?: { path: string; image: Uint8Array };
  flat?: { path: string; image: Uint8Array; addr: bigint; mode: CpuMode };
  bios?: { path: string; image: Uint8Array };
  serial: { kind: "stdio" } | { kind: "null" } | { kind: "file"; path: string };
  dumpMtree?: "tree" | "flat";
  traceMemslots: boolean;
  reboot: boolean;
  timings: boolean;
}

const LONG_OPTIONS = new Set([
  "device",
  "smp",
  "kernel",
  "append",
  "initrd",
  "bios",
  "serial",
  "nographic",
  "no-reboot",
  "reboot",
]);

/** QEMU spells long options with one dash (`-kernel`); node's parseArgs wants two. */
function normalizeArgs(args: string[]): string[] {
  return args.map((a) => {
    const name = /^-([a-z][a-z0-9-]*)(=.*)?$/.exec(a)?.[1];
    return name && LONG_OPTIONS.has(name) ? `-${a}` : a;
  });
}

function readInput(flag: string, path: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.IsADirectory
      ? "it is a directory"
      : e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable
      ? "permission denied"
      : (e as Error).message;
    throw new UsageError(`${flag}: cannot read '${path}': ${why}`);
  }
}

/** Parses `args`; throws a {@link UsageError} naming the bad flag or value. */
export function parseCommandLine(args: string[]): CliOptions | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args: normalizeArgs(args),
      options: {
        m: { type: "string", short: "m" },
        smp: { type: "string" },
        device: { type: "string" },
        kernel: { type: "string" },
        append: { type: "string" },
        initrd: { type: "string" },
        bios: { type: "string" },
        serial: { type: "string" },
        nographic: { type: "boolean" },
        "no-reboot": { type: "boolean" },
        reboot: { type: "boolean" },
        "dump-mtree": { type: "string" },
        "trace-memslots": { type: "boolean" },
        timings: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: false,
      strict: true,
    }));
  } catch (e) {
    throw new UsageError(
      (e as Error).message.split("\n")[0].replace(/'--(kernel|append|initrd|bios|serial)/, "'-$1"),
    );
  }
  if (values.help) return "help";
  let ramSize: bigint;
  try {
    ramSize = parseSize(values.m ?? "128M");
  } catch (e) {
    throw new UsageError(`-m: ${(e as Error).message}`);
  }
  if (ramSize < 2n << 20n) throw new UsageError(`-m ${values.m}: a PC needs at least 2 MiB of RAM`);
  const smpText = values.smp ?? "1";
  const cpus = Number(/^(?:cpus=)?(\d+)$/.exec(smpText)?.[1]);
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
    throw new UsageError(`-smp: "${smpText}" is not a number of vCPUs from 1 to ${MAX_CPUS}`);
  }
  const dump = values["dump-mtree"];
  if (dump !== undefined && dump !== "" && dump !== "-f") {
    throw new UsageError(`--dump-mtree: expected nothing or =-f, got "${dump}"`);
  }
  if (values.reboot && values["no-reboot"]) {
    throw new UsageError("-reboot and -no-reboot contradict each other");
  }
  const serialArg = values.serial ?? "stdio";
  let serial: CliOptions["serial"];
  if (serialArg === "stdio" || serialArg === "mon:stdio") serial = { kind: "stdio" };
  else if (serialArg === "null" || serialArg === "none") serial = { kind: "null" };
  else if (serialArg.startsWith("file:") && serialArg.length > 5) {
    serial = { kind: "file", path: serialArg.slice(5) };
  } else throw new UsageError(`-serial: "${serialArg}" is not stdio, null or file:PATH`);
  if (values.initrd !== undefined && values.kernel === undefined) {
    throw new UsageError("-initrd needs -kernel");
  }
  if (values.append !== undefined && values.kernel === undefined) {
    throw new UsageError("-append needs -kernel");
  }
  let flat: CliOptions["flat"];
  if (values.device !== undefined) {
    const props = new Map(values.device.split(",").slice(1).map((p) => p.split("=", 2) as [string, string]));
    const mode = props.get("mode") ?? "real";
    const addr = props.get("addr");
    if (!values.device.startsWith("loader,") || !props.get("file") || addr === undefined) {
      throw new UsageError(
        `-device: only "loader,file=FILE,addr=ADDR[,mode=…]" is supported, got "${values.device}"`,
      );
    }
    if (!/^(0x[0-9a-f]+|\d+)$/i.test(addr)) {
      throw new UsageError(`-device loader: addr "${addr}" is not a number`);
    }
    if (mode !== "real" && mode !== "protected32" && mode !== "long64") {
      throw new UsageError(`-device loader: mode "${mode}" is not real, protected32 or long64`);
    }
    if (values.kernel !== undefined) throw new UsageError("-device loader and -kernel exclude each other");
    const path = props.get("file")!;
    flat = { path, image: readInput("-device loader", path), addr: BigInt(addr), mode };
  }
  return {
    ramSize,
    cpus,
    flat,
    kernel: values.kernel === undefined
      ? undefined
      : { path: values.kernel, image: readInput("-kernel", values.kernel) },
    append: values.append ?? "",
    initrd: values.initrd === undefined
      ? undefined
      : { path: values.initrd, image: readInput("-initrd", values.initrd) },
    bios: values.bios === undefined
      ? undefined
      : { path: values.bios, image: readInput("-bios", values.bios) },
    serial,
    dumpMtree: dump === undefined ? undefined : dump === "-f" ? "flat" : "tree",
    traceMemslots: values["trace-memslots"] ?? false,
    reboot: values.reboot ?? false,
    timings: values.timings ?? false,
  };
}

function hostMemory(): bigint | undefined {
  try {
    return BigInt(Deno.systemMemoryInfo().total);
  } catch {
    return undefined; // no --allow-sys: let the kernel decide
  }
}

function formatCall(call: MemslotCall): string {
  const h = (v: bigint) => `0x${v.toString(16)}`;
  const result = call.error
    ? ` -> ${call.error instanceof KvmError ? call.error.code : String(call.error)}`
    : " -> 0";
  return `KVM_SET_USER_MEMORY_REGION slot=${call.slot >> 16}:${call.slot & 0xffff} flags=${call.flags} gpa=${
    h(call.guestPhysAddr)
  } size=${h(call.memorySize)} host=${h(call.userspaceAddr)}${result}`;
}

/**
 * Runs the command line `args` and returns the exit status. Bad input is reported in one line on
 * stderr, never as a stack trace.
 */
export async function main(args: string[], io: CliIo = PROCESS_IO): Promise<number> {
  const entered = performance.now(); // since the isolate started: Deno start-up and module loading
  try {
    const options = parseCommandLine(args);
    if (options === "help") {
      io.out(USAGE);
      return 0;
    }
    const host = hostMemory();
    if (host !== undefined && options.ramSize > host) {
      throw new UsageError(
        `-m ${formatSize(options.ramSize)}: more than this host's ${formatSize(host)} of memory`,
      );
    }
    if (options.dumpMtree) return dump(options, io);
    return await boot(options, io, entered);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`error: ${e.message} (try --help)`);
      return 2;
    }
    if (
      e instanceof LoaderError || e instanceof KvmError || e instanceof RangeError || e instanceof TypeError
    ) {
      io.err(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

function dump(options: CliOptions, io: CliIo): number {
  const mtree = { flat: options.dumpMtree === "flat" };
  let kvm: Kvm;
  try {
    kvm = Kvm.open();
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    io.err(`note: ${e.message.split("\n")[0]}; printing the board without KVM (no memslots)`);
    // The same board PcMachine runs, without KVM (no memslots, so no KVM marks).
    using board = PcBoard.create({
      ramSize: options.ramSize,
      firmware: options.bios?.image,
      cpus: options.cpus,
    });
    io.out(board.mtree(mtree).trimEnd());
    return 0;
  }
  using _kvm = kvm;
  using machine = PcMachine.create({
    kvm,
    ramSize: options.ramSize,
    firmware: options.bios?.image,
    traceMemslots: options.traceMemslots ? (call) => io.err(formatCall(call)) : undefined,
  });
  io.out(machine.mtree(mtree).trimEnd());
  return 0;
}

async function boot(options: CliOptions, io: CliIo, entered: number): Promise<number> {
  const kernel = options.kernel ?? { path: "built-in guest", image: HELLO64 };
  let serialFile: Deno.FsFile | undefined;
  let serial: ((byte: number) => void) | undefined;
  const one = new Uint8Array(1);
  if (options.serial.kind === "stdio") {
    serial = (byte) => {
      one[0] = byte;
      io.console(one);
    };
  } else if (options.serial.kind === "file") {
    try {
      serialFile = Deno.openSync(options.serial.path, { write: true, create: true, truncate: true });
    } catch (e) {
      throw new UsageError(`-serial file:${options.serial.path}: cannot open it: ${(e as Error).message}`);
    }
    const file = serialFile;
    serial = (byte) => {
      one[0] = byte;
      file.writeSync(one);
    };
  }
  const terminal = Deno.stdin.isTerminal();
  handleKickSignal(); // the console Worker kicks the vCPU
  let channel: ConsoleChannel | undefined;
  let machine: PcMachine | undefined;
  // The console Worker starts first: its isolate boots on the other core while the VM is created.
  const worker = new Worker(new URL("./stdin_worker.ts", import.meta.url), { type: "module" });
  const ready = new Promise<void>((resolve, reject) => {
    worker.onmessage = () => resolve();
    worker.onerror = (e) => reject(new Error(`the console worker failed: ${e.message}`));
  });
  ready.catch(() => {}); // awaited below; if the machine cannot be built it is never needed
  try {
    machine = PcMachine.create({
      ramSize: options.ramSize,
      cpus: options.cpus,
      firmware: options.bios?.image,
      kernel: {
        image: kernel.image,
        // QEMU hands a Multiboot kernel "FILE ARGS" and Linux exactly -append.
        cmdline: detectFormat(kernel.image) === "multiboot"
          ? [kernel.path, options.append].filter((s) => s).join(" ")
          : options.append,
        initrd: options.initrd?.image,
      },
      boot: options.flat
        ? loadFlat(options.flat.image, {
          addr: options.flat.addr,
          mode: options.flat.mode,
          ramSize: options.ramSize,
        })
        : undefined,
      serial,
      traceMemslots: options.traceMemslots ? (call) => io.err(formatCall(call)) : undefined,
    });
    const pc = machine;
    const created = performance.now();
    channel = new ConsoleChannel();
    const shared = channel;
    // One vCPU runs on this thread: the Worker kicks it out of KVM_RUN. Several run on threads of
    // their own while this one sleeps on a doorbell: the Worker rings it.
    const init: StdinWorkerInit = pc.doorbell
      ? { channel: shared.buffer, doorbell: pc.doorbell }
      : { channel: shared.buffer, kick: vcpuKickTarget(pc.vcpu) };
    worker.postMessage(init);
    await ready; // its signal listeners are in place: the guest may start
    if (terminal) Deno.stdin.setRaw(true);
    const onKick = () => {
      pc.input(shared.takeInput());
      const command = shared.takeCommand();
      if (command !== null) {
        const result = runMonitorCommand(pc, command);
        if (result.output) {
          io.console(encoder.encode(result.output.replaceAll("\n", terminal ? "\r\n" : "\n")));
        }
        if (result.quit) {
          shared.requestQuit();
          pc.stop({ kind: "quit" });
        }
        shared.completeCommand();
      }
      if (shared.quitRequested) pc.stop({ kind: "quit" });
    };
    let outcome: RunOutcome;
    const started = performance.now();
    for (;;) {
      outcome = await pc.runAsync({ onKick });
      if (outcome.kind !== "reset" || !options.reboot) break;
      pc.reset();
    }
    const ended = performance.now();
    if (options.timings) {
      io.err(
        `timings: isolate start to main() ${entered.toFixed(1)} ms (module loading), VM creation ${
          (created - entered).toFixed(1)
        } ms, console worker ready ${(started - created).toFixed(1)} ms, guest run ${
          (ended - started).toFixed(1)
        } ms (${pc.exits} exits)`,
      );
    }
    return report(outcome, io);
  } finally {
    channel?.close(); // no kick reaches the vCPU after this, so its mapping can go
    worker.terminate();
    machine?.close();
    serialFile?.close();
    if (terminal) Deno.stdin.setRaw(false);
  }
}

function report(outcome: RunOutcome, io: CliIo): number {
  switch (outcome.kind) {
    case "exit":
      return outcome.status;
    case "reset":
    case "poweroff":
    case "quit":
      return 0;
    case "error":
      io.err(`error: ${outcome.reason}\n${outcome.registers}`);
      return 1;
  }
}
