/**
 * The x86-64 register file as a gdb remote stub presents it: the order and sizes of QEMU 7.2's
 * x86-64 gdbstub (so a `g` reply is the same 608 bytes QEMU sends), and a target description that
 * tells gdb so.
 *
 * The register list was read from QEMU 7.2 itself (Debian's `qemu-system-x86_64 -S -gdb`, its
 * `qXfer:features:read` reply and a 608-byte `g` reply) and matches `target/i386/gdbstub.c`: 16
 * general registers in gdb's order (rax rbx rcx rdx rsi rdi rbp rsp r8–r15), rip, eflags (32 bits),
 * the six selectors (32 bits each), fs_base, gs_base, k_gs_base, cr0 cr2 cr3 cr4 cr8, efer, st0–st7
 * (80 bits), the eight x87 control registers (32 bits), xmm0–xmm15 (128 bits) and mxcsr.
 *
 * QEMU 7.2 puts all 66 in one `org.gnu.gdb.i386.core` feature. This description splits them the
 * way gdb's own x86-64 descriptions do — `core`, `sse`, `segments`, plus a feature of our own for
 * the system registers — with explicit register numbers, so the wire layout stays QEMU's while gdb
 * recognises xmm/mxcsr as SSE state and fs_base/gs_base as the segment bases.
 *
 * @module
 */

/** The name of one register of the x86-64 register file, in `g` order. */
export type X86RegisterName = (typeof X86_REGISTERS)[number]["name"];

/** One register: its name, its width in bits, its gdb type and the feature that declares it. */
export interface X86RegisterInfo {
  /** gdb's name for it (`$rax`). */
  readonly name: string;
  /** Width in bits; the `g` packet carries `bits / 8` bytes, little-endian. */
  readonly bits: number;
  /** The target-description type. */
  readonly type: string;
  /** The feature it is declared in. */
  readonly feature: "core" | "sse" | "segments" | "system";
  /** The register group gdb lists it under, when not the type's default. */
  readonly group?: string;
}

const gpr = (name: string, type = "int64") => ({ name, bits: 64, type, feature: "core" }) as const;
const sel = (name: string) => ({ name, bits: 32, type: "int32", feature: "core" }) as const;
const sys = (name: string, type = "int64") => ({ name, bits: 64, type, feature: "system" }) as const;
const st = (name: string) => ({ name, bits: 80, type: "i387_ext", feature: "core" }) as const;
const fpc = (name: string) => ({ name, bits: 32, type: "int", feature: "core", group: "float" }) as const;
const xmm = (name: string) => ({ name, bits: 128, type: "vec128", feature: "sse" }) as const;

/** The 66 registers, in the order of QEMU 7.2's `g` packet (register number = index). */
export const X86_REGISTERS = [
  gpr("rax"),
  gpr("rbx"),
  gpr("rcx"),
  gpr("rdx"),
  gpr("rsi"),
  gpr("rdi"),
  gpr("rbp", "data_ptr"),
  gpr("rsp", "data_ptr"),
  gpr("r8"),
  gpr("r9"),
  gpr("r10"),
  gpr("r11"),
  gpr("r12"),
  gpr("r13"),
  gpr("r14"),
  gpr("r15"),
  gpr("rip", "code_ptr"),
  { name: "eflags", bits: 32, type: "x86_eflags", feature: "core" },
  sel("cs"),
  sel("ss"),
  sel("ds"),
  sel("es"),
  sel("fs"),
  sel("gs"),
  { name: "fs_base", bits: 64, type: "int64", feature: "segments" },
  { name: "gs_base", bits: 64, type: "int64", feature: "segments" },
  sys("k_gs_base"),
  sys("cr0"),
  sys("cr2"),
  sys("cr3"),
  sys("cr4"),
  sys("cr8"),
  sys("efer"),
  st("st0"),
  st("st1"),
  st("st2"),
  st("st3"),
  st("st4"),
  st("st5"),
  st("st6"),
  st("st7"),
  fpc("fctrl"),
  fpc("fstat"),
  fpc("ftag"),
  fpc("fiseg"),
  fpc("fioff"),
  fpc("foseg"),
  fpc("fooff"),
  fpc("fop"),
  xmm("xmm0"),
  xmm("xmm1"),
  xmm("xmm2"),
  xmm("xmm3"),
  xmm("xmm4"),
  xmm("xmm5"),
  xmm("xmm6"),
  xmm("xmm7"),
  xmm("xmm8"),
  xmm("xmm9"),
  xmm("xmm10"),
  xmm("xmm11"),
  xmm("xmm12"),
  xmm("xmm13"),
  xmm("xmm14"),
  xmm("xmm15"),
  { name: "mxcsr", bits: 32, type: "x86_mxcsr", feature: "sse", group: "vector" },
] as const satisfies readonly X86RegisterInfo[];

/** Every register's value as an unsigned bigint (80- and 128-bit ones too), keyed by name. */
export type X86Registers = Record<X86RegisterName, bigint>;

/** Byte offset of each register in a `g` packet, and the total (608). */
export const X86_REGISTER_OFFSETS: readonly number[] = (() => {
  let at = 0;
  return X86_REGISTERS.map((r) => {
    const here = at;
    at += r.bits / 8;
    return here;
  });
})();

/** Size in bytes of the whole register file as `g` carries it. */
export const X86_REGISTER_FILE_SIZE: number = X86_REGISTERS.reduce((n, r) => n + r.bits / 8, 0);

/** Index of the instruction pointer. */
export const X86_RIP_REGNUM: number = X86_REGISTERS.findIndex((r) => r.name === "rip");

/** A register file with every register 0. */
export function zeroRegisters(): X86Registers {
  return Object.fromEntries(X86_REGISTERS.map((r) => [r.name, 0n])) as X86Registers;
}

/** `value` as `bytes` little-endian bytes (truncated to that width). */
export function bigintToLe(value: bigint, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let v = value;
  for (let i = 0; i < bytes; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** Little-endian bytes as an unsigned bigint. */
export function leToBigint(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

/** One register's bytes, as `p` returns them. */
export function encodeRegister(regs: X86Registers, regnum: number): Uint8Array {
  const info = X86_REGISTERS[regnum];
  return bigintToLe(regs[info.name], info.bits / 8);
}

/** The whole register file, as `g` returns it. */
export function encodeRegisters(regs: X86Registers): Uint8Array {
  const out = new Uint8Array(X86_REGISTER_FILE_SIZE);
  X86_REGISTERS.forEach((_, i) => out.set(encodeRegister(regs, i), X86_REGISTER_OFFSETS[i]));
  return out;
}

/**
 * Registers from a `G` packet's bytes onto `base`. A shorter buffer (gdb may send fewer registers)
 * updates only the registers it covers completely.
 */
export function decodeRegisters(bytes: Uint8Array, base: X86Registers): X86Registers {
  const out = { ...base };
  X86_REGISTERS.forEach((info, i) => {
    const at = X86_REGISTER_OFFSETS[i];
    const size = info.bits / 8;
    if (at + size <= bytes.length) out[info.name] = leToBigint(bytes.subarray(at, at + size));
  });
  return out;
}

// Target description. Flag bit names are the Intel SDM's (vol. 1, 3.4.3 EFLAGS; 10.2.3 MXCSR).
const EFLAGS_FIELDS: [string, number][] = [
  ["CF", 0],
  ["", 1],
  ["PF", 2],
  ["AF", 4],
  ["ZF", 6],
  ["SF", 7],
  ["TF", 8],
  ["IF", 9],
  ["DF", 10],
  ["OF", 11],
  ["NT", 14],
  ["RF", 16],
  ["VM", 17],
  ["AC", 18],
  ["VIF", 19],
  ["VIP", 20],
  ["ID", 21],
];
const MXCSR_FIELDS: [string, number][] = [
  ["IE", 0],
  ["DE", 1],
  ["ZE", 2],
  ["OE", 3],
  ["UE", 4],
  ["PE", 5],
  ["DAZ", 6],
  ["IM", 7],
  ["DM", 8],
  ["ZM", 9],
  ["OM", 10],
  ["UM", 11],
  ["PM", 12],
  ["FZ", 15],
];

function flags(id: string, fields: [string, number][]): string[] {
  return [
    `    <flags id="${id}" size="4">`,
    ...fields.map(([name, bit]) => `      <field name="${name}" start="${bit}" end="${bit}"/>`),
    "    </flags>",
  ];
}

function regs(feature: X86RegisterInfo["feature"]): string[] {
  const lines: string[] = [];
  let next = -1;
  X86_REGISTERS.forEach((r: X86RegisterInfo, i) => {
    if (r.feature !== feature) return;
    // regnum only where the numbering jumps: gdb numbers on from the previous register.
    const regnum = i === next ? "" : ` regnum="${i}"`;
    const group = r.group ? ` group="${r.group}"` : "";
    lines.push(`    <reg name="${r.name}" bitsize="${r.bits}" type="${r.type}"${regnum}${group}/>`);
    next = i + 1;
  });
  return lines;
}

/** Feature name of the system registers, which gdb has no standard feature for. */
export const X86_SYSTEM_FEATURE = "org.kvm-ts.x86-64.system";

/**
 * `target.xml`: architecture `i386:x86-64` and the registers of {@link X86_REGISTERS}, numbered so
 * that gdb lays out `g` exactly as QEMU 7.2 does.
 */
export const X86_64_TARGET_XML: string = [
  '<?xml version="1.0"?>',
  '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
  '<target version="1.0">',
  "  <architecture>i386:x86-64</architecture>",
  '  <feature name="org.gnu.gdb.i386.core">',
  ...flags("x86_eflags", EFLAGS_FIELDS),
  ...regs("core"),
  "  </feature>",
  '  <feature name="org.gnu.gdb.i386.sse">',
  '    <vector id="v4f" type="ieee_single" count="4"/>',
  '    <vector id="v2d" type="ieee_double" count="2"/>',
  '    <vector id="v16i8" type="int8" count="16"/>',
  '    <vector id="v8i16" type="int16" count="8"/>',
  '    <vector id="v4i32" type="int32" count="4"/>',
  '    <vector id="v2i64" type="int64" count="2"/>',
  '    <union id="vec128">',
  '      <field name="v4_float" type="v4f"/>',
  '      <field name="v2_double" type="v2d"/>',
  '      <field name="v16_int8" type="v16i8"/>',
  '      <field name="v8_int16" type="v8i16"/>',
  '      <field name="v4_int32" type="v4i32"/>',
  '      <field name="v2_int64" type="v2i64"/>',
  '      <field name="uint128" type="uint128"/>',
  "    </union>",
  ...flags("x86_mxcsr", MXCSR_FIELDS),
  ...regs("sse"),
  "  </feature>",
  '  <feature name="org.gnu.gdb.i386.segments">',
  ...regs("segments"),
  "  </feature>",
  `  <feature name="${X86_SYSTEM_FEATURE}">`,
  ...regs("system"),
  "  </feature>",
  "</target>",
  "",
].join("\n");
