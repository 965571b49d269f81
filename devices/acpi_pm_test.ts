import assert from "node:assert/strict";
import fc from "fast-check";
import { MemTxResult } from "../memory/mod.ts";
import { AcpiPm, type AcpiPmOptions } from "./acpi_pm.ts";
import { RecordingIrqLine } from "./irq_line.ts";
import { ioSpace, portIo } from "./_test_util.ts";
import { checkBadStates, checkRoundTrip, disposable, type StateHarness } from "./_state_test_util.ts";

const PM1_STS = 0x600;
const PM1_EN = 0x602;
const PM1_CNT = 0x604;
const PM_TMR = 0x608;
const GPE0_STS = 0xafe0;
const GPE0_EN = 0xafe2;
const TMR = 0x0001;
const PWRBTN = 0x0100;
const SCI_EN = 0x0001;
const SLP_EN = 0x2000;
/** Ticks per millisecond: 3.579545 MHz (ACPI 6.5 §4.8.3.3). */
const TICKS_PER_SECOND = 3_579_545;

function setup(options: AcpiPmOptions = {}) {
  const { io, as } = ioSpace();
  const sci = new RecordingIrqLine();
  const sleeps: number[] = [];
  let now = 1_000; // ms; the device counts from its creation
  const pm = new AcpiPm({ sci, onSleep: (t) => sleeps.push(t), clock: () => now, ...options });
  pm.map(io);
  const advance = (ms: number) => void (now += ms);
  return { as, io, pm, sci, sleeps, advance, ...portIo(as) };
}

Deno.test("regions as QEMU names and places them: piix4-pm at 0x600 (64 ports), acpi-gpe0 at 0xafe0", () => {
  const { as, pm, io } = setup();
  using _ = as;
  assert.deepEqual(pm.regions.map((r) => r.name), ["piix4-pm", "acpi-gpe0"]);
  assert.deepEqual(pm.region.subregions.map((r) => r.name).sort(), ["acpi-cnt", "acpi-evt", "acpi-tmr"]);
  assert.equal(pm.region.size, 64n);
  assert.ok(io.subregions.includes(pm.gpeRegion));
});

Deno.test("PM1_STS/PM1_EN: status is write-1-to-clear, enable is stored whole, reset clears both", () => {
  const { as, pm, inw, outw } = setup();
  using _ = as;
  outw(PM1_STS, TMR); // QEMU: TMR_STS reads set after reset until cleared
  assert.equal(inw(PM1_STS), 0);
  outw(PM1_EN, 0xffff);
  assert.equal(inw(PM1_EN), 0xffff);
  outw(PM1_EN, PWRBTN);
  pm.powerButton();
  assert.equal(inw(PM1_STS), PWRBTN);
  outw(PM1_STS, 0xfeff); // every bit but PWRBTN: nothing clears
  assert.equal(inw(PM1_STS), PWRBTN);
  outw(PM1_STS, PWRBTN);
  assert.equal(inw(PM1_STS), 0);
  pm.powerButton();
  pm.reset();
  assert.equal(inw(PM1_EN), 0);
  assert.equal(inw(PM1_STS), TMR, "status clear but for QEMU's TMR_STS after reset");
});

Deno.test("PM1 event block accesses as QEMU: a dword is two words, bytes read the word's offset, odd offsets read 0", () => {
  const { as, pm, inb, inw, inl, outl } = setup();
  using _ = as;
  outl(PM1_STS, (PWRBTN << 16) | TMR); // PM1_EN = PWRBTN, TMR_STS cleared
  assert.equal(pm.enable, PWRBTN);
  pm.powerButton();
  assert.equal(inl(PM1_STS), (PWRBTN << 16) | PWRBTN);
  // impl.min 2: a byte read at 0x600 is the low byte of the word; at 0x601 it is a word read at
  // offset 1, which holds no register (QEMU's acpi_pm_evt_read returns 0 there).
  assert.equal(inb(PM1_STS), 0x00);
  assert.equal(inb(PM1_STS + 1), 0x00);
  assert.equal(inw(PM1_STS), PWRBTN);
});

Deno.test("power button: PWRBTN_STS and the SCI only when PWRBTN_EN is set; acknowledging lowers the SCI", () => {
  const { as, pm, sci, inw, outw } = setup();
  using _ = as;
  outw(PM1_STS, TMR);
  assert.equal(pm.powerButton(), false, "not enabled: not delivered");
  assert.equal(inw(PM1_STS) & PWRBTN, 0);
  assert.equal(sci.level, false);
  outw(PM1_EN, PWRBTN);
  assert.equal(pm.powerButton(), true);
  assert.equal(sci.level, true);
  assert.equal(pm.sciLevel, true);
  outw(PM1_EN, 0); // masking the event lowers the SCI, the status stays
  assert.equal(sci.level, false);
  assert.equal(inw(PM1_STS) & PWRBTN, PWRBTN);
  outw(PM1_EN, PWRBTN);
  assert.equal(sci.level, true);
  outw(PM1_STS, PWRBTN);
  assert.equal(sci.level, false);
  assert.equal(sci.redundantCalls, 0, "the line is driven only on changes");
});

Deno.test("PM1_CNT: SCI_EN set at reset (no SMM), SLP_EN starts a sleep of SLP_TYP and never reads back", () => {
  const { as, pm, sleeps, inw, inb, outw, outb } = setup();
  using _ = as;
  assert.equal(inw(PM1_CNT), SCI_EN);
  outw(PM1_CNT, SCI_EN | (5 << 10));
  assert.equal(inw(PM1_CNT), SCI_EN | (5 << 10));
  assert.deepEqual(sleeps, [], "no SLP_EN, no sleep");
  outw(PM1_CNT, SCI_EN | SLP_EN); // Linux's acpi_power_off with \_S5 = 0
  assert.deepEqual(sleeps, [0]);
  assert.equal(inw(PM1_CNT), SCI_EN, "SLP_EN reads 0");
  // Byte writes: the high byte keeps the low one (QEMU's acpi_pm_cnt_write).
  outb(PM1_CNT + 1, (SLP_EN | (1 << 10)) >> 8);
  assert.deepEqual(sleeps, [0, 1]);
  assert.equal(inb(PM1_CNT), SCI_EN);
  assert.equal(inb(PM1_CNT + 1), 1 << 2);
  outw(PM1_CNT, 0);
  pm.reset();
  assert.equal(pm.control, SCI_EN);
});

Deno.test("PM timer: 3.579545 MHz from the injected clock, 24 bits, 4-byte reads only, writes ignored", () => {
  const { as, advance, inl, outl } = setup();
  using _ = as;
  assert.equal(inl(PM_TMR), 0);
  advance(1);
  assert.equal(inl(PM_TMR), 3579, "3579.545 ticks in 1 ms");
  advance(999);
  assert.equal(inl(PM_TMR), TICKS_PER_SECOND);
  advance(4000); // 5 s = 17_897_725 ticks, past 2^24
  assert.equal(inl(PM_TMR), 17_897_725 - 0x100_0000);
  outl(PM_TMR, 0);
  assert.equal(inl(PM_TMR), 17_897_725 - 0x100_0000);
  const { value, result } = as.read(PM_TMR, 2);
  assert.deepEqual([value, result], [0n, MemTxResult.DECODE_ERROR], "valid.min 4: a word read is refused");
});

Deno.test("TMR_STS sets when the counter's bit 23 changes, and the SCI with TMR_EN", () => {
  const { as, advance, inw, outw, sci } = setup();
  using _ = as;
  const msToHalf = (0x80_0000 / TICKS_PER_SECOND) * 1000; // ≈ 2343.5 ms
  advance(10);
  outw(PM1_STS, TMR);
  assert.equal(inw(PM1_STS) & TMR, 0);
  outw(PM1_EN, TMR);
  advance(msToHalf - 20);
  assert.equal(inw(PM1_STS) & TMR, 0, "before bit 23 changes");
  advance(20);
  assert.equal(inw(PM1_STS) & TMR, TMR, "bit 23 changed");
  outw(PM1_EN, TMR); // the device notices on its next update
  assert.equal(sci.level, true);
  outw(PM1_STS, TMR);
  assert.equal(sci.level, false);
  assert.equal(inw(PM1_STS) & TMR, 0, "the next overflow is another half period away");
});

Deno.test("GPE0: status write-1-to-clear, enable stored, SCI from enabled status of the first byte", () => {
  const { as, pm, sci, inb, inw, inl, outb, outw } = setup();
  using _ = as;
  pm.raiseGpe(1);
  pm.raiseGpe(9);
  assert.equal(inl(GPE0_STS), 0x0202);
  assert.equal(sci.level, false, "nothing enabled");
  outb(GPE0_EN, 0x02);
  assert.equal(sci.level, true);
  assert.equal(inb(GPE0_EN), 0x02);
  outw(GPE0_STS, 0x0002);
  assert.equal(inl(GPE0_STS), 0x0002_0200, "status bytes, then enable bytes");
  assert.equal(inw(GPE0_STS), 0x0200);
  assert.equal(sci.level, false);
  outb(GPE0_EN + 1, 0x02); // QEMU's acpi_update_sci looks at the first byte only
  assert.equal(sci.level, false);
  assert.throws(() => pm.raiseGpe(16), /bit 16 is not a GPE0 status bit/);
  pm.reset();
  assert.equal(inl(GPE0_STS), 0);
});

Deno.test("unimplemented ports in piix4-pm read as unassigned I/O (all ones), as QEMU's container", () => {
  const { as, inb, inl } = setup();
  using _ = as;
  assert.equal(inb(0x606), 0xff);
  assert.equal(inl(0x60c), 0xffff_ffff);
  assert.equal(inb(0x63f), 0xff);
});

Deno.test("garbage writes never throw and leave the registers in their documented ranges", () => {
  const { as, pm } = setup();
  using _ = as;
  fc.assert(fc.property(
    fc.array(
      fc.record({
        port: fc.integer({ min: 0x5f0, max: 0x650 }).chain((p) =>
          fc.oneof(fc.constant(p), fc.integer({ min: 0xafd0, max: 0xafef }))
        ),
        size: fc.constantFrom(1, 2, 4),
        value: fc.integer({ min: 0, max: 0xffff_ffff }),
        read: fc.boolean(),
      }),
      { maxLength: 40 },
    ),
    (ops) => {
      for (const { port, size, value, read } of ops) {
        if (read) as.read(port, size);
        else as.write(port, size, value);
      }
      assert.ok(pm.status <= 0xffff && pm.enable <= 0xffff && pm.control <= 0xffff);
      assert.equal(pm.control & SLP_EN, 0);
      assert.ok(pm.timer() <= 0xff_ffff);
    },
  ));
});

Deno.test("bad options: one error naming the option", () => {
  assert.throws(() => new AcpiPm({ base: 0xfff0 }), /AcpiPm base: ports 0xfff0\+0x40 end past 0x10000/);
  assert.throws(() => new AcpiPm({ gpe0Base: -1 }), /AcpiPm gpe0Base: port -1/);
  assert.throws(() => new AcpiPm({ onSleep: 5 as never }), /AcpiPm onSleep must be a function/);
  assert.throws(() => new AcpiPm({ clock: "now" as never }), /AcpiPm clock must be a function/);
  const moved = new AcpiPm({ base: 0xb000, gpe0Base: 0xb100 });
  const { io, as } = ioSpace();
  using _ = as;
  moved.map(io);
  assert.equal(Number(as.read(0xb004, 2).value), SCI_EN);
});

// ---- Device state (issue 11) ----

type PmOp =
  | { read: number; size: 1 | 2 | 4 }
  | { write: number; size: 1 | 2 | 4; value: number }
  | { powerButton: true }
  | { gpe: number }
  | { tick: number };

const PM_PORTS = [PM1_STS, PM1_EN, PM1_CNT, PM1_CNT + 1, PM_TMR, 0xafe0, 0xafe1, 0xafe2, 0xafe3];

const pmOp: fc.Arbitrary<PmOp> = fc.oneof(
  fc.record({
    read: fc.constantFrom(...PM_PORTS),
    size: fc.constantFrom(1 as const, 2 as const, 4 as const),
  }),
  fc.record({
    write: fc.constantFrom(...PM_PORTS),
    size: fc.constantFrom(1 as const, 2 as const),
    // SLP_EN (0x2000) makes a sleep request: an observable side effect.
    value: fc.oneof(
      fc.constantFrom(0x0001, 0x0100, 0x0121, 0x2001, 0xffff, 0x01),
      fc.integer({ min: 0, max: 0xffff }),
    ),
  }),
  fc.constant({ powerButton: true as const }),
  fc.record({ gpe: fc.integer({ min: 0, max: 15 }) }),
  fc.record({ tick: fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.constantFrom(0.5, 2344, 4687.5)) }),
);

let pmInstances = 0;

function pmHarness(): StateHarness<PmOp> & { pm: AcpiPm; clock: { now: number } } {
  // Each device has its own monotonic clock, far from the others: a load must rebase the timer.
  const clock = { now: 1_000_000 * ++pmInstances };
  const sci = new RecordingIrqLine();
  const sleeps: number[] = [];
  const { io, as } = ioSpace();
  const pm = new AcpiPm({ sci, clock: () => clock.now, onSleep: (t) => sleeps.push(t) });
  pm.map(io);
  return {
    pm,
    clock,
    device: pm,
    step(op) {
      if ("read" in op) return as.read(op.read, op.size).value;
      if ("write" in op) as.write(op.write, op.size, op.value);
      else if ("powerButton" in op) return pm.powerButton();
      else if ("gpe" in op) pm.raiseGpe(op.gpe);
      else clock.now += op.tick;
      return pm.timer();
    },
    observe: () => [sci.level, sleeps.splice(0)],
    close: () => as.close(),
  };
}

Deno.test("ACPI PM state: a loaded PM block behaves as the saved one, on another clock", () => {
  checkRoundTrip(pmHarness, pmOp, { numRuns: 300 });
});

Deno.test("ACPI PM state: the PM timer continues from the saved count; the SCI is re-driven", () => {
  using a = disposable(pmHarness());
  a.step({ write: PM1_EN, size: 2, value: 0x0100 });
  a.pm.powerButton();
  a.clock.now += 1234.5;
  const timer = a.pm.timer();
  using b = disposable(pmHarness());
  b.clock.now += 9_999_999; // another host's clock, far ahead
  b.pm.loadState(a.pm.saveState());
  assert.equal(b.pm.timer(), timer);
  assert.deepEqual(b.observe(), [true, []]);
  a.clock.now += 40;
  b.clock.now += 40;
  assert.equal(b.pm.timer(), a.pm.timer());
});

Deno.test("ACPI PM state: bad states are refused by field and leave the device unchanged", () => {
  using h = disposable(pmHarness());
  h.step({ write: PM1_EN, size: 2, value: 0x0121 });
  h.step({ gpe: 3 });
  h.step({ tick: 5000 });
  assert.ok(checkBadStates(h, "acpi-pm@0x600", { skipOutOfRange: ["timerElapsedMs"] }) >= 15);
  const state = h.pm.saveState();
  assert.throws(
    () => h.pm.loadState({ ...state, pm1Cnt: 0x2001 }),
    /"pm1Cnt" is 0x2001, has bits outside 0xdfff/,
  );
  assert.throws(
    () => h.pm.loadState({ ...state, timerOverflowAt: 5 }),
    /"timerOverflowAt" is 5, not a multiple/,
  );
  assert.throws(
    () => h.pm.loadState({ ...state, timerElapsedMs: -1 }),
    /"timerElapsedMs" is -1, not in 0\.\./,
  );
  assert.deepEqual(h.pm.saveState(), state);
});
