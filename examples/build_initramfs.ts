/**
 * Builds a tiny initramfs from Debian's busybox-static. Its /init mounts /proc, /sys and /dev,
 * prints a marker line, then either starts a shell on the console (the default) or reboots at once
 * (`--reboot`; with `reboot=k` the kernel resets through the i8042, which ends the run with status 0).
 * An output name ending in `.gz` is written gzip-compressed, which the kernel unpacks as well.
 *
 *   apt-get install busybox-static
 *   node_modules/deno/deno task example:initramfs /tmp/initramfs.cpio.gz
 *   node_modules/deno/deno task start -m 256M -kernel /boot/vmlinuz-* -initrd /tmp/initramfs.cpio.gz \
 *     -append "console=ttyS0"
 *
 * In the shell, `reboot -f` resets the machine (status 0, or a new boot with `-reboot`).
 * (A full Linux boot needs hardware virtualization: see the README.)
 */
import { type CpioEntry, cpioNewc } from "../mod.ts";

/** The marker /init prints. */
export const INIT_MARKER = "kvm-ts: busybox /init reached";
/** The shell's prompt (PS1), so that a program driving the console knows when to type. */
export const SHELL_PROMPT = "kvm-ts# ";

/** What /init does after it printed {@link INIT_MARKER}. */
export type InitThen = "shell" | "reboot";

/** The /init script. */
export function initScript(then: InitThen = "shell"): string {
  const bb = "/bin/busybox";
  const lines = [
    `#!${bb} sh`,
    `${bb} mount -t proc proc /proc`,
    `${bb} mount -t sysfs sys /sys`,
    `${bb} mount -t devtmpfs dev /dev`,
    `${bb} echo "${INIT_MARKER}"`,
  ];
  if (then === "reboot") {
    lines.push(`${bb} reboot -f`);
  } else {
    lines.push(
      `${bb} --install -s`,
      "export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root",
      `export PS1='${SHELL_PROMPT}'`,
      // setsid + cttyhack: the console becomes the shell's controlling terminal (job control, ^C).
      `while true; do ${bb} setsid ${bb} cttyhack /bin/sh -l; done`,
    );
  }
  return [...lines, ""].join("\n");
}

/** The initramfs bytes around a static busybox binary; /init then starts a shell or reboots. */
export function initramfs(busybox: Uint8Array, options: { then?: InitThen } = {}): Uint8Array {
  const dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "root", "tmp"];
  const entries: CpioEntry[] = [
    ...dirs.map((name): CpioEntry => ({ name, type: "directory" })),
    { name: "bin/busybox", type: "file", data: busybox },
    { name: "bin/sh", type: "symlink", data: "busybox" },
    { name: "init", type: "file", data: initScript(options.then) },
  ];
  return cpioNewc(entries);
}

/** `bytes` gzip-compressed (the format Linux unpacks an initramfs from by default). */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

if (import.meta.main) {
  const args = Deno.args.filter((a) => a !== "--reboot");
  const then: InitThen = Deno.args.includes("--reboot") ? "reboot" : "shell";
  const output = args[0] ?? "initramfs.cpio";
  const busyboxPath = args[1] ?? "/bin/busybox";
  let busybox: Uint8Array;
  try {
    busybox = await Deno.readFile(busyboxPath);
  } catch (e) {
    console.error(
      `build_initramfs: cannot read ${busyboxPath} (apt-get install busybox-static): ${(e as Error).message}`,
    );
    Deno.exit(1);
  }
  let archive = initramfs(busybox, { then });
  if (output.endsWith(".gz")) archive = await gzip(archive);
  await Deno.writeFile(output, archive);
  console.log(
    `build_initramfs: wrote ${output} (${archive.length} bytes; /init prints "${INIT_MARKER}", then ${
      then === "shell" ? "starts a shell" : "reboots"
    })`,
  );
}
