/**
 * CPU time per thread of a process, from Linux's `/proc/PID/task/TID/stat` (proc(5)): what
 * `bench:io --threads` reports around each measured guest command, so that a VMM's cost per I/O can
 * be split into its VM thread, its helpers, its vCPU threads and the guest itself.
 *
 * @module
 */

/** One thread's CPU time so far, in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 on Linux). */
export interface ThreadTimes {
  /** The thread's name (`comm`), as the kernel keeps it (15 bytes at most). */
  readonly name: string;
  /** Time in user mode, guest time included (field 14, `utime`). */
  readonly user: number;
  /** Time in kernel mode (field 15, `stime`). */
  readonly system: number;
  /** Time running a guest's vCPU (field 43, `guest_time`), a part of {@link user}. */
  readonly guest: number;
  /** Times the thread gave up the CPU to wait (`voluntary_ctxt_switches` of its `status`), if read. */
  readonly voluntary?: number;
  /** Times the scheduler took the CPU from it (`nonvoluntary_ctxt_switches`), if read. */
  readonly involuntary?: number;
}

/**
 * Parses one `stat` line. The name sits in parentheses and may itself hold spaces and parentheses,
 * so the fields are counted from the last `)`.
 *
 * @throws {RangeError} when the line is not a stat line with at least 43 fields.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseThreadStat } from "./_thread_times.ts";
 * const rest = Array.from({ length: 50 }, (_, i) => String(i + 3)); // fields 3…52 hold their own number
 * const times = parseThreadStat(`1234 (V8 Worker) (x)) ${rest.join(" ")}`);
 * assert.deepEqual(times, { name: "V8 Worker) (x)", user: 14, system: 15, guest: 43 });
 * ```
 */
export function parseThreadStat(line: string): ThreadTimes {
  const open = line.indexOf("(");
  const close = line.lastIndexOf(")");
  const fields = close > open && open > 0 ? line.slice(close + 2).trim().split(" ") : [];
  // fields[0] is field 3 (state): field n is fields[n - 3].
  if (fields.length < 41) throw new RangeError(`not a /proc stat line: ${JSON.stringify(line.slice(0, 80))}`);
  const field = (n: number) => Number(fields[n - 3]);
  return { name: line.slice(open + 1, close), user: field(14), system: field(15), guest: field(43) };
}

/**
 * The context switch counts of a `status` file (proc(5)): `voluntary_ctxt_switches` and
 * `nonvoluntary_ctxt_switches`.
 *
 * @throws {RangeError} when either line is missing.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseThreadSwitches } from "./_thread_times.ts";
 * const status = "Name:\tdeno\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
 * assert.deepEqual(parseThreadSwitches(status), { voluntary: 12, involuntary: 3 });
 * ```
 */
export function parseThreadSwitches(status: string): { voluntary: number; involuntary: number } {
  const voluntary = /^voluntary_ctxt_switches:\s*(\d+)$/m.exec(status);
  const involuntary = /^nonvoluntary_ctxt_switches:\s*(\d+)$/m.exec(status);
  if (!voluntary || !involuntary) throw new RangeError("no context switch counts in this status file");
  return { voluntary: Number(voluntary[1]), involuntary: Number(involuntary[1]) };
}

/** Every thread of process `pid` now, by thread id; a thread that ends while being read is left out. */
export function threadTimes(pid: number): Map<number, ThreadTimes> {
  const threads = new Map<number, ThreadTimes>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const task = `/proc/${pid}/task/${entry.name}`;
      threads.set(Number(entry.name), {
        ...parseThreadStat(Deno.readTextFileSync(`${task}/stat`)),
        ...parseThreadSwitches(Deno.readTextFileSync(`${task}/status`)),
      });
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return threads;
}

/**
 * What each thread spent between two readings, in ms per `count` (an I/O, a MiB): one line per
 * thread that ran, `name: user U (guest G) + system S ms`, threads born in between counted whole;
 * where both readings have context switch counts, `, switches V waited + I preempted` per `count`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { threadTimesSince } from "./_thread_times.ts";
 * const before = new Map([[7, { name: "deno", user: 100, system: 10, guest: 0 }]]);
 * const after = new Map([
 *   [7, { name: "deno", user: 300, system: 30, guest: 0 }],
 *   [9, { name: "worker-1", user: 50, system: 10, guest: 40 }],
 * ]);
 * assert.deepEqual(threadTimesSince(before, after, 1000, 100), [
 *   "deno: user 2.00 (guest 0.00) + system 0.20 ms",
 *   "worker-1: user 0.50 (guest 0.40) + system 0.10 ms",
 * ]);
 * ```
 */
export function threadTimesSince(
  before: ReadonlyMap<number, ThreadTimes>,
  after: ReadonlyMap<number, ThreadTimes>,
  count: number,
  ticksPerSecond = 100,
): string[] {
  const ms = (ticks: number) => (ticks * 1000 / ticksPerSecond / count).toFixed(2);
  const lines: string[] = [];
  for (const [tid, now] of after) {
    const then = before.get(tid) ?? { user: 0, system: 0, guest: 0 };
    const user = now.user - then.user;
    const system = now.system - then.system;
    if (user === 0 && system === 0) continue;
    let line = `${now.name}: user ${ms(user)} (guest ${ms(now.guest - then.guest)}) + system ${
      ms(system)
    } ms`;
    const old = before.get(tid);
    if (now.voluntary !== undefined && now.involuntary !== undefined) {
      const per = (n: number) => (n / count).toFixed(2);
      line += `, switches ${per(now.voluntary - (old?.voluntary ?? 0))} waited + ${
        per(now.involuntary - (old?.involuntary ?? 0))
      } preempted`;
    }
    lines.push(line);
  }
  return lines;
}
