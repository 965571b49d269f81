import assert from "node:assert/strict";
import {
  AddressSpace,
  FlatView,
  formatMtree,
  type MemoryListener,
  MemoryRegion,
  type MemoryRegionOps,
  MemTxResult,
  type RamBacking,
  transaction,
  transactionDepth,
  UNASSIGNED_IO_OPS,
} from "../mod.ts";
import { loggingDevice as device, pattern } from "./_test_util.ts";

const { OK, DECODE_ERROR, ACCESS_ERROR } = MemTxResult;
const TOP = 1n << 64n;

function memory() {
  const system = MemoryRegion.container("system", TOP);
  return { system, as: new AddressSpace(system, "memory") };
}

function bytes(...b: number[]) {
  return new Uint8Array(b);
}

Deno.test("RAM: 1/2/4/8-byte reads and writes are little-endian", () => {
  const { system, as } = memory();
  using _ = as;
  system.addSubregion(0x1000, MemoryRegion.ram("ram", 0x1000));
  assert.equal(as.write(0x1000, 8, 0x0807_0605_0403_0201n), OK);
  assert.deepEqual(as.read(0x1000, 1), { value: 0x01n, result: OK });
  assert.deepEqual(as.read(0x1001, 2), { value: 0x0302n, result: OK });
  assert.deepEqual(as.read(0x1004, 4), { value: 0x0807_0605n, result: OK });
  assert.deepEqual(as.read(0x1000, 8), { value: 0x0807_0605_0403_0201n, result: OK });
  assert.equal(as.write(0x1003, 2, 0xaabb), OK);
  assert.equal(as.write(0x1007, 1, 0x1ff), OK); // only the low byte
  assert.deepEqual(as.readBytes(0x1000, 8).data, bytes(1, 2, 3, 0xbb, 0xaa, 6, 7, 0xff));
  assert.equal(as.write(0x1008, 4, -1), OK);
  assert.deepEqual(as.read(0x1008, 8), { value: 0xffff_ffffn, result: OK });
});

Deno.test("ROM: reads its bytes; every write is dropped with DECODE_ERROR", () => {
  const { system, as } = memory();
  using _ = as;
  const rom = MemoryRegion.rom("bios", 0x1000);
  rom.ramBacking.write(0n, bytes(0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88));
  system.addSubregion(0xf000, rom);
  assert.deepEqual(as.read(0xf000, 8), { value: 0x8877_6655_4433_2211n, result: OK });
  for (const size of [1, 2, 4, 8]) assert.equal(as.write(0xf000, size, 0), DECODE_ERROR);
  assert.equal(as.writeBytes(0xf002, bytes(0, 0, 0)), DECODE_ERROR);
  assert.deepEqual(as.read(0xf000, 8), { value: 0x8877_6655_4433_2211n, result: OK });
});

Deno.test("a readonly alias over RAM does not stop writes: directness uses the terminal region", () => {
  const { system, as } = memory();
  using _ = as;
  const ram = MemoryRegion.ram("pc.ram", 0x10_0000);
  const pamRom = MemoryRegion.alias("pam-rom", ram, 0xc_0000, 0x4000);
  pamRom.setReadonly(true);
  system.addSubregion(0, ram);
  system.addSubregionOverlap(0xc_0000, pamRom, 1);
  assert.equal(as.flatView().find((r) => r.start === 0xc_0000n)?.readonly, true);
  assert.equal(as.write(0xc_0010, 4, 0x1234_5678), OK);
  assert.deepEqual(as.read(0xc_0010, 4), { value: 0x1234_5678n, result: OK });
});

Deno.test("a hole in a memory AS reads 0 and drops writes with DECODE_ERROR", () => {
  const { as } = memory();
  using _ = as;
  for (const size of [1, 2, 4, 8]) {
    assert.deepEqual(as.read(0x1234_5670, size), { value: 0n, result: DECODE_ERROR });
    assert.equal(as.write(0x1234_5670, size, 0xff), DECODE_ERROR);
  }
});

Deno.test("a hole in an I/O AS (root with UNASSIGNED_IO_OPS) reads all-ones with OK", () => {
  const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  using ports = new AddressSpace(io, "I/O");
  for (const port of [0x3f8, 0x3f9]) {
    assert.deepEqual(ports.read(port, 1), { value: 0xffn, result: OK });
    assert.deepEqual(ports.read(port, 2), { value: 0xffffn, result: OK });
    assert.deepEqual(ports.read(port, 4), { value: 0xffff_ffffn, result: OK });
    assert.deepEqual(ports.read(port, 8), { value: 0xffff_ffff_ffff_ffffn, result: OK });
    assert.equal(ports.write(port, 4, 0), OK);
  }
});

Deno.test("a reservation hides RAM below it; reads 0 and drops writes with DECODE_ERROR", () => {
  const { system, as } = memory();
  using _ = as;
  const ram = MemoryRegion.ram("ram", 0x4000);
  ram.ramBacking.write(0x1000n, bytes(1, 2, 3, 4));
  system.addSubregion(0, ram);
  system.addSubregionOverlap(0x1000, MemoryRegion.reservation("kvm-ioapic", 0x1000), 1);
  assert.deepEqual(as.read(0x1000, 4), { value: 0n, result: DECODE_ERROR });
  assert.equal(as.write(0x1000, 4, 0x5555_5555), DECODE_ERROR);
  const out = new Uint8Array(4);
  ram.ramBacking.read(0x1000n, out);
  assert.deepEqual(out, bytes(1, 2, 3, 4));
});

Deno.test("ROM device: romd mode reads its bytes and writes to ops; romd off sends both to ops", () => {
  const { system, as } = memory();
  using _ = as;
  const dev = device();
  const flash = MemoryRegion.romDevice("flash", 0x1000, dev.ops);
  flash.ramBacking.write(0x10n, bytes(0xde, 0xad, 0xbe, 0xef));
  system.addSubregion(0x10_0000, flash);
  assert.deepEqual(as.read(0x10_0010, 4), { value: 0xefbe_adden, result: OK });
  assert.equal(as.write(0x10_0010, 2, 0x1234), OK);
  assert.deepEqual(dev.calls, ["w 10/2=1234"]);
  assert.deepEqual(as.read(0x10_0010, 4).value, 0xefbe_adden, "a write to ops leaves the bytes");
  flash.setRomdMode(false);
  dev.calls.length = 0;
  assert.deepEqual(as.read(0x10_0010, 4), { value: pattern(0x10, 4), result: OK });
  assert.equal(as.write(0x10_0014, 1, 0x5a), OK);
  assert.deepEqual(dev.calls, ["r 10/4", "w 14/1=5a"]);
});

Deno.test("byte ranges cross regions: RAM clamped to its range, MMIO chunked, holes OR-ed in", () => {
  const { system, as } = memory();
  using _ = as;
  const ram = MemoryRegion.ram("ram", 0x1000);
  const dev = device();
  system.addSubregion(0x1000, ram);
  system.addSubregion(0x2000, MemoryRegion.io("mmio", 0x10, dev.ops));
  ram.ramBacking.write(0xffcn, bytes(1, 2, 3, 4));
  const { data, result } = as.readBytes(0x1ffc, 0x18);
  assert.equal(result, DECODE_ERROR);
  const expected = [1, 2, 3, 4];
  for (let i = 0; i < 0x10; i++) expected.push(0xa0 + i);
  expected.push(0, 0, 0, 0);
  assert.deepEqual(data, new Uint8Array(expected));
  assert.deepEqual(dev.calls, ["r 0/4", "r 4/4", "r 8/4", "r c/4"]);
  dev.calls.length = 0;
  assert.equal(as.writeBytes(0x1ffe, bytes(9, 8, 7, 6, 5, 4)), OK);
  assert.deepEqual(dev.calls, ["w 0/4=4050607"]);
  assert.deepEqual(as.readBytes(0x1ffc, 4).data, bytes(1, 2, 9, 8));
  dev.calls.length = 0;
  const window = new Uint8Array(12).fill(0x77);
  assert.equal(as.rw(0x200c, window.subarray(2, 10), true), DECODE_ERROR);
  assert.deepEqual(dev.calls, ["w c/4=77777777"]);
});

Deno.test("MMIO chunks follow the region-relative offset: 6 bytes at 0x1002 are 2 + 4", () => {
  const { system, as } = memory();
  using _ = as;
  const dev = device();
  system.addSubregion(0x1_0001, MemoryRegion.io("odd", 0x2000, dev.ops)); // absolute address is odd
  const { data } = as.readBytes(0x1_0001 + 0x1002, 6);
  assert.deepEqual(dev.calls, ["r 1002/2", "r 1004/4"]);
  assert.deepEqual(data, new Uint8Array([0, 1, 2, 3, 4, 5].map((i) => (0xa0 + 0x02 + i) & 0xff)));
  dev.calls.length = 0;
  as.readBytes(0x1_0001, 7); // offset 0 never limits
  assert.deepEqual(dev.calls, ["r 0/4", "r 4/2", "r 6/1"]);
  const wide = device({ valid: { max: 8 }, impl: { max: 8 } });
  system.addSubregion(0x4_0000, MemoryRegion.io("wide", 0x100, wide.ops));
  assert.deepEqual(as.read(0x4_0000, 8), { value: pattern(0, 8), result: OK });
  as.read(0x4_0004, 8);
  assert.deepEqual(wide.calls, ["r 0/8", "r 4/4", "r 8/4"]);
});

Deno.test("MMIO is not clamped to its range: an unaligned access goes whole to the first region", () => {
  const { system, as } = memory();
  using _ = as;
  const a = device({ valid: { unaligned: true }, impl: { unaligned: true } });
  const b = device();
  system.addSubregion(0, MemoryRegion.io("a", 0x10, a.ops));
  system.addSubregion(0x10, MemoryRegion.io("b", 0x10, b.ops));
  assert.deepEqual(as.read(0xe, 4), { value: pattern(0xe, 4), result: OK });
  assert.deepEqual(a.calls, ["r e/4"]);
  assert.deepEqual(b.calls, []);
});

Deno.test("impl.max 1 splits a 4-byte access into four 1-byte callbacks, little-endian", () => {
  const { system, as } = memory();
  using _ = as;
  const dev = device({ impl: { max: 1 } });
  system.addSubregion(0x1000, MemoryRegion.io("byte", 0x100, dev.ops));
  assert.deepEqual(as.read(0x1010, 4), { value: pattern(0x10, 4), result: OK });
  assert.equal(as.write(0x1010, 4, 0x4433_2211), OK);
  assert.deepEqual(dev.calls, [
    "r 10/1",
    "r 11/1",
    "r 12/1",
    "r 13/1",
    "w 10/1=11",
    "w 11/1=22",
    "w 12/1=33",
    "w 13/1=44",
  ]);
});

Deno.test("impl.min 4 widens a 1-byte access at the same, not aligned-down, offset", () => {
  const { system, as } = memory();
  using _ = as;
  const dev = device({ impl: { min: 4 } }, () => 0x1122_33ccn);
  system.addSubregion(0x1000, MemoryRegion.io("wide", 0x100, dev.ops));
  assert.deepEqual(as.read(0x1002, 1), { value: 0xccn, result: OK });
  assert.equal(as.write(0x1003, 1, 0xab), OK);
  assert.deepEqual(dev.calls, ["r 2/4", "w 3/4=ab"]);
});

Deno.test("big-endian devices: values swapped; split and widen shift from the high end", () => {
  const { system, as } = memory();
  using _ = as;
  const reg = device({ endianness: "big" }, () => 0x1122_3344n);
  const split = device({ endianness: "big", impl: { max: 2 } }, (o) => (o === 0 ? 0x1122n : 0x3344n));
  const widen = device({ endianness: "big", impl: { min: 2 } }, () => 0xabcdn);
  const bytewise = device({ endianness: "big", impl: { max: 1 } });
  system.addSubregion(0x1000, MemoryRegion.io("reg", 0x10, reg.ops));
  system.addSubregion(0x2000, MemoryRegion.io("split", 0x10, split.ops));
  system.addSubregion(0x3000, MemoryRegion.io("widen", 0x10, widen.ops));
  system.addSubregion(0x4000, MemoryRegion.io("bytewise", 0x10, bytewise.ops));
  assert.deepEqual(as.read(0x1000, 4), { value: 0x4433_2211n, result: OK });
  assert.equal(as.write(0x1000, 4, 0x4433_2211), OK);
  assert.deepEqual(reg.calls, ["r 0/4", "w 0/4=11223344"]);
  assert.deepEqual(as.read(0x2000, 4), { value: 0x4433_2211n, result: OK });
  as.write(0x2000, 4, 0x4433_2211);
  assert.deepEqual(split.calls, ["r 0/2", "r 2/2", "w 0/2=1122", "w 2/2=3344"]);
  assert.deepEqual(as.read(0x3001, 1), { value: 0xabn, result: OK });
  as.write(0x3001, 1, 0x5a);
  assert.deepEqual(widen.calls, ["r 1/2", "w 1/2=5a00"]);
  // A byte-wide device gives the same byte stream whatever its declared order.
  assert.deepEqual(as.read(0x4000, 4), { value: pattern(0, 4), result: OK });
});

Deno.test("valid violations read 0 / drop the write with DECODE_ERROR; results are OR-ed", () => {
  const { system, as } = memory();
  using _ = as;
  const four = device({ valid: { min: 4, max: 4 } });
  system.addSubregion(0x1000, MemoryRegion.io("min4", 0x10, four.ops));
  assert.deepEqual(as.read(0x1000, 1), { value: 0n, result: DECODE_ERROR }); // too small
  assert.equal(as.write(0x1000, 2, 0xffff), DECODE_ERROR);
  assert.deepEqual(as.read(0x1002, 4), { value: 0n, result: DECODE_ERROR }); // chunked 2 + 2, too small
  assert.deepEqual(as.read(0x1000, 8), { value: pattern(0, 4) | (pattern(4, 4) << 32n), result: OK });
  assert.deepEqual(four.calls, ["r 0/4", "r 4/4"], "8 bytes to valid.max 4 are chunked, never too big");

  const strict = device({ valid: { max: 4 }, impl: { unaligned: true } });
  const loose = device({ valid: { max: 4, unaligned: true }, impl: { unaligned: true } });
  const bare = device({ impl: { unaligned: true } }); // no `valid`: valid.unaligned is false
  system.addSubregion(0x2000, MemoryRegion.io("strict", 0x10, strict.ops));
  system.addSubregion(0x3000, MemoryRegion.io("loose", 0x10, loose.ops));
  system.addSubregion(0x4000, MemoryRegion.io("bare", 0x10, bare.ops));
  assert.deepEqual(as.read(0x2002, 4), { value: 0n, result: DECODE_ERROR });
  assert.equal(as.write(0x2001, 2, 0), DECODE_ERROR);
  assert.deepEqual(as.read(0x3002, 4), { value: pattern(2, 4), result: OK });
  assert.deepEqual(as.read(0x4002, 4), { value: 0n, result: DECODE_ERROR });
  assert.deepEqual([strict.calls, loose.calls, bare.calls], [[], ["r 2/4"], []]);

  const seen: string[] = [];
  const picky = device({
    valid: { accepts: (o, s, w) => (seen.push(`${o.toString(16)}/${s}${w ? "w" : "r"}`), !w && o < 4) },
  });
  system.addSubregion(0x5000, MemoryRegion.io("picky", 0x10, picky.ops));
  assert.deepEqual(as.read(0x5000, 8), { value: pattern(0, 4), result: DECODE_ERROR }); // OK | DECODE_ERROR
  assert.equal(as.write(0x5000, 4, 1), DECODE_ERROR);
  assert.deepEqual(seen, ["0/4r", "4/4r", "0/4w"]);
  assert.deepEqual(picky.calls, ["r 0/4"]);
});

Deno.test("invalid access sizes and addresses past 2^64 throw RangeError", () => {
  const { system, as } = memory();
  using _ = as;
  system.addSubregion(TOP - 0x1000n, MemoryRegion.ram("top", 0x1000));
  for (const size of [3, 16, 0, -1, 1.5]) {
    assert.throws(() => as.read(0, size), RangeError);
    assert.throws(() => as.write(0, size, 0), RangeError);
  }
  assert.deepEqual(as.read(TOP - 1n, 1), { value: 0n, result: OK });
  assert.deepEqual(as.read(TOP - 8n, 8), { value: 0n, result: OK });
  assert.throws(() => as.read(TOP - 2n, 4), RangeError);
  assert.throws(() => as.write(TOP - 4n, 8, 0), RangeError);
  assert.throws(() => as.read(TOP, 1), RangeError);
  assert.throws(() => as.read(-1, 1), RangeError);
  assert.throws(() => as.readBytes(TOP - 1n, 2), RangeError);
  assert.throws(() => as.writeBytes(TOP - 1n, bytes(1, 2)), RangeError);
  assert.throws(() => as.writeRom(TOP - 1n, bytes(1, 2)), RangeError);
  assert.throws(() => as.write(0, 4, 1.5), RangeError);
});

Deno.test("re-entrancy: a handler touching its own device gets ACCESS_ERROR, another device is fine", () => {
  const { system, as } = memory();
  using _ = as;
  const nested: unknown[] = [];
  const other = device();
  const self: MemoryRegionOps = {
    read: (o) => {
      if (o === 0) nested.push(as.read(0x1004, 4), as.read(0x2000, 4));
      return 0x1234;
    },
    write: () => void nested.push(as.write(0x1008, 4, 1)),
  };
  system.addSubregion(0x1000, MemoryRegion.io("self", 0x10, self));
  system.addSubregion(0x2000, MemoryRegion.io("other", 0x10, other.ops));
  assert.deepEqual(as.read(0x1000, 4), { value: 0x1234n, result: OK });
  as.write(0x1000, 4, 0);
  assert.deepEqual(nested, [
    { value: 0n, result: ACCESS_ERROR },
    { value: pattern(0, 4), result: OK },
    ACCESS_ERROR,
  ]);
  assert.deepEqual(as.read(0x1004, 4), { value: 0x1234n, result: OK }, "the guard is released");

  nested.length = 0;
  const optOut = MemoryRegion.io("reentrant", 0x10, { ...self, reentrant: true });
  system.removeSubregion(system.subregions.find((r) => r.name === "self")!);
  system.addSubregion(0x1000, optOut);
  as.read(0x1000, 4);
  assert.deepEqual(nested[0], { value: 0x1234n, result: OK });

  const throwing = MemoryRegion.io("throws", 0x10, {
    read: () => {
      throw new Error("device failure");
    },
  });
  system.addSubregion(0x3000, throwing);
  assert.throws(() => as.read(0x3000, 4), /device failure/);
  assert.throws(() => as.read(0x3000, 4), /device failure/, "not ACCESS_ERROR: the guard was released");
});

Deno.test("a handler's nested access on the same AS does not corrupt a split access in progress", () => {
  const { system, as } = memory();
  using _ = as;
  const ram = MemoryRegion.ram("ram", 0x1000);
  system.addSubregion(0, ram);
  as.write(0x10, 8, 0x5555_5555_5555_5555n);
  const written: string[] = [];
  const dma: MemoryRegionOps = {
    valid: { max: 4 },
    read: (o) => (as.read(0x10, 4), 0xa000_0000 + o),
    write: (o, v) => {
      written.push(`${o}=${v.toString(16)}`);
      as.write(0x20, 8, 0x6666_6666_6666_6666n);
    },
  };
  system.addSubregion(0x1000, MemoryRegion.io("dma", 0x10, dma));
  assert.deepEqual(as.read(0x1000, 8), { value: 0xa000_0004_a000_0000n, result: OK });
  assert.equal(as.write(0x1000, 8, 0x1111_1111_2222_2222n), OK);
  assert.deepEqual(written, ["0=22222222", "4=11111111"]);
});

Deno.test("RAM writes mark dirty pages only while the region is logged", () => {
  const { system, as } = memory();
  using _ = as;
  const vram = MemoryRegion.ram("vga.vram", 0x10000);
  system.addSubregion(0x10_0000, MemoryRegion.alias("vga-window", vram, 0x4000, 0x4000));
  as.write(0x10_0010, 4, 1);
  assert.deepEqual(vram.takeDirtyPages(), []);
  vram.setLog(true);
  assert.equal(as.flatView()[0].dirtyLogMask, 1);
  as.read(0x10_2000, 4); // reads never mark
  as.write(0x10_0010, 4, 1);
  as.writeBytes(0x10_0ffe, bytes(1, 2, 3, 4));
  assert.deepEqual(vram.takeDirtyPages(0x5000n, 0x1000n), [0x5000n]);
  assert.deepEqual(vram.takeDirtyPages(), [0x4000n]);
  assert.deepEqual(vram.takeDirtyPages(), [], "taking clears");
  vram.setLog(true); // counted: two starts need two stops
  vram.setLog(false);
  as.write(0x10_3000, 1, 1);
  assert.deepEqual(vram.takeDirtyPages(), [0x7000n]);
  vram.setLog(false);
  assert.equal(as.flatView()[0].dirtyLogMask, 0);
  as.write(0x10_3000, 1, 1);
  assert.deepEqual(vram.takeDirtyPages(), []);
});

Deno.test("writeRom fills RAM, ROM and romd ROM devices, skips MMIO, MMIO-mode ROM devices and holes", () => {
  const { system, as } = memory();
  using _ = as;
  const dev = device();
  const flashOps = device();
  const rom = MemoryRegion.rom("rom", 0x10);
  const ram = MemoryRegion.ram("ram", 0x10);
  const romd = MemoryRegion.romDevice("romd", 0x10, flashOps.ops);
  const mmioMode = MemoryRegion.romDevice("mmio-mode", 0x10, flashOps.ops);
  mmioMode.setRomdMode(false);
  system.addSubregion(0x1000, rom);
  system.addSubregion(0x1010, MemoryRegion.io("mmio", 0x10, dev.ops));
  system.addSubregion(0x1030, ram); // 0x1020-0x102f is a hole
  system.addSubregion(0x1040, romd);
  system.addSubregion(0x1050, mmioMode);
  ram.setLog(true);
  as.writeRom(0x1000, new Uint8Array(0x60).map((_, i) => i + 1));
  const contents = (mr: MemoryRegion) => {
    const out = new Uint8Array(0x10);
    mr.ramBacking.read(0n, out);
    return Array.from(out);
  };
  const run = (from: number) => Array.from({ length: 0x10 }, (_, i) => from + i);
  assert.deepEqual(contents(rom), run(1));
  assert.deepEqual(contents(ram), run(0x31));
  assert.deepEqual(contents(romd), run(0x41));
  assert.deepEqual(contents(mmioMode), new Array(0x10).fill(0));
  assert.deepEqual([dev.calls, flashOps.calls], [[], []]);
  assert.deepEqual(ram.takeDirtyPages(), [0n], "loader writes are dirty-logged too");
  assert.deepEqual(as.read(0x1000, 4), { value: 0x0403_0201n, result: OK });
});

Deno.test("alias → alias → container with a hole at 0: MMIO sees offsets of the terminal region", () => {
  const { system, as } = memory();
  using _ = as;
  const dev = device();
  const bar = MemoryRegion.container("bar", 0x1000);
  bar.addSubregion(0x100, MemoryRegion.io("regs", 0x100, dev.ops));
  const outer = MemoryRegion.alias("outer", bar, 0x80, 0x400);
  const inner = MemoryRegion.alias("inner", outer, 0x40, 0x200);
  system.addSubregion(0x1_0000, inner);
  const [r] = as.flatView();
  assert.deepEqual([r.start, r.size, r.region.name, r.offsetInRegion], [0x1_0040n, 0x100n, "regs", 0n]);
  assert.deepEqual(as.read(0x1_0000, 4), { value: 0n, result: DECODE_ERROR });
  assert.deepEqual(as.read(0x1_0044, 4), { value: pattern(4, 4), result: OK });
  assert.equal(as.write(0x1_0050, 2, 0xbeef), OK);
  assert.deepEqual(dev.calls, ["r 4/4", "w 10/2=beef"]);
});

Deno.test("one port region mapped twice through aliases gets the right offsets both times", () => {
  const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  using ports = new AddressSpace(io, "I/O");
  const dev = device({ impl: { max: 1 } });
  const uart = MemoryRegion.io("serial", 8, dev.ops);
  io.addSubregion(0x3f8, MemoryRegion.alias("com1", uart, 0, 8));
  io.addSubregion(0x2f8, MemoryRegion.alias("com2-hi", uart, 4, 4));
  assert.deepEqual(ports.read(0x3fa, 1), { value: pattern(2, 1), result: OK });
  assert.deepEqual(ports.read(0x2f9, 1), { value: pattern(5, 1), result: OK });
  ports.write(0x3ff, 1, 0x11);
  ports.write(0x2f8, 2, 0x3322);
  assert.deepEqual(dev.calls, ["r 2/1", "r 5/1", "w 7/1=11", "w 4/1=22", "w 5/1=33"]);
  assert.deepEqual(ports.read(0x2fc, 1), { value: 0xffn, result: OK }, "past the window: the io root");
});

Deno.test("misuse of the address-space API gets the API's own error, naming the space and the value", () => {
  const { system, as } = memory();
  using _ = as;
  system.addSubregion(0, MemoryRegion.ram("ram", 0x1000));
  const listener: MemoryListener = { regionAdd: () => {} };
  as.registerListener(listener);
  const before = as.flatView();
  const any = (v: unknown) => v as never;
  const cases: [string, () => unknown, typeof TypeError | typeof RangeError, RegExp[]][] = [
    ["duck-typed root", () => new AddressSpace(any({ subregions: [] }), "duck"), TypeError, [
      /duck/,
      /MemoryRegion/,
    ]],
    ["name a number", () => new AddressSpace(system, any(42)), TypeError, [/42/]],
    ["readBytes -1", () => as.readBytes(0, -1), RangeError, [/"memory"/, /-1/]],
    ["readBytes 1.5", () => as.readBytes(0, 1.5), RangeError, [/"memory"/, /1\.5/]],
    ["readBytes a string", () => as.readBytes(0, any("8")), TypeError, [/"memory"/, /8/]],
    ["rw with an array", () => as.rw(0, any([1, 2]), false), TypeError, [/"memory"/, /Uint8Array/, /array/i]],
    ["rw isWrite a string", () => as.rw(0, new Uint8Array(1), any("yes")), TypeError, [/"memory"/, /yes/]],
    ["writeBytes a string", () => as.writeBytes(0, any("ab")), TypeError, [/"memory"/, /ab/]],
    ["writeRom an array", () => as.writeRom(0, any([1])), TypeError, [/"memory"/, /Uint8Array/]],
    ["read at a string", () => as.read(any("16"), 4), TypeError, [/"memory"/, /16/]],
    ["write a string", () => as.write(0, 4, any("5")), TypeError, [/"memory"/, /5/]],
    ["registerListener null", () => as.registerListener(any(null)), TypeError, [/"memory"/, /null/]],
    ["registerListener 42", () => as.registerListener(any(42)), TypeError, [/"memory"/, /42/]],
    ["registerListener twice", () => as.registerListener(listener), TypeError, [/"memory"/, /already/]],
    ["unregisterListener null", () => as.unregisterListener(any(null)), TypeError, [/"memory"/, /null/]],
    ["syncDirtyLog a non-region", () => as.syncDirtyLog(any({})), TypeError, [/"memory"/, /MemoryRegion/]],
    ["formatMtree null", () => formatMtree(any(null)), TypeError, [/formatMtree/, /null/]],
    ["formatMtree [null]", () => formatMtree(any([null])), TypeError, [/formatMtree/, /null/]],
    ["formatMtree options 5", () => formatMtree([as], any(5)), TypeError, [/formatMtree/, /5/]],
    ["transaction(42)", () => transaction(any(42)), TypeError, [/transaction/, /42/]],
    ["FlatView.render a non-region", () => FlatView.render(any({})), TypeError, [/FlatView/, /MemoryRegion/]],
  ];
  for (const [label, fn, type, patterns] of cases) {
    assert.throws(fn, (e) => {
      assert.ok(e instanceof type, `${label}: ${e} is not a ${type.name}`);
      for (const p of patterns) assert.match((e as Error).message, p, label);
      return true;
    }, label);
    assert.equal(transactionDepth(), 0, `${label} left a transaction open`);
    assert.equal(as.flatView(), before, `${label} changed the view`);
  }
  assert.deepEqual(as.listeners, [listener]);
  assert.ok(AddressSpace.all().every((s) => s.name !== "duck"));
  as.unregisterListener(listener);
});

/** A RAM backing over `bytes` that gives views, as the KVM layer's mmap'd guest memory does. */
function viewableBacking(bytes: Uint8Array): RamBacking {
  return {
    size: BigInt(bytes.length),
    read: (o, out) => out.set(bytes.subarray(Number(o), Number(o) + out.length)),
    write: (o, data) => bytes.set(data, Number(o)),
    view: (o, n) => bytes.subarray(Number(o), Number(o) + n),
  };
}

Deno.test("map: a view where the range is one directly accessed region with views, null elsewhere", () => {
  const { system, as } = memory();
  using _ = as;
  const ramBytes = new Uint8Array(0x4000);
  const romBytes = new Uint8Array(0x1000).fill(0x5a);
  const ram = MemoryRegion.ram("ram", 0x4000, { backing: viewableBacking(ramBytes) });
  system.addSubregion(0, ram);
  system.addSubregion(
    0x4000,
    MemoryRegion.ram("ram2", 0x1000, { backing: viewableBacking(new Uint8Array(0x1000)) }),
  );
  system.addSubregion(0x8000, MemoryRegion.rom("rom", 0x1000, { backing: viewableBacking(romBytes) }));
  system.addSubregion(0x9000, MemoryRegion.ram("sparse", 0x1000)); // SparseRam: no views
  system.addSubregion(0xa000, MemoryRegion.io("mmio", 0x1000, { read: () => 0 }));
  system.addSubregion(0x10_0000, MemoryRegion.alias("window", ram, 0x1000, 0x1000));
  const view = as.map(0x10n, 0x100, true)!;
  view[0] = 0x77;
  assert.equal(ramBytes[0x10], 0x77, "the view is the memory");
  assert.equal(as.map(0x10_0010n, 4, false)!.byteOffset, 0x1010, "through an alias: the target's bytes");
  assert.equal(as.map(0x3ff0n, 0x20, false), null, "crosses into another region");
  assert.deepEqual([...as.map(0x8000n, 2, false)!], [0x5a, 0x5a], "ROM reads in place");
  assert.equal(as.map(0x8000n, 2, true), null, "ROM is not written in place");
  assert.equal(as.map(0x9000n, 4, false), null, "a backing without views");
  assert.equal(as.map(0xa000n, 4, false), null, "MMIO");
  assert.equal(as.map(0x20_0000n, 4, false), null, "a hole");
  assert.equal(as.map(0n, 0, false), null, "nothing to map");
  assert.throws(() => as.map(0n, -1, false), RangeError);
  assert.throws(() => as.map((1n << 64n) - 2n, 4, false), RangeError);
});

Deno.test("map: a view for writing marks its pages dirty while the region is logged", () => {
  const { system, as } = memory();
  using _ = as;
  const ram = MemoryRegion.ram("ram", 0x10000, { backing: viewableBacking(new Uint8Array(0x10000)) });
  system.addSubregion(0, ram);
  as.map(0x1000n, 0x10, true);
  assert.deepEqual(ram.takeDirtyPages(), []);
  ram.setLog(true);
  as.map(0x2000n, 0x10, false); // reads never mark
  as.map(0x3ff0n, 0x20, true);
  assert.deepEqual(ram.takeDirtyPages(), [0x3000n, 0x4000n]);
  ram.setLog(false);
});
