/**
 * The monitor's commands, once: the terminal monitor (`monitor.ts`, HMP words) and the QMP socket
 * (`qmp_commands.ts`, JSON) are two views over these. They keep the run state QEMU reports
 * (running, paused, prelaunch), raise QEMU's events, and fail with {@link QmpError}s worded as
 * QEMU's, which the terminal prints as text.
 *
 * @module
 */

import type { MtreeOptions } from "../memory/mod.ts";
import type { NicRxFilter } from "../machine/pc/pc_machine.ts";
import type { Json } from "./qmp_json.ts";
import { QMP_VERSION, QmpError } from "./qmp_session.ts";
import { type AnnounceParameters, announceProblem } from "../devices/net_announce.ts";

/** What the monitor needs of a machine (`PcMachine` has all of it; tests give a fake). */
export interface MonitorMachine {
  /** `info mtree` text. */
  mtree(options: MtreeOptions): string;
  /** `info registers` text: of one CPU, or of all. */
  registers(cpu?: number | "all"): string;
  /** Presses the ACPI power button; whether the guest's OS listens. */
  powerButton(): boolean;
  /** `info pci` text. */
  infoPci?(): string;
  /** `info pic` text. */
  infoPic?(): string;
  /** Each network card's receive filter, in device order (QMP `query-rx-filter`). */
  rxFilters?(): NicRxFilter[];
  /** The `-netdev` ids (net clients that are not cards), in command-line order. */
  netdevIds?(): string[];
  /**
   * QEMU's self-announcement of the network cards (`PcMachine.announceSelf`).
   *
   * @throws {RangeError} for parameters out of bounds.
   */
  announceSelf?(
    params: AnnounceParameters,
    options: { readonly interfaces?: readonly string[]; readonly id?: string },
  ): void;
  /** Number of vCPUs. */
  readonly cpus: number;
  /** The host thread id of each vCPU. */
  threadIds(): number[];
  /** `length` bytes of guest-physical memory at `addr` (holes read as zeros, as in QEMU). */
  readPhysical(addr: bigint, length: number): Uint8Array;
  /** The guest-physical address of `vaddr` for vCPU `cpu`, or null when it is not mapped. */
  translate(cpu: number, vaddr: bigint): bigint | null;
  /** Writes a snapshot into `dir` (a diff with `diff`) and says what it wrote (cli/snapshot_cli.ts). */
  snapshot?(dir: string, diff: boolean): SnapshotSummary;
}

/** What a snapshot wrote: QMP `x-kvmts-snapshot-save`'s return, and the monitor's line. */
export interface SnapshotSummary {
  /** Full, or only the pages written since the last snapshot. */
  kind: "full" | "diff";
  /** The directory. */
  dir: string;
  /** Pages in its memory file. */
  pages: number;
  /** Bytes of its state file. */
  stateBytes: number;
}

/**
 * The one line a snapshot prints (the monitor, `--snapshot-to`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatSnapshotSummary } from "./monitor_commands.ts";
 * assert.equal(
 *   formatSnapshotSummary({ kind: "diff", dir: "/tmp/s", pages: 3, stateBytes: 900 }),
 *   "snapshot: diff snapshot in /tmp/s: 3 pages of memory, 900 bytes of state",
 * );
 * ```
 */
export function formatSnapshotSummary(s: SnapshotSummary): string {
  return `snapshot: ${s.kind} snapshot in ${s.dir}: ${s.pages} pages of memory, ${s.stateBytes} bytes of state`;
}

/** How the commands reach the rest of the front-end. */
export interface MonitorHooks {
  /** Sends a QMP event to every negotiated client. */
  event(name: string, data?: Json): void;
  /**
   * Ends the current run: `quit` for good, `reset` to reset the machine and run it again (held
   * stopped if it was).
   */
  end(kind: "quit" | "reset"): void;
  /**
   * Whether a reset reboots (QEMU's default, and `-reboot` here) or ends the run (`-no-reboot`,
   * this front-end's default): QEMU then turns even a `system_reset` into a SHUTDOWN. Default true.
   */
  reboot?: boolean;
}

/** QEMU's run states that this machine can be in while it can answer. */
export type RunState = "running" | "paused" | "prelaunch" | "debug";

/** The commands QMP offers (`query-commands` lists them), in QEMU's order of registration. */
export const QMP_COMMANDS = [
  "human-monitor-command",
  "cont",
  "stop",
  "pmemsave",
  "memsave",
  "system_powerdown",
  "system_reset",
  "query-cpus-fast",
  "quit",
  "query-commands",
  "query-version",
  "qmp_capabilities",
  "query-status",
  "x-kvmts-snapshot-save",
  "query-rx-filter",
  "announce-self",
] as const;

/** The block size of `memsave` and `pmemsave` reads, QEMU's. */
const SAVE_CHUNK = 1024;
const PAGE_SIZE = 4096n;

/**
 * The commands, over one machine. Not reentrant; all calls come from the VM thread.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MonitorCommands } from "./monitor_commands.ts";
 * const events: string[] = [];
 * const machine = {
 *   mtree: () => "", registers: () => "", powerButton: () => true, cpus: 1, threadIds: () => [42],
 *   readPhysical: (_a: bigint, n: number) => new Uint8Array(n), translate: (_c: number, v: bigint) => v,
 * };
 * const m = new MonitorCommands(machine, { event: (name) => void events.push(name), end: () => {} });
 * m.stop();
 * assert.deepEqual(m.queryStatus(), { status: "paused", singlestep: false, running: false });
 * m.cont();
 * assert.deepEqual(events, ["STOP", "RESUME"]);
 * ```
 */
export class MonitorCommands {
  readonly #machine: MonitorMachine;
  readonly #hooks: MonitorHooks;
  /** Cards whose NIC_RX_FILTER_CHANGED was sent and not read back with query-rx-filter since. */
  readonly #rxFilterQuiet = new Set<number>();
  #state: RunState = "running";
  #ended = false;

  constructor(machine: MonitorMachine, hooks: MonitorHooks) {
    this.#machine = machine;
    this.#hooks = hooks;
  }

  /** The machine the commands act on. */
  get machine(): MonitorMachine {
    return this.#machine;
  }

  /** QEMU's run state. */
  get state(): RunState {
    return this.#state;
  }

  /** Whether the vCPUs must stay out of `KVM_RUN` (stopped, or reset while stopped). */
  get paused(): boolean {
    return this.#state !== "running";
  }

  /** Whether a command ended the run (quit, reset): the front-end leaves its stopped loop. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The front-end starts a run (again): a reset while stopped leaves the machine in prelaunch. */
  startRun(): void {
    this.#ended = false;
  }

  /** `query-status`. */
  queryStatus(): Json {
    return { status: this.#state, singlestep: false, running: this.#state === "running" };
  }

  /** `stop`: the vCPUs leave `KVM_RUN` and stay out; STOP when it was running. */
  stop(): void {
    if (this.#state !== "running") return;
    this.#state = "paused";
    this.#hooks.event("STOP");
  }

  /** `-S`: the first run starts held, in QEMU's `prelaunch`, until `cont` (or a debugger's continue). */
  startPaused(): void {
    if (this.#state === "running") this.#state = "prelaunch";
  }

  /** A debugger stopped the machine (a breakpoint, a step, Ctrl-C): QEMU's `debug` state, STOP. */
  debugStop(): void {
    if (this.#state === "debug") return;
    const wasRunning = this.#state === "running";
    this.#state = "debug";
    if (wasRunning) this.#hooks.event("STOP");
  }

  /** `cont`: RESUME, and the vCPUs run again. */
  cont(): void {
    if (this.#state === "running") return;
    this.#state = "running";
    this.#hooks.event("RESUME");
  }

  /**
   * `system_reset`: RESET (guest false, as QEMU's QMP reset), then the run ends and the machine is
   * reset and run again; a stopped machine stays stopped, in QEMU's `prelaunch`. Without reboot
   * (`-no-reboot`) it is QEMU's SHUTDOWN with reason host-qmp-system-reset, and the run ends.
   */
  systemReset(): void {
    if (this.#hooks.reboot === false) {
      // QEMU's qemu_system_reset_request under -no-reboot: a shutdown, with the reset's reason.
      this.#hooks.event("SHUTDOWN", { guest: false, reason: "host-qmp-system-reset" });
      this.#ended = true;
      this.#hooks.end("quit");
      return;
    }
    this.#hooks.event("RESET", { guest: false, reason: "host-qmp-system-reset" });
    if (this.#state === "paused") this.#state = "prelaunch";
    this.#ended = true;
    this.#hooks.end("reset");
  }

  /** `system_powerdown`: POWERDOWN, and the ACPI power button; whether the guest listens. */
  systemPowerdown(): boolean {
    this.#hooks.event("POWERDOWN");
    return this.#machine.powerButton();
  }

  /**
   * `quit`: SHUTDOWN (guest false, reason host-qmp-quit), then the run ends. A quit because the
   * process got SIGTERM, SIGHUP or SIGINT has QEMU's reason for it, host-signal.
   */
  quit(reason: "host-qmp-quit" | "host-signal" = "host-qmp-quit"): void {
    this.#hooks.event("SHUTDOWN", { guest: false, reason });
    this.#ended = true;
    this.#hooks.end("quit");
  }

  /** `query-cpus-fast`, with QEMU's `pc` values for a CPU per socket. */
  queryCpusFast(): Json {
    const tids = this.#machine.threadIds();
    return Array.from({ length: this.#machine.cpus }, (_, i) => ({
      "thread-id": tids[i] ?? 0,
      props: { "core-id": 0, "thread-id": 0, "socket-id": i },
      "qom-path": `/machine/unattached/device[${i}]`,
      "cpu-index": i,
      target: "x86_64",
    }));
  }

  /** `query-version`. */
  queryVersion(): Json {
    return { qemu: { ...QMP_VERSION.qemu }, package: QMP_VERSION.package };
  }

  /**
   * `query-rx-filter`: each card's receive filter (or the one named `name`) as QEMU 7.2's
   * `virtio_net_query_rxfilter` reports it — its MAC lists newest entry first, its VLAN ids highest
   * first, `broadcast-allowed`
   * holding the no-broadcast flag (QEMU's own slip), and, without CTRL_VLAN negotiated, `vlan` "all"
   * with every id listed (QEMU fills its table then).
   *
   * @throws {QmpError} with QEMU's words for a `name` that is a `-netdev` or nothing at all.
   */
  queryRxFilter(name?: string): Json {
    const nics = this.#machine.rxFilters?.() ?? [];
    if (name !== undefined) {
      if (this.#machine.netdevIds?.().includes(name)) {
        throw new QmpError("GenericError", `net client(${name}) isn't a NIC`);
      }
      const index = nics.findIndex((n) => n.name === name);
      if (index < 0) throw new QmpError("GenericError", `invalid net client name: ${name}`);
      this.#rxFilterQuiet.delete(index); // a query arms the card's next NIC_RX_FILTER_CHANGED
      return [rxFilterInfo(nics[index])];
    }
    this.#rxFilterQuiet.clear();
    return nics.map(rxFilterInfo);
  }

  /**
   * The driver of card `index` (of {@link MonitorMachine.rxFilters}) changed its receive filter:
   * QMP's NIC_RX_FILTER_CHANGED with its `name` (its id; none without one) and QOM `path`, once —
   * as QEMU, the card stays quiet then until a `query-rx-filter` has read its filter again.
   */
  rxFilterChanged(index: number): void {
    if (this.#rxFilterQuiet.has(index)) return;
    const nic = this.#machine.rxFilters?.()[index];
    if (!nic) return;
    this.#rxFilterQuiet.add(index);
    this.#hooks.event(
      "NIC_RX_FILTER_CHANGED",
      nic.id === undefined ? { path: nic.path } : {
        name: nic.id,
        path: nic.path,
      },
    );
  }

  /** `query-commands`. */
  queryCommands(): Json {
    return QMP_COMMANDS.map((name) => ({ name }));
  }

  /** `info registers` text of `cpu` (or every vCPU). */
  registers(cpu: number | "all"): string {
    return this.#machine.registers(cpu);
  }

  /** `info mtree` text. */
  mtree(options: MtreeOptions): string {
    return this.#machine.mtree(options);
  }

  /** `info pci` text, or null when the machine has no PCI listing. */
  infoPci(): string | null {
    return this.#machine.infoPci?.() ?? null;
  }

  /** `info pic` text (QEMU's format), or null when the machine has no such listing. */
  infoPic(): string | null {
    return this.#machine.infoPic?.() ?? null;
  }

  /**
   * `memsave`: `size` bytes at virtual address `val` as vCPU `cpu` sees them, into `filename`.
   * Fails as QEMU does — the whole range named — when any page is not mapped.
   */
  memsave(val: bigint, size: bigint, filename: string, cpu = 0): void {
    if (cpu < 0 || cpu >= this.#machine.cpus) {
      throw new QmpError("GenericError", "Parameter 'cpu-index' expects a CPU number");
    }
    this.#save(val, size, filename, (addr, length) => {
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const va = BigInt.asUintN(64, addr + BigInt(done));
        const pa = this.#machine.translate(cpu, va);
        if (pa === null) return null;
        const inPage = Math.min(length - done, Number(PAGE_SIZE - (va % PAGE_SIZE)));
        out.set(this.#machine.readPhysical(pa, inPage), done);
        done += inPage;
      }
      return out;
    });
  }

  /**
   * `announce-self` (QMP; HMP `announce_self` with QEMU's migration defaults): each network card
   * announces itself in `params.rounds` rounds — a RARP frame through its backend, and its driver
   * asked to announce it. A machine without cards does nothing, as QEMU's. Parameters out of
   * bounds, or a host that refuses the timer, are a GenericError with one line.
   */
  announceSelf(
    params: AnnounceParameters,
    options: { readonly interfaces?: readonly string[]; readonly id?: string } = {},
  ): void {
    const problem = announceProblem(params);
    if (problem !== undefined) throw new QmpError("GenericError", `Parameter ${problem}`);
    try {
      this.#machine.announceSelf?.(params, options);
    } catch (e) {
      if (e instanceof Error && !(e instanceof QmpError)) {
        throw new QmpError("GenericError", e.message.split("\n")[0]);
      }
      throw e;
    }
  }

  /**
   * `snapshot save DIR [--diff]` (this front-end's; QMP `x-kvmts-snapshot-save`): a snapshot of
   * the machine, every vCPU held out of KVM_RUN while it is written; the run then goes on as it was.
   */
  snapshotSave(dir: string, diff: boolean): SnapshotSummary {
    if (!this.#machine.snapshot) throw new QmpError("GenericError", "this machine cannot take snapshots");
    try {
      return this.#machine.snapshot(dir, diff);
    } catch (e) {
      if (e instanceof Error && !(e instanceof QmpError)) {
        throw new QmpError("GenericError", e.message.split("\n")[0]);
      }
      throw e;
    }
  }

  /** `pmemsave`: `size` bytes at guest-physical `val` into `filename` (holes read as zeros). */
  pmemsave(val: bigint, size: bigint, filename: string): void {
    this.#save(
      val,
      size,
      filename,
      (addr, length) => this.#machine.readPhysical(BigInt.asUintN(64, addr), length),
    );
  }

  #save(
    val: bigint,
    size: bigint,
    filename: string,
    read: (addr: bigint, length: number) => Uint8Array | null,
  ): void {
    if (size < 0n) throw new QmpError("GenericError", "Parameter 'size' expects a non-negative size");
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(filename, { write: true, create: true, truncate: true, mode: 0o600 });
    } catch (e) {
      throw new QmpError("GenericError", `Could not open '${filename}': ${strerror(e)}`);
    }
    try {
      const addr = BigInt.asUintN(64, val);
      for (let done = 0n; done < size;) {
        const length = Number(size - done < BigInt(SAVE_CHUNK) ? size - done : BigInt(SAVE_CHUNK));
        const data = read(addr + done, length);
        if (data === null) {
          throw new QmpError(
            "GenericError",
            `Invalid addr 0x${addr.toString(16).padStart(16, "0")}/size ${size} specified`,
          );
        }
        for (let n = 0; n < data.length;) n += file.writeSync(data.subarray(n));
        done += BigInt(length);
      }
    } catch (e) {
      if (e instanceof QmpError) throw e;
      throw new QmpError("GenericError", `writing memory to '${filename}' failed`);
    } finally {
      file.close();
    }
  }
}

/** The C library's words for the errors a file open meets, as QEMU prints them. */
function strerror(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "No such file or directory";
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return "Permission denied";
  }
  if (e instanceof Deno.errors.IsADirectory) return "Is a directory";
  if (e instanceof Deno.errors.NotADirectory) return "Not a directory";
  return e instanceof Error ? e.message : String(e);
}

/** A MAC as QEMU prints one (`%.2x:`…). */
const macText = (mac: readonly number[]) => mac.map((b) => b.toString(16).padStart(2, "0")).join(":");

/** QEMU's `RxState` of a mode pair: none wins over all. */
const rxState = (none: boolean, all: boolean) => none ? "none" : all ? "all" : "normal";

/** One card's `RxFilterInfo`, members in QAPI schema order. */
function rxFilterInfo(nic: NicRxFilter): Json {
  const d = nic.filter.describe();
  const vlanTable = [...d.vlanTable].reverse();
  return {
    name: nic.name,
    promiscuous: d.promiscuous,
    multicast: rxState(d.rxMode.nomulti, d.rxMode.allmulti),
    unicast: rxState(d.rxMode.nouni, d.rxMode.alluni),
    vlan: !nic.vlanFiltering ? "all" : vlanTable.length === 0 ? "none" : "normal",
    "broadcast-allowed": d.rxMode.nobcast,
    "multicast-overflow": d.multicastOverflow,
    "unicast-overflow": d.unicastOverflow,
    "main-mac": macText(d.mac),
    "vlan-table": vlanTable,
    "unicast-table": d.unicastTable.map(macText).reverse(),
    "multicast-table": d.multicastTable.map(macText).reverse(),
  };
}
