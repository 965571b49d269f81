import assert from "node:assert/strict";
import { decodeExit } from "./exit.ts";

/** A zeroed 3-page "kvm_run mapping" (12288 bytes, as KVM_GET_VCPU_MMAP_SIZE reports here). */
function page(reason: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(12288);
  const view = new DataView(bytes.buffer);
  view.setUint32(8, reason, true);
  return { bytes, view };
}

Deno.test("io out: direction, size, port, count, data view at data_offset", () => {
  const { bytes, view } = page(2);
  view.setUint8(32, 1);
  view.setUint8(33, 2);
  view.setUint16(34, 0x3f8, true);
  view.setUint32(36, 1, true);
  view.setBigUint64(40, 4096n, true);
  bytes.set([0x34, 0x12], 4096);
  const exit = decodeExit(bytes);
  assert.equal(exit.kind, "io");
  if (exit.kind !== "io") return;
  assert.equal(exit.direction, "out");
  assert.equal(exit.size, 2);
  assert.equal(exit.port, 0x3f8);
  assert.equal(exit.count, 1);
  assert.equal(exit.dataOffset, 4096);
  assert.deepEqual([...exit.data], [0x34, 0x12]);
});

Deno.test("io in: the data view writes into the page (where KVM reads the result)", () => {
  const { bytes, view } = page(2);
  view.setUint8(32, 0);
  view.setUint8(33, 1);
  view.setUint16(34, 0x60, true);
  view.setUint32(36, 3, true); // rep insb, 3 bytes
  view.setBigUint64(40, 4096n, true);
  const exit = decodeExit(view);
  assert.ok(exit.kind === "io" && exit.direction === "in");
  assert.equal(exit.data.length, 3);
  exit.data.set([7, 8, 9]);
  assert.deepEqual([...bytes.subarray(4096, 4099)], [7, 8, 9]);
});

Deno.test("io data outside the mapping is a RangeError, not a wild view", () => {
  const { bytes, view } = page(2);
  view.setUint8(33, 4);
  view.setUint32(36, 2, true);
  view.setBigUint64(40, 12288n - 4n, true);
  assert.throws(() => decodeExit(bytes), RangeError);
});

Deno.test("decodeExit works on a sub-view with a byteOffset", () => {
  const backing = new Uint8Array(16 + 12288);
  const { bytes } = page(5);
  backing.set(bytes, 16);
  assert.deepEqual(decodeExit(backing.subarray(16)), { kind: "hlt" });
  assert.deepEqual(decodeExit(new DataView(backing.buffer, 16)), { kind: "hlt" });
});

Deno.test("mmio write and read", () => {
  const { bytes, view } = page(6);
  view.setBigUint64(32, 0xfee0_0000_1000n, true);
  bytes.set([0x5a, 1, 2, 3, 4, 5, 6, 7], 40);
  view.setUint32(48, 1, true);
  view.setUint8(52, 1);
  const write = decodeExit(bytes);
  assert.ok(write.kind === "mmio");
  assert.equal(write.physAddr, 0xfee0_0000_1000n);
  assert.equal(write.len, 1);
  assert.equal(write.isWrite, true);
  assert.deepEqual([...write.data], [0x5a]);

  view.setUint32(48, 4, true);
  view.setUint8(52, 0);
  const read = decodeExit(bytes);
  assert.ok(read.kind === "mmio" && !read.isWrite);
  read.data.set([0xef, 0xbe, 0xad, 0xde]);
  assert.equal(view.getUint32(40, true), 0xdead_beef);
});

Deno.test("hlt, shutdown, intr", () => {
  assert.deepEqual(decodeExit(page(5).bytes), { kind: "hlt" });
  assert.deepEqual(decodeExit(page(8).bytes), { kind: "shutdown" });
  assert.deepEqual(decodeExit(page(10).bytes), { kind: "intr" });
});

Deno.test("fail entry", () => {
  const { bytes, view } = page(9);
  view.setBigUint64(32, 0x8000_0021n, true);
  view.setUint32(40, 1, true);
  assert.deepEqual(decodeExit(bytes), { kind: "failEntry", reason: 0x8000_0021n, cpu: 1 });
});

Deno.test("internal error: suberror and ndata words (capped at 16)", () => {
  const { bytes, view } = page(17);
  view.setUint32(32, 1, true);
  view.setUint32(36, 2, true);
  view.setBigUint64(40, 0x1234n, true);
  view.setBigUint64(48, 0xffff_ffff_ffff_ffffn, true);
  view.setBigUint64(56, 99n, true); // beyond ndata: not reported
  assert.deepEqual(decodeExit(bytes), {
    kind: "internalError",
    suberror: 1,
    data: [0x1234n, 0xffff_ffff_ffff_ffffn],
  });
  view.setUint32(36, 1000, true);
  const capped = decodeExit(bytes);
  assert.ok(capped.kind === "internalError" && capped.data.length === 16);
});

Deno.test("system event: type and data", () => {
  const { bytes, view } = page(24);
  view.setUint32(32, 2, true); // reset
  view.setUint32(36, 1, true);
  view.setBigUint64(40, 7n, true);
  assert.deepEqual(decodeExit(bytes), { kind: "systemEvent", type: 2, data: [7n] });
});

Deno.test("debug: struct kvm_debug_exit_arch", () => {
  const { bytes, view } = page(4);
  view.setUint32(32, 3, true);
  view.setBigUint64(40, 0xffff_ffff_8100_0000n, true);
  view.setBigUint64(48, 0xffff_0ff0n, true);
  view.setBigUint64(56, 0x400n, true);
  assert.deepEqual(decodeExit(bytes), {
    kind: "debug",
    exception: 3,
    pc: 0xffff_ffff_8100_0000n,
    dr6: 0xffff_0ff0n,
    dr7: 0x400n,
  });
});

Deno.test("debug: the pad word after exception is not part of the value", () => {
  // kvm_debug_exit_arch: exception u32 @0, pad u32 @4, pc @8, dr6 @16, dr7 @24 (union at 32).
  const { bytes, view } = page(4);
  view.setUint32(32, 1, true); // #DB
  view.setUint32(36, 0xdead_beef, true); // pad: garbage must not leak into the decoded exit
  view.setBigUint64(40, 0x1000n, true);
  view.setBigUint64(48, 0xffff_4ff0n, true); // DR6.BS (single step), with the active-low bits
  const exit = decodeExit(bytes);
  assert.deepEqual(exit, { kind: "debug", exception: 1, pc: 0x1000n, dr6: 0xffff_4ff0n, dr7: 0n });
});

Deno.test("exception", () => {
  const { bytes, view } = page(1);
  view.setUint32(32, 13, true);
  view.setUint32(36, 0x18, true);
  assert.deepEqual(decodeExit(bytes), { kind: "exception", exception: 13, errorCode: 0x18 });
});

Deno.test("unknown: reason 0 carries the hardware exit reason; others just the reason", () => {
  const { bytes, view } = page(0);
  view.setBigUint64(32, 0x30n, true);
  assert.deepEqual(decodeExit(bytes), { kind: "unknown", reason: 0, hardwareExitReason: 0x30n });
  assert.deepEqual(decodeExit(page(3).bytes), { kind: "unknown", reason: 3 }); // KVM_EXIT_HYPERCALL
  assert.deepEqual(decodeExit(page(0xdead).bytes), { kind: "unknown", reason: 0xdead });
});

Deno.test("the split irqchip's exits: the interrupt window, and an IOAPIC EOI with its vector", () => {
  assert.deepEqual(decodeExit(page(7).bytes), { kind: "irqWindowOpen" });
  const { bytes, view } = page(26);
  view.setUint8(32, 0x32);
  view.setUint8(33, 0xff); // past the one-byte member: not read
  assert.deepEqual(decodeExit(bytes), { kind: "ioapicEoi", vector: 0x32 });
});

Deno.test("a buffer shorter than struct kvm_run is refused", () => {
  assert.throws(() => decodeExit(new Uint8Array(100)), RangeError);
});

Deno.test("decodeExit only reads: the page is unchanged", () => {
  const { bytes, view } = page(2);
  view.setUint8(33, 1);
  view.setUint32(36, 1, true);
  view.setBigUint64(40, 4096n, true);
  const before = bytes.slice();
  decodeExit(bytes);
  assert.deepEqual(bytes, before);
});
