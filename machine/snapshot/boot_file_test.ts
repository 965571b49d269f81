import assert from "node:assert/strict";
import {
  BOOT_COPY_CHUNK_SIZE,
  type BootPlan,
  copyBootWrites,
  type ImageSource,
  LoaderError,
  ZERO_SOURCE,
} from "../loader/mod.ts";
import { BOOT_FILE, BootFileSource, restoredBootPlan, writeBootFile } from "./boot_file.ts";
import { SnapshotMismatchError } from "./errors.ts";
import { crc32, decodeValue, encodeValue, SnapshotFormatError } from "./format.ts";
import { BOOT_INLINE_LIMIT, decodeSnapshotBoot, type SnapshotBoot, toSnapValue } from "./snapshot_state.ts";

/** A file-like source over `bytes` that counts what it is asked for, and can fail its `n`th read. */
class TestSource implements ImageSource {
  readonly bytes: Uint8Array;
  largestRead = 0;
  reads = 0;
  failAt = Infinity;
  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }
  get size(): number {
    return this.bytes.length;
  }
  readInto(offset: number, target: Uint8Array): void {
    if (++this.reads >= this.failAt) {
      throw new LoaderError("CHANGED", "-kernel k: the file changed since it was opened");
    }
    this.largestRead = Math.max(this.largestRead, target.length);
    target.set(this.bytes.subarray(offset, offset + target.length));
  }
}

const CPU: BootPlan["cpu"] = { mode: "long64", rip: 0x10_0000n, gpr: { rsi: 0x7000n }, cr3: 0x9000n };
const KERNEL = Uint8Array.from(
  { length: 2 * BOOT_COPY_CHUNK_SIZE + 0x123 },
  (_, i) => (i * 13 + i / 4099) & 0xff,
);
const INITRD = Uint8Array.from({ length: 0x4_0001 }, (_, i) => (i * 7 + 1) & 0xff);
const ZERO_PAGE = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);

function linuxLikePlan(kernel: ImageSource, initrd: ImageSource): BootPlan {
  return {
    writes: [
      { addr: 0x7000n, data: ZERO_PAGE }, // 4 KiB: to the file
      { addr: 0x2_0000n, data: new TextEncoder().encode("console=ttyS0") }, // small: inline
      { addr: 0x10_0000n, source: kernel, offset: 0x200, length: kernel.size - 0x200 },
      { addr: 0x40_0000n, source: ZERO_SOURCE, offset: 0, length: 0x30_0000 }, // a bss
      { addr: 0x800_0000n, source: initrd, offset: 0, length: initrd.size },
    ],
    cpu: CPU,
    description: "a Linux-like plan",
  };
}

/** Guest memory as a map of address to bytes, as `copyBootWrites` places `plan`. */
function placed(plan: BootPlan): Map<bigint, number[]> {
  const out = new Map<bigint, number[]>();
  copyBootWrites(plan.writes, (addr, bytes) => out.set(addr, [...bytes]));
  return out;
}

/** `boot` through the state file's value codec, as a restore reads it. */
function throughCodec(boot: SnapshotBoot): SnapshotBoot {
  return decodeSnapshotBoot(decodeValue(encodeValue(toSnapValue(boot))));
}

function withDir(fn: (dir: string) => void): void {
  const dir = Deno.makeTempDirSync({ prefix: "boot-file-test-" });
  try {
    fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("a plan with source ranges round-trips: big writes in the file, small ones inline, bss as zeros", () => {
  withDir((dir) => {
    const kernel = new TestSource(KERNEL);
    const plan = linuxLikePlan(kernel, new TestSource(INITRD));
    const stored = writeBootFile(`${dir}/snap`, plan);
    assert.ok(kernel.largestRead <= BOOT_COPY_CHUNK_SIZE, "the kernel is streamed a chunk at a time");
    const fileSize = ZERO_PAGE.length + KERNEL.length - 0x200 + INITRD.length;
    assert.deepEqual(stored.writes, [
      { addr: 0x7000n, offset: 0, length: 4096 },
      { addr: 0x2_0000n, data: new TextEncoder().encode("console=ttyS0") },
      { addr: 0x10_0000n, offset: 4096, length: KERNEL.length - 0x200 },
      { addr: 0x40_0000n, zeros: 0x30_0000 },
      { addr: 0x800_0000n, offset: 4096 + KERNEL.length - 0x200, length: INITRD.length },
    ]);
    const bytes = Deno.readFileSync(`${dir}/snap/${BOOT_FILE}`);
    assert.deepEqual(stored.file, { size: fileSize, crc: crc32(bytes) });
    assert.equal(bytes.length, fileSize);
    assert.deepEqual([...Deno.readDirSync(`${dir}/snap`)].map((e) => e.name), [BOOT_FILE]);
    const decoded = throughCodec(stored);
    assert.deepEqual(decoded, stored);
    const restored = restoredBootPlan(`${dir}/snap`, decoded);
    assert.deepEqual(restored.cpu, CPU);
    assert.equal(restored.description, plan.description);
    assert.deepEqual(placed(restored), placed(plan));
    // A second reset reads the file again (its CRC-32 was checked the first time).
    assert.deepEqual(placed(restored), placed(plan));
  });
});

Deno.test("a plan without writes of 4 KiB or more has an empty boot file", () => {
  withDir((dir) => {
    const under = new Uint8Array(BOOT_INLINE_LIMIT - 1).fill(7);
    const stored = writeBootFile(dir, {
      writes: [{ addr: 0x7c00n, data: new Uint8Array([0xf4]) }, { addr: 0x1_0000n, data: under }],
      cpu: { mode: "real", rip: 0n, cs: { selector: 0x7c0, base: 0x7c00n } },
      description: "",
    });
    assert.deepEqual(stored.file, { size: 0, crc: 0 });
    assert.equal(Deno.statSync(`${dir}/${BOOT_FILE}`).size, 0);
    assert.equal(BOOT_INLINE_LIMIT, 4096);
    assert.deepEqual(stored.writes[1], { addr: 0x1_0000n, data: under });
    assert.deepEqual(
      placed(restoredBootPlan(dir, stored)),
      new Map([[0x7c00n, [0xf4]], [0x1_0000n, [...under]]]),
    );
  });
});

Deno.test("a boot file whose bytes changed is refused at its first read with one CHANGED line", () => {
  withDir((dir) => {
    const stored = writeBootFile(dir, linuxLikePlan(new TestSource(KERNEL), new TestSource(INITRD)));
    const path = `${dir}/${BOOT_FILE}`;
    const bytes = Deno.readFileSync(path);
    bytes[bytes.length - 1] ^= 1;
    Deno.writeFileSync(path, bytes); // the same size: the restore takes it
    const plan = restoredBootPlan(dir, stored);
    assert.throws(
      () => placed(plan),
      (e) =>
        e instanceof LoaderError && e.code === "CHANGED" && !e.message.includes("\n") &&
        e.message.startsWith(`snapshot boot file ${path} changed since it was written (CRC-32 0x`),
    );
    // Put back, it is read again (a new modification time is checked again).
    bytes[bytes.length - 1] ^= 1;
    Deno.writeFileSync(path, bytes);
    assert.deepEqual(placed(plan), placed(linuxLikePlan(new TestSource(KERNEL), new TestSource(INITRD))));
  });
});

Deno.test("a boot file replaced after its first read is checked again; a gone one is one CHANGED line", () => {
  withDir((dir) => {
    const path = `${dir}/${BOOT_FILE}`;
    Deno.writeFileSync(path, new Uint8Array([1, 2, 3, 4]));
    const source = new BootFileSource(path, 4, crc32(new Uint8Array([1, 2, 3, 4])));
    const target = new Uint8Array(2);
    source.readInto(2, target);
    assert.deepEqual(target, new Uint8Array([3, 4]));
    Deno.writeFileSync(`${path}.new`, new Uint8Array([1, 2, 3, 5]));
    Deno.renameSync(`${path}.new`, path); // another inode
    assert.throws(
      () => source.readInto(0, target),
      (e) => e instanceof LoaderError && /CRC-32/.test(e.message),
    );
    Deno.removeSync(path);
    assert.throws(
      () => source.readInto(0, target),
      (e) => e instanceof LoaderError && e.code === "CHANGED" && /cannot be opened/.test(e.message),
    );
    assert.throws(() => source.readInto(3, target), RangeError);
  });
});

Deno.test("a missing or resized boot file is refused at restore with one line naming the directory", () => {
  withDir((dir) => {
    const stored = writeBootFile(dir, linuxLikePlan(new TestSource(KERNEL), new TestSource(INITRD)));
    const path = `${dir}/${BOOT_FILE}`;
    Deno.truncateSync(path, stored.file.size - 1);
    assert.throws(
      () => restoredBootPlan(dir, stored),
      (e) =>
        e instanceof SnapshotMismatchError && !e.message.includes("\n") &&
        e.message ===
          `snapshot ${dir}: its boot file ${path} cannot be used: ${
            stored.file.size - 1
          } bytes, the snapshot recorded ${stored.file.size}`,
    );
    Deno.removeSync(path);
    assert.throws(
      () => restoredBootPlan(dir, stored),
      (e) =>
        e instanceof SnapshotMismatchError && !e.message.includes("\n") &&
        e.message.startsWith(`snapshot ${dir}: its boot file ${path} cannot be used: `),
    );
  });
});

Deno.test("a source that changes while the boot file is written leaves nothing behind", () => {
  withDir((dir) => {
    const kernel = new TestSource(KERNEL);
    kernel.failAt = 2; // the second chunk
    const plan = linuxLikePlan(kernel, new TestSource(INITRD));
    // A directory this call creates is removed again…
    assert.throws(
      () => writeBootFile(`${dir}/new`, plan),
      (e) => e instanceof LoaderError && e.code === "CHANGED" && !e.message.includes("\n"),
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    // …one that was there is kept, and so is what it held.
    Deno.writeFileSync(`${dir}/${BOOT_FILE}`, new Uint8Array([9]));
    kernel.reads = 0;
    assert.throws(() => writeBootFile(dir, plan), LoaderError);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [BOOT_FILE]);
    assert.deepEqual(Deno.readFileSync(`${dir}/${BOOT_FILE}`), new Uint8Array([9]));
  });
});

Deno.test("a stored boot plan whose range is outside its file, or without a file, is refused by the decoder", () => {
  const boot = {
    writes: [{ addr: 0n, offset: 10, length: 7 }],
    cpu: { mode: "real", rip: 0n },
    description: "",
    file: { size: 16, crc: 0 },
  };
  assert.throws(
    () => decodeSnapshotBoot(toSnapValue(boot)),
    (e) =>
      e instanceof SnapshotFormatError &&
      e.message === "snapshot state: board.boot.writes[0] is not inside the 16-byte boot file",
  );
  assert.throws(
    () => decodeSnapshotBoot(toSnapValue({ ...boot, file: undefined })),
    (e) =>
      e instanceof SnapshotFormatError && e.message === "snapshot state: board.boot.file is not an object",
  );
  assert.deepEqual(decodeSnapshotBoot(toSnapValue({ ...boot, writes: [] })).writes, []);
});
