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

/** Every thread of process `pid` now, by thread id; a thread that ends while being read is left out. */
export function threadTimes(pid: number): Map<number, ThreadTimes> {
  const threads = new Map<number, ThreadTimes>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      threads.set(
        Number(entry.name),
        parseThreadStat(Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/stat`)),
      );
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return threads;
}

/**
 * What each thread spent between two readings, in ms per `count` (an I/O, a MiB): one line per
 * thread that ran, `name: user U (guest G) + system S ms`, threads born in between counted whole.
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
    lines.push(
      `${now.name}: user ${ms(user)} (guest ${ms(now.guest - then.guest)}) + system ${ms(system)} ms`,
    );
  }
  return lines;
}
