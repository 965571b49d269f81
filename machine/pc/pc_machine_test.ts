/**
 * PcMachine's steps that need no KVM (planning the boot), and its teardown on KVM.
 */
import assert from "node:assert/strict";
import { ECHO, EXIT_STATUS, FIRMWARE } from "../guests/mod.ts";
import { LoaderError } from "../loader/mod.ts";
import { ifKvm, reportKvmSkip } from "../../kvm/_testing.ts";
import { type MemslotCall, Vm } from "../../kvm/mod.ts";
import { pcGsiRoutes, PcMachine, planBoot } from "./pc_machine.ts";

reportKvmSkip("machine/pc/pc_machine_test.ts");

Deno.test("planBoot hands -initrd to the kernel loader (a Multiboot kernel refuses one)", async () => {
  const kernel = { image: EXIT_STATUS, initrd: new Uint8Array([1, 2, 3]) };
  await assert.rejects(async () => await planBoot({ ramSize: 64n << 20n, kernel }), LoaderError);
  await assert.doesNotReject(async () =>
    await planBoot({ ramSize: 64n << 20n, kernel: { image: EXIT_STATUS } })
  );
});

Deno.test("planBoot: a plan made elsewhere wins; no kernel boots the firmware's reset vector", async () => {
  const plan = { writes: [], cpu: { mode: "real" as const, rip: 0x7c00n }, description: "mine" };
  assert.equal(await planBoot({ ramSize: 64n << 20n, boot: plan, kernel: { image: EXIT_STATUS } }), plan);
  assert.equal((await planBoot({ ramSize: 64n << 20n, firmware: FIRMWARE })).cpu.rip, 0xfff0n);
});

Deno.test("planBoot refuses a bad vCPU count before anything is acquired", async () => {
  await assert.rejects(async () => await planBoot({ ramSize: 64n << 20n, cpus: 0 }), RangeError);
  await assert.rejects(async () => await planBoot({ ramSize: 64n << 20n, cpus: 4097 }), RangeError);
  // APIC ids from 255 on are x2APIC's: the in-kernel IOAPIC cannot address them.
  await assert.rejects(
    async () => await planBoot({ ramSize: 64n << 20n, cpus: 256, kernel: { image: EXIT_STATUS } }),
    /PC: 256 vCPUs: APIC ids above 254 need x2APIC, .*kernel-irqchip=split/,
  );
  const plan = await planBoot({
    ramSize: 64n << 20n,
    cpus: 256,
    irqchip: "split",
    kernel: { image: EXIT_STATUS },
  });
  assert.equal(plan.cpu.mode, "protected32");
});

Deno.test("GSI routing: ISA IRQs to both PICs but the cascade, the PIT on IOAPIC pin 2", () => {
  const routes = pcGsiRoutes();
  assert.ok(!routes.some((r) => r.gsi === 2 && r.irqchip !== 2));
  assert.deepEqual(routes.find((r) => r.gsi === 0 && r.irqchip === 2), { gsi: 0, irqchip: 2, pin: 2 });
});

Deno.test(
  "close: the VM goes first and its memslots with it; the board's listeners delete none",
  ifKvm,
  async () => {
    const calls: MemslotCall[] = [];
    const machine = await PcMachine.create({
      ramSize: 64n << 20n,
      traceMemslots: (call) => void calls.push(call),
    });
    const mapped = calls.length;
    assert.ok(mapped >= 2 && calls.every((c) => c.memorySize > 0n && c.error === undefined));
    machine.close();
    assert.deepEqual(calls.slice(mapped), [], "no KVM_SET_USER_MEMORY_REGION after the VM");
    assert.deepEqual(machine.kvmListener.slots, []);
    machine.close(); // idempotent
  },
);

Deno.test(
  "a split irqchip's PIT stands still while the machine is paused (no burst of ticks after a stop)",
  ifKvm,
  async () => {
    using pc = await PcMachine.create({
      ramSize: 64n << 20n,
      irqchip: "split",
      kernel: { image: EXIT_STATUS },
    });
    /** Channel 0's count: latch it, then read the low and high bytes. */
    const count = () => {
      pc.board.io.write(0x43, 1, 0x00);
      const low = Number(pc.board.io.read(0x40, 1).value);
      return low | Number(pc.board.io.read(0x40, 1).value) << 8;
    };
    const spin = (ms: number) => {
      const end = performance.now() + ms;
      while (performance.now() < end) {
        // time passes on the host
      }
    };
    pc.whilePaused(() => {
      const before = count();
      spin(5);
      assert.equal(count(), before, "paused: the count did not move");
    });
    const before = count();
    spin(5);
    assert.notEqual(count(), before, "running: it counts (1.19 MHz)");
  },
);

Deno.test(
  "the in-kernel irqchip and PIT come after every memslot, before the first vCPU",
  ifKvm,
  async () => {
    // KVM_CREATE_IRQCHIP registers bus devices; a memslot change after it waits out the kernel's
    // grace period (docs/kvm-abi.md §7.4), so PcMachine registers the memory map first.
    const events: string[] = [];
    const proto = Vm.prototype;
    const { createIrqchip, createPit2, createVcpu } = proto;
    proto.createIrqchip = function () {
      events.push("irqchip");
      return createIrqchip.call(this);
    };
    proto.createPit2 = function (flags?: number) {
      events.push("pit");
      return createPit2.call(this, flags);
    };
    proto.createVcpu = function (id: number) {
      events.push("vcpu");
      return createVcpu.call(this, id);
    };
    try {
      using _machine = await PcMachine.create({
        ramSize: 64n << 20n,
        traceMemslots: () => void events.push("memslot"),
      });
    } finally {
      Object.assign(proto, { createIrqchip, createPit2, createVcpu });
    }
    const first = (what: string) => events.indexOf(what);
    assert.ok(first("memslot") >= 0 && first("irqchip") >= 0, events.join(" "));
    assert.ok(events.lastIndexOf("memslot") < first("irqchip"), events.join(" "));
    assert.ok(first("irqchip") < first("pit") && first("pit") < first("vcpu"), events.join(" "));
  },
);

Deno.test(
  "completePendingIo finishes the OUT a run ended at: RIP ends past it, and a second call changes nothing",
  ifKvm,
  async () => {
    using pc = await PcMachine.create({ ramSize: 64n << 20n, kernel: { image: EXIT_STATUS } });
    assert.equal(pc.run().kind, "exit");
    const before = pc.vcpu.getRegs().rip;
    pc.completePendingIo();
    const after = pc.vcpu.getRegs().rip;
    // The guest ends with `out %al, %dx` (0xee) or `out %al, $imm8` (0xe6 ib) to isa-debug-exit,
    // then `hlt`. A hardware-style KVM moves RIP past the OUT at the next KVM_RUN (kvm_amd, kvm_intel:
    // `complete_fast_pio_out`); kvm_pvm already did at the exit.
    const byte = (at: bigint) => Number(pc.memory.read(at, 1).value);
    assert.equal(byte(after), 0xf4, `hlt at 0x${after.toString(16)}`);
    const out = byte(after - 1n) === 0xee ? after - 1n : after - 2n;
    assert.ok(byte(out) === 0xee || byte(out) === 0xe6, `an OUT before 0x${after.toString(16)}`);
    assert.ok(before === out || before === after, `RIP 0x${before.toString(16)} at the exit`);
    pc.completePendingIo();
    assert.equal(pc.vcpu.getRegs().rip, after, "nothing was pending any more");
  },
);

Deno.test(
  "the machine's timers run on the VM thread during a run, with one vCPU on it and with vCPU threads",
  ifKvm,
  async () => {
    for (const cpus of [1, 2]) {
      // The echo guest sleeps in hlt until COM1 input, which never comes: only the timer ends the run.
      using pc = await PcMachine.create({ ramSize: 32n << 20n, cpus, kernel: { image: ECHO } });
      const order: string[] = [];
      pc.timers.after(60, () => {
        order.push("second");
        pc.stop({ kind: "quit" });
      });
      const cancelled = pc.timers.after(30, () => order.push("cancelled"));
      pc.timers.after(20, () => order.push("first"));
      cancelled();
      const outcome = cpus === 1 ? pc.run() : await pc.runAsync();
      assert.deepEqual(outcome, { kind: "quit" }, `${cpus} vCPUs`);
      assert.deepEqual(order, ["first", "second"], `${cpus} vCPUs`);
    }
  },
);
