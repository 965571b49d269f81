/**
 * Boots one Linux kernel and busybox initramfs (examples/build_initramfs.ts, to its shell) under
 * kvm-ts — the bzImage through the 64-bit boot protocol and its vmlinux through PVH — and under
 * `qemu-system-x86_64 -accel kvm` with `-machine microvm` (the bzImage, and the same vmlinux through
 * PVH) and `-machine pc`, in one run, with the same command line and RAM (kvm-ts's PVH boot also
 * with `-machine pc,kernel-irqchip=split`, microvm's kind of irqchip). For each it reports the
 * time from the command to the shell's first prompt, to the process's exit after `poweroff -f` is
 * typed there, the process's peak RSS (VmHWM) and its largest private anonymous memory (RssAnon,
 * guest RAM included; RSS also counts the executable's pages, shared through the page cache), both
 * sampled every 200 ms and at the prompt; and, run as root, KVM's own exit counters over each boot
 * (its debugfs), which count alike for every VMM. One untimed kvm-ts boot first fills Deno's code
 * cache (after a bundle build, or in a fresh nested VM). Rounds alternate the order; the tables show
 * medians and the ratio of each to QEMU microvm's bzImage boot.
 *
 * A boot that stops printing for `--stall` seconds, before its prompt or after it, counts as stalled
 * and is tried again (inside the nested KVM VM the emulator's SVM stalls some boots,
 * docs/nested-kvm.md).
 *
 * Usage: deno task bench:linux [--kernel /boot/vmlinuz-…] [--append TEXT] [--rounds 3] [--stall 60]
 *
 * @module
 */

import { benchArgs } from "./_args.ts";
import { gzip, initramfs, SHELL_PROMPT } from "../examples/build_initramfs.ts";
import { extractVmlinux, newestKernel } from "../tests/_linux_guest.ts";
import { START_FLAGS } from "../cli/start_flags.ts";
import { kvmCountersAvailable, readKvmCounters } from "./_kvm_counters.ts";

const { values } = benchArgs(
  "bench:linux",
  "usage: deno task bench:linux [--kernel /boot/vmlinuz-…] [--append TEXT] [--rounds 3] [--stall 60] " +
    "[--memory 256M]",
  {
    kernel: { type: "string" },
    append: { type: "string", default: "console=ttyS0 quiet panic=-1" },
    rounds: { type: "string", default: "3", number: true },
    stall: { type: "string", default: "60", number: true },
    memory: { type: "string", default: "256M" },
  },
);
const kernel = values.kernel ?? newestKernel();
if (!kernel) {
  console.error("bench:linux: no kernel: pass --kernel or apt-get install linux-image-amd64");
  Deno.exit(1);
}
const ROUNDS = Number(values.rounds);
const STALL_MS = Number(values.stall) * 1000;
const TRIES = 4;

interface Sample {
  prompt: number;
  exit: number;
  rssKib: number;
  anonKib: number;
  /** KVM's counters from start to the prompt (exits in all, port I/O and MMIO exits, halts). */
  kvm?: Record<Counter, number>;
}

/**
 * KVM's counters (its debugfs, needs root; one VM runs at a time here): the same count for every
 * VMM, and so the fair measure of what each one's guest cost in exits. KVM sums them over the VMs
 * that exist, so they are read at the prompt, while the VM does.
 */
const COUNTERS = ["exits", "io_exits", "mmio_exits", "halt_exits"] as const;
type Counter = (typeof COUNTERS)[number];
const COUNTING = kvmCountersAvailable();

/**
 * The process's peak RSS so far (VmHWM) and its private anonymous memory now (RssAnon), in KiB:
 * zeros once it is gone (reading another process's needs --allow-all). RSS also counts the pages of
 * the executable and libraries the process has touched, which the page cache shares between every
 * process that runs them; RssAnon is what one more VM costs (guest RAM included).
 */
function memory(pid: number): { peak: number; anon: number } {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
    return { peak: kib("VmHWM"), anon: kib("RssAnon") };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { peak: 0, anon: 0 };
    throw error;
  }
}

/**
 * One boot to the prompt, `poweroff -f`, and the exit; undefined when it stalled (no output for the
 * stall time, before or after the prompt).
 */
async function boot(command: string, args: string[]): Promise<Sample | undefined> {
  const before = COUNTING ? readKvmCounters(COUNTERS) : undefined;
  const start = performance.now();
  const child = new Deno.Command(command, { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const stderr = new Response(child.stderr).text();
  const writer = child.stdin.getWriter();
  let text = "";
  let prompt: number | undefined;
  let kvm: Record<Counter, number> | undefined;
  let rssKib = 0;
  let anonKib = 0;
  const sample = () => {
    const m = memory(child.pid);
    rssKib = Math.max(rssKib, m.peak);
    anonKib = Math.max(anonKib, m.anon);
  };
  let lastOutput = start;
  let stalled = false;
  const watch = setInterval(() => {
    if (stalled) return;
    sample();
    // A boot that stalls before its prompt, or after it on its way down, is killed and tried again.
    if (performance.now() - lastOutput <= STALL_MS) return;
    stalled = true;
    try {
      child.kill("SIGKILL");
    } catch { /* it ended meanwhile */ }
  }, 200);
  try {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      text += decoder.decode(chunk, { stream: true });
      lastOutput = performance.now();
      if (prompt === undefined && text.includes(SHELL_PROMPT)) {
        prompt = performance.now() - start;
        sample();
        if (before) {
          const now = readKvmCounters(COUNTERS);
          kvm = Object.fromEntries(COUNTERS.map((c) => [c, now[c] - before[c]])) as Record<Counter, number>;
        }
        await writer.write(new TextEncoder().encode("poweroff -f\r"));
        lastOutput = performance.now();
      }
    }
    const status = await child.status;
    const exit = performance.now() - start;
    if (prompt === undefined || !status.success) {
      // What it was doing: the console's last line and the program's own last words.
      const lastLine = text.trimEnd().split(/\r?\n/).at(-1) ?? "";
      const said = (await stderr).trim().split("\n").at(-1) ?? "";
      console.error(
        `  ${stalled ? `no output for ${STALL_MS / 1000} s` : `exit status ${status.code}`} ${
          prompt === undefined ? "before the prompt" : "after poweroff -f"
        }; last console line ${JSON.stringify(lastLine.slice(-120))}${
          said ? `; stderr: ${said.slice(-200)}` : ""
        }`,
      );
      return undefined;
    }
    return { prompt, exit, rssKib, anonKib, ...(kvm ? { kvm } : {}) };
  } finally {
    clearInterval(watch);
    await writer.close().catch(() => {});
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = await Deno.makeTempDir({ prefix: "linux-bench-" });
try {
  const initrd = `${dir}/initramfs.cpio.gz`;
  await Deno.writeFile(initrd, await gzip(initramfs(await Deno.readFile("/bin/busybox"))));
  const vmlinux = `${dir}/vmlinux`;
  const image = await extractVmlinux(kernel);
  if (typeof image === "string") {
    console.error(`bench:linux: ${image}`);
    Deno.exit(1);
  }
  await Deno.writeFile(vmlinux, image);
  const tail = (image: string) => ["-kernel", image, "-initrd", initrd, "-append", values.append!];
  const qemu = ["-accel", "kvm", "-cpu", "host", "-m", values.memory!, "-nodefaults", "-no-reboot"];
  const qemuIo = ["-display", "none", "-serial", "stdio"];
  const main = new URL("../main.ts", import.meta.url).pathname;
  // As `deno task start` runs it.
  const ours = ["run", ...START_FLAGS, main, "-m", values.memory!];
  const pvh: [string, string, string[]] = ["kvm-ts (vmlinux, PVH)", Deno.execPath(), [
    ...ours,
    ...tail(vmlinux),
  ]];
  const runs: [string, string, string[]][] = [
    ["qemu -machine microvm", "qemu-system-x86_64", [
      "-machine",
      "microvm",
      ...qemu,
      ...qemuIo,
      ...tail(kernel),
    ]],
    // QEMU boots the same vmlinux through PVH too: the like-for-like row for kvm-ts's PVH boot.
    ["qemu -machine microvm (vmlinux, PVH)", "qemu-system-x86_64", [
      "-machine",
      "microvm",
      ...qemu,
      ...qemuIo,
      ...tail(vmlinux),
    ]],
    ["qemu -machine pc", "qemu-system-x86_64", ["-machine", "pc", ...qemu, ...qemuIo, ...tail(kernel)]],
    ["kvm-ts (bzImage)", Deno.execPath(), [...ours, ...tail(kernel)]],
    pvh,
    // Like for like with microvm's default split irqchip (our PIC, IOAPIC and PIT).
    ["kvm-ts (vmlinux, PVH) kernel-irqchip=split", Deno.execPath(), [
      ...ours,
      "-machine",
      "pc,kernel-irqchip=split",
      ...tail(vmlinux),
    ]],
  ];
  console.log(`kernel ${kernel}, -m ${values.memory}, ${ROUNDS} rounds\ncommand line: ${values.append}\n`);
  // Untimed: a start after a bundle build (or in a fresh nested VM, whose code cache starts empty)
  // compiles and caches the front-end's code first, which costs seconds under the emulator and is
  // not what a user's boot waits for.
  console.error(`warm-up: ${pvh[0]}: ${(await boot(pvh[1], pvh[2])) ? "done" : "stalled"}`);
  const samples = new Map<string, Sample[]>(runs.map(([name]) => [name, []]));
  const stalls = new Map<string, number>(runs.map(([name]) => [name, 0]));
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? runs : [...runs].reverse();
    for (const [name, command, args] of order) {
      for (let tryNo = 0; tryNo < TRIES; tryNo++) {
        const sample = await boot(command, args);
        // Progress on stderr: a round of six boots takes minutes inside the nested VM.
        console.error(
          `round ${round + 1}: ${name}: ${
            sample ? `prompt ${(sample.prompt / 1000).toFixed(2)} s` : `stalled (try ${tryNo + 1})`
          }`,
        );
        if (sample) {
          samples.get(name)!.push(sample);
          break;
        }
        stalls.set(name, stalls.get(name)! + 1);
      }
    }
  }
  const base = samples.get(runs[0][0])!;
  const ref = base.length
    ? {
      prompt: median(base.map((s) => s.prompt)),
      exit: median(base.map((s) => s.exit)),
      rss: median(base.map((s) => s.rssKib)),
      anon: median(base.map((s) => s.anonKib)),
    }
    : undefined;
  const cell = (v: number | undefined, unit: string, r?: number) =>
    v === undefined
      ? "—"
      : `${unit === "s" ? (v / 1000).toFixed(2) : (v / 1024).toFixed(1)} ${unit === "s" ? "s" : "MiB"}${
        r ? ` (×${(v / r).toFixed(2)})` : ""
      }`;
  console.log("| | to the prompt | to the exit | peak RSS | private memory (RssAnon) | boots stalled |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (const [name] of runs) {
    const got = samples.get(name)!;
    const of = (pick: (s: Sample) => number) => got.length ? median(got.map(pick)) : undefined;
    console.log(
      `| ${name} | ${cell(of((s) => s.prompt), "s", ref?.prompt)} | ${
        cell(of((s) => s.exit), "s", ref?.exit)
      } | ${cell(of((s) => s.rssKib), "k", ref?.rss)} | ${cell(of((s) => s.anonKib), "k", ref?.anon)} | ${
        stalls.get(name)
      } |`,
    );
  }
  console.log("\n(×: ratio to QEMU microvm; medians of the rounds that reached the prompt and exited)");
  if (COUNTING) {
    console.log("\nKVM's exits from the start to the prompt (its debugfs counters; medians):\n");
    console.log("| | exits | port I/O exits | MMIO exits | halts |");
    console.log("| --- | --- | --- | --- | --- |");
    for (const [name] of runs) {
      const got = samples.get(name)!.filter((s) => s.kvm);
      const of = (c: Counter) => got.length ? String(median(got.map((s) => s.kvm![c]))) : "—";
      console.log(
        `| ${name} | ${of("exits")} | ${of("io_exits")} | ${of("mmio_exits")} | ${of("halt_exits")} |`,
      );
    }
  } else {
    console.log("\n(KVM's exit counters need root and debugfs: not shown)");
  }
  console.log("\nEach round (to the prompt, s):");
  for (const [name] of runs) {
    console.log(`  ${name}: ${samples.get(name)!.map((s) => (s.prompt / 1000).toFixed(2)).join(", ")}`);
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
