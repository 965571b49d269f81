import assert from "node:assert/strict";
import fc from "fast-check";
import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
// Tests may reach up a layer: the board's own PAM, so the flat view is the one a guest would see.
import { Pam } from "../machine/pc/pam.ts";
import { I440FX_PAM_OFFSET, I440FX_SMRAM_OFFSET, I440fxHostBridge } from "./i440fx_host_bridge.ts";
import {
  checkBadStates,
  checkRoundTrip,
  countRebuilds,
  disposable,
  flatRows,
  type StateHarness,
} from "./_state_test_util.ts";

type BridgeOp = { read: number; size: 1 | 2 | 4 } | { write: number; size: 1 | 2 | 4; value: number };

const bridgeOp: fc.Arbitrary<BridgeOp> = fc.oneof(
  fc.record({ read: fc.integer({ min: 0, max: 255 }), size: fc.constant(1 as const) }),
  fc.record({
    write: fc.integer({ min: I440FX_PAM_OFFSET, max: I440FX_PAM_OFFSET + 6 }),
    size: fc.constant(1 as const),
    value: fc.oneof(fc.constantFrom(0x00, 0x11, 0x22, 0x33, 0x30, 0x10), fc.integer({ min: 0, max: 0xff })),
  }),
  fc.record({
    write: fc.constant(0x58),
    size: fc.constant(4 as const),
    value: fc.integer({ min: 0, max: 0xffff_ffff }),
  }),
  fc.record({
    write: fc.constantFrom(I440FX_SMRAM_OFFSET, 0x04, 0x3c),
    size: fc.constant(1 as const),
    value: fc.integer({ min: 0, max: 0xff }),
  }),
);

function bridgeHarness(): StateHarness<BridgeOp> & { bridge: I440fxHostBridge; system: AddressSpace } {
  const root = MemoryRegion.container("system", 1n << 32n);
  const ram = MemoryRegion.ram("pc.ram", 1n << 20n);
  const pci = MemoryRegion.container("pci", 1n << 32n);
  root.addSubregion(0n, ram);
  root.addSubregionOverlap(0n, pci, -1);
  const pam = new Pam(root, ram, pci);
  const smram: number[] = [];
  const bridge = new I440fxHostBridge({
    onPamWrite: (offset, value) => pam.writeConfig(offset, value),
    onSmramWrite: (value) => smram.push(value),
    ramSize: 1n << 30n,
  });
  const system = new AddressSpace(root, "memory");
  return {
    bridge,
    system,
    device: bridge,
    step(op) {
      if ("read" in op) return bridge.readConfig(op.read, op.size);
      bridge.writeConfig(op.write, op.value, op.size);
      return [bridge.pam(0), bridge.smram];
    },
    // The SMRAM register as the board last heard it, and the PAM mapping as the guest sees it.
    observe: () => [smram.at(-1) ?? 0x02, flatRows(system)],
    close: () => system.close(),
  };
}

Deno.test("i440fx state: a loaded bridge has the same PAM mapping and SMRAM as the saved one", () => {
  checkRoundTrip(bridgeHarness, bridgeOp, { numRuns: 200 });
});

Deno.test("i440fx state: loading re-applies every PAM segment in one memory transaction", () => {
  using a = disposable(bridgeHarness());
  a.bridge.writeConfig(0x58, 0x3311_3000, 4); // BIOS area RAM, C0000 read-only, C8000 RAM …
  a.bridge.writeConfig(0x5c, 0x1122_3301, 4);
  a.bridge.writeConfig(I440FX_SMRAM_OFFSET, 0x0a, 1);
  using b = disposable(bridgeHarness());
  const rebuilds = countRebuilds(b.system);
  const before = rebuilds.count;
  b.bridge.loadState(a.bridge.saveState());
  assert.equal(rebuilds.count - before, 1, "one rebuild");
  assert.deepEqual(b.observe(), a.observe());
  assert.ok(
    flatRows(b.system).some(([start, , name, , ro]) => start === 0xc0000n && name === "pc.ram" && ro),
  );
});

Deno.test("i440fx state: bad states are refused and leave the bridge and the mapping unchanged", () => {
  using h = disposable(bridgeHarness());
  h.step({ write: I440FX_PAM_OFFSET, size: 1, value: 0x30 });
  assert.ok(checkBadStates(h, "i440fx") >= 2);
  const state = h.bridge.saveState();
  const config = (state.config as Uint8Array).slice();
  config[0x02] = 0x38; // device ID 0x1238: not this bridge
  assert.throws(
    () => h.bridge.loadState({ config }),
    /^DeviceStateError: i440fx: state field "config" has 0x38 at offset 0x02/,
  );
  assert.deepEqual(h.bridge.saveState(), state);
});
