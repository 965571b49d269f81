/**
 * The test runner's half inside the nested KVM VM: runs each test file as its own `deno test`
 * process (two at a time), each with a deadline, and writes one JUnit report per file.
 *
 * Why per file: one `deno test` over every file would lose every result to a single hung guest —
 * the whole nested run then ends at its own timeout and nothing says which test hung. Here a file
 * that passes its deadline is killed with its process group (the front-end children its tests
 * started go with it), a report names it as timed out, and the other files' results stand.
 *
 *   deno run --allow-all tools/_nested_tests.ts SPEC.json
 *
 * SPEC.json is a {@link NestedSpec}. Prints each file's output as it comes and one line per file
 * when it ends.
 *
 * @module
 */

/** What the host side asks the nested side to run. */
export interface NestedSpec {
  /** `deno test` arguments before the file (permissions, `--filter`, …). */
  args: string[];
  /** The test files, in order. */
  files: string[];
  /** Where the reports go: `<dir>/<n>.xml` for file n, `<dir>/<n>.timeout` when it was killed. */
  reportDir: string;
  /** Seconds one file may take. */
  fileTimeoutSeconds: number;
  /** Files run at once. */
  jobs: number;
  /**
   * Indexes of files that run alone, after the others: the Linux boots, which the emulator stalls far
   * more often when another guest runs beside them (docs/nested-kvm.md).
   */
  alone?: number[];
  /** The files of this boot, by index (default: all); a reboot after a frozen VM runs the rest. */
  run?: number[];
  /**
   * Seconds this driver may use in all (default: no limit): no file starts after them, and a file
   * still running then is killed, its marker saying the run's time ran out.
   */
  budgetSeconds?: number;
}

/** The report path of file `n`. */
export function reportPath(dir: string, n: number): string {
  return `${dir}/${n}.xml`;
}

/** The marker of file `n` when it was killed at its deadline (its text: seconds and last output). */
export function timeoutPath(dir: string, n: number): string {
  return `${dir}/${n}.timeout`;
}

/** The marker of file `n` once it has started (a frozen VM's host side learns which files it ran). */
export function startedPath(dir: string, n: number): string {
  return `${dir}/${n}.started`;
}

/**
 * The driver's heartbeat, rewritten every {@link HEARTBEAT_MS}: the host side takes a heartbeat that
 * stops for minutes as a frozen VM, whatever the VM's console does.
 */
export function heartbeatPath(dir: string): string {
  return `${dir}/heartbeat`;
}

/** How often the driver rewrites its heartbeat. */
export const HEARTBEAT_MS = 5_000;

/** The marker of file `n` when processes its tests started outlived it (their command lines). */
export function leftoverPath(dir: string, n: number): string {
  return `${dir}/${n}.leftover`;
}

/** The processes still in process group `group`, as `pid command line`. */
async function leftovers(group: number): Promise<string[]> {
  const output = await new Deno.Command("pgrep", { args: ["-a", "-g", String(group)], stdout: "piped" })
    .output();
  return new TextDecoder().decode(output.stdout).split("\n").filter((line) => line.trim() !== "");
}

/** How much of a killed file's output its timeout marker keeps. */
const TAIL_CHARS = 4000;

async function runFile(spec: NestedSpec, n: number, endsAt: number): Promise<void> {
  const file = spec.files[n];
  const started = performance.now();
  const limitMs = Math.min(spec.fileTimeoutSeconds * 1000, endsAt - started);
  const limit = Math.round(limitMs / 1000);
  const why = limitMs < spec.fileTimeoutSeconds * 1000 ? "the nested run's time ran out" : "deadline";
  await Deno.writeTextFile(startedPath(spec.reportDir, n), "");
  // setsid: the file's `deno test` leads a process group of its own, so a deadline kills the
  // front-end processes its tests spawned too (they would keep the VM busy otherwise).
  const child = new Deno.Command("setsid", {
    args: [Deno.execPath(), "test", ...spec.args, `--junit-path=${reportPath(spec.reportDir, n)}`, file],
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
  running.set(child.pid, file);
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
  // Whatever is left in the file's process group was started by its tests and outlived them: a
  // leak (a guest still running eats the VM's CPUs and slows every file after it). Name and end it.
  const left = await leftovers(child.pid);
  if (left.length > 0) {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // gone by now
    }
    await Deno.writeTextFile(leftoverPath(spec.reportDir, n), left.join("\n"));
    say(`nested: ${file}: ${left.length} process(es) outlived the file, killed:\n  ${left.join("\n  ")}`);
  }
  if (timedOut) {
    await Deno.writeTextFile(
      timeoutPath(spec.reportDir, n),
      `killed after ${limit} s (${why}); its last output:\n${tail}`,
    );
    say(`nested: ${file}: KILLED after ${limit} s (${why})`);
  } else {
    say(`nested: ${file}: exited ${status.code} after ${seconds} s`);
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

/** The files running now, by the pid of their `deno test`. */
const running = new Map<number, string>();
/** When a running file last printed. */
let lastOutput = performance.now();
/** After this long without output the driver prints what the VM is doing (a hang's evidence). */
const QUIET_MS = 90_000;

/**
 * What the VM is doing: the busiest processes, and for each running file every thread of its
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
  logPath = `${spec.reportDir}/driver.log`;
  const watchdog = setInterval(async () => {
    if (running.size === 0) return;
    const now = await snapshot();
    Deno.writeTextFileSync(`${spec.reportDir}/watch.log`, now);
    if (performance.now() - lastOutput < QUIET_MS) return;
    lastOutput = performance.now();
    say(`nested: no output for ${QUIET_MS / 1000} s; the VM now:\n${now}`);
  }, 15_000);
  const beat = () =>
    Deno.writeTextFile(
      heartbeatPath(spec.reportDir),
      `${new Date().toISOString()} ${[...running.values()]}\n`,
    )
      .catch(() => {});
  await beat();
  const heartbeat = setInterval(beat, HEARTBEAT_MS);
  const endsAt = performance.now() + (spec.budgetSeconds ?? Infinity) * 1000;
  const mine = spec.run ?? [...spec.files.keys()];
  const alone = new Set(spec.alone ?? []);
  const shared = mine.filter((n) => !alone.has(n));
  const skipLate = (n: number) => {
    if (performance.now() < endsAt) return false;
    say(`nested: ${spec.files[n]}: not started, the nested run's time ran out`);
    return true;
  };
  let next = 0;
  const lane = async () => {
    while (next < shared.length) {
      const n = shared[next++];
      if (!skipLate(n)) await runFile(spec, n, endsAt);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, spec.jobs) }, lane));
  for (const n of mine) if (alone.has(n) && !skipLate(n)) await runFile(spec, n, endsAt);
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
