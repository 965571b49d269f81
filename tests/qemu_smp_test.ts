/**
 * Runs the `smp` guest under QEMU 7.2 — a real implementation of INIT-SIPI-SIPI, the in-kernel
 * LAPICs and CMOS byte 0x5f — before our PC board runs it, and checks what it prints:
 *
 * - `-smp 4`: the BSP's line, one line per AP (APIC ids 1–3, in any order), "all 4 CPUs reported",
 *   then the reset through 0xcf9, which `-no-reboot` turns into exit status 0;
 * - `-smp 1`: no AP to wake: the two BSP lines and the reset.
 *
 * QEMU runs SeaBIOS first, which has already woken and parked the APs; the guest's INIT puts them
 * back into wait-for-SIPI. Skips, saying why, where `qemu-system-x86_64` is missing; without a usable
 * /dev/kvm it runs QEMU with TCG instead.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SMP } from "../machine/guests/mod.ts";

const QEMU = "qemu-system-x86_64";
/** A run taking longer than this is killed (SeaBIOS alone takes ~3 s under the nested kvm_pvm). */
const RUN_TIMEOUT_MS = 120_000;

function missingQemu(): string | undefined {
  try {
    new Deno.Command(QEMU, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    return undefined;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return `${QEMU} not found (Debian: qemu-system-x86)`;
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

const missing = missingQemu();
const ACCEL = kvmUsable() ? "kvm" : "tcg";
if (missing !== undefined) console.log(`tests/qemu_smp_test.ts: skipped: ${missing}`);
else if (ACCEL === "tcg") {
  console.log("tests/qemu_smp_test.ts: /dev/kvm is not usable: running QEMU with TCG");
}

interface QemuRun {
  serial: string;
  stderr: string;
  status: number;
}

/** Runs the smp guest under QEMU with `cpus` vCPUs, in a temporary directory, with a timeout. */
async function runSmp(cpus: number): Promise<QemuRun> {
  const dir = await Deno.makeTempDir({ prefix: "kvm-ts-qemu-smp-" });
  try {
    await Deno.writeFile(`${dir}/smp.bin`, SMP);
    const args = [
      "-machine",
      "pc",
      "-accel",
      ACCEL,
      "-smp",
      String(cpus),
      "-nodefaults",
      "-no-reboot",
      "-serial",
      "stdio",
      "-display",
      "none",
      "-device",
      "isa-debug-exit,iobase=0x501,iosize=2",
      "-kernel",
      "smp.bin",
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
    const seconds = (performance.now() - start) / 1000;
    const run = {
      serial: new TextDecoder().decode(output.stdout),
      stderr: new TextDecoder().decode(output.stderr),
      status: output.code,
    };
    console.log(
      `smp -smp ${cpus}: QEMU (${ACCEL}) exited with status ${run.status} after ${seconds.toFixed(2)} s\n` +
        run.serial.trimEnd(),
    );
    assert.ok(!timedOut, `QEMU did not finish in ${RUN_TIMEOUT_MS / 1000} s; serial so far:\n${run.serial}`);
    return run;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Checks the serial output of a successful run with `cpus` CPUs; AP lines may come in any order. */
function assertAllReported(run: QemuRun, cpus: number): void {
  const context = `serial:\n${run.serial}\nstderr:\n${run.stderr}`;
  const lines = run.serial.split("\n");
  assert.equal(lines.pop(), "", `the output ends with a newline; ${context}`);
  assert.equal(lines.shift(), `smp: BSP (APIC id 0) waking ${cpus - 1} APs`, context);
  assert.equal(lines.pop(), `smp: all ${cpus} CPUs reported`, context);
  const apLines = lines.map((line) => line.match(/^smp: AP with APIC id (\d+) is up$/));
  assert.ok(apLines.every((match) => match !== null), `only AP lines in between; ${context}`);
  const ids = apLines.map((match) => Number(match![1])).sort((a, b) => a - b);
  assert.deepEqual(ids, Array.from({ length: cpus - 1 }, (_, i) => i + 1), `each AP once; ${context}`);
  assert.equal(run.status, 0, `the reset through 0xcf9 ends a -no-reboot run with status 0; ${context}`);
}

Deno.test({
  name: "smp under QEMU -smp 4: the BSP wakes 3 APs, each reports its APIC id, then reset (status 0)",
  ignore: missing !== undefined,
  async fn() {
    assertAllReported(await runSmp(4), 4);
  },
});

Deno.test({
  name: "smp under QEMU -smp 1: no AP to wake, reports and resets at once (status 0)",
  ignore: missing !== undefined,
  async fn() {
    assertAllReported(await runSmp(1), 1);
  },
});
