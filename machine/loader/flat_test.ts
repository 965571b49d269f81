import assert from "node:assert/strict";
import { identityPageTables, loadFlat } from "./flat.ts";
import { LoaderError } from "./loader_error.ts";
import { held, writeAt } from "./_test_util.ts";

const CODE = new Uint8Array([0x90, 0x90, 0xf4]);

function loaderError(code: string, message: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof LoaderError, `expected a LoaderError, got ${error}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  };
}

Deno.test("real mode: CS = addr >> 4, IP = entry - addr, only the image is written", () => {
  const plan = loadFlat(CODE, { addr: 0x7c00, mode: "real", entry: 0x7c02 });
  assert.deepEqual(plan.writes, [{ addr: 0x7c00n, data: CODE }]);
  assert.deepEqual(plan.cpu, { mode: "real", rip: 2n, rflags: 2n, cs: { selector: 0x7c0, base: 0x7c00n } });
  assert.match(plan.description, /3 bytes at 0x7c00, entry 0x7c02 in real mode \(CS 0x7c0, IP 0x2\)/);
});

Deno.test("real mode with an explicit CS: the reset-vector style F000:FFF0 with base 0xffff0000", () => {
  const image = new Uint8Array(0x1_0000);
  const plan = loadFlat(image, {
    addr: 0xffff_0000n,
    mode: "real",
    entry: 0xffff_fff0n,
    cs: { selector: 0xf000, base: 0xffff_0000n },
  });
  assert.equal(plan.cpu.rip, 0xfff0n);
  assert.deepEqual(plan.cpu.cs, { selector: 0xf000, base: 0xffff_0000n });
});

Deno.test("real mode refuses unaligned addresses, images past 1 MiB and far entries", () => {
  assert.throws(() => loadFlat(CODE, { addr: 0x7c01, mode: "real" }), RangeError);
  assert.throws(
    () => loadFlat(new Uint8Array(0x20), { addr: 0xffff0, mode: "real" }),
    loaderError("DOES_NOT_FIT", /passes 1 MiB/),
  );
  assert.throws(
    () => loadFlat(CODE, { addr: 0x1000, mode: "real", entry: 0x1_1000 }),
    loaderError("DOES_NOT_FIT", /entry 0x11000 is not within 64 KiB above the CS base 0x1000/),
  );
  assert.throws(
    () => loadFlat(CODE, { addr: 0x1000, mode: "real", cs: { selector: 0x1_0000, base: 0 } }),
    RangeError,
  );
});

Deno.test("protected32: the boot GDT at 0x500, CS 0x08, RSP 0x8000, no page tables", () => {
  const plan = loadFlat(CODE, { addr: 0x10_0000, mode: "protected32" });
  assert.deepEqual(held(plan.writes).map((w) => [w.addr, w.data.length]), [[0x500n, 32], [0x10_0000n, 3]]);
  const gdt = new DataView(writeAt(plan.writes, 0x500n).buffer);
  assert.deepEqual(
    [0, 8, 16, 24].map((o) => gdt.getBigUint64(o, true)),
    [0n, 0x00cf_9b00_0000_ffffn, 0x00cf_9300_0000_ffffn, 0x00af_9b00_0000_ffffn],
  );
  assert.deepEqual(plan.cpu, {
    mode: "protected32",
    rip: 0x10_0000n,
    rsp: 0x8000n,
    rflags: 2n,
    cs: { selector: 0x08, base: 0n },
    gdt: { base: 0x500n, limit: 31 },
  });
});

Deno.test("long64: the GDT, 4 GiB of identity page tables at 0xa000-0xffff, CR3 0xa000, CS 0x18", () => {
  const plan = loadFlat(CODE, { addr: 0x20_0000, mode: "long64", entry: 0x20_0001 });
  assert.deepEqual(
    held(plan.writes).map((w) => [w.addr, w.data.length]),
    [[0x500n, 32], [0xa000n, 4096], [0xb000n, 4096], [0xc000n, 4096], [0xd000n, 4096], [0xe000n, 4096], [
      0xf000n,
      4096,
    ], [0x20_0000n, 3]],
  );
  assert.equal(plan.cpu.mode, "long64");
  assert.equal(plan.cpu.cr3, 0xa000n);
  assert.equal(plan.cpu.rip, 0x20_0001n);
  assert.deepEqual(plan.cpu.cs, { selector: 0x18, base: 0n });
  const entry = (addr: bigint, index: number) =>
    new DataView(writeAt(plan.writes, addr).buffer).getBigUint64(index * 8, true);
  assert.equal(entry(0xa000n, 0), 0xb003n);
  assert.equal(entry(0xa000n, 1), 0n);
  assert.deepEqual([0, 1, 2, 3, 4].map((i) => entry(0xb000n, i)), [0xc003n, 0xd003n, 0xe003n, 0xf003n, 0n]);
  assert.equal(entry(0xc000n, 0), 0x83n, "2 MiB page at 0, present, writable");
  assert.equal(entry(0xc000n, 1), 0x20_0083n);
  assert.equal(entry(0xf000n, 0x1f6), 0xfec0_0000n | 0x9bn, "the IOAPIC's page is cache-disabled");
  assert.equal(entry(0xe000n, 511), 0xbfe0_0000n | 0x83n, "below 3 GiB: cached");
});

Deno.test("the identity page tables translate every probed address below 4 GiB to itself", () => {
  const memory = new Map<bigint, DataView>();
  for (const t of identityPageTables()) memory.set(t.addr, new DataView(t.data.buffer));
  const read = (table: bigint, index: bigint) => {
    const view = memory.get(table & ~0xfffn);
    assert.ok(view !== undefined, `table at 0x${table.toString(16)} was written`);
    return view.getBigUint64(Number(index) * 8, true);
  };
  const probes = [
    0n,
    0x1234n,
    0x1f_ffffn,
    0x20_0000n,
    0x3fff_ffffn,
    0x4000_0000n,
    0xfec0_0010n,
    0xffff_fff0n,
  ];
  for (let i = 0n; i < 64n; i++) probes.push((i * 0x3_fb7c_d1a5n) % 0x1_0000_0000n);
  for (const va of probes) {
    const pml4e = read(0xa000n, (va >> 39n) & 511n);
    assert.equal(pml4e & 1n, 1n);
    const pdpte = read(pml4e & 0xf_ffff_ffff_f000n, (va >> 30n) & 511n);
    assert.equal(pdpte & 0x81n, 1n, "present, not a 1 GiB page");
    const pde = read(pdpte & 0xf_ffff_ffff_f000n, (va >> 21n) & 511n);
    assert.equal(pde & 0x83n, 0x83n, "present, writable, 2 MiB page");
    assert.equal((pde & 0xf_ffff_ffe0_0000n) | (va & 0x1f_ffffn), va);
  }
});

Deno.test("flat images may not overlap the GDT, the boot stack or the page tables, nor leave the reach", () => {
  assert.throws(
    () => loadFlat(new Uint8Array(0x101), { addr: 0x400, mode: "protected32" }),
    loaderError(
      "OVERLAP",
      /^flat protected32: the image \[0x400, 0x501\) overlaps the boot GDT \[0x500, 0x520\)$/,
    ),
  );
  assert.throws(
    () => loadFlat(new Uint8Array(0x1000), { addr: 0x7800, mode: "protected32" }),
    loaderError("OVERLAP", /the boot stack \[0x7000, 0x8000\) overlaps the image \[0x7800, 0x8800\)/),
  );
  assert.throws(
    () => loadFlat(CODE, { addr: 0xd000, mode: "long64" }),
    loaderError(
      "OVERLAP",
      /the boot page tables \[0xd000, 0xe000\) overlaps the image \[0xd000, 0xd003\)/,
    ),
  );
  assert.doesNotThrow(
    () => loadFlat(CODE, { addr: 0xd000, mode: "protected32" }),
    "no page tables in protected32",
  );
  assert.throws(
    () => loadFlat(CODE, { addr: 0xffff_fffen, mode: "long64" }),
    loaderError("DOES_NOT_FIT", /beyond 0x100000000 \(the identity map\)/),
  );
  assert.throws(
    () => loadFlat(CODE, { addr: 0x10_0000, mode: "protected32", entry: 0x1_0000_0000n }),
    loaderError("DOES_NOT_FIT", /entry 0x100000000 is beyond 0x100000000/),
  );
  assert.throws(
    () => loadFlat(new Uint8Array(0x2000), { addr: 0x10_0000, mode: "protected32", ramSize: 0x10_1000 }),
    loaderError(
      "DOES_NOT_FIT",
      /the image \[0x100000, 0x102000\) ends beyond the guest's 0x101000 bytes of RAM/,
    ),
  );
});

Deno.test("flat options are validated", () => {
  assert.throws(() => loadFlat(CODE, { addr: 1.5, mode: "real" }), RangeError);
  assert.throws(() => loadFlat(CODE, { addr: -16, mode: "real" }), RangeError);
  assert.throws(() => loadFlat(CODE, { addr: 0, mode: "v86" as "real" }), /unknown CPU mode "v86"/);
});

Deno.test("more images are placed beside the entered one, inside RAM and overlapping nothing", () => {
  const table = new Uint8Array([1, 2, 3, 4]);
  const plan = loadFlat(CODE, {
    addr: 0x7c00,
    mode: "real",
    ramSize: 0x20_0000,
    data: [{ addr: 0x1_0000, data: table, what: "table.bin" }],
  });
  assert.deepEqual(writeAt(plan.writes, 0x7c00n), CODE);
  assert.deepEqual(writeAt(plan.writes, 0x1_0000n), table);
  assert.deepEqual(plan.cpu.cs, { selector: 0x7c0, base: 0x7c00n }, "entered at the first image");
  const long = loadFlat(CODE, { addr: 0x10_0000, mode: "long64", data: [{ addr: 0x20_0000, data: table }] });
  assert.deepEqual(writeAt(long.writes, 0x20_0000n), table);
  assert.throws(
    () =>
      loadFlat(CODE, { addr: 0x7c00, mode: "real", data: [{ addr: 0x7c02, data: table, what: "b.bin" }] }),
    loaderError("OVERLAP", /^flat real: the image \[0x7c00, 0x7c03\) overlaps b\.bin \[0x7c02, 0x7c06\)$/),
  );
  assert.throws(
    () => loadFlat(CODE, { addr: 0x10_0000, mode: "protected32", data: [{ addr: 0x7ff0, data: table }] }),
    loaderError("OVERLAP", /the boot stack \[0x7000, 0x8000\) overlaps image 2 \[0x7ff0, 0x7ff4\)$/),
  );
  assert.throws(
    () =>
      loadFlat(CODE, {
        addr: 0x7c00,
        mode: "real",
        ramSize: 0x20_0000,
        data: [{ addr: 0x1f_fffe, data: table }],
      }),
    loaderError(
      "DOES_NOT_FIT",
      /^flat real: image 2 \[0x1ffffe, 0x200002\) ends beyond the guest's 0x200000/,
    ),
  );
});
