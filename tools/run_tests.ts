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

/** `deno test`'s flags, the same on both sides. */
const PERMISSIONS = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
  "--allow-sys",
];
/** The nested run gets this long (its boot is ≈10 s; the KVM tests a few minutes under TCG). */
const NESTED_TIMEOUT_SECONDS = 60 * 60;
/** Fewer VM create/destroy cycles in the leak test under TCG, where each costs ≈0.1 s. */
const NESTED_LEAK_CYCLES = "100";

/** One test's outcome from a JUnit report. */
export interface TestCase {
  file: string;
  name: string;
  outcome: "passed" | "failed" | "skipped";
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
    cases.push({
      file: attribute("classname").replace(/^\.\//, ""),
      name: attribute("name"),
      outcome: /<(failure|error)\b/.test(body) ? "failed" : /<skipped\b/.test(body) ? "skipped" : "passed",
    });
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
  const inside = new Map(nested.map((c) => [key(c), c.outcome] as const));
  return host.map((c) =>
    c.outcome === "skipped" && inside.has(key(c)) ? { ...c, outcome: inside.get(key(c))! } : c
  );
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
          "inside a nested KVM VM under QEMU's emulator (one boot; slower)",
      );
      const started = performance.now();
      try {
        const result = await runNested({
          argv: [
            Deno.execPath(),
            ...[
              "test",
              ...PERMISSIONS,
              "--no-check",
              "--doc",
              "--parallel",
              `--junit-path=${dir}/nested.xml`,
            ],
            `--filter=${exactNames(skipped.map((c) => c.name))}`, // only the tests that skipped here
            ...files,
          ],
          env: {
            ...Deno.env.toObject(),
            NO_COLOR: "1",
            KVM_TS_LEAK_CYCLES: Deno.env.get("KVM_TS_LEAK_CYCLES") ?? NESTED_LEAK_CYCLES,
          },
          writable: [dir],
          stdio: "piped",
          timeoutSeconds: NESTED_TIMEOUT_SECONDS,
          onOutput: (chunk) => Deno.stdout.writeSync(chunk),
        });
        const nested = parseJunit(await Deno.readTextFile(`${dir}/nested.xml`).catch(() => ""));
        cases = merge(host, nested);
        const taken = count(merge(skipped, nested));
        console.log(
          `test: nested VM: ${taken.passed} passed, ${taken.failed} failed, ${taken.skipped} still skipped ` +
            `in ${((performance.now() - started) / 1000).toFixed(0)} s (deno test exited ${result.status})`,
        );
        if (nested.length === 0) {
          cases = [...cases, { file: "nested VM", name: "nested test run", outcome: "failed" }];
        }
      } catch (error) {
        if (!(error instanceof NestedError)) throw error;
        console.log(`test: ${error.message}`);
        cases = host.map((c) => c.outcome === "skipped" ? { ...c, outcome: "failed" } : c);
      }
    } else if (skipped.length > 0) {
      console.log(
        `\ntest: ${skipped.length} tests skipped on this host with a hardware-style KVM (reasons above)`,
      );
    }
    const failedCases = cases.filter((c) => c.outcome === "failed");
    if (failedCases.length > 0) {
      console.log("\ntest: failed:");
      for (const c of failedCases) console.log(`  ${c.file}: ${c.name}`);
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
