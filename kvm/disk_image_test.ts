import assert from "node:assert/strict";
import fc from "fast-check";
import { DiskImage, type ImageLocks, imageLocks, type QemuPermission } from "./disk_image.ts";
import { GuestMemory } from "./guest_memory.ts";
import { KvmError } from "./kvm_error.ts";
import { fdsOn } from "./_testing.ts";

const MIB = 1 << 20;

function tempImage(size: number): string {
  const path = Deno.makeTempFileSync({ prefix: "kvmts-disk-", suffix: ".img" });
  Deno.truncateSync(path, size);
  return path;
}

/** The QEMU lock bytes this process's open images hold on `path`, from /proc/locks. */
function lockedBytes(path: string): number[] {
  const inode = Deno.statSync(path).ino;
  const bytes: number[] = [];
  for (const line of Deno.readTextFileSync("/proc/locks").split("\n")) {
    const match = line.match(/OFDLCK\s+ADVISORY\s+READ\s+-?\d+\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+)/);
    if (!match || Number(match[1]) !== inode) continue;
    for (let byte = Number(match[2]); byte <= Number(match[3]); byte++) bytes.push(byte);
  }
  return bytes.sort((a, b) => a - b);
}

function lockRefusal(path: string, pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof KvmError, String(error));
    assert.equal(error.op, `lock ${path}`);
    assert.equal(error.code, "EAGAIN");
    assert.match(error.message, pattern);
    assert.ok(error.message.includes(path), "the message names the image");
    return true;
  };
}

Deno.test("DiskImage: positional reads and writes at bigint offsets, size, fdatasync, bounds", () => {
  const path = tempImage(4 * MIB);
  try {
    using disk = DiskImage.open(path);
    assert.equal(disk.size, 4n * BigInt(MIB));
    assert.equal(disk.readOnly, false);
    const data = Uint8Array.from({ length: 3000 }, (_, i) => i * 7);
    assert.equal(disk.write(data, 4n * BigInt(MIB) - 3000n), 3000);
    disk.fdatasync();
    const back = new Uint8Array(3000);
    assert.equal(disk.read(back, BigInt(4 * MIB - 3000)), 3000);
    assert.deepEqual(back, data);
    assert.equal(disk.read(new Uint8Array(0), 4n * BigInt(MIB)), 0);
    assert.throws(
      () => disk.read(new Uint8Array(2), 4n * BigInt(MIB) - 1n),
      /outside disk image .*4194304 bytes/,
    );
    assert.throws(() => disk.write(new Uint8Array(1), -1), RangeError);
    assert.throws(() => disk.read(new Uint8Array(1), 0.5), RangeError);
    assert.equal(Deno.statSync(path).size, 4 * MIB, "a raw image never grows");
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("DiskImage: reads into and writes from guest memory without a bounce buffer", () => {
  const path = tempImage(MIB);
  try {
    using ram = new GuestMemory(0x10000);
    using disk = DiskImage.open(path);
    ram.bytes.fill(0x5a, 0x2000, 0x2200);
    disk.write(ram.bytes.subarray(0x2000, 0x2200), 0x1_0000n); // a guest buffer to sector 128
    disk.read(ram.bytes.subarray(0x4000, 0x4400), 0x1_0000n - 0x100n);
    assert.deepEqual([ram.bytes[0x40ff], ram.bytes[0x4100], ram.bytes[0x42ff], ram.bytes[0x4300]], [
      0,
      0x5a,
      0x5a,
      0,
    ]);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("DiskImage: readv and writev (and readSpans, writeSpans) move each piece's own bytes, whatever buffer or offset", () => {
  // Views at odd offsets of guest RAM (an mmap), of a SharedArrayBuffer, and of small and large heap
  // arrays (V8 keeps arrays of up to 64 bytes inside its heap until their buffer is asked for), in
  // groups past IOV_MAX (1024): the host address of each must be its own, though addresses are
  // looked up once per buffer. The model is a plain byte array.
  const size = 64 * 1024;
  const path = tempImage(size);
  try {
    using ram = new GuestMemory(0x10000);
    using disk = DiskImage.open(path, { lock: false });
    const model = new Uint8Array(size);
    const piece = fc.record({ buffer: fc.nat(3), gap: fc.nat(6), length: fc.integer({ min: 0, max: 40 }) });
    fc.assert(
      fc.property(
        fc.array(piece, { minLength: 1, maxLength: 1200, size: "max" }),
        fc.nat(size),
        fc.nat(),
        (pieces, at, seed) => {
          const buffers = [
            ram.bytes,
            new Uint8Array(new SharedArrayBuffer(16 * 1024)),
            new Uint8Array(48),
            new Uint8Array(48 * 1024),
          ];
          const used = [0, 0, 0, 0];
          const views: Uint8Array[] = []; // apart from each other, so that each byte has one owner
          for (const p of pieces) {
            const b = buffers[p.buffer];
            const start = Math.min(used[p.buffer] + p.gap, b.length);
            const end = Math.min(b.length, start + p.length);
            used[p.buffer] = end;
            views.push(b.subarray(start, end));
          }
          const total = views.reduce((n, v) => n + v.length, 0);
          const offset = Math.min(at, size - total);
          let k = seed;
          for (const v of views) for (let i = 0; i < v.length; i++) v[i] = k++ & 0xff;
          // The same pieces as spans of their buffers, for every other run.
          const spans = {
            count: views.length,
            buffers: views.map((v) => v.buffer),
            offsets: views.map((v) => v.byteOffset),
            lengths: views.map((v) => v.length),
          };
          const asSpans = seed % 2 === 1;
          assert.equal(asSpans ? disk.writeSpans(spans, offset) : disk.writev(views, BigInt(offset)), total);
          let o = offset;
          for (const v of views) {
            model.set(v, o);
            o += v.length;
          }
          const all = new Uint8Array(size);
          disk.read(all, 0n);
          assert.deepEqual(all, model);
          for (const v of views) v.fill(0);
          assert.equal(
            asSpans ? disk.readSpans(spans, BigInt(offset)) : disk.readv(views, BigInt(offset)),
            total,
          );
          o = offset;
          for (const v of views) {
            assert.deepEqual(v, model.subarray(o, o + v.length));
            o += v.length;
          }
        },
      ),
      { numRuns: 60 },
    );
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("DiskImage: a size that is not whole sectors is refused by name, unless the caller accepts it", () => {
  const path = tempImage(MIB + 100);
  try {
    assert.throws(() => DiskImage.open(path), (error: unknown) => {
      assert.ok(error instanceof RangeError);
      assert.match(
        error.message,
        new RegExp(`${path} is 1048676 bytes, not a whole number of 512-byte sectors`),
      );
      assert.match(error.message, /qemu-img resize -f raw .* 1049088/);
      return true;
    });
    // Exactly: no descriptor of this process is left on the image (a count of all of them also moves
    // with the runtime's own descriptors, which made this flaky on a loaded machine).
    assert.deepEqual(fdsOn(path), [], "the fd was closed");
    assert.deepEqual(lockedBytes(path), [], "and the locks with it");
    using disk = DiskImage.open(path, { sectorSize: 1 });
    assert.equal(disk.size, BigInt(MIB + 100));
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("DiskImage: open failures are KvmErrors naming the path; a read-only image refuses writes", () => {
  assert.throws(() => DiskImage.open("/nonexistent/disk.img"), (error: unknown) => {
    assert.ok(
      error instanceof KvmError && error.op === "open /nonexistent/disk.img" && error.code === "ENOENT",
    );
    return true;
  });
  assert.throws(() => DiskImage.open("/tmp"), (error: unknown) => {
    assert.ok(error instanceof KvmError && error.code === "EISDIR");
    return true;
  });
  const path = tempImage(MIB);
  try {
    using disk = DiskImage.open(path, { readOnly: true });
    assert.throws(() => disk.write(new Uint8Array(512), 0n), (error: unknown) => {
      assert.ok(error instanceof KvmError && error.op === "pwrite" && error.code === "EBADF");
      assert.match(error.message, /opened read-only/);
      return true;
    });
    disk.close();
    disk.close();
    assert.throws(() => disk.read(new Uint8Array(1), 0n), Deno.errors.BadResource);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("DiskImage locks: the bytes of QEMU's scheme; one writer, readers exclude writers, share-rw, off", () => {
  const path = tempImage(MIB);
  try {
    {
      using writer = DiskImage.open(path);
      // Uses consistent read and write (100, 101); shares neither write nor resize (201, 203).
      assert.deepEqual(lockedBytes(path), [100, 101, 201, 203]);
      assert.deepEqual(
        imageLocks(path),
        {
          used: ["consistent read", "write"],
          unshared: ["write", "resize"],
        } satisfies ImageLocks,
      );
      assert.throws(() => DiskImage.open(path), lockRefusal(path, /byte 201: "write" not shared/));
      assert.throws(
        () => DiskImage.open(path, { readOnly: true }),
        lockRefusal(path, /byte 101: another user of the image has "write"/),
      );
      using unlocked = DiskImage.open(path, { readOnly: true, lock: false });
      assert.equal(unlocked.size, writer.size);
    }
    assert.deepEqual(lockedBytes(path), [], "closing dropped the locks");
    {
      using reader = DiskImage.open(path, { readOnly: true });
      assert.deepEqual(lockedBytes(path), [100, 201, 203]);
      using reader2 = DiskImage.open(path, { readOnly: true });
      assert.throws(() => DiskImage.open(path), lockRefusal(path, /byte 201/));
      assert.ok(reader.fd !== reader2.fd);
    }
    {
      using a = DiskImage.open(path, { shareRw: true });
      using b = DiskImage.open(path, { shareRw: true });
      assert.deepEqual(lockedBytes(path), [100, 100, 101, 101, 203, 203]);
      assert.ok(a.fd !== b.fd);
      assert.throws(
        () => DiskImage.open(path),
        lockRefusal(path, /byte 101/),
        "a writer that does not share",
      );
    }
  } finally {
    Deno.removeSync(path);
  }
});

// ---------------------------------------------------------------------------------------------
// Against QEMU 7.2 itself: a PC with the image on a virtio-blk device, stopped before the first
// instruction (-S), holds the image as a running guest would.

const QEMU = "qemu-system-x86_64";

function qemuSkipReason(): string | undefined {
  try {
    const out = new Deno.Command(QEMU, { args: ["--version"], stdout: "piped", stderr: "null" }).outputSync();
    if (!out.success) return `${QEMU} --version failed`;
  } catch {
    return `${QEMU} is not installed`;
  }
  return undefined;
}

const QEMU_SKIP = qemuSkipReason();
if (QEMU_SKIP) console.log(`kvm/disk_image_test.ts: QEMU lock interop tests skipped: ${QEMU_SKIP}`);
const ifQemu = { ignore: QEMU_SKIP !== undefined };

function startQemu(path: string, readOnly: boolean): Deno.ChildProcess {
  const drive = `file=${path},format=raw,if=none,id=d0${readOnly ? ",readonly=on" : ""}`;
  return new Deno.Command(QEMU, {
    args: [
      ...["-machine", "pc", "-accel", "tcg", "-nodefaults", "-nographic", "-S"],
      ...["-monitor", "none", "-serial", "none", "-m", "16"],
      ...["-drive", drive, "-device", "virtio-blk-pci,drive=d0"],
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

/** Waits until QEMU holds its locks on `path` (or fails the test, with QEMU's stderr, if it exits). */
async function qemuHolding(child: Deno.ChildProcess, path: string, uses: QemuPermission[]): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const locks = imageLocks(path);
    if (uses.every((name) => locks.used.includes(name)) && locks.unshared.includes("write")) return;
    if (exited || Date.now() > deadline) {
      const { stderr } = await stopQemu(child);
      assert.fail(`QEMU did not take its locks on ${path}: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function stopQemu(child: Deno.ChildProcess): Promise<{ code: number; stderr: string }> {
  try {
    child.kill("SIGKILL");
  } catch {
    // already gone
  }
  const out = await child.output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** Runs QEMU on `path` and returns how it ended: it must refuse (exit) within 20 s. */
async function qemuRefusal(path: string, readOnly: boolean): Promise<{ code: number; stderr: string }> {
  const child = startQemu(path, readOnly);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), 20_000));
  const ended = await Promise.race([child.status, timeout]);
  clearTimeout(timer);
  if (ended === "timeout") {
    await stopQemu(child);
    assert.fail(`QEMU opened ${path} (${readOnly ? "read-only" : "read-write"}) although kvm-ts holds it`);
  }
  const out = await child.output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name: "QEMU 7.2 writes the image: kvm-ts refuses to open it, for writing and for reading, naming the lock",
  ...ifQemu,
  async fn() {
    const path = tempImage(MIB);
    const qemu = startQemu(path, false);
    try {
      await qemuHolding(qemu, path, ["consistent read", "write"]);
      assert.throws(() => DiskImage.open(path), (error: unknown) => {
        lockRefusal(path, /QEMU lock byte 201: "write" not shared.*Failed to get "write" lock/)(error);
        assert.match((error as Error).message, /is a QEMU .* using/);
        return true;
      });
      assert.throws(
        () => DiskImage.open(path, { readOnly: true }),
        lockRefusal(path, /QEMU lock byte 101: .*"write".*Failed to get shared "write" lock/),
      );
    } finally {
      await stopQemu(qemu);
    }
    // QEMU gone, its locks with it.
    using disk = DiskImage.open(path);
    assert.equal(disk.size, BigInt(MIB));
    disk.close();
    Deno.removeSync(path);
  },
});

Deno.test({
  name:
    "kvm-ts writes the image: QEMU 7.2 refuses it with 'Failed to get \"write\" lock' (and read-only too)",
  ...ifQemu,
  async fn() {
    const path = tempImage(MIB);
    try {
      using _disk = DiskImage.open(path);
      const rw = await qemuRefusal(path, false);
      assert.equal(rw.code, 1);
      assert.match(rw.stderr, /Failed to get "write" lock/);
      assert.match(rw.stderr, /Is another process using the image/);
      const ro = await qemuRefusal(path, true);
      assert.equal(ro.code, 1);
      assert.match(ro.stderr, /Failed to get shared "write" lock/);
    } finally {
      Deno.removeSync(path);
    }
  },
});

Deno.test({
  name: "kvm-ts reads the image: a read-only QEMU shares it, a writing QEMU is refused",
  ...ifQemu,
  async fn() {
    const path = tempImage(MIB);
    try {
      using _reader = DiskImage.open(path, { readOnly: true });
      const rw = await qemuRefusal(path, false);
      assert.match(rw.stderr, /Failed to get "write" lock/);
      const qemu = startQemu(path, true);
      try {
        await qemuHolding(qemu, path, ["consistent read"]);
      } finally {
        await stopQemu(qemu);
      }
    } finally {
      Deno.removeSync(path);
    }
  },
});

Deno.test("DiskImage: a span that is not inside its buffer is refused by number, and nothing moves", () => {
  const path = tempImage(4096);
  try {
    using disk = DiskImage.open(path, { lock: false });
    disk.write(new Uint8Array(4096).fill(0x33), 0n);
    const ram = new ArrayBuffer(64);
    const bad: [number, number, string][] = [
      [60, 8, "8 bytes at 60"],
      [-1, 4, "4 bytes at -1"],
      [0, 1.5, "1.5 bytes at 0"],
      [Number.MAX_SAFE_INTEGER + 1, 1, `1 bytes at ${Number.MAX_SAFE_INTEGER + 1}`],
    ];
    for (const [offset, length, text] of bad) {
      // A good span first: the bad one is found before any system call.
      const spans = { count: 2, buffers: [ram, ram], offsets: [0, offset], lengths: [4, length] };
      assert.throws(
        () => disk.readSpans(spans, 0n),
        new RangeError(`preadv: span 1 (${text}) is not inside its buffer`),
      );
      assert.throws(() => disk.writeSpans(spans, 0n), RangeError);
    }
    assert.deepEqual(new Uint8Array(ram), new Uint8Array(64), "nothing read");
    const back = new Uint8Array(4096);
    disk.read(back, 0n);
    assert.deepEqual(back, new Uint8Array(4096).fill(0x33), "nothing written");
  } finally {
    Deno.removeSync(path);
  }
});
