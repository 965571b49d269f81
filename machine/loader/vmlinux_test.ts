import assert from "node:assert/strict";
import { identityPageTables } from "./flat.ts";
import { loadVmlinux, parseVmlinux } from "./vmlinux.ts";
import { bootGdtBytes } from "./_plan.ts";
import {
  elf64Of,
  elfNotes,
  held,
  loaderErrorLike,
  PC_E820,
  PC_RAM_SIZE,
  type TestSegment64,
  writeAt,
} from "./_test_util.ts";

const PC = { cmdline: "console=ttyS0", e820: PC_E820, ramSize: PC_RAM_SIZE };
/** Linux's kernel map: virtual = physical + __START_KERNEL_map. */
const KERNEL_MAP = 0xffff_ffff_8000_0000n;
const NOTES = elfNotes([
  { owner: "Xen", type: 18, desc: new Uint8Array([0x50, 0x08, 0, 1, 0, 0, 0, 0]) },
  { owner: "Linux", type: 0x100, desc: new TextEncoder().encode("6.1.0-test\0") },
]);

const text = Uint8Array.from({ length: 0x3000 }, (_, i) => (i * 13 + 5) & 0xff);
const data = Uint8Array.from({ length: 0x800 }, (_, i) => (i * 3 + 1) & 0xff);
const percpu = new Uint8Array(0x100).fill(0x77);

/** A vmlinux shaped like Linux's: text, data with bss, a percpu segment at virtual 0, notes. */
function vmlinux(options: { entry?: bigint; segments?: TestSegment64[]; machine?: number } = {}): Uint8Array {
  return elf64Of({
    entry: options.entry ?? 0x100_0000n,
    machine: options.machine,
    segments: options.segments ?? [
      { vaddr: KERNEL_MAP + 0x100_0000n, paddr: 0x100_0000n, data: text },
      { vaddr: KERNEL_MAP + 0x120_0000n, paddr: 0x120_0000n, data, memsz: 0x2000n, flags: 6 },
      { vaddr: 0n, paddr: 0x140_0000n, data: percpu, flags: 6 },
      { type: 4, vaddr: KERNEL_MAP + 0x100_2000n, paddr: 0x100_2000n, data: NOTES, flags: 4 },
    ],
  });
}

function u32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(offset, true);
}

Deno.test("loadVmlinux: segments at p_paddr, the synthesised zero page byte by byte, the 64-bit entry", () => {
  const plan = loadVmlinux(vmlinux(), PC);
  assert.deepEqual(held(plan.writes).map((w) => [w.addr, w.data.length]), [
    [0x500n, 32],
    [0xa000n, 4096],
    [0xb000n, 4096],
    [0xc000n, 4096],
    [0xd000n, 4096],
    [0xe000n, 4096],
    [0xf000n, 4096],
    [0x2_0000n, 14],
    [0x1_0000n, 4096],
    [0x100_0000n, 0x3000],
    [0x120_0000n, 0x800],
    [0x120_0800n, 0x1800],
    [0x140_0000n, 0x100],
  ]);
  assert.deepEqual(writeAt(plan.writes, 0x500n), bootGdtBytes());
  for (const table of identityPageTables()) assert.deepEqual(writeAt(plan.writes, table.addr), table.data);
  assert.deepEqual(writeAt(plan.writes, 0x2_0000n), new TextEncoder().encode("console=ttyS0\0"));
  assert.deepEqual(writeAt(plan.writes, 0x100_0000n), text);
  assert.deepEqual(writeAt(plan.writes, 0x120_0000n), data);
  assert.deepEqual(writeAt(plan.writes, 0x120_0800n), new Uint8Array(0x1800), "bss zeroed");
  assert.deepEqual(writeAt(plan.writes, 0x140_0000n), percpu);

  const expected = new Uint8Array(4096);
  const view = new DataView(expected.buffer);
  view.setUint16(0x1fa, 0xffff, true); // vid_mode
  view.setUint16(0x1fe, 0xaa55, true); // boot_flag
  view.setUint32(0x202, 0x5372_6448, true); // "HdrS"
  view.setUint16(0x206, 0x020f, true); // version 2.15
  expected[0x210] = 0xff; // type_of_loader
  expected[0x211] = 0x81; // LOADED_HIGH | CAN_USE_HEAP
  view.setUint16(0x224, 0xfe00, true); // heap_end_ptr
  view.setUint32(0x228, 0x2_0000, true); // cmd_line_ptr
  view.setUint32(0x22c, 0x7fff_ffff, true); // initrd_addr_max
  view.setUint32(0x230, 0x100_0000, true); // kernel_alignment
  view.setUint32(0x238, 2047, true); // cmdline_size
  view.setUint32(0x260, 0x40_0100, true); // init_size: [0x1000000, 0x1400100)
  expected[0x1e8] = PC_E820.length;
  PC_E820.forEach((e, i) => {
    view.setBigUint64(0x2d0 + i * 20, e.addr, true);
    view.setBigUint64(0x2d0 + i * 20 + 8, e.size, true);
    view.setUint32(0x2d0 + i * 20 + 16, e.type, true);
  });
  assert.deepEqual(writeAt(plan.writes, 0x1_0000n), expected);

  assert.deepEqual(plan.cpu, {
    mode: "long64",
    rip: 0x100_0000n,
    rsp: 0x8000n,
    rflags: 0x2n,
    gpr: { rsi: 0x1_0000n },
    cr3: 0xa000n,
    cs: { selector: 0x18, base: 0n },
    gdt: { base: 0x500n, limit: 31 },
  });
  assert.equal(
    plan.description,
    "Linux vmlinux (ELF64, 3 segment(s)): [0x1000000, 0x1400100), entry 0x1000000; zero page at 0x10000, " +
      "command line 13 bytes at 0x20000",
  );
});

Deno.test("parseVmlinux: a physical e_entry is kept, a virtual one translated through its segment", () => {
  assert.equal(parseVmlinux(vmlinux()).entry, 0x100_0000n);
  assert.equal(parseVmlinux(vmlinux({ entry: KERNEL_MAP + 0x100_0100n })).entry, 0x100_0100n);
  assert.equal(parseVmlinux(vmlinux({ entry: 0x80n })).entry, 0x140_0080n, "percpu: virtual 0");
  // Physical wins when an address is both: 0x1400080 is physical in the percpu segment.
  const kernel = parseVmlinux(vmlinux({ entry: 0x140_0080n }));
  assert.equal(kernel.entry, 0x140_0080n);
  assert.deepEqual(
    kernel.segments.map((s) => [s.index, s.paddr, s.vaddr, s.filesz, s.memsz]),
    [
      [0, 0x100_0000n, KERNEL_MAP + 0x100_0000n, 0x3000, 0x3000n],
      [1, 0x120_0000n, KERNEL_MAP + 0x120_0000n, 0x800, 0x2000n],
      [2, 0x140_0000n, 0n, 0x100, 0x100n],
    ],
  );
  assert.deepEqual([kernel.start, kernel.end, kernel.elfEntry], [0x100_0000n, 0x140_0100n, 0x140_0080n]);
});

Deno.test("loadVmlinux: the initrd stays out of the kernel's span", () => {
  const initrd = new Uint8Array(0x3000).fill(9);
  const plan = loadVmlinux(vmlinux(), { ...PC, e820: PC_E820.slice(0, 4), ramSize: 0x140_2000n, initrd });
  const page = writeAt(plan.writes, 0x1_0000n);
  assert.equal(u32(page, 0x218), 0xff_d000, "below 0x1000000, not in [0x1000000, 0x1400100)");
  assert.equal(u32(page, 0x21c), 0x3000);
  assert.deepEqual(writeAt(plan.writes, 0xff_d000n), initrd);
});

Deno.test("loadVmlinux / parseVmlinux: one clear error line for each refusal", () => {
  const good = vmlinux();
  const patched = (offset: number, bytes: number[]) => {
    const copy = good.slice();
    copy.set(bytes, offset);
    return copy;
  };
  const cases: [string, Uint8Array, Partial<typeof PC>, string, RegExp][] = [
    [
      "a short file",
      good.subarray(0, 40),
      {},
      "TRUNCATED",
      /^vmlinux: the ELF header needs 64 bytes; the file has 40$/,
    ],
    [
      "no ELF magic",
      patched(0, [0x7f, 0x45, 0x4c, 0x47]),
      {},
      "BAD_ELF",
      /^vmlinux: not an ELF file \(no \\x7fELF magic\)$/,
    ],
    ["ELF32", patched(4, [1]), {}, "BAD_ELF", /^vmlinux: ELF class 1 is not 64-bit \(2\)$/],
    [
      "big-endian",
      patched(5, [2]),
      {},
      "BAD_ELF",
      /^vmlinux: ELF data encoding 2 is not little-endian \(1\)$/,
    ],
    ["arm64", vmlinux({ machine: 183 }), {}, "BAD_ELF", /^vmlinux: ELF machine 183 is not x86-64 \(62\)$/],
    [
      "a shared object",
      patched(16, [3, 0]),
      {},
      "BAD_ELF",
      /^vmlinux: ELF type 3 is not an executable \(ET_EXEC, 2\)$/,
    ],
    [
      "small program headers",
      patched(54, [32, 0]),
      {},
      "BAD_ELF",
      /^vmlinux: program header size 32 is below 56$/,
    ],
    [
      "program headers cut",
      good.subarray(0, 200),
      {},
      "TRUNCATED",
      /^vmlinux: the program headers \[0x40, 0x120\) pass the end of the file \(0xc8\)$/,
    ],
    [
      "e_phoff past the end",
      patched(32, [0, 0, 0, 0, 1, 0, 0, 0]),
      {},
      "TRUNCATED",
      /^vmlinux: e_phoff 0x100000000 passes the end of the file \(0x[0-9a-f]+\)$/,
    ],
    [
      "a segment cut",
      good.subarray(0, 0x2000),
      {},
      "TRUNCATED",
      /^vmlinux: segment 0 needs file bytes \[0x120, 0x3120\); the file has 0x2000$/,
    ],
    [
      "p_filesz > p_memsz",
      patched(0x40 + 40, [0x10, 0, 0, 0, 0, 0, 0, 0]),
      {},
      "BAD_ELF",
      /^vmlinux: segment 0 has p_filesz 0x3000 > p_memsz 0x10$/,
    ],
    [
      "no Linux note",
      elf64Of({
        entry: 0x100_0000n,
        segments: [
          { vaddr: 0x100_0000n, paddr: 0x100_0000n, data: text },
          {
            type: 4,
            vaddr: 0n,
            paddr: 0n,
            data: elfNotes([{ owner: "GNU", type: 3, desc: new Uint8Array(20) }]),
          },
        ],
      }),
      {},
      "NOT_LINUX",
      /^vmlinux: no "Linux" ELF note \(PT_NOTE\): this x86-64 ELF is not a Linux kernel$/,
    ],
    [
      "no PT_LOAD",
      elf64Of({ entry: 0n, segments: [{ type: 4, vaddr: 0n, paddr: 0n, data: NOTES }] }),
      {},
      "BAD_ELF",
      /^vmlinux: no loadable segment \(PT_LOAD\)$/,
    ],
    [
      "an entry outside",
      vmlinux({ entry: 0x200_0000n }),
      {},
      "BAD_ELF",
      /^vmlinux: entry 0x2000000 is in no loadable segment \(neither a physical nor a virtual address\)$/,
    ],
    [
      "beyond RAM",
      good,
      { ramSize: 0x140_0000n },
      "DOES_NOT_FIT",
      /^vmlinux: the kernel \[0x1000000, 0x1400100\) ends beyond the guest's 0x1400000 bytes of RAM$/,
    ],
    [
      "over the zero page",
      elf64Of({
        entry: 0x1_0000n,
        segments: [
          { vaddr: 0x1_0000n, paddr: 0x1_0000n, data: text },
          { type: 4, vaddr: 0n, paddr: 0n, data: NOTES },
        ],
      }),
      {},
      "OVERLAP",
      /^vmlinux: the kernel \[0x10000, 0x13000\) overlaps the zero page \[0x10000, 0x11000\)$/,
    ],
    [
      "overlapping segments",
      elf64Of({
        entry: 0x100_0000n,
        segments: [
          { vaddr: 0x100_0000n, paddr: 0x100_0000n, data: text },
          { vaddr: 0x100_1000n, paddr: 0x100_1000n, data },
          { type: 4, vaddr: 0n, paddr: 0n, data: NOTES },
        ],
      }),
      {},
      "OVERLAP",
      /^vmlinux: ELF segment 0 \[0x1000000, 0x1003000\) overlaps ELF segment 1 \[0x1001000, 0x1001800\)$/,
    ],
  ];
  for (const [name, image, options, code, message] of cases) {
    assert.throws(() => loadVmlinux(image, { ...PC, ...options }), loaderErrorLike(code, message), name);
  }
});
