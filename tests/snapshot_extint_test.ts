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

/**
 * Runs the set-up guest to its end, puts vCPU 0 to sleep at `wait` with IF set, and has COM1
 * receive {@link BYTE}: IRQ 4 then waits in the master PIC for the vCPU.
 */
async function asleepWithIrq4(): Promise<PcMachine> {
  const image = await assemble(guestSource("halted_extint.S"), { base: Number(ENTRY) });
  const pc = await PcMachine.create({
    ramSize: RAM,
    irqchip: "split",
    boot: loadFlat(image, { addr: ENTRY, mode: "real", ramSize: RAM }),
  });
  try {
    assert.deepEqual(pc.run(), { kind: "exit", status: (0x11 << 1) | 1 });
    pc.completePendingIo(); // the guest's last OUT: RIP is at `wait`
    const vcpu = pc.vcpu;
    const regs = vcpu.getRegs();
    vcpu.setRegs({ ...regs, rflags: regs.rflags | 0x200n }); // IF
    vcpu.setMpState(KVM_MP_STATE_HALTED);
    pc.board.input(new Uint8Array([BYTE])); // COM1 receives: IRQ 4, the PIC's INT high
    const irr = Number.parseInt(/^pic0: irr=([0-9a-f]+) imr=ef isr=00 /m.exec(pc.infoPic())?.[1] ?? "0", 16);
    assert.ok(irr & 0x10, `IRQ 4 waits in the master PIC:\n${pc.infoPic()}`);
    return pc;
  } catch (error) {
    pc.close();
    throw error;
  }
}

/** Restores `snap` in a new process: it must end through the guest's handler, with the byte. */
async function restoreTakesIrq4(snap: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...START_FLAGS, MAIN, "--restore", snap],
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
}

Deno.test({
  name:
    "split irqchip: a guest snapshotted asleep while the PIC holds its interrupt takes it after a restore",
  ignore: skip !== undefined,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "kvmts-extint-" });
    try {
      {
        using pc = await asleepWithIrq4();
        pc.snapshot(`${dir}/asleep`);
      }
      await restoreTakesIrq4(`${dir}/asleep`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

// The kick that stops a run for a snapshot can come between the PIC's INTA and the vCPU's entry:
// the runner gave the vector (the PIC's ISR holds IRQ 4) and the next KVM_RUN returns at once
// (immediate_exit) or wakes a halted vCPU only to see the kick's signal, before KVM took the vector
// into the vCPU's event state. A vector given with KVM_INTERRUPT then waits where
// KVM_GET_VCPU_EVENTS does not look (pending_external_vector): the snapshot lost it, and the
// restored guest slept for ever with IRQ 4 in service (seen once: the built-in guest at its UART
// interrupt, tests/snapshot_test.ts, in the nested VM). The test makes the kick come exactly there.
Deno.test({
  name: "split irqchip: a kick between the PIC's INTA and the vCPU's entry loses no interrupt in a snapshot",
  ignore: skip !== undefined,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "kvmts-extint-kick-" });
    try {
      {
        using pc = await asleepWithIrq4();
        const vcpu = pc.vcpu;
        const run = vcpu.run;
        let kicked = false;
        // Each KVM_RUN of the run below: once the PIC has acknowledged IRQ 4, the kick lands first.
        vcpu.run = function () {
          if (!kicked && /^pic0: irr=[0-9a-f]+ imr=ef isr=10 /m.test(pc.infoPic())) {
            kicked = true;
            vcpu.setImmediateExit(true);
          }
          return run.call(vcpu);
        };
        // The run page still says what the set-up run's last exit said (IF clear): a first KVM_RUN
        // that returns at once has KVM say it anew, as a restore does.
        vcpu.setImmediateExit(true);
        const outcome = pc.run({
          onKick: () => {
            if (kicked) pc.stop({ kind: "quit" });
          },
        });
        vcpu.run = run;
        assert.deepEqual(outcome, { kind: "quit" });
        assert.ok(kicked, `the PIC never acknowledged IRQ 4:\n${pc.infoPic()}`);
        pc.snapshot(`${dir}/kicked`);
      }
      await restoreTakesIrq4(`${dir}/kicked`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
