/**
 * Debian's kernel (linux-image-amd64) as a real client of the Linux boot protocol: booted from its
 * uncompressed vmlinux (extracted from the bzImage's payload with the system's xz), it must print
 * `Linux version`, `Command line:` with exactly our command line, one `BIOS-e820:` line per entry of
 * the board's e820 table, and find our MP table. The run is stopped from the serial callback once
 * those lines are out (on this platform Linux later stops on an emulation failure anyway: docs/kvm-abi.md
 * §8). Skips, saying why, without a kernel, xz or /dev/kvm.
 */
import assert from "node:assert/strict";
import { bzImagePayload, decompressCommand, E820_RAM, kvmAvailability, PcMachine } from "../mod.ts";

const KVM = kvmAvailability();
const KERNEL = (() => {
  try {
    const name = [...Deno.readDirSync("/boot")].map((e) => e.name).filter((n) => n.startsWith("vmlinuz-"))
      .sort().at(-1);
    return name ? `/boot/${name}` : undefined;
  } catch {
    return undefined;
  }
})();
const skip = !KVM.available
  ? `no usable /dev/kvm (${KVM.reason})`
  : !KERNEL
  ? "no /boot/vmlinuz-* (install Debian's linux-image-amd64)"
  : undefined;
if (skip) console.log(`tests/linux_boot_test.ts: skipped: ${skip}`);

const CMDLINE = "earlyprintk=serial,ttyS0,115200 console=ttyS0 noxsave reboot=k panic=-1 pci=off nomodule " +
  "nokaslr acpi=off 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/** The kernel's uncompressed ELF, extracted with the system's decompressor (null if it is missing). */
async function vmlinux(path: string): Promise<Uint8Array | null> {
  const payload = bzImagePayload(Deno.readFileSync(path));
  const [tool, ...args] = decompressCommand(payload.format);
  const dir = await Deno.makeTempDir({ prefix: "vmlinux-" });
  try {
    const compressed = `${dir}/payload`;
    await Deno.writeFile(compressed, payload.stream);
    const out = await new Deno.Command(tool, { args: [...args, compressed], stdout: "piped", stderr: "null" })
      .output();
    return out.success ? out.stdout : null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `entries` sorted, with overlapping or adjacent entries of one type merged (Linux's sanitizer). */
function mergeE820(entries: { addr: bigint; size: bigint; type: number }[]) {
  const out: { addr: bigint; size: bigint; type: number }[] = [];
  for (const e of [...entries].sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0))) {
    const last = out.at(-1);
    if (last && last.type === e.type && e.addr <= last.addr + last.size) {
      const end = e.addr + e.size > last.addr + last.size ? e.addr + e.size : last.addr + last.size;
      last.size = end - last.addr;
    } else {
      out.push({ ...e });
    }
  }
  return out;
}

/** Linux's `e820__print_table` line for one entry. */
function e820Line(addr: bigint, size: bigint, type: number): string {
  const h = (v: bigint) => `0x${v.toString(16).padStart(16, "0")}`;
  return `BIOS-e820: [mem ${h(addr)}-${h(addr + size - 1n)}] ${type === E820_RAM ? "usable" : "reserved"}`;
}

Deno.test({
  name:
    "Debian's vmlinux prints its version, exactly our command line and our e820 map, and finds our MP table",
  ignore: skip !== undefined,
  async fn() {
    const image = await vmlinux(KERNEL!);
    if (!image) {
      console.log(
        "tests/linux_boot_test.ts: the kernel's decompressor tool is missing; vmlinux part skipped",
      );
      return;
    }
    let text = "";
    const decoder = new TextDecoder();
    using pc = await PcMachine.create({
      ramSize: 256n << 20n,
      kernel: { image, cmdline: CMDLINE },
      serial: (byte) => {
        text += decoder.decode(Uint8Array.of(byte), { stream: true });
        if (byte === 0x0a && /found SMP MP-table at/.test(text)) pc.stop({ kind: "quit" });
      },
    });
    const outcome = pc.run();
    const lines = text.split(/\r?\n/).map((l) => l.replace(/^\[\s*[\d.]+\] /, ""));
    assert.equal(outcome.kind, "quit", `the kernel stopped early:\n${text}\n${JSON.stringify(outcome)}`);
    assert.ok(lines.some((l) => /^Linux version \d+\.\d+/.test(l)), text);
    assert.ok(lines.includes(`Command line: ${CMDLINE}`), text);
    // The vmlinux has the PVH note, so it is entered through PVH: Linux then reserves the ISA range
    // 0xa0000-0xfffff itself (arch/x86/platform/pvh/enlighten.c) and its sanitizer merges what touches.
    assert.equal(pc.boot.cpu.mode, "protected32", pc.boot.description);
    const expected = mergeE820([...pc.e820, { addr: 0xa_0000n, size: 0x6_0000n, type: 2 }])
      .map((e) => e820Line(e.addr, e.size, e.type));
    assert.deepEqual(lines.filter((l) => l.startsWith("BIOS-e820: ")), expected);
    assert.ok(lines.includes("found SMP MP-table at [mem 0x0009fff0-0x0009ffff]"), text);
    assert.ok(lines.includes("Hypervisor detected: KVM"), text);
  },
});

Deno.test({
  name: "Debian's bzImage: its decompressor speaks over our UART (64-bit entry, zero page, earlyprintk)",
  ignore: skip !== undefined,
  async fn() {
    // Debian builds without CONFIG_X86_VERBOSE_BOOTUP, so the decompressor's progress lines are
    // compiled out; its warnings are not, and with `nokaslr` choose_random_location() warns before
    // it decompresses (decompression itself takes minutes here: docs/kvm-abi.md §8).
    let text = "";
    using pc = await PcMachine.create({
      ramSize: 256n << 20n,
      kernel: {
        image: Deno.readFileSync(KERNEL!),
        cmdline: "earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr",
      },
      serial: (byte) => {
        text += String.fromCharCode(byte);
        if (byte === 0x0a && text.includes("KASLR disabled")) pc.stop({ kind: "quit" });
      },
    });
    const outcome = pc.run();
    assert.equal(outcome.kind, "quit", `${text}\n${JSON.stringify(outcome)}`);
    assert.match(text, /\r\nKASLR disabled: 'nokaslr' on cmdline\.\r\n/);
  },
});
