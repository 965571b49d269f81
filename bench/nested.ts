/**
 * What the nested KVM VM costs (`deno task bench:nested`): QEMU's TCG with an emulated SVM CPU and
 * Debian's kernel, on this host. Each figure is the median of `--rounds` runs (3), in one run of this script:
 *
 * - the VM alone: `deno task nested -- true` (boot, the 9p root and overlay, the job, power-off);
 * - the README's main command: `deno task start` (the built-in guest) where there is no /dev/kvm,
 *   which goes through the nested VM by itself;
 * - the same built-in guest run directly inside the VM (its own time there, without the VM's boot);
 * - a fixed set of KVM tests inside the VM with TCG's `thread=multi` and `thread=single`.
 *
 * @module
 */

import { runNested } from "../nested/nested_vm.ts";
import { benchArgs } from "./_args.ts";

const { values } = benchArgs("bench:nested", "usage: deno task bench:nested [--rounds 3]", {
  rounds: { type: "string", default: "3", number: true },
});
const ROUNDS = Number(values.rounds);
const deno = Deno.execPath();
const root = new URL("../", import.meta.url).pathname;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(fn: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

async function nested(argv: string[], tcgThreads: "multi" | "single" = "single"): Promise<number> {
  let inner = 0;
  const result = await runNested({
    argv: [
      "sh",
      "-c",
      'start=$(date +%s%N); "$@" >/dev/null 2>&1; s=$?; echo $(( ($(date +%s%N) - start) / 1000000 )); exit $s',
      "-",
      ...argv,
    ],
    cwd: root,
    env: { NO_COLOR: "1", KVM_TS_LEAK_CYCLES: "100" },
    stdio: "piped",
    tcgThreads,
    timeoutSeconds: 1800,
  });
  if (result.status !== 0) throw new Error(`${argv.join(" ")} exited ${result.status} in the nested VM`);
  inner = Number(new TextDecoder().decode(result.output).trim().split("\n").at(-1)) / 1000;
  return inner;
}

const rows: [string, string][] = [];
const vmAlone: number[] = [];
const startFallback: number[] = [];
const guestInside: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  vmAlone.push(await timed(async () => void await runNested({ argv: ["true"], stdio: "piped" })));
  startFallback.push(
    await timed(async () => {
      const out = await new Deno.Command(deno, {
        args: ["task", "-q", "start"],
        cwd: root,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).output();
      if (!out.success) throw new Error(`deno task start exited ${out.code}`);
    }),
  );
  guestInside.push(
    await nested([deno, "run", "--allow-all", "--no-check", "main.ts"]),
  );
}
rows.push(["nested VM alone (`deno task nested -- true`)", `${median(vmAlone).toFixed(1)} s`]);
rows.push([
  "`deno task start` (built-in guest) through the nested VM",
  `${median(startFallback).toFixed(1)} s`,
]);
rows.push(["the built-in guest's own run inside the VM", `${median(guestInside).toFixed(1)} s`]);

const TESTS = [
  "kvm/vm_test.ts",
  "kvm/leak_test.ts",
  "tests/smp_test.ts",
  "tests/kvm_listener_integration_test.ts",
];
for (const mode of ["multi", "single"] as const) {
  const seconds = await nested([deno, "test", "--allow-all", "--no-check", ...TESTS], mode);
  rows.push([
    `KVM tests (${TESTS.length} files, leak test at 100 cycles) with TCG thread=${mode}`,
    `${seconds.toFixed(0)} s`,
  ]);
}

console.log(`| measured (${ROUNDS} rounds, medians; one run of bench/nested.ts) | time |`);
console.log("| --- | --- |");
for (const [what, value] of rows) console.log(`| ${what} | ${value} |`);
