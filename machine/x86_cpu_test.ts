import assert from "node:assert/strict";
import type { CpuidEntry } from "../kvm/mod.ts";
import fc from "fast-check";
import {
  bootFpu,
  bootMsrs,
  cpuidFeaturesLacking,
  lapicWithLints,
  LINUX_CPUID_MAX_CPUS,
  linuxCpuid,
  resetMsrs,
} from "./x86_cpu.ts";

/** A register value from 4 ASCII characters, little-endian (as CPUID returns vendor strings). */
function ascii(text: string): number {
  return [...text].reduce((v, c, i) => v | (c.charCodeAt(0) << (8 * i)), 0) >>> 0;
}

function leaf(fn: number, index: number, regs: Partial<CpuidEntry> = {}): CpuidEntry {
  return { function: fn, index, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0, ...regs };
}

/** A slice of what KVM_GET_SUPPORTED_CPUID returns on an AMD EPYC host (values abridged). */
const AMD: CpuidEntry[] = [
  leaf(0, 0, { eax: 0x10, ebx: ascii("Auth"), edx: ascii("enti"), ecx: ascii("cAMD") }),
  leaf(1, 0, { eax: 0x00a0_0f11, ebx: 0x0000_0800, ecx: 0xf6f8_3203, edx: 0x078b_fbff }),
  leaf(7, 0, { flags: 1, ebx: 0x219c_97a9 }),
  leaf(0xb, 0, { flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 0 }),
  leaf(0xb, 1, { flags: 1, eax: 7, ebx: 0x40, ecx: 0x201, edx: 0 }),
  leaf(0xd, 0, { flags: 1, eax: 0x207, ebx: 0x340, ecx: 0x988, edx: 0 }),
  leaf(0x4000_0000, 0, { eax: 0x4000_0001, ebx: ascii("KVMK"), ecx: ascii("VMKV"), edx: ascii("M\0\0\0") }),
  leaf(0x4000_0001, 0, { eax: 0x0100_7afb }),
  leaf(0x8000_0000, 0, { eax: 0x8000_0021, ebx: ascii("Auth"), edx: ascii("enti"), ecx: ascii("cAMD") }),
  leaf(0x8000_0008, 0, { eax: 0x3030, ebx: 0x0100_d205, ecx: 0x0001_703f }),
  leaf(0x8000_001e, 0, {}),
];

Deno.test("linuxCpuid on an AMD list: leaf 1, topology leaves, KVM leaves kept, input untouched", () => {
  const before = structuredClone(AMD);
  const out = linuxCpuid(AMD, { apicId: 2, cpuCount: 3 });
  assert.deepEqual(AMD, before, "the input is not modified");
  assert.deepEqual(out, [
    AMD[0],
    // EBX: APIC id 2, 3 logical processors, CLFLUSH 8; ECX: CX16 (bit 13) cleared, hypervisor (bit 31)
    // set; EDX: HTT (bit 28) set for more than one CPU.
    leaf(1, 0, { eax: 0x00a0_0f11, ebx: 0x0203_0800, ecx: 0xf6f8_1203, edx: 0x178b_fbff }),
    AMD[2],
    // 0xB: SMT level (1 thread), core level (3 CPUs, shift 2), invalid; EDX the x2APIC id.
    leaf(0xb, 0, { flags: 1, eax: 0, ebx: 1, ecx: 0x100, edx: 2 }),
    leaf(0xb, 1, { flags: 1, eax: 2, ebx: 3, ecx: 0x201, edx: 2 }),
    leaf(0xb, 2, { flags: 1, eax: 0, ebx: 0, ecx: 0x2, edx: 2 }),
    AMD[5],
    AMD[6],
    AMD[7],
    AMD[8],
    // 0x80000008 ECX: NC = 2, ApicIdSize = 2; bits 16-17 kept.
    leaf(0x8000_0008, 0, { eax: 0x3030, ebx: 0x0100_d205, ecx: 0x0001_2002 }),
    // 0x8000001E: extended APIC id 2, core id 2, one thread per core, node 0.
    leaf(0x8000_001e, 0, { eax: 2, ebx: 2, ecx: 0, edx: 0 }),
  ]);
  const kvm = out.find((e) => e.function === 0x4000_0000)!;
  const signature = new TextDecoder().decode(new Uint32Array([kvm.ebx, kvm.ecx, kvm.edx]));
  assert.equal(signature, "KVMKVMKVM\0\0\0");
});

Deno.test("linuxCpuid: one CPU clears HTT; xsave: false clears XSAVE too", () => {
  const [, one] = linuxCpuid(AMD, { apicId: 0, cpuCount: 1 });
  assert.deepEqual(
    one,
    leaf(1, 0, { eax: 0x00a0_0f11, ebx: 0x0001_0800, ecx: 0xf6f8_1203, edx: 0x078b_fbff }),
  );
  const [, noXsave] = linuxCpuid(AMD, { apicId: 0, cpuCount: 1, xsave: false });
  assert.equal(noXsave.ecx, 0xf2f8_1203, "bit 26 cleared as well");
  const [, hv] = linuxCpuid([AMD[0], leaf(1, 0)], { apicId: 0, cpuCount: 1 });
  assert.equal(hv.ecx, 0x8000_0000, "the hypervisor bit is set even when KVM does not list it");
  const topo = linuxCpuid(AMD, { apicId: 0, cpuCount: 1 }).filter((e) => e.function === 0xb);
  assert.deepEqual(topo.map((e) => [e.eax, e.ebx, e.ecx, e.edx]), [[0, 1, 0x100, 0], [0, 1, 0x201, 0], [
    0,
    0,
    2,
    0,
  ]]);
});

Deno.test("linuxCpuid on an Intel list: leaf 4 cores and sharing, leaf 0x1F, AMD leaves untouched", () => {
  const intel: CpuidEntry[] = [
    leaf(0, 0, { eax: 0x1f, ebx: ascii("Genu"), edx: ascii("ineI"), ecx: ascii("ntel") }),
    leaf(1, 0, { eax: 0x0005_0654, ebx: 0x0010_0800, ecx: 0xfffa_3203, edx: 0x0f8b_fbff }),
    // L1d, L1i, L2, L3 and the terminator, with host values in the topology fields.
    leaf(4, 0, { flags: 1, eax: 0x1c00_4121, ebx: 0x01c0_003f, ecx: 0x3f }),
    leaf(4, 1, { flags: 1, eax: 0x1c00_4122, ebx: 0x01c0_003f, ecx: 0x3f }),
    leaf(4, 2, { flags: 1, eax: 0x1c00_4143, ebx: 0x03c0_003f, ecx: 0x3ff }),
    leaf(4, 3, { flags: 1, eax: 0x1c03_c163, ebx: 0x0280_003f, ecx: 0xdfff }),
    leaf(4, 4, { flags: 1 }),
    leaf(0x1f, 0, { flags: 1, eax: 1, ebx: 2, ecx: 0x100 }),
    leaf(0x1f, 1, { flags: 1, eax: 6, ebx: 0x38, ecx: 0x201 }),
    leaf(0x1f, 2, { flags: 1, eax: 0, ebx: 0, ecx: 0x2 }),
    leaf(0x8000_0008, 0, { eax: 0x3030 }),
  ];
  const out = linuxCpuid(intel, { apicId: 5, cpuCount: 8 });
  assert.deepEqual(out.map((e) => [e.function.toString(16), e.index, e.eax.toString(16)]).slice(2, 7), [
    // Cores per package 7 (bits 31-26); L1/L2 shared by 0 others, L3 by 7 (bits 25-14); low bits kept.
    ["4", 0, "1c000121"],
    ["4", 1, "1c000122"],
    ["4", 2, "1c000143"],
    ["4", 3, "1c01c163"],
    ["4", 4, "0"],
  ]);
  assert.deepEqual(out.filter((e) => e.function === 0x1f), [
    leaf(0x1f, 0, { flags: 1, eax: 0, ebx: 1, ecx: 0x100, edx: 5 }),
    leaf(0x1f, 1, { flags: 1, eax: 3, ebx: 8, ecx: 0x201, edx: 5 }),
    leaf(0x1f, 2, { flags: 1, eax: 0, ebx: 0, ecx: 0x2, edx: 5 }),
  ]);
  assert.equal(out[1].ebx, 0x0508_0800);
  assert.deepEqual(out.at(-1), intel.at(-1), "0x80000008 ECX is AMD's only");
});

Deno.test("linuxCpuid above 255 vCPUs: 8-bit fields hold what fits, the topology leaves the whole id", () => {
  const out = linuxCpuid(AMD, { apicId: 300, cpuCount: 400 });
  const find = (fn: number, index = 0) => out.find((e) => e.function === fn && e.index === index)!;
  assert.equal(find(1).ebx >>> 24, 300 & 0xff, "leaf 1: the initial APIC id's low byte");
  assert.equal((find(1).ebx >>> 16) & 0xff, 0xff, "leaf 1: the count saturates");
  assert.equal(find(1).ebx & 0xffff, 0x0800, "leaf 1: CLFLUSH size kept");
  assert.deepEqual([find(0xb, 1).eax, find(0xb, 1).ebx, find(0xb, 1).edx], [9, 400, 300]);
  assert.equal(find(0x8000_0008).ecx & 0xff, 0xff, "AMD NC saturates");
  assert.equal((find(0x8000_0008).ecx >>> 12) & 0xf, 9, "ApicIdSize: 9 bits for 400 ids");
  assert.equal(find(0x8000_001e).eax, 300, "AMD's extended APIC id");
  assert.equal(find(0x4000_0001).eax, 0x0100_7afb, "KVM's features untouched without msiExtDestId");
  const ext = linuxCpuid(AMD, { apicId: 300, cpuCount: 400, msiExtDestId: true });
  assert.equal(ext.find((e) => e.function === 0x4000_0001)!.eax, 0x0100_7afb | 1 << 15);
});

Deno.test("linuxCpuid refuses impossible topologies", () => {
  assert.throws(() => linuxCpuid(AMD, { apicId: 0, cpuCount: 0 }), RangeError);
  assert.throws(() => linuxCpuid(AMD, { apicId: 0, cpuCount: LINUX_CPUID_MAX_CPUS + 1 }), RangeError);
  assert.throws(() => linuxCpuid(AMD, { apicId: 3, cpuCount: 3 }), RangeError);
  assert.throws(() => linuxCpuid(AMD, { apicId: 0.5, cpuCount: 3 }), RangeError);
});

Deno.test("bootMsrs: Firecracker's boot MSRs", () => {
  assert.deepEqual(bootMsrs().map((m) => [m.index.toString(16), m.data]), [
    ["174", 0n], // SYSENTER_CS
    ["175", 0n], // SYSENTER_ESP
    ["176", 0n], // SYSENTER_EIP
    ["c0000081", 0n], // STAR
    ["c0000083", 0n], // CSTAR
    ["c0000102", 0n], // KERNEL_GS_BASE
    ["c0000084", 0n], // SYSCALL_MASK
    ["c0000082", 0n], // LSTAR
    ["10", 0n], // TSC
    ["1a0", 1n], // MISC_ENABLE: fast strings
    ["2ff", 0x806n], // MTRRdefType: enabled, write-back
  ]);
  assert.notEqual(bootMsrs(), bootMsrs(), "a fresh list each time");
});

Deno.test("bootFpu: FCW 0x37F, MXCSR 0x1F80, the rest zero", () => {
  const fpu = bootFpu();
  assert.deepEqual(fpu, {
    fpr: new Uint8Array(128),
    fcw: 0x37f,
    fsw: 0,
    ftwx: 0,
    lastOpcode: 0,
    lastIp: 0n,
    lastDp: 0n,
    xmm: new Uint8Array(256),
    mxcsr: 0x1f80,
  });
});

Deno.test("lapicWithLints: LINT0 ExtINT, LINT1 NMI, only the delivery-mode bits change", () => {
  const page = Uint8Array.from({ length: 1024 }, (_, i) => (i * 31) & 0xff);
  const view = new DataView(page.buffer);
  view.setUint32(0x350, 0x0001_0000, true); // masked, fixed
  view.setUint32(0x360, 0x0001_8000 | 0x200 | 0x42, true); // masked, level, SMI, vector 0x42
  const before = page.slice();
  const out = lapicWithLints(page);
  assert.deepEqual(page, before, "the input is not modified");
  const outView = new DataView(out.buffer);
  assert.equal(outView.getUint32(0x350, true), 0x0001_0700);
  assert.equal(outView.getUint32(0x360, true), 0x0001_8442);
  const expected = before.slice();
  expected.set(out.subarray(0x350, 0x354), 0x350);
  expected.set(out.subarray(0x360, 0x364), 0x360);
  assert.deepEqual(out, expected, "nothing else changes");
  assert.throws(() => lapicWithLints(new Uint8Array(0x363)), RangeError);
});

Deno.test("resetMsrs: the boot MSRs, and KVM's PV MSRs exactly as leaf 0x40000001 offers them", () => {
  const kvmLeaf = (eax: number) => [leaf(0x4000_0001, 0, { eax })];
  const pv = (eax: number) => resetMsrs(kvmLeaf(eax)).slice(bootMsrs().length);
  assert.deepEqual(resetMsrs([]), bootMsrs(), "no KVM leaf: no PV MSR");
  // The AMD host above: clocksource, clocksource2, async PF, steal time, PV EOI, poll control, async PF int.
  assert.deepEqual(pv(0x0100_7afb).map((m) => m.index.toString(16)), [
    "11",
    "12",
    "4b564d00",
    "4b564d01",
    "4b564d02",
    "4b564d03",
    "4b564d04",
    "4b564d05",
    "4b564d06",
  ]);
  assert.deepEqual(pv(1 << 3), [{ index: 0x4b56_4d00, data: 0n }, { index: 0x4b56_4d01, data: 0n }]);
  assert.deepEqual(pv(1 << 12), [{ index: 0x4b56_4d05, data: 1n }], "poll control resets to 1");
});

Deno.test("cpuidFeaturesLacking: a guest's OSXSAVE, MONITOR and OSPKE (set by KVM at run time) never count", () => {
  const leaf = (fn: number, ecx: number) => ({
    function: fn,
    index: 0,
    flags: 0,
    eax: 0,
    ebx: 0,
    ecx,
    edx: 0,
  });
  // What Linux's CR4.PKE and CR4.OSXSAVE make KVM_GET_CPUID2 show, against a host's supported CPUID.
  assert.deepEqual(cpuidFeaturesLacking([leaf(7, 1 << 4), leaf(1, 1 << 27)], [leaf(7, 0), leaf(1, 0)]), []);
  assert.deepEqual(cpuidFeaturesLacking([leaf(7, (1 << 4) | (1 << 5))], [leaf(7, 0)]), [
    "leaf 0x7.0 ecx 0x00000020",
  ]);
});

Deno.test("cpuidFeaturesLacking: nothing for the same CPUID or a superset; each removed feature bit named", () => {
  const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
  const leaves = [[1, 0], [7, 0], [7, 1], [0xd, 1], [0x8000_0001, 0], [0x8000_0008, 0], [4, 0], [0xb, 0]];
  const cpuid = fc.tuple(...leaves.map(() => fc.tuple(u32, u32, u32, u32))).map((regs) =>
    regs.map(([eax, ebx, ecx, edx], i): CpuidEntry => ({
      function: leaves[i][0],
      index: leaves[i][1],
      flags: 1,
      eax,
      ebx,
      ecx,
      edx,
    }))
  );
  fc.assert(fc.property(cpuid, fc.array(u32, { minLength: 32, maxLength: 32 }), (saved, extra) => {
    assert.deepEqual(cpuidFeaturesLacking(saved, saved), []);
    // More bits on offer, in every register: still nothing lacking.
    const more = saved.map((e, i) => ({
      ...e,
      eax: (e.eax | extra[(4 * i) % 32]) >>> 0,
      ebx: (e.ebx | extra[(4 * i + 1) % 32]) >>> 0,
      ecx: (e.ecx | extra[(4 * i + 2) % 32]) >>> 0,
      edx: (e.edx | extra[(4 * i + 3) % 32]) >>> 0,
    }));
    assert.deepEqual(cpuidFeaturesLacking(saved, more), []);
    // Every bit taken away from a feature register is named; from leaf 4 or 0xB it is not.
    const fewer = saved.map((e) => ({ ...e, eax: 0, ebx: 0, ecx: 0, edx: 0 }));
    const named = cpuidFeaturesLacking(saved, fewer);
    const expected = [
      [1, 0, "ecx"],
      [1, 0, "edx"],
      [7, 0, "ebx"],
      [7, 0, "ecx"],
      [7, 0, "edx"],
      [7, 1, "eax"],
      [0xd, 1, "eax"],
      [0x8000_0001, 0, "ecx"],
      [0x8000_0001, 0, "edx"],
      [0x8000_0008, 0, "ebx"],
    ].flatMap(([leaf, sub, reg]) => {
      const runtime = leaf === 1 && reg === "ecx"
        ? (1 << 27) | (1 << 3)
        : leaf === 7 && sub === 0 && reg === "ecx"
        ? 1 << 4
        : 0;
      const value = (saved.find((e) => e.function === leaf && e.index === sub)![reg as "eax"] & ~runtime) >>>
        0;
      return value === 0
        ? []
        : [`leaf 0x${leaf.toString(16)}.${sub} ${reg} 0x${value.toString(16).padStart(8, "0")}`];
    });
    assert.deepEqual(named, expected);
  }));
});
