/**
 * What the Linux-boot tests need from the host: Debian's newest kernel and the static busybox, or
 * why they are missing (one line naming the package), shared by the tests that boot Linux.
 *
 * @module
 */

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
