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

import { ACCEL, probeQemu, type QemuRun, runQemuGuest } from "./_qemu.ts";
import assert from "node:assert/strict";
import { SMP } from "../machine/guests/mod.ts";

const missing = probeQemu().reason;
if (missing !== undefined) console.log(`tests/qemu_smp_test.ts: skipped: ${missing}`);
else if (ACCEL === "tcg") {
  console.log("tests/qemu_smp_test.ts: /dev/kvm is not usable: running QEMU with TCG");
}

/** Runs the smp guest under QEMU with `cpus` vCPUs (see tests/_qemu.ts). */
async function runSmp(cpus: number): Promise<QemuRun> {
  const run = await runQemuGuest(`smp-${cpus}cpus`, SMP, "-kernel", [
    "-smp",
    String(cpus),
  ]);
  console.log(run.serial.trimEnd());
  return run;
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
