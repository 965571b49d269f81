/**
 * Regenerates the QEMU `info mtree` oracle files in `tests/golden/qemu/`.
 *
 * For each machine configuration this starts `qemu-system-x86_64` stopped (`-S`, so no guest code runs;
 * or running until the firmware has set up what a configuration waits for),
 * talks QMP over a unix socket in a temporary directory, runs `info mtree` (and variants) through
 * `human-monitor-command`, quits QEMU and writes one file per view. Every file starts with two comment
 * lines: the exact command line plus monitor command, and the QEMU version from `query-version`.
 *
 * Usage: `node_modules/.bin/deno run -A tests/golden/capture_qemu.ts [CONFIG…]` (no arguments:
 * every configuration).
 *
 * @module
 */

/** The emulator binary, looked up on `PATH`. Debian package: `qemu-system-x86`. */
export const QEMU_BINARY = "qemu-system-x86_64";

/** Relative socket path: QEMU runs with the temp dir as its cwd, so the recorded command line is stable. */
const QMP_SOCKET_NAME = "qmp.sock";

/** Upper bound for one QEMU run (start, all monitor commands, quit) before it is killed. */
const RUN_TIMEOUT_MS = 60_000;

/** How long QEMU gets to exit by itself after `quit` before it is killed. */
const QUIT_GRACE_MS = 5_000;

/** Delay between looks at a running guest's memory tree ({@link CaptureConfig.runUntil}). */
const RUN_POLL_MS = 100;

/** Delay between attempts to connect to the QMP socket while QEMU starts. */
const CONNECT_POLL_MS = 20;

/** One monitor view: the file-name suffix and the HMP command that produces it. */
export interface MtreeView {
  /** Suffix in `<config>.<name>.txt`. */
  readonly name: string;
  /** HMP command passed to `human-monitor-command`. */
  readonly command: string;
}

/** One machine configuration to capture. */
export interface CaptureConfig {
  /** File-name prefix. */
  readonly name: string;
  /** `-machine` value. */
  readonly machine: string;
  /** `-m` value. */
  readonly memory: string;
  /** Accelerators to try in order; the first one QEMU starts with is used and recorded. */
  readonly accels: readonly string[];
  /** Views to capture, all from the same QEMU run. */
  readonly views: readonly MtreeView[];
  /** Extra QEMU arguments (devices the board has that -nodefaults leaves out). */
  readonly extra?: readonly string[];
  /**
   * Let the firmware run instead of `-S`, and capture once `info mtree` matches this (SeaBIOS has
   * programmed what it programs before a `-kernel` guest starts, such as the PIIX4 PM base).
   */
  readonly runUntil?: RegExp;
}

const VIEW_TREE: MtreeView = { name: "mtree", command: "info mtree" };
const VIEW_FLAT: MtreeView = { name: "mtree-f", command: "info mtree -f" };
const VIEW_DISABLED: MtreeView = { name: "mtree-D", command: "info mtree -D" };

/** Every configuration this script regenerates. */
export const CONFIGS: readonly CaptureConfig[] = [
  { name: "none-64M", machine: "none", memory: "64M", accels: ["kvm", "tcg"], views: [VIEW_TREE, VIEW_FLAT] },
  { name: "pc-128M", machine: "pc", memory: "128M", accels: ["kvm", "tcg"], views: [VIEW_TREE, VIEW_FLAT] },
  {
    name: "pc-256M",
    machine: "pc",
    memory: "256M",
    accels: ["kvm", "tcg"],
    views: [VIEW_TREE, VIEW_FLAT, VIEW_DISABLED],
  },
  { name: "pc-3584M", machine: "pc", memory: "3584M", accels: ["kvm", "tcg"], views: [VIEW_TREE, VIEW_FLAT] },
  { name: "pc-8G", machine: "pc", memory: "8G", accels: ["kvm", "tcg"], views: [VIEW_TREE, VIEW_FLAT] },
  {
    // The board's devices that -nodefaults leaves out: COM1 and QEMU's isa-debug-exit.
    name: "pc-256M-devices",
    machine: "pc",
    memory: "256M",
    accels: ["kvm", "tcg"],
    views: [VIEW_TREE, VIEW_FLAT],
    extra: ["-serial", "null", "-device", "isa-debug-exit,iobase=0x501,iosize=2"],
  },
  {
    // The same after SeaBIOS has run: the PIIX4 PM function enabled at its PM base 0x600, as a
    // `-kernel` guest finds it (with -S it is still disabled at 0).
    name: "pc-256M-devices-booted",
    machine: "pc",
    memory: "256M",
    accels: ["kvm", "tcg"],
    views: [VIEW_TREE, VIEW_FLAT],
    extra: ["-serial", "null", "-device", "isa-debug-exit,iobase=0x501,iosize=2"],
    runUntil: /^ {4}0000000000000600-000000000000063f \(prio 0, i\/o\): piix4-pm$/m,
  },
];

/** QEMU exited (or never opened QMP) before it was ready; carries its stderr. */
export class QemuStartError extends Error {
  /** What QEMU wrote to stderr, trimmed. */
  readonly stderr: string;
  constructor(message: string, stderr: string) {
    super(stderr === "" ? message : `${message}: ${stderr}`);
    this.name = "QemuStartError";
    this.stderr = stderr;
  }
}

/** `qemu-system-x86_64` is not installed or not on `PATH`. */
export class QemuMissingError extends Error {
  constructor() {
    super(`${QEMU_BINARY} not found on PATH (install it: apt-get install -y qemu-system-x86)`);
    this.name = "QemuMissingError";
  }
}

/** QEMU answered a QMP command with an `error` object. */
export class QmpError extends Error {
  /** QMP error class, e.g. `GenericError`. */
  readonly errorClass: string;
  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = "QmpError";
    this.errorClass = errorClass;
  }
}

type QmpMessage = Record<string, unknown>;

/** Minimal QMP client: newline-delimited JSON, asynchronous events skipped. */
class QmpClient implements Disposable {
  #conn: Deno.UnixConn;
  #decoder = new TextDecoder();
  #encoder = new TextEncoder();
  #buffer = "";
  #closed = false;

  constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
  }

  /** Reads the server greeting and enters command mode. */
  async negotiate(): Promise<void> {
    const greeting = await this.#readMessage();
    if (!("QMP" in greeting)) throw new Error(`unexpected QMP greeting: ${JSON.stringify(greeting)}`);
    await this.execute("qmp_capabilities");
  }

  /** Sends one command and returns its `return` value, skipping events. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const request = args === undefined ? { execute: command } : { execute: command, arguments: args };
    const bytes = this.#encoder.encode(JSON.stringify(request) + "\n");
    for (let written = 0; written < bytes.length;) {
      written += await this.#conn.write(bytes.subarray(written));
    }
    for (;;) {
      const message = await this.#readMessage();
      if ("event" in message) continue;
      if ("error" in message) {
        const error = message.error as { class?: string; desc?: string };
        throw new QmpError(command, String(error.class), String(error.desc));
      }
      if ("return" in message) return message.return;
      throw new Error(`unexpected QMP reply to ${command}: ${JSON.stringify(message)}`);
    }
  }

  async #readMessage(): Promise<QmpMessage> {
    const chunk = new Uint8Array(64 * 1024);
    for (;;) {
      const newline = this.#buffer.indexOf("\n");
      if (newline >= 0) {
        const line = this.#buffer.slice(0, newline).trim();
        this.#buffer = this.#buffer.slice(newline + 1);
        if (line !== "") return JSON.parse(line) as QmpMessage;
        continue;
      }
      const n = await this.#conn.read(chunk);
      if (n === null) throw new Error("QMP connection closed by QEMU");
      this.#buffer += this.#decoder.decode(chunk.subarray(0, n), { stream: true });
    }
  }

  /** Closes the socket; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer; nothing left to release.
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** The result of one QEMU run: the accelerator that worked and one file body per view. */
export interface CaptureResult {
  /** Accelerator recorded in the command line. */
  readonly accel: string;
  /** Errors of the accelerators tried before `accel`. */
  readonly fallbacks: readonly string[];
  /** File name (`<config>.<view>.txt`) to file contents. */
  readonly files: ReadonlyMap<string, string>;
}

/** QEMU arguments for one configuration and accelerator (without the binary name). */
export function qemuArgs(config: CaptureConfig, accel: string): string[] {
  return [
    ...["-machine", config.machine, "-accel", accel, "-nodefaults", "-m", config.memory],
    ...(config.extra ?? []),
    ...(config.runUntil === undefined ? ["-S"] : []),
    ...["-display", "none", "-qmp", `unix:${QMP_SOCKET_NAME},server=on,wait=off`],
  ];
}

/** Formats `query-version` like `qemu-system-x86_64 --version`: `7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`. */
function versionString(reply: unknown): string {
  const { qemu, package: pkg } = reply as {
    qemu: { major: number; minor: number; micro: number };
    package: string;
  };
  const version = `${qemu.major}.${qemu.minor}.${qemu.micro}`;
  return pkg.trim() === "" ? version : `${version} (${pkg.trim()})`;
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Starts QEMU once with `accel`, captures every view of `config`, and always reaps QEMU and the temp dir. */
async function captureWith(config: CaptureConfig, accel: string): Promise<Map<string, string>> {
  const args = qemuArgs(config, accel);
  const commandLine = [QEMU_BINARY, ...args].join(" ");
  const dir = await Deno.makeTempDir({ prefix: "capture_qemu_" });
  try {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(QEMU_BINARY, {
        args,
        cwd: dir,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new QemuMissingError();
      throw error;
    }
    let exited = false;
    const status = child.status.finally(() => {
      exited = true;
    });
    const stderr = new Response(child.stderr).text();
    const kill = () => {
      if (exited) return;
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited between the check and the kill.
      }
    };
    const timer = setTimeout(kill, RUN_TIMEOUT_MS);
    let qmp: QmpClient | undefined;
    try {
      const socketPath = `${dir}/${QMP_SOCKET_NAME}`;
      while (qmp === undefined) {
        if (exited) break;
        try {
          qmp = new QmpClient(await Deno.connect({ transport: "unix", path: socketPath }));
        } catch (error) {
          if (!(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.ConnectionRefused)) {
            throw error;
          }
          await delay(CONNECT_POLL_MS);
        }
      }
      try {
        if (qmp === undefined) throw new Error("exited before opening QMP");
        await qmp.negotiate();
      } catch (error) {
        kill();
        const code = (await status).code;
        const why = error instanceof Error ? error.message : String(error);
        throw new QemuStartError(`${commandLine}: ${why} (exit code ${code})`, (await stderr).trim());
      }
      const version = versionString(await qmp.execute("query-version"));
      if (config.runUntil !== undefined) {
        for (;;) {
          const tree = await qmp.execute("human-monitor-command", { "command-line": "info mtree" });
          if (typeof tree === "string" && config.runUntil.test(tree.replaceAll("\r", ""))) break;
          await delay(RUN_POLL_MS);
        }
        await qmp.execute("stop"); // the views below all see the same state
      }
      const files = new Map<string, string>();
      for (const view of config.views) {
        const reply = await qmp.execute("human-monitor-command", { "command-line": view.command });
        if (typeof reply !== "string") throw new Error(`${view.command}: reply is not a string`);
        const header = `# ${commandLine} | ${view.command}\n# QEMU ${version}\n`;
        files.set(`${config.name}.${view.name}.txt`, header + reply.replaceAll("\r", ""));
      }
      try {
        await qmp.execute("quit");
      } catch {
        // QEMU may close the socket before the reply arrives; the exit status below is what counts.
      }
      const graceTimer = setTimeout(kill, QUIT_GRACE_MS);
      await status;
      clearTimeout(graceTimer);
      return files;
    } finally {
      clearTimeout(timer);
      qmp?.close();
      kill();
      await status;
      await stderr;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Captures one configuration, falling back through `config.accels` when QEMU fails to start. */
export async function capture(config: CaptureConfig): Promise<CaptureResult> {
  const fallbacks: string[] = [];
  for (const accel of config.accels) {
    try {
      return { accel, fallbacks, files: await captureWith(config, accel) };
    } catch (error) {
      if (!(error instanceof QemuStartError)) throw error;
      fallbacks.push(`-accel ${accel} failed: ${error.message}`);
    }
  }
  throw new Error(`${config.name}: no accelerator worked:\n${fallbacks.join("\n")}`);
}

/** Regenerates every golden file; files are written only after all captures succeeded. */
async function main(only: readonly string[]): Promise<void> {
  const outDir = new URL("./qemu/", import.meta.url);
  const files = new Map<string, string>();
  const unknown = only.filter((name) => !CONFIGS.some((c) => c.name === name));
  if (unknown.length > 0) throw new Error(`no configuration ${unknown.join(", ")}`);
  for (const config of CONFIGS.filter((c) => only.length === 0 || only.includes(c.name))) {
    const result = await capture(config);
    for (const note of result.fallbacks) console.error(`note: ${config.name}: ${note}`);
    console.log(`${config.name}: -accel ${result.accel}`);
    for (const [name, text] of result.files) files.set(name, text);
  }
  await Deno.mkdir(outDir, { recursive: true });
  for (const [name, text] of files) {
    await Deno.writeTextFile(new URL(name, outDir), text);
    console.log(`wrote tests/golden/qemu/${name}`);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    console.error(`capture_qemu: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(1);
  }
}
