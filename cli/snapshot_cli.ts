/**
 * The front-end's snapshot flags (`--snapshot-to DIR --snapshot-after DURATION`, `--restore DIR`)
 * and the monitor command `snapshot save DIR [--diff]`, kept apart from `main.ts`: parsing, the
 * timer Worker, and the one-line reports.
 *
 * @module
 */

import { DeviceStateError } from "../devices/device_state.ts";
import { type VcpuKickTarget, vcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import type { BootPlan } from "../machine/loader/mod.ts";
import type { RunOutcome } from "../machine/runner.ts";
import { PcMachine, type PcMachineOptions } from "../machine/pc/pc_machine.ts";
import { SnapshotMismatchError } from "../machine/snapshot/errors.ts";
import { SnapshotFormatError } from "../machine/snapshot/format.ts";
import { formatSnapshotSummary, type SnapshotSummary } from "./monitor_commands.ts";
import { KickFence } from "../machine/kick_fence.ts";
import type { SnapshotTimerInit } from "./snapshot_timer_worker.ts";
import { bundledModule } from "../machine/bundled_module.ts";

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000 };

/**
 * `500ms`, `2s`, `1.5s`, `1m` (a bare number is seconds) in milliseconds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseDuration } from "./snapshot_cli.ts";
 * assert.equal(parseDuration("500ms"), 500);
 * assert.equal(parseDuration("2s"), 2000);
 * assert.throws(() => parseDuration("soon"), RangeError);
 * ```
 *
 * @throws {RangeError} for anything else.
 */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!match) throw new RangeError(`"${text}" is not a duration such as 500ms, 2s or 1m`);
  const ms = Number(match[1]) * DURATION_UNITS[match[2] ?? "s"];
  if (!Number.isFinite(ms) || ms > 2 ** 31) throw new RangeError(`"${text}" is too long a duration`);
  return Math.round(ms);
}

/** The `--snapshot-after` timer: a Worker that wakes the VM thread when the snapshot is due. */
export class SnapshotTimer {
  /** The kick fence's one cell, shared with the Worker. */
  readonly #fenceCell = new Int32Array(new SharedArrayBuffer(4));
  readonly #fence = new KickFence(this.#fenceCell, 0);
  readonly #due = new Int32Array(new SharedArrayBuffer(4));
  readonly #worker: Worker;

  private constructor(worker: Worker) {
    this.#worker = worker;
  }

  /**
   * Starts the Worker and, once it is up, counts `delayMs` from then; `target` is how the VM thread
   * is woken. Resolves when the count has started (start the guest after that).
   */
  static async start(
    delayMs: number,
    target: { kick: VcpuKickTarget } | { doorbell: import("../kvm/doorbell.ts").Doorbell },
  ): Promise<SnapshotTimer> {
    const worker = new Worker(
      bundledModule(new URL("./snapshot_timer_worker.ts", import.meta.url)),
      { type: "module" },
    );
    await new Promise<void>((resolve, reject) => {
      worker.onmessage = () => resolve();
      worker.onerror = (e) => reject(new Error(`the snapshot timer worker failed: ${e.message}`));
    }).catch((e) => {
      worker.terminate();
      throw e;
    });
    const timer = new SnapshotTimer(worker);
    const init: SnapshotTimerInit = {
      fence: timer.#fenceCell.buffer as SharedArrayBuffer,
      due: timer.#due.buffer as SharedArrayBuffer,
      delayMs,
      ...target,
    };
    worker.postMessage(init);
    return timer;
  }

  /** Whether {@link take} has said yes: the snapshot was due and its turn came. */
  get taken(): boolean {
    return Atomics.load(this.#due, 0) === 2;
  }

  /** VM thread: true once, when the time has come. */
  take(): boolean {
    if (Atomics.compareExchange(this.#due, 0, 1, 2) !== 1) return false;
    Atomics.notify(this.#due, 0);
    return true;
  }

  /** VM thread: no kick after this returns; the Worker is gone. */
  close(): void {
    this.#fence.close();
    this.#worker.terminate();
  }
}

/** The snapshot flags, spelt with two dashes. */
export const SNAPSHOT_FLAGS = ["snapshot-to", "snapshot-after", "restore"];

/** The parsed snapshot flags. */
export interface SnapshotFlags {
  /** `--snapshot-to DIR` with `--snapshot-after DURATION`. */
  readonly to?: { readonly dir: string; readonly afterMs: number };
  /** `--restore DIR`, with the `-m` and `-smp` given beside it (to be checked against the snapshot). */
  readonly restore?: { readonly dir: string; readonly ramSize?: bigint; readonly cpus?: number };
}

/**
 * The snapshot flags of a parsed command line (`values` from `parseArgs`).
 *
 * @throws {RangeError} for a bad duration, one of the pair without the other, or `--restore` with
 *   a guest to load.
 */
export function parseSnapshotFlags(
  values: Record<string, unknown>,
  given: { ramSize: bigint; cpus: number },
): SnapshotFlags {
  const to = values["snapshot-to"] as string | undefined;
  const after = values["snapshot-after"] as string | undefined;
  const restore = values.restore as string | undefined;
  if ((to === undefined) !== (after === undefined)) {
    throw new RangeError("--snapshot-to and --snapshot-after go together");
  }
  if (restore !== undefined) {
    for (const flag of ["kernel", "initrd", "append", "bios"]) {
      if (values[flag] !== undefined) {
        throw new RangeError(`--restore takes the guest from the snapshot: drop -${flag}`);
      }
    }
    if ((values.device as string[] | undefined)?.some((d) => d.split(",")[0] === "loader")) {
      throw new RangeError("--restore takes the guest from the snapshot: drop -device loader");
    }
  }
  let afterMs = 0;
  if (after !== undefined) {
    try {
      afterMs = parseDuration(after);
    } catch (e) {
      throw new RangeError(`--snapshot-after: ${(e as Error).message}`);
    }
  }
  return {
    ...(to !== undefined ? { to: { dir: to, afterMs } } : {}),
    ...(restore !== undefined
      ? {
        restore: {
          dir: restore,
          ...(values.m !== undefined ? { ramSize: given.ramSize } : {}),
          ...(values.smp !== undefined ? { cpus: given.cpus } : {}),
        },
      }
      : {}),
  };
}

/** A placeholder boot plan for a restore: the snapshot holds the real one, and nothing runs it. */
export const RESTORED_PLAN: BootPlan = {
  writes: [],
  cpu: { mode: "real", rip: 0n },
  description: "restored from a snapshot",
};

/** Bytes the guest has sent through COM1 in this run (continuing a restored snapshot's count). */
let serialBytes = 0;

/** `serial`, counting the bytes (the count is stored in snapshots: where their output stands). */
export function countSerial(serial?: (byte: number) => void): (byte: number) => void {
  return (byte) => {
    serialBytes++;
    serial?.(byte);
  };
}

/** A machine as the command line asks: created, or restored from `--restore`. */
export async function createOrRestore(flags: SnapshotFlags, options: PcMachineOptions): Promise<PcMachine> {
  if (!flags.restore) return await PcMachine.create(options);
  const { dir, ramSize, cpus } = flags.restore;
  const machine = await PcMachine.restore(dir, {
    kvm: options.kvm,
    serial: options.serial,
    traceMemslots: options.traceMemslots,
    pciDevices: options.pciDevices,
    log: options.log,
    ...(ramSize !== undefined ? { ramSize } : {}),
    ...(cpus !== undefined ? { cpus } : {}),
    ...(options.irqchip !== undefined ? { irqchip: options.irqchip } : {}),
  });
  const frontEnd = machine.restoredFrontEnd;
  if (frontEnd && typeof frontEnd === "object" && "serialBytes" in frontEnd) {
    serialBytes = Number(frontEnd.serialBytes);
  }
  return machine;
}

/** The timer of `--snapshot-after`, started when the guest starts (undefined without the flag). */
export async function startSnapshotTimer(
  flags: SnapshotFlags,
  pc: PcMachine,
): Promise<SnapshotTimer | undefined> {
  if (!flags.to) return undefined;
  return await SnapshotTimer.start(
    flags.to.afterMs,
    pc.doorbell ? { doorbell: pc.doorbell } : { kick: vcpuKickTarget(pc.vcpu) },
  );
}

function save(pc: PcMachine, dir: string, diff: boolean): SnapshotSummary {
  // Read once the vCPUs are held: a pending serial write served by the pause counts as before it.
  const { kind, pages, stateBytes } = pc.snapshot(dir, { diff, frontEnd: () => ({ serialBytes }) });
  return { kind, dir, pages, stateBytes };
}

/**
 * Takes the `--snapshot-to` snapshot (the timer said so); returns the line to print, and whether
 * the snapshot was written.
 */
export function snapshotOnTimer(flags: SnapshotFlags, pc: PcMachine): { line: string; written: boolean } {
  try {
    return { line: formatSnapshotSummary(save(pc, flags.to!.dir, false)), written: true };
  } catch (e) {
    const why = isSnapshotError(e) || e instanceof Error ? (e as Error).message : String(e);
    return { line: `snapshot: ${why}`, written: false };
  }
}

/**
 * For a run that ended with its `--snapshot-to` snapshot not written, the line to print and the
 * run's status: 1 when writing it failed, or when the guest stopped (or failed) before the
 * snapshot was taken — a script that asked for a snapshot must not mistake such a run for one that
 * made it —, and the quit's own status when the run was ended by a quit or a signal before it.
 * Undefined when the snapshot was written, or none was asked for.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { snapshotMissed } from "./snapshot_cli.ts";
 * const flags = { to: { dir: "/tmp/s", afterMs: 2000 } };
 * assert.equal(snapshotMissed(flags, { taken: true, written: true }, "exit", 33), undefined);
 * assert.deepEqual(snapshotMissed(flags, { taken: false, written: false }, "exit", 33), {
 *   line: "snapshot: the guest stopped before the snapshot was taken (--snapshot-after 2000 ms): " +
 *     "nothing written to /tmp/s",
 *   status: 1,
 * });
 * assert.deepEqual(snapshotMissed(flags, { taken: false, written: false }, "quit", 0), {
 *   line: "snapshot: the run was ended before the snapshot was taken (--snapshot-after 2000 ms): " +
 *     "nothing written to /tmp/s",
 *   status: 0,
 * });
 * assert.deepEqual(snapshotMissed(flags, { taken: true, written: false }, "quit", 0), {
 *   line: "snapshot: not written to /tmp/s (the error is above)",
 *   status: 1,
 * });
 * ```
 */
export function snapshotMissed(
  flags: SnapshotFlags,
  timer: { readonly taken: boolean; readonly written: boolean },
  ended: RunOutcome["kind"],
  status: number,
): { line: string; status: number } | undefined {
  if (!flags.to || timer.written) return undefined;
  const { dir, afterMs } = flags.to;
  if (timer.taken) return { line: `snapshot: not written to ${dir} (the error is above)`, status: 1 };
  const who = ended === "quit" ? "the run was ended" : "the guest stopped";
  return {
    line:
      `snapshot: ${who} before the snapshot was taken (--snapshot-after ${afterMs} ms): nothing written to ${dir}`,
    status: ended === "quit" ? status : 1,
  };
}

/** The monitor's `snapshot save DIR [--diff]` over `pc`. */
export function snapshotCommand(pc: PcMachine): (dir: string, diff: boolean) => SnapshotSummary {
  return (dir, diff) => save(pc, dir, diff);
}

/** Whether `e` is a snapshot that could not be written or used (printed as one line). */
export function isSnapshotError(e: unknown): e is Error {
  return e instanceof SnapshotFormatError || e instanceof SnapshotMismatchError ||
    e instanceof DeviceStateError;
}

/**
 * Why `--snapshot-to` cannot run in the nested KVM VM (its file system is a throw-away overlay:
 * the snapshot would be written where nobody sees it), or undefined. `--restore` can: it only reads.
 */
export function nestedSnapshotRefusal(flags: SnapshotFlags, reason: string): string | undefined {
  if (!flags.to) return undefined;
  return `--snapshot-to needs KVM on this host (${reason}); the nested VM's files are not written back`;
}
