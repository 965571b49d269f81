/**
 * A guest snapshotted asleep (`hlt`, interrupts on) while the split irqchip's PIC holds an interrupt
 * for it must take that interrupt after a restore. KVM hands the PIC's vector to vCPU 0 only once an
 * exit said the vCPU can take one (`ready_for_interrupt_injection`), and a restored run page has
 * seen no exit; the interrupt window asked for instead does not wake a halted vCPU. Without a kick
 * (no PIT here, no input) such a restore slept for ever. The test builds that state by hand: the
 * guest (tests/guests/halted_extint.S) sets up the PIC and COM1's receive interrupt and ends the run;
 * the test puts the vCPU to sleep with IF set, makes COM1 receive a byte (the PIC's INT goes high),
 * snapshots, and restores in a new process, which must end through the guest's handler. Needs a
 * hardware-style KVM (the nested VM where the host has none or a software one). The guest stops
 * the PIT's periodic output: its host timer would kick the vCPU and so wake it all the same.
 */
import assert from "node:assert/strict";
import { hostKvm } from "../kvm/mod.ts";
import { KVM_MP_STATE_HALTED } from "../kvm/ioctls.ts";
import { loadFlat } from "../machine/loader/mod.ts";
import { PcMachine } from "../machine/pc/pc_machine.ts";
import { START_FLAGS } from "../cli/start_flags.ts";
import { assemble, guestSource } from "./guests/assemble.ts";

// A software KVM (kvm_pvm) wakes a halted vCPU for the interrupt window on its own, so the test
// passes there with or without the fix: it runs where the wake-up can be lost, a hardware-style KVM
// (the nested VM on such a host; measured: without 03a7fe3 it fails there, killed by its guard).
const KVM = hostKvm();
const skip = KVM === "none"
  ? "no /dev/kvm"
  : KVM === "software"
  ? "this host's KVM is a software one, which wakes a halted vCPU on its own: the lost wake-up cannot show"
  : undefined;
if (skip) console.log(`tests/snapshot_extint_test.ts: skipped here: ${skip}`);

const RAM = 32n << 20n;
const ENTRY = 0x1000n;
const MAIN = decodeURIComponent(new URL("../main.ts", import.meta.url).pathname);
/** Far longer than a restore takes anywhere; a restore that sleeps for ever is killed then. */
const GIVE_UP_MS = 120_000;
const BYTE = 0x2a;

Deno.test({
  name:
    "split irqchip: a guest snapshotted asleep while the PIC holds its interrupt takes it after a restore",
  ignore: skip !== undefined,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "kvmts-extint-" });
    try {
      const image = await assemble(guestSource("halted_extint.S"), { base: Number(ENTRY) });
      {
        using pc = await PcMachine.create({
          ramSize: RAM,
          irqchip: "split",
          boot: loadFlat(image, { addr: ENTRY, mode: "real", ramSize: RAM }),
        });
        assert.deepEqual(pc.run(), { kind: "exit", status: (0x11 << 1) | 1 });
        pc.completePendingIo(); // the guest's last OUT: RIP is at `wait`
        const vcpu = pc.vcpu;
        const regs = vcpu.getRegs();
        vcpu.setRegs({ ...regs, rflags: regs.rflags | 0x200n }); // IF
        vcpu.setMpState(KVM_MP_STATE_HALTED);
        pc.board.input(new Uint8Array([BYTE])); // COM1 receives: IRQ 4, the PIC's INT high
        const irr = Number.parseInt(
          /^pic0: irr=([0-9a-f]+) imr=ef isr=00 /m.exec(pc.infoPic())?.[1] ?? "0",
          16,
        );
        assert.ok(irr & 0x10, `IRQ 4 waits in the master PIC:\n${pc.infoPic()}`);
        pc.snapshot(`${dir}/asleep`);
      }
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", ...START_FLAGS, MAIN, "--restore", `${dir}/asleep`],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const timer = setTimeout(() => child.kill("SIGKILL"), GIVE_UP_MS);
      const out = await child.output();
      clearTimeout(timer);
      const stderr = new TextDecoder().decode(out.stderr);
      assert.notEqual(out.signal, "SIGKILL", `the restored guest never took its interrupt:\n${stderr}`);
      assert.equal(out.code, (BYTE << 1) | 1, stderr);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
