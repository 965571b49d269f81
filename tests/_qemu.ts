/**
 * Running a guest image under QEMU 7.2 (the reference) for the comparison tests: the PC machine
 * with our board's devices, KVM where /dev/kvm works (TCG otherwise), a temporary directory and a
 * timeout.
 *
 * @module
 */

import assert from "node:assert/strict";

/** The QEMU binary (Debian: qemu-system-x86). */
export const QEMU = "qemu-system-x86_64";
/**
 * QEMU's arguments for a Linux guest beside kvm-ts's: the PC machine on KVM with the host's CPU,
 * nothing by default, the serial port and QEMU's monitor on stdio (the console helpers drive both
 * VMMs alike, Ctrl-A c included), and a reboot ending the run.
 */
export const QEMU_LINUX_CONSOLE: readonly string[] = [
  ...["-accel", "kvm", "-cpu", "host", "-machine", "pc", "-nodefaults", "-no-user-config"],
  ...["-display", "none", "-serial", "mon:stdio", "-no-reboot"],
];
/** A run taking longer than this is killed (SeaBIOS alone takes ~3 s under the nested kvm_pvm). */
const RUN_TIMEOUT_MS = 120_000;

/** QEMU's version, or why it cannot be run. */
export function probeQemu(): { version?: string; reason?: string } {
  try {
    const out = new Deno.Command(QEMU, { args: ["--version"], stdout: "piped", stderr: "null" }).outputSync();
    return {
      version: new TextDecoder().decode(out.stdout).split("\n")[0].replace(/^QEMU emulator version /, ""),
    };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return { reason: `${QEMU} not found (Debian: qemu-system-x86)` };
    }
    throw error;
  }
}

function kvmUsable(): boolean {
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

/** The accelerator the comparison runs use. */
export const ACCEL: "kvm" | "tcg" = kvmUsable() ? "kvm" : "tcg";

/** What a run printed and how it ended. */
export interface QemuRun {
  command: string;
  serial: string;
  stderr: string;
  status: number;
  seconds: number;
}

/**
 * Runs `image` under `-machine pc` with COM1 on stdout and isa-debug-exit, booted with `bootFlag`
 * (`-kernel` or `-bios`), plus `extra` arguments. The image is passed by a relative path, so the
 * recorded command line is the same on every machine.
 */
export async function runQemuGuest(
  name: string,
  image: Uint8Array,
  bootFlag: "-kernel" | "-bios",
  extra: string[] = [],
): Promise<QemuRun> {
  const dir = await Deno.makeTempDir({ prefix: "kvm-ts-qemu-" });
  try {
    const file = `${name}.bin`;
    await Deno.writeFile(`${dir}/${file}`, image);
    const args = [
      ...["-machine", "pc", "-accel", ACCEL, ...extra, "-nodefaults", "-no-reboot"],
      ...["-serial", "stdio", "-display", "none", "-device", "isa-debug-exit,iobase=0x501,iosize=2"],
      ...[bootFlag, file],
    ];
    const start = performance.now();
    const child = new Deno.Command(QEMU, { args, cwd: dir, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, RUN_TIMEOUT_MS);
    const output = await child.output();
    clearTimeout(timer);
    const run = {
      command: [QEMU, ...args].join(" "),
      serial: new TextDecoder().decode(output.stdout),
      stderr: new TextDecoder().decode(output.stderr),
      status: output.code,
      seconds: (performance.now() - start) / 1000,
    };
    console.log(
      `${name}: QEMU (${ACCEL}) exited with status ${run.status} after ${run.seconds.toFixed(2)} s`,
    );
    assert.ok(
      !timedOut,
      `${name}: QEMU did not finish in ${RUN_TIMEOUT_MS / 1000} s; serial so far:\n${run.serial}`,
    );
    return run;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
