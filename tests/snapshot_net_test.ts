/**
 * Linux with a virtio-net card on a tap, snapshotted at its shell and restored in a new process on
 * the same tap (issues 9 and 11): the restored guest's network works on (it pings the host), and the
 * restore asks its driver to announce the card (GUEST_ANNOUNCE, as QEMU after a migration), so the
 * guest sends a gratuitous ARP that the host — which forgot the guest before the snapshot, and
 * learns addresses from such ARPs (`arp_accept`) — uses to learn the guest's MAC again unasked.
 * As QEMU after an incoming migration, the announcement comes in five rounds, each both a RARP frame
 * the VMM sends from the card's address and a gratuitous ARP of the guest's driver: a raw socket on
 * the tap counts five of each.
 *
 * Needs root, /dev/net/tun, iproute2, python3 (the raw socket) and a hardware-style KVM (the nested
 * VM where there is none).
 *
 * @module
 */

import assert from "node:assert/strict";
import { hostKvm } from "../kvm/mod.ts";
import { ip, tapInNamespace, tapSkipReason } from "../kvm/_testing.ts";
import { FrameCapture, python3Missing } from "./_frame_capture.ts";
import { SHELL_PROMPT } from "../examples/build_initramfs.ts";
import { escape, GuestConsole, retryNestedStalls, tag, tagged } from "./_guest_console.ts";
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
const WANTED = ["virtio_pci", "virtio_net"];
const TAP = "kvmts-tap0";
const MAC = "52:54:00:12:34:56";
const HOST = "10.0.2.2";
const GUEST = "10.0.2.15";
/** How long the host may take to hear the restored guest's announcement. */
const ANNOUNCE_DEADLINE_MS = 60_000;

const skip = missingLinuxGuest(KERNEL, busybox) ?? tapSkipReason() ?? python3Missing() ??
  linuxKvmSkip(hostKvm());
if (skip) console.log(`tests/snapshot_net_test.ts: skipped: ${skip}`);

/** The host's neighbour entry for the guest, as `ip neigh` prints it, or "" when there is none. */
function hostNeighbour(namespace: string): string {
  return ip("-n", namespace, "neigh", "show", GUEST, "dev", TAP).trim();
}

Deno.test({
  name:
    "Linux with a virtio-net card, snapshotted and restored on the same tap, pings on and announces itself",
  ignore: skip !== undefined,
  sanitizeResources: false,
  fn: retryNestedStalls(async () => {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-snap-net-" });
    try {
      using ns = tapInNamespace("kvmts-snapnet", TAP, `${HOST}/24`);
      const namespace = ns.namespace;
      // The host learns a neighbour from a gratuitous ARP only with arp_accept (Linux's default: 0).
      const sysctl = await new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          namespace,
          "busybox",
          "sh",
          "-c",
          `echo 1 > /proc/sys/net/ipv4/conf/${TAP}/arp_accept`,
        ],
      }).output();
      assert.ok(sysctl.success, new TextDecoder().decode(sysctl.stderr));
      const initrd = `${dir}/initramfs.cpio`;
      await writeInitramfs(initrd, busybox!, KERNEL!, WANTED);
      const card = [
        ...["-netdev", `tap,id=n0,ifname=${TAP},script=no,downscript=no`],
        ...["-device", `virtio-net-pci,netdev=n0,mac=${MAC}`],
      ];
      const prefix = ["ip", "netns", "exec", namespace];
      const snap = `${dir}/snap`;
      {
        await using guest = new GuestConsole(
          linuxArgs(KERNEL!, initrd, "console=ttyS0 quiet panic=-1", card),
          {
            prefix,
          },
        );
        let at = await reachShell(guest);
        const up = await guest.command(
          [
            "ip link set eth0 up",
            `ip addr add ${GUEST}/24 dev eth0`,
            tagged("ping", `$(ping -c 2 ${HOST} 2>&1 | grep 'packets transmitted')`),
          ].join("; "),
          at,
        );
        at = up.end;
        assert.match(tag(up.output, "ping"), /2 packets transmitted, 2 packets received/, up.output);
        // The host forgets the guest; nothing the guest does at its prompt tells it again.
        ip("-n", namespace, "neigh", "flush", "dev", TAP);
        assert.doesNotMatch(hostNeighbour(namespace), /lladdr/, "flushed");
        await guest.type("\x01c");
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await guest.type(`snapshot save ${snap}\r`);
        await guest.waitFor(/snapshot: full snapshot in /, at, "the snapshot");
        await guest.type("\x01x");
        assert.equal(await guest.status(), 0);
      }
      assert.doesNotMatch(hostNeighbour(namespace), /lladdr/, "still forgotten after the first run");
      await using capture = new FrameCapture(namespace, TAP);
      await capture.ready;
      await using restored = new GuestConsole(["--restore", snap, ...card], { prefix });
      // The announcement: the host learns the guest's MAC with nothing asked of the guest.
      const deadline = Date.now() + ANNOUNCE_DEADLINE_MS;
      let neighbour = hostNeighbour(namespace);
      while (!neighbour.includes(`lladdr ${MAC}`) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        neighbour = hostNeighbour(namespace);
      }
      assert.match(neighbour, new RegExp(`lladdr ${MAC}`), `the host never heard the guest announce itself`);
      // Five rounds (QEMU's announce-rounds), 50 to 350 ms apart: a RARP from the VMM and a
      // gratuitous ARP from the driver in each, and no more once they are over.
      const announcements = () => countAnnouncements(capture.frames);
      while (
        (announcements().rarp < 5 || announcements().garp < 5) && Date.now() < deadline
      ) await new Promise((resolve) => setTimeout(resolve, 250));
      await new Promise((resolve) => setTimeout(resolve, 3000));
      assert.deepEqual(announcements(), { rarp: 5, garp: 5 }, capture.frames.join("\n"));
      await restored.type("\r");
      let at =
        (await restored.waitFor(new RegExp(escape(SHELL_PROMPT)), 0, "the shell prompt after the restore"))
          .end;
      const after = await restored.command(
        tagged("ping", `$(ping -c 3 ${HOST} 2>&1 | grep 'packets transmitted')`),
        at,
      );
      at = after.end;
      assert.match(tag(after.output, "ping"), /3 packets transmitted, 3 packets received/, after.output);
      assert.doesNotMatch(restored.text, /needs a reset/, "the card logged a protocol error");
      await powerOff(restored, at);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
});

/**
 * The RARP frames from the card's address (the VMM's announcements) and the gratuitous ARPs from
 * the guest (sender and target address the guest's: its driver's) among `frames` (hex).
 */
function countAnnouncements(frames: readonly string[]): { rarp: number; garp: number } {
  const mac = MAC.replaceAll(":", "");
  const guestIp = GUEST.split(".").map((n) => Number(n).toString(16).padStart(2, "0")).join("");
  let rarp = 0;
  let garp = 0;
  for (const f of frames) {
    if (f.slice(12, 24) !== mac) continue;
    const type = f.slice(24, 28);
    if (type === "8035") rarp++;
    // ARP: sender protocol address at byte 28, target protocol address at byte 38.
    else if (type === "0806" && f.slice(56, 64) === guestIp && f.slice(76, 84) === guestIp) garp++;
  }
  return { rarp, garp };
}
