import assert from "node:assert/strict";
import {
  decodeRegisters,
  encodeRegister,
  encodeRegisters,
  X86_64_TARGET_XML,
  X86_REGISTER_FILE_SIZE,
  X86_REGISTER_OFFSETS,
  X86_REGISTERS,
  zeroRegisters,
} from "./gdb_x86.ts";

/**
 * QEMU 7.2's x86-64 register list, as its gdbstub sent it (qXfer:features:read of Debian's
 * qemu-system-x86_64 7.2, `-S -gdb`): name and bit size, in `g` order.
 */
const QEMU_7_2 = [
  ..."rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip".split(" ").map((n) => [n, 64]),
  ["eflags", 32],
  ..."cs ss ds es fs gs".split(" ").map((n) => [n, 32]),
  ..."fs_base gs_base k_gs_base cr0 cr2 cr3 cr4 cr8 efer".split(" ").map((n) => [n, 64]),
  ...[0, 1, 2, 3, 4, 5, 6, 7].map((i) => [`st${i}`, 80]),
  ..."fctrl fstat ftag fiseg fioff foseg fooff fop".split(" ").map((n) => [n, 32]),
  ...Array.from({ length: 16 }, (_, i) => [`xmm${i}`, 128]),
  ["mxcsr", 32],
];

Deno.test("register file: QEMU 7.2's order and sizes, 608 bytes in a g packet", () => {
  assert.deepEqual(X86_REGISTERS.map((r) => [r.name, r.bits]), QEMU_7_2);
  assert.equal(X86_REGISTERS.length, 66);
  assert.equal(X86_REGISTER_FILE_SIZE, 608); // QEMU 7.2's 'g' reply is 1216 hex digits
  assert.equal(X86_REGISTER_OFFSETS[16], 128); // rip
  assert.equal(X86_REGISTER_OFFSETS[33], 236); // st0
  assert.equal(X86_REGISTER_OFFSETS[49], 348); // xmm0
});

/** The <reg> elements of a target description with the number gdb gives each. */
function parseRegs(xml: string): { name: string; bits: number; regnum: number; feature: string }[] {
  const out: { name: string; bits: number; regnum: number; feature: string }[] = [];
  let next = 0;
  let feature = "";
  for (const m of xml.matchAll(/<feature name="([^"]+)">|<reg ([^>]*)\/>/g)) {
    if (m[1]) {
      feature = m[1];
      continue;
    }
    const attr = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(m[2])?.[1];
    const regnum = attr("regnum") === undefined ? next : Number(attr("regnum"));
    out.push({ name: attr("name")!, bits: Number(attr("bitsize")), regnum, feature });
    next = regnum + 1;
  }
  return out;
}

Deno.test("target.xml: gdb's numbering of its registers gives exactly QEMU's g layout", () => {
  const regs = parseRegs(X86_64_TARGET_XML).sort((a, b) => a.regnum - b.regnum);
  assert.deepEqual(regs.map((r) => [r.name, r.bits]), QEMU_7_2);
  assert.deepEqual(regs.map((r) => r.regnum), QEMU_7_2.map((_, i) => i));
  const byFeature = (f: string) => regs.filter((r) => r.feature === f).map((r) => r.name);
  assert.deepEqual(byFeature("org.gnu.gdb.i386.segments"), ["fs_base", "gs_base"]);
  assert.deepEqual(byFeature("org.gnu.gdb.i386.sse"), [...QEMU_7_2.slice(49).map(([n]) => n)]);
  assert.equal(byFeature("org.gnu.gdb.i386.core").length, 24 + 16);
});

Deno.test("target.xml: well-formed, i386:x86-64, every type it uses is declared or built in", () => {
  const xml = X86_64_TARGET_XML;
  assert.match(xml, /^<\?xml version="1.0"\?>\n<!DOCTYPE target SYSTEM "gdb-target.dtd">/);
  assert.match(xml, /<architecture>i386:x86-64<\/architecture>/);
  // Balanced elements: every opening tag closed in order (a tiny checker, enough for this file).
  const stack: string[] = [];
  for (const m of xml.matchAll(/<(\/?)([a-z_]+)[^>]*?(\/?)>/g)) {
    if (m[0].startsWith("<?") || m[0].startsWith("<!")) continue;
    if (m[3] === "/") continue;
    if (m[1] === "/") assert.equal(stack.pop(), m[2]);
    else stack.push(m[2]);
  }
  assert.deepEqual(stack, []);
  const declared = new Set([...xml.matchAll(/id="([^"]+)"/g)].map((m) => m[1]));
  const builtIn = new Set([
    "int8",
    "int16",
    "int32",
    "int64",
    "int128",
    "uint128",
    "int",
    "code_ptr",
    "data_ptr",
    "i387_ext",
    "ieee_single",
    "ieee_double",
  ]);
  for (const m of xml.matchAll(/type="([^"]+)"/g)) {
    assert.ok(declared.has(m[1]) || builtIn.has(m[1]), `type ${m[1]} is neither declared nor built in`);
  }
});

Deno.test("encode/decode: little-endian, each register its width, 80- and 128-bit values intact", () => {
  const regs = zeroRegisters();
  regs.rax = 0x1122_3344_5566_7788n;
  regs.eflags = 0x246n;
  regs.st0 = 0x4000_8000_0000_0000_0000n; // 2.0 as an x87 extended value
  regs.xmm15 = (1n << 127n) | 1n;
  const bytes = encodeRegisters(regs);
  assert.equal(bytes.length, 608);
  assert.deepEqual([...bytes.subarray(0, 8)], [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
  assert.deepEqual([...encodeRegister(regs, 17)], [0x46, 0x02, 0, 0]);
  assert.deepEqual([...encodeRegister(regs, 33)], [0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0x40]);
  assert.deepEqual(decodeRegisters(bytes, zeroRegisters()), regs);
  // A short G payload changes only the registers it covers completely.
  const partial = decodeRegisters(bytes.subarray(0, 12), { ...zeroRegisters(), rbx: 5n });
  assert.equal(partial.rax, regs.rax);
  assert.equal(partial.rbx, 5n);
});
