import assert from "node:assert/strict";
import { count, exactNames, merge, parseJunit, type TestCase } from "./run_tests.ts";

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
