/**
 * What the Linux-boot tests need from the host: Debian's newest kernel and the static busybox, or
 * why they are missing (one line naming the package), shared by the tests that boot Linux.
 *
 * @module
 */

import { bzImagePayload, decompressCommand } from "../mod.ts";

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
