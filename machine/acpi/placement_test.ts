import assert from "node:assert/strict";
import type { E820Entry } from "../loader/mod.ts";
import { placeAcpiTables } from "./placement.ts";

const PC_3G: E820Entry[] = [
  { addr: 0n, size: 0x9_fc00n, type: 1 },
  { addr: 0x9_fc00n, size: 0x400n, type: 2 },
  { addr: 0xf_0000n, size: 0x1_0000n, type: 2 },
  { addr: 0x10_0000n, size: 0xbff0_0000n, type: 1 },
  { addr: 0xfeff_c000n, size: 0x4000n, type: 2 },
  { addr: 0xfffc_0000n, size: 0x4_0000n, type: 2 },
  { addr: 0x1_0000_0000n, size: 0x4000_0000n, type: 1 },
];

Deno.test("placeAcpiTables: the last pages of RAM below 4 GiB become reserved; RAM above 4 GiB is not used", () => {
  const { tables, e820 } = placeAcpiTables(PC_3G, { cpus: 4 });
  const pages = (BigInt(tables.bytes.length) + 0xfffn) & ~0xfffn;
  assert.equal(tables.address, 0xc000_0000n - pages);
  assert.deepEqual(e820, [
    ...PC_3G.slice(0, 3),
    { addr: 0x10_0000n, size: 0xc000_0000n - pages - 0x10_0000n, type: 1 },
    { addr: 0xc000_0000n - pages, size: pages, type: 2 },
    ...PC_3G.slice(4),
  ]);
  assert.equal(new TextDecoder().decode(tables.bytes.subarray(0, 8)), "RSD PTR ");
});

Deno.test("placeAcpiTables: thousands of vCPUs take more pages; a RAM entry past 4 GiB is clipped", () => {
  const { tables, e820 } = placeAcpiTables([{ addr: 0x10_0000n, size: 0x1_0000_0000n, type: 1 }], {
    cpus: 4096,
  });
  assert.ok(tables.bytes.length > 0x1_0000, "4096 x2APIC and APIC entries");
  const reserved = e820.find((e) => e.type === 2)!;
  assert.equal(reserved.addr + reserved.size, 0x1_0000_0000n);
  assert.equal(reserved.addr, tables.address);
  assert.deepEqual(
    e820.at(-1),
    { addr: 0x1_0000_0000n, size: 0x10_0000n, type: 1 },
    "the RAM past 4 GiB stays",
  );
  const total = e820.reduce((n, e) => n + e.size, 0n);
  assert.equal(total, 0x1_0000_0000n, "nothing lost or doubled");
});

Deno.test("placeAcpiTables: no room between 1 MiB and 4 GiB is one RangeError", () => {
  assert.throws(
    () => placeAcpiTables([{ addr: 0n, size: 0x9_fc00n, type: 1 }], { cpus: 1 }),
    /placeAcpiTables: no RAM entry between 1 MiB and 4 GiB has 0x1000 bytes/,
  );
  assert.throws(() => placeAcpiTables(PC_3G, { cpus: 0 }), /cpus 0/);
});

Deno.test("placeAcpiTables: a reserve larger than the tables is the reserved block, the tables at its start", () => {
  const { tables, e820 } = placeAcpiTables(PC_3G, { cpus: 4, reserve: 0x2_0000n });
  assert.equal(tables.address, 0xc000_0000n - 0x2_0000n);
  assert.deepEqual(e820[3], { addr: 0x10_0000n, size: 0xc000_0000n - 0x2_0000n - 0x10_0000n, type: 1 });
  assert.deepEqual(e820[4], { addr: 0xc000_0000n - 0x2_0000n, size: 0x2_0000n, type: 2 });
  // Smaller than the tables: the tables' pages, as without it.
  const small = placeAcpiTables(PC_3G, { cpus: 4, reserve: 0x1000n });
  assert.deepEqual(small, placeAcpiTables(PC_3G, { cpus: 4 }));
  assert.throws(() => placeAcpiTables(PC_3G, { cpus: 4, reserve: 0x1234n }), RangeError);
});
