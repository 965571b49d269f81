/**
 * Coalesced zones wait for the guest's first use of a coalesced device (ARCHITECTURE.md, coalesced
 * I/O), for a VM without zones is cheaper to destroy. A real-mode guest (tests/guests/rtc_index.S)
 * either writes the RTC's index port 64 times and reads register A back through the data port, or
 * writes 64 POST codes and touches no coalesced device; both reset the machine. Needs KVM with
 * coalesced port writes (the nested VM where there is none).
 */
import assert from "node:assert/strict";
import { ifKvm, reportKvmSkip } from "../kvm/_testing.ts";
import { KVM_EXIT_IO } from "../kvm/ioctls.ts";
import { loadFlat } from "../machine/loader/mod.ts";
import { PcMachine } from "../machine/pc/pc_machine.ts";
import { assemble, guestSource } from "./guests/assemble.ts";
import { runOrGiveUp } from "./_give_up.ts";

reportKvmSkip("tests/coalesced_rtc_guest_test.ts");

const RAM = 32n << 20n;
const ENTRY = 0x1000n;
const WRITES = 64;

async function run(rtc: boolean) {
  const image = await assemble(guestSource("rtc_index.S"), { base: Number(ENTRY), defines: { RTC: +rtc } });
  using pc = await PcMachine.create({
    ramSize: RAM,
    boot: loadFlat(image, { addr: ENTRY, mode: "real", ramSize: RAM }),
  });
  const before = pc.coalescedZonesRegistered;
  // A wrong register A halts the guest for good; the test then gives up.
  const { outcome } = await runOrGiveUp(pc, 20_000);
  const io = pc.exitCounts.reduce((sum, counts) => sum + counts[KVM_EXIT_IO], 0);
  return { before, outcome, io, after: pc.coalescedZonesRegistered };
}

Deno.test(
  "a guest that never touches a coalesced device leaves its VM without a coalesced zone",
  ifKvm,
  async () => {
    const { before, outcome, io, after } = await run(false);
    assert.deepEqual(outcome, { kind: "reset" });
    assert.equal(io, WRITES + 1, "each POST code and the reset exit");
    assert.deepEqual({ before, after }, { before: false, after: false });
  },
);

Deno.test(
  "the RTC's first index write registers the zones: KVM queues the next ones, and the data port plays them back",
  ifKvm,
  async () => {
    const { before, outcome, io, after } = await run(true);
    // Register A was read back as the guest selected it: the queued writes were played back first.
    assert.deepEqual(outcome, { kind: "reset" });
    assert.deepEqual({ before, after }, { before: false, after: true });
    // The first index write, the data port's read and the reset exit; the other 64 writes are queued.
    assert.equal(io, 3, `${io} port exits`);
  },
);
