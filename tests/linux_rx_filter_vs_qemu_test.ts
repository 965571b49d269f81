/**
 * virtio-net's control queue against QEMU 7.2, through QMP's `query-rx-filter`: Debian's kernel
 * brings the same card up under kvm-ts and under QEMU (`-accel kvm`, vhost off), each on a tap in a
 * network namespace of its own, runs the same steps on its shell, and after each step both peers'
 * `query-rx-filter` answers must be the same JSON: the filter Linux's driver set through the control
 * queue (promiscuity, the unicast and multicast lists, the VLAN table, the card's address) and the
 * way QEMU reports it.
 *
 * The steps: eth0 up with an address (Linux turns promiscuity off and sends its multicast list);
 * `promisc on`; a VLAN interface (8021q: ids 0 and 5 added); a new MAC (CTRL_MAC_ADDR); 70 IPv6
 * addresses (a multicast list longer than the table); the driver removed and loaded again (a reset).
 *
 * Needs root, /dev/net/tun, iproute2, QEMU and a hardware-style KVM; `deno task test` runs it in the
 * nested KVM VM where the host has none.
 *
 * @module
 */

import assert from "node:assert/strict";
import { QmpClient } from "../examples/qmp_client.ts";
import { hostKvm } from "../kvm/mod.ts";
import { tapInNamespace, tapSkipReason } from "../kvm/_testing.ts";
import { GuestConsole, retryNestedStalls } from "./_guest_console.ts";
import { probeQemu, QEMU, QEMU_LINUX_CONSOLE } from "./_qemu.ts";
import {
  linuxArgs,
  linuxKvmSkip,
  missingLinuxGuest,
  newestKernel,
  powerOff,
  reachShell,
  readBusybox,
  writeInitramfs,
} from "./_linux_guest.ts";

const KERNEL = newestKernel();
const busybox = readBusybox();
const WANTED = ["virtio_pci", "virtio_net", "8021q"];
const TAP = "kvmts-tap0";
const MAC = "52:54:00:12:34:56";
const APPEND = "console=ttyS0 quiet panic=-1";

const skip = missingLinuxGuest(KERNEL, busybox) ?? tapSkipReason() ?? linuxKvmSkip(hostKvm()) ??
  probeQemu().reason;
if (skip) console.log(`tests/linux_rx_filter_vs_qemu_test.ts: skipped: ${skip}`);

/** The guest's shell steps, each followed by a `query-rx-filter` on both peers. */
const STEPS = [
  // The settle time lets IPv6's link-local address (and its solicited-node group) arrive.
  "ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; sleep 2",
  "ip link set eth0 promisc on",
  "ip link set eth0 promisc off; vconfig add eth0 5 >/dev/null; ip link set eth0.5 up; sleep 2",
  "ip link set eth0 address 52:54:00:12:34:99; sleep 1",
  // 70 IPv6 addresses join 70 solicited-node groups: more than the table holds (its overflow flag).
  "i=1; while [ $i -le 70 ]; do ip -6 addr add fd00::$i/64 dev eth0; i=$((i+1)); done; sleep 2",
  // The driver again: the device is reset (promiscuous, the configured MAC) and negotiates anew.
  "rmmod virtio_net && insmod /lib/modules/virtio_net.ko; sleep 1",
];

/** Waits for the QMP socket `path` (the peer creates it at start-up) and connects. */
async function connect(path: string, guest: GuestConsole): Promise<QmpClient> {
  for (let i = 0;; i++) {
    try {
      return await QmpClient.connect({ path });
    } catch (error) {
      if (i > 600) throw new Error(`no QMP socket at ${path}: ${error}\n${guest.text}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Boots `args` (QEMU's when `program` is given) in a namespace with a tap; each step's answer. */
async function answers(dir: string, initrd: string, program?: string): Promise<unknown[]> {
  using ns = tapInNamespace("kvmts-rx", TAP, "10.0.2.2/24");
  const namespace = ns.namespace;
  {
    const socket = `${dir}/qmp-${program ? "qemu" : "ours"}.sock`;
    const card = [
      ...["-netdev", `tap,id=n0,ifname=${TAP},script=no,downscript=no${program ? ",vhost=off" : ""}`],
      ...["-device", `virtio-net-pci,netdev=n0,id=nic0,mac=${MAC}${program ? ",disable-legacy=on" : ""}`],
      ...["-qmp", `unix:${socket},server=on,wait=off`],
    ];
    const args = linuxArgs(KERNEL!, initrd, APPEND, card);
    await using guest = new GuestConsole(program ? [...QEMU_LINUX_CONSOLE, ...args] : args, {
      prefix: ["ip", "netns", "exec", namespace],
      program,
    });
    using client = await connect(socket, guest);
    let at = await reachShell(guest);
    const out: unknown[] = [];
    for (const step of STEPS) {
      at = (await guest.command(step, at)).end;
      out.push(await client.execute("query-rx-filter"));
    }
    await powerOff(guest, at);
    return out;
  }
}

Deno.test({
  name: "Linux drives virtio-net's control queue: query-rx-filter answers as QEMU's after each step (up, " +
    "promisc, a VLAN, a new MAC, a multicast overflow, a driver reload)",
  ignore: skip !== undefined,
  sanitizeResources: false,
  fn: retryNestedStalls(async () => {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-rx-" });
    try {
      const initrd = `${dir}/initramfs.cpio`;
      await writeInitramfs(initrd, busybox!, KERNEL!, WANTED);
      const ours = await answers(dir, initrd);
      const theirs = await answers(dir, initrd, QEMU);
      for (const [i, step] of STEPS.entries()) {
        assert.deepEqual(ours[i], theirs[i], `after "${step}"`);
      }
      console.log(`  after "${STEPS[2]}": ${JSON.stringify(ours[2])}`);
      // The steps did what they say (so that the comparison is not of two empty filters).
      const [up, promisc, vlan, moved, many, reloaded] = ours as { [key: string]: unknown }[][];
      assert.equal(up[0].promiscuous, false);
      assert.equal(promisc[0].promiscuous, true);
      assert.deepEqual(vlan[0]["vlan-table"], [5, 0]);
      assert.equal(moved[0]["main-mac"], "52:54:00:12:34:99");
      assert.equal(many[0]["multicast-overflow"], true);
      assert.deepEqual([reloaded[0].promiscuous, reloaded[0]["main-mac"]], [true, MAC]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
});
