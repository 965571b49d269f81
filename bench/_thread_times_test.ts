import assert from "node:assert/strict";
import { parseThreadStat, threadTimes, threadTimesSince } from "./_thread_times.ts";

Deno.test("parseThreadStat reads utime, stime and guest_time of this process's own stat line", () => {
  const own = parseThreadStat(Deno.readTextFileSync(`/proc/${Deno.pid}/stat`));
  assert.ok(own.name.length > 0 && own.name.length <= 15, own.name);
  for (const value of [own.user, own.system, own.guest]) assert.ok(Number.isInteger(value) && value >= 0);
  assert.equal(own.guest, 0, "no vCPU ran on this thread");
});

Deno.test("parseThreadStat counts fields after the last parenthesis, whatever the name holds", () => {
  const rest = Array.from({ length: 50 }, (_, i) => String(i + 3));
  for (const name of ["x", "a b", "(", ")", ") (", "deno) R 1 2"]) {
    assert.deepEqual(parseThreadStat(`42 (${name}) ${rest.join(" ")}`), {
      name,
      user: 14,
      system: 15,
      guest: 43,
    });
  }
});

Deno.test("parseThreadStat refuses what is not a stat line", () => {
  for (const line of ["", "42 deno R 1", "42 (deno) R 1 2 3", "no parentheses at all"]) {
    assert.throws(() => parseThreadStat(line), RangeError);
  }
});

Deno.test("threadTimes lists this process's threads, whose CPU time grows while this test computes", () => {
  // The test may run on a thread other than the process's first one (deno test does): sum them all.
  const cpu = () => [...threadTimes(Deno.pid).values()].reduce((sum, t) => sum + t.user + t.system, 0);
  assert.ok(threadTimes(Deno.pid).has(Deno.pid), "the first thread's id is the process id");
  const before = cpu();
  let now = before;
  // A clock tick is 10 ms: compute until the kernel has counted one more (or 10 s went by).
  for (const end = performance.now() + 10_000; now === before && performance.now() < end;) {
    for (let i = 0; i < 1e5; i++) Math.sqrt(i);
    now = cpu();
  }
  assert.ok(now > before, "user + system time never moved");
});

Deno.test("threadTimesSince leaves out idle threads and counts new ones whole", () => {
  const t = (user: number, system: number, guest = 0) => ({ name: "t", user, system, guest });
  const lines = threadTimesSince(
    new Map([[1, t(5, 5)], [2, t(9, 1)]]),
    new Map([[1, t(5, 5)], [3, t(4, 0, 2)]]),
    2,
  );
  assert.deepEqual(lines, ["t: user 20.00 (guest 10.00) + system 0.00 ms"]);
});

Deno.test("threadTimes reads each thread's context switches, and threadTimesSince reports them per unit", () => {
  const before = threadTimes(Deno.pid);
  const own = before.get(Deno.pid)!;
  assert.ok(own.voluntary !== undefined && own.involuntary !== undefined);
  const after = new Map([[Deno.pid, { ...own, user: own.user + 1, voluntary: own.voluntary + 8 }]]);
  assert.match(threadTimesSince(before, after, 4)[0], /, switches 2\.00 waited \+ 0\.00 preempted$/);
});
