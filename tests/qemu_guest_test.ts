/**
 * Runs the committed guests under QEMU 7.2 — the oracle for what our PC board must print — and
 * checks their serial output and exit status:
 *
 * - `hello64` (Multiboot, `-kernel`): five lines, then a reset through 0xcf9; `-no-reboot` turns
 *   the reset into exit status 0. Its output must match `tests/golden/qemu-serial/hello64.txt`.
 *   Where `syscall` does not bring the guest back to ring 0 (the nested kvm_pvm host: CS stays
 *   0x33, and `int $0x80` raises #UD), the guest gets there through that #UD and prints one more
 *   "note" line saying so; TCG and hardware KVM do not print it.
 * - `exit_status` (Multiboot, `-kernel`): one line, then isa-debug-exit with 0x10: status 33.
 * - `firmware` (`-bios`): its reset vector prints one line and resets: status 0.
 *
 * Skips, saying why, where `qemu-system-x86_64` is missing. Without a usable /dev/kvm it runs QEMU
 * with TCG instead (and does not compare against the golden file, whose IOAPIC version is KVM's).
 * Set `KVM_TS_UPDATE_GOLDEN=1` to rewrite the golden file from this run.
 *
 * @module
 */

import { ACCEL, probeQemu, type QemuRun, runQemuGuest } from "./_qemu.ts";
import assert from "node:assert/strict";
import { EXIT_STATUS, FIRMWARE, HELLO64 } from "../machine/guests/mod.ts";

const GOLDEN = new URL("./golden/qemu-serial/hello64.txt", import.meta.url);
/** The note hello64 prints when `syscall` left it in ring 3 (see machine/guests/hello64.S). */
const KNOWN_NOTE = new RegExp(
  "^hello64: note: syscall left CS = 0x[0-9a-f]{4} \\(ring 3\\)" +
    "(; back in ring 0 through int 0x80| and int 0x80 raised #UD; back in ring 0 through that #UD)$",
);

const qemu = probeQemu();
if (qemu.reason !== undefined) console.log(`tests/qemu_guest_test.ts: skipped: ${qemu.reason}`);
else if (ACCEL === "tcg") {
  console.log("tests/qemu_guest_test.ts: /dev/kvm is not usable: running QEMU with TCG");
}

/** Runs QEMU on `image` (see tests/_qemu.ts). */
function runQemu(name: string, image: Uint8Array, bootFlag: "-kernel" | "-bios"): Promise<QemuRun> {
  return runQemuGuest(name, image, bootFlag);
}

const skip = { ignore: qemu.reason !== undefined };

Deno.test({
  name: "hello64 under QEMU: long mode, IOAPIC version, UART interrupt, ring 3 loop, reset (status 0)",
  ...skip,
  async fn() {
    const run = await runQemu("hello64", HELLO64, "-kernel");
    const ioapicVersion = ACCEL === "kvm" ? "0x00170011" : "0x00170020"; // in-kernel IOAPIC vs QEMU's own
    const lines = run.serial.split("\n");
    const note = lines.findIndex((line) => line.startsWith("hello64: note: "));
    if (note !== -1) {
      console.log(lines[note]);
      assert.equal(ACCEL, "kvm", "only a KVM platform may need the way back to ring 0 that the note reports");
      assert.match(lines[note], KNOWN_NOTE);
      assert.equal(note, 4, "the note follows the iteration count");
      lines.splice(note, 1);
    }
    const expected = [
      "hello64: 64-bit long mode, hello from the kvm-ts default guest",
      `hello64: IOAPIC version register = ${ioapicVersion}`,
      "hello64: UART interrupt taken on vector 0x24, IIR = 0x02",
      "hello64: back from ring 3 through syscall after 50000000 loop iterations",
      "hello64: goodbye, resetting through port 0xcf9",
      "",
    ];
    assert.deepEqual(lines, expected, `serial:\n${run.serial}\nstderr:\n${run.stderr}`);
    assert.equal(run.status, 0, "the reset through 0xcf9 ends a -no-reboot run with status 0");

    if (ACCEL !== "kvm") return;
    const golden = `# ${run.command}\n# QEMU ${qemu.version}; exit status ${run.status}\n${run.serial}`;
    if (Deno.env.get("KVM_TS_UPDATE_GOLDEN") === "1") {
      await Deno.writeTextFile(GOLDEN, golden);
      console.log(`hello64: wrote ${GOLDEN.pathname}`);
    }
    const committed = await Deno.readTextFile(GOLDEN);
    // The note depends on the host's KVM (printed on kvm_pvm, not on hardware KVM): not compared.
    const body = (text: string) =>
      text.split("\n").filter((line) => !line.startsWith("#") && !line.startsWith("hello64: note: ")).join(
        "\n",
      );
    assert.equal(
      body(committed),
      body(golden),
      "the golden serial output (KVM_TS_UPDATE_GOLDEN=1 rewrites it)",
    );
    assert.equal(committed.split("\n")[0], `# ${run.command}`, "the golden file records this command");
  },
});

Deno.test({
  name: "exit_status under QEMU: one line, then isa-debug-exit 0x10 (status 33)",
  ...skip,
  async fn() {
    const run = await runQemu("exit_status", EXIT_STATUS, "-kernel");
    assert.equal(
      run.serial,
      "exit_status: leaving through isa-debug-exit with 0x10 (status 33)\n",
      run.stderr,
    );
    assert.equal(run.status, 33);
  },
});

Deno.test({
  name: "the firmware under QEMU -bios: the reset vector prints one line and resets (status 0)",
  ...skip,
  async fn() {
    const run = await runQemu("firmware", FIRMWARE, "-bios");
    assert.equal(run.serial, "kvm-ts firmware: no kernel given (use -kernel FILE)\n", run.stderr);
    assert.equal(run.status, 0);
  },
});
