import assert from "node:assert/strict";
import { bzImagePayload, decompressCommand } from "./bzimage_payload.ts";
import { findPvhEntry, loadPvh } from "./pvh.ts";
import { parseVmlinux } from "./vmlinux.ts";
import type { BootWrite } from "./boot_plan.ts";
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

/** Linux's kernel map: virtual = physical + __START_KERNEL_map. */
const KERNEL_MAP = 0xffff_ffff_8000_0000n;
const LINUX_NOTE = { owner: "Linux", type: 0x100, desc: new TextEncoder().encode("6.1.0-test\0") };
const text = Uint8Array.from({ length: 0x3000 }, (_, i) => (i * 13 + 5) & 0xff);
const data = Uint8Array.from({ length: 0x800 }, (_, i) => (i * 3 + 1) & 0xff);

function u64le(value: bigint, bytes = 8): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** A vmlinux shaped like Linux's, with the given notes (default: a PVH entry at 0x1000e00). */
function vmlinux(
  notes: { owner: string; type: number; desc: Uint8Array }[] = [
    { owner: "Xen", type: 18, desc: u64le(0x100_0e00n) },
    LINUX_NOTE,
  ],
  segments?: TestSegment64[],
): Uint8Array {
  return elf64Of({
    entry: segments?.[0].paddr ?? 0x100_0000n,
    segments: segments ?? [
      { vaddr: KERNEL_MAP + 0x100_0000n, paddr: 0x100_0000n, data: text },
      { vaddr: KERNEL_MAP + 0x120_0000n, paddr: 0x120_0000n, data, memsz: 0x2000n, flags: 6 },
      { type: 4, vaddr: KERNEL_MAP + 0x100_2000n, paddr: 0x100_2000n, data: elfNotes(notes), flags: 4 },
    ],
  });
}

const PC = { cmdline: "console=ttyS0 acpi=on", e820: PC_E820, ramSize: PC_RAM_SIZE };

/** Fields of struct hvm_start_info and what it points to, read back from a plan's writes. */
function startInfo(writes: readonly BootWrite[], ebx: bigint) {
  const bytes = writeAt(writes, ebx);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const memmapAt = Number(v.getBigUint64(40, true) - ebx);
  const memmap = Array.from({ length: v.getUint32(48, true) }, (_, i) => {
    const at = memmapAt + 24 * i;
    return {
      addr: v.getBigUint64(at, true),
      size: v.getBigUint64(at + 8, true),
      type: v.getUint32(at + 16, true),
    };
  });
  const modules = Array.from({ length: v.getUint32(12, true) }, (_, i) => {
    const at = Number(v.getBigUint64(16, true) - ebx) + 32 * i;
    return {
      paddr: v.getBigUint64(at, true),
      size: v.getBigUint64(at + 8, true),
      cmdline: v.getBigUint64(at + 16, true),
    };
  });
  return {
    magic: v.getUint32(0, true),
    version: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    cmdlinePaddr: v.getBigUint64(24, true),
    rsdp: v.getBigUint64(32, true),
    reserved: v.getUint32(52, true),
    memmap,
    modules,
  };
}

Deno.test("findPvhEntry: the Xen PHYS32_ENTRY note, 8- or 4-byte descriptor; undefined without it", () => {
  assert.equal(findPvhEntry(vmlinux()), 0x100_0e00n);
  assert.equal(
    findPvhEntry(vmlinux([LINUX_NOTE, { owner: "Xen", type: 18, desc: u64le(0x100_0040n, 4) }])),
    0x100_0040n,
  );
  assert.equal(findPvhEntry(vmlinux([LINUX_NOTE])), undefined);
  // Other Xen notes (XEN_ELFNOTE_ENTRY = 1) and type 18 of another owner are not the PVH entry.
  assert.equal(
    findPvhEntry(
      vmlinux([{ owner: "Xen", type: 1, desc: u64le(KERNEL_MAP) }, {
        owner: "GNU",
        type: 18,
        desc: u64le(1n),
      }, LINUX_NOTE]),
    ),
    undefined,
  );
  assert.throws(
    () => findPvhEntry(vmlinux([{ owner: "Xen", type: 18, desc: new Uint8Array(2) }, LINUX_NOTE])),
    loaderErrorLike("BAD_ELF", /^pvh: the Xen PHYS32_ENTRY note has a 2-byte descriptor/),
  );
  assert.throws(
    () => findPvhEntry(vmlinux([{ owner: "Xen", type: 18, desc: u64le(0x1_0000_0000n) }, LINUX_NOTE])),
    loaderErrorLike("BAD_ELF", /^pvh: the PHYS32_ENTRY note's address 0x100000000 is past 4 GiB$/),
  );
});

Deno.test("loadPvh: 32-bit protected entry at the note, EBX = start info, flat GDT, paging off", () => {
  const plan = loadPvh(vmlinux(), { ...PC, rsdpAddress: 0x7ff_0000n });
  assert.equal(plan.cpu.mode, "protected32");
  assert.equal(plan.cpu.rip, 0x100_0e00n);
  assert.deepEqual(plan.cpu.gpr, { rbx: 0x1_0000n });
  assert.deepEqual(plan.cpu.cs, { selector: 0x08, base: 0n });
  assert.deepEqual(plan.cpu.gdt, { base: 0x500n, limit: 31 });
  assert.equal(plan.cpu.cr3, undefined, "no page tables");
  assert.equal(plan.cpu.rflags, 0x2n, "interrupts off");
  const gdt = new DataView(writeAt(plan.writes, 0x500n).buffer);
  assert.equal(gdt.getBigUint64(8, true), 0x00cf_9b00_0000_ffffn, "CS 0x08: flat 32-bit code");
  assert.equal(gdt.getBigUint64(16, true), 0x00cf_9300_0000_ffffn, "0x10: flat data");
});

Deno.test("loadPvh: hvm_start_info v1 with the memory map, the command line, the RSDP, no module", () => {
  const plan = loadPvh(vmlinux(), { ...PC, rsdpAddress: 0x7ff_0000n });
  const info = startInfo(plan.writes, plan.cpu.gpr!.rbx!);
  assert.equal(info.magic, 0x336e_c578);
  assert.equal(info.version, 1);
  assert.equal(info.flags, 0);
  assert.equal(info.rsdp, 0x7ff_0000n);
  assert.equal(info.reserved, 0);
  assert.deepEqual(info.memmap, PC_E820);
  assert.deepEqual(info.modules, []);
  const cmdline = writeAt(plan.writes, info.cmdlinePaddr);
  assert.equal(new TextDecoder().decode(cmdline), "console=ttyS0 acpi=on\0");
  // The kernel at p_paddr, its bss zeroed.
  assert.deepEqual(writeAt(plan.writes, 0x100_0000n), text);
  assert.deepEqual(writeAt(plan.writes, 0x120_0000n), data);
  assert.deepEqual(writeAt(plan.writes, 0x120_0800n), new Uint8Array(0x1800));
  // Without an RSDP the OS scans for one.
  assert.equal(startInfo(loadPvh(vmlinux(), PC).writes, 0x1_0000n).rsdp, 0n);
});

Deno.test("loadPvh: the initrd is module 0, page-aligned, as high as possible below 2 GiB, outside the kernel", () => {
  const initrd = Uint8Array.from({ length: 0x2345 }, (_, i) => i & 0xff);
  const plan = loadPvh(vmlinux(), { ...PC, initrd });
  const info = startInfo(plan.writes, 0x1_0000n);
  assert.equal(info.modules.length, 1);
  const [module] = info.modules;
  assert.equal(module.size, BigInt(initrd.length));
  assert.equal(module.cmdline, 0n);
  assert.equal(module.paddr % 0x1000n, 0n);
  assert.equal(module.paddr, (PC_RAM_SIZE - BigInt(initrd.length)) & ~0xfffn, "the top of RAM");
  assert.deepEqual(writeAt(plan.writes, module.paddr), initrd);
  // Writes never overlap (the plan's contract).
  const sorted = held(plan.writes).toSorted((a, b) => Number(a.addr - b.addr));
  for (let i = 1; i < sorted.length; i++) {
    assert.ok(sorted[i - 1].addr + BigInt(sorted[i - 1].data.length) <= sorted[i].addr);
  }
});

Deno.test("loadPvh refuses with one line: no note, entry outside the image, overlaps, too big for RAM", () => {
  assert.throws(
    () => loadPvh(vmlinux([LINUX_NOTE]), PC),
    loaderErrorLike("NO_PVH_NOTE", /^pvh: no Xen PHYS32_ENTRY ELF note \(type 18\)/),
  );
  assert.throws(
    () => loadPvh(vmlinux([{ owner: "Xen", type: 18, desc: u64le(0x200_0000n) }, LINUX_NOTE]), PC),
    loaderErrorLike("BAD_ELF", /^pvh: the PVH entry 0x2000000 is outside every loaded segment/),
  );
  // The entry in a segment's bss is not inside the image either.
  assert.throws(
    () => loadPvh(vmlinux([{ owner: "Xen", type: 18, desc: u64le(0x120_1000n) }, LINUX_NOTE]), PC),
    loaderErrorLike("BAD_ELF", /outside every loaded segment/),
  );
  const notes = elfNotes([{ owner: "Xen", type: 18, desc: u64le(0x1_0000n) }, LINUX_NOTE]);
  assert.throws(
    () =>
      loadPvh(
        vmlinux(undefined, [
          { vaddr: KERNEL_MAP + 0x1_0000n, paddr: 0x1_0000n, data: text },
          { type: 4, vaddr: 0n, paddr: 0n, data: notes, flags: 4 },
        ]),
        PC,
      ),
    loaderErrorLike("OVERLAP", /^pvh: the kernel \[0x10000, 0x13000\) overlaps the PVH start info page/),
  );
  assert.throws(
    () => loadPvh(vmlinux(), { ...PC, ramSize: 0x100_1000n, e820: [] }),
    loaderErrorLike(
      "DOES_NOT_FIT",
      /^pvh: the kernel \[0x1000000, 0x1202000\) ends beyond the guest's 0x1001000 bytes/,
    ),
  );
  assert.throws(
    () => loadPvh(vmlinux(), { ...PC, initrd: new Uint8Array(0x800_0000) }),
    loaderErrorLike("DOES_NOT_FIT", /^pvh: the initrd \(0x8000000 bytes\) does not fit/),
  );
  assert.throws(
    () => loadPvh(vmlinux(), { ...PC, cmdline: "x".repeat(2048) }),
    loaderErrorLike("BOOT_INFO_TOO_LARGE", /^pvh: the command line is 2048 bytes; Linux takes at most 2047$/),
  );
  assert.throws(
    () => loadPvh(vmlinux(), { ...PC, e820: Array.from({ length: 129 }, () => PC_E820[0]) }),
    loaderErrorLike("BOOT_INFO_TOO_LARGE", /129 e820 entries/),
  );
  assert.throws(() => loadPvh(vmlinux(), { ...PC, rsdpAddress: -1n }), RangeError);
});

// --- Debian's kernel, when there is one ----------------------------------------------------------

function newestBootFile(prefix: string): string | undefined {
  try {
    const names = [...Deno.readDirSync("/boot")].filter((e) => e.isFile && e.name.startsWith(prefix)).map((
      e,
    ) => e.name)
      .sort().reverse();
    return names.length === 0 ? undefined : `/boot/${names[0]}`;
  } catch {
    return undefined;
  }
}

async function decompress(command: readonly string[], input: Uint8Array): Promise<Uint8Array | undefined> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command[0], {
      args: command.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    })
      .spawn();
  } catch {
    return undefined;
  }
  const writing = (async () => {
    const writer = child.stdin.getWriter();
    await writer.write(input);
    await writer.close();
  })();
  const [output] = await Promise.all([child.output(), writing]);
  return output.success ? output.stdout : undefined;
}

const vmlinuz = newestBootFile("vmlinuz-");

Deno.test({
  name: "Debian's kernel: its vmlinux has the PVH note, at the code of pvh_start_xen, and loadPvh accepts it",
  async fn() {
    if (vmlinuz === undefined) {
      return console.log("  skipped: no /boot/vmlinuz-* (Debian: linux-image-amd64)");
    }
    let bz: Uint8Array;
    try {
      bz = await Deno.readFile(vmlinuz);
    } catch (error) {
      return console.log(`  skipped: ${vmlinuz} is not readable (${(error as Error).message})`);
    }
    const payload = bzImagePayload(bz);
    const image = await decompress(decompressCommand(payload.format), payload.stream);
    if (image === undefined) {
      return console.log(`  skipped: ${decompressCommand(payload.format)[0]} failed or is missing`);
    }
    const entry = findPvhEntry(image);
    console.log(`  ${vmlinuz}: PVH entry ${entry === undefined ? "absent" : `0x${entry.toString(16)}`}`);
    assert.notEqual(entry, undefined, "Debian builds CONFIG_PVH=y");
    // The oracle: Linux's pvh_start_xen (arch/x86/platform/pvh/head.S) begins with `cld` then
    // `lgdt` of an absolute 32-bit address (FC 0F 01 15 disp32), and that address, the boot GDT,
    // lies inside the kernel. Debian's System.map is a stub, so the code itself is the witness.
    const segment = parseVmlinux(image).segments.find((s) =>
      entry! >= s.paddr && entry! < s.paddr + BigInt(s.filesz)
    )!;
    const at = segment.offset + Number(entry! - segment.paddr);
    assert.deepEqual([...image.subarray(at, at + 4)], [0xfc, 0x0f, 0x01, 0x15], "cld; lgdt (abs32)");
    const gdtAddr = BigInt(new DataView(image.buffer, image.byteOffset + at + 4, 4).getUint32(0, true));
    const kernel = parseVmlinux(image);
    assert.ok(
      gdtAddr >= kernel.start && gdtAddr < kernel.end,
      `lgdt's operand 0x${gdtAddr.toString(16)} is in the kernel`,
    );
    // The initrd of the same version, if it is there.
    const sameVersion = vmlinuz.replace("vmlinuz-", "initrd.img-");
    const initrd = newestBootFile(sameVersion.slice("/boot/".length)) === sameVersion
      ? sameVersion
      : undefined;
    const e820 = [
      { addr: 0n, size: 0x9_fc00n, type: 1 },
      { addr: 0x9_fc00n, size: 0x400n, type: 2 },
      { addr: 0xf_0000n, size: 0x1_0000n, type: 2 },
      { addr: 0x10_0000n, size: 0x1ff0_0000n, type: 1 },
    ];
    const plan = loadPvh(image, {
      cmdline: "console=ttyS0",
      e820,
      ramSize: 0x2000_0000n,
      initrd: initrd === undefined ? undefined : await Deno.readFile(initrd),
      rsdpAddress: 0xf_0000n,
    });
    assert.equal(plan.cpu.rip, entry);
    const info = startInfo(plan.writes, 0x1_0000n);
    assert.equal(info.memmap.length, e820.length);
    assert.equal(info.modules.length, initrd === undefined ? 0 : 1);
    console.log(`  ${plan.description}`);
  },
});
