import assert from "node:assert/strict";
import fc from "fast-check";
import { checkBadStates, checkRoundTrip, type StateHarness } from "./_state_test_util.ts";
import { CmosRtc, type CmosRtcOptions } from "./cmos_rtc.ts";
import { ioSpace, portIo } from "./_test_util.ts";

const T0 = Date.UTC(2024, 1, 29, 23, 59, 58, 250); // a Thursday, leap day

function setup(options: CmosRtcOptions = {}) {
  const { io, as } = ioSpace();
  const clock = { now: T0 };
  const rtc = new CmosRtc({ clock: () => clock.now, ...options });
  rtc.map(io);
  const p = portIo(as);
  const cmos = (index: number) => {
    p.outb(0x70, index);
    return p.inb(0x71);
  };
  const setCmos = (index: number, value: number) => {
    p.outb(0x70, index);
    p.outb(0x71, value);
  };
  const time = () => [9, 8, 7, 6, 4, 2, 0, 0x32].map(cmos);
  return { as, rtc, clock, cmos, setCmos, time, ...p };
}

Deno.test("RTC: time registers in BCD, 24-hour, from the injected clock; the clock runs", () => {
  const { as, clock, time, cmos } = setup();
  using _ = as;
  // year, month, day, weekday (Sunday = 1), hours, minutes, seconds, century
  assert.deepEqual(time(), [0x24, 0x02, 0x29, 0x05, 0x23, 0x59, 0x58, 0x20]);
  clock.now += 2000;
  assert.deepEqual(time(), [0x24, 0x03, 0x01, 0x06, 0x00, 0x00, 0x00, 0x20]);
  assert.equal(cmos(0x0a), 0x26);
  assert.equal(cmos(0x0b), 0x02);
  assert.equal(cmos(0x0c), 0x00);
  assert.equal(cmos(0x0d), 0x80);
});

Deno.test("RTC: binary and 12-hour formats per register B", () => {
  const { as, cmos, setCmos, time } = setup();
  using _ = as;
  setCmos(0x0b, 0x06); // binary, 24-hour
  assert.deepEqual(time(), [24, 2, 29, 5, 23, 59, 58, 20]);
  setCmos(0x0b, 0x04); // binary, 12-hour
  assert.equal(cmos(0x04), 0x80 | 11, "11 PM");
  setCmos(0x0b, 0x00); // BCD, 12-hour
  assert.equal(cmos(0x04), 0x80 | 0x11);
});

Deno.test("RTC: the guest sets the time in SET mode; it then runs from there", () => {
  const { as, rtc, clock, cmos, setCmos, time } = setup();
  using _ = as;
  setCmos(0x0b, 0x82); // SET
  for (
    const [index, value] of [[9, 0x99], [8, 0x12], [7, 0x31], [4, 0x23], [2, 0x59], [0, 0x59], [0x32, 0x19]]
  ) {
    setCmos(index, value);
  }
  clock.now += 5000;
  assert.equal(cmos(0), 0x59, "frozen while SET");
  setCmos(0x0b, 0x02);
  assert.equal(rtc.guestTime, Date.UTC(1999, 11, 31, 23, 59, 59, 250), "the sub-second phase is kept");
  clock.now += 1000;
  assert.deepEqual(time(), [0x00, 0x01, 0x01, 0x07, 0x00, 0x00, 0x00, 0x20], "Y2K, a Saturday");
  // A write while running takes effect at once.
  setCmos(0x04, 0x12);
  assert.equal(cmos(0x04), 0x12);
  assert.equal(cmos(0x02), 0x00);
});

Deno.test("RTC: 12-hour times written by the guest are read back as such", () => {
  const { as, rtc, setCmos } = setup();
  using _ = as;
  setCmos(0x0b, 0x80); // SET, BCD, 12-hour
  setCmos(0x04, 0x80 | 0x12); // 12 PM = noon
  setCmos(0x02, 0x00);
  setCmos(0x00, 0x00);
  setCmos(0x0b, 0x00);
  assert.equal(new Date(rtc.guestTime).getUTCHours(), 12);
  setCmos(0x0b, 0x80);
  setCmos(0x04, 0x12); // 12 AM = midnight
  setCmos(0x0b, 0x00);
  assert.equal(new Date(rtc.guestTime).getUTCHours(), 0);
});

Deno.test("RTC: UIP in the last 244 µs of each second, never in SET mode; A's UIP is read-only", () => {
  const { as, clock, cmos, setCmos } = setup();
  using _ = as;
  clock.now = Date.UTC(2024, 0, 1) + 999.8;
  assert.equal(cmos(0x0a), 0x80 | 0x26);
  clock.now = Date.UTC(2024, 0, 1) + 999.7;
  assert.equal(cmos(0x0a), 0x26);
  clock.now = Date.UTC(2024, 0, 1) + 999.8;
  setCmos(0x0b, 0x82);
  assert.equal(cmos(0x0a), 0x26);
  setCmos(0x0b, 0x02);
  setCmos(0x0a, 0xa6);
  assert.equal(cmos(0x0a) & 0x7f, 0x26);
});

Deno.test("RTC: divider reset stops the clock; leaving it restarts half a second later", () => {
  const { as, rtc, clock, cmos, setCmos } = setup();
  using _ = as;
  clock.now = Date.UTC(2024, 0, 1, 10, 0, 0, 100);
  setCmos(0x0a, 0x66);
  clock.now += 10_000;
  assert.equal(cmos(0x00), 0x00, "stopped");
  setCmos(0x00, 0x30);
  setCmos(0x0a, 0x26);
  assert.equal(rtc.guestTime, Date.UTC(2024, 0, 1, 10, 0, 30, 500));
});

Deno.test("RTC: index port: bit 7 disables NMI, reads 0xff; 0x37 is the century; RAM bytes", () => {
  const { as, rtc, cmos, setCmos, inb, outb, outw } = setup();
  using _ = as;
  outb(0x70, 0x80 | 0x40);
  assert.equal(rtc.nmiDisabled, true);
  assert.equal(rtc.index, 0x40);
  assert.equal(inb(0x70), 0xff);
  outb(0x71, 0x5a);
  assert.equal(cmos(0x40), 0x5a);
  assert.equal(rtc.nmiDisabled, false);
  assert.equal(cmos(0x37), 0x20);
  assert.equal(rtc.index, 0x32, "QEMU redirects the PS/2 century byte");
  setCmos(0x0c, 0xff);
  setCmos(0x0d, 0x00);
  assert.deepEqual([cmos(0x0c), cmos(0x0d)], [0, 0x80], "C and D are read-only");
  // A 16-bit write at 0x70 writes the index, then the data (both regions share one handler).
  outw(0x70, 0x7f | (0xa5 << 8));
  assert.equal(cmos(0x7f), 0xa5);
  rtc.setCmos(0x10, 0x44);
  assert.equal(rtc.getCmos(0x10), 0x44);
  assert.throws(() => rtc.getCmos(128), RangeError);
});

Deno.test("RTC: memory-size and CPU bytes as QEMU's pc_cmos_init (256 MiB, 1 CPU)", () => {
  const { as, cmos } = setup({ ramBelow4g: 256 << 20, cpus: 1 });
  using _ = as;
  const word = (at: number) => cmos(at) | (cmos(at + 1) << 8);
  assert.equal(word(0x15), 640);
  assert.equal(word(0x17), 0xffff, "255 MiB in KiB saturates at 64 MiB");
  assert.equal(word(0x30), 0xffff);
  assert.equal(word(0x34), 240 * 16);
  assert.deepEqual([cmos(0x5b), cmos(0x5c), cmos(0x5d)], [0, 0, 0]);
  assert.equal(cmos(0x5f), 0);
});

Deno.test("RTC: memory-size bytes saturate; memory above 4 GiB in 64 KiB units; CPU count", () => {
  const { as, rtc } = setup({ ramBelow4g: 0xc000_0000n, ramAbove4g: 5n << 30n, cpus: 4 });
  using _ = as;
  const word = (at: number) => rtc.getCmos(at) | (rtc.getCmos(at + 1) << 8);
  assert.equal(word(0x17), 0xffff);
  assert.equal(word(0x34), (0xc000_0000 - 0x100_0000) / 0x1_0000);
  assert.equal(
    rtc.getCmos(0x5b) | (rtc.getCmos(0x5c) << 8) | (rtc.getCmos(0x5d) << 16),
    (5 * 2 ** 30) / 0x1_0000,
  );
  assert.equal(rtc.getCmos(0x5f), 3);
  const small = new CmosRtc({ ramBelow4g: 512 * 1024, cpus: 300 });
  assert.equal(small.getCmos(0x15) | (small.getCmos(0x16) << 8), 512);
  assert.equal(small.getCmos(0x17), 0);
  assert.equal(small.getCmos(0x34), 0);
  assert.equal(small.getCmos(0x5f), 0, "more than 255 CPUs: 0, firmware asks fw_cfg");
  const mid = new CmosRtc({ ramBelow4g: 32 << 20 });
  assert.equal(mid.getCmos(0x17) | (mid.getCmos(0x18) << 8), 31 * 1024);
  assert.equal(mid.getCmos(0x34) | (mid.getCmos(0x35) << 8), 16 * 16);
  assert.throws(() => new CmosRtc({ cpus: 0 }), RangeError);
  assert.throws(() => new CmosRtc({ ramBelow4g: -1 }), RangeError);
});

Deno.test("RTC: reset clears interrupt enables, keeps RAM and time; regions as QEMU", () => {
  const { as, rtc, cmos, setCmos } = setup();
  using _ = as;
  setCmos(0x0b, 0x02 | 0x40 | 0x20 | 0x10 | 0x08);
  setCmos(0x50, 0x12);
  rtc.reset();
  assert.equal(cmos(0x0b), 0x02 | 0x10);
  assert.equal(cmos(0x50), 0x12);
  assert.equal(rtc.region.name, "rtc");
  assert.equal(rtc.region.size, 2n);
  assert.deepEqual(rtc.region.subregions.map((r) => [r.name, r.addr, r.size]), [["rtc-index", 0n, 1n]]);
});

// ---- Device state (issue 11) ----

type RtcOp = { read: number } | { write: number; value: number } | { tick: number };

const rtcOp: fc.Arbitrary<RtcOp> = fc.oneof(
  fc.record({ read: fc.integer({ min: 0, max: 1 }) }),
  // Index writes favour the clock and control registers; data writes hit whatever is selected.
  fc.record({
    write: fc.constant(0),
    value: fc.oneof(
      fc.integer({ min: 0, max: 0xff }),
      fc.constantFrom(0, 2, 4, 6, 7, 8, 9, 0x0a, 0x0b, 0x0c, 0x37),
    ),
  }),
  fc.record({
    write: fc.constant(1),
    value: fc.oneof(
      fc.integer({ min: 0, max: 0xff }),
      fc.constantFrom(0x26, 0x66, 0x86, 0x06, 0x02, 0x82, 0x00),
    ),
  }),
  fc.record({ tick: fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.constantFrom(999, 1, 86_400_000)) }),
);

let rtcInstances = 0;

/** Each harness has its own host clock, starting somewhere else: a load must rebase the guest's time. */
function rtcHarness(): StateHarness<RtcOp> {
  const clock = { now: T0 + 123_457 * rtcInstances++ };
  const rtc = new CmosRtc({ clock: () => clock.now, ramBelow4g: 128 << 20 });
  return {
    device: rtc,
    step(op) {
      if ("read" in op) return rtc.read(op.read);
      if ("write" in op) rtc.write(op.write, op.value);
      else clock.now += op.tick;
      return [rtc.index, rtc.nmiDisabled];
    },
    observe: () => [],
  };
}

Deno.test("RTC state: a loaded RTC behaves as the saved one, on another host clock", () => {
  checkRoundTrip(rtcHarness, rtcOp, { numRuns: 300 });
});

Deno.test("RTC state: the guest's time continues from the saved time, whatever the host clock says", () => {
  const a = setup();
  using _a = a.as;
  a.setCmos(0x0b, 0x06); // binary, 24-hour
  a.setCmos(0x50, 0x77); // firmware data
  a.outb(0x70, 0x84); // select hours, NMI off
  const saved = a.rtc.saveState();
  assert.equal(saved.guestTimeMs, T0);
  const b = setup();
  using _b = b.as;
  b.clock.now = T0 + 1e9; // another host, later
  b.rtc.loadState(saved);
  assert.equal(b.rtc.guestTime, T0);
  assert.ok(b.rtc.nmiDisabled && b.rtc.index === 4);
  assert.equal(b.inb(0x71), 23, "hours in binary, from the saved time");
  b.clock.now += 2000;
  assert.deepEqual(b.time(), [24, 3, 1, 6, 0, 0, 0, 20]);
  assert.equal(b.cmos(0x50), 0x77);
});

Deno.test("RTC state: bad states are refused by field and leave the RTC unchanged", () => {
  const h = rtcHarness();
  h.step({ write: 0, value: 0x8b });
  h.step({ write: 1, value: 0x06 });
  // The guest time is any ms in the Date range, negative and fractional too: checked below instead.
  assert.ok(checkBadStates(h, "rtc@0x70", { skipOutOfRange: ["guestTimeMs"] }) >= 10);
  const state = h.device.saveState();
  const cmos = (state.cmos as Uint8Array).slice();
  cmos[0x0a] |= 0x80;
  assert.throws(() => h.device.loadState({ ...state, cmos }), /rtc@0x70: state field "cmos" has UIP set/);
  assert.throws(() => h.device.loadState({ ...state, index: 128 }), /"index" is 128, not in 0..127/);
  assert.throws(() => h.device.loadState({ ...state, guestTimeMs: 1e16 }), /"guestTimeMs"/);
  assert.deepEqual(h.device.saveState(), state);
});
