/**
 * SMP on the board: the bootstrap processor wakes every application processor with INIT/SIPI on
 * the in-kernel LAPICs, each AP reports its APIC id over the UART from its own vCPU thread, and the
 * guest (machine/guests/smp.S) resets only when all N did. The same guest passes under QEMU
 * (tests/qemu_smp_test.ts).
 */
import assert from "node:assert/strict";
import { kvmAvailability, PcMachine, SMP } from "../mod.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`tests/smp_test.ts: skipped: ${KVM.reason}`);

for (const cpus of [1, 2, 4]) {
  Deno.test({
    name: `-smp ${cpus}: every AP comes up through INIT/SIPI and reports its APIC id`,
    ignore: !KVM.available,
    async fn() {
      const bytes: number[] = [];
      using pc = await PcMachine.create({
        ramSize: 64n << 20n,
        cpus,
        kernel: { image: SMP },
        serial: (b) => bytes.push(b),
      });
      const outcome = await pc.runAsync();
      const lines = new TextDecoder().decode(Uint8Array.from(bytes)).trimEnd().split("\n");
      assert.deepEqual(outcome, { kind: "reset" }, lines.join("\n"));
      assert.equal(lines[0], `smp: BSP (APIC id 0) waking ${cpus - 1} APs`);
      const aps = lines.slice(1, -1).sort();
      assert.deepEqual(
        aps,
        Array.from({ length: cpus - 1 }, (_, i) => `smp: AP with APIC id ${i + 1} is up`).sort(),
      );
      assert.equal(lines.at(-1), `smp: all ${cpus} CPUs reported`);
    },
  });
}

Deno.test({
  name: "the vCPU count is checked against the board's limit, the irqchip's and KVM's",
  ignore: !KVM.available,
  async fn() {
    await assert.rejects(
      async () => await PcMachine.create({ ramSize: 64n << 20n, cpus: 0 }),
      /0 vCPUs is not between 1 and 4096/,
    );
    await assert.rejects(
      async () => await PcMachine.create({ ramSize: 64n << 20n, cpus: 4097, irqchip: "split" }),
      /4097 vCPUs is not between 1 and 4096/,
    );
    await assert.rejects(
      async () => await PcMachine.create({ ramSize: 64n << 20n, cpus: 256 }),
      /256 vCPUs: APIC ids above 254 need x2APIC, which the in-kernel IOAPIC cannot address/,
    );
    // Beyond this KVM's own KVM_CAP_MAX_VCPUS (1024 on Linux 6.1): refused before the VM exists.
    await assert.rejects(
      async () => await PcMachine.create({ ramSize: 64n << 20n, cpus: 4096, irqchip: "split" }),
      /PC: 4096 vCPUs: this host's KVM runs at most \d+ \(KVM_CAP_MAX_VCPUS\)/,
    );
  },
});
