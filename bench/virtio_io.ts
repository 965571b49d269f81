/**
 * Disk and network speed through virtio-pci (`deno task bench:io`), kvm-ts against QEMU 7.2
 * (`-accel kvm -machine pc`) in one run, with the same Debian kernel, busybox initramfs, disk image
 * and tap:
 *
 * - sequential write then read of DISK MiB on the raw `/dev/vda` with busybox `dd bs=1M` and
 *   O_DIRECT (no guest page cache), as dd reports it;
 * - 4 KiB random reads with O_DIRECT, one at a time, for SECONDS (bench/guest/randread.c, built
 *   static here and appended to the initramfs as a second cpio archive: busybox has no fio);
 * - NET MiB guest → host over TCP: `dd if=/dev/zero bs=64k | nc` in the guest to a busybox `nc -l`
 *   on the tap's far side in a network namespace of this run's own, timed by busybox `time`.
 *
 * For each it also reports the VM's exits to userspace (KVM's `io_exits` + `mmio_exits`) and its
 * injected interrupts, read from KVM's debugfs counters before and after: per MiB for the
 * sequential runs and the transfer, per read for the random reads. Both peers run with the same
 * device features where QEMU has switches: virtio-net's default offloads (checksums, TSO both ways,
 * mergeable receive buffers) — or, with `--offloads off`, every one of them off on both — legacy
 * off, `vhost=off` (kvm-ts has no in-kernel data path).
 *
 * Needs root, /dev/net/tun, iproute2, gcc, QEMU and a hardware-style KVM; where the host has none,
 * run it inside the nested KVM VM: `deno task nested -- deno task bench:io`.
 *
 * kvm-ts runs five ways: with `ioeventfd=on` (its default and QEMU's: notifies signal an eventfd
 * in the kernel and the vCPU runs on a thread of its own while the VM thread serves the queue and
 * copies the disk's data, `aio=inline`); the same with `aio=io_uring` (the data through an io_uring,
 * which copies what the page cache has at once) and with `aio=threads` (every copy by one of
 * io_uring's kernel workers, as QEMU's default thread pool); with the disk's `ioeventfd=off` only
 * (its notifies exits that the vCPU waits on while the VM thread serves them); and with
 * `ioeventfd=off` on both devices (every notify an MMIO exit served on the vCPU's own thread).
 *
 * With `--rounds N` the peers take turns, in reverse order every other round; each figure is the
 * median of its rounds, and each ratio to QEMU the median of the rounds' own ratios (a peer against
 * the QEMU run of the same round: the nested VM's speed drifts more between rounds than the peers
 * differ), with their range and how many rounds were at least QEMU's speed.
 *
 * `--warmup N` (default 1) runs the four commands N times more before the measured pass, in the same
 * guest boot and the same way for every peer, as fio's `ramp_time` does: V8 compiles kvm-ts's request
 * path in tiers as it counts calls (Ignition, Sparkplug, Maglev, then TurboFan after thousands), which
 * on hardware takes a fraction of a second of I/O but under the nested VM's emulator tens of seconds,
 * so a cold pass there measures V8's start more than the device. The first pass's figures are
 * printed too, as "cold"; with `--warmup 0` the one pass is both.
 *
 * `--counters` prints every KVM counter that moved over each command; `--threads` prints each
 * thread's CPU time of the VMM process per MiB or per read (user, of it in the guest, and system,
 * from each thread's `stat` under `/proc/PID/task`) and its context switches (waits and
 * preemptions, from its `status`): where a peer spends what an I/O costs.
 *
 * Usage: deno task bench:io [--kernel /boot/vmlinuz-…] [--disk 256] [--net 64] [--seconds 10]
 *        [--rounds 1] [--warmup 1] [--offloads on|off] [--only PEER]…
 *        [--counters] [--threads]
 *
 * PEER is a name as the tables print it: "kvm-ts ioeventfd=on", "kvm-ts aio=io_uring", "kvm-ts
 * aio=threads", "kvm-ts disk ioeventfd=off", "kvm-ts ioeventfd=off" or "qemu" (default: all).
 *
 * @module
 */

import { benchArgs } from "./_args.ts";
import { VIRTIO_NET_FEATURE_PROPERTIES } from "../devices/virtio/mod.ts";
import { hostKvm } from "../kvm/mod.ts";
import { GuestConsole, retryNestedStalls, tag, tagged } from "../tests/_guest_console.ts";
import { QEMU_LINUX_CONSOLE } from "../tests/_qemu.ts";
import {
  addStaticProgram,
  linuxKvmSkip,
  missingLinuxGuest,
  newestKernel,
  reachShell,
  readBusybox,
  writeInitramfs,
} from "../tests/_linux_guest.ts";
import { KVM_DEBUGFS, kvmCountersAvailable, readKvmCounters } from "./_kvm_counters.ts";
import { threadTimes, threadTimesSince } from "./_thread_times.ts";

const { values } = benchArgs(
  "bench:io",
  "usage: deno task bench:io [--kernel /boot/vmlinuz-…] [--disk 256] [--net 64] [--seconds 10] " +
    "[--rounds 1] [--warmup 1] [--offloads on|off] [--only PEER]… [--counters] " +
    "[--threads]",
  {
    kernel: { type: "string" },
    disk: { type: "string", default: "256", number: true },
    net: { type: "string", default: "64", number: true },
    seconds: { type: "string", default: "10", number: true },
    rounds: { type: "string", default: "1", number: true },
    warmup: { type: "string", default: "1", number: true, min: 0 },
    offloads: { type: "string", default: "on" },
    only: { type: "string", multiple: true },
    counters: { type: "boolean" },
    threads: { type: "boolean" },
  },
);

const PEER_NAMES = [
  "kvm-ts ioeventfd=on",
  "kvm-ts aio=io_uring",
  "kvm-ts aio=threads",
  "kvm-ts disk ioeventfd=off",
  "kvm-ts ioeventfd=off",
  "qemu",
] as const;
const unknownPeer = values.only?.find((name) => !(PEER_NAMES as readonly string[]).includes(name));
if (unknownPeer !== undefined) {
  console.error(`bench:io: --only ${JSON.stringify(unknownPeer)} is none of ${PEER_NAMES.join(", ")}`);
  Deno.exit(2);
}
if (values.offloads !== "on" && values.offloads !== "off") {
  console.error(`bench:io: --offloads ${JSON.stringify(values.offloads)} is neither on nor off`);
  Deno.exit(2);
}
/** The virtio-net-pci properties both peers get: none (QEMU's defaults), or every offload off. */
const NET_PROPERTIES = values.offloads === "on"
  ? ""
  : Object.keys(VIRTIO_NET_FEATURE_PROPERTIES).map((name) => `,${name}=off`).join("");
const KERNEL = values.kernel ?? newestKernel();
const BUSYBOX = readBusybox();
const DISK_MIB = Number(values.disk);
const NET_MIB = Number(values.net);
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const WARMUP = Number(values.warmup);
const NAMESPACE = `kvmts-bench-${Deno.pid}`;
const TAP = "kvmts-bench0";
const HOST_ADDRESS = "10.0.2.2";
const GUEST_ADDRESS = "10.0.2.15";
const SINK_PORT = 5001;
const MAC = "52:54:00:12:34:56";
/**
 * KVM's counters summed over every vCPU of every VM (one VM runs at a time here); `--counters` adds
 * every other counter of KVM's debugfs to a per-step report on stderr.
 */
const COUNTERS = ["io_exits", "mmio_exits", "irq_injections"] as const;
let allCounters: string[] | undefined;
type Counters = Record<(typeof COUNTERS)[number], number>;

const skip = missingLinuxGuest(KERNEL, BUSYBOX) ?? linuxKvmSkip(hostKvm()) ??
  (Deno.uid() === 0 ? undefined : "needs root (a tap in a network namespace, KVM's debugfs counters)");
if (skip) {
  console.error(`bench:io: ${skip}; where the host has no KVM: deno task nested -- deno task bench:io`);
  Deno.exit(1);
}

/** Runs `command args…`; its stdout, or a thrown error with its stderr. */
function run(command: string, ...args: string[]): string {
  const out = new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

function readCounters(): Counters {
  allCounters ??= values.counters
    ? [...Deno.readDirSync(KVM_DEBUGFS)].filter((e) => e.isFile).map((e) => e.name).sort()
    : [];
  return readKvmCounters([...new Set([...COUNTERS, ...allCounters])]) as Counters;
}

function since(before: Counters, what: string): Counters {
  const now = readCounters();
  const diff = Object.fromEntries(
    Object.keys(now).map((name) => [name, now[name as keyof Counters] - before[name as keyof Counters]]),
  );
  if (values.counters) {
    const nonzero = Object.entries(diff).filter(([, n]) => n !== 0).map(([name, n]) => `${name}=${n}`);
    console.error(`bench:io: ${what}: ${nonzero.join(" ")}`);
  }
  return diff as Counters;
}

/** One measured guest command: its figure and the counters it cost. */
interface Measure {
  value: number;
  counters: Counters;
}

interface Peer {
  name: (typeof PEER_NAMES)[number];
  program?: string;
  args: string[];
}

function peers(initrd: string, disk: string): Peer[] {
  const append = "console=ttyS0 quiet panic=-1";
  const common = ["-m", "512M", "-kernel", KERNEL!, "-initrd", initrd, "-append", append];
  /** A kvm-ts peer: the disk's `-drive` extras, and each device's ioeventfd. */
  const ours = (name: Peer["name"], drive: string, blk: "on" | "off", net: "on" | "off"): Peer => ({
    name,
    args: [
      ...common,
      ...["-drive", `id=d0,file=${disk},format=raw,if=none${drive}`],
      ...["-device", `virtio-blk-pci,drive=d0,ioeventfd=${blk}`],
      ...["-netdev", `tap,id=n0,ifname=${TAP},script=no,downscript=no`],
      ...["-device", `virtio-net-pci,netdev=n0,mac=${MAC},ioeventfd=${net}${NET_PROPERTIES}`],
    ],
  });
  const all: Peer[] = [
    // Notifies signal eventfds in the kernel; the vCPU runs on a thread of its own.
    ours("kvm-ts ioeventfd=on", "", "on", "on"),
    // The same, with the disk's data through an io_uring: copied at once where the page cache has it…
    ours("kvm-ts aio=io_uring", ",aio=io_uring", "on", "on"),
    // …or every transfer by one of io_uring's kernel workers, as QEMU's thread pool.
    ours("kvm-ts aio=threads", ",aio=threads", "on", "on"),
    // The disk's notifies exits served by the VM thread while the vCPU waits; the card's eventfds.
    ours("kvm-ts disk ioeventfd=off", "", "off", "on"),
    // Every notify an MMIO exit served on the vCPU's own thread (no eventfd, no thread hop).
    ours("kvm-ts ioeventfd=off", "", "off", "off"),
    {
      name: "qemu",
      program: "qemu-system-x86_64",
      args: [
        ...QEMU_LINUX_CONSOLE,
        ...common,
        ...["-drive", `id=d0,file=${disk},format=raw,if=none`],
        ...["-device", "virtio-blk-pci,drive=d0,disable-legacy=on"],
        ...["-netdev", `tap,id=n0,ifname=${TAP},script=no,downscript=no,vhost=off`],
        ...["-device", `virtio-net-pci,netdev=n0,mac=${MAC},disable-legacy=on${NET_PROPERTIES}`],
      ],
    },
  ];
  return all.filter((peer) => !values.only?.length || values.only.includes(peer.name));
}

/** Runs `line` on the guest's shell with KVM's counters around it; what `parse` makes of its answer. */
async function measure(
  guest: GuestConsole,
  at: { end: number },
  what: string,
  line: string,
  parse: (output: string) => number,
  units: (value: number) => [count: number, unit: string],
): Promise<Measure> {
  const before = readCounters();
  const threadsBefore = values.threads ? threadTimes(guest.pid) : undefined;
  const answer = await guest.command(line, at.end);
  const threadsAfter = threadsBefore ? threadTimes(guest.pid) : undefined;
  const counters = since(before, what);
  at.end = answer.end;
  const value = parse(answer.output);
  if (!Number.isFinite(value)) throw new Error(`could not read a figure from ${line}:\n${answer.output}`);
  if (threadsBefore && threadsAfter) {
    const [count, unit] = units(value);
    const lines = threadTimesSince(threadsBefore, threadsAfter, count);
    console.error(`bench:io: ${what}: CPU per ${unit} by thread:\n  ${lines.join("\n  ")}`);
  }
  return { value, counters };
}

/** busybox time's "real 0m 2.34s" → seconds. */
function realSeconds(output: string): number {
  const match = /real\s+(\d+)m\s*([\d.]+)s/.exec(output);
  return match ? Number(match[1]) * 60 + Number(match[2]) : NaN;
}

/** `command` run under busybox `time` (the shell's answer holds @t=real …@). */
function timed(command: string): string {
  return tagged("t", `$( { time sh -c '${command}'; } 2>&1 | grep real)`);
}

/** MB/s (10^6 bytes) for `mib` MiB from a {@link timed} answer. */
function rate(mib: number): (output: string) => number {
  return (output) => mib * 1.048576 / realSeconds(tag(output, "t"));
}

interface Result {
  write: Measure;
  read: Measure;
  randread: Measure;
  tcp: Measure;
}

/** One boot of `peer`: each pass's figures, the {@link WARMUP} unmeasured passes first. */
async function benchPeer(peer: Peer): Promise<Result[]> {
  let passes: Result[] = [];
  await retryNestedStalls(async () => {
    await using guest = new GuestConsole(peer.args, {
      prefix: ["ip", "netns", "exec", NAMESPACE],
      program: peer.program,
    });
    const at = { end: await reachShell(guest) };
    await guest.command(`ip link set eth0 up; ip addr add ${GUEST_ADDRESS}/24 dev eth0`, at.end)
      .then((answer) => at.end = answer.end);
    await guest.command(COMMANDS, at.end).then((answer) => at.end = answer.end);
    passes = [];
    for (let pass = 0; pass <= WARMUP; pass++) {
      const label = pass < WARMUP ? `warm-up ${pass + 1}: ` : "";
      passes.push(await onePass(guest, at, label));
    }
    await guest.type("poweroff -f\r");
    await guest.status();
  })();
  return passes;
}

/**
 * A busybox `nc -l` on the tap's far side that takes one connection and drops its data, listening
 * when this returns; disposing of it kills it.
 */
async function tcpSink(): Promise<AsyncDisposable> {
  const sink = new Deno.Command("ip", {
    args: ["netns", "exec", NAMESPACE, "busybox", "nc", "-l", "-p", String(SINK_PORT)],
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      sink.kill("SIGKILL");
    } catch { /* gone */ }
    await sink.status;
  };
  // A listening socket on the port (busybox listens on IPv6 for both): state 0A in the namespace's
  // /proc/net/tcp or tcp6.
  const listening = new RegExp(
    `^\\s*\\d+: [0-9A-F]+:${SINK_PORT.toString(16).toUpperCase().padStart(4, "0")} \\S+ 0A `,
    "m",
  );
  const tables = () => run("ip", "netns", "exec", NAMESPACE, "cat", "/proc/net/tcp", "/proc/net/tcp6");
  const deadline = Date.now() + 30_000;
  while (!listening.test(tables())) {
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`bench:io: the TCP sink did not listen on port ${SINK_PORT} within 30 s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { [Symbol.asyncDispose]: stop };
}

/**
 * The measured commands as shell functions, defined once a boot: a measured line is then two or
 * three characters. The guest's shell echoes what is typed through the serial port, five or so port
 * exits a character, and the kernel drains that echo while the command runs: a full command line
 * (150 characters) put a few hundred console exits inside each timed `dd` (the same number for
 * every peer, but not the disk's cost).
 */
const COMMANDS = [
  `bw() { ${
    timed(`dd if=/dev/zero of=/dev/vda bs=1M count=${DISK_MIB} oflag=direct conv=fsync 2>/dev/null`)
  }; }`,
  `br() { ${timed(`dd if=/dev/vda of=/dev/null bs=1M count=${DISK_MIB} iflag=direct 2>/dev/null`)}; }`,
  `bn() { ${
    timed(`dd if=/dev/zero bs=65536 count=${NET_MIB * 16} 2>/dev/null | nc ${HOST_ADDRESS} ${SINK_PORT}`)
  }; }`,
].join("; ");

/** The four commands once, on the guest's shell at `at`; `label` starts each report's name. */
async function onePass(guest: GuestConsole, at: { end: number }, label: string): Promise<Result> {
  const mib = DISK_MIB;
  const write = await measure(guest, at, `${label}write`, "bw", rate(mib), () => [mib, "MiB"]);
  const read = await measure(guest, at, `${label}read`, "br", rate(mib), () => [mib, "MiB"]);
  const randread = await measure(
    guest,
    at,
    `${label}random reads`,
    `/bin/randread /dev/vda ${SECONDS}`,
    (output) => Number(/= (\d+) IOPS/.exec(output)?.[1]),
    (iops) => [iops * SECONDS, "read"],
  );
  await using _sink = await tcpSink();
  const tcp = await measure(guest, at, `${label}TCP`, "bn", rate(NET_MIB), () => [NET_MIB, "MiB"]);
  return { write, read, randread, tcp };
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

if (!kvmCountersAvailable()) {
  console.error(`bench:io: no ${KVM_DEBUGFS} (KVM's counters), and debugfs would not mount`);
  Deno.exit(1);
}
const work = await Deno.makeTempDir({ prefix: "kvmts-bench-io-" });
try {
  // The guest: busybox with virtio_pci, virtio_blk and virtio_net, plus randread as a second archive.
  const initrd = `${work}/initramfs.cpio`;
  await writeInitramfs(initrd, BUSYBOX!, KERNEL!, ["virtio_pci", "virtio_blk", "virtio_net"]);
  addStaticProgram(initrd, new URL("./guest/randread.c", import.meta.url).pathname, "randread", work);
  const disk = `${work}/disk.raw`;
  Deno.writeFileSync(disk, new Uint8Array());
  Deno.truncateSync(disk, (DISK_MIB + 64) * 1024 * 1024);

  run("ip", "netns", "add", NAMESPACE);
  try {
    run("ip", "-n", NAMESPACE, "tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr");
    run("ip", "-n", NAMESPACE, "addr", "add", `${HOST_ADDRESS}/24`, "dev", TAP);
    run("ip", "-n", NAMESPACE, "link", "set", TAP, "up");
    run("ip", "-n", NAMESPACE, "link", "set", "lo", "up");

    // Each peer's first pass (cold) and last (measured) of every round.
    const cold = new Map<string, Result[]>();
    const results = new Map<string, Result[]>();
    for (let round = 0; round < ROUNDS; round++) {
      const order = peers(initrd, disk);
      if (round % 2 === 1) order.reverse();
      for (const peer of order) {
        console.error(`bench:io: round ${round + 1}, ${peer.name}`);
        const passes = await benchPeer(peer);
        cold.set(peer.name, [...cold.get(peer.name) ?? [], passes[0]]);
        results.set(peer.name, [...results.get(peer.name) ?? [], passes[passes.length - 1]]);
        // Each run's figures as they come: when a later run fails, the lines of the finished ones stay.
        passes.forEach((result, pass) =>
          console.error(
            `bench:io: round ${round + 1}, ${peer.name}${pass < WARMUP ? `, warm-up ${pass + 1}` : ""}: ` +
              `write ${result.write.value.toFixed(1)} MB/s, read ${result.read.value.toFixed(1)} MB/s, ` +
              `${result.randread.value.toFixed(0)} IOPS, TCP ${result.tcp.value.toFixed(2)} MB/s`,
          )
        );
      }
    }
    if (WARMUP > 0) {
      console.log("Cold: each peer's first pass, just after boot");
      console.log();
      report(cold);
      console.log();
      console.log(`Measured: each peer's pass after ${WARMUP} warm-up pass${WARMUP === 1 ? "" : "es"}`);
      console.log();
    }
    report(results);
  } finally {
    run("ip", "netns", "del", NAMESPACE);
  }
} finally {
  await Deno.remove(work, { recursive: true });
}

function report(results: Map<string, Result[]>): void {
  const rows: [keyof Result, string, string, number][] = [
    ["write", `sequential write ${DISK_MIB} MiB (dd, O_DIRECT)`, "MB/s", DISK_MIB],
    ["read", `sequential read ${DISK_MIB} MiB (dd, O_DIRECT)`, "MB/s", DISK_MIB],
    ["randread", `4 KiB random reads, ${SECONDS} s (O_DIRECT, queue depth 1)`, "IOPS", 0],
    ["tcp", `TCP guest → host, ${NET_MIB} MiB (nc; offloads ${values.offloads})`, "MB/s", NET_MIB],
  ];
  const pick = (name: string, key: keyof Result) => {
    const samples = results.get(name)?.map((r) => r[key]);
    if (!samples?.length) return undefined;
    const value = median(samples.map((s) => s.value));
    const exits = median(samples.map((s) => s.counters.io_exits + s.counters.mmio_exits));
    const irqs = median(samples.map((s) => s.counters.irq_injections));
    return { value, exits, irqs };
  };
  // One column per peer that ran, QEMU last, and each kvm-ts peer's ratio to QEMU.
  const ran = PEER_NAMES.filter((name) => results.has(name));
  const ours = ran.filter((name) => name !== "qemu");
  const short = (name: string) => name === "qemu" ? "QEMU" : name.replace("kvm-ts ", "");
  console.log(
    `| benchmark | ${ran.join(" | ")} | ${ours.map((n) => `${short(n)} / QEMU`).join(" | ")} ` +
      `| exits to userspace (${ran.map(short).join(" / ")}) | interrupts injected (${
        ran.map(short).join(" / ")
      }) |`,
  );
  console.log(`|${" --- |".repeat(1 + ran.length + ours.length + 2)}`);
  for (const [key, label, unit, mib] of rows) {
    const measured = ran.map((name) => pick(name, key));
    // Per MiB moved, or per read for the random reads (the read count is IOPS × seconds).
    const per = (m: { value: number; exits: number; irqs: number }, count: "exits" | "irqs") =>
      mib > 0 ? `${(m[count] / mib).toFixed(1)}/MiB` : `${(m[count] / (m.value * SECONDS)).toFixed(2)}/read`;
    const cell = (m?: { value: number }) => (m ? `${m.value.toFixed(unit === "IOPS" ? 0 : 1)} ${unit}` : "–");
    // The ratio of each round's pair (the rounds alternate, and the nested VM's speed drifts between
    // them): its median and range, and in how many rounds the peer was at least QEMU's speed.
    const ratio = (name: string) => {
      const mine = results.get(name)?.map((r) => r[key].value) ?? [];
      const qemu = results.get("qemu")?.map((r) => r[key].value) ?? [];
      const pairs = mine.slice(0, qemu.length).map((v, i) => v / qemu[i]);
      if (pairs.length === 0) return "–";
      const text = `×${median(pairs).toFixed(2)}`;
      if (pairs.length === 1) return text;
      const ahead = pairs.filter((r) => r >= 1).length;
      return `${text} (${Math.min(...pairs).toFixed(2)}–${
        Math.max(...pairs).toFixed(2)
      }; ≥ 1 in ${ahead}/${pairs.length})`;
    };
    const all = (count: "exits" | "irqs") => measured.map((m) => (m ? per(m, count) : "–")).join(" / ");
    console.log(
      `| ${label} | ${measured.map(cell).join(" | ")} | ${ours.map(ratio).join(" | ")} | ` +
        `${all("exits")} | ${all("irqs")} |`,
    );
  }
}
