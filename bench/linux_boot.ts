/**
 * Boots one Linux kernel and busybox initramfs (examples/build_initramfs.ts, to its shell) under
 * kvm-ts — the bzImage through the 64-bit boot protocol and its vmlinux through PVH — and under
 * `qemu-system-x86_64 -accel kvm` with `-machine microvm` and `-machine pc`, in one run, with the
 * same command line and RAM. For each it reports the time from the command to the shell's first
 * prompt, to the process's exit after `poweroff -f` is typed there, and the process's peak RSS
 * (VmHWM, read at the prompt and until the exit). Rounds alternate the order; the table shows
 * medians and the ratio of each to QEMU microvm.
 *
 * A boot that stops printing for `--stall` seconds before its prompt counts as stalled and is tried
 * again (inside the nested KVM VM the emulator's SVM stalls some boots, docs/nested-kvm.md).
 *
 * Usage: deno task bench:linux [--kernel /boot/vmlinuz-…] [--append TEXT] [--rounds 3] [--stall 60]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { gzip, initramfs, SHELL_PROMPT } from "../examples/build_initramfs.ts";
import { extractVmlinux, newestKernel } from "../tests/_linux_guest.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    kernel: { type: "string" },
    append: { type: "string", default: "console=ttyS0 quiet panic=-1" },
    rounds: { type: "string", default: "3" },
    stall: { type: "string", default: "60" },
    memory: { type: "string", default: "256M" },
  },
});
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
}

/** The process's peak RSS so far, in KiB (0 once it is gone; reading another process's needs --allow-all). */
function peakRss(pid: number): number {
  try {
    return Number(/VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1] ?? 0);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0;
    throw error;
  }
}

/** One boot to the prompt, `poweroff -f`, and the exit; undefined when it stalled. */
async function boot(command: string, args: string[]): Promise<Sample | undefined> {
  const start = performance.now();
  const child = new Deno.Command(command, { args, stdin: "piped", stdout: "piped", stderr: "null" }).spawn();
  const writer = child.stdin.getWriter();
  let text = "";
  let prompt: number | undefined;
  let rssKib = 0;
  let lastOutput = start;
  const watch = setInterval(() => {
    rssKib = Math.max(rssKib, peakRss(child.pid));
    if (prompt === undefined && performance.now() - lastOutput > STALL_MS) child.kill("SIGKILL");
  }, 200);
  try {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      text += decoder.decode(chunk, { stream: true });
      lastOutput = performance.now();
      if (prompt === undefined && text.includes(SHELL_PROMPT)) {
        prompt = performance.now() - start;
        rssKib = Math.max(rssKib, peakRss(child.pid));
        await writer.write(new TextEncoder().encode("poweroff -f\r"));
      }
    }
    const status = await child.status;
    const exit = performance.now() - start;
    if (prompt === undefined || !status.success) return undefined;
    return { prompt, exit, rssKib };
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
  const ours = [
    ...["run", "--allow-ffi", "--allow-read", "--allow-write", "--allow-sys=systemMemoryInfo", "--allow-run"],
    ...["--allow-env", main, "-m", values.memory!],
  ];
  const runs: [string, string, string[]][] = [
    ["qemu -machine microvm", "qemu-system-x86_64", [
      "-machine",
      "microvm",
      ...qemu,
      ...qemuIo,
      ...tail(kernel),
    ]],
    ["qemu -machine pc", "qemu-system-x86_64", ["-machine", "pc", ...qemu, ...qemuIo, ...tail(kernel)]],
    ["kvm-ts (bzImage)", Deno.execPath(), [...ours, ...tail(kernel)]],
    ["kvm-ts (vmlinux, PVH)", Deno.execPath(), [...ours, ...tail(vmlinux)]],
  ];
  console.log(`kernel ${kernel}, -m ${values.memory}, ${ROUNDS} rounds\ncommand line: ${values.append}\n`);
  const samples = new Map<string, Sample[]>(runs.map(([name]) => [name, []]));
  const stalls = new Map<string, number>(runs.map(([name]) => [name, 0]));
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? runs : [...runs].reverse();
    for (const [name, command, args] of order) {
      for (let tryNo = 0; tryNo < TRIES; tryNo++) {
        const sample = await boot(command, args);
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
    ? { prompt: median(base.map((s) => s.prompt)), exit: median(base.map((s) => s.exit)), rss: 0 }
    : undefined;
  if (ref) ref.rss = median(base.map((s) => s.rssKib));
  const cell = (v: number | undefined, unit: string, r?: number) =>
    v === undefined
      ? "—"
      : `${unit === "s" ? (v / 1000).toFixed(2) : (v / 1024).toFixed(1)} ${unit === "s" ? "s" : "MiB"}${
        r ? ` (×${(v / r).toFixed(2)})` : ""
      }`;
  console.log("| | to the prompt | to the exit | peak RSS | boots stalled |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const [name] of runs) {
    const got = samples.get(name)!;
    const [p, e, r] = got.length
      ? [median(got.map((s) => s.prompt)), median(got.map((s) => s.exit)), median(got.map((s) => s.rssKib))]
      : [undefined, undefined, undefined];
    console.log(
      `| ${name} | ${cell(p, "s", ref?.prompt)} | ${cell(e, "s", ref?.exit)} | ${cell(r, "k", ref?.rss)} | ${
        stalls.get(name)
      } |`,
    );
  }
  console.log("\n(×: ratio to QEMU microvm; medians of the rounds that reached the prompt and exited)");
} finally {
  await Deno.remove(dir, { recursive: true });
}
