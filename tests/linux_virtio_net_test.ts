/**
 * virtio-net under a real Linux, end to end, through the front-end as a user runs it, on a tap in
 * a network namespace of the test's own (nothing of the host's networking is touched):
 *
 * ```
 * ip netns add NS
 * ip -n NS tuntap add dev kvmts-tap0 mode tap vnet_hdr
 * ip -n NS addr add 10.0.2.2/24 dev kvmts-tap0 && ip -n NS link set kvmts-tap0 up
 * ip netns exec NS busybox httpd -f -p 10.0.2.2:8080 -h DIR      # serves a 1 MiB random file
 * ip netns exec NS busybox nc -l -p 8081                          # takes what the guest sends
 * ip netns exec NS deno run … main.ts -m 256M -kernel … -initrd … -append "console=ttyS0 quiet panic=-1" \
 *   -netdev tap,id=n0,ifname=kvmts-tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=…
 * ```
 *
 * Debian's kernel with a busybox initramfs that loads virtio_pci and virtio_net; on its shell the
 * guest brings `eth0` up at 10.0.2.15/24 with busybox `ip`, pings the host side, fetches the file
 * with `wget` (its sha256 must be the host's), and sends 1 MiB of its own random bytes to the
 * listener with `nc` (the bytes the host received must have the sha256 the guest printed); then
 * the driver is removed and loaded again (a device reset and a new negotiation) and the link works
 * again. Once with MSI-X, once over INTx (`pci=nomsi`). The namespace (with the tap), the servers
 * and the VM go on every path, failed or not.
 *
 * Needs root, /dev/net/tun, iproute2 and a hardware-style KVM (vmx or svm): elsewhere it skips,
 * saying why, and `deno task test` runs it inside the nested KVM VM.
 *
 * @module
 */

import assert from "node:assert/strict";
import { VIRTIO_NET_FEATURE_PROPERTIES } from "../devices/virtio/mod.ts";
import { hostKvm } from "../kvm/mod.ts";
import { ip, tapInNamespace, tapSkipReason } from "../kvm/_testing.ts";
import { GuestConsole, retryNestedStalls, tag, tagged } from "./_guest_console.ts";
import {
  linuxArgs,
  linuxKvmSkip,
  missingLinuxGuest,
  newestKernel,
  powerOff,
  randomBytes,
  reachShell,
  readBusybox,
  sha256,
  writeInitramfs,
} from "./_linux_guest.ts";

const KERNEL = newestKernel();
const busybox = readBusybox();
/** The modules the guest loads (dependencies resolved from the kernel's modules.dep). */
const WANTED = ["virtio_pci", "virtio_net"];
/** The host side of the link, in the namespace (QEMU's user-mode network uses the same numbers). */
const HOST_ADDRESS = "10.0.2.2";
const GUEST_ADDRESS = "10.0.2.15";
const HTTP_PORT = 8080;
const SINK_PORT = 8081;
/** Bytes each way. */
const TRANSFER_SIZE = 1 << 20;
/** The tap's name inside the namespace (the namespace is the test's own, so the name is free). */
const TAP = "kvmts-tap0";
const MAC = "52:54:00:12:34:56";
/** How long the host's listener may take to finish after the guest's `nc` returned. */
const SINK_DEADLINE_MS = 30_000;

const skip = missingLinuxGuest(KERNEL, busybox) ?? tapSkipReason() ?? linuxKvmSkip(hostKvm());
if (skip) console.log(`tests/linux_virtio_net_test.ts: virtio-net Linux boot skipped: ${skip}`);

/** `args` started inside the network namespace `namespace`: busybox's applets, or Deno. */
function spawnIn(namespace: string, args: string[], stdout: "null" | "piped" = "null"): Deno.ChildProcess {
  return new Deno.Command("ip", {
    args: ["netns", "exec", namespace, ...args],
    // The listener's stdin stays open: busybox nc ends at EOF on either side.
    stdin: "piped",
    stdout,
    stderr: "null",
  }).spawn();
}

/** `promise`, or a failure naming `what` after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms / 1000} s`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Brings eth0 up at {@link GUEST_ADDRESS} with busybox `ip` and pings the host side three times;
 * checks the MAC, the carrier (the card's STATUS) and the replies. Where the answer ends.
 */
async function bringUpAndPing(guest: GuestConsole, at: number): Promise<number> {
  const link = await guest.command(
    [
      "ip link set eth0 up",
      `ip addr add ${GUEST_ADDRESS}/24 dev eth0`,
      tagged("mac", "$(cat /sys/class/net/eth0/address)"),
      tagged("carrier", "$(cat /sys/class/net/eth0/carrier)"),
      tagged("ping", `$(ping -c 3 ${HOST_ADDRESS} 2>&1 | grep 'packets transmitted')`),
    ].join("; "),
    at,
  );
  assert.equal(tag(link.output, "mac"), MAC, link.output);
  assert.equal(tag(link.output, "carrier"), "1", link.output);
  assert.match(tag(link.output, "ping"), /3 packets transmitted, 3 packets received/, link.output);
  return link.end;
}

/** Has the guest fetch the served file with wget and checks its sha256; where the answer ends. */
async function download(guest: GuestConsole, at: number, expected: string): Promise<number> {
  const get = await guest.command(
    tagged("get", `$(wget -q -O - http://${HOST_ADDRESS}:${HTTP_PORT}/f | sha256sum)`),
    at,
  );
  assert.equal(tag(get.output, "get").split(/\s+/)[0], expected, get.output);
  return get.end;
}

/** The guest's shell words for eth0's bytes and packets sent. */
const TX_COUNTERS =
  "$(cat /sys/class/net/eth0/statistics/tx_bytes) $(cat /sys/class/net/eth0/statistics/tx_packets)";
/** The guest's shell words for eth0's packets received. */
const RX_PACKETS = "$(cat /sys/class/net/eth0/statistics/rx_packets)";
/** An address on the link that no one has, and a MAC no card has, for frames the guest must not see. */
const STRANGER = { address: "10.0.2.99", mac: "02:00:00:00:00:99" };
/** Frames the host sends to {@link STRANGER} in each round. */
const STRANGER_FRAMES = 20;
const NEW_MAC = "52:54:00:12:34:99";

/**
 * The control queue under Linux: with the driver's default RX mode (not promiscuous) frames for
 * another MAC do not reach eth0 (its rx_packets barely move: the host's own IPv6 chatter may add a
 * few), `ip link set eth0 promisc on` lets all of them through, and `ip link set eth0 address`
 * (CTRL_MAC_ADDR) moves the card: the host, told by the guest's gratuitous ARP, answers pings at
 * the new address. The driver reload after this checks that a reset puts the configured MAC back.
 */
async function receiveFilter(guest: GuestConsole, at: number, namespace: string): Promise<number> {
  ip(
    "-n",
    namespace,
    "neigh",
    "add",
    STRANGER.address,
    "lladdr",
    STRANGER.mac,
    "dev",
    TAP,
    "nud",
    "permanent",
  );
  const strangerRound = async () => {
    const child = spawnIn(namespace, [
      "busybox",
      "ping",
      "-c",
      `${STRANGER_FRAMES}`,
      "-i",
      "0.05",
      "-w",
      "5",
      STRANGER.address,
    ]);
    await child.stdin.close();
    const ping = await child.status;
    assert.equal(ping.code, 1, "no one answers the stranger's address"); // busybox: 1 = no reply
  };
  const before = await guest.command(tagged("rx", RX_PACKETS), at);
  await strangerRound();
  const promisc = await guest.command(
    `${tagged("rx", RX_PACKETS)}; ip link set eth0 promisc on; ${tagged("rx2", RX_PACKETS)}`,
    before.end,
  );
  await strangerRound();
  const after = await guest.command(`${tagged("rx", RX_PACKETS)}; ip link set eth0 promisc off`, promisc.end);
  const count = (out: string, name = "rx") => Number(tag(out, name));
  const filtered = count(promisc.output) - count(before.output);
  const passed = count(after.output) - count(promisc.output, "rx2");
  assert.ok(filtered < STRANGER_FRAMES / 2, `not promiscuous: ${filtered} packets came in`);
  assert.ok(passed >= STRANGER_FRAMES, `promiscuous: ${passed} packets came in`);
  console.log(`  ${STRANGER_FRAMES} frames for another MAC: ${filtered} came in, ${passed} with promisc on`);
  const moved = await guest.command(
    [
      `ip link set eth0 address ${NEW_MAC}`,
      tagged("set", "$?"),
      tagged("mac", "$(cat /sys/class/net/eth0/address)"),
      tagged("ping", `$(ping -c 3 ${HOST_ADDRESS} 2>&1 | grep 'packets transmitted')`),
    ].join("; "),
    after.end,
  );
  assert.equal(tag(moved.output, "set"), "0", moved.output);
  assert.equal(tag(moved.output, "mac"), NEW_MAC, moved.output);
  assert.match(tag(moved.output, "ping"), /3 packets transmitted, 3 packets received/, moved.output);
  return moved.end;
}

/** QEMU's properties that turn every offload, the mergeable receive buffers and the control queue off. */
const NO_OFFLOADS = Object.keys(VIRTIO_NET_FEATURE_PROPERTIES).map((name) => `${name}=off`).join(",");

/**
 * With MSI-X (each queue its vector, Linux's default) and QEMU's default offloads (checksums and
 * TSO both ways, mergeable receive buffers: large segments cross the tap whole), and over INTx
 * (`pci=nomsi`: the card's INTA# on the board's shared level line, its ISR read to lower it, where
 * the receive interrupt raised by frames from the tap, outside any notify, must reach the guest
 * too) with every offload off (each frame one MTU, checksums by the guest).
 */
for (const msi of [true, false]) {
  Deno.test({
    name: `Linux: virtio-net over a tap in a namespace${
      msi ? " with QEMU's offloads" : " over INTx (pci=nomsi), offloads off"
    } — eth0 by busybox ip, ping, 1 MiB each way by wget and nc (sha256 both ways), the driver reloaded`,
    ignore: skip !== undefined,
    sanitizeResources: false,
    fn: retryNestedStalls(async () => {
      const dir = await Deno.makeTempDir({ prefix: "kvm-ts-net-" });
      try {
        // The host side, as the README tells a user: a tap with an address, up before the VM starts.
        using ns = tapInNamespace("kvmts-test", TAP, `${HOST_ADDRESS}/24`);
        const namespace = ns.namespace;

        const served = randomBytes(TRANSFER_SIZE);
        const servedSum = await sha256(served);
        await Deno.mkdir(`${dir}/www`);
        await Deno.writeFile(`${dir}/www/f`, served);
        await using _httpd = spawnIn(namespace, [
          "busybox",
          "httpd",
          "-f",
          "-p",
          `${HOST_ADDRESS}:${HTTP_PORT}`,
          "-h",
          `${dir}/www`,
        ]);
        await using sink = spawnIn(namespace, ["busybox", "nc", "-l", "-p", `${SINK_PORT}`], "piped");
        const received = sink.output();
        received.catch(() => {}); // read below, or abandoned when the test fails first

        const initrd = `${dir}/initramfs.cpio`;
        await writeInitramfs(initrd, busybox!, KERNEL!, WANTED);
        const started = performance.now();
        await using guest = new GuestConsole(
          linuxArgs(KERNEL!, initrd, `console=ttyS0 quiet panic=-1${msi ? "" : " pci=nomsi"}`, [
            "-netdev",
            `tap,id=n0,ifname=${TAP},script=no,downscript=no`,
            "-device",
            // MSI-X with the notify eventfd (ioeventfd=on), INTx with every notify an MMIO exit.
            `virtio-net-pci,netdev=n0,mac=${MAC},ioeventfd=${msi ? "on" : `off,${NO_OFFLOADS}`}`,
          ]),
          { prefix: ["ip", "netns", "exec", namespace] },
        );
        let at = await reachShell(guest);
        const booted = performance.now();
        at = await bringUpAndPing(guest, at);

        // Host → guest: the guest's sha256 of what it fetched.
        const down0 = performance.now();
        at = await download(guest, at, servedSum);
        const down1 = performance.now();

        // Guest → host: the listener's bytes against the guest's sha256 of what it sent.
        const made = await guest.command(
          [
            `head -c ${TRANSFER_SIZE} /dev/urandom > /tmp/up`,
            tagged("sent", "$(sha256sum < /tmp/up)"),
            tagged("tx", TX_COUNTERS),
          ].join("; "),
          at,
        );
        const up0 = performance.now();
        const up = await guest.command(
          `nc ${HOST_ADDRESS} ${SINK_PORT} < /tmp/up; ${tagged("nc", "$?")}; ${tagged("tx", TX_COUNTERS)}`,
          made.end,
        );
        const up1 = performance.now();
        at = up.end;
        assert.equal(tag(up.output, "nc"), "0", up.output);
        const { stdout: got } = await within(received, SINK_DEADLINE_MS, "the host's listener");
        assert.equal(got.length, TRANSFER_SIZE, `the host received ${got.length} bytes`);
        assert.equal(await sha256(got), tag(made.output, "sent").split(/\s+/)[0], made.output);
        // The driver counts a segment the card cuts no further as one packet: with TSO in force a
        // transfer's packets average more than one frame, without it at most one (1514 bytes).
        const [bytes0, packets0] = tag(made.output, "tx").split(" ").map(Number);
        const [bytes1, packets1] = tag(up.output, "tx").split(" ").map(Number);
        const average = (bytes1 - bytes0) / (packets1 - packets0);
        if (msi) assert.ok(average > 1514, `TSO: ${average.toFixed(0)} bytes per packet sent`);
        else assert.ok(average <= 1514, `no TSO: ${average.toFixed(0)} bytes per packet sent`);

        const facts = await guest.command(
          [
            tagged("irqs", "$(grep virtio /proc/interrupts)"),
            tagged("features", "$(cat /sys/bus/virtio/devices/virtio0/features)"),
            tagged(
              "complaints",
              "$(dmesg | grep -i -e 'virtio.*error' -e 'NETDEV WATCHDOG' -e 'eth0.*timed out')",
            ),
          ].join("; "),
          at,
        );
        at = facts.end;
        const irqs = tag(facts.output, "irqs");
        if (msi) assert.match(irqs, /PCI-MSI.*virtio0-input\.0/, facts.output);
        else assert.match(irqs, /^\s*10:.*IO-APIC\s+10-fasteoi\s+virtio0/m, facts.output);
        assert.equal(tag(facts.output, "complaints"), "", `dmesg complains:\n${guest.text}`);
        // What the driver accepted, bit 0 first: CSUM, GUEST_CSUM, HOST_TSO4 (11), MRG_RXBUF (15);
        // CTRL_GUEST_OFFLOADS (2), CTRL_VQ, CTRL_RX, CTRL_VLAN (17–19), GUEST_ANNOUNCE (21) and
        // CTRL_MAC_ADDR (23); Linux's driver does not know CTRL_RX_EXTRA (20), which is offered.
        const accepted = tag(facts.output, "features");
        assert.match(accepted, /^[01]{64}$/, facts.output);
        const offloads = [0, 1, 7, 11, 15].map((bit) => accepted[bit]).join("");
        assert.equal(offloads, msi ? "11111" : "00000", `features ${accepted}`);
        const control = [2, 17, 18, 19, 20, 21, 23].map((bit) => accepted[bit]).join("");
        assert.equal(control, msi ? "1111011" : "0000000", `features ${accepted}`);
        if (msi) at = await receiveFilter(guest, at, namespace);

        // The driver again: removing it resets the device, loading it negotiates anew.
        at = (await guest.command("rmmod virtio_net && insmod /lib/modules/virtio_net.ko", at)).end;
        at = await bringUpAndPing(guest, at);
        at = await download(guest, at, servedSum);

        assert.doesNotMatch(guest.text, /needs a reset/, "the device logged a protocol error");
        const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
        console.log(
          `  boot to shell ${seconds(booted - started)}; ${TRANSFER_SIZE >> 20} MiB by wget ${
            seconds(down1 - down0)
          }, by nc ${seconds(up1 - up0)} (each with the shell's round trip)`,
        );
        await powerOff(guest, at);
      } finally {
        // The VM and the servers went with their `await using`; the namespace took the tap along.
        await Deno.remove(dir, { recursive: true });
      }
    }),
  });
}
