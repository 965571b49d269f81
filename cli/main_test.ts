import assert from "node:assert/strict";
import { DiskImage, imageLocks, kvmAvailability } from "../kvm/mod.ts";
import { AddressSpace } from "../memory/mod.ts";
import { EXIT_STATUS } from "../machine/guests/mod.ts";
import { copyBootWrites, LoaderError, readSource } from "../machine/loader/mod.ts";
import { PcMachine } from "../machine/pc/pc_machine.ts";
import { buildPcMemory } from "../machine/pc/pc_memory.ts";
import { RESET_STATE_NOTE } from "../machine/runner.ts";
import { bootPlanOf, type CliIo, closeInputs, main, parseCommandLine } from "./main.ts";
import { formatSize, parseSize } from "./size.ts";
import { VIRTIO_NET_DEFAULT_FEATURES, VirtioNetFeature, virtioNetFeatures } from "../devices/virtio/mod.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`cli/main_test.ts: guest runs skipped: ${KVM.reason}`);

/** Captures what the front-end prints. */
function capture(): CliIo & {
  stdout: string[];
  stderr: string[];
  console: (b: Uint8Array) => void;
  text(): string;
} {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const bytes: number[] = [];
  return {
    stdout,
    stderr,
    out: (t) => void stdout.push(t),
    err: (t) => void stderr.push(t),
    console: (b) => void bytes.push(...b),
    text: () => new TextDecoder().decode(Uint8Array.from(bytes)),
  };
}

Deno.test("sizes: QEMU's -m syntax and readable figures", () => {
  assert.equal(parseSize("256M"), 256n << 20n);
  assert.equal(parseSize("8G"), 8n << 30n);
  assert.equal(parseSize("512"), 512n << 20n);
  assert.equal(parseSize("1.5G"), 3n << 29n);
  assert.throws(() => parseSize("12X"), /not a size/);
  assert.equal(formatSize(3584n << 20n), "3584 MiB");
  assert.equal(formatSize(25_275_990_016n), "23.5 GiB");
});

Deno.test("every bad command line gets one line naming the problem and status 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /Unknown option '--bogus'/],
    [["-m", "12X"], /-m: "12X" is not a size/],
    [["-m", "1M"], /at least 2 MiB/],
    [["-kernel", "/nonexistent/kernel"], /-kernel: cannot read '\/nonexistent\/kernel': no such file/],
    [["-kernel", "/"], /-kernel: cannot read '\/': it is a directory/],
    [["-serial", "tcp:1"], /-serial: "tcp:1" is not stdio, null or file:PATH/],
    [["-append", "quiet"], /-append needs -kernel/],
    [["-initrd", "/etc/hostname"], /-initrd needs -kernel/],
    [["--dump-mtree=x"], /--dump-mtree: expected nothing or =-f/],
    [["-reboot", "-no-reboot"], /contradict/],
    [
      ["-device", "virtio-net"],
      /-device virtio-net: not supported \(only virtio-blk-pci, virtio-rng-pci, virtio-net-pci and loader\)/,
    ],
    [["-device", "loader,file=/etc/hostname,addr=x"], /-device loader: addr "x" is not a number/],
    [
      ["-device", "loader,file=/etc/hostname,addr=0,mode=v86"],
      /mode "v86" is not real, protected32 or long64/,
    ],
    [["-m", "1T"], /more than this host's .* of memory/],
    [["-m", "-1"], /-m: "-1" is not a size/],
    [["-smp", "-1"], /-smp: "-1" is not a number of vCPUs/],
    [["-smp", "4097"], /-smp: "4097" is not a number of vCPUs from 1 to 4096/],
    [["-smp", "256"], /-smp 256: APIC ids above 254 need x2APIC, .*: use -machine kernel-irqchip=split/],
    [["-enable-kvm", "-cpu", "host"], /Unknown option '-cpu'/],
    [["-machine", "q35"], /-machine q35: the board is QEMU's pc \(i440fx\), not "q35"/],
    [["--cpu=host"], /Unknown option '--cpu'/],
    [["-display", "gtk"], /-display gtk: not supported \(only none: there is no display\)/],
    [["-enable-kvm=on"], /-enable-kvm takes no value/],
    [["-nographic=1"], /-nographic takes no value/],
    [["-kernel"], /-kernel needs a value/],
    [["--dump-mtree", "-x"], /Unknown option '-x'/],
    [["vmlinux"], /Unexpected argument 'vmlinux': options only/],
    [["-m", "64M", "-"], /Unexpected argument '-'/],
    [["-constructor"], /Unknown option '-constructor'/],
    [
      ["-device", "loader,file=/etc/hostname,addr=0x7c00,mdoe=long64"],
      /-device loader: property 'mdoe' is not supported \(only file, addr, mode\)/,
    ],
    [["-device", "loader,file=/etc/hostname,addr=0,addr=1"], /property 'addr' is given twice/],
    [
      [
        "-device",
        "loader,file=/etc/hostname,addr=0,mode=real",
        "-device",
        "loader,file=/etc/hostname,addr=1,mode=real",
      ],
      /mode= is given on more than one loader/,
    ],
  ];
  for (const [args, message] of cases) {
    const io = capture();
    assert.equal(await main(args, io), 2, args.join(" "));
    assert.equal(io.stderr.length, 1, args.join(" "));
    assert.match(io.stderr[0], message);
    assert.match(io.stderr[0], /^error: .*\(try --help\)$/);
  }
});

Deno.test("virtio: every bad -drive / -device line is one line naming it, status 2, no image left open or locked", async () => {
  await withFiles([1 << 20, 1000, 1 << 20], async (disk, odd, locked) => {
    using holder = DiskImage.open(locked); // another user writes this one
    const cases: [string[], RegExp][] = [
      [
        ["-drive", "file=/nonexistent.img,format=raw,if=virtio"],
        /Could not open '\/nonexistent.img': No such file or directory/,
      ],
      [["-drive", `file=${odd},format=raw,if=virtio`], /is not a whole number of 512-byte sectors/],
      [
        ["-drive", `file=${locked},format=raw,if=virtio`],
        /Failed to get "write" lock: is another process using the image/,
      ],
      [["-drive", `file=${disk},format=qcow2,if=virtio`], /format 'qcow2' is not supported \(only raw\)/],
      [["-drive", `file=${disk},format=raw,if=ide`], /if=ide is not supported/],
      [["-drive", `file=${disk},cache=none`], /-drive: property 'cache' is not supported/],
      [["-drive", `file=${disk},readonly=maybe`], /readonly=maybe: expected on or off/],
      [
        ["-drive", `file=${disk},aio=native`],
        /aio=native is not supported \(only inline, io_uring, threads\)/,
      ],
      [
        ["-drive", `id=d0,file=${disk},if=none`, "-drive", `id=d0,file=${disk},if=none,readonly=on`],
        /Duplicate ID 'd0' for drive/,
      ],
      [
        ["-drive", `id=d0,file=${disk},if=none`, "-device", "virtio-blk-pci,drive=d1"],
        /Property 'virtio-blk-pci.drive' can't find value 'd1'/,
      ],
      [["-device", "virtio-blk-pci"], /drive=ID is required/],
      [["-device", "virtio-rng-pci,bogus=1"], /virtio-rng-pci: property 'bogus' is not supported/],
      [["-device", "virtio-blk-pci,drive=d0,disable-legacy=off"], /only disable-legacy=on/],
      [["-device", "virtio-rng-pci,ioeventfd=maybe"], /ioeventfd=maybe: expected on or off/],
      [["-drive", `file=${disk},if=none`], /if=none needs id=ID/],
      // The first image opens, the second is refused: the first is closed again.
      [
        ["-drive", `file=${disk},if=virtio`, "-drive", `file=${locked},if=virtio`],
        /Failed to get "write" lock/,
      ],
    ];
    for (const [args, message] of cases) {
      const io = capture();
      assert.equal(await main(args, io), 2, args.join(" "));
      assert.equal(io.stderr.length, 1, args.join(" "));
      assert.match(io.stderr[0], message);
      assert.match(io.stderr[0], /^error: .*\(try --help\)$/);
    }
    holder.close();
    // Nothing kept a lock: both images open for writing now.
    assert.deepEqual(imageLocks(disk), { used: [], unshared: [] });
    assert.deepEqual(imageLocks(locked), { used: [], unshared: [] });
  });
});

Deno.test("virtio: --dump-mtree shows the BARs with QEMU's names; devices take slots in QEMU's order", async () => {
  await withFiles([1 << 20, 1 << 20], async (a, b) => {
    const io = capture();
    const args = [
      "--dump-mtree",
      "-m",
      "256M",
      "-drive",
      `file=${a},format=raw,if=virtio`,
      "-drive",
      `id=d0,file=${b},format=raw,if=none,readonly=on`,
      "-device",
      "virtio-rng-pci",
      "-device",
      "virtio-blk-pci,drive=d0,serial=S1",
    ];
    assert.equal(await main(args, io), 0, io.stderr.join("\n"));
    const out = io.stdout.join("\n");
    assert.match(
      out,
      /\(prio 1, i\/o\): virtio-pci\n\s+[0-9a-f-]+ \(prio 0, i\/o\): virtio-pci-common-virtio-rng/,
    );
    // Twice in the tree under "pci", twice again in the "memory-region: pci" listing of aliased regions.
    assert.equal(out.match(/\): virtio-blk-pci-msix/g)?.length, 4);
    assert.match(out, /\): virtio-rng-pci-msix/);
    // The images are closed after the dump.
    assert.deepEqual(imageLocks(a), { used: [], unshared: [] });
    const options = await parseCommandLine(args.slice(1));
    assert.ok(options !== "help");
    try {
      // -device first, in order, then the -drive if=virtio disk.
      assert.deepEqual(options.pciDevices.map((d) => d.type), [
        "virtio-rng-pci",
        "virtio-blk-pci",
        "virtio-blk-pci",
      ]);
      assert.equal(
        options.pciDevices[1].type === "virtio-blk-pci" && options.pciDevices[1].backing.readOnly,
        true,
      );
      assert.equal(
        options.pciDevices[2].type === "virtio-blk-pci" && options.pciDevices[2].backing.readOnly,
        false,
      );
    } finally {
      for (const image of options.images) image.close();
    }
  });
});

/** Runs `fn` with temporary files of the given contents (a number: a sparse file of that size). */
async function withFiles(
  contents: (Uint8Array | string | number)[],
  fn: (...paths: string[]) => Promise<void> | void,
): Promise<void> {
  const paths = contents.map(() => Deno.makeTempFileSync({ prefix: "cli-test-" }));
  try {
    contents.forEach((c, i) => {
      if (typeof c === "number") Deno.truncateSync(paths[i], c);
      else if (typeof c === "string") Deno.writeTextFileSync(paths[i], c);
      else Deno.writeFileSync(paths[i], c);
    });
    await fn(...paths);
  } finally {
    for (const path of paths) Deno.removeSync(path);
  }
}

/** Runs `args`: status 2, exactly one line on stderr matching `message`, and nothing on stdout. */
async function refused(args: string[], message: RegExp): Promise<void> {
  const io = capture();
  assert.equal(await main(args, io), 2, args.join(" "));
  assert.equal(io.stderr.length, 1, `${args.join(" ")}: ${io.stderr.join(" | ")}`);
  assert.match(io.stderr[0], message, args.join(" "));
  assert.match(io.stderr[0], /^error: [^\n]*\(try --help\)$/);
  assert.deepEqual(io.stdout, []);
}

/**
 * A minimal relocatable bzImage for the 64-bit entry (boot.rst's setup header): one setup sector,
 * a 4 KiB protected-mode kernel, init_size 4 MiB at pref_address 16 MiB.
 */
function bzImage(): Uint8Array {
  const image = new Uint8Array(0x400 + 0x1000);
  const view = new DataView(image.buffer);
  image[0x1f1] = 1; // setup_sects
  view.setUint32(0x1f4, 0x1000 / 16, true); // syssize
  view.setUint16(0x1fe, 0xaa55, true); // boot_flag
  image[0x201] = 0x66; // the header ends at 0x268
  view.setUint32(0x202, 0x5372_6448, true); // "HdrS"
  view.setUint16(0x206, 0x020f, true); // protocol 2.15
  image[0x211] = 1; // loadflags: LOADED_HIGH
  view.setUint32(0x22c, 0x7fff_ffff, true); // initrd_addr_max
  view.setUint32(0x230, 0x20_0000, true); // kernel_alignment
  image[0x234] = 1; // relocatable_kernel
  view.setUint16(0x236, 1, true); // xloadflags: XLF_KERNEL_64
  view.setUint32(0x238, 2047, true); // cmdline_size
  view.setBigUint64(0x258, 0x100_0000n, true); // pref_address
  view.setUint32(0x260, 0x40_0000, true); // init_size
  return image;
}

Deno.test("a file in no supported format is refused in one line naming it, with status 2", async () => {
  await withFiles(
    ["not a kernel\n"],
    (path) => refused(["-kernel", path], new RegExp(`^error: -kernel ${path}: kernel: unknown format: `)),
  );
});

Deno.test("-initrd reaches the Linux loader: the zero page points at its bytes in guest RAM", async () => {
  const initrd = new Uint8Array(0x3000).map((_, i) => (i * 7) & 0xff);
  await withFiles([bzImage(), initrd], async (kernel, ramdisk) => {
    const options = await parseCommandLine([
      "-kernel",
      kernel,
      "-initrd",
      ramdisk,
      "-m",
      "64M",
      "-append",
      "quiet",
    ]);
    assert.notEqual(options, "help");
    if (options === "help") return;
    using _inputs = { [Symbol.dispose]: () => closeInputs(options) };
    const plan = await bootPlanOf(options);
    // The kernel and the initrd stay in their files: the plan names ranges of them.
    assert.deepEqual(
      plan.writes.filter((w) => "source" in w).map((w) => "source" in w && w.source),
      [options.kernel?.image, options.initrd?.image],
    );
    // Place the plan in the board's own memory map, without KVM, as PcMachine does.
    const map = buildPcMemory({ ramSize: options.ramSize });
    using memory = new AddressSpace(map.system, "memory");
    copyBootWrites(plan.writes, (addr, data) => memory.writeRom(addr, data));
    const zeroPage = memory.readBytes(0x1_0000n, 0x1000).data;
    const view = new DataView(zeroPage.buffer, zeroPage.byteOffset);
    const ramdiskImage = view.getUint32(0x218, true);
    assert.equal(view.getUint32(0x21c, true), initrd.length, "ramdisk_size");
    assert.ok(ramdiskImage >= 0x10_0000 && ramdiskImage + initrd.length <= 64 << 20, "ramdisk_image in RAM");
    assert.deepEqual(memory.readBytes(BigInt(ramdiskImage), initrd.length).data, initrd);
    assert.deepEqual(memory.readBytes(0x2_0000n, 6).data, new TextEncoder().encode("quiet\0"));
  });
});

Deno.test("input files opened before a refusal are closed again, and closeInputs closes the rest", async () => {
  const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
  await withFiles([bzImage(), 16, "13 bytes long"], async (kernel, initrd, bios) => {
    const before = fds();
    await refused(["-kernel", kernel, "-initrd", "/nonexistent/initrd"], /-initrd: cannot read/);
    await refused(["-kernel", kernel, "-initrd", initrd, "-bios", bios], /-bios /);
    assert.equal(fds(), before, "every file opened for a refused command line is closed");
    const options = await parseCommandLine(["-kernel", kernel, "-initrd", initrd]);
    assert.ok(options !== "help");
    assert.equal(fds(), before + 2, "-kernel and -initrd stay open");
    closeInputs(options);
    closeInputs(options);
    assert.equal(fds(), before);
  });
});

Deno.test("PcMachine.create hands the initrd to the kernel loader, which refuses it for Multiboot", async () => {
  // The loader's refusal comes before /dev/kvm is opened, so this runs on any host.
  await assert.rejects(
    async () =>
      await PcMachine.create({
        ramSize: 128n << 20n,
        kernel: { image: EXIT_STATUS, initrd: new Uint8Array(16) },
      }),
    (e) => e instanceof LoaderError && e.code === "INITRD_UNSUPPORTED",
  );
});

Deno.test("every input is checked before KVM: the kernel loader's refusals name the files", async () => {
  await withFiles([EXIT_STATUS, "ramdisk"], async (kernel, ramdisk) => {
    await refused(
      ["-kernel", kernel, "-initrd", ramdisk],
      new RegExp(`^error: -kernel ${kernel} -initrd ${ramdisk}: .*Multiboot modules are not supported`),
    );
  });
  await withFiles([bzImage(), 0x100_0000], async (kernel, ramdisk) => {
    await refused(
      ["-kernel", kernel, "-initrd", ramdisk, "-m", "32M"],
      new RegExp(`^error: -kernel ${kernel} -initrd ${ramdisk}: bzImage: the initrd .* does not fit in RAM`),
    );
  });
});

/**
 * A minimal x86-64 Linux vmlinux: one PT_LOAD of 4 KiB at 16 MiB and a PT_NOTE with the "Linux"
 * note and Xen's PHYS32_ENTRY note pointing at `pvhEntry`.
 */
function vmlinuxWithPvhNote(pvhEntry: bigint): Uint8Array {
  // Each note: namesz, descsz, type, the name padded to 4 bytes, an 8-byte descriptor.
  const linux = [6, 8, 0x100, ...new TextEncoder().encode("Linux\0\0\0"), 0, 0, 0, 0, 0, 0, 0, 0];
  const xen = [4, 8, 18, ...new TextEncoder().encode("Xen\0"), 0, 0, 0, 0, 0, 0, 0, 0];
  const notes = new Uint8Array(4 * 3 + 8 + 8 + 4 * 3 + 4 + 8);
  const nv = new DataView(notes.buffer);
  let at = 0;
  for (const note of [linux, xen]) {
    nv.setUint32(at, note[0], true);
    nv.setUint32(at + 4, note[1], true);
    nv.setUint32(at + 8, note[2], true);
    notes.set(note.slice(3), at + 12);
    at += 12 + note.length - 3;
  }
  nv.setBigUint64(at - 8, pvhEntry, true); // the Xen note's descriptor
  const image = new Uint8Array(0x1000 + 0x1000);
  const view = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]); // ELF64, little-endian
  view.setUint16(16, 2, true); // ET_EXEC
  view.setUint16(18, 62, true); // EM_X86_64
  view.setUint32(20, 1, true);
  view.setBigUint64(24, 0x100_0000n, true); // e_entry
  view.setBigUint64(32, 64n, true); // e_phoff
  view.setUint16(52, 64, true);
  view.setUint16(54, 56, true);
  view.setUint16(56, 2, true);
  const phdr = (i: number, type: number, offset: number, paddr: bigint, size: number) => {
    const ph = 64 + i * 56;
    view.setUint32(ph, type, true);
    view.setUint32(ph + 4, 5, true);
    view.setBigUint64(ph + 8, BigInt(offset), true);
    view.setBigUint64(ph + 16, 0xffff_ffff_8000_0000n + paddr, true);
    view.setBigUint64(ph + 24, paddr, true);
    view.setBigUint64(ph + 32, BigInt(size), true);
    view.setBigUint64(ph + 40, BigInt(size), true);
  };
  phdr(0, 1, 0x1000, 0x100_0000n, 0x1000); // PT_LOAD
  phdr(1, 4, 0x200, 0n, notes.length); // PT_NOTE
  image.set(notes, 0x200);
  image.fill(0xf4, 0x1000);
  return image;
}

Deno.test("Linux inputs the kernel cannot take are one line and status 2: a long -append, a bad PVH note", async () => {
  await withFiles([bzImage()], async (kernel) => {
    await refused(
      ["-kernel", kernel, "-append", "x".repeat(2048)],
      /^error: -kernel .*: bzImage: the command line is 2048 bytes; this kernel takes at most 2047 \(cmdline_size\)/,
    );
  });
  await withFiles([vmlinuxWithPvhNote(0x200_0000n), vmlinuxWithPvhNote(0x100_0010n)], async (bad, good) => {
    await refused(
      ["-kernel", bad],
      /^error: -kernel .*: pvh: the PVH entry 0x2000000 is outside every loaded segment of the image/,
    );
    await refused(
      ["-kernel", good, "-append", "x".repeat(2048)],
      /^error: -kernel .*: pvh: the command line is 2048 bytes; Linux takes at most 2047/,
    );
  });
});

Deno.test("a huge file is refused on its first pages, naming it, without being read whole", async () => {
  // Sparse: 3 GiB of nothing on disk. Read whole, it would need 3 GiB of memory.
  await withFiles([3 * 2 ** 30, EXIT_STATUS], async (big, kernelPath) => {
    await refused(["-kernel", big], new RegExp(`^error: -kernel ${big}: kernel: unknown format`));
    await refused(
      ["-kernel", kernelPath, "-initrd", big],
      /-initrd .*: 3 GiB does not fit in 128 MiB of RAM/,
    );
    await refused(
      ["-device", `loader,file=${big},addr=0x7c00`, "-m", "64M"],
      new RegExp(`^error: -device loader,file=${big}: 3 GiB does not fit in 64 MiB of RAM`),
    );
  });
});

Deno.test("a -serial file is not touched when an input is refused", async () => {
  await withFiles(["previous run\n", "not a kernel"], async (log, kernel) => {
    await refused(["-serial", `file:${log}`, "-kernel", kernel], /unknown format/);
    assert.equal(Deno.readTextFileSync(log), "previous run\n");
  });
});

Deno.test("a bad -bios is one line naming -bios, in dump mode as in a run", async () => {
  await withFiles(["13 bytes long"], async (bios) => {
    const line = new RegExp(`^error: -bios ${bios}: firmware: 13 bytes is not a nonzero multiple of 64 KiB`);
    await refused(["-bios", bios, "--dump-mtree"], line);
    await refused(["-bios", bios], line);
  });
});

Deno.test("every -device loader is kept: all placed, the first entered, a missing file refused", async () => {
  await withFiles([new Uint8Array([0xf4]), new Uint8Array([1, 2, 3])], async (code, table) => {
    const options = await parseCommandLine([
      "-device",
      `loader,file=${code},addr=0x7c00`,
      "-device",
      `loader,file=${table},addr=0x9000`,
    ]);
    assert.notEqual(options, "help");
    if (options === "help") return;
    using _inputs = { [Symbol.dispose]: () => closeInputs(options) };
    assert.deepEqual(options.flat.map((f) => [f.path, f.addr]), [[code, 0x7c00n], [table, 0x9000n]]);
    const plan = await bootPlanOf(options);
    const bytes = plan.writes.map((w) =>
      "data" in w ? w : { addr: w.addr, data: readSource(w.source, w.offset, w.length) }
    );
    assert.deepEqual(bytes, [{ addr: 0x7c00n, data: new Uint8Array([0xf4]) }, {
      addr: 0x9000n,
      data: new Uint8Array([1, 2, 3]),
    }]);
    assert.deepEqual(plan.cpu.cs, { selector: 0x7c0, base: 0x7c00n });
    // The one with a mode is entered, wherever it is on the command line.
    const second = await parseCommandLine([
      "-device",
      `loader,file=${table},addr=0x9000`,
      "-device",
      `loader,file=${code},addr=0x10000,mode=protected32`,
    ]);
    if (second === "help") return;
    assert.equal((await bootPlanOf(second)).cpu.rip, 0x1_0000n);
    closeInputs(second);
    await refused(
      ["-device", "loader,file=/nonexistent/first,addr=0", "-device", `loader,file=${code},addr=0x7c00`],
      /-device loader: cannot read '\/nonexistent\/first': no such file/,
    );
    await refused(
      ["-device", `loader,file=${code},addr=0x7c00`, "-device", `loader,file=${table},addr=0x7c00`],
      new RegExp(`-device loader,file=${code}: flat real: the image .* overlaps ${table}`),
    );
  });
});

Deno.test("QEMU's single-dash long options parse", async () => {
  const options = await parseCommandLine(["-m", "256M", "-serial", "null", "-nographic", "-no-reboot"]);
  assert.notEqual(options, "help");
  if (options === "help") return;
  assert.equal(options.ramSize, 256n << 20n);
  assert.deepEqual(options.serial, { kind: "null" });
  assert.equal(await parseCommandLine(["--help"]), "help");
  assert.equal(await parseCommandLine(["-h"]), "help");
  assert.equal(await parseCommandLine(["-help"]), "help");
});

Deno.test("QEMU options this board already obeys are accepted and change nothing", async () => {
  const plain = await parseCommandLine(["-m", "64M"]);
  const qemu = await parseCommandLine([
    "-enable-kvm",
    "-nodefaults",
    "-m",
    "64M",
    "-display",
    "none",
    "-no-hpet",
  ]);
  assert.deepEqual(qemu, plain);
});

Deno.test("--dump-mtree takes QEMU's habits: no value, =-f, or -f after it", async () => {
  const dump = async (...args: string[]) => {
    const options = await parseCommandLine(args);
    assert.notEqual(options, "help");
    return options === "help" ? undefined : [options.dumpMtree, options.ramSize];
  };
  assert.deepEqual(await dump("--dump-mtree"), ["tree", 128n << 20n]);
  assert.deepEqual(await dump("--dump-mtree", "-m", "64M"), ["tree", 64n << 20n]);
  assert.deepEqual(await dump("-m", "64M", "--dump-mtree"), ["tree", 64n << 20n]);
  assert.deepEqual(await dump("--dump-mtree=-f"), ["flat", 128n << 20n]);
  assert.deepEqual(await dump("--dump-mtree", "-f", "-m", "64M"), ["flat", 64n << 20n]);
  assert.deepEqual(await dump("--dump-mtree="), ["tree", 128n << 20n]);
});

Deno.test("--help lists the flags", async () => {
  const io = capture();
  assert.equal(await main(["--help"], io), 0);
  for (
    const flag of [
      "-m SIZE",
      "-kernel FILE",
      "-append",
      "-initrd",
      "-bios",
      "-serial",
      "--dump-mtree",
      "--trace-memslots",
      "-enable-kvm",
      "-display none",
    ]
  ) {
    assert.ok(io.stdout[0].includes(flag), flag);
  }
});

Deno.test({
  name: "the main command runs the built-in guest to its reset and returns 0",
  ignore: !KVM.available,
  async fn() {
    const io = capture();
    assert.equal(await main([], io), 0);
    const text = io.text();
    assert.match(text, /hello64: 64-bit long mode/);
    assert.match(text, /IOAPIC version register = 0x[0-9a-f]{8}/);
    assert.match(text, /UART interrupt taken on vector 0x24/);
    assert.match(text, /after 50000000 loop iterations/);
    assert.match(text, /goodbye/);
    assert.deepEqual(io.stderr, []);
  },
});

Deno.test({
  name: "-machine kernel-irqchip=split runs the built-in guest on our PIC, IOAPIC and PIT",
  ignore: !KVM.available,
  async fn() {
    const io = capture();
    assert.equal(await main(["-machine", "pc,kernel-irqchip=split"], io), 0);
    const text = io.text();
    // QEMU's userspace IOAPIC is version 0x20 (KVM's in-kernel one says 0x11), 24 entries.
    assert.match(text, /IOAPIC version register = 0x00170020/);
    assert.match(text, /UART interrupt taken on vector 0x24/);
    assert.match(text, /goodbye/);
    assert.deepEqual(io.stderr, []);
  },
});

Deno.test("-machine: the pc board, kernel-irqchip on or split, with any -smp and devices", async () => {
  const parsed = async (...args: string[]) => {
    const options = await parseCommandLine(args);
    assert.ok(options !== "help");
    return options.irqchip;
  };
  assert.equal(await parsed(), undefined);
  assert.equal(await parsed("-machine", "pc"), "kernel");
  assert.equal(await parsed("-machine", "pc,kernel-irqchip=on"), "kernel");
  assert.equal(await parsed("-machine", "kernel-irqchip=split"), "split");
  assert.equal(await parsed("-M", "type=pc,accel=kvm,kernel_irqchip=split"), "split");
  await refused(["-machine", "q35"], /-machine q35: the board is QEMU's pc \(i440fx\), not "q35"/);
  await refused(["-machine", "pc,kernel-irqchip=off"], /kernel-irqchip takes on or split/);
  await refused(["-machine", "pc,hpet=on"], /unknown property "hpet"/);
  assert.equal(await parsed("-machine", "kernel-irqchip=split", "-smp", "4"), "split");
  assert.equal(await parsed("-machine", "kernel-irqchip=split", "-smp", "300"), "split");
  assert.equal(await parsed("-smp", "255"), undefined);
  assert.equal(await parsed("-machine", "kernel-irqchip=split", "-device", "virtio-rng-pci"), "split");
});

Deno.test({
  name: "--timings says where the time and the resident memory went (two lines on stderr)",
  ignore: !KVM.available,
  async fn() {
    const io = capture();
    assert.equal(await main(["--timings"], io), 0);
    const [times, memory] = io.stderr;
    assert.match(
      times,
      /^timings: isolate start to main\(\) [\d.]+ ms \(module loading from (the bundle|source)\), VM creation [\d.]+ ms, devices and monitors ready [\d.]+ ms, guest run [\d.]+ ms \(\d+ exits\)$/,
    );
    const mib = [...memory.matchAll(/([\d.]+) MiB/g)].map((m) => Number(m[1]));
    assert.equal(mib.length, 3, memory);
    assert.ok(mib.every((x) => x > 0), memory);
    assert.equal(io.stderr.length, 2);
  },
});

Deno.test({
  name: "--trace-memslots prints each memslot call; --dump-mtree=-f marks KVM-mapped ranges",
  ignore: !KVM.available,
  async fn() {
    const io = capture();
    assert.equal(await main(["--dump-mtree=-f", "--trace-memslots", "-m", "256M"], io), 0);
    assert.ok(
      io.stderr.some((l) =>
        /^KVM_SET_USER_MEMORY_REGION slot=0:0 flags=0 gpa=0x0 size=0xc0000 host=0x[0-9a-f]+ -> 0$/.test(l)
      ),
      io.stderr.join("\n"),
    );
    assert.ok(
      io.stderr.some((l) => / flags=2 gpa=0xfffc0000 size=0x40000 /.test(l)),
      "pc.bios is a read-only slot",
    );
    assert.match(io.stdout[0], /00000000000c0000-00000000000dffff \(prio 1, rom\): pc\.rom KVM\n/);
  },
});

Deno.test({
  name: "-device loader: a flat binary at an address in real mode, as QEMU's generic loader",
  ignore: !KVM.available,
  async fn() {
    // mov al,'H'; mov dx,0x3f8; out dx,al; mov al,'i'; out dx,al; mov al,10; out dx,al;
    // mov al,7; mov dx,0x501; out dx,al  — isa-debug-exit: status (7 << 1) | 1
    const code = [
      0xb0,
      0x48,
      0xba,
      0xf8,
      0x03,
      0xee,
      0xb0,
      0x69,
      0xee,
      0xb0,
      0x0a,
      0xee,
      0xb0,
      0x07,
      0xba,
      0x01,
      0x05,
      0xee,
    ];
    const path = await Deno.makeTempFile({ suffix: ".bin" });
    try {
      await Deno.writeFile(path, Uint8Array.from(code));
      const io = capture();
      assert.equal(await main(["-device", `loader,file=${path},addr=0x7c00`], io), 15);
      assert.equal(io.text(), "Hi\n");
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test({
  name: "a triple fault ends the run with the reason, a register dump and status 1",
  ignore: !KVM.available,
  async fn() {
    // 32-bit flat code at 0x8000: lidt [0x8010] (an empty IDT); ud2 — #UD, then #DF, then shutdown.
    const code = [
      0x0f,
      0x01,
      0x1d,
      0x10,
      0x80,
      0x00,
      0x00,
      0x0f,
      0x0b,
      0xf4,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
    ];
    const path = await Deno.makeTempFile({ suffix: ".bin" });
    try {
      await Deno.writeFile(path, Uint8Array.from(code));
      const io = capture();
      assert.equal(await main(["-device", `loader,file=${path},addr=0x8000,mode=protected32`], io), 1);
      assert.equal(io.stderr.length, 1);
      if (io.stderr[0].includes(RESET_STATE_NOTE)) {
        // kvm_amd resets the vCPU on a shutdown: the dump is the reset state, and the line says so.
        assert.match(
          io.stderr[0],
          /^error: triple fault \(KVM_EXIT_SHUTDOWN\); this KVM reset the vCPU .*\nRAX=/,
        );
        assert.match(io.stderr[0], /\nRIP=000000000000fff0 /);
      } else {
        // kvm_intel and kvm_pvm keep the faulting context.
        assert.match(io.stderr[0], /^error: triple fault \(KVM_EXIT_SHUTDOWN\)\nRAX=/);
        assert.match(io.stderr[0], /\nRIP=0000000000008007 /); // the ud2
        assert.match(io.stderr[0], /\nIDT= {5}0000000000000000 00000000\n/);
      }
    } finally {
      await Deno.remove(path);
    }
  },
});

/** Why taps cannot be made here, or undefined. */
function tapSkipReason(): string | undefined {
  try {
    Deno.statSync("/dev/net/tun");
  } catch {
    return "/dev/net/tun is missing";
  }
  return Deno.uid() === 0 ? undefined : "creating a tap needs root (CAP_NET_ADMIN)";
}
const TAP_SKIP = tapSkipReason();
if (TAP_SKIP) console.log(`cli/main_test.ts: tap cases skipped: ${TAP_SKIP}`);

/** This process's open fds on /dev/net/tun. */
function tunFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
    try {
      return Deno.readLinkSync(`/proc/self/fd/${e.name}`) === "/dev/net/tun";
    } catch {
      return false;
    }
  }).length;
}

/** A tap name unlikely to clash with another run's. */
function tapName(tag: string): string {
  return `kvc${tag}${Deno.pid % 10_000}${Math.floor(Math.random() * 100)}`;
}

Deno.test("virtio-net: every bad -netdev / -device virtio-net-pci line is one line naming it, status 2, before any tap", async () => {
  const net = ["-netdev", "tap,id=n0,script=no,downscript=no"];
  const cases: [string[], RegExp][] = [
    [["-netdev", "user,id=n0"], /-netdev user,id=n0: netdev type 'user' is not supported \(only tap\)/],
    [["-netdev", "tap,ifname=x"], /-netdev tap,ifname=x: Parameter 'id' is missing/],
    [["-netdev", "tap,id=0n"], /id '0n' is not a letter/],
    [["-netdev", "tap,id=n0,script=/etc/qemu-ifup"], /script=\/etc\/qemu-ifup: only script=no is supported/],
    [["-netdev", "tap,id=n0,vhost=on"], /-netdev tap,id=n0,vhost=on: tap: property 'vhost' is not supported/],
    [["-netdev", "tap,id=n0,ifname=a-name-of-16-byt"], /ifname 'a-name-of-16-byt' is not an interface name/],
    [[...net, "-netdev", "tap,id=n0"], /-netdev tap,id=n0: Duplicate ID 'n0' for netdev/],
    [
      [...net, "-device", "virtio-net-pci,netdev=n1"],
      /Property 'virtio-net-pci.netdev' can't find value 'n1'/,
    ],
    [["-device", "virtio-net-pci"], /-device virtio-net-pci: netdev=ID is required/],
    [
      [...net, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34"],
      /Property 'virtio-net-pci.mac' doesn't take value '52:54:00:12:34'/,
    ],
    [[...net, "-device", "virtio-net-pci,netdev=n0,mac=01:00:5e:00:00:01"], /is a multicast address/],
    [
      [...net, "-device", "virtio-net-pci,netdev=n0,vectors=4"],
      /virtio-net-pci: property 'vectors' is not supported/,
    ],
    [
      [...net, "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-net-pci,netdev=n0"],
      /Property 'virtio-net-pci.netdev' can't take value 'n0', it's in use/,
    ],
    [
      [...net, "-device", "virtio-net-pci,netdev=n0,csum=maybe"],
      /virtio-net-pci,netdev=n0,csum=maybe: csum=maybe: expected on or off/,
    ],
    [
      [...net, "-device", "virtio-net-pci,netdev=n0,guest_uso4=off"],
      /property 'guest_uso4' is not supported/,
    ],
  ];
  const before = TAP_SKIP ? 0 : tunFds();
  for (const [args, message] of cases) {
    const io = capture();
    assert.equal(await main(args, io), 2, args.join(" "));
    assert.equal(io.stderr.length, 1, args.join(" "));
    assert.match(io.stderr[0], message);
    assert.match(io.stderr[0], /^error: .*\(try --help\)$/);
  }
  if (!TAP_SKIP) assert.equal(tunFds(), before, "no tap was opened");
});

Deno.test({
  name: "virtio-net: QEMU's offload properties switch features off; the defaults are QEMU's",
  ignore: TAP_SKIP !== undefined,
  async fn() {
    const name = tapName("f");
    const options = await parseCommandLine([
      ...["-netdev", `tap,id=n0,ifname=${name},script=no,downscript=no`],
      ...["-device", "virtio-net-pci,netdev=n0"],
      ...["-netdev", `tap,id=n1,ifname=${name}b,script=no,downscript=no`],
      ...["-device", "virtio-net-pci,netdev=n1,mrg_rxbuf=off,csum=off,guest_tso6=on"],
    ]);
    assert.notEqual(options, "help");
    if (options === "help") return;
    try {
      const features = options.pciDevices.map((d) => d.type === "virtio-net-pci" ? d.features : undefined);
      assert.deepEqual(features, [VIRTIO_NET_DEFAULT_FEATURES, virtioNetFeatures(["mrg_rxbuf", "csum"])]);
      assert.equal(features[1]! & VirtioNetFeature.HOST_TSO4, 0n, "no TSO without checksums");
      assert.equal(features[1]! & VirtioNetFeature.GUEST_TSO6, VirtioNetFeature.GUEST_TSO6);
    } finally {
      for (const tap of options.taps) tap.close();
    }
  },
});

Deno.test({
  name:
    "virtio-net: a tap that cannot be opened is named with the reason; whatever was opened before is closed",
  ignore: TAP_SKIP !== undefined,
  async fn() {
    await withFiles([1 << 20], async (disk) => {
      const before = tunFds();
      const io = capture();
      const args = ["-netdev", "tap,id=n0,ifname=lo", "-device", "virtio-net-pci,netdev=n0"];
      assert.equal(await main(args, io), 2);
      assert.equal(io.stderr.length, 1);
      assert.match(io.stderr[0], /-netdev tap,id=n0,ifname=lo: could not open tap "lo": .*TUNSETIFF.*EINVAL/);
      assert.match(io.stderr[0], /not a single-queue tap/);
      // A good tap, then a drive that is refused: the tap is closed (and, being ours, gone).
      const name = tapName("a");
      using holder = DiskImage.open(disk);
      const io2 = capture();
      const args2 = [
        "-netdev",
        `tap,id=n0,ifname=${name},script=no,downscript=no`,
        "-device",
        "virtio-net-pci,netdev=n0",
        "-drive",
        `file=${disk},if=virtio`,
      ];
      assert.equal(await main(args2, io2), 2);
      assert.match(io2.stderr[0], /Failed to get "write" lock/);
      holder.close();
      assert.equal(tunFds(), before, "every tap fd closed");
      assert.throws(() => Deno.statSync(`/sys/class/net/${name}`), Deno.errors.NotFound);
    });
  },
});

Deno.test({
  name:
    "virtio-net: MACs default as QEMU's (52:54:00:12:34:56 up, skipping given ones); --dump-mtree shows the card",
  ignore: TAP_SKIP !== undefined,
  async fn() {
    const names = [tapName("x"), tapName("y"), tapName("z")];
    const args = [
      ...names.flatMap((n, i) => ["-netdev", `tap,id=n${i},ifname=${n},script=no,downscript=no`]),
      "-device",
      "virtio-net-pci,netdev=n0",
      "-device",
      "virtio-net-pci,netdev=n1,mac=52:54:00:12:34:56,id=nic1",
      "-device",
      "virtio-net-pci,netdev=n2",
    ];
    const options = await parseCommandLine(args);
    assert.ok(options !== "help");
    try {
      const macs = options.pciDevices.map((d) => d.type === "virtio-net-pci" ? d.mac : []);
      assert.deepEqual(macs, [
        [0x52, 0x54, 0, 0x12, 0x34, 0x57],
        [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        [0x52, 0x54, 0, 0x12, 0x34, 0x58],
      ]);
      assert.deepEqual(options.taps.map((t) => t.name), names);
      assert.equal(options.netBackends.length, 3);
    } finally {
      for (const tap of options.taps) tap.close();
    }
    const io = capture();
    assert.equal(await main(["--dump-mtree", ...args], io), 0, io.stderr.join("\n"));
    assert.match(io.stdout.join("\n"), /\(prio 0, i\/o\): virtio-pci-common-virtio-net/);
    for (const n of names) assert.throws(() => Deno.statSync(`/sys/class/net/${n}`), Deno.errors.NotFound);
  },
});

Deno.test("-gdb: two stubs (-s counts as one), a spec that is not tcp:[HOST]:PORT, a port out of range: one line, status 2", async () => {
  await refused(["-s", "-gdb", "tcp::1235"], /^error: -gdb: one gdb stub at a time, but 2 were asked for/);
  await refused(["-gdb", "tcp::1", "-gdb", "tcp::2"], /one gdb stub at a time/);
  await refused(["-gdb", "unix:/tmp/g.sock"], /^error: -gdb unix:\/tmp\/g\.sock: expected tcp:\[HOST\]:PORT/);
  await refused(
    ["-gdb", "tcp::70000"],
    /^error: -gdb tcp::70000: expected tcp:\[HOST\]:PORT with a port from 1 to 65535/,
  );
});
