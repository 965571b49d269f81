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
 * `--module FILE.ko` (repeatable) puts a kernel module in the archive, loaded by /init in the order
 * given; with its dependencies, as kmod lists them for the kernel you boot (`V`: its version):
 *
 *   node_modules/deno/deno task example:initramfs /tmp/initramfs.cpio \
 *     $(modprobe -S $V --show-depends -a virtio_pci virtio_net | awk '{print "--module", $2}')
 *
 * In the shell, `reboot -f` resets the machine (status 0, or a new boot with `-reboot`).
 * (A full Linux boot needs hardware virtualization: see the README.)
 */
import { parseArgs } from "node:util";
import { type CpioEntry, cpioNewc } from "../mod.ts";

/** The marker /init prints. */
export const INIT_MARKER = "kvm-ts: busybox /init reached";
/** The shell's prompt (PS1), so that a program driving the console knows when to type. */
export const SHELL_PROMPT = "kvm-ts# ";

/** What /init does after it printed {@link INIT_MARKER}. */
export type InitThen = "shell" | "reboot";

/** The kernel modules the power-button handler needs: the ACPI button driver and evdev. */
export const POWER_BUTTON_MODULES: readonly string[] = [
  "kernel/drivers/acpi/button.ko",
  "kernel/drivers/input/evdev.ko",
];

/** Options of {@link initScript}. */
export interface InitOptions {
  /** After the marker: a shell on the console (default) or an immediate reboot. */
  then?: InitThen;
  /** Module files (names under /lib/modules in the archive) to load first, in this order. */
  modules?: readonly string[];
  /**
   * Shut down on the ACPI power button (the monitor's `system_powerdown`): the first event of the
   * "Power Button" input device runs `poweroff -f`, which Linux does through ACPI S5. Debian builds
   * the button driver and evdev as modules: pass them in `modules` (see {@link POWER_BUTTON_MODULES}).
   */
  powerButton?: boolean;
}

/** The /init script. */
export function initScript(options: InitThen | InitOptions = {}): string {
  const { then = "shell", modules = [], powerButton = false } = typeof options === "string"
    ? { then: options }
    : options;
  const bb = "/bin/busybox";
  const lines = [
    `#!${bb} sh`,
    `${bb} mount -t proc proc /proc`,
    `${bb} mount -t sysfs sys /sys`,
    `${bb} mount -t devtmpfs dev /dev`,
    ...modules.map((name) => `${bb} insmod /lib/modules/${name}`),
  ];
  if (powerButton) {
    // busybox acpid would do, but needs a configuration tree; one read of the button's event
    // device is all that is needed (a read of whole events: evdev refuses reads shorter than one).
    lines.push(
      `for e in /sys/class/input/event*; do`,
      `  if [ "$(${bb} cat $e/device/name 2>/dev/null)" = "Power Button" ]; then`,
      `    (${bb} dd if=/dev/input/\${e##*/} of=/dev/null bs=4096 count=1 2>/dev/null && ${bb} echo "kvm-ts: power button" && ${bb} poweroff -f) &`,
      `  fi`,
      `done`,
    );
  }
  lines.push(`${bb} echo "${INIT_MARKER}"`);
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

/**
 * The initramfs bytes around a static busybox binary; /init then starts a shell or reboots.
 * `modules` are kernel module files put under /lib/modules and loaded by /init in order.
 */
export function initramfs(
  busybox: Uint8Array,
  options: { then?: InitThen; modules?: { name: string; data: Uint8Array }[]; powerButton?: boolean } = {},
): Uint8Array {
  const dirs = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "root", "tmp"];
  const modules = options.modules ?? [];
  const entries: CpioEntry[] = [
    ...dirs.map((name): CpioEntry => ({ name, type: "directory" })),
    ...(modules.length === 0
      ? []
      : [{ name: "lib", type: "directory" }, { name: "lib/modules", type: "directory" }] as CpioEntry[]),
    ...modules.map((m): CpioEntry => ({ name: `lib/modules/${m.name}`, type: "file", data: m.data })),
    { name: "bin/busybox", type: "file", data: busybox },
    { name: "bin/sh", type: "symlink", data: "busybox" },
    {
      name: "init",
      type: "file",
      data: initScript({
        then: options.then,
        modules: modules.map((m) => m.name),
        powerButton: options.powerButton,
      }),
    },
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
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { reboot: { type: "boolean" }, module: { type: "string", multiple: true } },
    allowPositionals: true,
  });
  const then: InitThen = values.reboot ? "reboot" : "shell";
  const output = positionals[0] ?? "initramfs.cpio";
  const busyboxPath = positionals[1] ?? "/bin/busybox";
  // Each once, in the order given (`modprobe --show-depends -a` repeats shared dependencies).
  const modulePaths = [...new Set(values.module ?? [])];
  let busybox: Uint8Array;
  const modules: { name: string; data: Uint8Array }[] = [];
  try {
    busybox = await Deno.readFile(busyboxPath);
  } catch (e) {
    console.error(
      `build_initramfs: cannot read ${busyboxPath} (apt-get install busybox-static): ${(e as Error).message}`,
    );
    Deno.exit(1);
  }
  for (const path of modulePaths) {
    if (!path.endsWith(".ko")) {
      console.error(`build_initramfs: --module ${path}: busybox's insmod needs an uncompressed .ko file`);
      Deno.exit(1);
    }
    try {
      modules.push({ name: path.slice(path.lastIndexOf("/") + 1), data: await Deno.readFile(path) });
    } catch (e) {
      console.error(`build_initramfs: cannot read module ${path}: ${(e as Error).message}`);
      Deno.exit(1);
    }
  }
  let archive = initramfs(busybox, { then, modules });
  if (output.endsWith(".gz")) archive = await gzip(archive);
  await Deno.writeFile(output, archive);
  console.log(
    `build_initramfs: wrote ${output} (${archive.length} bytes; /init loads ${modules.length} modules, prints "${INIT_MARKER}", then ${
      then === "shell" ? "starts a shell" : "reboots"
    })`,
  );
}
