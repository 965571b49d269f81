/**
 * What the Linux-boot tests need from the host: Debian's newest kernel and the static busybox, or
 * why they are missing (one line naming the package), shared by the tests that boot Linux.
 *
 * @module
 */

import assert from "node:assert/strict";
import { INIT_MARKER, initramfs, SHELL_PROMPT } from "../examples/build_initramfs.ts";
import type { HostKvm } from "../kvm/mod.ts";
import { cpioNewc } from "../machine/loader/mod.ts";
import { bzImagePayload, decompressCommand } from "../mod.ts";
import { loadOrder, parseModulesDep } from "../nested/modules.ts";
import { escape, type GuestConsole } from "./_guest_console.ts";

/** Numeric parts of a kernel version, so that 6.1.0-57 sorts after 6.1.0-9. */
function versionKey(name: string): number[] {
  return (name.match(/\d+/g) ?? []).map(Number);
}

function compareVersions(a: string, b: string): number {
  const [x, y] = [versionKey(a), versionKey(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? -1) !== (y[i] ?? -1)) return (x[i] ?? -1) - (y[i] ?? -1);
  }
  return 0;
}

/** The newest `/boot/vmlinuz-*` by version, or undefined. */
export function newestKernel(boot = "/boot"): string | undefined {
  try {
    const names = [...Deno.readDirSync(boot)].map((e) => e.name).filter((n) => n.startsWith("vmlinuz-"));
    const newest = names.sort(compareVersions).at(-1);
    return newest ? `${boot}/${newest}` : undefined;
  } catch {
    return undefined;
  }
}

/** Debian's static busybox, or undefined. */
export function readBusybox(): Uint8Array | undefined {
  try {
    return Deno.readFileSync("/bin/busybox");
  } catch {
    return undefined;
  }
}

/** Why a Linux boot test cannot run here for lack of files, or undefined. */
export function missingLinuxGuest(
  kernel: string | undefined,
  busybox: Uint8Array | undefined,
): string | undefined {
  if (!kernel) return "no /boot/vmlinuz-* (apt-get install linux-image-amd64)";
  if (!busybox) return "no /bin/busybox (apt-get install busybox-static)";
  return undefined;
}

/** Why a Linux guest cannot boot on this host's KVM (see `hostKvm`), or undefined when it can. */
export function linuxKvmSkip(kvm: HostKvm): string | undefined {
  if (kvm === "none") return "no /dev/kvm";
  if (kvm === "software") {
    return "this host's KVM emulates guest kernel code (no vmx or svm flag): Linux cannot boot on it";
  }
  return undefined;
}

/**
 * The files of the kernel modules `wanted` for `kernel` (a `/boot/vmlinuz-VERSION`), their
 * dependencies first as its `modules.dep` lists them, each named by its file name: what an
 * initramfs's /init inserts, in this order.
 */
export function moduleFiles(kernel: string, wanted: readonly string[]): { name: string; data: Uint8Array }[] {
  const version = kernel.replace(/^.*\/vmlinuz-/, "");
  const root = `/lib/modules/${version}`;
  const modules = parseModulesDep(Deno.readTextFileSync(`${root}/modules.dep`));
  return loadOrder(modules, wanted).map((path) => ({
    name: path.slice(path.lastIndexOf("/") + 1),
    data: Deno.readFileSync(`${root}/${path}`),
  }));
}

/**
 * Writes the busybox initramfs with the modules `wanted` (see {@link moduleFiles}) to `path`,
 * uncompressed: gzip ones stalled more often inside the nested VM (docs/nested-kvm.md).
 */
export async function writeInitramfs(
  path: string,
  busybox: Uint8Array,
  kernel: string,
  wanted: readonly string[],
): Promise<void> {
  await Deno.writeFile(path, initramfs(busybox, { modules: moduleFiles(kernel, wanted) }));
}

/**
 * Builds the C program `source` (a path) statically with gcc in `work` and appends it to the
 * initramfs at `initrd` as /bin/`name`, in a second cpio archive (Linux unpacks one after the other).
 *
 * @throws {Error} with gcc's messages when it does not build.
 */
export function addStaticProgram(initrd: string, source: string, name: string, work: string): void {
  const binary = `${work}/${name}`;
  const built = new Deno.Command("gcc", {
    args: ["-static", "-O2", "-o", binary, source],
    stdout: "null",
    stderr: "piped",
  }).outputSync();
  if (!built.success) throw new Error(`gcc ${source}: ${new TextDecoder().decode(built.stderr).trim()}`);
  const extra = cpioNewc([{ name: `bin/${name}`, type: "file", data: Deno.readFileSync(binary) }]);
  const base = Deno.readFileSync(initrd);
  const both = new Uint8Array(base.length + extra.length);
  both.set(base);
  both.set(extra, base.length);
  Deno.writeFileSync(initrd, both);
}

/** The front-end's arguments for a 256 MiB Linux guest booted with `initrd` and `append`, then `more`. */
export function linuxArgs(kernel: string, initrd: string, append: string, more: readonly string[]): string[] {
  return ["-m", "256M", "-kernel", kernel, "-initrd", initrd, "-append", append, ...more];
}

/** Waits for the initramfs's /init marker, then its first shell prompt; where the prompt ends. */
export async function reachShell(guest: GuestConsole): Promise<number> {
  const at = (await guest.waitFor(new RegExp(escape(INIT_MARKER)), 0, "the /init marker")).end;
  return (await guest.waitFor(new RegExp(escape(SHELL_PROMPT)), at, "the shell prompt")).end;
}

/** Types `poweroff -f` on the shell at `at`: Linux powers down through ACPI S5, the run ends with 0. */
export async function powerOff(guest: GuestConsole, at: number): Promise<void> {
  await guest.type("poweroff -f\r");
  await guest.waitFor(/reboot: Power down/, at, "the power-off");
  assert.equal(await guest.status(), 0, guest.text.slice(at));
}

/** `size` random bytes (getRandomValues fills at most 64 KiB a call). */
export function randomBytes(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
  return bytes;
}

/** The SHA-256 of `bytes` in lowercase hex, as `sha256sum` prints it. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Where Debian's x86-64 kernels link `_text` (the KASLR slide is measured from it). */
const LINK_TEXT = 0xffff_ffff_8100_0000n;

/**
 * The kernel text symbol at or below each address in `addresses`, as `name+0xoffset`: where a
 * stalled guest's vCPUs are. Debian's `System.map` is a stub (the real one is in the -dbg package),
 * so the symbols come from the running kernel's `/proc/kallsyms` when it is the same build as
 * `kernel` (as inside the nested VM), moved back by its KASLR slide; the guest must boot with
 * `nokaslr` for them to match. Otherwise, or for unknown addresses, `?`.
 */
export function kernelSymbols(kernel: string, addresses: readonly bigint[]): string[] {
  let symbols: { address: bigint; name: string }[];
  try {
    if (!kernel.endsWith(`vmlinuz-${Deno.osRelease()}`)) return addresses.map(() => "?");
    const table = Deno.readTextFileSync("/proc/kallsyms").split("\n")
      .map((line) => line.split(/\s+/))
      .filter((parts) => parts.length >= 3 && /^[tTwW]$/.test(parts[1]))
      .map(([hex, , name]) => ({ address: BigInt(`0x${hex}`), name }));
    const text = table.find((entry) => entry.name === "_text");
    if (!text || text.address === 0n) return addresses.map(() => "?"); // addresses hidden (kptr_restrict)
    const slide = text.address - LINK_TEXT;
    symbols = table.map((entry) => ({ address: entry.address - slide, name: entry.name }))
      .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  } catch {
    return addresses.map(() => "?");
  }
  return addresses.map((address) => {
    let low = 0;
    let high = symbols.length - 1;
    let found = -1;
    while (low <= high) {
      const mid = (low + high) >> 1;
      if (symbols[mid].address <= address) {
        found = mid;
        low = mid + 1;
      } else {
        high = mid - 1;
      }
    }
    return found < 0 ? "?" : `${symbols[found].name}+0x${(address - symbols[found].address).toString(16)}`;
  });
}

/** The vmlinux inside the bzImage, decompressed with the system's tool; a string says why not. */
export async function extractVmlinux(bzImage: string): Promise<Uint8Array | string> {
  const payload = bzImagePayload(Deno.readFileSync(bzImage));
  const [tool, ...args] = decompressCommand(payload.format);
  try {
    const child = new Deno.Command(tool, { args, stdin: "piped", stdout: "piped", stderr: "null" }).spawn();
    const writer = child.stdin.getWriter();
    const [out] = await Promise.all([
      child.output(),
      writer.write(payload.stream).then(() => writer.close()),
    ]);
    return out.success ? out.stdout : `${tool} failed on the kernel's payload`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return `no ${tool} to decompress the kernel's payload`;
    throw error;
  }
}
