/**
 * A hardware-style KVM on a host without one: boots Debian's kernel under QEMU's TCG with an
 * emulated AMD SVM CPU (`-cpu max`), where `kvm_amd` gives a real `/dev/kvm`, and runs one command
 * inside it in the same directory, with the host's own files (its root over 9p, read-only, with a
 * tmpfs overlay on top). The command's output and exit status come back; QEMU and the run's
 * temporary directory are removed on every path.
 *
 * @module
 */

import { type CpioEntry, cpioNewc } from "../machine/loader/cpio.ts";
import {
  ALIVE_FILE,
  HOST_ROOT_TAG,
  INIT_FAILED_MARKER,
  initScript,
  JOB_FILE,
  jobScript,
  MODULES_DIR,
  MOUNTS_FILE,
  READY_MARKER,
  SHARE_TAG,
  STATUS_FILE,
} from "./init_script.ts";
import { loadOrder, NESTED_MODULES, parseModulesDep } from "./modules.ts";
import { FreezeWatch } from "./freeze_watch.ts";
import { NestedError } from "./nested_error.ts";

export { NestedError };

/** The QEMU binary (Debian: qemu-system-x86). */
export const QEMU_BINARY = "qemu-system-x86_64";
/** The static busybox (Debian: busybox-static). */
export const BUSYBOX_PATH = "/bin/busybox";
/** The Debian packages the nested VM is built from. */
export const NESTED_PACKAGES = "qemu-system-x86 linux-image-amd64 busybox-static";
/** {@link NestedOptions.freezeSeconds}'s default. */
const DEFAULT_FREEZE_SECONDS = 300;
/** What the VM's boot may add to the freeze limit before its first sign of life. */
const BOOT_ALLOWANCE_SECONDS = 300;
/**
 * How long a quiet VM gets after {@link wakeNestedVm} to give a sign of life again, at most (the
 * freeze limit when that is shorter): its init touches the file every 5 s.
 */
export const WAKE_GRACE_SECONDS = 30;
/** The VM's own monitor socket in the run's temporary folder, when the caller names none. */
const MONITOR_SOCKET = "monitor.sock";
/** The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;
/** Bump when the init script or the initramfs layout changes, to invalidate cached initramfs files. */
const INITRAMFS_FORMAT = 3;

/** The kernel the nested VM boots: Debian's, with its modules. */
export interface NestedKernel {
  version: string;
  vmlinuz: string;
  modulesDir: string;
}

function versionKey(version: string): number[] {
  return version.split(/[^0-9]+/).filter((p) => p !== "").map(Number);
}

function compareVersions(a: string, b: string): number {
  const [x, y] = [versionKey(a), versionKey(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? -1) !== (y[i] ?? -1)) return (x[i] ?? -1) - (y[i] ?? -1);
  }
  return 0;
}

/**
 * The newest `/boot/vmlinuz-VERSION` that has `/lib/modules/VERSION/modules.dep` with `kvm_amd`.
 *
 * @throws {NestedError} naming the packages to install when there is none.
 */
export function findNestedKernel(boot = "/boot", modules = "/lib/modules"): NestedKernel {
  const versions: string[] = [];
  try {
    for (const entry of Deno.readDirSync(boot)) {
      const version = /^vmlinuz-(.+)$/.exec(entry.name)?.[1];
      if (version === undefined) continue;
      try {
        if (/\/kvm-amd\.ko/.test(Deno.readTextFileSync(`${modules}/${version}/modules.dep`))) {
          versions.push(version);
        }
      } catch { /* a kernel without its modules */ }
    }
  } catch { /* no /boot */ }
  if (versions.length === 0) {
    throw new NestedError(
      `no kernel with kvm_amd in ${boot} and ${modules} for the nested VM: apt-get install ${NESTED_PACKAGES}`,
    );
  }
  const version = versions.sort(compareVersions).at(-1)!;
  return { version, vmlinuz: `${boot}/vmlinuz-${version}`, modulesDir: `${modules}/${version}` };
}

/** Where the nested VM keeps its initramfs files and console logs. */
export function nestedCacheDir(): string {
  const base = Deno.env.get("XDG_CACHE_HOME") || `${Deno.env.get("HOME") || "/tmp"}/.cache`;
  return `${base}/kvm-ts/nested`;
}

async function moduleBytes(path: string): Promise<Uint8Array> {
  if (!/\.ko\.(xz|zst|gz)$/.test(path)) return await Deno.readFile(path);
  // busybox insmod loads plain .ko files only: decompress with the system's tool.
  const tool = path.endsWith(".xz") ? "xz" : path.endsWith(".zst") ? "zstd" : "gzip";
  const out = await new Deno.Command(tool, { args: ["-dc", path], stdout: "piped", stderr: "piped" }).output()
    .catch(() => null);
  if (out === null || !out.success) {
    throw new NestedError(`cannot decompress ${path} with ${tool} (apt-get install xz-utils zstd gzip)`);
  }
  return out.stdout;
}

/**
 * The initramfs for `kernel`, built from the host's busybox and the kernel's modules, and cached
 * by kernel version and the contents of its /init.
 */
async function nestedInitramfs(kernel: NestedKernel, cacheDir: string): Promise<string> {
  let busybox: Uint8Array;
  try {
    busybox = await Deno.readFile(BUSYBOX_PATH);
  } catch {
    throw new NestedError(`no ${BUSYBOX_PATH} for the nested VM's init: apt-get install busybox-static`);
  }
  let dep: string;
  try {
    dep = await Deno.readTextFile(`${kernel.modulesDir}/modules.dep`);
  } catch {
    throw new NestedError(
      `cannot read ${kernel.modulesDir}/modules.dep: apt-get install --reinstall linux-image-amd64`,
    );
  }
  let order: string[];
  try {
    order = loadOrder(parseModulesDep(dep), NESTED_MODULES);
  } catch (error) {
    throw new NestedError(`${kernel.vmlinuz}: ${(error as Error).message}`);
  }
  const modules = order.map((path, i) =>
    `${MODULES_DIR}/${String(i).padStart(2, "0")}-${
      path.slice(path.lastIndexOf("/") + 1).replace(/\.(xz|zst|gz)$/, "")
    }`
  );
  const init = initScript(modules);
  const key = await digest(`${INITRAMFS_FORMAT}\n${kernel.version}\n${init}\n${busybox.length}`);
  const file = `${cacheDir}/initramfs-${kernel.version}-${key.slice(0, 12)}.cpio`;
  try {
    if ((await Deno.stat(file)).isFile) return file;
  } catch { /* not cached yet */ }
  const entries: CpioEntry[] = [
    ...["bin", "dev", "proc", "sys", MODULES_DIR].map((name): CpioEntry => ({ name, type: "directory" })),
    { name: "bin/busybox", type: "file", data: busybox },
    { name: "bin/sh", type: "symlink", data: "busybox" },
    { name: "init", type: "file", data: init },
  ];
  for (let i = 0; i < order.length; i++) {
    entries.push({
      name: modules[i],
      type: "file",
      mode: 0o644,
      data: await moduleBytes(`${kernel.modulesDir}/${order[i]}`),
    });
  }
  await Deno.mkdir(cacheDir, { recursive: true });
  const temporary = `${file}.${Deno.pid}.tmp`;
  await Deno.writeFile(temporary, cpioNewc(entries));
  await Deno.rename(temporary, file); // atomic: a concurrent run sees the whole file or none
  for await (const entry of Deno.readDir(cacheDir)) { // older builds for this kernel
    const old = `${cacheDir}/${entry.name}`;
    if (entry.name.startsWith(`initramfs-${kernel.version}-`) && old !== file && !old.endsWith(".tmp")) {
      await Deno.remove(old).catch(() => {});
    }
  }
  return file;
}

async function digest(text: string): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Options of {@link runNested}. */
export interface NestedOptions {
  /** The command and its arguments, run in `cwd` inside the VM. */
  argv: readonly string[];
  /** Working directory (default: the current one). */
  cwd?: string;
  /** Environment variables passed to the command (plus PATH, HOME, TERM and `KVM_TS_NESTED=1`). */
  env?: Readonly<Record<string, string>>;
  /** Seconds before the VM is killed (default 3600). */
  timeoutSeconds?: number;
  /**
   * Seconds without a sign of life from the VM's kernel (its init touches a file in the share every
   * 5 s) after which the VM counts as frozen and is killed (default 300; 0: never). Before the first
   * sign, the boot gets 300 s more. QEMU's emulated SVM has been seen to freeze under long Linux runs:
   * without this, a frozen VM held its caller until the timeout.
   */
  freezeSeconds?: number;
  /** Guest RAM of the nested VM in MiB (default 4096). */
  memoryMib?: number;
  /**
   * vCPUs of the nested VM (default: one with TCG's single thread, the host's CPU count with `multi`).
   * One, because the single thread runs one vCPU at a time anyway, and with two or more it kicks the
   * running vCPU every 100 ms; a kick that lands between an injected interrupt and the L2 guest's next
   * exit makes the emulator deliver that interrupt twice, and Linux guests stall (docs/nested-kvm.md).
   */
  cpus?: number;
  /**
   * QEMU's TCG threading: one host thread for all vCPUs (`single`, the default) or one each (`multi`).
   * Single, because with `multi` the VM's kernel froze in KVM work (a VM teardown waiting in
   * `rcu_barrier` while another guest ran) in four of four full test runs on an AMD EPYC host; with
   * `single` the same runs finish.
   */
  tcgThreads?: "multi" | "single";
  /** `inherit`: the command's terminal is this process's stdin/stdout; `piped`: output is returned. */
  stdio?: "inherit" | "piped";
  /**
   * The size of the caller's terminal, given to the command's pseudo-terminal with `stdio: "inherit"`
   * (the front-end measures it: `nested/` does not touch stdio itself).
   */
  terminal?: { rows: number; columns: number };
  /** Called with each chunk of the command's output, with `stdio: "piped"`. */
  onOutput?: (chunk: Uint8Array) => void;
  /** Host directories the command may write to (shared writable at the same paths). */
  writable?: readonly string[];
  /** Called once QEMU runs: its process id, the run's share directory and the console log's path. */
  onStart?: (run: { pid: number; share: string; log: string }) => void;
  /** Where the run's share directory is made (default: the system's temporary directory). */
  tempDir?: string;
  /** The QEMU binary (default {@link QEMU_BINARY}, found on PATH). */
  qemu?: string;
  /** Aborts the run (QEMU is killed, everything removed). */
  signal?: AbortSignal;
  /**
   * A Unix socket path for QEMU's human monitor of the nested VM itself (default: one in the run's
   * temporary folder, for the freeze guard's {@link wakeNestedVm}), so a caller that finds the VM
   * frozen can read its registers first ({@link nestedMonitorCommand}).
   */
  monitorSocket?: string;
  /**
   * Called when the VM's kernel, quiet for the freeze limit, gave a sign of life again after
   * {@link wakeNestedVm}: with the seconds it had been quiet.
   */
  onWake?: (quietSeconds: number) => void;
}

/** How a nested run ended. */
export interface NestedResult {
  /** The command's exit status inside the VM. */
  status: number;
  /** Seconds from QEMU's start to its exit. */
  seconds: number;
  /** The command's output (terminal bytes, stdout and stderr together), with `stdio: "piped"`. */
  output?: Uint8Array;
  /** How many times the freeze guard woke the quiet VM ({@link NestedOptions.onWake}). */
  wakes: number;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Boots the nested VM, runs `argv` inside it and returns its status. The VM has the host's root
 * file system (read-only, with a throwaway writable layer), so the command finds the same programs
 * and files at the same paths; only what it writes stays behind in the VM.
 *
 * @throws {NestedError} one line saying what went wrong (QEMU or a package missing, the VM did not
 *   come up, the time ran out) and where the console log is.
 */
export async function runNested(options: NestedOptions): Promise<NestedResult> {
  const kernel = findNestedKernel();
  const cacheDir = nestedCacheDir();
  const stdio = options.stdio ?? "inherit";
  const timeoutSeconds = options.timeoutSeconds ?? 3600;
  await Deno.mkdir(cacheDir, { recursive: true });
  const share = await Deno.makeTempDir({ prefix: "kvm-ts-nested-", dir: options.tempDir });
  const log = `${cacheDir}/console-${Deno.pid}-${Date.now()}.log`;
  const started = performance.now();
  let child: Deno.ChildProcess | undefined;
  let exited = false;
  const kill = () => {
    // By pid: ChildProcess.kill refuses while Deno's own wait for the child is settling, which a
    // signal arriving at this process can cause, and QEMU would live on.
    if (child === undefined || exited) return;
    try {
      Deno.kill(child.pid, "SIGKILL");
    } catch { /* already gone */ }
  };
  let interrupted: Deno.Signal | undefined;
  const onSignal = (signal: Deno.Signal) => {
    interrupted ??= signal;
    kill();
  };
  const listeners = new Map<Deno.Signal, () => void>();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  // Listen before QEMU exists: a Ctrl-C between its spawn and a later listener would end this
  // process and orphan QEMU.
  for (const s of signals) {
    const listener = () => onSignal(s);
    listeners.set(s, listener);
    Deno.addSignalListener(s, listener);
  }
  options.signal?.addEventListener("abort", kill);
  try {
    const initramfs = await nestedInitramfs(kernel, cacheDir);
    await pruneLogs(cacheDir);
    const env: Record<string, string> = {
      PATH: Deno.env.get("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      HOME: Deno.env.get("HOME") ?? "/root",
      TERM: Deno.env.get("TERM") ?? "dumb",
      ...Object.fromEntries(Object.entries(options.env ?? {}).filter(([k]) => ENV_NAME.test(k))),
      KVM_TS_NESTED: "1",
    };
    const writable = [share, ...(options.writable ?? [])];
    for (const path of writable) {
      if (/[\n,]/.test(path) || !path.startsWith("/")) {
        throw new NestedError(
          `nested VM: cannot share ${JSON.stringify(path)} (an absolute path without newlines or commas)`,
        );
      }
    }
    await Deno.writeTextFile(
      `${share}/${MOUNTS_FILE}`,
      writable.map((p, i) => `${SHARE_TAG}${i} ${p}\n`).join(""),
    );
    await Deno.writeTextFile(
      `${share}/${JOB_FILE}`,
      jobScript({
        argv: options.argv,
        cwd: options.cwd ?? Deno.cwd(),
        env,
        sharePath: share,
        terminal: stdio === "inherit" ? options.terminal : undefined,
      }),
    );
    // A Unix socket path holds at most 107 bytes: a longer temporary folder goes without one (and so
    // without the wake-up).
    const ownMonitor = `${share}/${MONITOR_SOCKET}`;
    const monitor = options.monitorSocket ?? (ownMonitor.length <= MAX_SOCKET_PATH ? ownMonitor : undefined);
    const threads = options.tcgThreads ?? "single";
    const cpus = options.cpus ?? (threads === "single" ? 1 : navigator.hardwareConcurrency ?? 1);
    const args = [
      ...["-machine", "pc", "-accel", `tcg,thread=${threads}`, "-cpu", "max"],
      ...["-smp", String(cpus), "-m", `${options.memoryMib ?? 4096}M`],
      ...["-nodefaults", "-display", "none", "-no-reboot"],
      ...["-monitor", monitor ? `unix:${monitor},server=on,wait=off` : "none"],
      ...["-kernel", kernel.vmlinuz, "-initrd", initramfs],
      ...["-append", "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init mitigations=off"],
      ...[
        "-virtfs",
        `local,path=/,mount_tag=${HOST_ROOT_TAG},security_model=none,readonly=on,multidevs=remap`,
      ],
      ...["-virtfs", `local,path=${share},mount_tag=${SHARE_TAG},security_model=none,multidevs=remap`],
      ...writable.flatMap((path, i) => [
        "-virtfs",
        `local,path=${path},mount_tag=${SHARE_TAG}${i},security_model=none,multidevs=remap`,
      ]),
      ...["-serial", `file:${log}`, "-chardev", "stdio,id=job,signal=off", "-serial", "chardev:job"],
    ];
    try {
      child = new Deno.Command(options.qemu ?? QEMU_BINARY, {
        args,
        stdin: stdio === "inherit" ? "inherit" : "null",
        stdout: stdio === "inherit" ? "inherit" : "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new NestedError(`${options.qemu ?? QEMU_BINARY} not found: apt-get install ${NESTED_PACKAGES}`);
      }
      throw error;
    }
    // A signal or an abort that came while QEMU was being started.
    if (interrupted !== undefined || options.signal?.aborted) kill();
    options.onStart?.({ pid: child.pid, share, log });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, timeoutSeconds * 1000);
    let frozenFor: number | undefined;
    let triedWake = false;
    const freezeSeconds = options.freezeSeconds ?? DEFAULT_FREEZE_SECONDS;
    const freeze = new FreezeWatch({
      quiet: freezeSeconds,
      boot: freezeSeconds + BOOT_ALLOWANCE_SECONDS,
      grace: Math.min(WAKE_GRACE_SECONDS, freezeSeconds),
      canWake: monitor !== undefined,
    }, Date.now());
    let wakes = 0;
    const watchdog = freezeSeconds > 0
      ? setInterval(() => {
        let beat: number | undefined;
        try {
          beat = Deno.statSync(`${share}/${ALIVE_FILE}`).mtime?.getTime();
        } catch { /* no sign yet */ }
        const step = freeze.step(beat, Date.now());
        if (step.kind === "woke") {
          wakes++;
          options.onWake?.(step.quietSeconds);
        } else if (step.kind === "wake") {
          void wakeNestedVm(monitor!).then((answered) => freeze.answered(answered));
        } else if (step.kind === "kill") {
          frozenFor = step.quietSeconds;
          triedWake = step.triedWake;
          kill();
        }
      }, Math.min(5000, freezeSeconds * 250))
      : undefined;
    const chunks: Uint8Array[] = [];
    const reading = stdio === "piped"
      ? (async () => {
        for await (const chunk of child.stdout) {
          chunks.push(chunk);
          options.onOutput?.(chunk);
        }
      })()
      : Promise.resolve();
    const stderr = new Response(child.stderr).text();
    const exit = await child.status;
    exited = true;
    clearTimeout(timer);
    clearInterval(watchdog);
    await reading;
    const qemuErrors = (await stderr).trim();
    const seconds = (performance.now() - started) / 1000;
    const consoleText = await Deno.readTextFile(log).catch(() => "");
    const ready = consoleText.includes(READY_MARKER);
    let statusText: string | undefined;
    try {
      statusText = (await Deno.readTextFile(`${share}/${STATUS_FILE}`)).trim();
    } catch { /* the job did not finish */ }
    if (statusText !== undefined && /^\d+$/.test(statusText)) {
      const output = stdio === "piped" ? concat(chunks) : undefined;
      return { status: Number(statusText), seconds, output, wakes };
    }
    if (interrupted) throw new NestedError(`nested VM: interrupted by ${interrupted}`, log, interrupted);
    if (options.signal?.aborted) throw new NestedError("nested VM: the run was aborted", log);
    if (frozenFor !== undefined) {
      throw new NestedError(
        `nested VM: froze: no sign of life from its kernel for ${frozenFor} s, ` +
          `${triedWake ? "nor after a keyboard interrupt and an NMI, " : ""}killed`,
        log,
        undefined,
        true,
      );
    }
    if (timedOut) {
      throw new NestedError(
        `nested VM: ${ready ? "the command" : "the VM"} did not finish within ${timeoutSeconds} s`,
        log,
      );
    }
    const initFailure = consoleText.split("\n").find((line) => line.includes(INIT_FAILED_MARKER));
    if (initFailure) {
      throw new NestedError(`nested VM: ${initFailure.replace(/^.*kvm-ts-nested: /, "")}`, log);
    }
    if (!exit.success && qemuErrors !== "") {
      throw new NestedError(`nested VM: QEMU failed: ${qemuErrors.split("\n")[0]}`, log);
    }
    throw new NestedError(
      ready
        ? "nested VM: the command ended without an exit status (killed?)"
        : "nested VM: the VM did not come up",
      log,
    );
  } finally {
    for (const [s, listener] of listeners) Deno.removeSignalListener(s, listener);
    options.signal?.removeEventListener("abort", kill);
    if (child) {
      kill();
      await child.status.catch(() => {});
    }
    await Deno.remove(share, { recursive: true }).catch(() => {});
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Keeps the newest few console logs. */
async function pruneLogs(cacheDir: string, keep = 8): Promise<void> {
  const logs: { name: string; mtime: number }[] = [];
  for await (const entry of Deno.readDir(cacheDir)) {
    if (!/^console-.*\.log$/.test(entry.name)) continue;
    const info = await Deno.stat(`${cacheDir}/${entry.name}`).catch(() => null);
    if (info) logs.push({ name: entry.name, mtime: info.mtime?.getTime() ?? 0 });
  }
  logs.sort((a, b) => b.mtime - a.mtime);
  for (const old of logs.slice(keep)) await Deno.remove(`${cacheDir}/${old.name}`).catch(() => {});
}

/**
 * Sends the nested VM a keyboard interrupt (a Shift key through its i8042: IRQ 1) and an NMI through
 * its monitor at `socket`. The emulated SVM has been seen to lose the timer interrupt of a kernel
 * idling in HLT with interrupts on, which then never wakes; any interrupt takes it out of HLT and
 * through the interrupt exit that programs its timer again. Returns whether the monitor answered.
 */
export async function wakeNestedVm(socket: string): Promise<boolean> {
  const key = await nestedMonitorCommand(socket, "sendkey shift", 300);
  const nmi = await nestedMonitorCommand(socket, "nmi", 300);
  return key !== "" && nmi !== "";
}

/**
 * Sends one command to the nested VM's own monitor at `socket` (see `monitorSocket`) and returns what
 * it printed within `waitMs`; an empty string when the socket does not answer. For a frozen VM's
 * evidence: `info registers` says where its kernel is.
 */
export async function nestedMonitorCommand(socket: string, command: string, waitMs = 2000): Promise<string> {
  let connection: Deno.UnixConn;
  try {
    connection = await Deno.connect({ transport: "unix", path: socket });
  } catch {
    return "";
  }
  const chunks: Uint8Array[] = [];
  const reading = (async () => {
    const buffer = new Uint8Array(65536);
    for (;;) {
      const n = await connection.read(buffer).catch(() => null);
      if (n === null) return;
      chunks.push(buffer.slice(0, n));
    }
  })();
  try {
    await connection.write(new TextEncoder().encode(`${command}\n`));
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  } catch {
    /* the monitor went away: what it said so far */
  } finally {
    connection.close();
    await reading;
  }
  // deno-lint-ignore no-control-regex -- the monitor's terminal escapes
  return new TextDecoder().decode(concat(chunks)).replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
}
