/**
 * QMP's `announce-self` against QEMU 7.2: the built-in echo guest with a virtio-net card on a tap
 * in a network namespace of its own, under this product and under QEMU, each sent the same
 * `announce-self` commands while a raw socket on the tap's host side records every RARP frame
 * that arrives. Both must send the same frames, byte for byte, the same number of them for each
 * command: rounds, a named announcement replaced by a second with its id, names that match no card,
 * and two ids at once. The driver-side half (GUEST_ANNOUNCE) is in tests/snapshot_net_test.ts and
 * devices/virtio/virtio_net_test.ts; no driver runs here.
 *
 * Needs root, /dev/net/tun, iproute2, python3 (the raw socket), QEMU, and KVM for our side (the
 * runner takes it into the nested VM where the host has none); QEMU runs on TCG.
 *
 * @module
 */

import assert from "node:assert/strict";
import { ECHO, kvmAvailability } from "../mod.ts";
import { QmpClient } from "../examples/qmp_client.ts";
import { tapInNamespace, tapSkipReason } from "../kvm/_testing.ts";
import { probeQemu, QEMU } from "./_qemu.ts";
import { ETH_P_RARP, FrameCapture, python3Missing } from "./_frame_capture.ts";

const KVM = kvmAvailability();
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const TAP = "kvmts-ann0";
const MAC = "52:54:00:12:34:56";

const skip = (KVM.available ? undefined : KVM.reason) ?? tapSkipReason() ?? python3Missing() ??
  probeQemu().reason;
if (skip) console.log(`tests/announce_self_test.ts: skipped: ${skip}`);

/** What each peer is sent, and how many RARP frames each command must bring (the same for both). */
const STEPS: { commands: Record<string, unknown>[]; frames: number }[] = [
  { commands: [{ initial: 50, max: 550, rounds: 3, step: 100 }], frames: 3 },
  // The second with the same id replaces the first's rounds (it sent its first round at once; its
  // second would come 1 s later, long after the replacement, and inside the settling time).
  {
    commands: [{ initial: 1000, max: 1000, rounds: 5, step: 100, id: "a" }, {
      initial: 50,
      max: 550,
      rounds: 1,
      step: 100,
      id: "a",
    }],
    frames: 2,
  },
  { commands: [{ initial: 20, max: 100, rounds: 2, step: 10, interfaces: ["nope"] }], frames: 0 },
  { commands: [{ initial: 20, max: 100, rounds: 2, step: 10, interfaces: ["nic0"] }], frames: 2 },
  {
    commands: [{ initial: 20, max: 100, rounds: 2, step: 10, id: "b" }, {
      initial: 20,
      max: 100,
      rounds: 2,
      step: 10,
      id: "c",
    }],
    frames: 4,
  },
];

/** Waits until `capture` holds `count` frames (10 s at most), then 1.5 s more for any extra one. */
async function settle(capture: FrameCapture, count: number): Promise<void> {
  for (let waited = 0; capture.frames.length < count && waited < 10_000; waited += 50) {
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 1500));
}

/** Kills `child` unless it has exited (after `quit`, it may have), and waits for it. */
async function ended(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill();
  } catch {
    // it had exited already
  }
  await child.status;
}

/** Connects to the QMP socket `path` once the peer has made it (60 s at most). */
async function connectWhenUp(path: string): Promise<QmpClient> {
  for (let i = 0;; i++) {
    try {
      return await QmpClient.connect({ path });
    } catch (error) {
      if (i > 600) throw new Error(`no QMP socket at ${path}: ${error}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Runs the steps against one peer; the frames each step brought. */
async function framesOf(dir: string, program: "ours" | "qemu"): Promise<string[][]> {
  using ns = tapInNamespace("kvmts-ann", TAP, "10.0.2.2/24");
  await using capture = new FrameCapture(ns.namespace, TAP, ETH_P_RARP);
  await capture.ready;
  const socket = `${dir}/${program}.sock`;
  const card = [
    ...[
      "-netdev",
      `tap,id=n0,ifname=${TAP},script=no,downscript=no${program === "qemu" ? ",vhost=off" : ""}`,
    ],
    ...["-device", `virtio-net-pci,netdev=n0,id=nic0,mac=${MAC}`],
    ...["-qmp", `unix:${socket},server=on,wait=off`],
  ];
  const guest = ["-m", "32M", "-kernel", `${dir}/echo.elf`, "-serial", "null"];
  const args = program === "ours"
    ? [Deno.execPath(), "run", "--allow-all", MAIN, ...guest, ...card]
    : [QEMU, "-accel", "tcg", "-machine", "pc", "-nodefaults", "-display", "none", ...guest, ...card];
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns.namespace, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    using qmp = await connectWhenUp(socket);
    const out: string[][] = [];
    for (const step of STEPS) {
      const before = capture.frames.length;
      for (const command of step.commands) assert.deepEqual(await qmp.execute("announce-self", command), {});
      await settle(capture, before + step.frames);
      out.push(capture.frames.slice(before));
    }
    await qmp.execute("quit");
    return out;
  } finally {
    await ended(child);
  }
}

Deno.test({
  name: "announce-self sends QEMU's RARP frames, as many as QEMU for each command (rounds, ids, interfaces)",
  ignore: skip !== undefined,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-announce-" });
    try {
      await Deno.writeFile(`${dir}/echo.elf`, ECHO);
      const ours = await framesOf(dir, "ours");
      const theirs = await framesOf(dir, "qemu");
      assert.deepEqual(theirs.map((f) => f.length), STEPS.map((s) => s.frames), "QEMU's own counts");
      assert.deepEqual(ours, theirs);
      console.log(`  a frame: ${ours[0][0]}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "announce-self refuses parameters outside QEMU's migration bounds, naming the member",
  ignore: !KVM.available,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-announce-" });
    try {
      await Deno.writeFile(`${dir}/echo.elf`, ECHO);
      const socket = `${dir}/q.sock`;
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          ...["run", "--allow-all", MAIN, "-m", "32M", "-kernel", `${dir}/echo.elf`, "-serial", "null"],
          ...["-qmp", `unix:${socket},server=on,wait=off`],
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        using qmp = await connectWhenUp(socket);
        const refused = async (args: Record<string, unknown>, message: RegExp) =>
          await assert.rejects(qmp.execute("announce-self", args), message);
        await refused(
          { initial: 50, max: 550, rounds: -1, step: 100 },
          /: Parameter 'rounds' must be from 0 to 1000$/,
        );
        await refused({ initial: 50, max: 550, rounds: 5, step: 0 }, /'step' must be from 1 to 10000/);
        await refused({ initial: 50, max: 550, rounds: 5 }, /: Parameter 'step' is missing$/);
        await refused(
          { initial: 50, max: 550, rounds: 5, step: 100, interfaces: "nic0" },
          /: Invalid parameter type for 'interfaces', expected: array$/,
        );
        // No card at all: nothing to announce, as QEMU.
        assert.deepEqual(
          await qmp.execute("announce-self", { initial: 50, max: 550, rounds: 2, step: 100 }),
          {},
        );
        await qmp.execute("quit");
      } finally {
        await ended(child);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
