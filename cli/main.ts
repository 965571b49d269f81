/**
 * The `deno run` front-end: QEMU-style flags, the terminal, the monitor, exit codes. The only code
 * that touches stdin/stdout/stderr and the process exit status.
 *
 * @module
 */

import type { DiskImage } from "../kvm/disk_image.ts";
import { Kvm } from "../kvm/kvm.ts";
import { KvmError } from "../kvm/kvm_error.ts";
import type { MemslotCall } from "../kvm/kvm_memory_listener.ts";
import type { Tap } from "../kvm/tap.ts";
import { handleKickSignal, vcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import type { BootPlan, CpuMode } from "../machine/loader/boot_plan.ts";
import { KERNEL_PROBE_SIZE, type KernelFormat, probeKernel } from "../machine/loader/detect.ts";
import { firmwareEntry } from "../machine/loader/firmware.ts";
import { loadFlat } from "../machine/loader/flat.ts";
import { LoaderError } from "../machine/loader/loader_error.ts";
import { FileImage } from "./file_image.ts";
import { MAX_CPUS, PcBoard } from "../machine/pc/pc_board.ts";
import { PcMachine, planBoot, x2apicIrqchipProblem } from "../machine/pc/pc_machine.ts";
import type { PcPciDeviceSpec } from "../machine/pc/pc_pci.ts";
import type { PcIrqchipMode } from "../machine/pc/pc_split_irqchip.ts";
// The host side of -drive and -netdev (disk images, taps, virtio backends) is loaded only for a run
// that has PCI devices.
import type { DiskBlockBacking, TapNetBackend } from "../machine/virtio_backends.ts";
import type { NetRxPoller } from "../machine/net_rx.ts";
import type { RunOutcome } from "../machine/vcpu_runner.ts";
import { NestedError, nestedReason, runMainNested } from "./nested_fallback.ts";
import { runMonitorCommand } from "./monitor.ts";
import { MonitorCommands, type MonitorMachine } from "./monitor_commands.ts";
import { runQmpCommand } from "./qmp_commands.ts";
import type { Json } from "./qmp_json.ts";
import { parseQmpOption, type QmpListenSpec, QmpOptionError } from "./qmp_options.ts";
// The servers and sessions of -qmp, -gdb and --web are loaded when their option is given.
import type { QmpServer } from "./qmp_server.ts";
import type { GdbServer } from "./gdb_server.ts";
import { ListenError } from "./listen_error.ts";
import { formatSize, parseSize } from "./size.ts";
import { VmConsole } from "./vm_console.ts";
import { isLoopback, parseWebOption, type WebListenSpec } from "./web_options.ts";
import type { WebServer } from "./web_server.ts";
import type { WebSession } from "./web_session.ts";
import {
  countSerial,
  createOrRestore,
  isSnapshotError,
  nestedSnapshotRefusal,
  parseSnapshotFlags,
  RESTORED_PLAN,
  SNAPSHOT_FLAGS,
  snapshotCommand,
  type SnapshotFlags,
  snapshotMissed,
  snapshotOnTimer,
  type SnapshotTimer,
  startSnapshotTimer,
} from "./snapshot_cli.ts";
import { RUNNING_FROM_BUNDLE } from "../machine/bundled_module.ts";
import { VIRTIO_NET_FEATURE_PROPERTIES, virtioNetFeatures } from "../devices/virtio/virtio_net_frame.ts";

const USAGE = `usage: deno task start [options]

Runs an x86 PC guest under KVM, QEMU style. With no -kernel it runs the built-in guest, which
prints from 64-bit long mode, reads the IOAPIC, takes a UART interrupt, loops in ring 3 and resets.

options:
  -m SIZE                 guest RAM (default 128M; a bare number is MiB, as in QEMU)
  -smp N                  number of vCPUs (default 1; cpus=N is accepted too), each on its own thread;
                          more than 255 (x2APIC ids) need -machine kernel-irqchip=split
  -kernel FILE            boot FILE as QEMU's -kernel does: Linux bzImage or ELF vmlinux (64-bit
                          entry), or Multiboot v1 (a.out kludge or ELF32)
  -append TEXT            kernel command line
  -initrd FILE            initial ramdisk (Linux kernels; Multiboot modules are not supported)
  -device loader,file=FILE,addr=ADDR[,mode=real|protected32|long64]
                          a flat binary at ADDR, as QEMU's generic loader; repeatable: each is
                          placed, and the CPU enters the one with a mode (else the first, in real
                          mode); long64 gets identity page tables and a GDT
  -drive file=FILE,format=raw,if=virtio[,readonly=on][,aio=inline|io_uring|threads][,discard=ignore|unmap]
                          a raw disk image as a virtio-blk-pci disk (/dev/vda, vdb, … in order;
                          if= defaults to virtio, there is no IDE; format= to raw). aio=inline
                          (the default): the VM thread copies the data; io_uring: through an
                          io_uring, which copies page-cache data at once and waits for storage
                          in a kernel worker; threads: io_uring's kernel workers copy it all.
                          The guest may DISCARD and WRITE_ZEROES: discard=unmap frees the
                          image's blocks for both (a sparse image stays sparse); ignore, the
                          default as in QEMU, drops discards and zeroes in place
  -drive id=ID,file=FILE,format=raw,if=none[,readonly=on][,aio=…][,discard=…]
  -device virtio-blk-pci,drive=ID[,serial=S][,id=NAME][,discard=off][,write-zeroes=off]
                          the same, in two halves, as QEMU spells it; images are locked as QEMU
                          locks them (one writer; readers share)
  -device virtio-rng-pci[,id=NAME]
                          a virtio entropy source fed by the host's getrandom (/dev/hwrng)
  -netdev tap,id=ID[,ifname=NAME][,script=no][,downscript=no]
  -device virtio-net-pci,netdev=ID[,mac=52:54:00:12:34:56][,id=NAME][,csum=off]…
                          a virtio network card on a TAP interface: an existing tap of that name
                          is attached, else one is created (needs CAP_NET_ADMIN); no scripts run.
                          QEMU's offloads are on (checksums, TSO, mergeable receive buffers),
                          and its control queue (receive filter, MAC, VLAN, announce); csum,
                          guest_csum, gso, host_tso4, host_tso6, host_ecn, host_ufo, guest_tso4,
                          guest_tso6, guest_ecn, guest_ufo, mrg_rxbuf, ctrl_vq, ctrl_rx,
                          ctrl_rx_extra, ctrl_vlan, ctrl_mac_addr, ctrl_guest_offloads and
                          guest_announce=off take each away, as in QEMU.
                          MACs default as QEMU's: 52:54:00:12:34:56 for the first card, then :57…
                          PCI devices take slots from 00:02.0, every -device in order, then the
                          -drive if=virtio disks; they are virtio 1.x only (disable-legacy=on)
  -qmp unix:PATH,server=on[,wait=off]
  -qmp tcp:[HOST]:PORT,server=on[,wait=off]
                          QEMU's Machine Protocol on a socket (repeatable: every one listens,
                          several clients each): query-status, stop, cont, system_reset,
                          system_powerdown, quit, query-cpus-fast, human-monitor-command, memsave,
                          pmemsave, query-version, query-commands, query-rx-filter,
                          announce-self, and the events STOP, RESUME,
                          RESET, SHUTDOWN, POWERDOWN; wait=on (QEMU's default) starts the guest
                          only once a client has connected. The version reported is 7.2.0, the
                          dialect spoken; "package" names this product
  -gdb tcp:[HOST]:PORT    a gdb stub (GDB's remote protocol, x86-64) on that port; an empty HOST
                          listens on every address, as QEMU's; one client at a time
  -s                      the same as -gdb tcp::1234
  -S                      start with the vCPUs held until gdb continues (or the monitor's cont)
  -machine [pc][,kernel-irqchip=on|split]   (or -M)
                          the board is QEMU's pc (i440fx); kernel-irqchip=on (the default) keeps
                          the PIC, IOAPIC and PIT in KVM, split only the LAPIC, with the PIC, IOAPIC
                          and PIT here (QEMU's microvm default; faster to start and end)
  -bios FILE              firmware for pc.bios (default: the built-in 256 KiB image)
  -serial stdio|null|file:PATH
                          where COM1 goes (default stdio)
  -nographic              accepted for QEMU compatibility (there is no display)
  -no-reboot              a guest reset ends the run with status 0 (the default)
  -reboot                 a guest reset restarts the guest instead
  -enable-kvm, -nodefaults, -no-hpet, -display none
                          accepted for QEMU compatibility (this board already behaves so)
  --dump-mtree[=-f]       print 'info mtree' (or 'info mtree -f') of the board and exit; the -f
                          may also follow as the next word
  --trace-memslots        print every KVM_SET_USER_MEMORY_REGION call on stderr
  --web [HOST:]PORT       a live page of the machine (memory map, memslots, timeline, dirty pages,
                          vCPUs, serial, pause/resume/reset) at the URL printed on stderr, with its
                          access token; HOST defaults to 127.0.0.1 (port 0: any free port). With
                          --dump-mtree it serves the board's map only, without running it (no KVM
                          needed), until Ctrl-C
  --snapshot-to DIR --snapshot-after DURATION
                          write a snapshot into DIR once the guest has run DURATION (500ms, 2s);
                          a guest that stops first, or a snapshot that fails, ends the run with
                          status 1 and says so
  --restore DIR           run the snapshot in DIR from where it stopped (-m, -smp, -drive and -device
                          may be given and must match it)
  --timings               print where the time and memory went (start-up, VM creation, guest run) on stderr
  -h, --help              this text

While the guest runs: Ctrl-A x quits, Ctrl-A c toggles the monitor (info mtree [-f], info pci, info pic,
info registers, stop, cont, system_reset, snapshot save, announce_self, quit: the same commands as
QMP's; help lists them), Ctrl-A h lists the keys. Exit status: the guest's isa-debug-exit status
((value << 1) | 1), 0 after a reset or quit, 1 when the guest crashes or a run fails, 2 for a bad
command line or input file (every input is checked before /dev/kvm is opened).`;

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

/** A bad command line or input file: printed as one line, exit status 2. */
class UsageError extends Error {}

/** An input file: where it came from and its bytes. */
export interface InputFile {
  /** The path as given. */
  path: string;
  /** The whole file. */
  image: Uint8Array;
}

/**
 * An input file kept open for the run (`-kernel`, `-initrd`, `-device loader`): the loaders read
 * its headers, the guest's memory its bytes, a chunk at a time. {@link closeInputs} closes it.
 */
export interface OpenInputFile {
  /** The path as given. */
  path: string;
  /** The open file. */
  image: FileImage;
}

/**
 * The parsed command line, with every input file checked: `-kernel`, `-initrd` and `-device loader`
 * open ({@link closeInputs} closes them), `-bios` read.
 */
export interface CliOptions {
  /** `-m`, in bytes. */
  ramSize: bigint;
  /** `-smp`. */
  cpus: number;
  /** `-kernel`, open, with the format its first bytes say. */
  kernel?: OpenInputFile & { format: Exclude<KernelFormat, "unknown"> };
  /** `-append` ("" without it). */
  append: string;
  /** `-initrd`, open. */
  initrd?: OpenInputFile;
  /**
   * Every `-device loader`, in command-line order, open. The CPU enters the one with a `mode` (at
   * most one has it), else the first, in real mode; the others are only placed.
   */
  flat: (OpenInputFile & { addr: bigint; mode?: CpuMode })[];
  /** `-bios`. */
  bios?: InputFile;
  /** `-serial`. */
  serial: { kind: "stdio" } | { kind: "null" } | { kind: "file"; path: string };
  /** `--dump-mtree` (tree) or `--dump-mtree=-f` / `--dump-mtree -f` (flat). */
  dumpMtree?: "tree" | "flat";
  /** `--trace-memslots`. */
  traceMemslots: boolean;
  /** `-reboot`. */
  reboot: boolean;
  /** `--timings`. */
  timings: boolean;
  /** The PCI devices, in QEMU's creation order (every `-device`, then the `-drive if=virtio` disks). */
  pciDevices: PcPciDeviceSpec[];
  /** The disk images those devices use, open and locked: closed by whoever ends the run. */
  images: DiskImage[];
  /** The taps of `-netdev tap`, open: closed by whoever ends the run. */
  taps: Tap[];
  /** The virtio-net cards' backends on those taps, in device order. */
  netBackends: TapNetBackend[];
  /** The `-netdev` ids, in command-line order (QMP's `query-rx-filter` tells them from cards). */
  netdevIds?: string[];
  /** Where the cards report receive-filter changes (the run points it at QMP's event). */
  rxFilterEvents?: RxFilterEvents;
  /** Every `-qmp` listener, in command-line order. */
  qmp: QmpListenSpec[];
  /** `-gdb tcp:[HOST]:PORT` (or `-s`): where the gdb stub listens. */
  gdb?: { hostname: string; port: number };
  /** `-S`: the guest starts held until `cont` or a debugger's continue. */
  startPaused: boolean;
  /** `--web [HOST:]PORT`: where the live page is served. */
  web?: WebListenSpec;
  /** `--snapshot-to`, `--snapshot-after`, `--restore` (cli/snapshot_cli.ts). */
  snapshot: SnapshotFlags;
  /**
   * `-machine kernel-irqchip=`: the irqchip in the kernel, or split; undefined when not given (in the
   * kernel for a boot; a restore takes its snapshot's).
   */
  irqchip: PcIrqchipMode | undefined;
}

/** The options this front-end takes: whether each takes a value. Spelt with one dash or two. */
const OPTIONS: Record<string, "value" | "flag"> = {
  m: "value",
  machine: "value",
  M: "value",
  smp: "value",
  device: "value",
  kernel: "value",
  append: "value",
  initrd: "value",
  bios: "value",
  serial: "value",
  nographic: "flag",
  "no-reboot": "flag",
  reboot: "flag",
  "dump-mtree": "value", // its value is optional: see normalizeArgs
  "trace-memslots": "flag",
  timings: "flag",
  help: "flag",
  drive: "value",
  netdev: "value",
  qmp: "value",
  gdb: "value",
  s: "flag",
  S: "flag",
  web: "value",
  "snapshot-to": "value",
  "snapshot-after": "value",
  restore: "value",
};
/** How messages and --help spell an option: QEMU's own with one dash, this front-end's with two. */
const DOUBLE_DASH = new Set(["dump-mtree", "trace-memslots", "timings", "help", "web", ...SNAPSHOT_FLAGS]);
/**
 * QEMU options accepted and ignored, because this board already behaves as they ask: KVM is the
 * only accelerator, there are no default devices to drop, no HPET and no display. A value, when
 * the option takes one, must be the one given here.
 */
const IGNORED: Record<string, { value?: string; why: string }> = {
  "enable-kvm": { why: "KVM is the only accelerator" },
  nodefaults: { why: "there are no default devices" },
  "no-hpet": { why: "there is no HPET" },
  display: { value: "none", why: "there is no display" },
};
/** The `-device loader` properties supported (QEMU's generic loader has more). */
const LOADER_PROPERTIES = ["file", "addr", "mode"];

function flagName(name: string): string {
  return `${DOUBLE_DASH.has(name) ? "--" : "-"}${name}`;
}

/** The parsed command line: each option's value (the last given), every value of `device`,
 * `drive`, `netdev`, `qmp` and `gdb`, and true for each flag given. */
type ParsedArgs = Record<string, string | string[] | boolean | undefined>;
/** The options that may be given more than once, each value kept. */
const REPEATED = new Set(["device", "drive", "netdev", "qmp", "gdb"]);

/**
 * Parses QEMU's command line. QEMU spells long options with one dash (`-kernel`, two work too),
 * takes the next word as a value even when it starts with a dash (`-m -1` is refused for its
 * value, not as a missing one), and `--dump-mtree` takes `-f` as the next word too. A positional
 * word, an unknown option, a flag given a value and a value missing are refused by the name typed;
 * the QEMU options in {@link IGNORED} are dropped. (No `node:util`: its `parseArgs` would load
 * Deno's Node layer, 6 MB and 10 ms more on every run, for what these lines do.)
 */
function normalizeArgs(args: string[]): ParsedArgs {
  const out: ParsedArgs = {};
  const set = (name: string, value: string) => {
    if (REPEATED.has(name)) out[name] = [...(out[name] as string[] | undefined ?? []), value];
    else out[name] = value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const match = /^(--?)([^-=][^=]*)(?:=(.*))?$/s.exec(arg);
    if (match === null) {
      throw new UsageError(`Unexpected argument '${arg}': options only (QEMU style, such as -kernel FILE)`);
    }
    const [, dashes, typed, inline] = match;
    const name = typed === "h" ? "help" : typed;
    if (name === "dump-mtree") {
      let value = inline ?? "";
      if (inline === undefined && args[i + 1] === "-f") value = args[++i];
      set(name, value);
      continue;
    }
    const ignored = Object.hasOwn(IGNORED, name) ? IGNORED[name] : undefined;
    if (ignored !== undefined) {
      const value = ignored.value === undefined ? inline : inline ?? args[++i];
      if (value !== ignored.value) {
        throw new UsageError(
          ignored.value === undefined
            ? `${dashes}${typed} takes no value`
            : `${dashes}${typed} ${value ?? ""}: not supported (only ${ignored.value}: ${ignored.why})`,
        );
      }
      continue;
    }
    const kind = Object.hasOwn(OPTIONS, name) ? OPTIONS[name] : undefined;
    if (kind === undefined) throw new UsageError(`Unknown option '${dashes}${typed}'`);
    if (kind === "flag") {
      if (inline !== undefined) throw new UsageError(`${flagName(name)} takes no value`);
      out[name] = true;
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined) throw new UsageError(`${flagName(name)} needs a value`);
    set(name, value);
  }
  return out;
}

/** How messages name the input file `path` of `flag`: `-kernel PATH`, `-device loader,file=PATH`. */
function inputLabel(flag: string, path: string): string {
  return flag === "-device loader" ? `${flag},file=${path}` : `${flag} ${path}`;
}

/** Opens an input file for `flag`; the error names the flag, the path and why. */
function openInput(flag: string, path: string): Deno.FsFile {
  try {
    const file = Deno.openSync(path, { read: true });
    if (file.statSync().isDirectory) {
      file.close();
      throw new Deno.errors.IsADirectory();
    }
    return file;
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

/** Fills `buffer` from `file`'s position; the bytes read (fewer at the end of the file). */
function readInto(file: Deno.FsFile, buffer: Uint8Array): Uint8Array {
  let done = 0;
  while (done < buffer.length) {
    const n = file.readSync(buffer.subarray(done));
    if (n === null || n === 0) break;
    done += n;
  }
  return buffer.subarray(0, done);
}

/**
 * Opens the input file `path` of `flag` for the run once `check` (given the file's size and its
 * first `probe` bytes) has not refused it. It is never read whole: the loaders read its headers and
 * the guest's memory gets the rest a chunk at a time. Closed again when refused.
 */
function openInputImage(
  flag: string,
  path: string,
  check: (size: number, head: Uint8Array) => void = () => {},
  probe = 0,
): FileImage {
  const file = openInput(flag, path);
  try {
    const size = file.statSync().size;
    check(size, readInto(file, new Uint8Array(Math.min(probe, size))));
    return new FileImage(file, size, inputLabel(flag, path));
  } catch (e) {
    file.close();
    if (e instanceof LoaderError) throw new UsageError(`${inputLabel(flag, path)}: ${e.message}`);
    throw e;
  }
}

/** Closes every input file {@link parseCommandLine} opened (idempotent). */
export function closeInputs(options: Pick<CliOptions, "kernel" | "initrd" | "flat">): void {
  options.kernel?.image.close();
  options.initrd?.image.close();
  for (const f of options.flat) f.image.close();
}

/**
 * Reads the input file `path` of `flag`, whole, once `check` (given the file's size and its first
 * `probe` bytes) has not refused it: a file that cannot be used is never read to its end.
 */
function readInput(
  flag: string,
  path: string,
  check: (size: number, head: Uint8Array) => void = () => {},
  probe = 0,
): InputFile {
  const file = openInput(flag, path);
  try {
    const size = file.statSync().size;
    check(size, readInto(file, new Uint8Array(Math.min(probe, size))));
    file.seekSync(0, Deno.SeekMode.Start);
    const image = new Uint8Array(size);
    if (readInto(file, image).length !== size) {
      throw new UsageError(`${flag}: '${path}' changed while it was read`);
    }
    return { path, image };
  } catch (e) {
    if (e instanceof LoaderError) throw new UsageError(`${inputLabel(flag, path)}: ${e.message}`);
    throw e;
  } finally {
    file.close();
  }
}

/** Refuses an input file larger than the guest's RAM, before it is read. */
function fitsInRam(flag: string, path: string, ramSize: bigint): (size: number) => void {
  return (size) => {
    if (BigInt(size) > ramSize) {
      throw new UsageError(
        `${inputLabel(flag, path)}: ${formatSize(BigInt(size))} does not fit in ${
          formatSize(ramSize)
        } of RAM`,
      );
    }
  };
}

/** One `-device` option: a generic loader, its properties checked. */
function parseLoader(text: string): { path: string; addr: bigint; mode?: CpuMode } {
  const [driver, ...rest] = text.split(",");
  if (driver !== "loader") {
    throw new UsageError(`-device: only "loader,file=FILE,addr=ADDR[,mode=…]" is supported, got "${text}"`);
  }
  const props = new Map<string, string>();
  for (const prop of rest) {
    const eq = prop.indexOf("=");
    const key = eq < 0 ? prop : prop.slice(0, eq);
    if (!LOADER_PROPERTIES.includes(key)) {
      throw new UsageError(
        `-device loader: property '${key}' is not supported (only ${LOADER_PROPERTIES.join(", ")})`,
      );
    }
    if (eq < 0) throw new UsageError(`-device loader: property '${key}' needs a value (${key}=…)`);
    if (props.has(key)) throw new UsageError(`-device loader: property '${key}' is given twice`);
    props.set(key, prop.slice(eq + 1));
  }
  const path = props.get("file");
  const addr = props.get("addr");
  const mode = props.get("mode");
  if (!path || addr === undefined) {
    throw new UsageError(`-device: only "loader,file=FILE,addr=ADDR[,mode=…]" is supported, got "${text}"`);
  }
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(addr)) {
    throw new UsageError(`-device loader: addr "${addr}" is not a number`);
  }
  if (mode !== undefined && mode !== "real" && mode !== "protected32" && mode !== "long64") {
    throw new UsageError(`-device loader: mode "${mode}" is not real, protected32 or long64`);
  }
  return { path, addr: BigInt(addr), ...(mode === undefined ? {} : { mode }) };
}

/**
 * Parses `args` and reads every input file, checking each before it is read whole; throws a
 * {@link UsageError} naming the bad flag, value or file.
 */
export async function parseCommandLine(args: string[]): Promise<CliOptions | "help"> {
  const values = normalizeArgs(args) as
    & {
      [
        name in
          | "m"
          | "machine"
          | "M"
          | "smp"
          | "kernel"
          | "append"
          | "initrd"
          | "bios"
          | "serial"
          | "dump-mtree"
          | "web"
      ]?: string;
    }
    & { [name in "device" | "drive" | "netdev" | "qmp" | "gdb"]?: string[] }
    & {
      [name in "nographic" | "no-reboot" | "reboot" | "trace-memslots" | "timings" | "help" | "s" | "S"]?:
        boolean;
    }
    & { [name in "snapshot-to" | "snapshot-after" | "restore"]?: string };
  if (values.help) return "help";
  let ramSize: bigint;
  try {
    ramSize = parseSize(values.m ?? "128M");
  } catch (e) {
    throw new UsageError(`-m: ${(e as Error).message}`);
  }
  if (ramSize < 2n << 20n) throw new UsageError(`-m ${values.m}: a PC needs at least 2 MiB of RAM`);
  const host = hostMemory();
  if (host !== undefined && ramSize > host) {
    throw new UsageError(`-m ${formatSize(ramSize)}: more than this host's ${formatSize(host)} of memory`);
  }
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
  const qmp = (values.qmp ?? []).map((text) => {
    try {
      return parseQmpOption(text);
    } catch (e) {
      if (e instanceof QmpOptionError) throw new UsageError(`-qmp ${text}: ${e.message}`);
      throw e;
    }
  });
  let web: WebListenSpec | undefined;
  if (values.web !== undefined) {
    try {
      web = parseWebOption(values.web);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const gdb = parseGdb([...(values.s ? ["tcp::1234"] : []), ...(values.gdb ?? [])]);
  let snapshot: SnapshotFlags;
  try {
    snapshot = parseSnapshotFlags(values, { ramSize, cpus });
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw e;
  }
  const deviceArgs = values.device ?? [];
  const loaders = deviceArgs.filter((d) => d.split(",")[0] === "loader").map(parseLoader);
  const pciArgs = deviceArgs.filter((d) => d.split(",")[0] !== "loader").map(parsePciDevice);
  const irqchip = parseMachine(values.machine ?? values.M);
  const irqchipProblem = x2apicIrqchipProblem(cpus, irqchip ?? "kernel");
  if (irqchipProblem) throw new UsageError(`-smp ${cpus}: ${irqchipProblem}`);
  const drives = (values.drive ?? []).map(parseDrive);
  const netdevs = (values.netdev ?? []).map(parseNetdev);
  const pciPlan = planPciDevices(drives, pciArgs, netdevs);
  if (loaders.length > 0 && values.kernel !== undefined) {
    throw new UsageError("-device loader and -kernel exclude each other");
  }
  if (loaders.filter((l) => l.mode !== undefined).length > 1) {
    throw new UsageError(
      "-device loader: mode= is given on more than one loader; only the one entered has it",
    );
  }
  // Every option is valid: now the files, each refused (by its size and first bytes) before it is
  // used; -kernel, -initrd and -device loader stay open for the run, every one closed again if
  // anything after it is refused.
  const opened: Pick<CliOptions, "kernel" | "initrd" | "flat"> = { flat: [] };
  let bios: InputFile | undefined;
  let devices: Awaited<ReturnType<typeof openPciDevices>>;
  try {
    if (values.kernel !== undefined) {
      const path = values.kernel;
      let format: Exclude<KernelFormat, "unknown"> = "multiboot";
      const image = openInputImage(
        "-kernel",
        path,
        (_size, head) => void (format = probeKernel(head)),
        KERNEL_PROBE_SIZE,
      );
      opened.kernel = { path, image, format };
    }
    if (values.initrd !== undefined) {
      const path = values.initrd;
      opened.initrd = { path, image: openInputImage("-initrd", path, fitsInRam("-initrd", path, ramSize)) };
    }
    for (const l of loaders) {
      const image = openInputImage("-device loader", l.path, fitsInRam("-device loader", l.path, ramSize));
      opened.flat.push({ ...l, image });
    }
    bios = values.bios === undefined
      ? undefined
      : readInput("-bios", values.bios, (size) => void firmwareEntry(new Uint8Array(size)));
    // The disk images and taps last: opened, every one closed again if any is refused.
    devices = await openPciDevices(pciPlan);
  } catch (e) {
    closeInputs(opened);
    throw e;
  }
  const { pciDevices, images, taps, netBackends, rxFilterEvents } = devices;
  const { kernel, initrd, flat } = opened;
  return {
    ramSize,
    cpus,
    flat,
    kernel,
    append: values.append ?? "",
    initrd,
    bios,
    serial,
    dumpMtree: dump === undefined ? undefined : dump === "-f" ? "flat" : "tree",
    traceMemslots: values["trace-memslots"] ?? false,
    reboot: values.reboot ?? false,
    timings: values.timings ?? false,
    pciDevices,
    images,
    taps,
    netBackends,
    netdevIds: netdevs.map((n) => n.id),
    rxFilterEvents,
    qmp,
    ...(gdb ? { gdb } : {}),
    startPaused: values.S ?? false,
    ...(web ? { web } : {}),
    snapshot,
    irqchip,
  };
}

/**
 * `-machine [type=]pc[,kernel-irqchip=on|split]` (QEMU's `-M`): the one board is the i440fx `pc`;
 * the irqchip in the kernel (`on`, the default) or split; undefined without the option.
 */
function parseMachine(text: string | undefined): PcIrqchipMode | undefined {
  if (text === undefined) return undefined;
  let irqchip: PcIrqchipMode = "kernel";
  for (const [i, part] of text.split(",").entries()) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? (i === 0 ? "type" : part) : part.slice(0, eq);
    const value = eq < 0 ? (i === 0 ? part : undefined) : part.slice(eq + 1);
    if (key === "type") {
      if (!["pc", "pc-i440fx-7.2"].includes(value ?? "")) {
        throw new UsageError(`-machine ${text}: the board is QEMU's pc (i440fx), not "${value}"`);
      }
    } else if (key === "kernel-irqchip" || key === "kernel_irqchip") {
      if (value === "on" || value === "true") irqchip = "kernel";
      else if (value === "split") irqchip = "split";
      else {
        throw new UsageError(
          `-machine ${text}: kernel-irqchip takes on or split (off, a LAPIC in userspace, is not supported)`,
        );
      }
    } else if (key === "accel" && value === "kvm") {
      // KVM is the only accelerator
    } else {
      throw new UsageError(`-machine ${text}: unknown property "${key}" (supported: pc, kernel-irqchip)`);
    }
  }
  return irqchip;
}

/** QEMU's default gdb port, which `-s` means. */
const GDB_DEFAULT_PORT = 1234;

/**
 * The gdb stub's address from every `-gdb` (and `-s`, which is `-gdb tcp::1234`): QEMU's
 * `tcp:[HOST]:PORT` (an empty host listens on every address, as QEMU's) or `none`; one stub at most.
 */
function parseGdb(specs: string[]): { hostname: string; port: number } | undefined {
  if (specs.length > 1) {
    throw new UsageError(
      `-gdb: one gdb stub at a time, but ${specs.length} were asked for (${
        specs.join(", ")
      }; -s is tcp::${GDB_DEFAULT_PORT})`,
    );
  }
  const spec = specs[0];
  if (spec === undefined || spec === "none") return undefined;
  const match = /^tcp:([^:,]*):(\d+)$/.exec(spec);
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535) {
    throw new UsageError(`-gdb ${spec}: expected tcp:[HOST]:PORT with a port from 1 to 65535, or none`);
  }
  return { hostname: match[1] === "" ? "0.0.0.0" : match[1], port };
}

/** One `-drive`, its properties checked. */
interface DriveArg {
  /** The text as typed, for messages. */
  text: string;
  id?: string;
  file: string;
  interface: "virtio" | "none";
  readOnly: boolean;
  /** `aio=` (default inline). */
  aio: DriveAio;
  /** `discard=unmap` (or `on`): a DISCARD frees the image's blocks; `ignore` (`off`, the default) drops it. */
  unmap: boolean;
}

/**
 * How a disk's reads and writes are done (`-drive aio=`): `inline`, the default, has the thread that
 * serves the queue copy the data itself; `io_uring` (QEMU's) submits each transfer to an io_uring and
 * lets the kernel copy page-cache data at once and hand the rest to a kernel worker; `threads`
 * (QEMU's default, its thread pool) has io_uring's kernel workers copy every transfer
 * (kvm/io_ring.ts). Both need a VM thread that waits in poll(2) between exits (`ioeventfd=on`, or
 * several vCPUs); with one vCPU and no ioeventfd every transfer is inline.
 */
type DriveAio = "inline" | "io_uring" | "threads";
const DRIVE_AIO: readonly DriveAio[] = ["inline", "io_uring", "threads"];

/** The `-drive` properties supported (QEMU's have many more). */
const DRIVE_PROPERTIES = ["file", "format", "if", "id", "readonly", "aio", "discard"];

/** Splits `a=b,c=d` into a map, refusing a property twice or without a value. */
function properties(flag: string, parts: string[], known: string[], where: string): Map<string, string> {
  const props = new Map<string, string>();
  for (const prop of parts) {
    const eq = prop.indexOf("=");
    const key = eq < 0 ? prop : prop.slice(0, eq);
    if (!known.includes(key)) {
      throw new UsageError(
        `${flag}: ${where}: property '${key}' is not supported (only ${known.join(", ")})`,
      );
    }
    if (eq < 0) throw new UsageError(`${flag}: property '${key}' needs a value (${key}=…)`);
    if (props.has(key)) throw new UsageError(`${flag}: property '${key}' is given twice`);
    props.set(key, prop.slice(eq + 1));
  }
  return props;
}

/**
 * A virtio device's `ioeventfd` when not given: on, as QEMU's. Then the queue is served on the VM
 * thread while the vCPU runs on a thread of its own. bench:io in the one-vCPU nested KVM VM measured
 * both: on, TCP guest → host ran 3 times as fast (the vCPU queues packets while the VM thread sends
 * them); off, queue-depth-1 disk reads were faster (no thread switch per request). `ioeventfd=off`
 * chooses the latter per device.
 */
function ioeventfdDefault(): boolean {
  return true;
}

/** QEMU's on/off booleans. */
function onOff(flag: string, key: string, value: string | undefined): boolean {
  if (value === undefined || value === "off" || value === "false") return false;
  if (value === "on" || value === "true") return true;
  throw new UsageError(`${flag}: ${key}=${value}: expected on or off`);
}

function parseDrive(text: string): DriveArg {
  const flag = `-drive ${text}`;
  const props = properties(flag, text.split(","), DRIVE_PROPERTIES, "-drive");
  const file = props.get("file");
  if (!file) throw new UsageError(`${flag}: needs file=FILE`);
  const format = props.get("format") ?? "raw";
  if (format !== "raw") throw new UsageError(`${flag}: format '${format}' is not supported (only raw)`);
  const iface = props.get("if") ?? "virtio";
  if (iface !== "virtio" && iface !== "none") {
    throw new UsageError(
      `${flag}: if=${iface} is not supported (only virtio, or none with -device virtio-blk-pci)`,
    );
  }
  const id = props.get("id");
  if (id !== undefined && !/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id)) {
    throw new UsageError(`${flag}: id '${id}' is not a letter followed by letters, digits, '-', '.', '_'`);
  }
  if (iface === "none" && id === undefined) throw new UsageError(`${flag}: if=none needs id=ID for -device`);
  const aio = props.get("aio");
  if (aio !== undefined && !DRIVE_AIO.includes(aio as DriveAio)) {
    throw new UsageError(`${flag}: aio=${aio} is not supported (only ${DRIVE_AIO.join(", ")})`);
  }
  const discard = props.get("discard") ?? "ignore";
  if (!["ignore", "off", "unmap", "on"].includes(discard)) {
    throw new UsageError(`${flag}: Invalid discard option: '${discard}' (ignore or unmap)`);
  }
  return {
    text,
    file,
    id,
    interface: iface,
    readOnly: onOff(flag, "readonly", props.get("readonly")),
    aio: (aio ?? "inline") as DriveAio,
    unmap: discard === "unmap" || discard === "on",
  };
}

/** One `-device` of a PCI type, its properties checked. */
type PciDeviceArg =
  | {
    text: string;
    type: "virtio-blk-pci";
    drive: string;
    serial?: string;
    id?: string;
    ioeventfd: boolean;
    /** QEMU's `discard` and `write-zeroes` properties (on by default). */
    discard: boolean;
    writeZeroes: boolean;
  }
  | { text: string; type: "virtio-rng-pci"; id?: string; ioeventfd: boolean }
  | {
    text: string;
    type: "virtio-net-pci";
    netdev: string;
    mac?: number[];
    id?: string;
    ioeventfd: boolean;
    /** The offered features, QEMU's defaults less the properties set to off. */
    features: bigint;
  };

const PCI_DEVICE_PROPERTIES: Record<string, string[]> = {
  "virtio-blk-pci": ["drive", "serial", "id", "disable-legacy", "ioeventfd", "discard", "write-zeroes"],
  "virtio-rng-pci": ["id", "disable-legacy", "ioeventfd"],
  "virtio-net-pci": [
    "netdev",
    "mac",
    "id",
    "disable-legacy",
    "ioeventfd",
    ...Object.keys(VIRTIO_NET_FEATURE_PROPERTIES),
  ],
};

/** One `-netdev`, its properties checked. */
interface NetdevArg {
  /** The text as typed, for messages. */
  text: string;
  id: string;
  /** `ifname=`: the kernel picks `tapN` without it. */
  ifname?: string;
}

/** The `-netdev tap` properties supported (QEMU's have many more). */
const NETDEV_TAP_PROPERTIES = ["id", "ifname", "script", "downscript"];

/** An id as QEMU takes it: a letter, then letters, digits, '-', '.', '_'. */
const ID_PATTERN = /^[A-Za-z][A-Za-z0-9_.-]*$/;

function parseNetdev(text: string): NetdevArg {
  const flag = `-netdev ${text}`;
  const [type, ...rest] = text.split(",");
  if (type !== "tap") throw new UsageError(`${flag}: netdev type '${type}' is not supported (only tap)`);
  const props = properties(flag, rest, NETDEV_TAP_PROPERTIES, "tap");
  const id = props.get("id");
  if (id === undefined) throw new UsageError(`${flag}: Parameter 'id' is missing`);
  if (!ID_PATTERN.test(id)) {
    throw new UsageError(`${flag}: id '${id}' is not a letter followed by letters, digits, '-', '.', '_'`);
  }
  for (const key of ["script", "downscript"]) {
    const value = props.get(key);
    if (value !== undefined && value !== "no") {
      throw new UsageError(`${flag}: ${key}=${value}: only ${key}=no is supported (no script is ever run)`);
    }
  }
  const ifname = props.get("ifname");
  if (
    ifname !== undefined &&
    (ifname === "" || new TextEncoder().encode(ifname).length > 15 || /[\/\s:]/.test(ifname))
  ) {
    throw new UsageError(
      `${flag}: ifname '${ifname}' is not an interface name (1 to 15 bytes, no '/', ':' or space)`,
    );
  }
  return { text, id, ifname };
}

/** A MAC address as QEMU takes it (`52:54:00:12:34:56`), unicast. */
function parseMac(flag: string, text: string): number[] {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) {
    throw new UsageError(`${flag}: Property 'virtio-net-pci.mac' doesn't take value '${text}'`);
  }
  const mac = text.split(":").map((b) => parseInt(b, 16));
  if (mac[0] & 1) throw new UsageError(`${flag}: mac=${text} is a multicast address (the first byte is odd)`);
  return mac;
}

function parsePciDevice(text: string): PciDeviceArg {
  const [type, ...rest] = text.split(",");
  const flag = `-device ${text}`;
  const known = PCI_DEVICE_PROPERTIES[type];
  if (known === undefined) {
    throw new UsageError(
      `-device ${type}: not supported (only virtio-blk-pci, virtio-rng-pci, virtio-net-pci and loader)`,
    );
  }
  const props = properties(flag, rest, known, type);
  // Only the modern interface exists here; QEMU's own default for pc is transitional.
  if (props.has("disable-legacy") && props.get("disable-legacy") !== "on") {
    throw new UsageError(`${flag}: only disable-legacy=on is supported (the device is virtio 1.x only)`);
  }
  const id = props.get("id");
  const ioeventfd = props.has("ioeventfd")
    ? onOff(flag, "ioeventfd", props.get("ioeventfd"))
    : ioeventfdDefault();
  if (type === "virtio-rng-pci") return { text, type: "virtio-rng-pci", id, ioeventfd };
  if (type === "virtio-net-pci") {
    const netdev = props.get("netdev");
    if (netdev === undefined) throw new UsageError(`${flag}: netdev=ID is required`);
    const macText = props.get("mac");
    const off = Object.keys(VIRTIO_NET_FEATURE_PROPERTIES).filter((name) =>
      props.has(name) && !onOff(flag, name, props.get(name))
    );
    return {
      text,
      type,
      netdev,
      mac: macText === undefined ? undefined : parseMac(flag, macText),
      id,
      ioeventfd,
      features: virtioNetFeatures(off),
    };
  }
  const drive = props.get("drive");
  if (drive === undefined) throw new UsageError(`${flag}: drive=ID is required`);
  const serial = props.get("serial");
  if (serial !== undefined && new TextEncoder().encode(serial).length > 20) {
    throw new UsageError(`${flag}: serial '${serial}' is longer than 20 bytes`);
  }
  const on = (name: string) => !props.has(name) || onOff(flag, name, props.get(name));
  return {
    text,
    type: "virtio-blk-pci",
    drive,
    serial,
    id,
    ioeventfd,
    discard: on("discard"),
    writeZeroes: on("write-zeroes"),
  };
}

/** A PCI device to create, with the drive it needs opened, in slot order. */
type PciPlan = (
  | { kind: "rng"; id?: string; ioeventfd: boolean }
  | {
    kind: "blk";
    drive: DriveArg;
    serial?: string;
    id?: string;
    ioeventfd: boolean;
    discard: boolean;
    writeZeroes: boolean;
  }
  | { kind: "net"; netdev: NetdevArg; mac: number[]; id?: string; ioeventfd: boolean; features: bigint }
)[];

/** QEMU's default MACs: 52:54:00:12:34:56 for the first card without one, then :57, :58, … */
const DEFAULT_MAC_PREFIX = [0x52, 0x54, 0x00, 0x12, 0x34];
const DEFAULT_MAC_FIRST = 0x56;

/**
 * QEMU's creation order: every `-device` as typed, then the `-drive if=virtio` disks. Refuses a
 * duplicate drive or device id, a `-device` naming a drive that does not exist, or a drive used twice.
 */
function planPciDevices(drives: DriveArg[], devices: PciDeviceArg[], netdevs: NetdevArg[] = []): PciPlan {
  const netdevById = new Map<string, NetdevArg>();
  for (const n of netdevs) {
    if (netdevById.has(n.id)) throw new UsageError(`-netdev ${n.text}: Duplicate ID '${n.id}' for netdev`);
    netdevById.set(n.id, n);
  }
  // QEMU's qemu_macaddr_default_if_unset: the first index that no card uses yet, given MACs included.
  const macsTaken = new Set<number>();
  for (const d of devices) {
    if (d.type === "virtio-net-pci" && d.mac && DEFAULT_MAC_PREFIX.every((b, i) => d.mac![i] === b)) {
      macsTaken.add(d.mac[5]);
    }
  }
  let nextMac = DEFAULT_MAC_FIRST;
  const defaultMac = () => {
    while (macsTaken.has(nextMac)) nextMac++;
    if (nextMac > 0xff) throw new UsageError("-device virtio-net-pci: no default MAC address left");
    macsTaken.add(nextMac);
    return [...DEFAULT_MAC_PREFIX, nextMac];
  };
  const netdevsUsed = new Set<string>();
  const byId = new Map<string, DriveArg>();
  for (const d of drives) {
    if (d.id === undefined) continue;
    if (byId.has(d.id)) throw new UsageError(`-drive ${d.text}: Duplicate ID '${d.id}' for drive`);
    byId.set(d.id, d);
  }
  const deviceIds = new Set<string>();
  const used = new Set<DriveArg>();
  const plan: PciPlan = [];
  for (const d of devices) {
    if (d.id !== undefined) {
      if (deviceIds.has(d.id)) throw new UsageError(`-device ${d.text}: Duplicate ID '${d.id}' for device`);
      deviceIds.add(d.id);
    }
    if (d.type === "virtio-rng-pci") {
      plan.push({ kind: "rng", id: d.id, ioeventfd: d.ioeventfd });
      continue;
    }
    if (d.type === "virtio-net-pci") {
      const netdev = netdevById.get(d.netdev);
      if (netdev === undefined) {
        throw new UsageError(
          `-device ${d.text}: Property 'virtio-net-pci.netdev' can't find value '${d.netdev}'`,
        );
      }
      if (netdevsUsed.has(d.netdev)) {
        throw new UsageError(
          `-device ${d.text}: Property 'virtio-net-pci.netdev' can't take value '${d.netdev}', it's in use`,
        );
      }
      netdevsUsed.add(d.netdev);
      plan.push({
        kind: "net",
        netdev,
        mac: d.mac ?? defaultMac(),
        id: d.id,
        ioeventfd: d.ioeventfd,
        features: d.features,
      });
      continue;
    }
    const drive = byId.get(d.drive);
    if (drive === undefined) {
      throw new UsageError(
        `-device ${d.text}: Property 'virtio-blk-pci.drive' can't find value '${d.drive}'`,
      );
    }
    if (drive.interface !== "none" || used.has(drive)) {
      throw new UsageError(`-device ${d.text}: Drive '${d.drive}' is already in use by another device`);
    }
    used.add(drive);
    plan.push({
      kind: "blk",
      drive,
      serial: d.serial,
      id: d.id,
      ioeventfd: d.ioeventfd,
      discard: d.discard,
      writeZeroes: d.writeZeroes,
    });
  }
  for (const d of drives) {
    if (d.interface === "virtio") {
      plan.push({ kind: "blk", drive: d, ioeventfd: ioeventfdDefault(), discard: true, writeZeroes: true });
    }
  }
  return plan;
}

/**
 * Opens and locks every drive of `plan` (each once) and opens every tap; on any refusal, closes
 * what it opened.
 */
async function openPciDevices(
  plan: PciPlan,
): Promise<
  {
    pciDevices: PcPciDeviceSpec[];
    images: DiskImage[];
    taps: Tap[];
    netBackends: TapNetBackend[];
    rxFilterEvents: RxFilterEvents;
  }
> {
  const images: DiskImage[] = [];
  const taps: Tap[] = [];
  const netBackends: TapNetBackend[] = [];
  const rxFilterEvents: RxFilterEvents = {};
  if (plan.length === 0) return { pciDevices: [], images, taps, netBackends, rxFilterEvents };
  const { DiskBlockBacking, hostEntropy, TapNetBackend } = await import("../machine/virtio_backends.ts");
  const { DiskImage } = await import("../kvm/disk_image.ts");
  const { Tap } = await import("../kvm/tap.ts");
  try {
    const pciDevices = plan.map((p): PcPciDeviceSpec => {
      if (p.kind === "rng") {
        return { type: "virtio-rng-pci", id: p.id, entropy: hostEntropy, ioeventfd: p.ioeventfd };
      }
      if (p.kind === "net") {
        const tap = openTap(Tap, p.netdev);
        taps.push(tap);
        const backend = new TapNetBackend(tap);
        const card = netBackends.push(backend) - 1;
        return {
          type: "virtio-net-pci",
          id: p.id,
          mac: p.mac,
          backend,
          ioeventfd: p.ioeventfd,
          features: p.features,
          onRxFilterChanged: () => rxFilterEvents.notify?.(card),
        };
      }
      const image = openImage(DiskImage, p.drive);
      images.push(image);
      const backing = new DiskBlockBacking(image, { unmap: p.drive.unmap });
      const aio = p.drive.aio;
      return {
        type: "virtio-blk-pci",
        id: p.id,
        serial: p.serial,
        backing,
        ioeventfd: p.ioeventfd,
        discard: p.discard,
        writeZeroes: p.writeZeroes,
        ...(aio === "inline" ? {} : { offload: () => offloadDisk(backing, p.drive, aio) }),
      };
    });
    return { pciDevices, images, taps, netBackends, rxFilterEvents };
  } catch (e) {
    for (const image of images) image.close();
    for (const tap of taps) tap.close();
    throw e;
  }
}

/** Puts a disk's transfers on an io_uring (`aio=io_uring` or `threads`); a kernel's refusal is one line. */
function offloadDisk(
  backing: DiskBlockBacking,
  drive: DriveArg,
  aio: "io_uring" | "threads",
): ReturnType<DiskBlockBacking["offload"]> {
  try {
    return backing.offload({ workers: aio === "threads" });
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    const why = e.message.split("\n").map((l) => l.trim()).filter((l) => l).join("; ");
    throw new UsageError(`-drive ${drive.text}: aio=${aio} needs io_uring: ${why}`);
  }
}

/** One tap, opened as `-netdev tap` asks; its refusal names the tap and says why, in one line. */
function openTap(tapClass: typeof Tap, netdev: NetdevArg): Tap {
  try {
    return tapClass.open({ name: netdev.ifname });
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    const why = e.message.split("\n").map((l) => l.trim()).filter((l) => l).join("; ");
    throw new UsageError(
      `-netdev ${netdev.text}: could not open tap "${netdev.ifname ?? "tap%d"}": ${why}`,
    );
  }
}

/** One image, opened as QEMU opens it for `-drive`, its refusal in QEMU's words. */
function openImage(diskImage: typeof DiskImage, drive: DriveArg): DiskImage {
  const flag = `-drive ${drive.text}`;
  try {
    return diskImage.open(drive.file, { readOnly: drive.readOnly });
  } catch (e) {
    if (e instanceof RangeError) {
      throw new UsageError(`${flag}: '${drive.file}' is not a whole number of 512-byte sectors`);
    }
    if (!(e instanceof KvmError)) throw e;
    if (e.op.startsWith("lock ") && (e.code === "EAGAIN" || e.code === "EACCES")) {
      const permission = /"([a-z ]+)" not shared|has "([a-z ]+)"/.exec(e.message);
      const name = permission?.[1] ?? permission?.[2] ?? "write";
      throw new UsageError(
        `${flag}: Failed to get "${name}" lock: is another process using the image [${drive.file}]?`,
      );
    }
    const why = e.code === "ENOENT"
      ? "No such file or directory"
      : e.code === "EACCES" || e.code === "EPERM"
      ? "Permission denied"
      : e.code === "EISDIR"
      ? "Is a directory"
      : e.code === "EROFS"
      ? "Read-only file system (use readonly=on)"
      : e.message;
    throw new UsageError(`${flag}: Could not open '${drive.file}': ${why}`);
  }
}

/**
 * The boot plan of `options`, made before KVM is opened so that a file no loader takes is refused
 * first, naming the file: every `-device loader` (entered at the one with a mode, else the first),
 * or the `-kernel` with its command line and initrd (QEMU hands a Multiboot kernel "FILE ARGS"
 * and Linux exactly `-append`), or the built-in guest. The e820 map is the board's (`pcE820`),
 * as `PcMachine.create` computes it. Throws a {@link UsageError} naming the file.
 */
export async function bootPlanOf(options: CliOptions): Promise<BootPlan> {
  if (options.flat.length > 0) {
    const entered = options.flat.find((f) => f.mode !== undefined) ?? options.flat[0];
    const flag = inputLabel("-device loader", entered.path);
    try {
      return loadFlat(entered.image, {
        addr: entered.addr,
        mode: entered.mode ?? "real",
        ramSize: options.ramSize,
        data: options.flat.filter((f) => f !== entered).map((f) => ({
          addr: f.addr,
          data: f.image,
          what: f.path,
        })),
      });
    } catch (e) {
      if (e instanceof LoaderError) throw new UsageError(`${flag}: ${e.message}`);
      throw e;
    }
  }
  // The built-in guest is loaded only when it runs (it is the only image this command may run).
  const kernel = options.kernel ??
    {
      path: "built-in guest",
      image: (await import("../machine/guests/hello64.ts")).HELLO64,
      format: "multiboot",
    };
  try {
    // Planned against the e820 map the board will report, as PcMachine.create plans it.
    return await planBoot({
      ramSize: options.ramSize,
      firmware: options.bios?.image,
      cpus: options.cpus,
      irqchip: options.irqchip, // APIC ids above 254 need the split one
      pciDevices: options.pciDevices, // the MP table lists their interrupts
      kernel: {
        image: kernel.image,
        cmdline: kernel.format === "multiboot"
          ? [kernel.path, options.append].filter((s) => s).join(" ")
          : options.append,
        initrd: options.initrd?.image,
      },
    });
  } catch (e) {
    // A file that changed since it was opened says which one itself.
    if (e instanceof LoaderError && e.code !== "CHANGED") {
      const initrd = options.initrd === undefined ? "" : ` -initrd ${options.initrd.path}`;
      throw new UsageError(`-kernel ${kernel.path}${initrd}: ${e.message}`);
    }
    throw e;
  }
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
    const options = await parseCommandLine(args);
    if (options === "help") {
      io.out(USAGE);
      return 0;
    }
    try {
      // the last input check: nothing is opened or written before it (a restore's plan is in its snapshot)
      const plan = options.snapshot.restore ? RESTORED_PLAN : await bootPlanOf(options);
      if (options.dumpMtree && options.web) return await serveMap(options, options.web, io);
      if (options.dumpMtree) return await dump(options, io);
      const nested = nestedReason(
        options.kernel !== undefined && options.kernel.format !== "multiboot",
      );
      if (nested !== undefined) {
        if (options.qmp.length > 0 || options.gdb || options.web) {
          // Its sockets would be inside the nested VM, out of every client's reach.
          const flag = options.qmp.length > 0 ? "-qmp" : options.gdb ? "-gdb" : "--web";
          throw new NestedError(
            `${flag} needs KVM on this host (${nested}); the nested VM's sockets could not be reached`,
          );
        }
        const refusal = nestedSnapshotRefusal(options.snapshot, nested);
        if (refusal) throw new NestedError(refusal);
        // The run inside opens and locks the images (and its own taps) itself.
        for (const image of options.images) image.close();
        for (const tap of options.taps) tap.close();
        return await runMainNested(args, nested, io.err);
      }
      let qmp: QmpServer | undefined;
      let gdb: GdbServer | undefined;
      let web: WebServer | undefined;
      try {
        if (options.web) web = await startWeb(options.web, io);
        if (options.qmp.length > 0) {
          const { QmpServer } = await import("./qmp_server.ts");
          qmp = await QmpServer.start(options.qmp);
          // QEMU's default, wait=on: the guest starts once a client is there.
          if (options.qmp.some((spec) => spec.wait)) await qmp.connected;
        }
        if (options.gdb) {
          const { GdbServer } = await import("./gdb_server.ts");
          gdb = await GdbServer.start(options.gdb.hostname, options.gdb.port);
        }
        // Deno's own and the modules' memory, read only when it is printed.
        const rss = options.timings ? Deno.memoryUsage().rss : 0;
        return await boot(options, plan, io, { ms: entered, rss }, { qmp, gdb, web });
      } finally {
        await web?.close();
        await gdb?.close(); // after its last reply (the guest's exit) went out
        await qmp?.close(); // every socket closed and its file removed, on every path
      }
    } finally {
      for (const image of options.images) image.close();
      for (const tap of options.taps) tap.close();
      closeInputs(options);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`error: ${e.message} (try --help)`);
      return 2;
    }
    if (e instanceof ListenError) {
      io.err(`error: ${e.message}`);
      return 1;
    }
    if (
      e instanceof LoaderError || e instanceof KvmError || e instanceof RangeError ||
      e instanceof TypeError ||
      e instanceof NestedError || isSnapshotError(e)
    ) {
      io.err(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

/** Starts the `--web` server and prints its URL (and a warning when it is reachable from elsewhere). */
async function startWeb(spec: WebListenSpec, io: CliIo): Promise<WebServer> {
  const { WebServer } = await import("./web_server.ts");
  const server = await WebServer.start(spec);
  if (!isLoopback(spec.hostname)) {
    io.err(
      `warning: --web ${spec.hostname}: the page is reachable from other machines; anyone with the URL controls the guest`,
    );
  }
  io.err(`web: ${server.url}`);
  return server;
}

/**
 * `--dump-mtree --web`: the board (without KVM: no memslots) served for its map only, until
 * SIGINT or SIGTERM.
 */
async function serveMap(options: CliOptions, spec: WebListenSpec, io: CliIo): Promise<number> {
  using board = await PcBoard.create({
    ramSize: options.ramSize,
    firmware: options.bios?.image,
    cpus: options.cpus,
    pciDevices: options.pciDevices,
    irqchip: options.irqchip,
  });
  const web = await startWeb(spec, io);
  let stop!: () => void;
  const interrupted = new Promise<void>((resolve) => stop = resolve);
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  try {
    io.err("web: serving the board's map only (no vCPU runs); Ctrl-C ends");
    const { serveMapOnly } = await import("./web_machine.ts");
    await serveMapOnly(web, [board.memory, board.cpuMemory, board.io], interrupted);
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
    await web.close();
  }
  return 0;
}

async function dump(options: CliOptions, io: CliIo): Promise<number> {
  const mtree = { flat: options.dumpMtree === "flat" };
  let kvm: Kvm;
  try {
    kvm = Kvm.open();
  } catch (e) {
    if (!(e instanceof KvmError)) throw e;
    io.err(`note: ${e.message.split("\n")[0]}; printing the board without KVM (no memslots)`);
    // The same board PcMachine runs, without KVM (no memslots, so no KVM marks).
    using board = await PcBoard.create({
      ramSize: options.ramSize,
      firmware: options.bios?.image,
      cpus: options.cpus,
      pciDevices: options.pciDevices,
      irqchip: options.irqchip,
    });
    io.out(board.mtree(mtree).trimEnd());
    return 0;
  }
  using _kvm = kvm;
  using machine = await PcMachine.create({
    kvm,
    ramSize: options.ramSize,
    firmware: options.bios?.image,
    traceMemslots: options.traceMemslots ? (call) => io.err(formatCall(call)) : undefined,
    pciDevices: options.pciDevices,
    irqchip: options.irqchip,
  });
  io.out(machine.mtree(mtree).trimEnd());
  return 0;
}

async function boot(
  options: CliOptions,
  plan: BootPlan,
  io: CliIo,
  entered: { ms: number; rss: number },
  { qmp, gdb: gdbServer, web: webServer }: { qmp?: QmpServer; gdb?: GdbServer; web?: WebServer } = {},
): Promise<number> {
  // Every input has been checked: from here on the run needs KVM. This is where /dev/kvm is opened,
  // before anything is created or written (a -serial file is truncated only after this).
  using kvm = Kvm.open();
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
  // Loaded before the machine exists: the run itself cannot wait for an import.
  const gdbModule = gdbServer ? await import("./gdb_session.ts") : undefined;
  const webModules = webServer
    ? { session: await import("./web_session.ts"), machine: await import("./web_machine.ts") }
    : undefined;
  // The page mirrors the serial console and records the memslot calls (from its session on).
  let webSession: WebSession | undefined;
  if (webServer) {
    const inner = serial;
    serial = (byte) => {
      inner?.(byte);
      webSession?.serialByte(byte);
    };
  }
  const terminal = Deno.stdin.isTerminal();
  handleKickSignal(); // kicks (the console's signals, the QMP and gdb Workers) interrupt KVM_RUN
  let vmConsoleOwned: VmConsole | undefined;
  let netRx: NetRxPoller | undefined;
  let machine: PcMachine | undefined;
  let snapshotTimer: SnapshotTimer | undefined;
  let snapshotWritten = false;
  try {
    const machineOptions = {
      kvm,
      ramSize: options.ramSize,
      cpus: options.cpus,
      firmware: options.bios?.image,
      boot: plan,
      serial: countSerial(serial),
      traceMemslots: options.traceMemslots || webServer
        ? (call: MemslotCall) => {
          if (options.traceMemslots) io.err(formatCall(call));
          webSession?.memslot(call);
        }
        : undefined,
      pciDevices: options.pciDevices,
      irqchip: options.irqchip,
      log: (line: string) => io.err(line),
    };
    machine = await createOrRestore(options.snapshot, machineOptions);
    const pc = machine;
    const created = performance.now();
    const createdRss = options.timings ? Deno.memoryUsage().rss : 0;
    // One vCPU runs on this thread: typed input and the ending signals kick it out of KVM_RUN.
    // Several run on threads of their own while this one sleeps in poll(2): stdin is one of its fds.
    const kick = pc.doorbell ? undefined : vcpuKickTarget(pc.vcpu);
    const vmConsole = vmConsoleOwned = new VmConsole(
      kick ? { kick } : { poll: true },
      (text) => io.console(encoder.encode(text)),
    );
    const wake = kick ? { kick } : { doorbell: pc.doorbell! };
    qmp?.attach(wake);
    gdbServer?.attach(wake);
    webServer?.attach(wake);
    // The taps: with a doorbell this thread waits in poll(2) between exits, and they join that wait
    // (as the queue notify eventfds do, PcMachine.runAsync); with one vCPU on this thread, inside
    // KVM_RUN, a receive Worker kicks it, and onKick below pumps them.
    const backends = options.netBackends;
    const netRxModule = backends.length > 0 ? await import("../machine/net_rx.ts") : undefined;
    const sources = pc.doorbell ? [...(netRxModule?.tapSources(backends) ?? []), ...vmConsole.sources] : [];
    if (netRxModule && kick) {
      const poller = netRx = netRxModule.NetRxPoller.start({ fds: backends.map((b) => b.tap.fd), kick });
      const resumeWhenDrained = () => {
        if (backends.every((b) => b.drained)) poller.resume();
      };
      for (const b of backends) b.onDrained = resumeWhenDrained;
    }
    if (terminal) Deno.stdin.setRaw(true);
    // The monitor's commands, shared by the terminal monitor and QMP; `end` stops the run.
    let hostReset = false;
    let shutdownSent = false;
    snapshotTimer = await startSnapshotTimer(options.snapshot, pc);
    const commands = new MonitorCommands({
      ...monitorView(pc),
      snapshot: snapshotCommand(pc),
      netdevIds: () => options.netdevIds ?? [],
    }, {
      event: (name, data) => {
        if (name === "SHUTDOWN") shutdownSent = true;
        qmp?.event(name, data);
        webSession?.event(name, data);
      },
      end: (kind) => {
        if (kind === "reset") hostReset = true;
        pc.stop({ kind });
      },
      reboot: options.reboot,
    });
    if (options.rxFilterEvents) options.rxFilterEvents.notify = (card) => commands.rxFilterChanged(card);
    const gdb = gdbServer
      ? new gdbModule!.GdbSession(
        gdbServer,
        { cpus: pc.cpus, vcpuAt: (cpu) => pc.vcpuAt(cpu), memory: pc.memory },
        commands,
      )
      : undefined;
    if (webServer && webModules) {
      webSession = new webModules.session.WebSession(
        webServer,
        webModules.machine.pcWebMachine(pc),
        commands,
      );
    }
    if (options.startPaused) commands.startPaused();
    // Made once: serveMonitors runs after every wake-up of the VM thread.
    // With --web, QMP clients may use the page's x-query-* commands too.
    const runQmp = (name: string, args: { [key: string]: Json }) =>
      webSession && name.startsWith("x-")
        ? webSession.run(name, args) as Json
        : runQmpCommand(commands, name, args);
    const whilePaused = <T>(fn: () => T): T => pc.whilePaused(fn);
    const serveMonitors = () => {
      if (netRx?.signalled) { for (const b of options.netBackends) b.pump(); }
      if (snapshotTimer?.take()) {
        const taken = snapshotOnTimer(options.snapshot, pc);
        snapshotWritten = taken.written;
        io.err(taken.line);
      }
      const news = vmConsole.take();
      if (news.input.length > 0) pc.input(news.input);
      let quit = news.quit;
      for (const command of news.commands) {
        const result = runMonitorCommand(commands, command);
        if (result.output) {
          io.console(encoder.encode(result.output.replaceAll("\n", terminal ? "\r\n" : "\n")));
        }
        if (result.quit) quit = true;
        else vmConsole.prompt();
      }
      if ((quit || news.signal !== null) && !commands.ended) {
        // Ctrl-A x ends the run as QEMU's quit; a signal as QEMU's signal handler, with its line.
        const signal = news.signal;
        if (signal !== null) io.err(`kvm-ts: terminating on signal ${signal}`);
        commands.quit(signal === null ? "host-qmp-quit" : "host-signal");
      }
      qmp?.serve(runQmp);
      webSession?.pump();
      gdb?.pump(whilePaused);
    };
    const idle = new Int32Array(new SharedArrayBuffer(4));
    const holdWhileStopped = () => {
      if (!commands.paused || commands.ended) return;
      // Stopped (QMP or monitor `stop`, -S, a debugger): every vCPU stays out of KVM_RUN while this
      // thread keeps answering the monitors and gdb, until `cont`, a reset or a quit.
      pc.whilePaused(() => {
        while (commands.paused && !commands.ended) {
          if (gdb?.connected) gdb.wait(STOPPED_POLL_MS); // gdb talks packet by packet: wake at once
          else if (qmp) qmp.wait(STOPPED_POLL_MS);
          else if (webServer) webServer.wait(STOPPED_POLL_MS);
          else Atomics.wait(idle, 0, 0, STOPPED_POLL_MS);
          serveMonitors();
        }
      });
    };
    const onKick = () => {
      serveMonitors();
      holdWhileStopped();
    };
    const onDebug = gdb
      ? (cpu: number) => {
        pc.whilePaused(() => gdb.onDebug(cpu)); // the other vCPUs too: the stub may set their debug state
        holdWhileStopped();
      }
      : undefined;
    let outcome: RunOutcome;
    const started = performance.now();
    for (;;) {
      commands.startRun();
      hostReset = false;
      // Held at the start (-S, or a machine reset while stopped): the first thing its run does is
      // the hook, before any vCPU executes a guest instruction.
      const startHeld = commands.paused;
      outcome = await pc.runAsync(
        onDebug ? { onKick, onDebug, startHeld, sources } : { onKick, startHeld, sources },
      );
      if (outcome.kind === "reset" && hostReset) {
        pc.reset();
        continue;
      }
      if (outcome.kind === "reset" && options.reboot) {
        qmp?.event("RESET", { guest: true, reason: "guest-reset" });
        pc.reset();
        continue;
      }
      if (!shutdownSent && (outcome.kind === "reset" || outcome.kind === "poweroff")) {
        // QEMU's SHUTDOWN for a guest that reset under -no-reboot, or powered off.
        qmp?.event("SHUTDOWN", {
          guest: true,
          reason: outcome.kind === "reset" ? "guest-reset" : "guest-shutdown",
        });
      }
      break;
    }
    const ended = performance.now();
    gdb?.exited(statusOf(outcome));
    if (options.timings) {
      io.err(
        `timings: isolate start to main() ${entered.ms.toFixed(1)} ms (module loading from ${
          RUNNING_FROM_BUNDLE ? "the bundle" : "source"
        }), VM creation ${(created - entered.ms).toFixed(1)} ms, devices and monitors ready ${
          (started - created).toFixed(1)
        } ms, guest run ${(ended - started).toFixed(1)} ms (${pc.exits} exits)`,
      );
      const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
      io.err(
        `memory: resident ${mib(entered.rss)} after module loading, ${mib(createdRss)} after VM creation, ${
          mib(Deno.memoryUsage().rss)
        } at the guest's exit (guest RAM is counted as the guest touches it)`,
      );
    }
    const status = report(outcome, io);
    const timer = snapshotTimer && { taken: snapshotTimer.taken, written: snapshotWritten };
    const missed = timer && snapshotMissed(options.snapshot, timer, outcome.kind, status);
    if (missed === undefined) return status;
    io.err(missed.line);
    return missed.status;
  } finally {
    vmConsoleOwned?.close(); // no kick reaches the vCPU after this, so its mapping can go
    snapshotTimer?.close(); // nor one from the snapshot timer
    qmp?.fenceKicks(); // nor one from the QMP Worker
    webServer?.fenceKicks(); // nor one from the web Worker
    gdbServer?.fenceKicks(); // nor one from the gdb Worker (a client that detaches or kills after the exit)
    webSession?.close();
    netRx?.close(); // nor one from the taps' receive Worker
    machine?.close();
    serialFile?.close();
    if (terminal) Deno.stdin.setRaw(false);
  }
}

/** How often the stopped loop looks at the terminal monitor (QMP commands wake it at once). */
const STOPPED_POLL_MS = 50;

/** The machine as the monitor's commands see it. */
function monitorView(pc: PcMachine): MonitorMachine {
  return {
    mtree: (options) => pc.mtree(options),
    registers: (cpu) => pc.registers(cpu),
    powerButton: () => pc.powerButton(),
    infoPci: () => pc.infoPci(),
    infoPic: () => pc.infoPic(),
    rxFilters: () => pc.rxFilters(),
    announceSelf: (params, options) => pc.announceSelf(params, options),
    cpus: pc.cpus,
    threadIds: () => pc.threadIds(),
    readPhysical: (addr, length) => {
      // Past 2^64 reads as nothing, as a hole does: zeros.
      const room = (1n << 64n) - addr;
      const inside = BigInt(length) > room ? Number(room) : length;
      const out = new Uint8Array(length);
      out.set(pc.memory.readBytes(addr, inside).data);
      return out;
    },
    translate: (cpu, vaddr) => pc.translate(cpu, vaddr),
  };
}

/** Where the virtio-net cards report that their driver changed the receive filter, by card index. */
interface RxFilterEvents {
  /** Set by the run once its monitor commands exist (QMP's NIC_RX_FILTER_CHANGED). */
  notify?: (card: number) => void;
}

/** The process's exit status for `outcome`. */
function statusOf(outcome: RunOutcome): number {
  switch (outcome.kind) {
    case "exit":
      return outcome.status;
    case "reset":
    case "poweroff":
    case "quit":
      return 0;
    case "error":
      return 1;
  }
}

function report(outcome: RunOutcome, io: CliIo): number {
  if (outcome.kind === "error") io.err(`error: ${outcome.reason}\n${outcome.registers}`);
  return statusOf(outcome);
}
