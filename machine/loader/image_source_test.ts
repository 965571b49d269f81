import assert from "node:assert/strict";
import { HELLO64 } from "../guests/mod.ts";
import type { BootPlan, BootWrite } from "./boot_plan.ts";
import { loadKernel } from "./detect.ts";
import { BytesSource, copyBootWrites, type ImageSource, readSource, ZERO_SOURCE } from "./image_source.ts";
import { loadBzImage } from "./linux.ts";
import { loadPvh } from "./pvh.ts";
import { loadVmlinux } from "./vmlinux.ts";
import { bzImageOf, elf64Of, elfNotes, PC_E820, PC_RAM_SIZE } from "./_test_util.ts";

/** A source over bytes that is not a BytesSource (as a file is not), counting what is read. */
class CountingSource implements ImageSource {
  readonly #bytes: Uint8Array;
  reads: [number, number][] = [];
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }
  get size(): number {
    return this.#bytes.length;
  }
  get bytesRead(): number {
    return this.reads.reduce((n, [, length]) => n + length, 0);
  }
  readInto(offset: number, target: Uint8Array): void {
    this.reads.push([offset, target.length]);
    target.set(this.#bytes.subarray(offset, offset + target.length));
  }
}

const KERNEL_MAP = 0xffff_ffff_8000_0000n;
const LINUX_NOTE = { owner: "Linux", type: 0x100, desc: new TextEncoder().encode("6.1.0-test\0") };
const PVH_NOTE = { owner: "Xen", type: 18, desc: new Uint8Array([0, 0x0e, 0, 1, 0, 0, 0, 0]) };
/** Big enough that reading it whole would show in the counts: 1 MiB of text. */
const TEXT = Uint8Array.from({ length: 0x10_0000 }, (_, i) => (i * 13 + 5) & 0xff);

function vmlinux(notes = [PVH_NOTE, LINUX_NOTE]): Uint8Array {
  return elf64Of({
    entry: 0x100_0000n,
    segments: [
      { vaddr: KERNEL_MAP + 0x100_0000n, paddr: 0x100_0000n, data: TEXT },
      { vaddr: KERNEL_MAP + 0x120_0000n, paddr: 0x120_0000n, data: TEXT.subarray(0, 0x800), memsz: 0x3000n },
      { type: 4, vaddr: KERNEL_MAP + 0x110_0000n, paddr: 0x110_0000n, data: elfNotes(notes), flags: 4 },
    ],
  });
}

/** Guest memory after a plan's writes, as 4 KiB pages by address, for comparing two plans. */
function placed(plan: BootPlan, chunkSize?: number): Map<bigint, Uint8Array> {
  const pages = new Map<bigint, Uint8Array>();
  copyBootWrites(plan.writes, (addr, bytes) => {
    bytes.forEach((b, i) => {
      const at = addr + BigInt(i);
      const page = at & ~0xfffn;
      if (!pages.has(page)) pages.set(page, new Uint8Array(0x1000));
      pages.get(page)![Number(at & 0xfffn)] = b;
    });
  }, { chunkSize });
  return pages;
}

function isRange(w: BootWrite): boolean {
  return !("data" in w);
}

const OPTIONS = {
  cmdline: "console=ttyS0",
  e820: PC_E820,
  ramSize: PC_RAM_SIZE,
};

for (
  const [name, image, load] of [
    ["bzImage", bzImageOf({ kernel: TEXT, kernelVersion: "6.1.0-test (builder) #1" }), loadBzImage],
    ["vmlinux", vmlinux([LINUX_NOTE]), loadVmlinux],
    ["PVH", vmlinux(), loadPvh],
    ["bzImage by loadKernel", bzImageOf({ kernel: TEXT }), loadKernel],
    ["PVH by loadKernel", vmlinux(), loadKernel],
  ] as const
) {
  Deno.test(`${name} from a source: headers read, the kernel and initrd named as ranges, the same guest memory`, async () => {
    const initrdBytes = TEXT.subarray(0, 0x2_1000);
    const kernel = new CountingSource(image);
    const initrd = new CountingSource(initrdBytes);
    const plan = await load(kernel, { ...OPTIONS, initrd });
    assert.ok(kernel.bytesRead < 0x4000, `${kernel.bytesRead} bytes of the kernel read to plan it`);
    assert.equal(initrd.bytesRead, 0, "the initrd is not read to plan it");
    const ranges = plan.writes.filter(isRange);
    assert.ok(ranges.some((w) => "source" in w && w.source === kernel));
    assert.ok(ranges.some((w) => "source" in w && w.source === initrd && w.length === initrdBytes.length));
    // The same plan as from bytes, but for the writes' form, and the same bytes land in memory.
    const fromBytes = await load(image, { ...OPTIONS, initrd: initrdBytes });
    assert.ok(!fromBytes.writes.some(isRange), "a plan of bytes holds bytes");
    assert.deepEqual(plan.cpu, fromBytes.cpu);
    assert.equal(plan.description, fromBytes.description);
    kernel.reads = [];
    assert.deepEqual(placed(plan, 0x1000), placed(fromBytes));
    assert.ok(kernel.reads.every(([, length]) => length <= 0x1000), "copied in chunks of at most 4 KiB");
  });
}

Deno.test("a Multiboot kernel from a source: its bytes and bss are ranges, the same guest memory", async () => {
  const options = { cmdline: "hello64", e820: PC_E820, ramSize: PC_RAM_SIZE };
  const source = new CountingSource(HELLO64);
  const plan = await loadKernel(source, options);
  assert.ok(source.reads.every(([o, n]) => o + n <= 0x2000), "only the 8 KiB search area is read to plan it");
  const fromBytes = await loadKernel(HELLO64, options);
  const ranges = plan.writes.filter(isRange);
  assert.deepEqual(ranges.map((w) => "source" in w && [w.source === source, w.offset, w.length]), [
    [true, 0, HELLO64.length],
    [false, 0, 0x3000], // the bss, zeros
  ]);
  assert.deepEqual(plan.cpu, fromBytes.cpu);
  assert.deepEqual(placed(plan, 0x1000), placed(fromBytes));
});

Deno.test("copyBootWrites: bytes as they are, a range in chunks through one buffer", () => {
  const source = new CountingSource(Uint8Array.from({ length: 10 }, (_, i) => i));
  const calls: [bigint, number[], ArrayBufferLike][] = [];
  copyBootWrites(
    [
      { addr: 0x100n, data: new Uint8Array([0xaa]) },
      { addr: 0x200n, source, offset: 1, length: 9 },
      { addr: 0x300n, source: ZERO_SOURCE, offset: 0, length: 5 },
    ],
    (addr, bytes) => calls.push([addr, [...bytes], bytes.buffer]),
    { chunkSize: 4 },
  );
  assert.deepEqual(calls.map(([a, b]) => [a, b]), [
    [0x100n, [0xaa]],
    [0x200n, [1, 2, 3, 4]],
    [0x204n, [5, 6, 7, 8]],
    [0x208n, [9]],
    [0x300n, [0, 0, 0, 0]],
    [0x304n, [0]],
  ]);
  assert.ok(calls.slice(1).every(([, , buffer]) => buffer === calls[1][2]), "one buffer, reused");
  assert.deepEqual(source.reads, [[1, 4], [5, 4], [9, 1]]);
});

Deno.test("a range outside its source is refused before anything is written", () => {
  const source = new CountingSource(new Uint8Array(8));
  const written: bigint[] = [];
  assert.throws(
    () => copyBootWrites([{ addr: 0n, source, offset: 4, length: 5 }], (addr) => written.push(addr)),
    RangeError,
  );
  assert.deepEqual(written, []);
  assert.throws(() => readSource(new BytesSource(new Uint8Array(2)), -1, 1), RangeError);
  assert.throws(() => readSource(new BytesSource(new Uint8Array(2)), 0, 3), RangeError);
});

Deno.test("copyBootWrites with map: chunks over plain RAM are read straight into it, the rest go through write", () => {
  const source = new CountingSource(Uint8Array.from({ length: 10 }, (_, i) => i + 1));
  const ram = new Uint8Array(0x10);
  const written: [bigint, number[]][] = [];
  // RAM at 0x200-0x20f; the chunk at 0x208 runs past it and takes the buffer path.
  const map = (addr: bigint, length: number) =>
    addr >= 0x200n && addr + BigInt(length) <= 0x210n
      ? ram.subarray(Number(addr - 0x200n), Number(addr - 0x200n) + length)
      : null;
  copyBootWrites(
    [{ addr: 0x200n, source, offset: 0, length: 10 }, { addr: 0x20cn, source, offset: 0, length: 8 }],
    (addr, bytes) => written.push([addr, [...bytes]]),
    { chunkSize: 4, map },
  );
  assert.deepEqual([...ram.subarray(0, 0x10)], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 1, 2, 3, 4]);
  assert.deepEqual(written, [[0x210n, [5, 6, 7, 8]]]);
  assert.deepEqual(source.reads, [[0, 4], [4, 4], [8, 2], [0, 4], [4, 4]]);
});
