/**
 * Snapshot benchmark (issue 11): for a 256 MiB and a 2 GiB guest whose every page holds data,
 * the time and size on disk of a full snapshot and of a diff snapshot after 1 % of RAM was written;
 * the time from starting a process to the restored guest running, against a bare `deno run` — once
 * through `PcMachine.restore` in a script loading the source, once as a user runs it (`main.ts
 * --restore DIR` with `deno task start`'s flags, to the guest's first line after the snapshot); and
 * QEMU's `migrate "exec:cat > FILE"` of the same guest (same image, same RAM) in the same run.
 *
 *   deno task bench:snapshot [SIZES]     e.g. 256M,2G (the default); needs KVM — where there is
 *   none: deno task nested --memory 6144 -- deno task bench:snapshot
 *
 * @module
 */

import { assemble } from "../machine/guests/assemble.ts";
import { PcMachine } from "../machine/pc/pc_machine.ts";
import { START_FLAGS } from "../cli/start_flags.ts";
import { bundleState } from "../cli/bundle_manifest.ts";
import { buildBundle } from "../tools/bundle.ts";
import { benchArgs } from "./_args.ts";

const { positionals } = benchArgs(
  "bench:snapshot",
  "usage: deno task bench:snapshot [SIZES]   (guest RAM sizes, comma-separated: 256M,2G by default)",
  {},
  Deno.args,
  1,
);
const SIZES = (positionals[0] ?? "256M,2G").split(",");
const badSize = SIZES.find((size) => parseSize(size) === undefined);
if (badSize !== undefined) {
  console.error(`bench:snapshot: ${JSON.stringify(badSize)} is not a size such as 256M or 2G`);
  Deno.exit(2);
}
const RUNS = 5;
const here = new URL(".", import.meta.url).pathname;

/** `256M`, `2G` → bytes; undefined for anything else (checked for every size before the runs). */
function parseSize(text: string): bigint | undefined {
  const m = /^([1-9]\d*)([MG])$/.exec(text);
  return m ? BigInt(m[1]) << (m[2] === "G" ? 30n : 20n) : undefined;
}

async function guestImage(ramSize: bigint, dir: string): Promise<Uint8Array> {
  const source = Deno.readTextFileSync(`${here}guests/snapshot_fill.S`);
  const path = `${dir}/fill.S`;
  Deno.writeTextFileSync(path, `\t.set RAM_END, 0x${ramSize.toString(16)}\n${source}`);
  return await assemble(path, { base: 0x10_0000 });
}

function onDisk(path: string): number {
  return (Deno.statSync(path).blocks ?? 0) * 512;
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Milliseconds from spawning `deno args…` to `line` on its stdout; it must then exit with `code`
 * (the restored guest ends at its next write to isa-debug-exit, value 0: status 1).
 */
async function timeToLine(args: string[], line = "running", code = 0): Promise<number> {
  const start = performance.now();
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  let at = NaN;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
    if (Number.isNaN(at) && text.includes(line)) at = performance.now() - start;
  }
  const status = await child.status;
  if (status.code !== code || Number.isNaN(at)) throw new Error(`${args.join(" ")} failed: ${text}`);
  return at;
}

async function qmp(path: string) {
  const conn = await Deno.connect({ transport: "unix", path });
  const reader = conn.readable.getReader();
  let buffer = "";
  const next = async (): Promise<Record<string, unknown>> => {
    for (;;) {
      const nl = buffer.indexOf("\n");
      if (nl >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const msg = JSON.parse(line);
        if (!("event" in msg)) return msg;
        continue;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error("QMP closed");
      buffer += new TextDecoder().decode(value);
    }
  };
  await next(); // greeting
  const command = async (execute: string, args?: unknown) => {
    await conn.write(new TextEncoder().encode(JSON.stringify({ execute, arguments: args }) + "\n"));
    return await next();
  };
  await command("qmp_capabilities");
  return { command, close: () => conn.close() };
}

async function qemuMigrate(
  image: Uint8Array,
  ramSize: bigint,
  dir: string,
): Promise<{ ms: number; bytes: number }> {
  Deno.writeFileSync(`${dir}/fill.bin`, image);
  const sock = `${dir}/qmp.sock`;
  const serial = `${dir}/qemu-serial.txt`;
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      ...["-machine", "pc", "-accel", "kvm", "-m", `${ramSize >> 20n}M`, "-nodefaults", "-display", "none"],
      ...[
        "-serial",
        `file:${serial}`,
        "-kernel",
        `${dir}/fill.bin`,
        "-qmp",
        `unix:${sock},server=on,wait=off`,
      ],
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    for (let i = 0; i < 6000; i++) {
      try {
        if (Deno.readTextFileSync(serial).includes("dirtied")) break;
      } catch { /* not there yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    const q = await qmp(sock);
    await q.command("stop");
    const file = `${dir}/qemu-migration`;
    const start = performance.now();
    await q.command("migrate", { uri: `exec:cat > ${file}` });
    for (;;) {
      const reply = await q.command("query-migrate") as { return: { status: string; "error-desc"?: string } };
      if (reply.return.status === "completed") break;
      if (reply.return.status === "failed") {
        throw new Error(`migration failed: ${reply.return["error-desc"]}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const ms = performance.now() - start;
    await q.command("quit");
    q.close();
    return { ms, bytes: Deno.statSync(file).size };
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.output().catch(() => {});
  }
}

const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
console.log(
  `# snapshot benchmark: ${cpu}, Linux ${Deno.osRelease()}, KVM ${
    / hypervisor /.test(Deno.readTextFileSync("/proc/cpuinfo")) ? "inside a VM (nested)" : "on bare metal"
  }`,
);
console.log(
  "| guest RAM | full snapshot | full size on disk | 1 % diff snapshot | diff size on disk | QEMU migrate to file | its size | bare `deno run` to running | machine modules loaded | restored and running | `main.ts --restore` to the guest's next line |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
{
  // `main.ts` runs the start-up bundle only while it is fresh, as `npm start` keeps it.
  const root = new URL("../", import.meta.url);
  const state = bundleState(root, new URL("build/", root));
  if (!state.fresh) {
    const built = await buildBundle(new URL("build/", root));
    console.error(`bundle: ${state.reason}: built in ${built.ms.toFixed(0)} ms`);
  }
}
for (const size of SIZES) {
  const ramSize = parseSize(size)!; // every size was checked above
  const dir = Deno.makeTempDirSync({ prefix: "kvmts-bench-snap-" });
  try {
    const progress = (what: string) =>
      console.error(`${size}: ${what} (${(performance.now() / 1000).toFixed(1)} s)`);
    const image = await guestImage(ramSize, dir);
    let fullMs: number, diffMs: number, fullBytes: number, diffBytes: number;
    {
      using pc = await PcMachine.create({ ramSize, kernel: { image } });
      progress("filling RAM");
      pc.run(); // fill every page
      progress("full snapshot");
      let t = performance.now();
      pc.snapshot(`${dir}/full`);
      fullMs = performance.now() - t;
      pc.run(); // dirty 1 %
      progress("diff snapshot");
      t = performance.now();
      pc.snapshot(`${dir}/diff`, { diff: true });
      diffMs = performance.now() - t;
      fullBytes = onDisk(`${dir}/full/memory`) + onDisk(`${dir}/full/state`);
      diffBytes = onDisk(`${dir}/diff/memory.diff`) + onDisk(`${dir}/diff/state`);
    }
    const child = `${here}_snapshot_child.ts`;
    const bare: number[] = [];
    const loaded: number[] = [];
    const restore: number[] = [];
    const command: number[] = [];
    const main = new URL("../main.ts", import.meta.url).pathname;
    progress("restores");
    // Untimed: the first start after a bundle build writes Deno's code cache.
    await timeToLine(["run", ...START_FLAGS, main, "--restore", `${dir}/full`], "resumed", 1);
    for (let i = 0; i < RUNS; i++) {
      bare.push(await timeToLine(["run", "-A", child, "bare"]));
      loaded.push(await timeToLine(["run", "-A", child, "import"]));
      restore.push(await timeToLine(["run", "-A", child, "restore", `${dir}/full`]));
      command.push(await timeToLine(["run", ...START_FLAGS, main, "--restore", `${dir}/full`], "resumed", 1));
    }
    // Room for QEMU's guest and its migration file (the nested VM's /tmp is RAM).
    Deno.removeSync(`${dir}/full`, { recursive: true });
    Deno.removeSync(`${dir}/diff`, { recursive: true });
    progress("QEMU");
    let qemu = { ms: NaN, bytes: NaN };
    try {
      qemu = await qemuMigrate(image, ramSize, dir);
    } catch (error) {
      console.error(`${size}: QEMU: ${(error as Error).message}`);
    }
    console.log(
      `| ${size} | ${fullMs.toFixed(0)} ms | ${mib(fullBytes)} MiB | ${diffMs.toFixed(0)} ms | ${
        mib(diffBytes)
      } MiB | ${qemu.ms.toFixed(0)} ms | ${mib(qemu.bytes)} MiB | ${median(bare).toFixed(0)} ms | ${
        median(loaded).toFixed(0)
      } ms | ${median(restore).toFixed(0)} ms | ${median(command).toFixed(0)} ms |`,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}
