/**
 * Boots one Linux kernel and initrd under kvm-ts, `qemu-system-x86_64 -accel kvm -machine microvm`
 * and `-machine pc`, in one run, with the same command line, and reports for each: the time from
 * the command to the kernel's first console line, to a marker line (the busybox /init of
 * examples/build_initramfs.ts prints one), and to the guest's exit — each where it happens before
 * the timeout. On a host without hardware virtualization Linux never gets to /init (docs/kvm-abi.md §8):
 * there the first console line is what can be compared.
 *
 * Usage: deno task bench:linux [--kernel /boot/vmlinuz-…] [--initrd FILE] [--append TEXT] [--timeout 60]
 *          [--first REGEX]   (the kernel's first line; firmware and option ROMs print before it)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { INIT_MARKER, initramfs } from "../examples/build_initramfs.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    kernel: { type: "string" },
    initrd: { type: "string" },
    append: {
      type: "string",
      default: "earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr reboot=k panic=-1 pci=off nomodule " +
        "acpi=off rdinit=/init 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd",
    },
    marker: { type: "string", default: INIT_MARKER },
    first: { type: "string", default: "KASLR disabled|Linux version" },
    timeout: { type: "string", default: "60" },
  },
});
const kernel = values.kernel ??
  [...Deno.readDirSync("/boot")].map((e) => `/boot/${e.name}`).filter((n) => n.includes("vmlinuz-")).sort()
    .at(-1);
if (!kernel) throw new Error("no kernel: pass --kernel or apt-get install linux-image-amd64");
const TIMEOUT_MS = Number(values.timeout) * 1000;
const FIRST = new RegExp(values.first!);

interface Result {
  firstLine?: number;
  marker?: number;
  exit?: number;
  status?: number;
  first?: string;
}

async function boot(command: string, args: string[]): Promise<Result> {
  const start = performance.now();
  const child = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "null" }).spawn();
  const result: Result = {};
  const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUT_MS);
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    text += decoder.decode(chunk, { stream: true });
    // The kernel's first line (firmware and QEMU's option ROMs print before it), once complete.
    const line = text.split(/\r?\n/).slice(0, -1).find((l) => FIRST.test(l));
    if (result.firstLine === undefined && line !== undefined) {
      result.firstLine = performance.now() - start;
      result.first = line.trim().slice(0, 60);
    }
    if (result.marker === undefined && text.includes(values.marker!)) {
      result.marker = performance.now() - start;
    }
  }
  const status = await child.status;
  clearTimeout(timer);
  if (status.signal !== "SIGKILL") {
    result.exit = performance.now() - start;
    result.status = status.code;
  }
  return result;
}

const dir = await Deno.makeTempDir({ prefix: "linux-bench-" });
try {
  let initrd = values.initrd;
  if (!initrd) {
    initrd = `${dir}/initramfs.cpio`;
    await Deno.writeFile(initrd, initramfs(await Deno.readFile("/bin/busybox"), { then: "reboot" }));
  }
  const common = ["-kernel", kernel, "-initrd", initrd, "-append", values.append!];
  const qemu = [
    "-accel",
    "kvm",
    "-m",
    "256M",
    "-nodefaults",
    "-no-reboot",
    "-display",
    "none",
    "-serial",
    "stdio",
  ];
  const main = new URL("../main.ts", import.meta.url).pathname;
  const runs: [string, string, string[]][] = [
    ["kvm-ts", Deno.execPath(), [
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-sys",
      main,
      "-m",
      "256M",
      ...common,
    ]],
    ["qemu -machine microvm", "qemu-system-x86_64", ["-machine", "microvm", ...qemu, ...common]],
    ["qemu -machine pc", "qemu-system-x86_64", ["-machine", "pc", ...qemu, ...common]],
  ];
  console.log(
    `kernel ${kernel}, initrd ${initrd}, timeout ${values.timeout} s\ncommand line: ${values.append}\n`,
  );
  const ms = (v?: number) => (v === undefined ? "—".padStart(9) : `${(v / 1000).toFixed(2)} s`.padStart(9));
  console.log(
    `${"".padEnd(22)} ${"kernel".padStart(9)} ${"marker".padStart(9)} ${
      "exit".padStart(9)
    }  kernel's first line`,
  );
  for (const [name, command, args] of runs) {
    const r = await boot(command, args);
    console.log(
      `${name.padEnd(22)} ${ms(r.firstLine)} ${ms(r.marker)} ${ms(r.exit)}  ${r.first ?? "(nothing)"}`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
