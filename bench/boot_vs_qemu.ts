/**
 * The same Multiboot guest (machine/guests/exit_status.S: prints one line, exits through
 * isa-debug-exit with status 33) under this project's front-end and under QEMU 7.2 with
 * `-machine microvm` (its default split irqchip, and `kernel-irqchip=on` as this board has) and
 * `-machine pc`, in one run: wall time from the command to the guest's exit
 * and peak resident memory (GNU time's %M) of each, plus where our time goes (`--timings`).
 *
 * Every row gets its ratio to QEMU microvm and to a bare `deno run` of an empty file. `main.ts` runs
 * the start-up bundle (`build/`, built first when missing or stale); a second kvm-ts row runs the
 * source (`cli/main.ts`) through a one-line entry, as `main.ts` did before the bundle. Each row's
 * `--timings` says which it loaded, and the benchmark refuses a row that loaded the other.
 *
 * Usage: deno task bench:boot [--runs 10] [--also DIR]
 *
 * `--also DIR` times another checkout's `main.ts` in the same run (a before/after comparison:
 * `git worktree add /tmp/before HEAD~3`).
 *
 * @module
 */

import { benchArgs } from "./_args.ts";
import { EXIT_STATUS } from "../mod.ts";
import { bundleState } from "../cli/bundle_manifest.ts";
import { buildBundle } from "../tools/bundle.ts";
import { START_FLAGS } from "../cli/start_flags.ts";

const { values } = benchArgs("bench:boot", "usage: deno task bench:boot [--runs 10] [--also DIR]", {
  runs: { type: "string", default: "10", number: true },
  also: { type: "string" },
});
const RUNS = Number(values.runs);
const ROOT = new URL("../", import.meta.url);
const MAIN = new URL("main.ts", ROOT).pathname;
const BUILD = new URL("build/", ROOT);
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

/** One configuration measured: its name, command and arguments, and how many runs it gets. */
interface Config {
  name: string;
  command: string;
  args: string[];
  runs: number;
  /** Whether each run must be the guest's exit (the empty-file reference is not). */
  guest: boolean;
  /** Where its `--timings` must say the front-end was loaded from. */
  from?: "the bundle" | "source";
}

/**
 * Runs every configuration round by round (one run of each per round, in order), so that a change
 * in the machine's load during the benchmark falls on all of them alike; prints each one's medians
 * and returns its samples by name.
 */
async function interleaved(configs: Config[]): Promise<Map<string, Sample[]>> {
  const samples = new Map(configs.map((c) => [c.name, [] as Sample[]]));
  const rounds = Math.max(...configs.map((c) => c.runs));
  for (let round = 0; round < rounds; round++) {
    for (const c of configs) {
      if (round >= c.runs) continue;
      const sample = await measure(c.command, c.args);
      if (c.guest && (sample.status !== 33 || sample.stdout !== EXPECTED)) {
        throw new Error(
          `${c.name}: status ${sample.status}, output ${JSON.stringify(sample.stdout)}\n${sample.stderr}`,
        );
      }
      if (c.from && !sample.stderr.includes(`module loading from ${c.from}`)) {
        throw new Error(`${c.name}: did not load from ${c.from}:\n${sample.stderr}`);
      }
      samples.get(c.name)!.push(sample);
    }
  }
  return samples;
}

const dir = await Deno.makeTempDir({ prefix: "boot-bench-" });
try {
  const kernel = `${dir}/exit_status.bin`;
  await Deno.writeFile(kernel, EXIT_STATUS);
  const deno = Deno.execPath();
  console.log(
    `boot to guest exit, same Multiboot guest (${EXIT_STATUS.length} bytes), -m 128M; runs interleaved\n`,
  );
  const empty = `${dir}/empty.ts`;
  await Deno.writeTextFile(empty, "");
  const state = bundleState(ROOT, BUILD);
  if (state.fresh) console.log(`bundle: ${BUILD.pathname} is fresh`);
  else {
    const built = await buildBundle(BUILD);
    console.log(`bundle: ${state.reason}: built ${BUILD.pathname} in ${built.ms.toFixed(0)} ms`);
  }
  // main.ts as it was before the bundle: the source's module graph, loaded statically.
  const sourceMain = `${dir}/source_main.ts`;
  await Deno.writeTextFile(
    sourceMain,
    `import { main } from ${JSON.stringify(new URL("cli/main.ts", ROOT).href)};\n` +
      `Deno.exit(await main(Deno.args));\n`,
  );
  // The floor under any run of this front-end: what main.ts does before main() — the bundle's
  // freshness check and its import — and the FFI's first use, with no VM made.
  const floor = `${dir}/floor.ts`;
  await Deno.writeTextFile(
    floor,
    `import { bundleState } from ${JSON.stringify(new URL("cli/bundle_manifest.ts", ROOT).href)};\n` +
      `const bundle = bundleState(new URL(${JSON.stringify(ROOT.href)}), new URL(${
        JSON.stringify(BUILD.href)
      }));\n` +
      `if (!bundle.fresh) throw new Error("the bundle is not fresh");\n` +
      `await import(bundle.entry.href);\n` +
      `Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }).close();\n`,
  );
  const ourArgs = (main: string) => [
    "run",
    ...START_FLAGS,
    main,
    "-m",
    "128M",
    "-kernel",
    kernel,
    "--timings",
  ];
  const qemu = (
    machine: string,
  ) => ["-machine", machine, ...QEMU_COMMON, ...DEBUG_EXIT, "-m", "128M", "-kernel", kernel];
  const OURS = "kvm-ts main.ts (bundle)";
  const SOURCE = "kvm-ts cli/main.ts (source)";
  const MICROVM = "qemu-system-x86_64 -machine microvm";
  const BARE = "reference: deno run of an empty file";
  const FLOOR = "floor: main.ts's loading and FFI, no VM";
  const configs: Config[] = [
    { name: BARE, command: deno, args: ["run", empty], runs: RUNS, guest: false },
    { name: FLOOR, command: deno, args: ["run", ...START_FLAGS, floor], runs: RUNS, guest: false },
    { name: OURS, command: deno, args: ourArgs(MAIN), runs: RUNS, guest: true, from: "the bundle" },
    {
      name: `${OURS} -machine kernel-irqchip=split`,
      command: deno,
      args: [...ourArgs(MAIN), "-machine", "pc,kernel-irqchip=split"],
      runs: RUNS,
      guest: true,
      from: "the bundle",
    },
    { name: SOURCE, command: deno, args: ourArgs(sourceMain), runs: RUNS, guest: true, from: "source" },
    ...(values.also
      ? [{
        name: `kvm-ts at ${values.also}`,
        command: deno,
        args: ourArgs(`${values.also}/main.ts`),
        runs: RUNS,
        guest: true,
      }]
      : []),
    { name: MICROVM, command: "qemu-system-x86_64", args: qemu("microvm"), runs: RUNS, guest: true },
    // Like for like: microvm's default is a split irqchip (PIC, IOAPIC and PIT in QEMU), as this
    // board's -machine kernel-irqchip=split; its default, as QEMU's pc, has them in the kernel, whose
    // VM teardown then waits for an SRCU grace period per in-kernel device.
    {
      name: `${MICROVM},kernel-irqchip=on`,
      command: "qemu-system-x86_64",
      args: qemu("microvm,kernel-irqchip=on"),
      runs: RUNS,
      guest: true,
    },
    {
      name: "qemu-system-x86_64 -machine pc",
      command: "qemu-system-x86_64",
      args: qemu("pc"),
      runs: Math.min(RUNS, 3),
      guest: true,
    },
  ];
  const samples = await interleaved(configs);
  const stats = new Map([...samples].map(([name, s]) => [name, {
    ms: median(s.map((x) => x.ms)),
    min: Math.min(...s.map((x) => x.ms)),
    rssKiB: median(s.map((x) => x.rssKiB)),
    runs: s.length,
  }]));
  const microvm = stats.get(MICROVM)!;
  const bare = stats.get(BARE)!;
  console.log(
    `${"".padEnd(52)} ${"median".padStart(8)} ${"min".padStart(8)} ${"peak RSS".padStart(10)}   ` +
      `vs microvm (time, RSS)   vs bare deno (time, RSS)`,
  );
  for (const [name, r] of stats) {
    console.log(
      `${name.padEnd(52)} ${r.ms.toFixed(0).padStart(5)} ms ${r.min.toFixed(0).padStart(5)} ms ${
        (r.rssKiB / 1024).toFixed(1).padStart(6)
      } MiB   ×${(r.ms / microvm.ms).toFixed(2)} ×${(r.rssKiB / microvm.rssKiB).toFixed(2)}` +
        `              ×${(r.ms / bare.ms).toFixed(2)} ×${
          (r.rssKiB / bare.rssKiB).toFixed(2)
        }   (${r.runs} runs)`,
    );
  }
  console.log(`\nwhere kvm-ts's time goes (median of its --timings lines)       bundle    split   source`);
  const phases = (name: string) =>
    samples.get(name)!.map((s) =>
      [...s.stderr.matchAll(/([a-zA-Z() -]+?) ([\d.]+) ms/g)].map((m) => [m[1].trim(), Number(m[2])] as const)
    );
  const bundled = phases(OURS);
  const split = phases(`${OURS} -machine kernel-irqchip=split`);
  const source = phases(SOURCE);
  const phase = (runs: (readonly (readonly [string, number])[])[], i: number) =>
    median(runs.map((p) => p[i][1])).toFixed(1).padStart(6);
  for (let i = 0; i < bundled[0].length; i++) {
    console.log(
      `  ${bundled[0][i][0].padEnd(58)} ${phase(bundled, i)} ms ${phase(split, i)} ms ${phase(source, i)} ms`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
