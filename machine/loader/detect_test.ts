import assert from "node:assert/strict";
import { EXIT_STATUS, FIRMWARE, HELLO64 } from "../guests/mod.ts";
import { detectFormat, KERNEL_PROBE_SIZE, loadKernel, probeKernel } from "./detect.ts";
import { loadBzImage } from "./linux.ts";
import { LoaderError } from "./loader_error.ts";
import { loadMultiboot } from "./multiboot.ts";
import { loadPvh } from "./pvh.ts";
import { loadVmlinux } from "./vmlinux.ts";
import {
  bzImageOf,
  elf32,
  elf64,
  elf64Of,
  elfNotes,
  imageOf,
  multibootHeader,
  PC_E820,
  PC_RAM_SIZE,
  u32s,
} from "./_test_util.ts";

const PC = { cmdline: "kernel", e820: PC_E820, ramSize: PC_RAM_SIZE };

/** A bzImage-like file: boot_flag, "HdrS" and a protocol version in its setup header. */
function bzImage(version = 0x020f): Uint8Array {
  const image = new Uint8Array(0x1000);
  const view = new DataView(image.buffer);
  view.setUint16(0x1fe, 0xaa55, true);
  view.setUint32(0x202, 0x5372_6448, true);
  view.setUint16(0x206, version, true);
  return image;
}

function loaderError(code: string, message: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof LoaderError, `expected a LoaderError, got ${error}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  };
}

Deno.test("detectFormat: the committed guests, bzImage, ELF64 and unknown files", () => {
  assert.equal(detectFormat(HELLO64), "multiboot");
  assert.equal(detectFormat(EXIT_STATUS), "multiboot");
  assert.equal(detectFormat(FIRMWARE), "unknown");
  assert.equal(detectFormat(bzImage()), "bzimage");
  assert.equal(detectFormat(elf64(62)), "elf64");
  assert.equal(detectFormat(elf64(62, multibootHeader(0))), "multiboot", "the Multiboot header decides");
  assert.equal(detectFormat(new Uint8Array(0)), "unknown");
  assert.equal(detectFormat(elf32({ entry: 0, segments: [] })), "unknown");
});

Deno.test("detectFormat checks for a bzImage first, as QEMU does", () => {
  const both = bzImage();
  both.set(multibootHeader(0), 0x10);
  assert.equal(detectFormat(both), "bzimage");
});

Deno.test("loadKernel loads Multiboot images exactly as loadMultiboot", async () => {
  assert.deepEqual(await loadKernel(HELLO64, PC), loadMultiboot(HELLO64, PC));
  assert.deepEqual(await loadKernel(EXIT_STATUS, PC), loadMultiboot(EXIT_STATUS, PC));
});

Deno.test("loadKernel loads Linux bzImages and vmlinux files, with an initrd", async () => {
  const initrd = new Uint8Array(0x3000).fill(0xa5);
  const options = { ...PC, initrd };
  const image = bzImageOf();
  assert.equal(detectFormat(image), "bzimage");
  assert.deepEqual(await loadKernel(image, options), loadBzImage(image, options));
  const vmlinux = elf64Of({
    entry: 0x100_0000n,
    segments: [
      { vaddr: 0xffff_ffff_8100_0000n, paddr: 0x100_0000n, data: new Uint8Array(0x100).fill(0xf4) },
      {
        type: 4,
        vaddr: 0n,
        paddr: 0n,
        data: elfNotes([{ owner: "Linux", type: 0x100, desc: new Uint8Array(4) }]),
      },
    ],
  });
  assert.equal(detectFormat(vmlinux), "elf64");
  const plan = await loadKernel(vmlinux, options);
  assert.deepEqual(plan, loadVmlinux(vmlinux, options));
  assert.ok(plan.writes.some((w) => "data" in w && w.data === initrd));
});

Deno.test("loadKernel enters a vmlinux with the PVH note through PVH, with the RSDP; without it, the 64-bit entry", async () => {
  const LINUX = { owner: "Linux", type: 0x100, desc: new Uint8Array(4) };
  const segments = (notes: { owner: string; type: number; desc: Uint8Array }[]) => [
    { vaddr: 0xffff_ffff_8100_0000n, paddr: 0x100_0000n, data: new Uint8Array(0x100).fill(0xf4) },
    { type: 4, vaddr: 0n, paddr: 0n, data: elfNotes(notes) },
  ];
  const entry = new Uint8Array(8);
  new DataView(entry.buffer).setBigUint64(0, 0x100_0010n, true);
  const withNote = elf64Of({
    entry: 0x100_0000n,
    segments: segments([{ owner: "Xen", type: 18, desc: entry }, LINUX]),
  });
  const options = { ...PC, initrd: new Uint8Array(0x3000).fill(0xa5), rsdpAddress: 0x7ff_f000n };
  const plan = await loadKernel(withNote, options);
  assert.deepEqual(plan, loadPvh(withNote, options));
  assert.equal(plan.cpu.mode, "protected32");
  assert.equal(plan.cpu.rip, 0x100_0010n);
  const without = elf64Of({ entry: 0x100_0000n, segments: segments([LINUX]) });
  assert.equal((await loadKernel(without, options)).cpu.mode, "long64");
});

Deno.test("loadKernel: one clear error line for each unsupported file", async () => {
  const cases: [string, Uint8Array, string, RegExp][] = [
    [
      "bzImage without a 64-bit entry",
      bzImage(),
      "NO_64BIT_ENTRY",
      /^bzImage: no 64-bit entry point \(xloadflags 0x0 lacks XLF_KERNEL_64\): a 32-bit kernel$/,
    ],
    [
      "64-bit ELF for arm64",
      elf64(183),
      "ELF64",
      /^kernel: 64-bit ELF for machine 183, not x86-64 \(62\), without a Multiboot header: not supported$/,
    ],
    [
      "x86-64 ELF that is not Linux",
      elf64Of({
        entry: 0x10_0000n,
        segments: [{ vaddr: 0x10_0000n, paddr: 0x10_0000n, data: new Uint8Array(16) }],
      }),
      "NOT_LINUX",
      /^vmlinux: no "Linux" ELF note \(PT_NOTE\): this x86-64 ELF is not a Linux kernel$/,
    ],
    [
      "64-bit ELF with a Multiboot header but no a.out kludge",
      elf64(62, multibootHeader(0)),
      "ELF64",
      /^multiboot: cannot load an x86-64 ELF image without the a\.out kludge/,
    ],
    [
      "bad checksum",
      imageOf(0x100, [[0x20, multibootHeader(0x1_0000, undefined, 0x10)]]),
      "BAD_CHECKSUM",
      /^kernel: Multiboot magic at offset 0x20 but the checksum is wrong \(magic \+ flags \+ checksum = 0x10, not 0\)$/,
    ],
    ["empty file", new Uint8Array(0), "TRUNCATED", /^kernel: the file is 0 bytes, too short to be a kernel$/],
    [
      "5-byte file",
      new Uint8Array(5),
      "TRUNCATED",
      /^kernel: the file is 5 bytes, too short to be a kernel$/,
    ],
    [
      "truncated Multiboot image",
      HELLO64.subarray(0, 0x18),
      "TRUNCATED",
      /^multiboot: the a\.out-kludge header at offset 0x0 needs 32 bytes; the file ends at 0x18$/,
    ],
    [
      "truncated Multiboot payload",
      HELLO64.subarray(0, 0x1000),
      "TRUNCATED",
      /^multiboot: load_end_addr 0x105000 asks for 0x5000 bytes from file offset 0x0; the file has 0x1000$/,
    ],
    [
      "ELF32 without Multiboot",
      elf32({ entry: 0x10_0000, segments: [{ vaddr: 0x10_0000, paddr: 0x10_0000, data: u32s(0xf4) }] }),
      "UNKNOWN_FORMAT",
      /^kernel: 32-bit ELF without a Multiboot header: not supported \(add a Multiboot header\)$/,
    ],
    [
      "the firmware image",
      FIRMWARE,
      "UNKNOWN_FORMAT",
      /^kernel: unknown format: no Multiboot header in the first 8192 bytes, no Linux "HdrS" at 0x202, not an ELF file$/,
    ],
  ];
  for (const [name, image, code, message] of cases) {
    await assert.rejects(async () => await loadKernel(image, PC), loaderError(code, message), name);
  }
  await assert.rejects(
    async () => await loadKernel(HELLO64, { ...PC, initrd: new Uint8Array(1) }),
    loaderError(
      "INITRD_UNSUPPORTED",
      /^kernel: Multiboot kernel with an initrd: Multiboot modules are not supported$/,
    ),
  );
});

Deno.test("probeKernel: the first 8192 bytes decide the format, and a file no loader takes is refused on them", async () => {
  const large = (head: Uint8Array) => imageOf(0x4_0000, [[0, head]]);
  const cases: [Uint8Array, string][] = [
    [HELLO64, "multiboot"],
    [EXIT_STATUS, "multiboot"],
    [large(bzImage()), "bzimage"],
    [large(elf64(62)), "elf64"],
  ];
  for (const [image, format] of cases) {
    assert.equal(detectFormat(image), format);
    assert.equal(probeKernel(image.subarray(0, KERNEL_PROBE_SIZE)), format);
  }
  for (const image of [FIRMWARE, large(elf64(183)), large(elf32({ entry: 0, segments: [] }))]) {
    let whole: unknown, head: unknown;
    await assert.rejects(async () => await loadKernel(image, PC), (e) => (whole = e) instanceof LoaderError);
    assert.throws(
      () => probeKernel(image.subarray(0, KERNEL_PROBE_SIZE)),
      (e) => (head = e) instanceof LoaderError,
    );
    assert.deepEqual([(head as LoaderError).code, (head as LoaderError).message], [
      (whole as LoaderError).code,
      (whole as LoaderError).message,
    ]);
  }
});
