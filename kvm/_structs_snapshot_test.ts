import assert from "node:assert/strict";
import {
  decodeFromBytes,
  encodeToBytes,
  KVM_CLOCK_DATA_LAYOUT,
  KVM_DEBUGREGS_LAYOUT,
  KVM_PIT_CHANNEL_STATE_LAYOUT,
  KVM_PIT_STATE2_LAYOUT,
  KVM_XCR_LAYOUT,
  KVM_XCRS_ENTRIES_START,
  KVM_XCRS_LAYOUT,
  KVM_XSAVE_LAYOUT,
  offsetsOf,
} from "./_structs.ts";

// sizeof and offsetof of the snapshot structs, from arch/x86/include/uapi/asm/kvm.h (x86-64) and
// the sizes encoded in the ioctl numbers of docs/kvm-abi.md (0x188 for kvm_xcrs, 0x70 for
// kvm_pit_state2, 0x30 for kvm_clock_data, 0x1000 for kvm_xsave).
Deno.test("snapshot structs have the kernel's sizes", () => {
  assert.equal(KVM_XSAVE_LAYOUT.size, 4096);
  assert.equal(KVM_XCRS_LAYOUT.size, 392);
  assert.equal(KVM_XCR_LAYOUT.size, 16);
  assert.equal(KVM_XCRS_ENTRIES_START + 16 * KVM_XCR_LAYOUT.size + 16 * 8, KVM_XCRS_LAYOUT.size);
  assert.equal(KVM_DEBUGREGS_LAYOUT.size, 128);
  assert.equal(KVM_PIT_CHANNEL_STATE_LAYOUT.size, 24);
  assert.equal(KVM_PIT_STATE2_LAYOUT.size, 112);
  assert.equal(KVM_CLOCK_DATA_LAYOUT.size, 48);
});

Deno.test("snapshot structs have the kernel's offsets", () => {
  assert.deepEqual(offsetsOf(KVM_DEBUGREGS_LAYOUT), { db: 0, dr6: 32, dr7: 40, flags: 48 });
  assert.deepEqual(offsetsOf(KVM_CLOCK_DATA_LAYOUT), { clock: 0, flags: 8, realtime: 16, hostTsc: 24 });
  assert.deepEqual(offsetsOf(KVM_PIT_STATE2_LAYOUT), { channels: 0, flags: 72 });
  assert.equal(offsetsOf(KVM_PIT_CHANNEL_STATE_LAYOUT).countLoadTime, 16);
  assert.equal(offsetsOf(KVM_PIT_CHANNEL_STATE_LAYOUT).gate, 15);
  assert.deepEqual(offsetsOf(KVM_XCR_LAYOUT), { xcr: 0, value: 8 });
});

Deno.test("kvm_debugregs and kvm_clock_data round-trip through their bytes", () => {
  const regs = { db: [1n, 2n, 3n, 0xffff_ffff_ffff_fff0n], dr6: 0xffff0ff0n, dr7: 0x400n, flags: 0n };
  const bytes = encodeToBytes(KVM_DEBUGREGS_LAYOUT, regs);
  assert.equal(new DataView(bytes.buffer).getBigUint64(40, true), 0x400n);
  assert.deepEqual(decodeFromBytes(KVM_DEBUGREGS_LAYOUT, bytes), regs);
  const clock = { clock: 123_456_789n, flags: 2, realtime: 0n, hostTsc: 7n };
  assert.deepEqual(
    decodeFromBytes(KVM_CLOCK_DATA_LAYOUT, encodeToBytes(KVM_CLOCK_DATA_LAYOUT, clock)),
    clock,
  );
});
