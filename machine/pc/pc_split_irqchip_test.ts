import assert from "node:assert/strict";
import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../../memory/mod.ts";
import { PcSplitIrqchip } from "./pc_split_irqchip.ts";
import { PcBoard } from "./pc_board.ts";

/** A split irqchip on a fake clock, its I/O ports and IOAPIC mapped, with what it sent. */
function rig() {
  let now = 0;
  const msis: [bigint, number][] = [];
  const deadlines: (number | undefined)[] = [];
  const routes: number[][] = [];
  const chip = new PcSplitIrqchip({
    deliverMsi: (address, data) => void msis.push([address, data]),
    onPitDeadline: (d) => void deadlines.push(d),
    onRoutes: (r) => void routes.push(r.map((x) => x.data)),
    clock: () => now,
  });
  const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  for (const device of chip.portDevices) device.map(io);
  const system = MemoryRegion.container("system", 1n << 32n);
  chip.ioapic.map(system);
  const ports = new AddressSpace(io, "I/O");
  const memory = new AddressSpace(system, "memory");
  /** Writes IOAPIC redirection entry `pin` (high half, then low half). */
  const entry = (pin: number, low: number, high = 0) => {
    memory.write(0xfec0_0000, 4, 0x10 + 2 * pin + 1);
    memory.write(0xfec0_0010, 4, high);
    memory.write(0xfec0_0000, 4, 0x10 + 2 * pin);
    memory.write(0xfec0_0010, 4, low);
  };
  /** Linux's init_8259A: vectors 0x30 and 0x38, cascade on IRQ 2, all masked but `unmasked`. */
  const initPic = (unmasked: number) => {
    for (
      const [port, value] of [[0x20, 0x11], [0x21, 0x30], [0x21, 0x04], [0x21, 0x01], [0xa0, 0x11], [
        0xa1,
        0x38,
      ], [
        0xa1,
        0x02,
      ], [0xa1, 0x01]]
    ) ports.write(port, 1, value);
    ports.write(0x21, 1, ~unmasked & 0xff);
    ports.write(0xa1, 1, ~(unmasked >> 8) & 0xff);
  };
  return {
    chip,
    ports,
    memory,
    msis,
    deadlines,
    routes,
    entry,
    initPic,
    at: (t: number) => void (now = t),
    [Symbol.dispose]() {
      ports[Symbol.dispose]();
      memory[Symbol.dispose]();
    },
  };
}

Deno.test("an ISA IRQ reaches both the i8259 and the IOAPIC; IRQ 0 is the IOAPIC's pin 2", () => {
  using r = rig();
  r.initPic(1 << 4);
  r.entry(4, 0x24); // COM1: vector 0x24, edge, to APIC 0
  r.chip.irq(4).set(true);
  assert.ok(r.chip.extIntPending, "the PIC raised INT");
  assert.deepEqual(r.msis, [[0xfee0_0000n, 0x24]], "the IOAPIC sent its message");
  assert.equal(r.chip.extInt(), 0x34, "the INTA cycle gives the PIC's vector for IRQ 4");
  r.entry(2, 0x30);
  r.chip.irq(0).set(true);
  assert.deepEqual(r.msis.at(-1), [0xfee0_0000n, 0x30], "ISA IRQ 0 goes out on pin 2");
  r.entry(20, 0x50);
  r.chip.irq(20).set(true);
  assert.deepEqual(r.msis.at(-1), [0xfee0_0000n, 0x50], "GSIs 16-23 reach the IOAPIC only");
  assert.throws(() => r.chip.irq(24), /no interrupt line 24/);
});

Deno.test("the PIT's channel 0 ticks through the host timer's deadlines into IRQ 0", () => {
  using r = rig();
  r.entry(2, 0x30);
  // Linux's periodic tick at HZ=1000: channel 0, LSB then MSB, mode 2, count 1193.
  r.ports.write(0x43, 1, 0x34);
  r.ports.write(0x40, 1, 1193 & 0xff);
  r.ports.write(0x40, 1, 1193 >> 8);
  const deadline = r.deadlines.at(-1)!;
  assert.ok(deadline > 0 && deadline <= 1_001_000, `the next output change about 1 ms on, at ${deadline} ns`);
  r.chip.tick(); // before the deadline: nothing
  assert.equal(r.msis.length, 0);
  let ticks = 0;
  for (let t = 0; t <= 10_000_000; t += 100_000) {
    r.at(t);
    r.chip.tick();
    ticks = r.msis.length;
  }
  assert.ok(ticks >= 9 && ticks <= 11, `about 10 interrupts in 10 ms, got ${ticks}`);
  // Linux's clockevent shutdown: mode 0 with count 0, whose output rises once (65536 ticks later)
  // and then stays: after that, no deadline and no more interrupts.
  r.ports.write(0x43, 1, 0x30);
  r.ports.write(0x40, 1, 0);
  r.ports.write(0x40, 1, 0);
  r.at(100_000_000);
  r.chip.tick();
  const after = r.msis.length;
  assert.equal(r.deadlines.at(-1), undefined);
  r.at(200_000_000);
  r.chip.tick();
  assert.equal(r.msis.length, after);
});

Deno.test("a level-triggered pin is sent again after the EOI while its line is high, and routes follow", () => {
  using r = rig();
  r.entry(10, 0x8000 | 0x3a); // PCI INTx: level, vector 0x3a
  assert.ok(r.routes.some((route) => route[10] === (0x8000 | 0x3a)), "KVM's routes get the level vector");
  r.chip.irq(10).set(true);
  r.chip.eoi(0x3a);
  assert.equal(r.msis.length, 2);
  r.chip.irq(10).set(false);
  r.chip.eoi(0x3a);
  assert.equal(r.msis.length, 2);
});

Deno.test("a split-irqchip board maps QEMU's userspace devices in place of the in-kernel ones", async () => {
  using split = await PcBoard.create({ ramSize: 64n << 20n, irqchip: "split" });
  const tree = split.mtree();
  for (const name of ["pic", "elcr", "pit", "pcspk"]) {
    assert.match(tree, new RegExp(`\\(prio 0, i/o\\): ${name}\\n`));
  }
  assert.match(tree, /00000000fec00000-00000000fec00fff \(prio 0, i\/o\): ioapic\n/);
  assert.doesNotMatch(tree, /kvm-ioapic/);
  assert.ok(split.irqchip);
  using kernel = await PcBoard.create({ ramSize: 64n << 20n });
  assert.equal(kernel.irqchip, null);
  assert.match(kernel.mtree(), /kvm-ioapic/);
  assert.doesNotMatch(kernel.mtree(), /\): pic\n/);
});
