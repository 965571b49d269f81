import assert from "node:assert/strict";
import fc from "fast-check";
import { I8254, PIT_FREQ, PIT_MAX_REPLAYED_TRANSITIONS, pitTicks, pitTicksToNs } from "./i8254.ts";
import { PcSpeaker } from "./pc_speaker.ts";
import { RecordingIrqLine } from "./irq_line.ts";
import { ioSpace, portIo } from "./_test_util.ts";
import {
  checkBadStates,
  checkRoundTrip,
  disposable,
  flatRows,
  type StateHarness,
} from "./_state_test_util.ts";

const PIT_CH0 = 0x40;
const PIT_CH2 = 0x42;
const PIT_MODE = 0x43;

/** A PIT and port 0x61 on a fake clock (ns), `origin` being the clock at creation. */
function board(origin = 0) {
  const clock = { now: origin };
  const irq = new RecordingIrqLine();
  const { io, as } = ioSpace();
  const pit = new I8254({ irq, clock: () => clock.now });
  const spk = new PcSpeaker(pit);
  pit.map(io);
  spk.map(io);
  const p = portIo(as);
  return {
    clock,
    irq,
    as,
    pit,
    spk,
    ...p,
    /** The first clock time at which `ticks` PIT ticks have passed since `from`. */
    at(from: number, ticks: number): number {
      let ns = pitTicksToNs(ticks);
      while (pitTicks(ns) < ticks) ns++;
      return from + ns;
    },
    /** Loads `count` into `channel` (0-2) in `mode`, LSB then MSB. */
    program(channel: number, mode: number, count: number) {
      p.outb(PIT_MODE, (channel << 6) | 0x30 | (mode << 1));
      p.outb(PIT_CH0 + channel, count & 0xff);
      p.outb(PIT_CH0 + channel, (count >> 8) & 0xff);
    },
    /** The 16-bit count of `channel` through a counter latch (as Linux's clocksource reads it). */
    latched(channel: number): number {
      p.outb(PIT_MODE, channel << 6);
      return p.inb(PIT_CH0 + channel) | (p.inb(PIT_CH0 + channel) << 8);
    },
    /** Runs the board's timer loop: every deadline up to `until`, at its time. */
    runUntil(until: number) {
      for (let d = pit.nextDeadline(); d !== undefined && d <= until; d = pit.nextDeadline()) {
        clock.now = d;
        pit.update();
      }
      clock.now = until;
    },
    [Symbol.dispose]: () => as.close(),
  };
}

Deno.test("PIT: regions 'pit' at 0x40 (4 ports) and 'pcspk' at 0x61 (1 port), as QEMU 7.2's info mtree", () => {
  using b = board();
  assert.deepEqual(flatRows(b.as).filter(([, , name]) => name !== "io"), [
    [0x40n, 4n, "pit", 0n, false],
    [0x61n, 1n, "pcspk", 0n, false],
  ]);
  assert.equal(b.pit.region.priority, 0);
  assert.equal(b.spk.region.priority, 0);
  assert.equal(b.pit.stateName, "pit@0x40");
  assert.equal(b.inb(PIT_MODE), 0); // the control word is write-only
});

Deno.test("PIT: arithmetic is QEMU's muldiv64, exact (checked against bigint)", () => {
  const ticks = (ns: bigint) => (ns * BigInt(PIT_FREQ)) / 1_000_000_000n;
  const nanos = (t: bigint) => (t * 1_000_000_000n) / BigInt(PIT_FREQ);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (ns) => {
      assert.equal(BigInt(pitTicks(ns)), ticks(BigInt(ns)));
      const t = Math.floor(ns / 1000); // tick counts below 2^53 / 838
      assert.equal(BigInt(pitTicksToNs(t)), nanos(BigInt(t)));
    }),
    { numRuns: 2000 },
  );
  assert.equal(pitTicks(1_000_000_000), PIT_FREQ);
  assert.equal(pitTicks(-5), 0);
  assert.equal(pitTicksToNs(32768), 27_462_700);
});

Deno.test("PIT reset: mode 3, count 65536, channel 2's gate low; channel 0's first transition in 32768 ticks", () => {
  using b = board(5_000);
  b.outb(PIT_MODE, 0xce); // read back count and status of all three channels
  for (const port of [0x40, 0x41, 0x42]) {
    assert.equal(b.inb(port), 0x86, "status: OUT high, rw 0, mode 3, binary"); // no null-count bit
    // rw mode 0: QEMU's count latch stores "latched in mode 0", i.e. not latched; a live LSB read.
    assert.equal(b.inb(port), 0);
  }
  assert.deepEqual(b.pit.channelInfo(0), { gate: true, mode: 3, initialCount: 0x10000, out: true });
  assert.deepEqual(b.pit.channelInfo(1), { gate: true, mode: 3, initialCount: 0x10000, out: true });
  assert.deepEqual(b.pit.channelInfo(2), { gate: false, mode: 3, initialCount: 0x10000, out: true });
  assert.equal(b.pit.nextDeadline(), 5_000 + 27_462_700);
  assert.equal(b.irq.history.length, 0, "a reset computes the transition but does not drive the line");
  // After 32767 ticks the timer fires: OUT still high (the conversion rounded down), then +1 ns.
  b.runUntil(5_000 + 27_462_700);
  assert.deepEqual(b.irq.history, [true]);
  b.runUntil(5_000 + pitTicksToNs(65536) + 1);
  assert.deepEqual(b.irq.history, [true, false, true]); // 18.2 Hz square wave, rising at each period
  assert.equal(b.irq.redundantCalls, 0);
  // Before any control word (rw mode 0), a write loads the low byte alone, as in LSB mode.
  b.outb(0x41, 0x20);
  assert.equal(b.pit.channelInfo(1).initialCount, 0x20);
});

Deno.test("PIT reset: a guest's programming is undone, its access state kept (as QEMU's pit_reset_common)", () => {
  using b = board();
  b.program(2, 0, 1000);
  b.outb(0x61, 1);
  b.pit.reset();
  b.outb(PIT_MODE, 0xe8); // status of channel 2
  assert.equal(b.inb(PIT_CH2), 0x80 | (3 << 4) | (3 << 1), "rw mode 3 kept, mode back to 3");
  assert.deepEqual(b.pit.channelInfo(2), { gate: false, mode: 3, initialCount: 0x10000, out: true });
});

Deno.test("PIT mode 0: OUT low until the count expires; count wraps past 0; IRQ rises once (one-shot)", () => {
  using b = board(1_000_000);
  b.program(0, 0, 1000);
  const load = b.clock.now;
  assert.deepEqual(b.irq.history, [], "the line was low already: no call");
  assert.equal(b.pit.nextDeadline(), load + pitTicksToNs(1000));
  b.clock.now = b.at(load, 400);
  assert.equal(b.latched(0), 600);
  assert.equal(b.pit.channelInfo(0).out, false);
  b.runUntil(b.at(load, 1000) + 5);
  assert.deepEqual(b.irq.history, [true]);
  assert.equal(b.pit.nextDeadline(), undefined);
  b.clock.now = b.at(load, 1300);
  assert.equal(b.latched(0), 0x10000 - 300);
  assert.ok(b.pit.channelInfo(0).out);
  b.runUntil(b.clock.now + 1e9);
  assert.deepEqual(b.irq.history, [true]);
});

Deno.test("PIT mode 1: OUT (as QEMU computes it) high while counting; a rising gate restarts", () => {
  using b = board();
  b.outb(0x61, 0); // channel 2 gate low
  b.program(2, 1, 500);
  const load = b.clock.now;
  assert.ok(b.pit.channelInfo(2).out);
  b.clock.now = b.at(load, 200);
  assert.equal(b.latched(2), 300);
  b.outb(0x61, 1); // rising edge: the count restarts from 500
  const restart = b.clock.now;
  b.clock.now = b.at(restart, 100);
  assert.equal(b.latched(2), 400);
  b.outb(0x61, 0);
  b.outb(0x61, 0); // no edge, no restart
  b.clock.now = b.at(restart, 501);
  assert.equal(b.pit.channelInfo(2).out, false);
});

Deno.test("PIT mode 2 (Linux periodic tick, 0x34): count reloads every period; one IRQ edge per period", () => {
  using b = board(7_777);
  const LATCH = Math.trunc((PIT_FREQ + 50) / 100); // HZ=100
  b.program(0, 2, LATCH);
  const load = b.clock.now;
  assert.deepEqual(b.irq.history, [], "OUT (as QEMU computes it) is low at the load");
  assert.equal(b.pit.nextDeadline(), load + pitTicksToNs(LATCH + 1));
  const rises: number[] = [];
  const falls: number[] = [];
  const irq = b.irq;
  for (let d = b.pit.nextDeadline(); d !== undefined && d <= load + 1e9; d = b.pit.nextDeadline()) {
    const [before, level] = [irq.risingEdges, irq.level];
    b.clock.now = d;
    b.pit.update();
    if (irq.risingEdges > before) rises.push(pitTicks(d - load));
    if (level && !irq.level) falls.push(pitTicks(d - load));
  }
  assert.equal(rises.length, 99); // the 100th period ends after 1 s (LATCH is 11932 > 1193182 / 100)
  rises.forEach((ticks, i) => assert.equal(ticks, (i + 1) * LATCH, `edge ${i} at a reload`));
  assert.equal(falls.length, 98);
  falls.forEach((ticks, i) => assert.equal(ticks, (i + 2) * LATCH - 1, `fall ${i} one tick before a reload`));
  // Between edges the line is high but for about one tick before each reload: QEMU's waveform.
  assert.ok(irq.level);
  assert.equal(irq.redundantCalls, 0);
  b.clock.now = b.at(load, 100 * LATCH + 5000);
  assert.equal(b.latched(0), LATCH - 5000);
  b.clock.now = b.at(load, 101 * LATCH);
  assert.equal(b.latched(0), LATCH, "the reload value on the reload tick");
});

Deno.test("PIT mode 3: square wave, count down by 2, IRQ rises at the load and at every period", () => {
  using b = board();
  b.program(0, 3, 1000);
  const load = b.clock.now;
  assert.deepEqual(b.irq.history, [true], "OUT high at the load");
  b.clock.now = b.at(load, 100);
  assert.equal(b.latched(0), 800);
  assert.ok(b.pit.channelInfo(0).out);
  b.clock.now = b.at(load, 600);
  assert.equal(b.latched(0), 1000 - 200);
  assert.equal(b.pit.channelInfo(0).out, false);
  b.runUntil(b.at(load, 10_000));
  assert.equal(b.irq.risingEdges, 11);
  assert.equal(b.irq.history.length, 21);
  assert.equal(b.irq.redundantCalls, 0);
});

Deno.test("PIT mode 4 (Linux one-shot clockevent, 0x38): a one-tick pulse at the count, then nothing", () => {
  using b = board(123);
  b.outb(PIT_MODE, 0x38);
  b.outb(PIT_CH0, 0xe8); // delta 1000: pit_next_event
  b.outb(PIT_CH0, 0x03);
  const load = b.clock.now;
  assert.equal(b.pit.nextDeadline(), load + pitTicksToNs(1000));
  b.runUntil(b.at(load, 999));
  assert.deepEqual(b.irq.history, []);
  b.runUntil(b.at(load, 1000));
  assert.deepEqual(b.irq.history, [true]);
  b.runUntil(b.at(load, 1002));
  assert.deepEqual(b.irq.history, [true, false]);
  assert.equal(b.pit.nextDeadline(), undefined);
  // The next event: a new count re-arms.
  b.outb(PIT_CH0, 10);
  b.outb(PIT_CH0, 0);
  b.runUntil(b.at(b.clock.now, 12));
  assert.deepEqual(b.irq.history, [true, false, true, false]);
  // Shutdown (0x30 then 0, 0): mode 0 with 65536, the line stays low until it expires.
  b.outb(PIT_MODE, 0x30);
  b.outb(PIT_CH0, 0);
  b.outb(PIT_CH0, 0);
  assert.equal(b.pit.nextDeadline(), b.clock.now + pitTicksToNs(0x10000));
});

Deno.test("PIT mode 5: the pulse counts from the gate's rising edge", () => {
  using b = board();
  b.program(2, 5, 50);
  const load = b.clock.now;
  b.clock.now = b.at(load, 50);
  assert.ok(b.pit.channelInfo(2).out);
  b.outb(0x61, 1); // gate 0 → 1: retrigger
  assert.equal(b.pit.channelInfo(2).out, false);
  b.clock.now = b.at(b.clock.now, 50);
  assert.ok(b.pit.channelInfo(2).out);
});

Deno.test("PIT modes 6 and 7: stored as written; count as mode 2, OUT as mode 0 (QEMU's default cases)", () => {
  using b = board();
  for (const mode of [6, 7]) {
    b.program(1, mode, 100);
    const load = b.clock.now;
    b.outb(PIT_MODE, 0xe4); // status of channel 1
    assert.equal(b.inb(0x41) & 0x0e, mode << 1);
    b.clock.now = b.at(load, 130);
    assert.equal(b.latched(1), 70);
    assert.ok(b.pit.channelInfo(1).out);
  }
});

Deno.test("PIT control word: changes only the modes; OUT and IRQ follow at the next count load", () => {
  using b = board();
  b.program(0, 3, 1000);
  assert.ok(b.irq.level);
  b.outb(PIT_MODE, 0x30); // mode 0: QEMU does not touch OUT or the timer here
  assert.ok(b.irq.level);
  b.outb(PIT_CH0, 100);
  assert.ok(b.irq.level, "half a count written: nothing loaded yet");
  b.outb(PIT_CH0, 0);
  assert.equal(b.irq.level, false);
});

Deno.test("PIT access modes: LSB only, MSB only, LSB then MSB for both writes and reads", () => {
  using b = board();
  b.outb(PIT_MODE, 0x90); // channel 2, LSB only, mode 0
  b.outb(PIT_CH2, 0x34);
  assert.equal(b.pit.channelInfo(2).initialCount, 0x34);
  assert.equal(b.inb(PIT_CH2), 0x34);
  assert.equal(b.inb(PIT_CH2), 0x34, "LSB only: every read is the low byte");
  b.outb(PIT_MODE, 0xa0); // MSB only
  b.outb(PIT_CH2, 0x12);
  assert.equal(b.pit.channelInfo(2).initialCount, 0x1200);
  assert.equal(b.inb(PIT_CH2), 0x12);
  b.outb(PIT_MODE, 0xb0); // LSB then MSB
  b.outb(PIT_CH2, 0x78);
  assert.equal(b.pit.channelInfo(2).initialCount, 0x1200, "not loaded until the MSB");
  b.outb(PIT_CH2, 0x56);
  assert.equal(b.pit.channelInfo(2).initialCount, 0x5678);
  assert.deepEqual([b.inb(PIT_CH2), b.inb(PIT_CH2), b.inb(PIT_CH2)], [0x78, 0x56, 0x78]);
  b.outb(PIT_MODE, 0xb0);
  b.outb(PIT_CH2, 0);
  b.outb(PIT_CH2, 0); // 0 is 65536
  assert.equal(b.pit.channelInfo(2).initialCount, 0x10000);
  b.clock.now = b.at(b.clock.now, 1);
  assert.equal(b.latched(2), 0xffff);
});

Deno.test("PIT counter latch: holds the count until read; a second latch before that is ignored", () => {
  using b = board();
  b.program(0, 2, 10_000);
  const load = b.clock.now;
  b.clock.now = b.at(load, 1000);
  b.outb(PIT_MODE, 0x00);
  b.clock.now = b.at(load, 2000);
  b.outb(PIT_MODE, 0x00); // ignored
  assert.equal(b.inb(PIT_CH0), 9000 & 0xff);
  b.clock.now = b.at(load, 3000);
  assert.equal(b.inb(PIT_CH0), 9000 >> 8, "the MSB is still the latched one");
  assert.equal(b.inb(PIT_CH0) | (b.inb(PIT_CH0) << 8), 7000, "then live reads again");
  // A latch in LSB-only mode yields one byte.
  b.outb(PIT_MODE, 0x14); // channel 0, LSB only, mode 2
  b.outb(PIT_CH0, 200);
  b.clock.now = b.at(b.clock.now, 50);
  b.outb(PIT_MODE, 0x00);
  assert.equal(b.inb(PIT_CH0), 150);
  b.clock.now = b.at(b.clock.now, 10);
  assert.equal(b.inb(PIT_CH0), 140);
});

Deno.test("PIT read-back: count and status of several channels; status first; bits 5 and 4 select", () => {
  using b = board();
  b.program(0, 2, 5000);
  b.outb(PIT_MODE, 0x7b); // channel 1, LSB then MSB, mode 5, BCD
  b.outb(0x41, 0x00);
  b.outb(0x41, 0x10);
  const load = b.clock.now;
  b.clock.now = b.at(load, 100);
  b.outb(PIT_MODE, 0xc6); // count and status, channels 0 and 1
  b.clock.now = b.at(load, 900);
  assert.equal(b.inb(PIT_CH0), (2 << 1) | (3 << 4), "status: OUT low, LSB/MSB, mode 2, binary");
  assert.equal(b.inb(PIT_CH0) | (b.inb(PIT_CH0) << 8), 4900);
  assert.equal(b.inb(0x41), 0x30 | (5 << 1) | 1, "OUT low (QEMU: high only at d == count), mode 5, BCD");
  assert.equal(b.inb(0x41) | (b.inb(0x41) << 8), 0x1000 - 100, "counting is binary even in BCD");
  // Status only (bit 5 set: no count latch); a second status latch before the read is ignored.
  b.outb(PIT_MODE, 0xe2);
  b.clock.now = b.at(load, 5000);
  b.outb(PIT_MODE, 0xe2);
  assert.equal(b.inb(PIT_CH0) & 0x80, 0);
  // Count only (bit 4 set).
  b.outb(PIT_MODE, 0xd2);
  assert.equal(b.inb(PIT_CH0) | (b.inb(PIT_CH0) << 8), 5000);
  // A channel whose bit is clear is untouched.
  b.outb(PIT_MODE, 0xc8); // channel 2 only
  b.clock.now = b.at(load, 5100);
  assert.equal(b.inb(PIT_CH0) | (b.inb(PIT_CH0) << 8), 4900);
});

Deno.test("PIT clocksource read (Linux's i8253 pit_read: latch, LSB, MSB) goes down between two reads", () => {
  using b = board();
  b.program(0, 2, 11932);
  const first = b.latched(0);
  b.clock.now += 1_000_000;
  const second = b.latched(0);
  assert.equal(first - second, pitTicks(1_000_000) - 0);
});

Deno.test("PIT update: a late call replays every transition up to now, in order", () => {
  using b = board();
  b.program(0, 3, 100);
  b.irq.clear();
  b.clock.now = b.at(b.clock.now, 1000);
  b.pit.update();
  assert.equal(b.irq.risingEdges, 10);
  assert.equal(b.irq.redundantCalls, 0);
  assert.ok(b.pit.nextDeadline()! > b.clock.now);
  b.pit.update(); // nothing due
  assert.equal(b.irq.risingEdges, 10);
});

Deno.test("PIT update: after a host stall, at most PIT_MAX_REPLAYED_TRANSITIONS are replayed, then it jumps to now", () => {
  using b = board();
  b.program(0, 3, 2); // a transition every tick
  b.irq.clear();
  b.clock.now += 10e9; // 10 s stalled: 11.9 million ticks
  b.pit.update();
  // Each tick's transition (plus QEMU's +1 ns re-evaluations, which change nothing) up to the cap.
  const edges = b.irq.history.length;
  assert.ok(
    edges > PIT_MAX_REPLAYED_TRANSITIONS / 4 && edges <= PIT_MAX_REPLAYED_TRANSITIONS + 1,
    `${edges}`,
  );
  assert.equal(b.irq.level, b.pit.channelInfo(0).out, "the line shows OUT now");
  const next = b.pit.nextDeadline()!;
  assert.ok(next > b.clock.now && next <= b.clock.now + pitTicksToNs(2) + 1);
});

Deno.test("PIT irq control (HPET legacy): disabled means no deadline and no edges; enabling drives OUT now", () => {
  using b = board();
  b.program(0, 3, 100);
  b.pit.setIrqEnabled(false);
  assert.equal(b.pit.nextDeadline(), undefined);
  b.clock.now = b.at(b.clock.now, 60);
  b.pit.update();
  b.outb(PIT_CH0, 100);
  b.outb(PIT_CH0, 0);
  assert.deepEqual(b.irq.history, [true]);
  b.clock.now = b.at(b.clock.now, 70);
  b.pit.setIrqEnabled(true);
  assert.deepEqual(b.irq.history, [true, false]);
  assert.ok(b.pit.nextDeadline() !== undefined);
});

Deno.test("PIT onDeadlineChange: reported once per change, as QEMU's timer_mod/timer_del of channel 0", () => {
  const clock = { now: 1000 };
  const seen: (number | undefined)[] = [];
  const { io, as } = ioSpace();
  using _ = { [Symbol.dispose]: () => as.close() };
  const pit = new I8254({ clock: () => clock.now, onDeadlineChange: (d) => seen.push(d) });
  pit.map(io);
  const { outb } = portIo(as);
  assert.deepEqual(seen, [1000 + pitTicksToNs(32768)], "the reset state's, from the constructor");
  outb(PIT_MODE, 0x30); // a control word does not move it
  outb(PIT_CH0, 100);
  assert.equal(seen.length, 1);
  outb(PIT_CH0, 0); // mode 0, count 100
  assert.deepEqual(seen.slice(1), [1000 + pitTicksToNs(100)]);
  clock.now += 1_000_000;
  pit.update();
  assert.deepEqual(seen.slice(2), [undefined], "one-shot done: the timer is deleted");
  pit.update();
  outb(0x42, 5); // channel 2 has no timer
  assert.equal(seen.length, 3);
  pit.reset();
  assert.deepEqual(seen.slice(3), [clock.now + pitTicksToNs(32768)]);
  pit.setIrqEnabled(false);
  assert.deepEqual(seen.slice(4), [undefined]);
  assert.throws(
    () => new I8254({ onDeadlineChange: 1 as never }),
    /I8254 onDeadlineChange must be a function/,
  );
});

Deno.test("PIT: bad arguments and clocks are refused with one line", () => {
  assert.throws(() => new I8254({ clock: 5 as never }), /I8254 clock must be a function/);
  assert.throws(() => new I8254({ base: 0xfffe }), RangeError);
  assert.throws(() => new I8254({ clock: () => 0.5 }), /pit clock: 0.5 is not a safe integer/);
  const pit = new I8254({ clock: () => 0 });
  assert.throws(() => pit.setGate(3, true), /channel 3 is not 0-2/);
  assert.throws(() => pit.channelInfo(-1), RangeError);
});

// ---- Property tests against a tick-by-tick model of the counter ----

/** The counter after `d` ticks from loading `n` in `mode`, stepped tick by tick, and OUT (mode 3). */
function simulate(mode: 0 | 2 | 3, n: number, d: number): { count: number; out: boolean } {
  let count = n % 0x10000; // 65536 is held as 0
  let out = true;
  for (let i = 0; i < d; i++) {
    if (mode === 0) count = (count + 0xffff) & 0xffff;
    else if (mode === 2) count = count === 1 ? n : count === 0 ? 0xffff : count - 1;
    else {
      count = (count === 0 ? 0x10000 : count) - 2;
      if (count === 0) {
        count = n % 0x10000;
        out = !out;
      }
    }
  }
  return { count: count === 0 && mode !== 0 ? 0x10000 : count, out };
}

Deno.test("PIT property: counts read equal a tick-by-tick counter (modes 0, 2, 3 with even counts)", () => {
  fc.assert(
    fc.property(
      fc.constantFrom<0 | 2 | 3>(0, 2, 3),
      fc.integer({ min: 1, max: 0x10000 }),
      fc.integer({ min: 0, max: 3 * 0x10000 }),
      fc.integer({ min: 0, max: 1e12 }),
      (mode, n, d, origin) => {
        if (mode === 3) n = Math.max(2, n & ~1);
        if (mode === 2 && n === 1) n = 2; // mode 2 with count 1 is illegal on the 8254
        using b = board(origin);
        b.program(0, mode, n % 0x10000);
        const load = b.clock.now;
        b.clock.now = b.at(load, d);
        assert.equal(pitTicks(b.clock.now - load), d);
        const model = simulate(mode, n, d);
        assert.equal(b.latched(0), model.count & 0xffff);
        if (mode === 3) assert.equal(b.pit.channelInfo(0).out, model.out);
        if (mode === 0) assert.equal(b.pit.channelInfo(0).out, d >= n);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("PIT property: driven by its deadlines, IRQ 0 rises exactly at each period's reload (modes 2, 3)", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(2, 3),
      fc.integer({ min: 2, max: 3000 }),
      fc.integer({ min: 0, max: 1e12 }),
      fc.integer({ min: 1, max: 40 }),
      (mode, n, origin, periods) => {
        using b = board(origin);
        b.program(0, mode, n);
        const load = b.clock.now;
        const rises: number[] = [];
        // Mode 2's timer samples a reload at the time of the tick after it (QEMU's "+ 1"), rounded down.
        const end = b.at(load, periods * n + 1);
        for (let t = b.pit.nextDeadline(); t !== undefined && t <= end; t = b.pit.nextDeadline()) {
          const before = b.irq.risingEdges;
          b.clock.now = t;
          b.pit.update();
          if (b.irq.risingEdges > before) rises.push(pitTicks(t - load));
        }
        const expected = Array.from({ length: periods }, (_, i) => (i + 1) * n);
        assert.deepEqual(rises, expected);
        assert.equal(b.irq.redundantCalls, 0);
      },
    ),
    { numRuns: 150 },
  );
});

// ---- Linux's TSC calibration against the model (arch/x86/kernel/tsc.c) ----

/** Ports where every access costs `costNs` of the fake clock; the "TSC" is the clock (1 GHz). */
function slowPorts(costNs: number) {
  const b = board(3_000_000_000);
  const inb = (port: number) => {
    b.clock.now += costNs;
    return b.inb(port);
  };
  const outb = (port: number, value: number) => {
    b.clock.now += costNs;
    b.outb(port, value);
  };
  return { b, inb, outb, tsc: () => b.clock.now };
}

Deno.test("Linux pit_calibrate_tsc: channel 2 mode 0 via port 0x61 gate, polled on bit 5, measures the TSC", () => {
  const { b, inb, outb, tsc } = slowPorts(700);
  using _ = b;
  const ms = 10;
  const latch = Math.trunc(PIT_FREQ / (1000 / ms));
  outb(0x61, (inb(0x61) & ~0x02) | 0x01);
  outb(0x43, 0xb0);
  outb(0x42, latch & 0xff);
  outb(0x42, latch >> 8);
  const t1 = tsc();
  let t2 = t1;
  let prev = t1;
  let loops = 0;
  let min = Infinity;
  let max = 0;
  while ((inb(0x61) & 0x20) === 0) {
    t2 = tsc();
    min = Math.min(min, t2 - prev);
    max = Math.max(max, t2 - prev);
    prev = t2;
    loops++;
  }
  assert.ok(loops >= 1000 && max <= 10 * min, "Linux accepts the run (CAL_PIT_LOOPS, no SMI-like gap)");
  const khz = Math.trunc((t2 - t1) / ms);
  assert.ok(Math.abs(khz - 1_000_000) < 1_000, `TSC ${khz} kHz, 1 GHz expected`);
  assert.equal(inb(0x61) & 0x03, 0x01, "gate on, speaker off");
});

Deno.test("Linux quick_pit_calibrate: MSB polling of channel 2 from 0xffff finds the TSC within 500 ppm", () => {
  const { b, inb, outb, tsc } = slowPorts(1000);
  using _ = b;
  const verifyMsb = (val: number) => {
    inb(0x42); // LSB, ignored
    return inb(0x42) === val;
  };
  const expectMsb = (val: number): { ok: boolean; tsc: number; delta: number } => {
    let t = 0;
    let prev = 0;
    let count = 0;
    for (; count < 50_000; count++) {
      if (!verifyMsb(val)) break;
      prev = t;
      t = tsc();
    }
    return { ok: count > 5, tsc: t, delta: tsc() - prev };
  };
  outb(0x61, (inb(0x61) & ~0x02) | 0x01);
  outb(0x43, 0xb0);
  outb(0x42, 0xff);
  outb(0x42, 0xff);
  verifyMsb(0);
  const first = expectMsb(0xff);
  assert.ok(first.ok);
  const MAX_ITERATIONS = Math.trunc((50 * PIT_FREQ) / 1000 / 256);
  let khz: number | undefined;
  for (let i = 1; i <= MAX_ITERATIONS; i++) {
    const next = expectMsb(0xff - i);
    assert.ok(next.ok, `MSB ${0xff - i} seen`);
    const delta = next.tsc - first.tsc;
    if (first.delta + next.delta >= delta / 2048) continue;
    assert.ok(verifyMsb(0xfe - i));
    khz = Math.trunc((delta * PIT_FREQ) / (i * 256 * 1000));
    break;
  }
  assert.ok(khz !== undefined, "quick calibration succeeded");
  assert.ok(Math.abs(khz - 1_000_000) < 500, `TSC ${khz} kHz`);
});

// ---- Device state ----

type PitOp =
  | { out: number; value: number }
  | { in: number }
  | { tick: number }
  | { update: true };

const pitOp: fc.Arbitrary<PitOp> = fc.oneof(
  fc.record({
    out: fc.constantFrom(0x40, 0x41, 0x42, 0x43, 0x61),
    value: fc.oneof(
      fc.constantFrom(0x34, 0x36, 0x38, 0x30, 0xb0, 0x00, 0x80, 0xce, 0xe2, 0xd2, 0x01, 0x03, 0x10),
      fc.integer({ min: 0, max: 0xff }),
    ),
  }),
  fc.record({ in: fc.constantFrom(0x40, 0x41, 0x42, 0x61) }),
  fc.record({ tick: fc.oneof(fc.integer({ min: 0, max: 5_000_000 }), fc.constantFrom(1, 838, 27_462_700)) }),
  fc.constant({ update: true as const }),
);

let pitInstances = 0;

function pitHarness(): StateHarness<PitOp> & { b: ReturnType<typeof board> } {
  // Each device has its own clock origin, far from the others: a load must rebase the times.
  const b = board(1_000_000_000_000 * ++pitInstances);
  const pit = b.pit;
  const spk = b.spk;
  const device = {
    saveState: () => ({ pit: pit.saveState(), pcspk: spk.saveState() }),
    loadState(state: { readonly [key: string]: unknown }) {
      pit.loadState(state.pit as never);
      spk.loadState(state.pcspk as never);
    },
  };
  return {
    b,
    device,
    step(op) {
      if ("out" in op) b.outb(op.out, op.value);
      else if ("in" in op) return b.inb(op.in);
      else if ("tick" in op) b.clock.now += op.tick;
      else b.pit.update();
      return b.pit.nextDeadline() === undefined ? null : b.pit.nextDeadline()! - b.clock.now;
    },
    observe: () => b.irq.level,
    close: () => b.as.close(),
  };
}

Deno.test("PIT state: a loaded PIT and port 0x61 behave as the saved ones, on another clock", () => {
  checkRoundTrip(pitHarness, pitOp, { numRuns: 300 });
});

Deno.test("PIT state: counts continue from the save across a clock rebase; the IRQ level is re-driven", () => {
  using a = disposable(pitHarness());
  a.b.program(0, 2, 11932);
  a.b.program(2, 0, 40_000);
  a.b.outb(0x61, 0x03);
  a.b.runUntil(a.b.clock.now + 25_000_000);
  assert.ok(a.b.irq.level);
  using c = disposable(pitHarness());
  c.b.clock.now = 5; // a fresh process: its clock is younger than the saved loads
  const state = a.device.saveState();
  c.device.loadState(state);
  assert.deepEqual(c.device.saveState(), state);
  assert.ok(c.b.irq.level);
  assert.equal(c.b.pit.nextDeadline()! - c.b.clock.now, a.b.pit.nextDeadline()! - a.b.clock.now);
  for (const dt of [1, 999, 123_456, 7_000_000]) {
    a.b.clock.now += dt;
    c.b.clock.now += dt;
    assert.equal(c.b.latched(0), a.b.latched(0));
    assert.equal(c.b.latched(2), a.b.latched(2));
    assert.equal(c.b.inb(0x61), a.b.inb(0x61));
  }
});

Deno.test("PIT state: bad states are refused by field and leave the device unchanged", () => {
  using h = disposable(pitHarness());
  h.b.program(0, 3, 1000);
  h.b.outb(0x43, 0xc2);
  h.b.clock.now += 3_000_000;
  const pit = {
    ...h,
    device: h.b.pit,
  };
  assert.ok(checkBadStates(pit, "pit@0x40", { skipOutOfRange: ["nextTransitionInNs"] }) >= 100);
  const state = h.b.pit.saveState();
  const bad = (patch: object) => ({ ...state, ...patch });
  assert.throws(() => h.b.pit.loadState(bad({ channels: [] })), /"channels" has 0 elements, not 3/);
  const ch = state.channels as readonly { [key: string]: unknown }[];
  const withCh0 = (patch: object) => bad({ channels: [{ ...ch[0], ...patch }, ch[1], ch[2]] });
  assert.throws(
    () => h.b.pit.loadState(withCh0({ count: 0 })),
    /"channels\[0\]\.count" is 0, not in 1\.\.65536/,
  );
  assert.throws(() => h.b.pit.loadState(withCh0({ mode: 8 })), /"channels\[0\]\.mode" is 8/);
  assert.throws(
    () => h.b.pit.loadState(bad({ nextTransitionInNs: -(ch[0].countLoadAgoNs as number) - 1 })),
    /pit@0x40: state field "nextTransitionInNs" is -\d+, before channel 0's count load/,
  );
  assert.deepEqual(h.b.pit.saveState(), state);
  const spk = { ...h, device: h.b.spk };
  assert.equal(checkBadStates(spk, "pcspk@0x61"), 4);
});
