/**
 * The README's test command (`deno task test`, `npm test`): runs every test on this host, then —
 * where this host has no hardware-style KVM — runs the tests that skipped here inside nested KVM VMs
 * (one per host core, two at most, sharing the work), and counts both sides in one closing line.
 *
 *   deno task test [deno test arguments…]
 *
 * @module
 */

import { hostKvm } from "../kvm/mod.ts";
import {
  NestedError,
  nestedMonitorCommand,
  runNested,
  WAKE_GRACE_SECONDS,
  wakeNestedVm,
} from "../nested/nested_vm.ts";
import { FreezeWatch } from "../nested/freeze_watch.ts";
import {
  driverLogPath,
  heartbeatPath,
  leftoverPath,
  type NestedSpec,
  type NestedUnit,
  reportPath,
  startedPath,
  timeoutPath,
} from "./_nested_tests.ts";

export { exactNames } from "./_nested_tests.ts";

/**
 * `deno test`'s permissions, the same on both sides: all of them, because Deno 2.9 lets a program read
 * `/proc` (fd counts, fd flags, `/proc/locks`) and device nodes (`/dev/net/tun`) only with every
 * permission. Tests that check the front-end's own permission messages start it with fewer.
 */
const PERMISSIONS = ["--allow-all"];
/**
 * How long one unit (one test, or one file's tests) may run inside a nested VM before it is killed
 * and its tests count as failed (a Linux boot tried eight times when it stalls takes 10 min and
 * more): a hang guard.
 */
const NESTED_UNIT_TIMEOUT_SECONDS = 25 * 60;
/**
 * The whole nested side's time, boots included (it takes 10–15 min): CI's 90 minutes must also hold
 * the installs, the checks and the host's own run, and a test run must end with its counts.
 */
const NESTED_BUDGET_SECONDS = 55 * 60;
/**
 * A driver heartbeat this old means the nested VM froze: it is killed and booted again for the rest
 * (`KVM_TS_NESTED_FROZEN_S` sets it, to try that path quickly).
 */
const FROZEN_SECONDS = Number(Deno.env.get("KVM_TS_NESTED_FROZEN_S") ?? 240);
/** How long the nested VM may take from QEMU's start to the driver's first heartbeat. */
const BOOT_SECONDS = 300;
/** Boots of each nested VM at most: the first, and one after each of up to two freezes. */
const NESTED_BOOTS = 3;
/** A boot is not worth starting with less time than this left. */
const MIN_BOOT_SECONDS = 300;
/** Test files that boot Linux: their tests are taken first. */
const LINUX_BOOTS = /(^|\/)(linux_[a-z_]*|virtio_blk|snapshot_linux)_test\.ts$/;
/**
 * Nested VMs at once: one vCPU each (docs/nested-kvm.md), and so one host core each — a second VM
 * does in parallel what a second job inside one VM could only interleave.
 */
const NESTED_VMS = Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1));
/** One step of a Linux-console test may take this long inside the nested VM (its own hang guard). */
const NESTED_STEP_DEADLINE_SECONDS = "240";
/** Fewer VM create/destroy cycles in the leak test under TCG, where each costs ≈0.1 s. */
const NESTED_LEAK_CYCLES = "100";

/** One test's outcome from a JUnit report. */
export interface TestCase {
  file: string;
  name: string;
  outcome: "passed" | "failed" | "skipped";
  /** Why it failed: the first line of its failure message, or what happened to its file. */
  reason?: string;
}

function unescapeXml(text: string): string {
  return text.replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
    const named: Record<string, string> = { lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" };
    if (e in named) return named[e];
    return String.fromCodePoint(e[1] === "x" || e[1] === "X" ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
  });
}

/** The test cases of Deno's JUnit report. */
export function parseJunit(xml: string): TestCase[] {
  const cases: TestCase[] = [];
  const pattern = /<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const match of xml.matchAll(pattern)) {
    const attribute = (name: string) =>
      unescapeXml(new RegExp(`\\b${name}="([^"]*)"`).exec(match[1])?.[1] ?? "");
    const body = match[3] ?? "";
    const failure = /<(?:failure|error)\b([^>]*?)(?:\/>|>([\s\S]*?)<\/(?:failure|error)>)/.exec(body);
    const testCase: TestCase = {
      file: attribute("classname").replace(/^\.\//, ""),
      name: attribute("name"),
      outcome: failure ? "failed" : /<skipped\b/.test(body) ? "skipped" : "passed",
    };
    if (failure) {
      const message = /\bmessage="([^"]*)"/.exec(failure[1])?.[1] ?? "";
      const text = unescapeXml(failure[2] ?? "").trim() || unescapeXml(message);
      testCase.reason = text.split("\n").find((line) => line.trim() !== "")?.trim().slice(0, 300);
    }
    cases.push(testCase);
  }
  return cases;
}

/** Passed, failed and skipped counts of `cases`. */
export function count(cases: readonly TestCase[]): { passed: number; failed: number; skipped: number } {
  return {
    passed: cases.filter((c) => c.outcome === "passed").length,
    failed: cases.filter((c) => c.outcome === "failed").length,
    skipped: cases.filter((c) => c.outcome === "skipped").length,
  };
}

/**
 * The combined outcome: every host result, except that a test skipped on the host takes its
 * nested result when the nested run has one.
 */
export function merge(host: readonly TestCase[], nested: readonly TestCase[]): TestCase[] {
  const key = (c: TestCase) => `${c.file}\0${c.name}`;
  const inside = new Map(nested.map((c) => [key(c), c] as const));
  return host.map((c) => c.outcome === "skipped" && inside.has(key(c)) ? inside.get(key(c))! : c);
}

async function runHost(args: string[], junit: string): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", ...PERMISSIONS, "--doc", "--parallel", `--junit-path=${junit}`, ...args],
    stdin: "null",
  }).spawn();
  return (await child.status).code;
}

/**
 * The nested outcome of each test in `skipped`, from the per-unit reports of `_nested_tests.ts` (a
 * unit's report also lists its file's other tests, filtered out: only the unit's own count). A test
 * with no result fails, with the reason its unit gives (killed at its deadline, never started, or no
 * report).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nestedOutcomes } from "./run_tests.ts";
 * const skipped = [
 *   { file: "a_test.ts", name: "boots", outcome: "skipped" as const },
 *   { file: "b_test.ts", name: "hangs", outcome: "skipped" as const },
 * ];
 * const out = nestedOutcomes(skipped, [{ file: "a_test.ts", names: ["boots"] }, { file: "b_test.ts", names: ["hangs"] }], [
 *   { cases: [{ file: "a_test.ts", name: "boots", outcome: "passed" }] },
 *   { cases: [], killed: "killed after 600 s (deadline); its last output: …" },
 * ]);
 * assert.deepEqual(out.map((c) => [c.name, c.outcome, c.reason]), [
 *   ["boots", "passed", undefined],
 *   ["hangs", "failed", "in the nested VM: killed after 600 s (deadline)"],
 * ]);
 * ```
 */
export function nestedOutcomes(
  skipped: readonly TestCase[],
  units: readonly NestedUnit[],
  reports: readonly { cases: readonly TestCase[]; killed?: string; leftover?: string; status?: string }[],
): TestCase[] {
  const key = (file: string, name: string) => `${file.replace(/\$\d+-\d+$/, "")}\0${name}`;
  const found = new Map(
    reports.flatMap((r, n) =>
      r.cases.filter((c) => units[n] && units[n].file === c.file && units[n].names.includes(c.name))
    ).map((c) => [key(c.file, c.name), c] as const),
  );
  const unitOf = new Map(units.flatMap((u, n) => u.names.map((name) => [key(u.file, name), n] as const)));
  const leaks = reports.flatMap((r, n): TestCase[] =>
    r.leftover
      ? [{
        file: units[n].file,
        name: LEFTOVER_TEST,
        outcome: "failed",
        reason: `left running: ${r.leftover.split("\n").join("; ").slice(0, 300)}`,
      }]
      : []
  );
  return [
    ...skipped.map((c): TestCase => {
      const result = found.get(key(c.file, c.name));
      if (result) return result;
      const report = reports[unitOf.get(key(c.file, c.name)) ?? -1];
      const reason = report?.killed
        ? `in the nested VM: ${report.killed.split("\n")[0].replace(/;.*$/, "")}`
        : `no result from the nested run${report?.status ? ` (${report.status})` : ""}`;
      return { ...c, outcome: "failed", reason };
    }),
    ...leaks,
  ];
}

/**
 * The nested side's units for the tests in `skipped`: each test is a unit of its own (a Linux boot is
 * minutes, some other tests two, and the VMs share them best one at a time; a `deno test` costs a
 * few seconds to start in there), the Linux boots first, the SMP ones (the longest) before the
 * others, then the rest in file order.
 */
export function nestedUnits(skipped: readonly TestCase[]): NestedUnit[] {
  const units = skipped.map((c) => ({ file: c.file.replace(/\$\d+-\d+$/, ""), names: [c.name] }));
  const rank = (u: NestedUnit) => !LINUX_BOOTS.test(u.file) ? 2 : /-smp [2-9]/.test(u.names[0]) ? 0 : 1;
  return units.map((u, i) => ({ u, i }))
    .sort((a, b) => rank(a.u) - rank(b.u) || a.u.file.localeCompare(b.u.file) || a.i - b.i)
    .map(({ u }) => u);
}

/** The name of the failure a test file gets when processes its tests started outlive it. */
export const LEFTOVER_TEST = "its tests leave no process running (nested run)";

/** Whether `path` exists. */
async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** A file's own outcome is in: its report, or the marker of its kill at a deadline. */
async function settled(reportDir: string, n: number): Promise<boolean> {
  return await exists(reportPath(reportDir, n)) || await exists(timeoutPath(reportDir, n));
}

/**
 * Prints what `path` gained since the last call (a driver's log, which it only appends to), whole
 * lines only, each after `prefix` (the VM's name when several print at once); `end` prints a last
 * line cut short too (a VM killed mid-line), so the next boot's log starts on a line of its own.
 */
function tailer(path: string, prefix: string): (end?: boolean) => Promise<void> {
  let offset = 0;
  let partial = "";
  const decoder = new TextDecoder();
  const flush = (end: boolean) => {
    if (end && partial !== "") Deno.stdout.writeSync(new TextEncoder().encode(`${prefix}${partial}\n`));
    if (end) partial = "";
  };
  return async (end = false) => {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path);
    } catch {
      return flush(end);
    }
    try {
      await file.seek(offset, Deno.SeekMode.Start);
      const buffer = new Uint8Array(65536);
      for (;;) {
        const n = await file.read(buffer);
        if (n === null || n === 0) break;
        offset += n;
        const lines = (partial + decoder.decode(buffer.subarray(0, n), { stream: true })).split("\n");
        partial = lines.pop()!;
        if (lines.length > 0) {
          Deno.stdout.writeSync(new TextEncoder().encode(lines.map((line) => `${prefix}${line}\n`).join("")));
        }
      }
    } finally {
      file.close();
    }
    flush(end);
  };
}

/**
 * One boot of a nested VM running the driver on `spec`, watched from here: the driver's log is
 * printed as it grows (by `print`, which goes on where the last boot's left off; read from the
 * shared directory, so a stalled serial port hides nothing), and a heartbeat silent for
 * {@link FROZEN_SECONDS} (or none {@link BOOT_SECONDS} after QEMU started) means the VM froze: once the
 * driver ran, the VM first gets a keyboard interrupt and an NMI (`wakeNestedVm`) and
 * `WAKE_GRACE_SECONDS` to beat again; then its registers are printed and it is killed. How the boot
 * ended, and whether it froze.
 */
async function bootNested(
  spec: NestedSpec,
  dir: string,
  boot: number,
  seconds: number,
  print: () => Promise<void>,
): Promise<{ ending: string; frozen: boolean }> {
  const vm = spec.vm;
  const specPath = `${dir}/nested-spec-${vm}-${boot}.json`;
  await Deno.writeTextFile(specPath, JSON.stringify(spec));
  const driver = decodeURIComponent(new URL("./_nested_tests.ts", import.meta.url).pathname);
  const monitor = `${dir}/vm-monitor-${vm}-${boot}.sock`;
  const abort = new AbortController();
  let frozen = false;
  let watching = false;
  let freeze: FreezeWatch | undefined; // made when QEMU starts
  const watch = setInterval(async () => {
    if (watching || freeze === undefined || frozen) return;
    watching = true;
    try {
      await print();
      const beat = await Deno.stat(heartbeatPath(spec.reportDir, vm)).then(
        (s) => s.mtime?.getTime(),
        () => undefined,
      );
      const step = freeze.step(beat, Date.now());
      if (step.kind === "woke") {
        console.log(
          `\ntest: nested VM ${vm}: its heartbeat came back after the keyboard interrupt and NMI\n`,
        );
      } else if (step.kind === "wake") {
        const answered = await wakeNestedVm(monitor);
        freeze.answered(answered);
        console.log(
          `\ntest: nested VM ${vm}: no heartbeat for ${step.quietSeconds} s: sent it a keyboard interrupt and ` +
            `an NMI${answered ? "" : " (its monitor did not answer)"}\n`,
        );
      } else if (step.kind === "kill") {
        frozen = true;
        // The general registers, control registers and EFER: where the VM's kernel is (not its FPU).
        const registers = (await nestedMonitorCommand(monitor, "info registers")).split("\n")
          .filter((line) => /^(CPU#|R[A-Z0-9 ]{2}=|[CEDFGS]S =|CR0|EFER)/.test(line)).join("\n");
        console.log(
          `\ntest: nested VM ${vm} ${step.started ? "froze" : "did not start the tests"}: no heartbeat ` +
            `for ${step.quietSeconds} s; its CPU then:\n${
              registers.trim() || "(its monitor did not answer)"
            }\n`,
        );
        abort.abort();
      }
    } finally {
      watching = false;
    }
  }, 5_000);
  let console2 = "";
  let ending: string;
  try {
    const result = await runNested({
      argv: [Deno.execPath(), "run", "--allow-all", driver, specPath],
      env: {
        ...Deno.env.toObject(),
        NO_COLOR: "1",
        KVM_TS_LEAK_CYCLES: Deno.env.get("KVM_TS_LEAK_CYCLES") ?? NESTED_LEAK_CYCLES,
        KVM_TS_STEP_DEADLINE_S: Deno.env.get("KVM_TS_STEP_DEADLINE_S") ?? NESTED_STEP_DEADLINE_SECONDS,
      },
      writable: [dir],
      stdio: "piped",
      timeoutSeconds: seconds,
      monitorSocket: monitor,
      signal: abort.signal,
      onStart: () =>
        freeze = new FreezeWatch(
          { quiet: FROZEN_SECONDS, boot: BOOT_SECONDS, grace: WAKE_GRACE_SECONDS, canWake: true },
          Date.now(),
        ),
      // The driver's words come from its log (above); the serial port is read only for a job that
      // never got as far as the driver.
      onOutput: (chunk) => console2 = (console2 + new TextDecoder().decode(chunk)).slice(-4000),
    });
    ending = `the driver exited ${result.status}`;
  } catch (error) {
    if (!(error instanceof NestedError)) throw error;
    frozen ||= error.frozen; // its kernel's own sign of life stopped before the driver's heartbeat
    ending = frozen ? "the nested VM froze and was killed" : error.message;
    console.log(`test: nested VM ${vm}: ${ending}`);
  } finally {
    clearInterval(watch);
    while (watching) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await print();
  if (!await exists(driverLogPath(spec.reportDir, vm)) && console2.trim() !== "") {
    console.log(`test: nested VM ${vm}'s terminal said:\n${console2}`);
  }
  return { ending, frozen };
}

/**
 * Runs `units` inside {@link NESTED_VMS} nested VMs at once with `_nested_tests.ts`, one `deno test`
 * per unit with a deadline; each VM's driver takes the next unit no other has claimed. Returns the
 * nested outcome of every skipped test. All of it fits {@link NESTED_BUDGET_SECONDS}; a VM that
 * freezes is booted again while units are left, and the unit it was running goes back to the queue,
 * except a unit that was running in two freezes: its tests fail.
 */
async function runNestedSide(skipped: TestCase[], units: NestedUnit[], dir: string): Promise<TestCase[]> {
  const started = performance.now();
  const reportDir = `${dir}/nested`;
  await Deno.mkdir(reportDir);
  const left = () => NESTED_BUDGET_SECONDS - (performance.now() - started) / 1000;
  const vms = Array.from({ length: Math.min(NESTED_VMS, units.length) }, (_, i) => i + 1);
  console.log(
    `test: the nested run's logs, readable while it runs: ${
      vms.map((vm) => driverLogPath(reportDir, vm)).join(", ")
    }`,
  );
  const freezes = new Map<number, number>();
  const endings = new Map<number, string[]>(vms.map((vm) => [vm, []]));
  const claimedBy = async (n: number) =>
    Number(await Deno.readTextFile(startedPath(reportDir, n)).catch(() => "0")) || undefined;
  const unclaimed = async () =>
    (await Promise.all(units.map((_, n) => claimedBy(n)))).some((vm) => vm === undefined);
  const lane = async (vm: number) => {
    const print = tailer(driverLogPath(reportDir, vm), vms.length > 1 ? `[vm ${vm}] ` : "");
    for (let boot = 1; boot <= NESTED_BOOTS && await unclaimed(); boot++) {
      if (left() < MIN_BOOT_SECONDS) {
        endings.get(vm)!.push(`no time left for boot ${boot}`);
        break;
      }
      await Deno.remove(heartbeatPath(reportDir, vm)).catch(() => {});
      if (boot > 1) console.log(`\ntest: booting nested VM ${vm} again (boot ${boot})`);
      const { ending, frozen } = await bootNested(
        {
          args: [...PERMISSIONS, "--no-check"],
          units,
          reportDir,
          unitTimeoutSeconds: NESTED_UNIT_TIMEOUT_SECONDS,
          jobs: 1,
          vm,
          // What is left, less the boot and the power-off: the VM itself is killed at what is left.
          budgetSeconds: Math.floor(left() - 180),
        },
        dir,
        boot,
        Math.floor(left()),
        print,
      );
      await print(true);
      endings.get(vm)!.push(ending);
      if (!frozen) break;
      // The unit it was running goes back to the queue, unless this is its second freeze.
      for (const n of units.keys()) {
        if (await settled(reportDir, n) || await claimedBy(n) !== vm) continue;
        freezes.set(n, (freezes.get(n) ?? 0) + 1);
        if (freezes.get(n)! < 2) await Deno.remove(startedPath(reportDir, n));
      }
    }
  };
  await Promise.all(vms.map(lane));
  const ending = (vm: number | undefined) =>
    vm === undefined ? "never started" : `nested VM ${vm}: ${endings.get(vm)!.join("; ")}`;
  const reports = await Promise.all(units.map(async (_, n) => ({
    cases: parseJunit(await Deno.readTextFile(reportPath(reportDir, n)).catch(() => "")),
    killed: await Deno.readTextFile(timeoutPath(reportDir, n)).catch(() => undefined),
    leftover: await Deno.readTextFile(leftoverPath(reportDir, n)).catch(() => undefined),
    status: (freezes.get(n) ?? 0) >= 2
      ? "the nested VM froze twice while it ran"
      : ending(await claimedBy(n)),
  })));
  const outcomes = nestedOutcomes(skipped, units, reports);
  const taken = count(outcomes);
  console.log(
    `test: nested VMs: ${taken.passed} passed, ${taken.failed} failed, ${taken.skipped} still skipped ` +
      `in ${((performance.now() - started) / 1000).toFixed(0)} s (${vms.map(ending).join("; ")})`,
  );
  reports.forEach((r, n) => {
    if (r.killed) console.log(`\ntest: ${units[n].file} ${JSON.stringify(units[n].names)} was ${r.killed}\n`);
  });
  return outcomes;
}

async function main(args: string[]): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "kvm-ts-tests-" });
  try {
    const status = await runHost(args, `${dir}/host.xml`);
    let host: TestCase[];
    try {
      host = parseJunit(await Deno.readTextFile(`${dir}/host.xml`));
    } catch {
      console.log("test: the host run wrote no report (see its output above)");
      console.log("FAILED | 0 passed | 1 failed | 0 ignored");
      return status || 1;
    }
    let cases = host;
    const kvm = hostKvm();
    const skipped = host.filter((c) => c.outcome === "skipped");
    if (kvm !== "hardware" && skipped.length > 0) {
      const units = nestedUnits(skipped);
      const why = kvm === "none" ? "no /dev/kvm here" : "this host's KVM cannot run a stock kernel";
      console.log(
        `\ntest: ${skipped.length} tests skipped on this host (${why}): running them in ${units.length} ` +
          `units inside ${Math.min(NESTED_VMS, units.length)} nested KVM VM(s) under QEMU's emulator ` +
          `(${NESTED_UNIT_TIMEOUT_SECONDS / 60} min a unit and ${NESTED_BUDGET_SECONDS / 60} min in all at ` +
          `most; slower)`,
      );
      const nested = await runNestedSide(skipped, units, dir);
      cases = [...merge(host, nested), ...nested.filter((c) => c.name === LEFTOVER_TEST)];
    } else if (skipped.length > 0) {
      console.log(
        `\ntest: ${skipped.length} tests skipped on this host with a hardware-style KVM (reasons above)`,
      );
    }
    const failedCases = cases.filter((c) => c.outcome === "failed");
    if (failedCases.length > 0) {
      console.log("\ntest: failed:");
      for (const c of failedCases) {
        console.log(`  ${c.file}: ${c.name}${c.reason ? `\n      ${c.reason}` : ""}`);
      }
    }
    const { passed, failed, skipped: stillSkipped } = count(cases);
    const ok = failed === 0 && (status === 0 || failedCases.length > 0);
    console.log(`\n${ok ? "ok" : "FAILED"} | ${passed} passed | ${failed} failed | ${stillSkipped} ignored`);
    return ok ? 0 : 1;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
