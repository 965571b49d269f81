/**
 * The test runner's half inside the nested KVM VM: runs each unit (a test file, with a filter naming
 * the tests of it to run) as its own `deno test` process, each with a deadline, and writes one JUnit
 * report per unit.
 *
 * Why one process a unit: one `deno test` over every file would lose every result to a single hung
 * guest — the whole nested run then ends at its own timeout and nothing says which test hung. Here a
 * unit that passes its deadline is killed with its process group (the front-end children its tests
 * started go with it), a report names it as timed out, and the other units' results stand.
 *
 * Several drivers, each in its own nested VM, can share one report folder: a driver claims a unit by
 * creating its start marker (exclusively, so two never run the same unit) and takes the next unit
 * nobody has claimed, so the VMs share the work however long each unit takes.
 *
 *   deno run --allow-all tools/_nested_tests.ts SPEC.json
 *
 * SPEC.json is a {@link NestedSpec}. Prints each unit's output as it comes and one line per unit
 * when it ends.
 *
 * @module
 */

/** One `deno test` run of the nested side: a file and the exact names of the tests in it to run. */
export interface NestedUnit {
  /** The test file. */
  file: string;
  /** The tests to run (`--filter` matching exactly these names). */
  names: string[];
}

/** What the host side asks the nested side to run. */
export interface NestedSpec {
  /** `deno test` arguments before the filter and the file (permissions, `--no-check`, …). */
  args: string[];
  /** The units, in the order they are taken. */
  units: NestedUnit[];
  /**
   * Where the reports go: `<dir>/<n>.xml` for unit n, `<dir>/<n>.timeout` when it was killed; shared
   * by the drivers of every VM.
   */
  reportDir: string;
  /** Seconds one unit may take. */
  unitTimeoutSeconds: number;
  /** Units this driver runs at once. */
  jobs: number;
  /** Which VM this driver runs in (1, 2, …): names its log and heartbeat, and marks what it claims. */
  vm: number;
  /**
   * Seconds this driver may use in all (default: no limit): no unit starts after them, and a unit
   * still running then is killed, its marker saying the run's time ran out.
   */
  budgetSeconds?: number;
}

/** A `deno test --filter` regular expression that matches exactly `names`. */
export function exactNames(names: readonly string[]): string {
  const escaped = [...new Set(names)].map((name) => name.replace(/[\\^$.*+?()[\]{}|\/]/g, "\\$&"));
  return `/^(?:${escaped.join("|")})$/`;
}

/** The report path of unit `n`. */
export function reportPath(dir: string, n: number): string {
  return `${dir}/${n}.xml`;
}

/** The marker of unit `n` when it was killed at its deadline (its text: seconds and last output). */
export function timeoutPath(dir: string, n: number): string {
  return `${dir}/${n}.timeout`;
}

/**
 * The marker of unit `n` once a driver has claimed it (created exclusively; its text is the VM's
 * number): a frozen VM's host side learns which units it ran, and no other driver takes it.
 */
export function startedPath(dir: string, n: number): string {
  return `${dir}/${n}.started`;
}

/**
 * The heartbeat of VM `vm`'s driver, rewritten every {@link HEARTBEAT_MS}: the host side takes a
 * heartbeat that stops for minutes as a frozen VM, whatever the VM's console does.
 */
export function heartbeatPath(dir: string, vm: number): string {
  return `${dir}/heartbeat-${vm}`;
}

/** The log of VM `vm`'s driver: everything it prints, readable from the host while it runs. */
export function driverLogPath(dir: string, vm: number): string {
  return `${dir}/driver-${vm}.log`;
}

/** How often the driver rewrites its heartbeat. */
export const HEARTBEAT_MS = 5_000;

/** The marker of unit `n` when processes its tests started outlived it (their command lines). */
export function leftoverPath(dir: string, n: number): string {
  return `${dir}/${n}.leftover`;
}

/** The processes still in process group `group`, as `pid command line`. */
async function leftovers(group: number): Promise<string[]> {
  const output = await new Deno.Command("pgrep", { args: ["-a", "-g", String(group)], stdout: "piped" })
    .output();
  return new TextDecoder().decode(output.stdout).split("\n").filter((line) => line.trim() !== "");
}

/** How much of a killed unit's output its timeout marker keeps. */
const TAIL_CHARS = 4000;

/** Claims unit `n` for this driver: false when another driver (or an earlier boot) has it. */
async function claim(spec: NestedSpec, n: number): Promise<boolean> {
  try {
    await Deno.writeTextFile(startedPath(spec.reportDir, n), String(spec.vm), { createNew: true });
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return false;
    throw error;
  }
}

/** A unit's name in the log: its file, and its test when the file has others. */
function unitName(spec: NestedSpec, n: number): string {
  const { file, names } = spec.units[n];
  return names.length === 1 ? `${file} "${names[0]}"` : file;
}

async function runUnit(spec: NestedSpec, n: number, endsAt: number): Promise<void> {
  const { file, names } = spec.units[n];
  const label = unitName(spec, n);
  const started = performance.now();
  const limitMs = Math.min(spec.unitTimeoutSeconds * 1000, endsAt - started);
  const limit = Math.round(limitMs / 1000);
  const why = limitMs < spec.unitTimeoutSeconds * 1000 ? "the nested run's time ran out" : "deadline";
  // setsid: the unit's `deno test` leads a process group of its own, so a deadline kills the
  // front-end processes its tests spawned too (they would keep the VM busy otherwise).
  const child = new Deno.Command("setsid", {
    args: [
      Deno.execPath(),
      "test",
      ...spec.args,
      `--filter=${exactNames(names)}`,
      `--junit-path=${reportPath(spec.reportDir, n)}`,
      file,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let tail = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>, to: typeof Deno.stdout | typeof Deno.stderr) => {
    for await (const chunk of stream) {
      emit(chunk, to);
      tail = (tail + decoder.decode(chunk, { stream: true })).slice(-TAIL_CHARS);
      lastOutput = performance.now();
    }
  };
  const pumps = Promise.all([pump(child.stdout, Deno.stdout), pump(child.stderr, Deno.stderr)]);
  running.set(child.pid, label);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }, limitMs);
  const status = await child.status;
  running.delete(child.pid);
  clearTimeout(timer);
  await pumps.catch(() => {});
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  // Whatever is left in the unit's process group was started by its tests and outlived them: a
  // leak (a guest still running eats the VM's CPUs and slows every unit after it). Name and end it.
  const left = await leftovers(child.pid);
  if (left.length > 0) {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // gone by now
    }
    await Deno.writeTextFile(leftoverPath(spec.reportDir, n), left.join("\n"));
    say(`nested: ${label}: ${left.length} process(es) outlived it, killed:\n  ${left.join("\n  ")}`);
  }
  if (timedOut) {
    await Deno.writeTextFile(
      timeoutPath(spec.reportDir, n),
      `killed after ${limit} s (${why}); its last output:\n${tail}`,
    );
    say(`nested: ${label}: KILLED after ${limit} s (${why})`);
  } else {
    say(`nested: ${label}: exited ${status.code} after ${seconds} s`);
  }
}

/** Where everything the driver prints also goes (in the writable share: readable from the host). */
let logPath = "";
/** Writes to the terminal, one at a time, in order. */
let writing: Promise<unknown> = Promise.resolve();

/**
 * Passes `chunk` on: appended to the log at once, and queued for `to`. The terminal is COM2 of the
 * VM; if it stalls, only the queue waits — the deadlines, the watchdog and the log go on.
 */
function emit(chunk: Uint8Array, to: typeof Deno.stdout | typeof Deno.stderr = Deno.stdout): void {
  if (logPath) Deno.writeFileSync(logPath, chunk, { append: true });
  writing = writing.then(async () => {
    for (let done = 0; done < chunk.length;) done += await to.write(chunk.subarray(done));
  }).catch(() => {});
}

/** A line of the driver's own. */
function say(line: string): void {
  emit(new TextEncoder().encode(`${line}\n`));
}

/** The units running now, by the pid of their `deno test`. */
const running = new Map<number, string>();
/** When a running unit last printed. */
let lastOutput = performance.now();
/** After this long without output the driver prints what the VM is doing (a hang's evidence). */
const QUIET_MS = 90_000;

/**
 * What the VM is doing: the busiest processes, and for each running unit every thread of its
 * process group with its state and where in the kernel it waits.
 */
async function snapshot(): Promise<string> {
  const run = async (cmd: string, args: string[]) =>
    new TextDecoder().decode(
      (await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output()).stdout,
    );
  let text = (await run("top", ["-b", "-n", "1"])).split("\n").slice(0, 14).join("\n");
  for (const [pid, file] of running) {
    text += `\n${file} (process group ${pid}):\n` +
      await run("ps", ["-L", "-o", "pid,tid,stat,pcpu,wchan:28,comm,args", "-g", String(pid)]);
  }
  return text;
}

async function main(specPath: string): Promise<void> {
  const spec: NestedSpec = JSON.parse(await Deno.readTextFile(specPath));
  logPath = driverLogPath(spec.reportDir, spec.vm);
  const watchdog = setInterval(async () => {
    if (running.size === 0) return;
    const now = await snapshot();
    Deno.writeTextFileSync(`${spec.reportDir}/watch-${spec.vm}.log`, now);
    if (performance.now() - lastOutput < QUIET_MS) return;
    lastOutput = performance.now();
    say(`nested: no output for ${QUIET_MS / 1000} s; the VM now:\n${now}`);
  }, 15_000);
  const beat = () =>
    Deno.writeTextFile(
      heartbeatPath(spec.reportDir, spec.vm),
      `${new Date().toISOString()} ${[...running.values()]}\n`,
    )
      .catch(() => {});
  await beat();
  const heartbeat = setInterval(beat, HEARTBEAT_MS);
  const endsAt = performance.now() + (spec.budgetSeconds ?? Infinity) * 1000;
  let next = 0;
  const lane = async () => {
    while (next < spec.units.length) {
      const n = next++;
      if (performance.now() >= endsAt) {
        if (!await claim(spec, n)) continue;
        await Deno.writeTextFile(
          timeoutPath(spec.reportDir, n),
          "not started (the nested run's time ran out)",
        );
        say(`nested: ${unitName(spec, n)}: not started, the nested run's time ran out`);
      } else if (await claim(spec, n)) {
        await runUnit(spec, n, endsAt);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, spec.jobs) }, lane));
  clearInterval(watchdog);
  clearInterval(heartbeat);
  // The terminal is the VM's serial port: if it stalled, what it did not take is in the log already,
  // and the driver must still end (the VM powers off after it).
  await Promise.race([writing, new Promise((resolve) => setTimeout(resolve, 10_000))]);
}

if (import.meta.main) {
  await main(Deno.args[0]);
  Deno.exit(0); // a write still queued for a stalled serial port would keep the process alive
}
