import assert from "node:assert/strict";
import { I8254 } from "./i8254.ts";
import { PcSpeaker } from "./pc_speaker.ts";
import { ioSpace, portIo } from "./_test_util.ts";

function speaker() {
  const clock = { now: 0 };
  const { io, as } = ioSpace();
  const pit = new I8254({ clock: () => clock.now });
  const spk = new PcSpeaker(pit);
  pit.map(io);
  spk.map(io);
  return { clock, pit, spk, ...portIo(as), [Symbol.dispose]: () => as.close() };
}

Deno.test("port 0x61: bits 0 and 1 read back as written; other written bits are dropped", () => {
  using s = speaker();
  const low = (v: number) => v & ~0x30; // without the refresh bit and OUT
  assert.equal(low(s.inb(0x61)), 0x00, "after reset: gate low, speaker off");
  s.outb(0x61, 0xff);
  assert.equal(low(s.inb(0x61)), 0x03);
  assert.ok(s.pit.channelInfo(2).gate && s.spk.dataOn);
  s.outb(0x61, 0x02);
  assert.equal(low(s.inb(0x61)), 0x02);
  assert.equal(s.pit.channelInfo(2).gate, false);
});

Deno.test("port 0x61: the refresh bit (4) toggles on every read, as QEMU's dummy_refresh_clock", () => {
  using s = speaker();
  const bits = [s.inb(0x61), s.inb(0x61), s.inb(0x61), s.inb(0x61)].map((v) => v & 0x10);
  assert.deepEqual(bits, [0x10, 0, 0x10, 0]);
});

Deno.test("port 0x61: bit 5 is channel 2's OUT; a rising gate restarts a mode 2 count", () => {
  using s = speaker();
  s.outb(0x43, 0xb4); // channel 2, LSB then MSB, mode 2
  s.outb(0x42, 100);
  s.outb(0x42, 0);
  s.clock.now = 50_000; // 59 ticks
  s.outb(0x61, 0x01); // gate 0 → 1: the count restarts now
  s.outb(0x43, 0x80);
  assert.equal(s.inb(0x42) | (s.inb(0x42) << 8), 100);
  s.clock.now += 83_000; // 99 ticks
  assert.equal(s.inb(0x61) & 0x20, 0);
  s.clock.now += 1_000; // 100 ticks: the reload tick, OUT high as QEMU computes it
  assert.equal(s.inb(0x61) & 0x20, 0x20);
});

Deno.test("port 0x61: a reset changes nothing here (QEMU's speaker has no reset); the PIT's lowers the gate", () => {
  using s = speaker();
  s.outb(0x61, 0x03);
  s.spk.reset();
  assert.ok(s.spk.dataOn && s.pit.channelInfo(2).gate);
  s.pit.reset();
  assert.equal(s.inb(0x61) & 0x03, 0x02);
});

Deno.test("port 0x61 state: data enable and refresh bit round-trip; bad fields refused", () => {
  using a = speaker();
  a.outb(0x61, 0x02);
  a.inb(0x61);
  using b = speaker();
  b.spk.loadState(a.spk.saveState());
  assert.deepEqual(b.spk.saveState(), { dataOn: true, refreshClock: true });
  assert.equal(b.inb(0x61), a.inb(0x61));
  assert.throws(() => b.spk.loadState({ dataOn: 1 }), /pcspk@0x61: state field "dataOn" is the number 1/);
  assert.throws(() => b.spk.loadState({ dataOn: false }), /"refreshClock" is missing/);
  assert.deepEqual(b.spk.saveState(), { dataOn: true, refreshClock: false });
});

Deno.test("port 0x61 and PIT status bytes match QEMU 7.2 (a -bios guest under TCG, bytes to port 0xe9)", () => {
  // Captured with a 64 KiB real-mode -bios image running this sequence right after reset,
  // `qemu-system-x86_64 -machine pc -accel tcg -nodefaults -debugcon file:out.bin` (QEMU 7.2.22, Debian).
  // The 11th byte (a live count LSB) depends on QEMU's timing and is not compared.
  const qemu = [0x30, 0x20, 0x30, 0x20, 0x30, 0x20, 0x86, 0x3c, 0x3b, 0x86, undefined, 0x31, 0x23, 0x00];
  using s = speaker();
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) seen.push(s.inb(0x61)); // refresh bit toggles, gate 0, OUT 1
  s.outb(0x43, 0xe2); // read-back: status of channel 0
  seen.push(s.inb(0x40));
  s.outb(0x43, 0x3c); // channel 0, LSB/MSB, mode 6: stored as 6
  s.outb(0x43, 0xe2);
  seen.push(s.inb(0x40));
  s.outb(0x43, 0x7b); // channel 1, LSB/MSB, mode 5, BCD
  s.outb(0x43, 0xe4);
  seen.push(s.inb(0x41));
  s.outb(0x43, 0xce); // count and status of all; channel 2 in rw mode 0: status, then a live LSB
  seen.push(s.inb(0x42), s.inb(0x42));
  s.outb(0x61, 0x01);
  seen.push(s.inb(0x61));
  s.outb(0x61, 0xff); // only bits 0 and 1 are kept
  seen.push(s.inb(0x61));
  seen.push(s.inb(0x43)); // the control word reads 0
  assert.deepEqual(seen.map((v, i) => (qemu[i] === undefined ? undefined : v)), qemu);
});
