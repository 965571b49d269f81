import assert from "node:assert/strict";
import fc from "fast-check";
import type { StateValue } from "./device_state.ts";
import { checkBadStates, checkRoundTrip, type StateHarness } from "./_state_test_util.ts";
import { RecordingIrqLine } from "./irq_line.ts";
import { I8042, type I8042Options } from "./i8042.ts";
import { ioSpace, portIo } from "./_test_util.ts";

const DATA = 0x60;
const CMD = 0x64;
const STR_OBF = 0x01;
const STR_IBF = 0x02;
const STR_AUXDATA = 0x20;

function setup(options: I8042Options = {}) {
  const { io, as } = ioSpace();
  const irq = new RecordingIrqLine();
  const auxIrq = new RecordingIrqLine();
  const events: string[] = [];
  const kbc = new I8042({
    irq,
    auxIrq,
    onReset: () => events.push("reset"),
    onA20: (on) => events.push(`a20 ${on}`),
    ...options,
  });
  kbc.map(io);
  const p = portIo(as);
  /** Linux's i8042_command: wait for IBF clear, send, then collect `results` bytes (OBF polling). */
  const command = (cmd: number, params: number[] = [], results = 0): number[] => {
    assert.equal(p.inb(CMD) & STR_IBF, 0);
    p.outb(CMD, cmd);
    for (const param of params) {
      assert.equal(p.inb(CMD) & STR_IBF, 0);
      p.outb(DATA, param);
    }
    const out: number[] = [];
    for (let i = 0; i < results; i++) {
      assert.equal(p.inb(CMD) & STR_OBF, STR_OBF, `result ${i} of command 0x${cmd.toString(16)}`);
      out.push(p.inb(DATA));
    }
    return out;
  };
  return { as, kbc, irq, auxIrq, events, command, ...p };
}

Deno.test("i8042: Linux's probe with i8042.noaux: flush, self test, CTR read/write, keyboard port", () => {
  const { as, inb, command, irq } = setup();
  using _ = as;
  // i8042_controller_check: flushing finds an empty buffer.
  assert.equal(inb(CMD) & STR_OBF, 0);
  assert.equal(inb(CMD), 0x18, "unlocked, last write was a command");
  // i8042_controller_selftest.
  assert.deepEqual(command(0xaa, [], 1), [0x55]);
  assert.equal(inb(CMD) & 0x04, 0x04, "system flag after the self test");
  // i8042_controller_init: read the CTR until two reads agree.
  const ctr = command(0x20, [], 1)[0];
  assert.equal(command(0x20, [], 1)[0], ctr);
  assert.equal(ctr, 0x03, "QEMU's reset CTR: keyboard and aux interrupts enabled");
  assert.ok(inb(CMD) & 0x10, "keylock off");
  // Disable the keyboard interface and interrupt, untranslated mode, write back.
  let newCtr = (ctr | 0x10) & ~0x01 & ~0x40;
  command(0x60, [newCtr]);
  assert.deepEqual(command(0x20, [], 1), [newCtr]);
  // Keyboard interface test.
  assert.deepEqual(command(0xab, [], 1), [0x00]);
  // i8042_enable_kbd_port.
  newCtr = (newCtr & ~0x10) | 0x01;
  command(0x60, [newCtr]);
  assert.equal(irq.level, false);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("i8042: keyboard replies arrive by IRQ 1, one edge per byte (atkbd probe)", () => {
  const { as, inb, outb, command, irq } = setup();
  using _ = as;
  command(0x60, [0x03]);
  const readByInterrupt = () => {
    const bytes: number[] = [];
    while (irq.level) {
      assert.ok(inb(CMD) & STR_OBF);
      bytes.push(inb(DATA));
    }
    return bytes;
  };
  // atkbd_probe: GETID.
  outb(DATA, 0xf2);
  assert.deepEqual(readByInterrupt(), [0xfa, 0xab, 0x83]);
  assert.equal(irq.risingEdges, 3);
  // Reset: ACK then BAT passed.
  outb(DATA, 0xff);
  assert.deepEqual(readByInterrupt(), [0xfa, 0xaa]);
  // LEDs: ACK for the command and for its parameter.
  outb(DATA, 0xed);
  assert.deepEqual(readByInterrupt(), [0xfa]);
  outb(DATA, 0x07);
  assert.deepEqual(readByInterrupt(), [0xfa]);
  // Scan-code set query (untranslated: the set number itself), echo, an unknown command.
  outb(DATA, 0xf0);
  outb(DATA, 0x00);
  assert.deepEqual(readByInterrupt(), [0xfa, 0xfa, 0x02]);
  outb(DATA, 0xee);
  assert.deepEqual(readByInterrupt(), [0xee]);
  outb(DATA, 0x88);
  assert.deepEqual(readByInterrupt(), [0xfe]);
  assert.equal(inb(DATA), 0xfe, "an empty buffer repeats the last byte");
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("i8042: translation (CTR bit 6) changes the ID and the set number, as QEMU's keyboard", () => {
  const { as, inb, outb, command, kbc } = setup();
  using _ = as;
  command(0x60, [0x43]);
  outb(DATA, 0xf2);
  assert.deepEqual([inb(DATA), inb(DATA), inb(DATA)], [0xfa, 0xab, 0x41]);
  outb(DATA, 0xf0);
  outb(DATA, 0x00);
  assert.deepEqual([inb(DATA), inb(DATA), inb(DATA)], [0xfa, 0xfa, 0x41]);
  assert.equal(kbc.commandByte, 0x43);
});

Deno.test("i8042: disabled keyboard interface or interrupt keeps IRQ 1 low; data still polled", () => {
  const { as, inb, outb, command, irq } = setup();
  using _ = as;
  command(0x60, [0x10 | 0x01]); // interface disabled
  outb(DATA, 0xf4);
  assert.equal(irq.level, false);
  assert.equal(inb(CMD) & STR_OBF, STR_OBF);
  outb(CMD, 0xae); // enable the interface: the pending byte interrupts now
  assert.equal(irq.level, true);
  assert.equal(inb(DATA), 0xfa);
  assert.equal(irq.level, false);
  command(0x60, [0x00]); // interrupts off
  outb(DATA, 0xf4);
  assert.equal(irq.level, false);
  assert.equal(inb(DATA), 0xfa);
});

Deno.test("i8042: 0xFE on port 0x64 (and any pulse with bit 0 clear) requests a CPU reset", () => {
  const { as, outb, events } = setup();
  using _ = as;
  outb(CMD, 0xfe);
  assert.deepEqual(events, ["reset"]);
  outb(CMD, 0xff); // pulse nothing
  outb(CMD, 0xf1); // pulse bits 3:1 only
  assert.deepEqual(events, ["reset"]);
  outb(CMD, 0xf0); // pulse bits 3:0
  assert.deepEqual(events, ["reset", "reset"]);
});

Deno.test("i8042: output port: A20 gate and reset line; 0xDD/0xDF", () => {
  const { as, inb, outb, command, kbc, events } = setup();
  using _ = as;
  assert.equal(kbc.a20Enabled, true);
  assert.deepEqual(command(0xd0, [], 1), [0xcf], "reset line high, A20 on, bits 7:6 and 3:2 set");
  command(0xd1, [0xcd]); // A20 off, reset line high
  assert.deepEqual(events, ["a20 false"]);
  assert.equal(kbc.a20Enabled, false);
  outb(CMD, 0xdf);
  assert.deepEqual(events, ["a20 false", "a20 true"]);
  outb(CMD, 0xdf);
  assert.equal(events.length, 2, "no change, no call");
  outb(CMD, 0xdd);
  command(0xd1, [0xce]); // A20 on, reset line low: reset
  assert.deepEqual(events, ["a20 false", "a20 true", "a20 false", "a20 true", "reset"]);
  // Reading the output port while a byte waits shows OBF.
  command(0xd2, [0x42]);
  outb(CMD, 0xd0);
  assert.equal(inb(DATA), 0x42);
  assert.equal(inb(DATA) & 0x10, 0x10);
});

Deno.test("i8042: 0xD3 writes the aux output buffer: MOUSE_OBF and IRQ 12; no mouse answers 0xD4", () => {
  const { as, inb, outb, command, irq, auxIrq } = setup();
  using _ = as;
  command(0xd3, [0x5a]); // Linux's AUX loopback test
  assert.equal(inb(CMD) & (STR_OBF | STR_AUXDATA), STR_OBF | STR_AUXDATA);
  assert.equal(auxIrq.level, true);
  assert.equal(irq.level, false);
  assert.equal(inb(DATA), 0x5a);
  assert.equal(auxIrq.level, false);
  command(0xd4, [0xff]); // reset the mouse: nobody answers
  assert.equal(inb(CMD) & STR_OBF, 0);
  outb(CMD, 0xa7);
  assert.equal(command(0x20, [], 1)[0] & 0x20, 0x20);
  outb(CMD, 0xa8);
  assert.equal(command(0x20, [], 1)[0] & 0x20, 0);
  assert.deepEqual(command(0xa9, [], 1), [0x00]);
  assert.deepEqual(command(0xc0, [], 1), [0x80]);
});

Deno.test("i8042: injected scan codes, keyboard buffer limit, scanning disabled by 0xF5", () => {
  const { as, inb, outb, kbc, irq } = setup();
  using _ = as;
  assert.equal(kbc.keyboardInput([0x1c, 0xf0, 0x1c]), 3);
  assert.equal(irq.level, true);
  assert.deepEqual([inb(DATA), inb(DATA), inb(DATA)], [0x1c, 0xf0, 0x1c]);
  assert.equal(kbc.keyboardInput(new Uint8Array(20)), 16);
  for (let i = 0; i < 16; i++) inb(DATA);
  outb(DATA, 0xf5);
  assert.equal(inb(DATA), 0xfa);
  assert.equal(kbc.keyboardInput([0x1c]), 0);
  assert.equal(irq.redundantCalls, 0);
});

Deno.test("i8042: reset restores the power-on state and lowers the lines", () => {
  const { as, inb, outb, kbc, irq, command } = setup();
  using _ = as;
  command(0x60, [0x61]);
  outb(DATA, 0xf2);
  assert.equal(irq.level, true);
  kbc.reset();
  assert.equal(irq.level, false);
  assert.equal(inb(CMD), 0x18);
  assert.deepEqual(command(0x20, [], 1), [0x03]);
  assert.deepEqual(kbc.regions.map((r) => [r.name, r.addr, r.size]), [["i8042-data", 0x60n, 1n], [
    "i8042-cmd",
    0x64n,
    1n,
  ]]);
});

// ---- Device state (issue 11) ----

type KbcOp = { readData: true } | { readStatus: true } | { cmd: number } | { data: number } | {
  keys: number[];
};

const kbcOp: fc.Arbitrary<KbcOp> = fc.oneof(
  fc.constant({ readData: true as const }),
  fc.constant({ readStatus: true as const }),
  // Commands that do something, and now and then any byte (pulses, unsupported ones).
  fc.record({
    cmd: fc.oneof(
      fc.constantFrom(
        0x20,
        0x60,
        0xa7,
        0xa8,
        0xa9,
        0xaa,
        0xab,
        0xad,
        0xae,
        0xc0,
        0xd0,
        0xd1,
        0xd2,
        0xd3,
        0xd4,
      ),
      fc.constantFrom(0xdd, 0xdf),
      fc.integer({ min: 0, max: 0xff }),
    ),
  }),
  fc.record({
    data: fc.oneof(
      fc.constantFrom(0xed, 0xee, 0xf0, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xfa, 0xfb, 0xff, 0, 1, 2, 3, 0x47),
      fc.integer({ min: 0, max: 0xff }),
    ),
  }),
  fc.record({ keys: fc.array(fc.integer({ min: 0, max: 0xff }), { maxLength: 20 }) }),
);

function kbcHarness(): StateHarness<KbcOp> {
  const irq = new RecordingIrqLine();
  const auxIrq = new RecordingIrqLine();
  const resets: string[] = [];
  let a20 = true; // the board's gate, following the callbacks
  const kbc = new I8042({ irq, auxIrq, onReset: () => resets.push("reset"), onA20: (on) => (a20 = on) });
  return {
    device: kbc,
    step(op) {
      if ("readData" in op) return kbc.readData();
      if ("readStatus" in op) return kbc.readStatus();
      if ("cmd" in op) kbc.writeCommand(op.cmd);
      else if ("data" in op) kbc.writeData(op.data);
      else return kbc.keyboardInput(op.keys);
      return [kbc.commandByte, kbc.keyboardLeds, kbc.a20Enabled];
    },
    observe: () => [irq.level, auxIrq.level, a20, resets.splice(0)],
  };
}

Deno.test("i8042 state: a loaded controller behaves as the saved one", () => {
  checkRoundTrip(kbcHarness, kbcOp, { numRuns: 300 });
});

Deno.test("i8042 state: queued replies with their source, pending commands and A20 survive", () => {
  const a = kbcHarness();
  const kbc = a.device as I8042;
  kbc.writeCommand(0xd1); // write output port …
  kbc.writeData(0xcd); // … A20 off (no reset: bit 0 set)
  kbc.writeCommand(0xd3); // aux byte
  kbc.writeData(0x42);
  kbc.writeData(0xf0); // keyboard: set scan code set, waiting for the parameter
  const b = kbcHarness();
  b.device.loadState(kbc.saveState());
  assert.deepEqual(b.observe(), [false, true, false, []], "aux line high, A20 gate off after load");
  const kbc2 = b.device as I8042;
  assert.equal(kbc2.readStatus() & STR_AUXDATA, STR_AUXDATA);
  assert.equal(kbc2.readData(), 0x42);
  assert.equal(kbc2.readData(), 0xfa, "the keyboard's ACK of 0xf0");
  kbc2.writeData(0); // the parameter: query the set
  assert.deepEqual([kbc2.readData(), kbc2.readData()], [0xfa, 2]);
});

Deno.test("i8042 state: bad states are refused by field and leave the controller unchanged", () => {
  const h = kbcHarness();
  for (const op of [{ cmd: 0xaa }, { cmd: 0xd3 }, { data: 7 }, { data: 0xed }] as KbcOp[]) h.step(op);
  assert.ok(checkBadStates(h, "i8042", { skipOutOfRange: ["kbdWriteCmd"] }) >= 20);
  const state = h.device.saveState();
  const bad: [string, StateValue, RegExp][] = [
    ["writeCmd", 0x20, /"writeCmd" is 0x20, not a command with a parameter/],
    ["kbdWriteCmd", 0xf4, /"kbdWriteCmd"/],
    ["kbdWriteCmd", -2, /"kbdWriteCmd" is -2/],
    ["scancodeSet", 4, /"scancodeSet" is 4, not in 1..3/],
    ["queueAux", new Uint8Array([2, 0, 0]), /"queueAux" holds a byte other than 0 or 1/],
    ["queueAux", new Uint8Array(5), /"queueAux" has 5 bytes, not 3/],
  ];
  for (const [field, value, message] of bad) {
    assert.throws(() => h.device.loadState({ ...state, [field]: value }), message);
  }
  assert.deepEqual(h.device.saveState(), state);
});

Deno.test("i8042: the output queue is bounded (QEMU's 256-byte PS/2 buffer), so every state can be loaded", () => {
  const h = kbcHarness();
  const kbc = h.device as I8042;
  for (let i = 0; i < 300; i++) {
    kbc.writeCommand(0xd2);
    kbc.writeData(i & 0xff);
  }
  const state = kbc.saveState();
  assert.equal((state.queue as Uint8Array).length, 256);
  const fresh = kbcHarness().device as I8042;
  fresh.loadState(state);
  assert.equal(fresh.readData(), 0);
  assert.throws(
    () => fresh.loadState({ ...state, queue: new Uint8Array(257), queueAux: new Uint8Array(257) }),
    /"queue" has 257 bytes, more than 256/,
  );
});
