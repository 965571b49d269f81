import assert from "node:assert/strict";
import fc from "fast-check";
import type { StateObject } from "./device_state.ts";
import { checkBadStates, checkRoundTrip, disposable, type StateHarness } from "./_state_test_util.ts";
import { AddressSpace, MemoryRegion, MemTxResult, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import { RecordingIrqLine } from "./irq_line.ts";
import { Msix, type MsixVectorState } from "./msix.ts";
import { PciCommand, PciFunction } from "./pci_function.ts";

const BAR = 0xfebf_1000;

function setup(vectors = 3) {
  const bus = {
    memory: MemoryRegion.container("pci", 1n << 64n),
    io: MemoryRegion.io("io", 0x1_0000, UNASSIGNED_IO_OPS),
  };
  const irq = new RecordingIrqLine();
  const fn = new PciFunction({
    vendorId: 0x1af4,
    deviceId: 0x1044,
    classCode: 0xff0000,
    bus,
    interruptPin: 1,
    irq,
  });
  const sent: [bigint, number][] = [];
  const changes: [number, MsixVectorState][] = [];
  const msix = Msix.exclusiveBar(fn, {
    name: "virtio-rng-pci",
    vectors,
    barIndex: 1,
    deliver: (address, data) => void sent.push([address, data]),
    onVectorChange: (v, s) => void changes.push([v, s]),
  });
  const memory = new AddressSpace(bus.memory, "memory");
  fn.writeConfig(0x14, BAR, 4);
  fn.writeConfig(0x04, PciCommand.MEMORY | PciCommand.MASTER, 2);
  const control = (value: number) => fn.writeConfig(msix.capability + 2, value, 2);
  const program = (v: number, address: bigint, data: number, masked: boolean) => {
    memory.write(BAR + 16 * v, 4, address & 0xffff_ffffn);
    memory.write(BAR + 16 * v + 4, 4, address >> 32n);
    memory.write(BAR + 16 * v + 8, 4, data);
    memory.write(BAR + 16 * v + 12, 4, masked ? 1 : 0);
  };
  return { fn, msix, memory, sent, changes, control, program, irq };
}

Deno.test("Msix: capability, BAR layout and region names as QEMU's msix_init_exclusive_bar", () => {
  const { fn, msix, memory } = setup();
  using _ = memory;
  assert.equal(msix.capability, 0x40);
  assert.equal(fn.readConfig(0x40, 4), 0x0002_0011, "ID 0x11, end of list, table size 3 - 1");
  assert.equal(fn.readConfig(0x44, 4), 0x0000_0001, "table at 0 of BAR 1");
  assert.equal(fn.readConfig(0x48, 4), 0x0000_0801, "PBA at 0x800 of BAR 1");
  const bar = fn.barRegion(1)!;
  assert.equal(bar.name, "virtio-rng-pci-msix");
  assert.equal(bar.size, 0x1000n);
  assert.deepEqual(bar.subregions.map((r) => [r.name, r.addr, r.size]), [
    ["msix-pba", 0x800n, 8n],
    ["msix-table", 0n, 0x30n],
  ]);
  // Vector control starts masked; only the control's enable and mask bits are writable.
  assert.equal(memory.read(BAR + 12, 4).value, 1n);
  fn.writeConfig(0x42, 0xffff, 2);
  assert.equal(fn.readConfig(0x42, 2), 0xc002);
  // Table and PBA refuse byte accesses; PBA writes are dropped.
  assert.equal(memory.read(BAR, 1).result, MemTxResult.DECODE_ERROR);
  memory.write(BAR + 0x800, 4, 0xffff_ffff);
  assert.equal(memory.read(BAR + 0x800, 4).value, 0n);
  // An 8-byte access is two 4-byte ones.
  memory.write(BAR + 16, 8, 0x1234_5678_fee0_1000n);
  assert.equal(memory.read(BAR + 16, 8).value, 0x1234_5678_fee0_1000n);
});

Deno.test("Msix: a masked vector becomes pending, and fires when unmasked", () => {
  const { msix, sent, control, program, memory } = setup();
  using _ = memory;
  program(1, 0xfee0_0000n, 0x4041, true);
  msix.notify(1);
  assert.deepEqual(sent, [], "MSI-X disabled: every vector masked");
  assert.ok(msix.isPending(1));
  assert.equal(memory.read(BAR + 0x800, 4).value, 0b10n);
  control(0x8000); // enable; vector 1 still masked by its own bit
  assert.deepEqual(sent, []);
  memory.write(BAR + 16 + 12, 4, 0); // unmask vector 1
  assert.deepEqual(sent, [[0xfee0_0000n, 0x4041]]);
  assert.equal(msix.isPending(1), false);
  msix.notify(1);
  assert.equal(sent.length, 2);
  msix.notify(7); // outside the table: ignored
  assert.equal(sent.length, 2);
});

Deno.test("Msix: the function mask holds every vector; clearing it fires the pending ones", () => {
  const { msix, sent, control, program, memory } = setup();
  using _ = memory;
  program(0, 0xfee0_0000n, 0x30, false);
  program(2, 0xfee0_1000n, 0x31, false);
  control(0xc000); // enabled, function masked
  msix.notify(0);
  msix.notify(2);
  assert.deepEqual(sent, []);
  assert.ok(msix.functionMasked && msix.isPending(0) && msix.isPending(2));
  control(0x8000);
  assert.deepEqual(sent, [[0xfee0_0000n, 0x30], [0xfee0_1000n, 0x31]]);
  assert.equal(msix.isPending(0) || msix.isPending(2), false);
});

Deno.test("Msix: no message without bus mastering; enabling MSI-X drops INTx", () => {
  const { fn, msix, sent, control, program, memory, irq } = setup();
  using _ = memory;
  fn.setIrq(true);
  assert.ok(irq.level);
  program(0, 0xfee0_0000n, 0x30, false);
  control(0x8000);
  assert.equal(irq.level, false);
  fn.writeConfig(0x04, PciCommand.MEMORY, 2);
  msix.notify(0);
  assert.deepEqual(sent, []);
});

Deno.test("Msix: onVectorChange reports address, data and mask changes once each", () => {
  const { msix, changes, control, program, memory, fn } = setup();
  using _ = memory;
  program(0, 0xfee0_0000n, 0x30, false);
  assert.deepEqual(changes.map(([v, s]) => [v, s.address, s.data, s.masked]), [
    [0, 0xfee0_0000n, 0, true],
    [0, 0xfee0_0000n, 0x30, true],
  ], "address high 0 and the unmask change nothing visible while MSI-X is off");
  changes.length = 0;
  control(0x8000);
  assert.deepEqual(changes.map(([v, s]) => [v, s.masked]), [[0, false]]);
  changes.length = 0;
  memory.write(BAR + 8, 4, 0x31);
  assert.deepEqual(changes.map(([v, s]) => [v, s.data]), [[0, 0x31]], "data change while unmasked");
  changes.length = 0;
  fn.reset();
  assert.deepEqual(changes.map(([v, s]) => [v, s.address, s.data, s.masked]), [[0, 0n, 0, true]]);
  assert.equal(msix.enabled, false);
  assert.equal(memory.read(BAR, 4).value, 0n, "reset unmapped the BAR");
});

Deno.test("Msix: reset clears pending bits and the table, and masks every vector", () => {
  const { msix, control, program, memory } = setup();
  using _ = memory;
  program(0, 0xfee0_0000n, 0x30, true);
  control(0x8000);
  msix.notify(0);
  assert.ok(msix.isPending(0));
  msix.reset();
  assert.equal(msix.isPending(0), false);
  assert.deepEqual(msix.vectorState(0), { address: 0n, data: 0, masked: true });
  assert.throws(() => msix.vectorState(3), RangeError);
});

Deno.test("Msix: construction checks its arguments", () => {
  const { fn, memory } = setup();
  using _ = memory;
  const bar = MemoryRegion.container("bar", 0x1000);
  const deliver = () => {};
  assert.throws(
    () => new Msix(fn, { vectors: 0, bar, barIndex: 2, tableOffset: 0, pbaOffset: 0x800, deliver }),
    RangeError,
  );
  assert.throws(
    () => new Msix(fn, { vectors: 4, bar, barIndex: 2, tableOffset: 4, pbaOffset: 0x800, deliver }),
    RangeError,
  );
  assert.throws(
    () => new Msix(fn, { vectors: 4, bar, barIndex: 2, tableOffset: 0, pbaOffset: 0xffc, deliver }),
    RangeError,
  );
  assert.throws(
    () => Msix.exclusiveBar(fn, { name: "x", vectors: 129, barIndex: 2, deliver }),
    RangeError,
  );
});

// ---- Device state (issue 11) ----

type MsixOp =
  | { control: number }
  | { entry: number; field: 0 | 4 | 8 | 12; value: number }
  | { notify: number }
  | { command: number }
  | { readTable: number }
  | { readPba: true };

const msixOp = (vectors: number): fc.Arbitrary<MsixOp> =>
  fc.oneof(
    fc.record({ control: fc.constantFrom(0, 0x8000, 0xc000, 0x4000) }),
    fc.record({
      entry: fc.integer({ min: 0, max: vectors - 1 }),
      field: fc.constantFrom(0 as const, 4 as const, 8 as const, 12 as const),
      value: fc.oneof(fc.constantFrom(0, 1, 0xfee0_0000, 0x41), fc.integer({ min: 0, max: 0xffff_ffff })),
    }),
    fc.record({ notify: fc.integer({ min: 0, max: vectors - 1 }) }),
    fc.record({ command: fc.constantFrom(0x6, 0x2, 0x406) }),
    fc.record({ readTable: fc.integer({ min: 0, max: vectors * 4 - 1 }) }),
    fc.constant({ readPba: true as const }),
  );

function msixHarness(
  vectors = 3,
): StateHarness<MsixOp> & ReturnType<typeof setup> & { routes: Map<number, string> } {
  const s = setup(vectors);
  // What a board's GSI routing would hold, kept only from onVectorChange.
  const routes = new Map<number, string>();
  return {
    ...s,
    routes,
    device: {
      saveState: () => ({ fn: s.fn.saveState(), msix: s.msix.saveState() }),
      loadState: (state) => {
        s.fn.loadState(state.fn as StateObject);
        s.msix.loadState(state.msix as StateObject);
      },
    },
    step(op) {
      if ("control" in op) s.control(op.control);
      else if ("entry" in op) s.memory.write(BAR + 16 * op.entry + op.field, 4, op.value);
      else if ("notify" in op) s.msix.notify(op.notify);
      else if ("command" in op) s.fn.writeConfig(0x04, op.command, 2);
      else if ("readTable" in op) return s.memory.read(BAR + 4 * op.readTable, 4).value;
      else return s.memory.read(BAR + 0x800, 4).value;
      return [s.msix.enabled, s.msix.functionMasked];
    },
    close: () => s.memory.close(),
    observe() {
      // A vector back at its power-on state (masked, 0, 0) needs no route: as if never told.
      for (const [v, st] of s.changes.splice(0)) {
        if (st.masked && st.address === 0n && st.data === 0) routes.delete(v);
        else routes.set(v, `${st.address}:${st.data}:${st.masked}`);
      }
      return [s.sent.splice(0), [...routes].sort(), s.irq.level];
    },
  };
}

Deno.test("Msix state: a loaded function sends, holds pending and routes exactly as the saved one", () => {
  checkRoundTrip(() => msixHarness(3), msixOp(3), { numRuns: 150 });
});

Deno.test("Msix state: onVectorChange tells a fresh board every programmed vector on load", () => {
  using a = disposable(msixHarness());
  a.program(0, 0xfee0_0000n, 0x41, false);
  a.program(2, 0xfee0_1000n, 0x42, true);
  a.control(0x8000);
  a.msix.notify(2); // masked: pending
  using b = disposable(msixHarness());
  b.device.loadState(a.device.saveState());
  assert.deepEqual(b.changes.map(([v, s]) => [v, s.address, s.data, s.masked]), [
    [0, 0xfee0_0000n, 0x41, false],
    [2, 0xfee0_1000n, 0x42, true],
  ]);
  assert.equal(b.sent.length, 0);
  assert.ok(b.msix.enabled && b.msix.isPending(2) && !b.msix.functionMasked);
  b.memory.write(BAR + 16 * 2 + 12, 4, 0); // unmask: the pending message goes out
  assert.deepEqual(b.sent, [[0xfee0_1000n, 0x42]]);
});

Deno.test("Msix state: bad states are refused by field and leave MSI-X unchanged", () => {
  using h = disposable(msixHarness());
  h.program(1, 0xfee0_0000n, 7, true);
  h.control(0x8000);
  h.msix.notify(1);
  const state = h.msix.saveState();
  assert.ok(checkBadStates({ ...h, device: h.msix }, "pci-1af4:1044") >= 4);
  const pba = (state.pba as Uint8Array).slice();
  pba[0] |= 0x80;
  assert.throws(
    () => h.msix.loadState({ ...state, pba }),
    /"pba" has vector 7 pending, past the last vector 2/,
  );
  assert.throws(
    () => h.msix.loadState({ ...state, table: new Uint8Array(16) }),
    /"table" has 16 bytes, not 48/,
  );
  assert.deepEqual(h.msix.saveState(), state);
});
