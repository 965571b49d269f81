import assert from "node:assert/strict";
import fc from "fast-check";
import { DiskImage } from "./disk_image.ts";
import { IoRing } from "./io_ring.ts";
import { KvmError } from "./kvm_error.ts";
import { pollReadable } from "./poll.ts";
import { fdsOn } from "./_testing.ts";

/** Why io_uring cannot be used here (a seccomp filter, `kernel.io_uring_disabled`), or null. */
const unavailable = (() => {
  try {
    IoRing.open(1).close();
    return null;
  } catch (error) {
    if (error instanceof KvmError) return error.message.split("\n")[0];
    throw error;
  }
})();
if (unavailable) console.log(`io_ring_test: io_uring tests skipped: ${unavailable}`);
const ifRing = { ignore: unavailable !== null };

/** A temporary image file holding `bytes`, removed when disposed. */
function tempImage(bytes: Uint8Array): { path: string } & Disposable {
  const path = Deno.makeTempFileSync({ prefix: "kvmts-ring-", suffix: ".img" });
  Deno.writeFileSync(path, bytes);
  return { path, [Symbol.dispose]: () => Deno.removeSync(path) };
}

function spansOf(views: Uint8Array[]) {
  return {
    count: views.length,
    buffers: views.map((v) => v.buffer),
    offsets: views.map((v) => v.byteOffset),
    lengths: views.map((v) => v.length),
  };
}

for (const workers of [false, true]) {
  Deno.test(
    `IoRing${
      workers ? " with workers" : ""
    }: reads and writes spans at any offset, each byte where preadv/pwritev put it`,
    ifRing,
    () => {
      const size = 1 << 16;
      const content = new Uint8Array(size).map((_, i) => (i * 131 + 7) & 0xff);
      using file = tempImage(content);
      const path = file.path;
      const ringFds = () =>
        [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
          try {
            return Deno.readLinkSync(`/proc/self/fd/${e.name}`).includes("io_uring");
          } catch {
            return false;
          }
        }).length;
      const ringsBefore = ringFds();
      {
        using image = DiskImage.open(path);
        using ring = IoRing.open(4, { workers });
        fc.assert(
          fc.property(
            fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 8 }),
            fc.nat({ max: 1 << 15 }),
            fc.boolean(),
            (lengths, at, isWrite) => {
              const memory = new Uint8Array(lengths.reduce((a, b) => a + b, 0) + 64);
              const views: Uint8Array[] = [];
              let o = 3;
              for (const n of lengths) {
                views.push(memory.subarray(o, o + n));
                o += n + 1; // a gap the transfer must not touch
              }
              const total = lengths.reduce((a, b) => a + b, 0);
              if (isWrite) { for (const v of views) crypto.getRandomValues(v); }
              const before = memory.slice();
              const results: (KvmError | null)[] = [];
              assert.ok(
                image.startSpans(
                  ring,
                  isWrite ? "pwritev" : "preadv",
                  spansOf(views),
                  at,
                  (e) => results.push(e),
                ),
              );
              assert.equal(ring.inFlight, 1);
              ring.drain();
              assert.deepEqual(results, [null]);
              assert.equal(ring.inFlight, 0);
              const joined = new Uint8Array(total);
              let j = 0;
              for (const v of views) {
                joined.set(v, j);
                j += v.length;
              }
              if (isWrite) {
                content.set(joined, at);
                assert.deepEqual(memory, before, "a write leaves memory alone");
              } else {
                assert.deepEqual(joined, content.subarray(at, at + total));
              }
              const back = new Uint8Array(size);
              image.read(back, 0);
              assert.deepEqual(back, content);
            },
          ),
          { numRuns: 60 },
        );
      }
      assert.equal(fdsOn(path).length, 0, "the image closed");
      assert.equal(ringFds(), ringsBefore, "the ring's fd closed");
    },
  );
}

Deno.test("IoRing: the fd turns readable on completion; reap runs each callback once", ifRing, () => {
  using file = tempImage(new Uint8Array(8192).fill(9));
  const path = file.path;
  using image = DiskImage.open(path);
  using ring = IoRing.open(2);
  const page = new Uint8Array(4096);
  let calls = 0;
  assert.ok(image.startSpans(ring, "preadv", spansOf([page]), 4096, (e) => {
    assert.equal(e, null);
    calls++;
  }));
  assert.deepEqual(pollReadable([ring.fd], 5000), [ring.fd]);
  assert.equal(ring.reap(), 1);
  assert.equal(ring.reap(), 0);
  assert.equal(calls, 1);
  assert.ok(page.every((b) => b === 9));
  assert.deepEqual(pollReadable([ring.fd], 0), [], "nothing left to reap");
});

Deno.test(
  "IoRing: a busy ring refuses more (the caller moves the data itself); a closed one throws",
  ifRing,
  () => {
    using file = tempImage(new Uint8Array(8192));
    const path = file.path;
    using image = DiskImage.open(path);
    const ring = IoRing.open(1);
    const a = new Uint8Array(4096);
    const b = new Uint8Array(4096);
    const done: string[] = [];
    assert.ok(image.startSpans(ring, "preadv", spansOf([a]), 0, () => done.push("a")));
    assert.equal(image.startSpans(ring, "preadv", spansOf([b]), 0, () => done.push("b")), false);
    ring.close(); // drains: a's callback ran
    ring.close();
    assert.equal(ring.reap(), 0, "nothing to read once the rings are unmapped");
    assert.deepEqual(done, ["a"]);
    assert.throws(() => image.startSpans(ring, "preadv", spansOf([b]), 0, () => {}), TypeError);
    assert.throws(() => IoRing.open(3), RangeError);
  },
);

Deno.test(
  "IoRing: a transfer the file cannot satisfy completes with an error naming it; bad spans start nothing",
  ifRing,
  () => {
    using file = tempImage(new Uint8Array(16384).fill(5));
    const path = file.path;
    using image = DiskImage.open(path);
    using ring = IoRing.open(2);
    // The file shrinks under the open image: the read comes back short, the rest reads nothing.
    Deno.truncateSync(path, 4096 + 100);
    const memory = new Uint8Array(3 * 4096);
    const errors: (KvmError | null)[] = [];
    assert.ok(
      image.startSpans(
        ring,
        "preadv",
        spansOf([memory.subarray(0, 4096), memory.subarray(4096)]),
        0,
        (e) => errors.push(e),
      ),
    );
    ring.drain();
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof KvmError);
    assert.equal(errors[0].op, "preadv");
    assert.match(errors[0].message, /short transfer/);
    assert.ok(
      memory.subarray(0, 4196).every((b) => b === 5),
      "what the file had was read, across the spans",
    );
    // A span outside its buffer, or a range outside the image: refused before anything starts.
    assert.throws(
      () =>
        image.startSpans(
          ring,
          "preadv",
          { count: 1, buffers: [memory.buffer], offsets: [memory.length - 10], lengths: [20] },
          0,
          () => {},
        ),
      RangeError,
    );
    assert.throws(() => image.startSpans(ring, "preadv", spansOf([memory]), 16384, () => {}), RangeError);
    assert.equal(ring.inFlight, 0);
  },
);

Deno.test(
  "IoRing: fdatasync completes without the caller waiting; a file without it fails naming fdatasync",
  ifRing,
  () => {
    using file = tempImage(new Uint8Array(4096));
    const path = file.path;
    using image = DiskImage.open(path);
    using ring = IoRing.open(2, { workers: true });
    const results: (KvmError | null)[] = [];
    assert.ok(image.startFdatasync(ring, (e) => results.push(e)));
    ring.drain();
    assert.deepEqual(results, [null]);
    using nothing = DiskImage.open("/dev/null", { lock: false, readOnly: true });
    let failure: unknown = "pending";
    assert.ok(nothing.startFdatasync(ring, (e) => failure = e));
    ring.drain();
    assert.ok(failure instanceof KvmError, String(failure));
    assert.equal(failure.op, "fdatasync");
    assert.equal(failure.code, "EINVAL");
  },
);
