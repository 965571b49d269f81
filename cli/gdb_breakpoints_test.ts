import assert from "node:assert/strict";
import fc from "fast-check";
import {
  KVM_GUESTDBG_ENABLE,
  KVM_GUESTDBG_SINGLESTEP,
  KVM_GUESTDBG_USE_HW_BP,
  KVM_GUESTDBG_USE_SW_BP,
} from "../kvm/ioctls.ts";
import { BreakpointTable, DR6_BS_BIT, encodeDr7, type HwBreakpoint } from "./gdb_breakpoints.ts";

/**
 * The model: DR7 written out bit by bit from the SDM's table (vol. 3, figure 18-1) as a string of
 * 32 characters, most significant first, then parsed. Nothing is shared with encodeDr7 but the
 * meaning of the fields.
 */
function modelDr7(slots: readonly (HwBreakpoint | undefined)[]): bigint {
  const bits = new Array<string>(32).fill("0");
  const set = (bit: number, value: string) => bits[31 - bit] = value;
  set(10, "1"); // reserved, reads as 1
  set(9, "1"); // GE, as QEMU sets it
  slots.forEach((slot, n) => {
    if (!slot) return;
    set(2 * n + 1, "1"); // Gn
    const rw = { exec: "00", write: "01", access: "11" }[slot.kind];
    const len = slot.kind === "exec" ? "00" : { 1: "00", 2: "01", 8: "10", 4: "11" }[slot.length];
    set(16 + 4 * n + 1, rw[0]);
    set(16 + 4 * n, rw[1]);
    set(18 + 4 * n + 1, len[0]);
    set(18 + 4 * n, len[1]);
  });
  return BigInt(`0b${bits.join("")}`);
}

const slotArb: fc.Arbitrary<HwBreakpoint | undefined> = fc.option(
  fc.record({
    address: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    kind: fc.constantFrom("exec" as const, "write" as const, "access" as const),
    length: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
  }),
  { nil: undefined },
);

Deno.test("DR7 encoding agrees with a bit-by-bit model of the SDM's layout", () => {
  fc.assert(
    fc.property(fc.array(slotArb, { minLength: 0, maxLength: 4 }), (slots) => {
      const dr7 = encodeDr7(slots);
      assert.equal(dr7, modelDr7(slots));
      assert.equal(dr7 >> 32n, 0n); // the upper half of DR7 is reserved (zero)
      assert.equal(dr7 & 0x55n, 0n); // local enables stay the guest's
    }),
  );
});

Deno.test("DR7: worked examples", () => {
  assert.equal(encodeDr7([]), 0x600n);
  assert.equal(encodeDr7([{ address: 0x1000n, kind: "exec", length: 8 }]), 0x602n); // LEN forced to 00
  assert.equal(
    encodeDr7([undefined, undefined, undefined, { address: 0n, kind: "access", length: 8 }]),
    0xb000_0680n,
  );
  assert.throws(() =>
    encodeDr7([undefined, undefined, undefined, undefined, { address: 0n, kind: "exec", length: 1 }])
  );
});

Deno.test("BreakpointTable.guestDebug: the control bits follow what is in use", () => {
  const t = new BreakpointTable();
  assert.deepEqual(t.guestDebug(false), { control: KVM_GUESTDBG_ENABLE, debugreg: new Array(8).fill(0n) });
  assert.equal(t.guestDebug(true).control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP);
  t.addSoftware(0x1000n, 0x90);
  assert.equal(t.guestDebug(false).control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP);
  assert.equal(t.addHardware({ address: 0x2000n, kind: "write", length: 4 }), undefined);
  const debug = t.guestDebug(false);
  assert.equal(debug.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_USE_HW_BP);
  assert.deepEqual(debug.debugreg, [0x2000n, 0n, 0n, 0n, 0n, 0n, 0n, 0x000d_0602n]); // G0, R/W0 01, LEN0 11
});

Deno.test("BreakpointTable: four slots in all, duplicates, alignment, lengths and removal refused as QEMU does", () => {
  const t = new BreakpointTable();
  assert.equal(t.addHardware({ address: 0x2001n, kind: "write", length: 2 }), "invalid");
  assert.equal(t.addHardware({ address: 0x2000n, kind: "write", length: 3 as 2 }), "invalid");
  for (let i = 0; i < 4; i++) {
    assert.equal(t.addHardware({ address: BigInt(0x1000 + i * 8), kind: "exec", length: 1 }), undefined);
  }
  assert.equal(t.addHardware({ address: 0x1000n, kind: "exec", length: 1 }), "exists");
  assert.equal(t.addHardware({ address: 0x3000n, kind: "access", length: 8 }), "full");
  assert.equal(t.removeHardware({ address: 0x9999n, kind: "exec", length: 1 }), "absent");
  assert.equal(t.removeHardware({ address: 0x1008n, kind: "exec", length: 1 }), undefined);
  assert.equal(t.addHardware({ address: 0x3000n, kind: "access", length: 8 }), undefined);
  assert.deepEqual(t.hardwareSlots[1], { address: 0x3000n, kind: "access", length: 8 }); // the freed slot
});

Deno.test("BreakpointTable: software breakpoints are counted, the byte restored on the last removal", () => {
  const t = new BreakpointTable();
  assert.equal(t.addSoftware(0x1000n, 0x55), true);
  assert.equal(t.addSoftware(0x1000n, 0xcc), false);
  assert.deepEqual(t.removeSoftware(0x1000n), {});
  assert.deepEqual(t.removeSoftware(0x1000n), { restore: 0x55 });
  assert.equal(t.removeSoftware(0x1000n), "absent");
});

Deno.test("BreakpointTable.classify: step, int3, slots, and the guest's own traps", () => {
  const t = new BreakpointTable();
  t.addSoftware(0x1000n, 0x90);
  t.addHardware({ address: 0x1100n, kind: "exec", length: 1 });
  t.addHardware({ address: 0x2000n, kind: "access", length: 4 });
  const activeLow = 0xffff_0ff0n; // DR6's always-one bits, as KVM reports them
  assert.deepEqual(t.classify({ exception: 1, pc: 0x1001n, dr6: activeLow | DR6_BS_BIT }, true), {
    kind: "step",
  });
  assert.equal(t.classify({ exception: 1, pc: 0x1001n, dr6: activeLow | DR6_BS_BIT }, false), "guest");
  assert.deepEqual(t.classify({ exception: 3, pc: 0x1000n, dr6: 0n }, false), { kind: "swbreak" });
  assert.equal(t.classify({ exception: 3, pc: 0x1004n, dr6: 0n }, false), "guest");
  assert.deepEqual(t.classify({ exception: 1, pc: 0x1100n, dr6: activeLow | 1n }, false), {
    kind: "hwbreak",
  });
  assert.deepEqual(t.classify({ exception: 1, pc: 0x1200n, dr6: activeLow | 2n }, false), {
    kind: "watch",
    access: "access",
    address: 0x2000n,
  });
  assert.equal(t.classify({ exception: 1, pc: 0x1200n, dr6: activeLow | 8n }, false), "guest"); // slot 3 is not ours
});
