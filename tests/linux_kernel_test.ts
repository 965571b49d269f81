/**
 * The Linux loaders against a real distribution kernel (Debian's `linux-image-amd64`, installed in
 * /boot): `loadBzImage` accepts `/boot/vmlinuz-*`; its compressed payload decompresses with the
 * system's tool (`xz` for Debian) to an ELF vmlinux that `loadVmlinux` accepts, with its PT_LOAD
 * segments and entry where Linux puts them (physical `startup_64` = LOAD_PHYSICAL_ADDR =
 * `pref_address`, the kernel map at 0xffffffff80000000 + physical, everything inside the bzImage's
 * `init_size` window). When `readelf` is installed, the segments are checked against its output.
 *
 * Skips, saying why, where no kernel is readable or the decompressor is missing. Booting the kernel
 * is not tested here.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  bzImagePayload,
  decompressCommand,
  type E820Entry,
  loadBzImage,
  loadVmlinux,
  parseBzImage,
  parseVmlinux,
  readSource,
} from "../machine/loader/mod.ts";

/** Linux's __START_KERNEL_map: the kernel text is mapped at this + its physical address. */
const START_KERNEL_MAP = 0xffff_ffff_8000_0000n;
/** A 256 MiB PC: conventional memory, the EBDA/BIOS holes, RAM from 1 MiB. */
const RAM_SIZE = 0x1000_0000n;
const E820: E820Entry[] = [
  { addr: 0n, size: 0x9_fc00n, type: 1 },
  { addr: 0x9_fc00n, size: 0x400n, type: 2 },
  { addr: 0xf_0000n, size: 0x1_0000n, type: 2 },
  { addr: 0x10_0000n, size: RAM_SIZE - 0x10_0000n, type: 1 },
];
const CMDLINE = "console=ttyS0 quiet reboot=k panic=-1 pci=off nomodule nokaslr acpi=off";

/** Orders kernel versions ("6.1.0-9-amd64" before "6.1.0-57-amd64"): numbers as numbers. */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/(\d+)/);
  const pb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] === pb[i]) continue;
    return i % 2 === 1 ? Number(pa[i]) - Number(pb[i]) : pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length - pb.length;
}

/** A kernel in `dir` and, when it has a usable one, the initrd of the same version. */
interface BootPair {
  kernel?: string;
  initrd?: string;
  /** Why there is no kernel, or no initrd. */
  reason?: string;
}

/**
 * The newest readable `vmlinuz-VERSION` in `dir` and its own `initrd.img-VERSION`, matched by
 * version, so that leftovers such as an empty `initrd.img-VERSION.new` or another kernel's initrd
 * are never taken. An initrd that is missing, unreadable or empty is reported, not used.
 */
function findBootPair(dir = "/boot"): BootPair {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.isFile).map((e) => e.name);
  } catch (error) {
    return { reason: `${dir} is not readable (${(error as Error).message})` };
  }
  const versions = names.filter((n) => n.startsWith("vmlinuz-")).map((n) => n.slice("vmlinuz-".length))
    .sort(compareVersions).reverse();
  const readable = (path: string) => {
    try {
      using file = Deno.openSync(path, { read: true });
      return file.statSync().size;
    } catch {
      return undefined; // Ubuntu makes vmlinuz root-only: try the next one
    }
  };
  for (const version of versions) {
    const kernel = `${dir}/vmlinuz-${version}`;
    if (!readable(kernel)) continue;
    const initrd = `${dir}/initrd.img-${version}`;
    const size = readable(initrd);
    if (size === undefined) return { kernel, reason: `no readable ${initrd}` };
    if (size === 0) return { kernel, reason: `${initrd} is empty` };
    return { kernel, initrd };
  }
  return {
    reason: versions.length === 0
      ? `no ${dir}/vmlinuz-* (Debian: apt-get install linux-image-amd64)`
      : `none of ${versions.map((v) => `${dir}/vmlinuz-${v}`).join(", ")} is readable`,
  };
}

/** Pipes `input` through `command`; undefined when the tool is not installed. */
async function run(command: readonly string[], input: Uint8Array): Promise<Uint8Array | undefined> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(command[0], {
      args: command.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const write = (async () => {
    const writer = child.stdin.getWriter();
    await writer.write(input);
    await writer.close();
  })();
  const [output] = await Promise.all([child.output(), write]);
  assert.ok(output.success, `${command.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  return output.stdout;
}

const pair = findBootPair();
const kernel = { path: pair.kernel };
if (kernel.path === undefined) console.log(`tests/linux_kernel_test.ts: skipped: ${pair.reason}`);
else {console.log(
    `tests/linux_kernel_test.ts: ${kernel.path} ${pair.initrd ?? `(no initrd: ${pair.reason})`}`,
  );}

Deno.test("the kernel and its initrd are picked as a pair by version, never a leftover", () => {
  const dir = Deno.makeTempDirSync({ prefix: "boot-" });
  try {
    const files: [string, string][] = [
      ["vmlinuz-6.1.0-9-amd64", "old kernel"],
      ["initrd.img-6.1.0-9-amd64", "old initrd"],
      ["vmlinuz-6.1.0-57-amd64", "kernel"],
      ["initrd.img-6.1.0-57-amd64", "initrd"],
      ["initrd.img-6.1.0-57-amd64.new", ""], // what an interrupted update-initramfs leaves
      ["initrd.img-6.1.0-60-amd64", "an initrd without its kernel"],
    ];
    for (const [name, text] of files) Deno.writeTextFileSync(`${dir}/${name}`, text);
    assert.deepEqual(findBootPair(dir), {
      kernel: `${dir}/vmlinuz-6.1.0-57-amd64`,
      initrd: `${dir}/initrd.img-6.1.0-57-amd64`,
    });
    Deno.writeTextFileSync(`${dir}/initrd.img-6.1.0-57-amd64`, "");
    assert.deepEqual(findBootPair(dir), {
      kernel: `${dir}/vmlinuz-6.1.0-57-amd64`,
      reason: `${dir}/initrd.img-6.1.0-57-amd64 is empty`,
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "loadBzImage accepts the distribution kernel, with its initrd",
  ignore: kernel.path === undefined,
  fn() {
    const image = Deno.readFileSync(kernel.path!);
    const header = parseBzImage(image);
    assert.ok(header.protocol >= 0x020c, "the 64-bit boot protocol");
    assert.ok((header.xloadflags & 1) !== 0, "XLF_KERNEL_64");
    assert.ok(header.relocatable, "a distribution kernel is relocatable");
    assert.ok(header.prefAddress >= 0x10_0000n && header.prefAddress % header.kernelAlignment === 0n);
    const initrd = pair.initrd === undefined ? undefined : Deno.readFileSync(pair.initrd);
    if (initrd === undefined) console.log(`  no initrd: ${pair.reason}`);
    const plan = loadBzImage(image, { cmdline: CMDLINE, e820: E820, ramSize: RAM_SIZE, initrd });
    assert.equal(plan.cpu.mode, "long64");
    assert.equal(plan.cpu.rip, header.prefAddress + 0x200n, "startup_64 of the compressed kernel");
    assert.equal(plan.cpu.gpr?.rsi, 0x1_0000n);
    const written = (addr: bigint) => {
      const w = plan.writes.find((w) => w.addr === addr)!;
      return "data" in w ? w.data : readSource(w.source, w.offset, w.length);
    };
    assert.deepEqual(written(header.prefAddress), image.subarray(header.protectedModeOffset));
    const zeroPage = written(0x1_0000n);
    const view = new DataView(zeroPage.buffer, zeroPage.byteOffset);
    assert.deepEqual(
      zeroPage.subarray(0x202, 0x210),
      image.subarray(0x202, 0x210),
      "HdrS, version ... copied",
    );
    assert.equal(zeroPage[0x210], 0xff);
    assert.equal(view.getUint32(0x228, true), 0x2_0000);
    assert.equal(zeroPage[0x1e8], E820.length);
    if (initrd !== undefined) {
      const addr = BigInt(view.getUint32(0x218, true));
      assert.equal(view.getUint32(0x21c, true), initrd.length);
      assert.equal(addr % 0x1000n, 0n);
      assert.ok(addr + BigInt(initrd.length) <= RAM_SIZE, "below the top of RAM");
      assert.ok(RAM_SIZE - (addr + BigInt(initrd.length)) < 0x1000n, "as high as it goes");
      assert.ok(addr >= header.prefAddress + header.initSize, "above the kernel's init_size window");
    }
    console.log(
      `  ${header.kernelVersion?.split(" ")[0]}: protocol ${header.protocol.toString(16)}, setup_sects ` +
        `${header.setupSects}, init_size 0x${header.initSize.toString(16)}, pref_address ` +
        `0x${header.prefAddress.toString(16)}, alignment 0x${header.kernelAlignment.toString(16)}, ` +
        `xloadflags 0x${header.xloadflags.toString(16)}, cmdline_size ${header.cmdlineSize}`,
    );
  },
});

Deno.test({
  name: "its payload decompresses to a vmlinux that loadVmlinux accepts, laid out where Linux puts it",
  ignore: kernel.path === undefined,
  async fn() {
    const image = Deno.readFileSync(kernel.path!);
    const header = parseBzImage(image);
    const payload = bzImagePayload(image);
    assert.equal(payload.offset, header.protectedModeOffset + header.payloadOffset);
    assert.equal(payload.data.length, header.payloadLength);
    const command = decompressCommand(payload.format);
    const vmlinux = await run(command, payload.stream);
    if (vmlinux === undefined) {
      console.log(`  skipped: ${command[0]} not found (needed for the ${payload.format} payload)`);
      return;
    }
    console.log(
      `  ${payload.format} payload: ${payload.data.length} bytes -> vmlinux ${vmlinux.length} bytes`,
    );
    assert.equal(vmlinux.length, payload.uncompressedSize, "the size the build appended");

    const elf = parseVmlinux(vmlinux);
    assert.equal(elf.entry, header.prefAddress, "startup_64 at LOAD_PHYSICAL_ADDR");
    assert.equal(elf.start, header.prefAddress);
    assert.ok(elf.end <= header.prefAddress + header.initSize, "inside the bzImage's init_size window");
    const text = elf.segments[0];
    assert.equal(text.paddr, header.prefAddress);
    assert.equal(text.vaddr, START_KERNEL_MAP + text.paddr, "the kernel map");
    for (const s of elf.segments) {
      // The percpu segment is linked at virtual 0; every other one sits in the kernel map.
      assert.ok(s.vaddr === 0n || s.vaddr === START_KERNEL_MAP + s.paddr, `segment ${s.index}`);
    }
    console.log(
      `  entry 0x${elf.entry.toString(16)}; PT_LOAD ` +
        elf.segments.map((s) =>
          `[0x${s.paddr.toString(16)}, +0x${s.memsz.toString(16)}) at 0x${s.vaddr.toString(16)}`
        ).join(", "),
    );

    // readelf seeks, so it reads a file rather than a pipe.
    const file = await Deno.makeTempFile({ suffix: ".vmlinux" });
    let readelf: Uint8Array | undefined;
    try {
      await Deno.writeFile(file, vmlinux);
      readelf = await run(["readelf", "-lW", file], new Uint8Array(0));
    } finally {
      await Deno.remove(file);
    }
    if (readelf === undefined) {
      console.log("  readelf not found: segments not cross-checked");
    } else {
      const loads = new TextDecoder().decode(readelf).split("\n").filter((l) => /^\s*LOAD\s/.test(l)).map(
        (l) => {
          const [, , vaddr, paddr, , memsz] = l.trim().split(/\s+/);
          return [BigInt(paddr), BigInt(vaddr), BigInt(memsz)];
        },
      );
      assert.deepEqual(elf.segments.map((s) => [s.paddr, s.vaddr, s.memsz]), loads);
    }

    const plan = loadVmlinux(vmlinux, { cmdline: CMDLINE, e820: E820, ramSize: RAM_SIZE });
    assert.equal(plan.cpu.rip, header.prefAddress);
    assert.equal(plan.cpu.gpr?.rsi, 0x1_0000n);
    for (const s of elf.segments) {
      const w = plan.writes.find((w) => w.addr === s.paddr);
      assert.ok(w !== undefined && "data" in w, `segment ${s.index}`);
      assert.deepEqual(w.data, vmlinux.subarray(s.offset, s.offset + s.filesz), `segment ${s.index}`);
    }
  },
});
