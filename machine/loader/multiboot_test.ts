import assert from "node:assert/strict";
import { EXIT_STATUS, HELLO64 } from "../guests/mod.ts";
import { LoaderError } from "./loader_error.ts";
import { findMultibootHeader, loadMultiboot, type MultibootOptions, parseMultiboot } from "./multiboot.ts";
import {
  elf32,
  elf64,
  held,
  imageOf,
  multibootHeader,
  PC_E820,
  PC_RAM_SIZE,
  u32s,
  writeAt,
} from "./_test_util.ts";

const PC: MultibootOptions = { cmdline: "", e820: PC_E820, ramSize: PC_RAM_SIZE };

function loaderError(code: string, message: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof LoaderError, `expected a LoaderError, got ${error}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  };
}

/** An a.out-kludge image: header at `at`, loaded at `loadAddr` from file offset 0, `size` bytes. */
function aout(
  fields: Partial<
    { headerAddr: number; loadAddr: number; loadEndAddr: number; bssEndAddr: number; entryAddr: number }
  >,
  options: { at?: number; size?: number; flags?: number } = {},
): Uint8Array {
  const at = options.at ?? 0;
  const size = options.size ?? 0x200;
  const loadAddr = fields.loadAddr ?? 0x10_0000;
  const header = multibootHeader(options.flags ?? 0x1_0000, {
    headerAddr: fields.headerAddr ?? loadAddr + at,
    loadAddr,
    loadEndAddr: fields.loadEndAddr ?? loadAddr + size,
    bssEndAddr: fields.bssEndAddr ?? 0,
    entryAddr: fields.entryAddr ?? loadAddr + at + 32,
  });
  return imageOf(size, [[at, header]]);
}

Deno.test("the committed guests parse as a.out-kludge images at 1 MiB", () => {
  const hello = parseMultiboot(HELLO64);
  assert.deepEqual(hello.header, { offset: 0, flags: 0x1_0000 });
  assert.equal(hello.kind, "aout-kludge");
  assert.equal(hello.segments.length, 1);
  assert.equal(hello.segments[0].addr, 0x10_0000n);
  assert.deepEqual(
    [hello.segments[0].offset, hello.segments[0].filesz],
    [0, HELLO64.length],
    "load_end_addr is the end of the file",
  );
  assert.equal(hello.segments[0].bss, 0x3000n, "two stacks");
  assert.equal(hello.entry, 0x10_0020n, "entry right after the 32-byte header");

  const exit = parseMultiboot(EXIT_STATUS);
  assert.deepEqual([exit.segments[0].offset, exit.segments[0].filesz], [0, EXIT_STATUS.length]);
  assert.equal(exit.segments[0].bss, 0n);
  assert.equal(exit.entry, 0x10_0020n);
});

Deno.test("loading hello64: kernel, bss, GDT, boot information; EAX/EBX and 32-bit protected mode", () => {
  const plan = loadMultiboot(HELLO64, { ...PC, cmdline: "hello64 quiet" });
  assert.deepEqual(
    held(plan.writes).map((w) => [w.addr, w.data.length]),
    [[0x500n, 32], [0x9000n, 120], [0x9500n, 88], [0x9580n, 7], [0x9600n, 14], [0x10_0000n, 0x5000], [
      0x10_5000n,
      0x3000,
    ]],
  );
  assert.deepEqual(writeAt(plan.writes, 0x10_0000n), HELLO64);
  assert.equal(writeAt(plan.writes, 0x10_0000n).buffer, HELLO64.buffer, "a view of the image, not a copy");
  assert.ok(writeAt(plan.writes, 0x10_5000n).every((b) => b === 0), "bss zeroed");
  assert.deepEqual(plan.cpu, {
    mode: "protected32",
    rip: 0x10_0020n,
    rflags: 2n,
    gpr: { rax: 0x2bad_b002n, rbx: 0x9500n },
    cs: { selector: 0x08, base: 0n },
    gdt: { base: 0x500n, limit: 31 },
  });
  assert.equal(plan.cpu.rsp, undefined, "ESP is undefined at Multiboot entry");
  assert.equal(
    plan.description,
    "Multiboot kernel (a.out kludge): [0x100000, 0x108000), entry 0x100020, information at 0x9500",
  );
});

Deno.test("the Multiboot information structure, memory map, name and command line, byte by byte", () => {
  const plan = loadMultiboot(EXIT_STATUS, { ...PC, cmdline: "exit_status a=1" });
  assert.deepEqual(
    writeAt(plan.writes, 0x9500n),
    u32s(
      0x24f, // flags: mem, boot device, cmdline, mods, mmap, loader name (QEMU's set)
      639, // mem_lower: [0, 0x9fc00)
      0x1_fc00, // mem_upper: [1 MiB, 128 MiB) in KiB
      0x8000_ffff, // boot_device
      0x9600, // cmdline
      0, // mods_count
      0x9558, // mods_addr: the empty list after the structure
      0,
      0,
      0,
      0, // syms
      120, // mmap_length: 5 entries of 24 bytes
      0x9000, // mmap_addr
      0,
      0, // drives
      0, // config_table
      0x9580, // boot_loader_name
      0, // apm_table
      0,
      0,
      0,
      0, // vbe
    ),
  );
  assert.deepEqual(
    writeAt(plan.writes, 0x9000n),
    u32s(
      ...[20, 0, 0, 0x9_fc00, 0, 1],
      ...[20, 0x9_fc00, 0, 0x400, 0, 2],
      ...[20, 0xf_0000, 0, 0x1_0000, 0, 2],
      ...[20, 0x10_0000, 0, 0x7f0_0000, 0, 1],
      ...[20, 0xfffc_0000, 0, 0x4_0000, 0, 2],
    ),
  );
  assert.deepEqual(writeAt(plan.writes, 0x9580n), new TextEncoder().encode("kvm-ts\0"));
  assert.deepEqual(writeAt(plan.writes, 0x9600n), new TextEncoder().encode("exit_status a=1\0"));
});

Deno.test("mem_lower and mem_upper follow QEMU's option ROM: unordered maps, holes, nothing above 4 GiB", () => {
  const info = (e820: MultibootOptions["e820"], ramSize = 0x2_0000_0000n) => {
    const view = new DataView(writeAt(loadMultiboot(EXIT_STATUS, { e820, ramSize }).writes, 0x9500n).buffer);
    return [view.getUint32(4, true), view.getUint32(8, true)];
  };
  assert.deepEqual(
    info([
      { addr: 0x20_0000n, size: 0x10_0000n, type: 1 },
      { addr: 0n, size: 0xa_0000n, type: 1 },
      { addr: 0x10_0000n, size: 0x10_0000n, type: 1 },
      { addr: 0x40_0000n, size: 0x10_0000n, type: 1 }, // after a hole: not counted
    ]),
    [640, 0x800],
  );
  assert.deepEqual(
    info([
      { addr: 0n, size: 0x10_0000_0000n, type: 1 }, // one entry from 0 past 4 GiB
    ]),
    [640, (0x1_0000_0000 - 0x10_0000) / 1024],
  );
  assert.deepEqual(
    info([
      { addr: 0x400n, size: 0x9_f800n, type: 1 }, // not from 0: no lower memory
      { addr: 0x10_0000n, size: 0x10_0000n, type: 1 },
      { addr: 0x1_0000_0000n, size: 0x1000_0000n, type: 1 }, // above 4 GiB: not upper memory
    ]),
    [0, 0x400],
  );
});

Deno.test("an ELF32 kernel: PT_LOAD segments at p_paddr, bss zeroed, higher-half entry translated", () => {
  const text = imageOf(0x80, [[0, multibootHeader(0x3)], [0x40, new Uint8Array([0xf4])]]);
  const data = new Uint8Array([1, 2, 3, 4]);
  const image = elf32({
    entry: 0xc010_0040,
    segments: [
      { vaddr: 0xc010_0000, paddr: 0x10_0000, data: text, flags: 5 },
      { type: 4, vaddr: 0, paddr: 0, data: new Uint8Array(8) }, // PT_NOTE: skipped
      { vaddr: 0xc020_0000, paddr: 0x20_0000, data, memsz: 0x1000, flags: 6 },
      { vaddr: 0xc030_0000, paddr: 0x30_0000, data: new Uint8Array(0), memsz: 0 }, // empty: skipped
    ],
  });
  const kernel = parseMultiboot(image);
  assert.equal(kernel.kind, "elf32");
  assert.deepEqual(kernel.segments.map((s) => [s.addr, s.filesz, s.bss]), [[0x10_0000n, 0x80, 0n], [
    0x20_0000n,
    4,
    0xffcn,
  ]]);
  assert.equal(kernel.entry, 0x10_0040n, "e_entry - p_vaddr + p_paddr of the executable segment");

  const plan = loadMultiboot(image, PC);
  assert.deepEqual(writeAt(plan.writes, 0x10_0000n), text);
  assert.deepEqual(writeAt(plan.writes, 0x20_0000n), data);
  assert.deepEqual(writeAt(plan.writes, 0x20_0004n), new Uint8Array(0xffc));
  assert.equal(plan.cpu.rip, 0x10_0040n);
  assert.match(
    plan.description,
    /^Multiboot kernel \(ELF32, 2 segment\(s\)\): \[0x100000, 0x201000\), entry 0x100040/,
  );
});

Deno.test("an ELF32 entry is not translated outside executable segments or when p_vaddr = p_paddr", () => {
  const header = multibootHeader(0);
  const same = elf32({ entry: 0x10_0010, segments: [{ vaddr: 0x10_0000, paddr: 0x10_0000, data: header }] });
  assert.equal(parseMultiboot(same).entry, 0x10_0010n);
  const notExec = elf32({
    entry: 0xc010_0000,
    segments: [{ vaddr: 0xc010_0000, paddr: 0x10_0000, data: header, flags: 4 }],
  });
  assert.equal(parseMultiboot(notExec).entry, 0xc010_0000n);
});

Deno.test("64-bit ELF images: refused without the a.out kludge (as QEMU), loaded with it", () => {
  assert.throws(
    () => loadMultiboot(elf64(62, multibootHeader(0)), PC),
    loaderError("ELF64", /cannot load an x86-64 ELF image without the a\.out kludge.*give a 32bit one/),
  );
  assert.throws(
    () => loadMultiboot(elf64(3, multibootHeader(0)), PC),
    loaderError("ELF64", /64-bit ELF images are not loadable: give a 32-bit \(ELF32\) one/),
  );
  // With the kludge the ELF container is just bytes, as in QEMU.
  const header = multibootHeader(0x1_0000, {
    headerAddr: 0x10_0040,
    loadAddr: 0x10_0000,
    loadEndAddr: 0,
    bssEndAddr: 0,
    entryAddr: 0x10_0060,
  });
  const image = elf64(62, header);
  const plan = loadMultiboot(image, PC);
  assert.deepEqual(writeAt(plan.writes, 0x10_0000n), image);
  assert.equal(plan.cpu.rip, 0x10_0060n);
});

Deno.test("the header is found 4-byte aligned within 8192 bytes, the first valid one wins", () => {
  const late = imageOf(0x3000, [[0x1ff0, multibootHeader(0)]]);
  assert.deepEqual(findMultibootHeader(late), { offset: 0x1ff0, flags: 0 });
  assert.equal(findMultibootHeader(imageOf(0x3000, [[0x2000, multibootHeader(0)]])), undefined, "past 8192");
  assert.equal(findMultibootHeader(imageOf(0x100, [[0x12, multibootHeader(0)]])), undefined, "unaligned");
  const two = imageOf(0x100, [[0x8, multibootHeader(0, undefined, 1)], [0x20, multibootHeader(0x2)]]);
  assert.deepEqual(findMultibootHeader(two), { offset: 0x20, flags: 0x2 }, "a bad checksum is skipped");
});

Deno.test("a.out kludge: a header after a file prefix and load_end_addr 0 (load to the end of the file)", () => {
  // The header sits at file offset 0x40 but at load_addr + 0x10: the first 0x30 file bytes are not loaded.
  const image = imageOf(0x100, [[
    0x40,
    multibootHeader(0x1_0000, {
      headerAddr: 0x20_0010,
      loadAddr: 0x20_0000,
      loadEndAddr: 0,
      bssEndAddr: 0x20_1000,
      entryAddr: 0x20_0030,
    }),
  ], [0x30, new Uint8Array([0xaa])]]);
  const kernel = parseMultiboot(image);
  assert.equal(kernel.segments[0].addr, 0x20_0000n);
  assert.deepEqual([kernel.segments[0].offset, kernel.segments[0].filesz], [0x30, image.length - 0x30]);
  assert.equal(image[kernel.segments[0].offset], 0xaa);
  assert.equal(kernel.segments[0].bss, 0x1000n - 0xd0n);
  assert.equal(kernel.entry, 0x20_0030n);
});

Deno.test("the video-mode flag is accepted and ignored, as QEMU; other required flags are refused", () => {
  const plan = loadMultiboot(aout({}, { flags: 0x1_0004 }), PC);
  assert.match(plan.description, /; video mode request ignored \(as QEMU\)$/);
  assert.doesNotThrow(() => loadMultiboot(aout({}, { flags: 0x1_0003 }), PC), "page align and memory info");
  assert.throws(
    () => loadMultiboot(aout({}, { flags: 0x1_0008 }), PC),
    loaderError(
      "UNSUPPORTED_FLAGS",
      /^multiboot: the header requires features this loader does not know \(flags 0x8 of 0x10008\)$/,
    ),
  );
  assert.doesNotThrow(
    () => loadMultiboot(aout({}, { flags: 0x8001_0000 }), PC),
    "optional bits 17-31 are fine",
  );
});

Deno.test("malformed Multiboot headers: each error code and message", () => {
  const cases: [string, Uint8Array, string, RegExp][] = [
    [
      "no header",
      new Uint8Array(0x100),
      "NO_MULTIBOOT_HEADER",
      /^multiboot: no header \(magic 0x1badb002\) in the first 8192 bytes$/,
    ],
    [
      "bad checksum",
      imageOf(0x40, [[0x8, multibootHeader(0x1_0000, undefined, 1)]]),
      "BAD_CHECKSUM",
      /^multiboot: the header at offset 0x8 has a bad checksum \(magic \+ flags \+ checksum = 0x1, not 0\)$/,
    ],
    [
      "a.out header cut short by the end of the file",
      multibootHeader(0x1_0000),
      "TRUNCATED",
      /^multiboot: the a\.out-kludge header at offset 0x0 needs 32 bytes; the file ends at 0xc$/,
    ],
    [
      "a.out header across the 8192-byte limit",
      imageOf(0x2100, [[0x1ff0, multibootHeader(0x1_0000)]]),
      "NO_MULTIBOOT_HEADER",
      /^multiboot: the header at offset 0x1ff0 does not end within the first 8192 bytes$/,
    ],
    [
      "header_addr below load_addr",
      aout({ headerAddr: 0xf_f000 }),
      "BAD_ADDRESS",
      /^multiboot: header_addr 0xff000 is below load_addr 0x100000$/,
    ],
    [
      "header_addr too far above load_addr",
      aout({ headerAddr: 0x10_0100 }, { at: 0x40 }),
      "BAD_ADDRESS",
      /^multiboot: header_addr 0x100100 - load_addr 0x100000 is more than the header's file offset 0x40$/,
    ],
    [
      "load_end_addr below load_addr",
      aout({ loadEndAddr: 0xf_0000 }),
      "BAD_ADDRESS",
      /^multiboot: load_end_addr 0xf0000 is below load_addr 0x100000$/,
    ],
    [
      "bss_end_addr below the loaded end",
      aout({ bssEndAddr: 0x10_0100 }),
      "BAD_ADDRESS",
      /^multiboot: bss_end_addr 0x100100 is below load_end 0x100200$/,
    ],
    [
      "load_end_addr past the end of the file",
      aout({ loadEndAddr: 0x10_1000 }),
      "TRUNCATED",
      /^multiboot: load_end_addr 0x101000 asks for 0x1000 bytes from file offset 0x0; the file has 0x200$/,
    ],
    [
      "past the 32-bit address space",
      aout({ loadAddr: 0xffff_ff00, headerAddr: 0xffff_ff00, loadEndAddr: 0 }),
      "DOES_NOT_FIT",
      /^multiboot: 0x200 bytes at load_addr 0xffffff00 pass the 32-bit address space$/,
    ],
    [
      "beyond RAM",
      aout({ loadAddr: 0x7ff_ff00 }),
      "DOES_NOT_FIT",
      /^multiboot: the kernel \[0x7ffff00, 0x8000100\) ends beyond the guest's 0x8000000 bytes of RAM$/,
    ],
    [
      "over the boot information",
      aout({ loadAddr: 0x9400 }),
      "OVERLAP",
      /^multiboot: the kernel \[0x9400, 0x9600\) overlaps the Multiboot information structure \[0x9500, 0x9558\)$/,
    ],
    [
      "its bss over the boot GDT",
      aout({ loadAddr: 0x100, bssEndAddr: 0x600 }),
      "OVERLAP",
      /^multiboot: the bss of the kernel \[0x300, 0x600\) overlaps the boot GDT \[0x500, 0x520\)$/,
    ],
  ];
  for (const [name, image, code, message] of cases) {
    assert.throws(() => loadMultiboot(image, PC), loaderError(code, message), name);
  }
});

Deno.test("malformed ELF32 kernels: each error code and message", () => {
  const header = multibootHeader(0);
  const good = { entry: 0x10_0000, segments: [{ vaddr: 0x10_0000, paddr: 0x10_0000, data: header }] };
  const withField = (image: Uint8Array, offset: number, value: number, size = 4) => {
    const copy = image.slice();
    const view = new DataView(copy.buffer);
    if (size === 4) view.setUint32(offset, value, true);
    else view.setUint16(offset, value, true);
    return copy;
  };
  const base = elf32(good);
  const phdr = 52;
  const cases: [string, Uint8Array, string, RegExp][] = [
    [
      "not an ELF file",
      imageOf(0x40, [[0x10, header]]),
      "BAD_ELF",
      /^multiboot: the header does not set the a\.out kludge \(flags bit 16\) and the image is not an ELF file$/,
    ],
    [
      "ELF header cut short",
      imageOf(48, [[0, base.subarray(0, 16)], [0x20, header]]),
      "TRUNCATED",
      /^multiboot: the ELF header needs 52 bytes; the file has 48$/,
    ],
    [
      "big-endian",
      elf32({ ...good, byteOrder: 2 }),
      "BAD_ELF",
      /^multiboot: ELF data encoding 2 is not little-endian \(1\)$/,
    ],
    ["unknown class", elf32({ ...good, elfClass: 3 }), "BAD_ELF", /^multiboot: unknown ELF class 3$/],
    ["ARM", elf32({ ...good, machine: 40 }), "BAD_ELF", /^multiboot: ELF machine 40 is not i386 \(3\)$/],
    [
      "program headers past the end",
      withField(base, 44, 200, 2),
      "TRUNCATED",
      /^multiboot: the ELF program headers \[0x34, 0x1934\) pass the end of the file \(0x6c\)$/,
    ],
    [
      "small program headers",
      withField(base, 42, 16, 2),
      "BAD_ELF",
      /^multiboot: ELF program header size 16 is below 32$/,
    ],
    [
      "segment data past the end",
      withField(withField(base, phdr + 16, 0x100), phdr + 20, 0x100),
      "TRUNCATED",
      /^multiboot: ELF segment 0 needs file bytes \[0x60, 0x160\); the file has 0x6c$/,
    ],
    [
      "filesz > memsz",
      withField(base, phdr + 20, 4),
      "BAD_ELF",
      /^multiboot: ELF segment 0 has p_filesz 0xc > p_memsz 0x4$/,
    ],
    [
      "no loadable segment",
      withField(base, phdr, 4),
      "BAD_ELF",
      /^multiboot: the ELF file has no loadable segment$/,
    ],
    [
      "a segment past 4 GiB",
      withField(withField(base, phdr + 12, 0xffff_fff8), phdr + 20, 0x10),
      "DOES_NOT_FIT",
      /^multiboot: ELF segment 0 \[0xfffffff8, 0x100000008\) passes 4 GiB$/,
    ],
  ];
  for (const [name, image, code, message] of cases) {
    assert.throws(() => loadMultiboot(image, PC), loaderError(code, message), name);
  }
});

Deno.test("boot information limits: command line and memory map size, NUL, bad e820 entries", () => {
  assert.doesNotThrow(() => loadMultiboot(EXIT_STATUS, { ...PC, cmdline: "x".repeat(0x9ff) }));
  assert.throws(
    () => loadMultiboot(EXIT_STATUS, { ...PC, cmdline: "x".repeat(0xa00) }),
    loaderError("BOOT_INFO_TOO_LARGE", /^multiboot: the command line is 2560 bytes; at most 2559 fit$/),
  );
  const many = Array.from({ length: 54 }, (_, i) => ({ addr: BigInt(i) << 32n, size: 0x1000n, type: 2 }));
  assert.throws(
    () => loadMultiboot(EXIT_STATUS, { ...PC, e820: [...PC_E820, ...many] }),
    loaderError(
      "BOOT_INFO_TOO_LARGE",
      /^multiboot: 59 e820 entries do not fit in the memory map area \(at most 53\)$/,
    ),
  );
  assert.throws(() => loadMultiboot(EXIT_STATUS, { ...PC, cmdline: "a\0b" }), RangeError);
  assert.throws(
    () => loadMultiboot(EXIT_STATUS, { ...PC, e820: [{ addr: -1n, size: 1n, type: 1 }] }),
    RangeError,
  );
  assert.throws(
    () => loadMultiboot(EXIT_STATUS, { ...PC, e820: [{ addr: 0n, size: 1n, type: 1.5 }] }),
    RangeError,
  );
  assert.throws(() => loadMultiboot(EXIT_STATUS, { ...PC, ramSize: -1 }), RangeError);
});

Deno.test("without an e820 map only the RAM size bounds the kernel", () => {
  const plan = loadMultiboot(EXIT_STATUS, { e820: [], ramSize: 0x20_0000 });
  const view = new DataView(writeAt(plan.writes, 0x9500n).buffer);
  assert.deepEqual([view.getUint32(4, true), view.getUint32(8, true), view.getUint32(44, true)], [0, 0, 0]);
  assert.equal(writeAt(plan.writes, 0x9000n).length, 0, "an empty memory map");
  assert.throws(
    () => loadMultiboot(EXIT_STATUS, { e820: [], ramSize: 0x10_0000 }),
    loaderError("DOES_NOT_FIT", /RAM/),
  );
});

/** Assembles `source` with GNU as and links it with a stock ld (`ldArgs` added); the ELF file's bytes. */
async function linkElf(source: string, asArgs: string[], ldArgs: string[]): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir({ prefix: "multiboot-elf-" });
  try {
    await Deno.writeTextFile(`${dir}/kernel.s`, source);
    for (
      const [tool, args] of [
        ["as", [...asArgs, "-o", `${dir}/kernel.o`, `${dir}/kernel.s`]],
        ["ld", [...ldArgs, "-o", `${dir}/kernel.elf`, `${dir}/kernel.o`]],
      ] as const
    ) {
      const out = await new Deno.Command(tool, { args: [...args], stdout: "piped", stderr: "piped" })
        .output();
      assert.ok(out.success, `${tool}: ${new TextDecoder().decode(out.stderr)}`);
    }
    return await Deno.readFile(`${dir}/kernel.elf`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A Multiboot kernel as users write it: the header first in .text, some rodata and bss. */
const USER_KERNEL = `
  .section .text
  .globl _start
  .align 4
  .long 0x1badb002, 0, -0x1badb002
_start:
  mov $0x501, %dx
  mov $3, %al
  out %al, %dx
1: hlt
  jmp 1b
  .section .rodata
  .asciz "hello"
  .section .bss
  .lcomm buffer, 4096
`;

Deno.test("an ELF linked by a stock ld at 1 MiB loads its header segment in the BIOS area below it, as QEMU", async () => {
  // ld's default layout puts a read-only segment for the ELF and program headers one page below
  // .text: at 0xff000, inside the e820 map's reserved BIOS area. QEMU 7.2 boots it (its ROM blobs
  // go wherever guest memory exists); the PC has memory at every address below its RAM size.
  const image = await linkElf(USER_KERNEL, ["--32"], ["-m", "elf_i386", "-Ttext", "0x100000"]);
  const kernel = parseMultiboot(image);
  assert.equal(kernel.kind, "elf32");
  assert.equal(kernel.segments[0].addr, 0xf_f000n, "the headers' segment, below .text");
  const plan = loadMultiboot(image, PC);
  assert.deepEqual(writeAt(plan.writes, 0xf_f000n), image.subarray(0, kernel.segments[0].filesz));
  assert.deepEqual(writeAt(plan.writes, 0x10_0000n).subarray(0, 4), u32s(0x1bad_b002));
  assert.equal(plan.cpu.rip, 0x10_000cn, "_start, after the 12-byte header");
  // The same for an a.out-kludge kernel in the legacy video window, RAM on this board and QEMU's.
  assert.deepEqual(writeAt(loadMultiboot(aout({ loadAddr: 0xa_0000 }), PC).writes, 0xa_0000n).length, 0x200);
  // Where the PC has no memory, it is still refused in one line.
  const high = await linkElf(USER_KERNEL, ["--32"], ["-m", "elf_i386", "-Ttext", "0x7fff000"]);
  assert.throws(
    () => loadMultiboot(high, PC),
    loaderError(
      "DOES_NOT_FIT",
      /^multiboot: ELF segment \d .* ends beyond the guest's 0x8000000 bytes of RAM$/,
    ),
  );
  // An x86-64 ELF from the same source is refused, as QEMU refuses it.
  const wide = await linkElf(USER_KERNEL, ["--64"], ["-m", "elf_x86_64", "-Ttext", "0x100000"]);
  assert.throws(() => loadMultiboot(wide, PC), loaderError("ELF64", /^multiboot: cannot load an x86-64 ELF/));
});
