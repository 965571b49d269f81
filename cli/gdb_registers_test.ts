import assert from "node:assert/strict";
import fc from "fast-check";
import { fromGdbRegisters, toGdbRegisters } from "./gdb_registers.ts";
import { sampleState } from "./_gdb_test_util.ts";

Deno.test("gdb registers in 64-bit code: every general register whole, system registers, x87 and SSE", () => {
  const state = sampleState({ longMode: true });
  const regs = toGdbRegisters(state);
  assert.equal(regs.rax, state.regs.rax);
  assert.equal(regs.r15, state.regs.r15);
  assert.equal(regs.rsp, state.regs.rsp);
  assert.equal(regs.rbp, state.regs.rbp);
  assert.equal(regs.rip, 0xffff_ffff_8100_1234n);
  assert.equal(regs.eflags, 0x246n);
  assert.deepEqual([regs.cs, regs.ss, regs.ds, regs.es, regs.fs, regs.gs], [
    0x10n,
    0x18n,
    0x18n,
    0x18n,
    0n,
    0n,
  ]);
  assert.equal(regs.fs_base, 0x7f00_1234_5000n);
  assert.equal(regs.gs_base, 0xffff_8880_1f40_0000n);
  assert.equal(regs.k_gs_base, 0xffff_8880_1f60_0000n);
  assert.deepEqual(
    [regs.cr0, regs.cr2, regs.cr3, regs.cr4, regs.cr8, regs.efer],
    [0x8005_0033n, 0x5555_1000n, 0x1_019d_8000n, 0x0075_1ef0n, 3n, 0xd01n],
  );
  // st0 is the first 10 bytes of the first 16-byte slot, little-endian; st7 the last slot's.
  const fpr = state.fpu.fpr;
  assert.equal(regs.st0, [...fpr.subarray(0, 10)].reverse().reduce((v, b) => (v << 8n) | BigInt(b), 0n));
  assert.equal(regs.st7, [...fpr.subarray(112, 122)].reverse().reduce((v, b) => (v << 8n) | BigInt(b), 0n));
  assert.equal(regs.xmm15 >> 120n, BigInt(state.fpu.xmm[255]));
  assert.deepEqual([regs.fctrl, regs.fstat, regs.mxcsr], [0x37fn, 0x3800n, 0x1fa0n]);
  // QEMU 7.2 reads these as 0.
  assert.deepEqual([regs.ftag, regs.fiseg, regs.fioff, regs.foseg, regs.fooff, regs.fop], [
    0n,
    0n,
    0n,
    0n,
    0n,
    0n,
  ]);
});

Deno.test("gdb registers outside 64-bit code: low halves, r8–r15 zero; writes keep to the low half", () => {
  const state = sampleState({ longMode: false });
  const regs = toGdbRegisters(state);
  assert.equal(regs.rax, 0x89ab_cdefn);
  assert.equal(regs.rdi, state.regs.rdi & 0xffff_ffffn);
  assert.equal(regs.r8, 0n);
  assert.equal(regs.r15, 0n);
  assert.equal(regs.rip, 0x8100_1234n);
  assert.equal(regs.fs_base, 0x7f00_1234_5000n, "bases stay 64-bit in every mode");
  const back = fromGdbRegisters(state, {
    ...regs,
    rax: 0xdead_beef_0000_0001n,
    r8: 0x42n,
    rip: 0x1_0000_2000n,
  });
  assert.equal(back.regs.rax, 0x1n, "only the low 32 bits, zero-extended");
  assert.equal(back.regs.r8, state.regs.r8, "r8 is not there to write");
  assert.equal(back.regs.rip, 0x2000n);
});

Deno.test("gdb register writes: selectors and the zero-read x87 words are dropped; padding bytes kept", () => {
  const state = sampleState({ longMode: true });
  const regs = toGdbRegisters(state);
  const back = fromGdbRegisters(state, {
    ...regs,
    cs: 0x33n,
    ftag: 0xffffn,
    fop: 0x7n,
    st0: 0n,
    eflags: 0x202n,
  });
  assert.equal(back.sregs.cs.selector, 0x10);
  assert.equal(back.fpu.ftwx, state.fpu.ftwx);
  assert.equal(back.fpu.lastOpcode, state.fpu.lastOpcode);
  assert.deepEqual([...back.fpu.fpr.subarray(0, 10)], new Array(10).fill(0));
  assert.deepEqual(back.fpu.fpr.subarray(10, 16), state.fpu.fpr.subarray(10, 16), "the slot's padding");
  assert.equal(back.regs.rflags, 0x202n);
  assert.equal(state.fpu.fpr[0], 1, "the input state is not changed");
});

Deno.test("in 64-bit code, writing back what was read changes nothing; a written value reads back", () => {
  const names = [
    "rax",
    "r9",
    "rip",
    "fs_base",
    "gs_base",
    "k_gs_base",
    "cr3",
    "efer",
    "st3",
    "xmm7",
    "mxcsr",
  ] as const;
  fc.assert(
    fc.property(
      fc.constantFrom(...names),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      (name, raw) => {
        const state = sampleState({ longMode: true });
        assert.deepEqual(fromGdbRegisters(state, toGdbRegisters(state)), state);
        const width = name === "mxcsr" ? 32n : name === "st3" ? 80n : 64n;
        const value = raw & ((1n << width) - 1n);
        const regs = toGdbRegisters(state);
        // EFER.LMA must stay set for the mode (and so the widths) not to change.
        const written = name === "efer" ? value | 0x400n : value;
        assert.equal(toGdbRegisters(fromGdbRegisters(state, { ...regs, [name]: written }))[name], written);
      },
    ),
    { seed: 0x6db, numRuns: 300 },
  );
});
