/**
 * The VM's I/O primitives against a real KVM: ioeventfd (a guest write signals an eventfd with no
 * exit), irqfd (an eventfd write raises a pin), GSI routing with MSI entries and KVM_SIGNAL_MSI.
 * Skipped where /dev/kvm is missing (`deno task test` runs them in the nested KVM VM).
 */
import assert from "node:assert/strict";
import { assemble, guestSource } from "../tests/guests/assemble.ts";
import { enterRealMode, ifKvm, mapRam, reportKvmSkip } from "./_testing.ts";
import { EventFd } from "./event_fd.ts";
import { decodeExit, type VcpuExit } from "./exit.ts";
import { GuestMemory } from "./guest_memory.ts";
import {
  KVM_CAP_IOEVENTFD,
  KVM_CAP_IOEVENTFD_NO_LENGTH,
  KVM_CAP_IRQ_ROUTING,
  KVM_CAP_IRQFD,
  KVM_CAP_IRQFD_RESAMPLE,
  KVM_CAP_SIGNAL_MSI,
  KVM_EXIT_HLT,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
} from "./ioctls.ts";
import { Kvm } from "./kvm.ts";
import { KvmError } from "./kvm_error.ts";
import { defaultGsiRoutes, KVM_MAX_IRQ_ROUTES, type MsiMessage, MsiRoutes } from "./msi_routes.ts";
import type { Vcpu } from "./vcpu.ts";
import { Vm } from "./vm.ts";

reportKvmSkip("kvm/vm_io_test.ts");

const ENTRY = 0x1000;
/** An fd number nothing in a test process has open. */
const NOT_AN_FD = 0x7fff_0000;

function isKvmError(op: string, code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof KvmError, String(error));
    assert.equal(error.op, op);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

/** An exit for an assertion message (JSON.stringify alone throws on the bigint fields). */
function show(exit: VcpuExit): string {
  return JSON.stringify(exit, (_, value) => typeof value === "bigint" ? `0x${value.toString(16)}` : value);
}

/** Waits (yielding to the event loop) until `condition` holds: irqfd injection runs on a kernel workqueue. */
async function eventually(what: string, condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** `struct kvm_ioapic_state.irr` (u32 at 16 of the chip state). */
function ioapicIrr(vm: Vm): number {
  return new DataView(vm.getIrqchip(KVM_IRQCHIP_IOAPIC).buffer).getUint32(16, true);
}

/** `struct kvm_pic_state.irr` (u8 at 1 of the chip state). */
function picMasterIrr(vm: Vm): number {
  return vm.getIrqchip(KVM_IRQCHIP_PIC_MASTER)[1];
}

/** The LAPIC's spurious-vector register and its APIC-software-enable bit. */
const APIC_SPIV = 0xf0;
const APIC_SPIV_ENABLED = 1 << 8;
/** The LAPIC's IRR: eight 32-bit registers, 16 bytes apart. */
const APIC_IRR = 0x200;

function lapicIrrHas(vcpu: Vcpu, vector: number): boolean {
  const lapic = vcpu.getLapic();
  const word = new DataView(lapic.buffer).getUint32(APIC_IRR + 0x10 * (vector >> 5), true);
  return (word & (1 << (vector & 31))) !== 0;
}

function enableLapic(vcpu: Vcpu): void {
  const lapic = vcpu.getLapic();
  const view = new DataView(lapic.buffer);
  view.setUint32(APIC_SPIV, view.getUint32(APIC_SPIV, true) | APIC_SPIV_ENABLED | 0xff, true);
  vcpu.setLapic(lapic);
}

/** Fixed delivery, physical destination APIC id 0 (the first vCPU), edge: vector in bits 7:0. */
function msiTo0(vector: number): MsiMessage {
  return { addressLo: 0xfee0_0000, addressHi: 0, data: vector };
}

Deno.test({
  name: "KVM answers the I/O capabilities: irqfd, ioeventfd, signal MSI, routing (4096 GSIs), resample",
  ...ifKvm,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    assert.ok(vm.checkExtension(KVM_CAP_IRQFD) > 0);
    assert.ok(vm.checkExtension(KVM_CAP_IOEVENTFD) > 0);
    assert.ok(vm.checkExtension(KVM_CAP_SIGNAL_MSI) > 0);
    assert.equal(vm.checkExtension(KVM_CAP_IRQ_ROUTING), KVM_MAX_IRQ_ROUTES);
    console.log(
      `KVM_CAP_IRQFD_RESAMPLE ${vm.checkExtension(KVM_CAP_IRQFD_RESAMPLE)}, ` +
        `KVM_CAP_IOEVENTFD_NO_LENGTH ${vm.checkExtension(KVM_CAP_IOEVENTFD_NO_LENGTH)}`,
    );
  },
});

Deno.test({
  name: "ioeventfd: guest writes that match signal the eventfd with no exit; others still exit",
  ...ifKvm,
  async fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using ram = new GuestMemory(0x10000);
    mapRam(vm, ram);
    ram.bytes.set(await assemble(guestSource("ioeventfd.S"), { base: ENTRY }), ENTRY);
    using anyValue = new EventFd();
    using only42 = new EventFd();
    using mmio = new EventFd();
    using anyLength = new EventFd();
    vm.registerIoeventfd(anyValue, { space: "pio", address: 0x510, length: 1 });
    vm.registerIoeventfd(only42, { space: "pio", address: 0x520, length: 1, datamatch: 0x42 });
    vm.registerIoeventfd(mmio, { space: "mmio", address: 0xd0010n, length: 2 });
    const noLength = vm.checkExtension(KVM_CAP_IOEVENTFD_NO_LENGTH) > 0;
    if (noLength) vm.registerIoeventfd(anyLength, { space: "mmio", address: 0xd0030n, length: 0 });

    using vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, ENTRY);
    const next = (): VcpuExit => {
      vcpu.run();
      return decodeExit(vcpu.runPage);
    };
    let exit = next();
    assert.ok(exit.kind === "io" && exit.port === 0x520 && exit.data[0] === 0x41, show(exit));
    assert.equal(anyValue.read(), 1n, "the out to 0x510 completed in the kernel");
    exit = next();
    assert.ok(exit.kind === "io" && exit.port === 0x510 && exit.size === 2, show(exit));
    assert.equal(only42.read(), 1n, "the out of 0x42 to 0x520 matched");
    exit = next();
    assert.ok(exit.kind === "mmio" && exit.isWrite && exit.physAddr === 0xd0020n, show(exit));
    assert.equal(mmio.read(), 1n, "the 2-byte MMIO write completed in the kernel");
    exit = next();
    if (!noLength) {
      assert.ok(exit.kind === "mmio" && exit.physAddr === 0xd0030n && exit.len === 4, show(exit));
      exit = next();
    }
    assert.ok(exit.kind === "io" && exit.port === 0x10, show(exit));
    assert.equal(vcpu.run(), KVM_EXIT_HLT);
    if (noLength) assert.equal(anyLength.read(), 1n);
    assert.deepEqual([anyValue.read(), only42.read(), mmio.read()], [0n, 0n, 0n], "each signalled once");

    // The same registration twice is EEXIST; removing needs the exact registration.
    assert.throws(
      () => vm.registerIoeventfd(anyValue, { space: "pio", address: 0x510, length: 1 }),
      isKvmError("KVM_IOEVENTFD", "EEXIST"),
    );
    assert.throws(
      () => vm.unregisterIoeventfd(only42, { space: "pio", address: 0x520, length: 1 }),
      isKvmError("KVM_IOEVENTFD", "ENOENT"),
    );
    vm.unregisterIoeventfd(only42, { space: "pio", address: 0x520, length: 1, datamatch: 0x42 });
    vm.unregisterIoeventfd(anyValue, { space: "pio", address: 0x510, length: 1 });
    // A file that is not an eventfd.
    assert.throws(
      () => vm.registerIoeventfd(vm.fd, { space: "pio", address: 0x600, length: 1 }),
      isKvmError("KVM_IOEVENTFD", "EINVAL"),
    );
  },
});

Deno.test("ioeventfd and irqfd arguments are checked before the ioctl (no KVM needed)", () => {
  // The checks run before the fd is used: a Vm over an fd number that is not open gets as far as
  // the ioctl (EBADF) only with good arguments.
  const vm = new Vm(NOT_AN_FD, { vcpuMmapSize: 0 });
  const port = { space: "pio", address: 0x510, length: 1 } as const;
  assert.throws(() => vm.registerIoeventfd(3, port), isKvmError("KVM_IOEVENTFD", "EBADF"));
  assert.throws(() => vm.registerIoeventfd(3, { ...port, length: 3 as 1 }), RangeError);
  assert.throws(() => vm.registerIoeventfd(3, { ...port, datamatch: 0x100 }), /does not fit a 1-byte write/);
  assert.throws(() => vm.registerIoeventfd(3, { ...port, length: 0, datamatch: 0 }), RangeError);
  assert.throws(
    () => vm.registerIoeventfd(3, { ...port, address: 0xffff, length: 2 }),
    /passes the end of pio/,
  );
  assert.throws(() => vm.registerIoeventfd(-1, port), RangeError);
  assert.throws(
    () =>
      vm.unregisterIoeventfd(3, { space: "mmio", address: 0xfeb0_0000n, length: 8, datamatch: 1n << 63n }),
    isKvmError("KVM_IOEVENTFD", "EBADF"),
  );
  assert.throws(() => vm.registerIrqfd(3, 5, { resampleFd: 4 }), isKvmError("KVM_IRQFD", "EBADF"));
  assert.throws(() => vm.registerIrqfd(3, -5), RangeError);
  assert.throws(() => vm.signalMsi({ addressLo: 0xfee0_0000, addressHi: 0, data: 2 ** 32 }), RangeError);
});

Deno.test({
  name:
    "irqfd: a write raises the PIC pin of its GSI (edge); with resample the IOAPIC pin stays up until detached",
  ...ifKvm,
  async fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using early = new EventFd();
    assert.throws(() => vm.registerIrqfd(early, 3), isKvmError("KVM_IRQFD", "EINVAL"), "no irqchip");
    vm.createIrqchip();
    using edge = new EventFd();
    vm.registerIrqfd(edge, 3);
    assert.throws(() => vm.registerIrqfd(edge, 4), isKvmError("KVM_IRQFD", "EBUSY"));
    assert.equal(picMasterIrr(vm) & (1 << 3), 0);
    edge.write();
    // An edge on GSI 3: the 8259 latches it in IRR; the IOAPIC pin (masked) goes up and down again
    // (the kernel's worker sets both routes to 1, then to 0: wait for the whole pulse).
    await eventually("PIC IRR bit 3", () => (picMasterIrr(vm) & (1 << 3)) !== 0);
    await eventually("IOAPIC pin 3 down again", () => (ioapicIrr(vm) & (1 << 3)) === 0);
    vm.unregisterIrqfd(edge, 3);
    vm.unregisterIrqfd(edge, 3); // detaching what is not attached is not an error

    if (vm.checkExtension(KVM_CAP_IRQFD_RESAMPLE) === 0) {
      console.log("KVM_CAP_IRQFD_RESAMPLE absent: resample part skipped");
      return;
    }
    using level = new EventFd();
    using resample = new EventFd();
    vm.registerIrqfd(level, 5, { resampleFd: resample });
    level.write();
    await eventually("IOAPIC IRR bit 5 (level held)", () => (ioapicIrr(vm) & (1 << 5)) !== 0);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.notEqual(ioapicIrr(vm) & (1 << 5), 0, "still asserted: nothing EOI'd it");
    vm.unregisterIrqfd(level, 5);
    await eventually("IOAPIC IRR bit 5 dropped on detach", () => (ioapicIrr(vm) & (1 << 5)) === 0);
  },
});

Deno.test({
  name: "KVM_SIGNAL_MSI: 0 while the LAPIC is software-disabled, then delivered into its IRR",
  ...ifKvm,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    assert.throws(() => vm.signalMsi(msiTo0(0x41)), isKvmError("KVM_SIGNAL_MSI", "EINVAL"), "no irqchip");
    vm.createIrqchip();
    using vcpu = vm.createVcpu(0);
    assert.equal(vm.signalMsi(msiTo0(0x41)), 0, "blocked: the APIC is not software-enabled after reset");
    enableLapic(vcpu);
    assert.equal(vm.signalMsi(msiTo0(0x41)), 1);
    assert.ok(lapicIrrHas(vcpu, 0x41));
    assert.ok(!lapicIrrHas(vcpu, 0x42));
  },
});

Deno.test({
  name: "GSI routing: MSI routes via MsiRoutes + irqfd reach the LAPIC, and the default pins keep working",
  ...ifKvm,
  async fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    assert.throws(() => vm.setGsiRouting(defaultGsiRoutes()), isKvmError("KVM_SET_GSI_ROUTING", "EINVAL"));
    vm.createIrqchip();
    using vcpu = vm.createVcpu(0);
    enableLapic(vcpu);

    const routes = new MsiRoutes(vm, { gsiCount: vm.checkExtension(KVM_CAP_IRQ_ROUTING) });
    const gsi = routes.add(msiTo0(0x51));
    assert.equal(gsi, 24);
    routes.commit();
    using event = new EventFd();
    vm.registerIrqfd(event, gsi);
    event.write();
    await eventually("LAPIC IRR bit 0x51", () => lapicIrrHas(vcpu, 0x51));

    // Re-aim the route: the same irqfd now sends the new vector.
    routes.update(gsi, msiTo0(0x52));
    routes.commit();
    event.write();
    await eventually("LAPIC IRR bit 0x52", () => lapicIrrHas(vcpu, 0x52));

    // The default routes came along: KVM_IRQ_LINE on GSI 6 still reaches IOAPIC pin 6.
    vm.irqLine(6, true);
    assert.notEqual(ioapicIrr(vm) & (1 << 6), 0, "GSI 6 reaches the IOAPIC");
    vm.irqLine(6, false);
    // Without them, it would not: a table of the MSI route alone drops every pin.
    vm.setGsiRouting(routes.msiRoutes);
    vm.irqLine(7, true);
    assert.equal(ioapicIrr(vm) & (1 << 7), 0, "no route: GSI 7 goes nowhere");
    vm.irqLine(7, false);

    // The kernel's refusals.
    assert.throws(
      () => vm.setGsiRouting([{ gsi: 3, irqchip: KVM_IRQCHIP_IOAPIC, pin: 24 }]),
      isKvmError("KVM_SET_GSI_ROUTING", "EINVAL"),
      "pin 24 does not exist",
    );
    assert.throws(
      () => vm.setGsiRouting([{ gsi: 3, irqchip: KVM_IRQCHIP_IOAPIC, pin: 3 }, { gsi: 3, ...msiTo0(0x60) }]),
      isKvmError("KVM_SET_GSI_ROUTING", "EINVAL"),
      "an MSI GSI may have no other route",
    );
  },
});
