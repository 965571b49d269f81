import assert from "node:assert/strict";
import fc from "fast-check";
import { checkBadStates, checkRoundTrip, type StateHarness } from "./_state_test_util.ts";
import { ResetControl } from "./reset_control.ts";
import { ioSpace, portIo } from "./_test_util.ts";

Deno.test("piix3-reset-control: RST_CPU resets; SYS_RST reads back; reset clears it", () => {
  const { io, as } = ioSpace();
  using _ = as;
  let resets = 0;
  const rcr = new ResetControl({ onReset: () => resets++ });
  rcr.map(io);
  const { inb, outb } = portIo(as);
  assert.equal(inb(0xcf9), 0);
  outb(0xcf9, 0xff & ~0x04);
  assert.equal(inb(0xcf9), 0x02, "only SYS_RST is kept");
  outb(0xcf9, 0x04);
  assert.equal(resets, 1);
  assert.equal(inb(0xcf9), 0x02, "a reset write stores nothing");
  outb(0xcf9, 0x0e);
  assert.equal(resets, 2);
  rcr.reset();
  assert.equal(inb(0xcf9), 0);
});

Deno.test("piix3-reset-control: mapped with priority 1 at 0xcf9", () => {
  const { io, as } = ioSpace();
  using _ = as;
  const rcr = new ResetControl();
  rcr.map(io);
  assert.equal(rcr.region.name, "piix3-reset-control");
  assert.equal(rcr.region.addr, 0xcf9n);
  assert.equal(rcr.region.priority, 1);
  assert.equal(rcr.region.size, 1n);
});

Deno.test("piix3-reset-control state: round trip; bad states refused", () => {
  const harness = (): StateHarness<number | null> => {
    const resets: string[] = [];
    const dev = new ResetControl({ onReset: () => resets.push("reset") });
    return {
      device: dev,
      step: (op) => (op === null ? dev.read() : dev.write(op)),
      observe: () => resets.splice(0),
    };
  };
  checkRoundTrip(harness, fc.option(fc.integer({ min: 0, max: 0xff })));
  const h = harness();
  h.step(0x02);
  assert.ok(checkBadStates(h, "piix3-reset-control") >= 4);
  assert.throws(() => h.device.loadState({ value: 0x04 }), /"value" is 0x4, has bits outside 0x2/);
  assert.deepEqual(h.device.saveState(), { value: 2 });
});
