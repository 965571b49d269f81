import assert from "node:assert/strict";
import {
  count,
  exactNames,
  LEFTOVER_TEST,
  merge,
  nestedOutcomes,
  nestedUnits,
  parseJunit,
  type TestCase,
} from "./run_tests.ts";
import {
  driverLogPath,
  heartbeatPath,
  leftoverPath,
  type NestedSpec,
  reportPath,
  startedPath,
  timeoutPath,
} from "./_nested_tests.ts";

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="deno test" tests="4" failures="1" errors="0" time="0.659">
    <testsuite name="./kvm/vm_test.ts" tests="4" disabled="2" errors="0" failures="1">
        <testcase name="dirtyBitmapSize rounds up" classname="./kvm/vm_test.ts" time="0.000" line="38" col="6">
        </testcase>
        <testcase name="the system&apos;s cpio &amp; &lt;newc&gt;" classname="./kvm/vm_test.ts" time="0.000" line="45" col="6">
            <skipped/>
        </testcase>
        <testcase name="a (b) [c]? $1 / x" classname="./kvm/vm_test.ts" time="0.000" line="46" col="6">
            <skipped/>
        </testcase>
        <testcase name="broken" classname="./kvm/vm_test.ts" time="0.000" line="50" col="6">
            <failure message="Uncaught Error">boom</failure>
        </testcase>
    </testsuite>
</testsuites>`;

Deno.test("Deno's JUnit report: names unescaped, outcomes read, files without ./", () => {
  const cases = parseJunit(JUNIT);
  assert.deepEqual(cases.map((c) => [c.file, c.name, c.outcome]), [
    ["kvm/vm_test.ts", "dirtyBitmapSize rounds up", "passed"],
    ["kvm/vm_test.ts", "the system's cpio & <newc>", "skipped"],
    ["kvm/vm_test.ts", "a (b) [c]? $1 / x", "skipped"],
    ["kvm/vm_test.ts", "broken", "failed"],
  ]);
  assert.deepEqual(count(cases), { passed: 1, failed: 1, skipped: 2 });
});

Deno.test("a test skipped on the host takes its nested outcome; nothing else changes", () => {
  const host = parseJunit(JUNIT);
  const nested: TestCase[] = [
    { file: "kvm/vm_test.ts", name: "the system's cpio & <newc>", outcome: "passed" },
    { file: "kvm/vm_test.ts", name: "broken", outcome: "passed" }, // ran on the host: its result stands
    { file: "kvm/other_test.ts", name: "a (b) [c]? $1 / x", outcome: "failed" }, // another file's test
  ];
  assert.deepEqual(count(merge(host, nested)), { passed: 2, failed: 1, skipped: 1 });
});

Deno.test("the nested filter matches exactly the skipped names, special characters and all", () => {
  const names = ["the system's cpio & <newc>", "a (b) [c]? $1 / x", "x.y*"];
  const source = exactNames(names);
  assert.match(source, /^\/.*\/$/);
  const pattern = new RegExp(source.slice(1, -1));
  for (const name of names) assert.match(name, pattern);
  for (const other of ["a (b) [c]? $1 / xy", "xxy", "x.yy", "the system's cpio"]) {
    assert.doesNotMatch(other, pattern);
  }
});

Deno.test("a failure's reason is the first line of its message", () => {
  const [broken] = parseJunit(JUNIT).filter((c) => c.outcome === "failed");
  assert.equal(broken.reason, "boom");
  const multi = parseJunit(
    `<testcase name="x" classname="./a_test.ts"><failure message="m">\n\n  AssertionError: no prompt\n  at …</failure></testcase>`,
  );
  assert.equal(multi[0].reason, "AssertionError: no prompt");
});

/** Runs the nested driver on `spec` (written to `dir`) on this host; what it printed. */
async function runDriver(dir: string, spec: NestedSpec): Promise<string> {
  await Deno.writeTextFile(`${dir}/spec-${spec.vm}.json`, JSON.stringify(spec));
  const driver = new URL("./_nested_tests.ts", import.meta.url).pathname;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", driver, `${dir}/spec-${spec.vm}.json`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  assert.ok(output.success, text);
  return text;
}

Deno.test("the nested driver runs each unit with a deadline: a hung one is killed, the others report", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kvm-ts-driver-test-" });
  try {
    await Deno.writeTextFile(
      `${dir}/quick_test.ts`,
      `Deno.test("quick", () => {});\nDeno.test("not this one", () => { throw new Error("ran"); });\n`,
    );
    // The hung file also leaves a child behind: the process group kill must take it too.
    await Deno.writeTextFile(
      `${dir}/hung_test.ts`,
      `Deno.test("hung", async () => {\n` +
        `  new Deno.Command("sleep", { args: ["987"] }).spawn();\n` +
        `  console.log("about to hang");\n` +
        `  await new Promise(() => setInterval(() => {}, 1000));\n});\n`,
    );
    await Deno.writeTextFile(
      `${dir}/leaky_test.ts`,
      `Deno.test({ name: "leaky", sanitizeResources: false, sanitizeOps: false, fn() {\n` +
        `  new Deno.Command("sleep", { args: ["988"] }).spawn().unref();\n} });\n`,
    );
    await Deno.mkdir(`${dir}/reports`);
    const spec: NestedSpec = {
      args: ["--allow-run", "--no-check"],
      units: [
        { file: `${dir}/hung_test.ts`, names: ["hung"] },
        { file: `${dir}/quick_test.ts`, names: ["quick"] },
        { file: `${dir}/leaky_test.ts`, names: ["leaky"] },
      ],
      reportDir: `${dir}/reports`,
      // Long enough for a `deno test` to start on a loaded machine (3 s was not, with nested VMs busy).
      unitTimeoutSeconds: 10,
      jobs: 2,
      vm: 1,
    };
    const text = await runDriver(dir, spec);
    assert.match(text, /hung_test\.ts "hung": KILLED after 10 s/);
    assert.match(text, /quick_test\.ts "quick": exited 0/);
    assert.equal(
      await Deno.readTextFile(driverLogPath(spec.reportDir, 1)),
      text,
      "the log has all it printed",
    );
    const killed = await Deno.readTextFile(timeoutPath(spec.reportDir, 0));
    assert.match(killed, /^killed after 10 s/);
    assert.match(killed, /about to hang/);
    assert.deepEqual(
      parseJunit(await Deno.readTextFile(reportPath(spec.reportDir, 1))).map((c) => [c.name, c.outcome]),
      [["quick", "passed"], ["not this one", "skipped"]],
      "only the unit's test ran (Deno lists the filtered-out one as skipped)",
    );
    await assert.rejects(Deno.stat(reportPath(spec.reportDir, 0)));
    assert.match(await Deno.readTextFile(leftoverPath(spec.reportDir, 2)), /^\d+ \S*sleep 988$/);
    await assert.rejects(Deno.stat(leftoverPath(spec.reportDir, 1)));
    const ps = await new Deno.Command("pgrep", { args: ["-f", "sleep 98[78]"], stdout: "piped" }).output();
    assert.equal(new TextDecoder().decode(ps.stdout).trim(), "", "a file's child outlived the driver");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the nested driver keeps to its budget and skips claimed units, with a heartbeat and claims", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kvm-ts-driver-test-" });
  try {
    for (const name of ["skipped", "first", "second"]) {
      await Deno.writeTextFile(
        `${dir}/${name}_test.ts`,
        `Deno.test("${name}", async () => { await new Promise((r) => setTimeout(r, 6000)); });\n`,
      );
    }
    await Deno.mkdir(`${dir}/reports`);
    const spec: NestedSpec = {
      args: ["--no-check"],
      units: ["skipped", "first", "second"].map((name) => ({
        file: `${dir}/${name}_test.ts`,
        names: [name],
      })),
      reportDir: `${dir}/reports`,
      unitTimeoutSeconds: 60,
      jobs: 1,
      vm: 2,
      budgetSeconds: 3,
    };
    await Deno.writeTextFile(startedPath(spec.reportDir, 0), "1"); // VM 1 has it
    const text = await runDriver(dir, spec);
    assert.match(text, /first_test\.ts "first": KILLED after 3 s \(the nested run's time ran out\)/);
    assert.match(text, /second_test\.ts "second": not started, the nested run's time ran out/);
    assert.doesNotMatch(text, /skipped_test/);
    assert.match(await Deno.readTextFile(timeoutPath(spec.reportDir, 1)), /^killed after 3 s \(the nested/);
    assert.match(await Deno.readTextFile(timeoutPath(spec.reportDir, 2)), /^not started \(the nested run's/);
    assert.equal(await Deno.readTextFile(startedPath(spec.reportDir, 0)), "1");
    assert.equal(await Deno.readTextFile(startedPath(spec.reportDir, 1)), "2");
    assert.match(await Deno.readTextFile(heartbeatPath(spec.reportDir, 2)), /^\d{4}-\d\d-\d\dT/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a nested file whose tests leave processes running fails once, naming them", () => {
  const skipped: TestCase[] = [{ file: "a_test.ts", name: "boots", outcome: "skipped" }];
  const out = nestedOutcomes(skipped, [{ file: "a_test.ts", names: ["boots"] }], [{
    cases: [{ file: "a_test.ts", name: "boots", outcome: "passed" }],
    leftover: "123 deno run main.ts -smp 2\n124 qemu",
  }]);
  assert.deepEqual(out.map((c) => [c.file, c.name, c.outcome]), [
    ["a_test.ts", "boots", "passed"],
    ["a_test.ts", LEFTOVER_TEST, "failed"],
  ]);
  assert.match(out[1].reason!, /123 deno run main\.ts -smp 2; 124 qemu/);
});

Deno.test("two nested drivers sharing a report folder run every unit once between them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kvm-ts-driver-test-" });
  try {
    const names = ["a", "b", "c", "d", "e", "f"];
    await Deno.writeTextFile(
      `${dir}/many_test.ts`,
      names.map((name) =>
        `Deno.test("${name}", async () => { await new Promise((r) => setTimeout(r, 300)); });\n`
      )
        .join(""),
    );
    await Deno.mkdir(`${dir}/reports`);
    const spec = (vm: number): NestedSpec => ({
      args: ["--no-check"],
      units: names.map((name) => ({ file: `${dir}/many_test.ts`, names: [name] })),
      reportDir: `${dir}/reports`,
      unitTimeoutSeconds: 60,
      jobs: 1,
      vm,
    });
    const [one, two] = await Promise.all([runDriver(dir, spec(1)), runDriver(dir, spec(2))]);
    const ran = (text: string) => [...text.matchAll(/"(\w)": exited 0/g)].map((m) => m[1]);
    assert.deepEqual([...ran(one), ...ran(two)].sort(), names, `each unit once:\n${one}\n${two}`);
    assert.ok(ran(one).length > 0 && ran(two).length > 0, `both drivers took units:\n${one}\n${two}`);
    for (const [n, name] of names.entries()) {
      const vm = await Deno.readTextFile(startedPath(`${dir}/reports`, n));
      assert.ok((vm === "1" ? ran(one) : ran(two)).includes(name), `unit ${n} claimed by the VM that ran it`);
      const cases = parseJunit(await Deno.readTextFile(reportPath(`${dir}/reports`, n)));
      assert.deepEqual(cases.filter((c) => c.outcome === "passed").map((c) => c.name), [name]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nested units: one a test, Linux boots first (SMP ones before the rest), then by file", () => {
  const skipped: TestCase[] = [
    { file: "kvm/vcpu_test.ts", name: "guest debug", outcome: "skipped" },
    { file: "tests/linux_shell_test.ts", name: "Linux: a shell", outcome: "skipped" },
    { file: "tests/linux_shell_test.ts", name: "Linux -smp 2: a shell", outcome: "skipped" },
    { file: "tests/snapshot_test.ts", name: "ring 3", outcome: "skipped" },
    { file: "tests/snapshot_test.ts", name: "smp", outcome: "skipped" },
    { file: "tests/snapshot_linux_test.ts", name: "Linux snapshot", outcome: "skipped" },
    { file: "mod.ts$10-20", name: "mod.ts (example)", outcome: "skipped" },
  ];
  assert.deepEqual(nestedUnits(skipped), [
    { file: "tests/linux_shell_test.ts", names: ["Linux -smp 2: a shell"] },
    { file: "tests/linux_shell_test.ts", names: ["Linux: a shell"] },
    { file: "tests/snapshot_linux_test.ts", names: ["Linux snapshot"] },
    { file: "kvm/vcpu_test.ts", names: ["guest debug"] },
    { file: "mod.ts", names: ["mod.ts (example)"] },
    { file: "tests/snapshot_test.ts", names: ["ring 3"] },
    { file: "tests/snapshot_test.ts", names: ["smp"] },
  ]);
});

Deno.test("a nested unit's report counts only its own tests; a test with none takes its unit's reason", () => {
  const skipped: TestCase[] = [
    { file: "a_test.ts", name: "one", outcome: "skipped" },
    { file: "a_test.ts", name: "two", outcome: "skipped" },
  ];
  const units = [{ file: "a_test.ts", names: ["one"] }, { file: "a_test.ts", names: ["two"] }];
  const out = nestedOutcomes(skipped, units, [
    {
      cases: [
        { file: "a_test.ts", name: "one", outcome: "passed" },
        { file: "a_test.ts", name: "two", outcome: "skipped" }, // filtered out in this unit
      ],
    },
    { cases: [], status: "nested VM 2: the nested VM froze and was killed" },
  ]);
  assert.deepEqual(out.map((c) => [c.name, c.outcome, c.reason]), [
    ["one", "passed", undefined],
    ["two", "failed", "no result from the nested run (nested VM 2: the nested VM froze and was killed)"],
  ]);
});
