/**
 * The same Multiboot guest (machine/guests/exit_status.S: prints one line, exits through
 * isa-debug-exit with status 33) under this project's front-end and under QEMU 7.2 with
 * `-machine microvm` and `-machine pc`, in one run: wall time from the command to the guest's exit
 * and peak resident memory (GNU time's %M) of each, plus where our time goes (`--timings`).
 *
 * Every row gets its ratio to QEMU microvm and to a bare `deno run` of an empty file.
 *
 * Usage: deno task bench:boot [--runs 10] [--also DIR]
 *
 * `--also DIR` times another checkout's `main.ts` in the same run (a before/after comparison:
 * `git worktree add /tmp/before HEAD~3`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { EXIT_STATUS } from "../mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string", default: "10" }, also: { type: "string" } },
});
const RUNS = Number(values.runs);
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const EXPECTED = "exit_status: leaving through isa-debug-exit with 0x10 (status 33)\n";
const QEMU_COMMON = ["-accel", "kvm", "-nodefaults", "-no-reboot", "-serial", "stdio", "-display", "none"];
const DEBUG_EXIT = ["-device", "isa-debug-exit,iobase=0x501,iosize=2"];

interface Sample {
  ms: number;
  rssKiB: number;
  status: number;
  stdout: string;
  stderr: string;
}

async function measure(command: string, args: string[]): Promise<Sample> {
  const start = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%M", command, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - start;
  const stderr = new TextDecoder().decode(out.stderr);
  const rss = Number(/(\d+)\s*$/.exec(stderr)?.[1]);
  return { ms, rssKiB: rss, status: out.code, stdout: new TextDecoder().decode(out.stdout), stderr };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** Each series' median wall time and peak RSS, for the ratios printed at the end. */
const rows: { name: string; ms: number; rssKiB: number }[] = [];

async function series(name: string, command: string, args: string[], runs: number) {
  const samples: Sample[] = [];
  for (let i = 0; i < runs; i++) samples.push(await measure(command, args));
  const bad = samples.find((s) => s.status !== 33 || s.stdout !== EXPECTED);
  if (bad) {
    throw new Error(`${name}: status ${bad.status}, output ${JSON.stringify(bad.stdout)}\n${bad.stderr}`);
  }
  const ms = samples.map((s) => s.ms);
  const rss = samples.map((s) => s.rssKiB);
  rows.push({ name, ms: median(ms), rssKiB: median(rss) });
  console.log(
    `${name.padEnd(34)} ${median(ms).toFixed(0).padStart(6)} ms  (min ${
      Math.min(...ms).toFixed(0).padStart(4)
    })  ${(median(rss) / 1024).toFixed(1).padStart(6)} MiB peak RSS   (${runs} runs)`,
  );
  return samples;
}

const dir = await Deno.makeTempDir({ prefix: "boot-bench-" });
try {
  const kernel = `${dir}/exit_status.bin`;
  await Deno.writeFile(kernel, EXIT_STATUS);
  const deno = Deno.execPath();
  console.log(`boot to guest exit, same Multiboot guest (${EXIT_STATUS.length} bytes), -m 128M\n`);
  const empty = `${dir}/empty.ts`;
  await Deno.writeTextFile(empty, "");
  const base = [];
  for (let i = 0; i < RUNS; i++) base.push(await measure(deno, ["run", empty]));
  console.log(
    `${"reference: deno run of an empty file".padEnd(34)} ${
      median(base.map((s) => s.ms)).toFixed(0).padStart(6)
    } ms  ${" ".repeat(12)}${(median(base.map((s) => s.rssKiB)) / 1024).toFixed(1).padStart(6)} MiB peak RSS`,
  );
  const ourArgs = (main: string) => [
    "run",
    "--allow-ffi",
    "--allow-read",
    "--allow-write",
    "--allow-sys",
    main,
    "-m",
    "128M",
    "-kernel",
    kernel,
    "--timings",
  ];
  const ours = await series("kvm-ts (deno run main.ts -kernel)", deno, ourArgs(MAIN), RUNS);
  if (values.also) await series(`kvm-ts at ${values.also}`, deno, ourArgs(`${values.also}/main.ts`), RUNS);
  await series("qemu-system-x86_64 -machine microvm", "qemu-system-x86_64", [
    "-machine",
    "microvm",
    ...QEMU_COMMON,
    ...DEBUG_EXIT,
    "-m",
    "128M",
    "-kernel",
    kernel,
  ], RUNS);
  await series("qemu-system-x86_64 -machine pc", "qemu-system-x86_64", [
    "-machine",
    "pc",
    ...QEMU_COMMON,
    ...DEBUG_EXIT,
    "-m",
    "128M",
    "-kernel",
    kernel,
  ], Math.min(RUNS, 3));
  const microvm = rows.find((r) => r.name.includes("microvm"))!;
  const bare = { ms: median(base.map((s) => s.ms)), rssKiB: median(base.map((s) => s.rssKiB)) };
  console.log("\nratios (medians): wall time and peak RSS against QEMU microvm, and against a bare deno run");
  for (const r of rows) {
    console.log(
      `  ${r.name.padEnd(40)} ×${(r.ms / microvm.ms).toFixed(2)} ×${(r.rssKiB / microvm.rssKiB).toFixed(2)}` +
        `   ×${(r.ms / bare.ms).toFixed(2)} ×${(r.rssKiB / bare.rssKiB).toFixed(2)}`,
    );
  }
  console.log("\nwhere kvm-ts's time goes (median of its --timings lines):");
  const phases = ours.map((s) =>
    [...s.stderr.matchAll(/([a-zA-Z() -]+?) ([\d.]+) ms/g)].map((m) => [m[1].trim(), Number(m[2])] as const)
  );
  for (let i = 0; i < phases[0].length; i++) {
    console.log(
      `  ${phases[0][i][0].padEnd(44)} ${median(phases.map((p) => p[i][1])).toFixed(1).padStart(6)} ms`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
