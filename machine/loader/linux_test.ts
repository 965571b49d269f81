import assert from "node:assert/strict";
import type { BootWrite, E820Entry } from "./boot_plan.ts";
import { identityPageTables } from "./flat.ts";
import { loadBzImage, parseBzImage } from "./linux.ts";
import { bootGdtBytes } from "./_plan.ts";
import {
  bzImageOf,
  held,
  loaderErrorLike,
  PC_E820,
  PC_RAM_SIZE,
  type TestBzImage,
  writeAt,
} from "./_test_util.ts";

const PC = { cmdline: "console=ttyS0 quiet", e820: PC_E820, ramSize: PC_RAM_SIZE };

/** The zero page a loader must produce for `image`, from boot.rst and zero-page.rst's offsets. */
function expectedZeroPage(
  image: Uint8Array,
  options: { headerEnd?: number; e820: readonly E820Entry[]; initrd?: [bigint, bigint] },
): Uint8Array {
  const page = new Uint8Array(4096);
  const view = new DataView(page.buffer);
  page.set(image.subarray(0x1f1, options.headerEnd ?? 0x26c), 0x1f1);
  view.setUint16(0x1fa, 0xffff, true); // vid_mode: normal
  page[0x210] = 0xff; // type_of_loader
  page[0x211] |= 0x81; // LOADED_HIGH | CAN_USE_HEAP
  view.setUint16(0x224, 0xfe00, true); // heap_end_ptr
  view.setUint32(0x228, 0x2_0000, true); // cmd_line_ptr
  if (options.initrd) {
    view.setUint32(0x218, Number(options.initrd[0]), true);
    view.setUint32(0x21c, Number(options.initrd[1]), true);
  }
  page[0x1e8] = options.e820.length;
  options.e820.forEach((e, i) => {
    view.setBigUint64(0x2d0 + i * 20, e.addr, true);
    view.setBigUint64(0x2d0 + i * 20 + 8, e.size, true);
    view.setUint32(0x2d0 + i * 20 + 16, e.type, true);
  });
  return page;
}

function zeroPageOf(plan: { writes: readonly BootWrite[] }): Uint8Array {
  return writeAt(plan.writes, 0x1_0000n);
}

function u32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(offset, true);
}

Deno.test("loadBzImage: a relocatable kernel at pref_address, every write byte by byte", () => {
  const image = bzImageOf({ kernelVersion: "6.1.0-test (builder@host) #1 SMP" });
  const plan = loadBzImage(image, PC);
  assert.deepEqual(held(plan.writes).map((w) => [w.addr, w.data.length]), [
    [0x500n, 32],
    [0xa000n, 4096],
    [0xb000n, 4096],
    [0xc000n, 4096],
    [0xd000n, 4096],
    [0xe000n, 4096],
    [0xf000n, 4096],
    [0x2_0000n, 20],
    [0x1_0000n, 4096],
    [0x100_0000n, 0x1000],
  ]);
  assert.deepEqual(writeAt(plan.writes, 0x500n), bootGdtBytes());
  for (const table of identityPageTables()) assert.deepEqual(writeAt(plan.writes, table.addr), table.data);
  assert.deepEqual(writeAt(plan.writes, 0x2_0000n), new TextEncoder().encode("console=ttyS0 quiet\0"));
  assert.deepEqual(writeAt(plan.writes, 0x100_0000n), image.subarray(0xa00));
  const zeroPage = zeroPageOf(plan);
  assert.deepEqual(zeroPage, expectedZeroPage(image, { e820: PC_E820 }));
  // A few fields spelled out, independently of the helper above.
  assert.equal(zeroPage[0x1f1], 4, "setup_sects copied");
  assert.equal(u32(zeroPage, 0x202), 0x5372_6448, "HdrS");
  assert.equal(u32(zeroPage, 0x228), 0x2_0000, "cmd_line_ptr");
  assert.equal(u32(zeroPage, 0x0c8), 0, "ext_cmd_line_ptr");
  assert.equal(zeroPage[0x1e8], 5, "e820_entries");
  assert.deepEqual(
    [...zeroPage.subarray(0x2d0, 0x2d0 + 40)],
    [
      ...[0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0xfc, 0x09, 0, 0, 0, 0, 0, 1, 0, 0, 0],
      ...[0x00, 0xfc, 0x09, 0, 0, 0, 0, 0, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0],
    ],
  );
  assert.ok(zeroPage.subarray(0x26c, 0x290).every((b) => b === 0), "nothing copied past the header end");
  assert.ok(zeroPage.subarray(0, 0x1e8).every((b) => b === 0), "nothing before the e820 count");
  assert.deepEqual(plan.cpu, {
    mode: "long64",
    rip: 0x100_0200n,
    rsp: 0x8000n,
    rflags: 0x2n,
    gpr: { rsi: 0x1_0000n },
    cr3: 0xa000n,
    cs: { selector: 0x18, base: 0n },
    gdt: { base: 0x500n, limit: 31 },
  });
  assert.equal(
    plan.description,
    "Linux bzImage 6.1.0-test (boot protocol 2.15): 0x1000 bytes at 0x1000000, init_size 0x400000, " +
      "64-bit entry 0x1000200; zero page at 0x10000, command line 19 bytes at 0x20000",
  );
});

Deno.test("parseBzImage reads the fields a 64-bit loader needs", () => {
  const header = parseBzImage(bzImageOf({ setupSects: 0, kernelVersion: "6.1.0-test #1" }));
  assert.deepEqual(header, {
    protocol: 0x020f,
    setupSects: 4,
    protectedModeOffset: 0xa00,
    protectedModeSize: 0x1000,
    headerEnd: 0x26c,
    loadflags: 1,
    xloadflags: 0x7f,
    relocatable: true,
    kernelAlignment: 0x20_0000n,
    prefAddress: 0x100_0000n,
    initSize: 0x40_0000n,
    cmdlineSize: 2047,
    initrdAddrMax: 0x7fff_ffffn,
    payloadOffset: 0x100,
    payloadLength: 0x200,
    kernelVersion: "6.1.0-test #1",
  });
  assert.equal(parseBzImage(bzImageOf({ setupSects: 39 })).protectedModeOffset, 0x5000);
});

Deno.test("loadBzImage: the load address is align_up(max(pref_address, 1 MiB), kernel_alignment)", () => {
  const at = (options: TestBzImage) => loadBzImage(bzImageOf(options), PC).cpu.rip - 0x200n;
  assert.equal(at({ prefAddress: 0x110_0000n }), 0x120_0000n);
  assert.equal(at({ prefAddress: 0n }), 0x20_0000n);
  assert.equal(at({ prefAddress: 0n, kernelAlignment: 0x1000 }), 0x10_0000n);
  assert.equal(at({ prefAddress: 0x200_0000n, kernelAlignment: 0x100_0000 }), 0x200_0000n);
});

Deno.test("loadBzImage: a kernel that is not relocatable loads at 1 MiB and keeps pref_address free", () => {
  const image = bzImageOf({ relocatable: 0, prefAddress: 0x100_0000n, initSize: 0x40_0000 });
  const initrd = new Uint8Array(0x10_0000).fill(0x5a);
  // initrd_addr_max just below the end of the runtime window: the initrd must go under it.
  const plan = loadBzImage(bzImageOf({ relocatable: 0, initrdAddrMax: 0x13f_ffff }), { ...PC, initrd });
  assert.equal(plan.cpu.rip, 0x10_0200n);
  assert.deepEqual(writeAt(plan.writes, 0x10_0000n), image.subarray(0xa00));
  assert.deepEqual(writeAt(plan.writes, 0xf0_0000n), initrd);
  assert.deepEqual(
    [u32(zeroPageOf(plan), 0x218), u32(zeroPageOf(plan), 0x21c)],
    [0xf0_0000, 0x10_0000],
  );
});

Deno.test("loadBzImage: the initrd goes page-aligned as high as the limits allow", () => {
  const place = (size: number, options: Partial<typeof PC> & TestBzImage = {}) => {
    const plan = loadBzImage(bzImageOf(options), { ...PC, ...options, initrd: new Uint8Array(size).fill(1) });
    const page = zeroPageOf(plan);
    const addr = BigInt(u32(page, 0x218)) | (BigInt(u32(page, 0x0c0)) << 32n);
    const length = u32(page, 0x21c);
    assert.equal(length, size);
    assert.equal(u32(page, 0x0c4), 0, "ext_ramdisk_size");
    assert.equal(writeAt(plan.writes, addr).length, size);
    return addr;
  };
  // The top of RAM (0x8000000 in the 128 MiB PC map).
  assert.equal(place(0x1800), 0x7ff_e000n);
  assert.equal(place(0x2000), 0x7ff_e000n);
  // initrd_addr_max is the last byte the initrd may use.
  assert.equal(place(0x2000, { initrdAddrMax: 0x3ff_ffff }), 0x3ff_e000n);
  assert.equal(place(0x2000, { initrdAddrMax: 0x3ff_fffe }), 0x3ff_d000n);
  // ramSize below the map's end.
  assert.equal(place(0x1000, { ramSize: 0x600_0000n }), 0x5ff_f000n);
  // The kernel's init_size window [0x1000000, 0x1400000) is skipped.
  assert.equal(place(0x2000, { initrdAddrMax: 0x13f_ffff }), 0xff_e000n);
  assert.equal(place(0x2000, { initrdAddrMax: 0x140_1fff }), 0x140_0000n);
  // Inside one RAM entry: the small entry at the top is too small, the one below is used.
  const holes: E820Entry[] = [
    { addr: 0n, size: 0x9_fc00n, type: 1 },
    { addr: 0x10_0000n, size: 0x6f0_0000n, type: 1 },
    { addr: 0x700_0000n, size: 0x1000n, type: 2 },
    { addr: 0x700_1000n, size: 0x2000n, type: 1 },
  ];
  assert.equal(place(0x4000, { e820: holes }), 0x6ff_c000n);
  assert.equal(place(0x2000, { e820: holes }), 0x700_1000n);
  // RAM above 4 GiB is not used: the top of RAM below 4 GiB is the limit.
  const big: E820Entry[] = [
    { addr: 0n, size: 0x9_fc00n, type: 1 },
    { addr: 0x10_0000n, size: 0xbff0_0000n, type: 1 },
    { addr: 0x1_0000_0000n, size: 0x4000_0000n, type: 1 },
  ];
  assert.equal(
    place(0x1000, { e820: big, ramSize: 0x1_4000_0000n, initrdAddrMax: 0xffff_ffff }),
    0xbfff_f000n,
  );
});

Deno.test("loadBzImage: an empty initrd is not placed", () => {
  const plan = loadBzImage(bzImageOf(), { ...PC, initrd: new Uint8Array(0) });
  assert.deepEqual(plan, loadBzImage(bzImageOf(), PC));
});

Deno.test("loadBzImage: command line limits", () => {
  const image = bzImageOf({ cmdlineSize: 16 });
  const plan = loadBzImage(image, { ...PC, cmdline: "a".repeat(16) });
  assert.deepEqual(writeAt(plan.writes, 0x2_0000n), new TextEncoder().encode("a".repeat(16) + "\0"));
  assert.deepEqual(
    writeAt(loadBzImage(image, { ...PC, cmdline: undefined }).writes, 0x2_0000n),
    new Uint8Array(1),
  );
  assert.throws(
    () => loadBzImage(image, { ...PC, cmdline: "a".repeat(17) }),
    loaderErrorLike(
      "BOOT_INFO_TOO_LARGE",
      /^bzImage: the command line is 17 bytes; this kernel takes at most 16 \(cmdline_size\)$/,
    ),
  );
  assert.throws(
    () => loadBzImage(bzImageOf({ cmdlineSize: 0x10000 }), { ...PC, cmdline: "a".repeat(4096) }),
    loaderErrorLike("BOOT_INFO_TOO_LARGE", /^bzImage: the command line is 4096 bytes; at most 4095 fit$/),
  );
  assert.throws(() => loadBzImage(image, { ...PC, cmdline: "a\0b" }), RangeError);
});

Deno.test("loadBzImage: the e820 table holds 128 entries", () => {
  const many: E820Entry[] = Array.from({ length: 128 }, (_, i) => ({
    addr: BigInt(i) * 0x10_0000n,
    size: 0x10_0000n,
    type: i === 0 ? 1 : i % 5 + 1,
  }));
  many[0] = { addr: 0n, size: 0x9_fc00n, type: 1 };
  many[16] = { addr: 0x100_0000n, size: 0x700_0000n, type: 1 };
  const plan = loadBzImage(bzImageOf(), { ...PC, e820: many, ramSize: 0x1_0000_0000n });
  assert.deepEqual(zeroPageOf(plan), expectedZeroPage(bzImageOf(), { e820: many }));
  assert.throws(
    () => loadBzImage(bzImageOf(), { ...PC, e820: [...many, many[0]] }),
    loaderErrorLike(
      "BOOT_INFO_TOO_LARGE",
      /^bzImage: 129 e820 entries do not fit in the zero page \(at most 128\)$/,
    ),
  );
});

Deno.test("loadBzImage: one clear error line for each refusal", () => {
  const cases: [string, Uint8Array, Partial<typeof PC> & { initrd?: Uint8Array }, string, RegExp][] = [
    [
      "a short file",
      new Uint8Array(0x100),
      {},
      "TRUNCATED",
      /^bzImage: the file is 256 bytes, too short for a setup header \(0x208\)$/,
    ],
    [
      "the header cut",
      bzImageOf().subarray(0, 0x240),
      {},
      "TRUNCATED",
      /^bzImage: the setup header ends at 0x26c; the file is 0x240 bytes$/,
    ],
    [
      "the protected-mode kernel cut",
      bzImageOf({ syssize: 0x101 }),
      {},
      "TRUNCATED",
      /^bzImage: the protected-mode kernel \[0xa00, 0x1a10\) \(setup_sects 4, syssize\) passes the end of the file \(0x1a00\)$/,
    ],
    [
      "no protected-mode kernel",
      bzImageOf({ kernel: new Uint8Array(0), syssize: 0 }),
      {},
      "TRUNCATED",
      /^bzImage: the protected-mode kernel \[0xa00, 0xa00\) \(setup_sects 4, syssize\) passes the end of the file \(0xa00\)$/,
    ],
    [
      "no HdrS",
      bzImageOf({ magic: 0x1234_5678 }),
      {},
      "BAD_MAGIC",
      /^bzImage: no "HdrS" signature at 0x202 \(found 0x12345678\): not a Linux kernel image$/,
    ],
    [
      "a bad boot_flag",
      bzImageOf({ bootFlag: 0x55aa }),
      {},
      "BAD_MAGIC",
      /^bzImage: boot_flag at 0x1fe is 0x55aa, not 0xaa55$/,
    ],
    [
      "protocol 2.11",
      bzImageOf({ version: 0x020b }),
      {},
      "PROTOCOL_TOO_OLD",
      /^bzImage: boot protocol 2\.11 is too old; the 64-bit entry needs 2\.12 or later$/,
    ],
    [
      "a 32-bit kernel",
      bzImageOf({ xloadflags: 0x2 }),
      {},
      "NO_64BIT_ENTRY",
      /^bzImage: no 64-bit entry point \(xloadflags 0x2 lacks XLF_KERNEL_64\): a 32-bit kernel$/,
    ],
    [
      "kernel_alignment 3 MiB",
      bzImageOf({ kernelAlignment: 0x30_0000 }),
      {},
      "BAD_HEADER",
      /^bzImage: kernel_alignment 0x300000 of a relocatable kernel is not a power of two$/,
    ],
    [
      "init_size beyond RAM",
      bzImageOf(),
      { ramSize: 0x120_0000n },
      "DOES_NOT_FIT",
      /^bzImage: the kernel's memory \(init_size 0x400000\) \[0x1000000, 0x1400000\) ends beyond the guest's 0x1200000 bytes of RAM$/,
    ],
    [
      "init_size across an e820 hole",
      bzImageOf(),
      {
        e820: [
          { addr: 0n, size: 0x9_fc00n, type: 1 },
          { addr: 0x10_0000n, size: 0x110_0000n, type: 1 },
          { addr: 0x120_0000n, size: 0x10_0000n, type: 2 },
          { addr: 0x130_0000n, size: 0x6d0_0000n, type: 1 },
        ],
      },
      "DOES_NOT_FIT",
      /^bzImage: the kernel's memory \(init_size 0x400000\) \[0x1000000, 0x1400000\) is not inside one RAM entry of the e820 map$/,
    ],
    [
      "a kernel above 4 GiB",
      bzImageOf({ prefAddress: 0xffe0_0000n }),
      { ramSize: 0x2_0000_0000n },
      "DOES_NOT_FIT",
      /^bzImage: the kernel's memory \(init_size 0x400000\) \[0xffe00000, 0x100200000\) passes 0x100000000 \(the boot identity map\)$/,
    ],
    [
      "a kernel over the zero page",
      bzImageOf({ relocatable: 0, prefAddress: 0x1_0000n, initSize: 0x1000 }),
      {},
      "OVERLAP",
      /^bzImage: the kernel's memory at pref_address \(init_size 0x1000\) \[0x10000, 0x11000\) overlaps the zero page \[0x10000, 0x11000\)$/,
    ],
    [
      "an initrd larger than RAM",
      bzImageOf(),
      { initrd: new Uint8Array(0x700_0000) },
      "DOES_NOT_FIT",
      /^bzImage: the initrd \(0x7000000 bytes\) does not fit in RAM between 0x100000 and 0x8000000 outside the kernel \[0x1000000, 0x1400000\)$/,
    ],
    [
      "an initrd that would have to go below 1 MiB",
      bzImageOf({ initrdAddrMax: 0x10_ffff }),
      { initrd: new Uint8Array(0x2_0000) },
      "DOES_NOT_FIT",
      /^bzImage: the initrd \(0x20000 bytes\) does not fit in RAM between 0x100000 and 0x110000 outside the kernel \[0x1000000, 0x1400000\)$/,
    ],
  ];
  for (const [name, image, options, code, message] of cases) {
    assert.throws(() => loadBzImage(image, { ...PC, ...options }), loaderErrorLike(code, message), name);
  }
});

Deno.test("loadBzImage: acpi_rsdp_addr (zero page 0x070) for a 2.14+ kernel, nothing for an older one", () => {
  const rsdp = (version: number, rsdpAddress?: bigint) => {
    const page = zeroPageOf(loadBzImage(bzImageOf({ version }), { ...PC, rsdpAddress }));
    return new DataView(page.buffer, page.byteOffset).getBigUint64(0x070, true);
  };
  assert.equal(rsdp(0x020f, 0x7ff_f000n), 0x7ff_f000n);
  assert.equal(rsdp(0x020e, 0x7ff_f000n), 0x7ff_f000n);
  assert.equal(rsdp(0x020d, 0x7ff_f000n), 0n, "a 2.13 kernel has no such field: it scans for the RSDP");
  assert.equal(rsdp(0x020f), 0n);
  assert.throws(() => loadBzImage(bzImageOf(), { ...PC, rsdpAddress: -1n }), RangeError);
});
