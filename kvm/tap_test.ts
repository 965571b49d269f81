/**
 * Tap against the host kernel: needs root, /dev/net/tun and iproute2's `ip`, and skips (saying
 * why) without them. The tap is moved into a private network namespace so the test touches no
 * interface or route of the host.
 */
import assert from "node:assert/strict";
import { KvmError } from "./kvm_error.ts";
import { Tap, VIRTIO_NET_HDR_SIZE } from "./tap.ts";
import { ip, tapSkipReason } from "./_testing.ts";

const SKIP = tapSkipReason();
if (SKIP) console.log(`kvm/tap_test.ts: tap tests skipped: ${SKIP}`);
const ifTap = { ignore: SKIP !== undefined };

/** A name unlikely to clash with another run's. */
function uniqueName(prefix: string): string {
  return `${prefix}${Deno.pid % 100_000}${Math.floor(Math.random() * 100)}`;
}

const OUR_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const HOST_IP = [10, 77, 0, 1];
const GUEST_IP = [10, 77, 0, 2];
const ETHERTYPE_ARP = 0x0806;
const ARP_REQUEST = 1;
const ARP_REPLY = 2;

/** A virtio-net header (all zero: no checksum offload, no GSO) and an ARP "who has HOST_IP?". */
function arpRequest(): Uint8Array {
  const frame = new Uint8Array(VIRTIO_NET_HDR_SIZE + 42);
  const view = new DataView(frame.buffer);
  let at = VIRTIO_NET_HDR_SIZE;
  frame.fill(0xff, at, at + 6); // broadcast
  frame.set(OUR_MAC, at + 6);
  view.setUint16(at + 12, ETHERTYPE_ARP);
  at += 14;
  view.setUint16(at, 1); // Ethernet
  view.setUint16(at + 2, 0x0800); // IPv4
  frame[at + 4] = 6;
  frame[at + 5] = 4;
  view.setUint16(at + 6, ARP_REQUEST);
  frame.set(OUR_MAC, at + 8);
  frame.set(GUEST_IP, at + 14);
  frame.set(HOST_IP, at + 24); // target hardware address stays zero
  return frame;
}

Deno.test({
  name: "Tap: an ARP request written from our side is answered by the host kernel in a network namespace",
  ...ifTap,
  async fn() {
    const namespace = uniqueName("kvmts-ns");
    const name = uniqueName("kvmts");
    ip("netns", "add", namespace);
    try {
      using tap = Tap.open({ name });
      assert.equal(tap.name, name);
      assert.equal(tap.vnetHeaderSize, 12);
      const buffer = new Uint8Array(VIRTIO_NET_HDR_SIZE + 65_550);
      assert.equal(tap.read(buffer), null, "nothing queued: non-blocking read");
      // The fd keeps working after the interface moves to another namespace.
      ip("link", "set", "dev", name, "netns", namespace);
      ip("-n", namespace, "addr", "add", "10.77.0.1/24", "dev", name);
      ip("-n", namespace, "link", "set", "dev", name, "up");

      const request = arpRequest();
      assert.equal(tap.write(request), request.length);

      // Wait for the reply (the namespace's IPv6 may send its own frames first: skip those).
      const deadline = Date.now() + 5000;
      let reply: Uint8Array | undefined;
      while (reply === undefined) {
        assert.ok(Date.now() < deadline, "no ARP reply within 5 s");
        buffer.fill(0xab, 0, VIRTIO_NET_HDR_SIZE);
        const length = tap.read(buffer);
        if (length === null) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        const frame = buffer.subarray(VIRTIO_NET_HDR_SIZE, length);
        const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
        if (frame.length >= 42 && view.getUint16(12) === ETHERTYPE_ARP && view.getUint16(20) === ARP_REPLY) {
          reply = buffer.slice(0, length);
        }
      }
      // The header: zero with no offloads, num_buffers (bytes 10-11) included: the kernel (6.18
      // here) zero-fills what lies beyond the 10-byte legacy header; the device sets num_buffers.
      assert.deepEqual([...reply.subarray(0, VIRTIO_NET_HDR_SIZE)], new Array(VIRTIO_NET_HDR_SIZE).fill(0));
      const frame = reply.subarray(VIRTIO_NET_HDR_SIZE);
      assert.deepEqual([...frame.subarray(0, 6)], OUR_MAC, "sent to us");
      assert.deepEqual([...frame.subarray(28, 32)], HOST_IP, "sender: the namespace's address");
      assert.deepEqual([...frame.subarray(32, 38)], OUR_MAC, "target hardware address: ours");
      assert.deepEqual([...frame.subarray(38, 42)], GUEST_IP);
      const stats = ip("-n", namespace, "-s", "link", "show", "dev", name);
      assert.match(stats, /RX:[^\n]*\n\s*\d+\s+[1-9]/, `the namespace counted our frame:\n${stats}`);
    } finally {
      ip("netns", "del", namespace);
    }
  },
});

/** This process's open fds on /dev/net/tun. */
function tunFdCount(): number {
  return [...Deno.readDirSync("/proc/self/fd")].filter((entry) => {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${entry.name}`) === "/dev/net/tun";
    } catch {
      return false; // the directory's own fd, closed by now
    }
  }).length;
}

Deno.test({
  name: "Tap: one KvmError per bad input: long name, missing device, taken name, not a tap",
  ...ifTap,
  fn() {
    assert.throws(() => Tap.open({ name: "a-name-of-16-byt" }), (error: unknown) => {
      assert.ok(error instanceof KvmError);
      assert.equal(error.op, "TUNSETIFF");
      assert.equal(error.code, "EINVAL");
      assert.match(error.message, /tap "a-name-of-16-byt".*at most 15 bytes/);
      return true;
    });
    assert.throws(() => Tap.open({ devicePath: "/nonexistent/tun" }), (error: unknown) => {
      assert.ok(error instanceof KvmError);
      assert.equal(error.op, "open /nonexistent/tun");
      assert.equal(error.code, "ENOENT");
      assert.match(error.message, /modprobe tun/);
      return true;
    });
    // Only fds on /dev/net/tun: under `deno test --parallel` other modules open and close fds meanwhile.
    const before = tunFdCount();
    const name = uniqueName("kvmtb");
    {
      using first = Tap.open({ name });
      assert.throws(() => Tap.open({ name }), (error: unknown) => {
        assert.ok(error instanceof KvmError);
        assert.equal(error.op, "TUNSETIFF");
        assert.equal(error.code, "EBUSY");
        assert.match(error.message, new RegExp(`tap "${name}".*another fd is attached`));
        return true;
      });
      assert.equal(first.name, name);
    }
    assert.throws(() => Tap.open({ name: "lo" }), (error: unknown) => {
      assert.ok(error instanceof KvmError && error.op === "TUNSETIFF" && error.code === "EINVAL");
      assert.match(error.message, /not\s+a single-queue tap/);
      return true;
    });
    assert.throws(() => Tap.open({ vnetHeaderSize: 4 }), (error: unknown) => {
      assert.ok(error instanceof KvmError && error.op === "TUNSETVNETHDRSZ" && error.code === "EINVAL");
      return true;
    });
    assert.equal(tunFdCount(), before, "every failure closed its fd");
  },
});

Deno.test({
  name: "Tap: the kernel names it when no name is given; close removes it and is idempotent",
  ...ifTap,
  fn() {
    const tap = Tap.open();
    assert.match(tap.name, /^tap\d+$/);
    assert.ok(Deno.statSync(`/sys/class/net/${tap.name}`).isDirectory);
    tap.close();
    tap.close();
    assert.throws(() => Deno.statSync(`/sys/class/net/${tap.name}`), Deno.errors.NotFound);
    assert.throws(() => tap.read(new Uint8Array(100)), Deno.errors.BadResource);
  },
});
