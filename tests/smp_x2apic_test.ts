/**
 * More vCPUs than xAPIC ids: 300 vCPUs on the split irqchip (APIC ids 255 and up need x2APIC, KVM's
 * x2APIC API, and Linux's extended MSI destination ID, as QEMU arranges them). The SMP guest in
 * count mode (machine/guests/smp.S) wakes every AP and checks that each x2APIC id from 1 to 299
 * reported once; an MSI in the extended destination format reaches APIC id 300 and not the vCPU
 * whose id is its low byte. Needs KVM (the nested VM where there is none).
 */
import assert from "node:assert/strict";
import { ifKvm, reportKvmSkip } from "../kvm/_testing.ts";
import { Kvm } from "../kvm/kvm.ts";
import { SMP } from "../machine/guests/mod.ts";
import { createPcVm } from "../machine/pc/pc_machine.ts";
import { linuxCpuid } from "../machine/x86_cpu.ts";
import { START_FLAGS } from "../cli/start_flags.ts";

reportKvmSkip("tests/smp_x2apic_test.ts");

const CPUS = 300;
const MAIN = decodeURIComponent(new URL("../main.ts", import.meta.url).pathname);

Deno.test(
  "-smp 300 on the split irqchip: every AP up, x2APIC ids 1 to 299 each reported once",
  ifKvm,
  async () => {
    // As a user runs it (the bundle's vCPU Workers start in milliseconds; 300 from source take minutes).
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeFile(`${dir}/smp.bin`, SMP);
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          ...START_FLAGS,
          MAIN,
          ...["-smp", String(CPUS), "-machine", "pc,kernel-irqchip=split", "-m", "64M"],
          ...["-kernel", `${dir}/smp.bin`, "-append", "count", "-nographic"],
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, `${text}\n${new TextDecoder().decode(out.stderr)}`);
      assert.deepEqual(text.trimEnd().split(/\r?\n/), [
        `smp: BSP (APIC id 0) waking ${CPUS - 1} APs`,
        `smp: all ${CPUS} CPUs reported`,
        `smp: APIC ids 1 to ${CPUS - 1} each reported once`,
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** MSR IA32_APIC_BASE: the LAPIC's address, enable (bit 11) and x2APIC mode (bit 10). */
const IA32_APIC_BASE = 0x1b;
const APIC_BASE_X2APIC = 0xfee0_0000n | 1n << 11n | 1n << 10n;
/** The LAPIC page: spurious-vector register (bit 8 software enable) and the IRR's eight words. */
const APIC_SVR = 0xf0;
const APIC_IRR = 0x200;

Deno.test("an MSI with an extended destination ID reaches APIC id 300, not id 300 & 0xff", ifKvm, () => {
  using kvm = Kvm.open();
  // KVM has had KVM_CAP_X2APIC_API since Linux 4.7; without it createPcVm fails, and so does this test.
  using vm = createPcVm(kvm, "split", CPUS + 1);
  assert.ok(vm.x2apicApi);
  const supported = kvm.supportedCpuid();
  const [low, high] = [44, 300].map((id) => {
    const vcpu = vm.createVcpu(id);
    // x2APIC in its CPUID, or KVM refuses the x2APIC mode below.
    vcpu.setCpuid2(linuxCpuid(supported, { apicId: id, cpuCount: CPUS + 1, msiExtDestId: true }));
    vcpu.setMsrs([{ index: IA32_APIC_BASE, data: APIC_BASE_X2APIC }]);
    const lapic = vcpu.getLapic();
    new DataView(lapic.buffer).setUint32(APIC_SVR, 0x1ff, true); // software enabled
    vcpu.setLapic(lapic);
    return vcpu;
  });
  const vector = 0x41;
  const irr = (lapic: Uint8Array) =>
    (new DataView(lapic.buffer).getUint32(APIC_IRR + (vector >> 5) * 0x10, true) >>> (vector & 31)) & 1;
  // Destination 300 = 0x12c: 0x2c at address bits 19:12, 0x01 (bits 14:8) at address bits 11:5.
  const delivered = vm.signalMsi({
    addressLo: (0xfee0_0000 | 0x2c << 12 | 0x01 << 5) >>> 0,
    addressHi: 0,
    data: vector,
  });
  assert.equal(delivered, 1);
  assert.equal(irr(high.getLapic()), 1, "APIC id 300 has the vector pending");
  assert.equal(irr(low.getLapic()), 0, "APIC id 44 does not");
});
