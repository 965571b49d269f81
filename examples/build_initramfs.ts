/**
 * Builds a tiny initramfs from Debian's busybox-static: /init prints a marker line and reboots
 * (with `reboot=k` the kernel resets through the i8042, which ends the run with status 0).
 *
 *   apt-get install busybox-static
 *   node_modules/deno/deno task example:initramfs /tmp/initramfs.cpio
 *   node_modules/deno/deno task start -kernel /boot/vmlinuz-* -initrd /tmp/initramfs.cpio \
 *     -append "console=ttyS0 reboot=k panic=-1 pci=off acpi=off rdinit=/init"
 *
 * (A full Linux boot needs hardware virtualization: see the README.)
 */
import { type CpioEntry, cpioNewc } from "../mod.ts";

/** The marker /init prints. */
export const INIT_MARKER = "kvm-ts: busybox /init reached";

/** The initramfs bytes around a static busybox binary. */
export function initramfs(busybox: Uint8Array): Uint8Array {
  const init = [
    "#!/bin/busybox sh",
    "/bin/busybox mount -t proc proc /proc",
    `/bin/busybox echo "${INIT_MARKER}"`,
    "/bin/busybox reboot -f",
    "",
  ].join("\n");
  const entries: CpioEntry[] = [
    ...["bin", "dev", "proc", "sys"].map((name): CpioEntry => ({ name, type: "directory" })),
    { name: "bin/busybox", type: "file", data: busybox },
    { name: "bin/sh", type: "symlink", data: "busybox" },
    { name: "init", type: "file", data: init },
  ];
  return cpioNewc(entries);
}

if (import.meta.main) {
  const output = Deno.args[0] ?? "initramfs.cpio";
  const busyboxPath = Deno.args[1] ?? "/bin/busybox";
  let busybox: Uint8Array;
  try {
    busybox = await Deno.readFile(busyboxPath);
  } catch (e) {
    console.error(
      `build_initramfs: cannot read ${busyboxPath} (apt-get install busybox-static): ${(e as Error).message}`,
    );
    Deno.exit(1);
  }
  const archive = initramfs(busybox);
  await Deno.writeFile(output, archive);
  console.log(`build_initramfs: wrote ${output} (${archive.length} bytes; /init prints "${INIT_MARKER}")`);
}
