/**
 * The README's test command (`deno task test`, `npm test`): runs every test on this host, then —
 * where this host has no hardware-style KVM — runs the files of the tests that skipped here inside
 * the nested KVM VM (one boot for all of them), and counts both sides in one closing line.
 *
 *   deno task test [deno test arguments…]
 *
 * @module
 */

import { hostKvm } from "../kvm/mod.ts";
import { NestedError, runNested } from "../nested/nested_vm.ts";
import { leftoverPath, type NestedSpec, reportPath, timeoutPath } from "./_nested_tests.ts";

/**
 * `deno test`'s permissions, the same on both sides: all of them, because Deno 2.9 lets a program read
 * `/proc` (fd counts, fd flags, `/proc/locks`) and device nodes (`/dev/net/tun`) only with every
 * permission. Tests that check the front-end's own permission messages start it with fewer.
 */
const PERMISSIONS = ["--allow-all"];
/**
 * How long one test file may run inside the nested VM before it is killed and its tests count as
 * failed (the slowest, the Linux shell file, boots Linux seven times: 10–15 min under TCG, more when a
 * stalled boot is tried again): a hang guard.
 */
const NESTED_FILE_TIMEOUT_SECONDS = 35 * 60;
/** Test files that boot Linux: inside the nested VM they run one at a time, after the others. */
const ALONE = /(^|\/)(linux_[a-z_]*|virtio_blk)_test\.ts$/;
/** Test files run at once inside the nested VM (its one vCPU waits on a guest's I/O often enough). */
const NESTED_JOBS = 2;
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

/** A `deno test --filter` regular expression that matches exactly `names`. */
export function exactNames(names: readonly string[]): string {
  const escaped = [...new Set(names)].map((name) => name.replace(/[\\^$.*+?()[\]{}|\/]/g, "\\$&"));
  return `/^(?:${escaped.join("|")})$/`;
}

async function runHost(args: string[], junit: string): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", ...PERMISSIONS, "--doc", "--parallel", `--junit-path=${junit}`, ...args],
    stdin: "null",
  }).spawn();
  return (await child.status).code;
}

/**
 * The nested outcome of each test in `skipped`, from the per-file reports of `_nested_tests.ts`: a
 * test with no result fails, with the reason its file gives (killed at its deadline, or no report).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { nestedOutcomes } from "./run_tests.ts";
 * const skipped = [
 *   { file: "a_test.ts", name: "boots", outcome: "skipped" as const },
 *   { file: "b_test.ts", name: "hangs", outcome: "skipped" as const },
 * ];
 * const out = nestedOutcomes(skipped, ["a_test.ts", "b_test.ts"], [
 *   { cases: [{ file: "a_test.ts", name: "boots", outcome: "passed" }] },
 *   { cases: [], killed: "killed after 600 s" },
 * ]);
 * assert.deepEqual(out.map((c) => [c.name, c.outcome, c.reason]), [
 *   ["boots", "passed", undefined],
 *   ["hangs", "failed", "its file was killed after 600 s"],
 * ]);
 * ```
 */
export function nestedOutcomes(
  skipped: readonly TestCase[],
  files: readonly string[],
  reports: readonly { cases: readonly TestCase[]; killed?: string; leftover?: string; status?: string }[],
): TestCase[] {
  const key = (c: TestCase) => `${c.file}\0${c.name}`;
  const found = new Map(reports.flatMap((r) => r.cases).map((c) => [key(c), c] as const));
  const leaks = reports.flatMap((r, n): TestCase[] =>
    r.leftover
      ? [{
        file: files[n],
        name: LEFTOVER_TEST,
        outcome: "failed",
        reason: `left running: ${r.leftover.split("\n").join("; ").slice(0, 300)}`,
      }]
      : []
  );
  return [
    ...skipped.map((c): TestCase => {
      const result = found.get(key(c));
      if (result) return result;
      const report = reports[files.indexOf(c.file.replace(/\$\d+-\d+$/, ""))];
      const reason = report?.killed
        ? `its file was ${report.killed.split("\n")[0].replace(/;.*$/, "")}`
        : `no result from the nested run${report?.status ? ` (${report.status})` : ""}`;
      return { ...c, outcome: "failed", reason };
    }),
    ...leaks,
  ];
}

/** The name of the failure a test file gets when processes its tests started outlive it. */
export const LEFTOVER_TEST = "its tests leave no process running (nested run)";

/**
 * Runs `files` (filtered to the `skipped` tests) inside one nested VM with `_nested_tests.ts`, one
 * `deno test` per file with a deadline, and returns the nested outcome of every skipped test.
 */
async function runNestedSide(skipped: TestCase[], files: string[], dir: string): Promise<TestCase[]> {
  const started = performance.now();
  const reportDir = `${dir}/nested`;
  await Deno.mkdir(reportDir);
  const spec: NestedSpec = {
    args: [...PERMISSIONS, "--no-check", `--filter=${exactNames(skipped.map((c) => c.name))}`],
    files,
    reportDir,
    fileTimeoutSeconds: NESTED_FILE_TIMEOUT_SECONDS,
    jobs: NESTED_JOBS,
    alone: files.flatMap((file, n) => ALONE.test(file) ? [n] : []),
  };
  await Deno.writeTextFile(`${dir}/nested-spec.json`, JSON.stringify(spec));
  console.log(`test: the nested run's log, readable while it runs: ${reportDir}/driver.log (and watch.log)`);
  const driver = decodeURIComponent(new URL("./_nested_tests.ts", import.meta.url).pathname);
  let ending = "";
  try {
    const result = await runNested({
      argv: [Deno.execPath(), "run", "--allow-all", driver, `${dir}/nested-spec.json`],
      env: {
        ...Deno.env.toObject(),
        NO_COLOR: "1",
        KVM_TS_LEAK_CYCLES: Deno.env.get("KVM_TS_LEAK_CYCLES") ?? NESTED_LEAK_CYCLES,
        KVM_TS_STEP_DEADLINE_S: Deno.env.get("KVM_TS_STEP_DEADLINE_S") ?? NESTED_STEP_DEADLINE_SECONDS,
      },
      writable: [dir],
      stdio: "piped",
      // Every file at its deadline, in lanes, plus the boot: the run cannot outlive its files.
      timeoutSeconds: Math.ceil(files.length / NESTED_JOBS) * NESTED_FILE_TIMEOUT_SECONDS + 5 * 60,
      onOutput: (chunk) => Deno.stdout.writeSync(chunk),
    });
    ending = `the driver exited ${result.status}`;
  } catch (error) {
    if (!(error instanceof NestedError)) throw error;
    console.log(`test: ${error.message}`);
    ending = error.message;
  }
  const reports = await Promise.all(files.map(async (_, n) => ({
    cases: parseJunit(await Deno.readTextFile(reportPath(reportDir, n)).catch(() => "")),
    killed: await Deno.readTextFile(timeoutPath(reportDir, n)).catch(() => undefined),
    leftover: await Deno.readTextFile(leftoverPath(reportDir, n)).catch(() => undefined),
    status: ending,
  })));
  const outcomes = nestedOutcomes(skipped, files, reports);
  const taken = count(outcomes);
  console.log(
    `test: nested VM: ${taken.passed} passed, ${taken.failed} failed, ${taken.skipped} still skipped ` +
      `in ${((performance.now() - started) / 1000).toFixed(0)} s (${ending})`,
  );
  reports.forEach((r, n) => {
    if (r.killed) console.log(`\ntest: ${files[n]} was ${r.killed}\n`);
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
      const files = [...new Set(skipped.map((c) => c.file.replace(/\$\d+-\d+$/, "")))].sort();
      const why = kvm === "none" ? "no /dev/kvm here" : "this host's KVM cannot run a stock kernel";
      console.log(
        `\ntest: ${skipped.length} tests skipped on this host (${why}): running their ${files.length} files ` +
          `inside a nested KVM VM under QEMU's emulator (one boot, ${NESTED_JOBS} files at a time, ` +
          `${NESTED_FILE_TIMEOUT_SECONDS / 60} min a file at most; slower)`,
      );
      const nested = await runNestedSide(skipped, files, dir);
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
