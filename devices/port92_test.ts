import assert from "node:assert/strict";
import fc from "fast-check";
import { checkBadStates, checkRoundTrip, type StateHarness } from "./_state_test_util.ts";
import { Port92 } from "./port92.ts";
import { ioSpace, portIo } from "./_test_util.ts";

function setup() {
  const { io, as } = ioSpace();
  const events: string[] = [];
  const dev = new Port92({ onReset: () => events.push("reset"), onA20: (on) => events.push(`a20 ${on}`) });
  dev.map(io);
  return { as, dev, events, ...portIo(as) };
}

Deno.test("port92: bit 1 is A20 and reads back; callbacks only on changes", () => {
  const { as, dev, events, inb, outb } = setup();
  using _ = as;
  assert.equal(inb(0x92), 0);
  assert.equal(dev.a20Enabled, false);
  outb(0x92, 0x02);
  assert.equal(inb(0x92), 0x02);
  assert.equal(dev.a20Enabled, true);
  outb(0x92, 0x02);
  outb(0x92, 0x00);
  assert.deepEqual(events, ["a20 true", "a20 false"]);
});

Deno.test("port92: a 0 → 1 change of bit 0 requests a fast reset; reset clears bit 0 only", () => {
  const { as, dev, events, inb, outb } = setup();
  using _ = as;
  outb(0x92, 0x03);
  assert.deepEqual(events, ["a20 true", "reset"]);
  outb(0x92, 0x03); // bit 0 already set: no new request
  assert.equal(events.length, 2);
  dev.reset();
  assert.equal(inb(0x92), 0x02);
  outb(0x92, 0x03);
  assert.deepEqual(events, ["a20 true", "reset", "reset"]);
  // A 2-byte access at 0x92 goes to port92 whole (QEMU does not clamp I/O accesses to the region),
  // split into two byte reads of the register.
  assert.equal(as.read(0x92, 2).value, 0x0303n);
  assert.equal(dev.region.name, "port92");
});

Deno.test("port92 state: round trip, A20 gate re-applied, bad states refused", () => {
  const harness = (): StateHarness<number | null> => {
    const events: string[] = [];
    let a20 = false;
    const dev = new Port92({ onReset: () => events.push("reset"), onA20: (on) => (a20 = on) });
    return {
      device: dev,
      step: (op) => (op === null ? dev.read() : dev.write(op)),
      observe: () => [a20, dev.a20Enabled, events.splice(0)],
    };
  };
  checkRoundTrip(harness, fc.option(fc.integer({ min: 0, max: 0xff })));
  const h = harness();
  h.step(0x03);
  assert.ok(checkBadStates(h, "port92") >= 4);
  assert.throws(() => h.device.loadState({ value: 0x100 }), /^DeviceStateError: port92: state field "value"/);
  assert.deepEqual(h.device.saveState(), { value: 3 });
});
