import assert from "node:assert/strict";
import { ACPI_COM1, ACPI_RTC } from "./dsdt.ts";
import { type AcpiTables, buildAcpiTables, layoutAcpiTables } from "./tables.ts";

const text = (bytes: Uint8Array) => String.fromCharCode(...bytes);
const sum = (bytes: Uint8Array) => bytes.reduce((s, b) => s + b, 0) & 0xff;

/** The bytes of the table at guest address `addr`, by its header's length. */
function tableAt(acpi: AcpiTables, addr: bigint): Uint8Array {
  const at = Number(addr - acpi.address);
  assert.ok(at >= 0 && at + 36 <= acpi.bytes.length, `0x${addr.toString(16)} is inside the block`);
  const view = new DataView(acpi.bytes.buffer, acpi.bytes.byteOffset + at);
  return acpi.bytes.subarray(at, at + view.getUint32(4, true));
}

/** Follows RSDP → XSDT (and RSDT) → tables, as an OS does. */
function walk(acpi: AcpiTables) {
  const rsdp = acpi.rsdp.bytes;
  const rv = new DataView(rsdp.buffer, rsdp.byteOffset, 36);
  assert.equal(text(rsdp.subarray(0, 8)), "RSD PTR ");
  assert.equal(sum(rsdp.subarray(0, 20)), 0, "the ACPI 1.0 checksum");
  assert.equal(sum(rsdp.subarray(0, 36)), 0, "the extended checksum");
  assert.equal(rsdp[15], 2, "revision 2");
  assert.equal(rv.getUint32(20, true), 36);
  const rsdt = tableAt(acpi, BigInt(rv.getUint32(16, true)));
  const xsdt = tableAt(acpi, rv.getBigUint64(24, true));
  assert.equal(text(rsdt.subarray(0, 4)), "RSDT");
  assert.equal(text(xsdt.subarray(0, 4)), "XSDT");
  const xv = new DataView(xsdt.buffer, xsdt.byteOffset, xsdt.length);
  const rtv = new DataView(rsdt.buffer, rsdt.byteOffset, rsdt.length);
  const byXsdt = Array.from({ length: (xsdt.length - 36) / 8 }, (_, i) => xv.getBigUint64(36 + 8 * i, true));
  const byRsdt = Array.from(
    { length: (rsdt.length - 36) / 4 },
    (_, i) => BigInt(rtv.getUint32(36 + 4 * i, true)),
  );
  assert.deepEqual(byRsdt, byXsdt, "the RSDT and the XSDT list the same tables");
  const tables = new Map<string, Uint8Array>([["RSDT", rsdt], ["XSDT", xsdt]]);
  for (const addr of byXsdt) {
    const t = tableAt(acpi, addr);
    tables.set(text(t.subarray(0, 4)), t);
  }
  const fadt = tables.get("FACP")!;
  const fv = new DataView(fadt.buffer, fadt.byteOffset, fadt.length);
  const facsAddr = BigInt(fv.getUint32(36, true));
  // One FACS pointer, as QEMU's FADT: with both set, Linux installs (and lists) the FACS twice.
  assert.equal(fv.getBigUint64(132, true), 0n, "X_FIRMWARE_CTRL 0: FIRMWARE_CTRL is used");
  assert.equal(facsAddr % 64n, 0n, "the FACS is 64-byte aligned");
  const facsAt = Number(facsAddr - acpi.address);
  tables.set("FACS", acpi.bytes.subarray(facsAt, facsAt + 64));
  const dsdtAddr = BigInt(fv.getUint32(40, true));
  assert.equal(fv.getBigUint64(140, true), dsdtAddr, "X_DSDT = DSDT");
  tables.set("DSDT", tableAt(acpi, dsdtAddr));
  for (const [sig, t] of tables) {
    if (sig === "FACS") continue;
    assert.equal(sum(t), 0, `${sig} checksum`);
    assert.equal(text(t.subarray(10, 16)), "KVM-TS", `${sig} OEM id`);
    assert.equal(text(t.subarray(16, 24)), "KVMTS-PC", `${sig} OEM table id`);
  }
  return tables;
}

/** MADT entries as [type, bytes]. */
function madtEntries(madt: Uint8Array): [number, DataView][] {
  const out: [number, DataView][] = [];
  for (let at = 44; at < madt.length;) {
    const length = madt[at + 1];
    assert.ok(length >= 2, "no zero-length entry");
    out.push([madt[at], new DataView(madt.buffer, madt.byteOffset + at, length)]);
    at += length;
  }
  return out;
}

Deno.test("an OS walking RSDP → XSDT/RSDT finds FADT, MADT, FACS, DSDT, all checksummed, no HPET", () => {
  const acpi = buildAcpiTables({ address: 0x7ff_0000n, cpus: 1 });
  const tables = walk(acpi);
  assert.deepEqual([...tables.keys()].sort(), ["APIC", "DSDT", "FACP", "FACS", "RSDT", "XSDT"]);
  assert.equal(acpi.rsdp.address, 0x7ff_0000n);
  // The listed locations agree with the bytes.
  for (const t of acpi.tables) {
    const at = Number(t.address - acpi.address);
    assert.equal(text(acpi.bytes.subarray(at, at + 4)), t.signature);
  }
  // No two tables overlap.
  const sorted = acpi.tables.toSorted((a, b) => Number(a.address - b.address));
  for (let i = 1; i < sorted.length; i++) {
    assert.ok(sorted[i - 1].address + BigInt(sorted[i - 1].length) <= sorted[i].address);
  }
});

Deno.test("FADT: QEMU's PM blocks, SCI 9, reset register 0xcf9, flags, revision 3, 8042 boot flag", () => {
  const fadt = walk(buildAcpiTables({ address: 0xe_0000n, cpus: 4 })).get("FACP")!;
  const v = new DataView(fadt.buffer, fadt.byteOffset, fadt.length);
  assert.equal(fadt.length, 244);
  assert.equal(fadt[8], 3, "revision");
  assert.equal(v.getUint16(46, true), 9, "SCI_INT");
  assert.equal(v.getUint32(48, true), 0, "SMI_CMD: no SMM, always ACPI mode");
  assert.equal(v.getUint32(56, true), 0x600, "PM1a_EVT_BLK");
  assert.equal(v.getUint32(64, true), 0x604, "PM1a_CNT_BLK");
  assert.equal(v.getUint32(76, true), 0x608, "PM_TMR_BLK");
  assert.equal(v.getUint32(80, true), 0xafe0, "GPE0_BLK");
  assert.deepEqual([...fadt.subarray(88, 94)], [4, 2, 0, 4, 4, 0], "block lengths");
  assert.equal(v.getUint16(96, true), 0xfff);
  assert.equal(v.getUint16(98, true), 0xfff);
  assert.equal(fadt[108], 0x32, "CENTURY");
  assert.equal(v.getUint16(109, true), 0b11, "legacy devices and an 8042");
  // WBINVD(0) PROC_C1(2) SLP_BUTTON(5) RTC_S4(7) RESET_REG_SUP(10) USE_PLATFORM_CLOCK(15).
  assert.equal(v.getUint32(112, true), 0x84a5);
  assert.deepEqual([...fadt.subarray(116, 120)], [1, 8, 0, 0], "RESET_REG: system I/O, 8 bits");
  assert.equal(v.getBigUint64(120, true), 0xcf9n);
  assert.equal(fadt[128], 0x06, "RESET_VALUE");
  assert.deepEqual([fadt[148], fadt[149], v.getBigUint64(152, true)], [1, 32, 0x600n], "X_PM1a_EVT_BLK");
  assert.deepEqual([fadt[172], fadt[173], v.getBigUint64(176, true)], [1, 16, 0x604n], "X_PM1a_CNT_BLK");
  assert.deepEqual([fadt[208], fadt[209], v.getBigUint64(212, true)], [1, 32, 0x608n], "X_PM_TMR_BLK");
  assert.deepEqual([fadt[220], fadt[221], v.getBigUint64(224, true)], [1, 32, 0xafe0n], "X_GPE0_BLK");

  const many = walk(buildAcpiTables({ address: 0xe_0000n, cpus: 9 })).get("FACP")!;
  assert.equal(
    new DataView(many.buffer, many.byteOffset).getUint32(112, true) & (1 << 18),
    1 << 18,
    "cluster model",
  );
  const noKbd = walk(buildAcpiTables({ address: 0xe_0000n, cpus: 1, isaDevices: [ACPI_COM1, ACPI_RTC] }))
    .get("FACP")!;
  assert.equal(noKbd[109], 0, "no i8042: no 8042 boot flag");
  const moved = walk(
    buildAcpiTables({ address: 0xe_0000n, cpus: 1, pmBase: 0xb000, gpe0Base: 0xb100, sciIrq: 10 }),
  )
    .get("FACP")!;
  const mv = new DataView(moved.buffer, moved.byteOffset);
  assert.deepEqual([mv.getUint16(46, true), mv.getUint32(56, true), mv.getUint32(80, true)], [
    10,
    0xb000,
    0xb100,
  ]);
});

Deno.test("MADT: a local APIC per vCPU, the IOAPIC, IRQ0→GSI2, SCI and PCI IRQs level/high, NMI on LINT1", () => {
  const madt = walk(buildAcpiTables({ address: 0x10_0000n, cpus: 3, ioapicId: 5 })).get("APIC")!;
  const v = new DataView(madt.buffer, madt.byteOffset, madt.length);
  assert.equal(v.getUint32(36, true), 0xfee0_0000);
  assert.equal(v.getUint32(40, true), 1, "PCAT_COMPAT");
  const entries = madtEntries(madt);
  const lapics = entries.filter(([t]) => t === 0).map((
    [, e],
  ) => [e.getUint8(2), e.getUint8(3), e.getUint32(4, true)]);
  assert.deepEqual(lapics, [[0, 0, 1], [1, 1, 1], [2, 2, 1]]);
  const ioapics = entries.filter(([t]) => t === 1).map((
    [, e],
  ) => [e.getUint8(2), e.getUint32(4, true), e.getUint32(8, true)]);
  assert.deepEqual(ioapics, [[5, 0xfec0_0000, 0]]);
  const overrides = entries.filter(([t]) => t === 2).map((
    [, e],
  ) => [e.getUint8(3), e.getUint32(4, true), e.getUint16(8, true)]);
  assert.deepEqual(overrides, [[0, 2, 0], [9, 9, 0xd], [10, 10, 0xd], [11, 11, 0xd]]);
  const nmis = entries.filter(([t]) => t === 4).map((
    [, e],
  ) => [e.getUint8(2), e.getUint16(3, true), e.getUint8(5)]);
  assert.deepEqual(nmis, [[0xff, 0, 1]]);
  assert.equal(entries.filter(([t]) => t === 9 || t === 10).length, 0, "no x2APIC entries below 255 vCPUs");
});

Deno.test("MADT: APIC ids from 255 up get x2APIC entries, and an x2APIC NMI entry", () => {
  for (const cpus of [255, 256, 1000, 4096]) {
    const madt = walk(buildAcpiTables({ address: 0x100_0000n, cpus })).get("APIC")!;
    const entries = madtEntries(madt);
    const xapicIds = entries.filter(([t]) => t === 0).map(([, e]) => e.getUint8(3));
    const x2apicIds = entries.filter(([t]) => t === 9).map((
      [, e],
    ) => [e.getUint32(4, true), e.getUint32(12, true)]);
    assert.deepEqual(xapicIds, Array.from({ length: 255 }, (_, i) => i), `${cpus}: xAPIC ids 0-254`);
    assert.deepEqual(
      x2apicIds,
      Array.from({ length: cpus - 255 }, (_, i) => [255 + i, 255 + i]),
      `${cpus}: x2APIC ids and UIDs from 255`,
    );
    for (const [, e] of entries.filter(([t]) => t === 9)) assert.equal(e.getUint32(8, true), 1, "enabled");
    const x2nmi = entries.filter(([t]) => t === 10);
    assert.equal(x2nmi.length, cpus > 255 ? 1 : 0);
    if (x2nmi.length) {
      assert.deepEqual([x2nmi[0][1].getUint32(4, true), x2nmi[0][1].getUint8(8)], [0xffff_ffff, 1]);
    }
  }
});

Deno.test("HPET only when the board has one", () => {
  const acpi = buildAcpiTables({ address: 0xe_0000n, cpus: 1, hpetAddress: 0xfed0_0000n });
  const hpet = walk(acpi).get("HPET")!;
  const v = new DataView(hpet.buffer, hpet.byteOffset, hpet.length);
  assert.equal(hpet.length, 56);
  assert.equal(v.getUint32(36, true), 0x8086_a201);
  assert.deepEqual([hpet[40], v.getBigUint64(44, true)], [0, 0xfed0_0000n], "system memory at 0xfed00000");
});

Deno.test("the DSDT's pointers follow the base; the RSDP's bytes do not depend on where it is copied", () => {
  const a = buildAcpiTables({ address: 0xe_0000n, cpus: 2 });
  const b = buildAcpiTables({ address: 0x7fe_0000n, cpus: 2 });
  assert.equal(a.bytes.length, b.bytes.length);
  const delta = 0x7fe_0000n - 0xe_0000n;
  a.tables.forEach((t, i) => assert.equal(b.tables[i].address - t.address, delta));
  walk(b);
});

Deno.test("bad input: one RangeError naming what was wrong", () => {
  const ok = { address: 0xe_0000n, cpus: 1 };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ address: 0xe_0010n }, /address .* 64-byte aligned/],
    [{ address: 0xe0000 }, /address .* bigint/],
    [{ address: 0xffff_ff00n }, /pass 4 GiB/],
    [{ cpus: 0 }, /cpus 0/],
    [{ cpus: 1.5 }, /cpus 1.5/],
    [{ cpus: 65537 }, /cpus 65537/],
    [{ ioapicId: 256 }, /ioapicId 256/],
    [{ pmBase: 0xfffc }, /pmBase/],
    [{ sciIrq: 16 }, /sciIrq 16/],
    [{ sciIrq: 0 }, /sciIrq 0 is the PIT/],
    [{ pciLinkIrqs: [10, 10, 11] }, /PCI link IRQs/],
    [{ isaDevices: [ACPI_COM1, ACPI_COM1] }, /two ISA devices are named COM1/],
    [{ isaDevices: [{ ...ACPI_COM1, hid: "XYZ" }] }, /EISA id/],
    [{ hpetAddress: 0 }, /hpetAddress 0/],
    [{ pciHole: { start: 0xc000_0000n, end: 0x1_0000_0001n } }, /PCI hole/],
  ];
  for (const [change, message] of cases) {
    assert.throws(() => buildAcpiTables({ ...ok, ...change } as never), (e: unknown) => {
      assert.ok(e instanceof RangeError, String(e));
      assert.match(e.message, message);
      assert.ok(!e.message.includes("\n"));
      return true;
    }, `no error for ${Object.keys(change)}`);
  }
});

Deno.test("layoutAcpiTables: the size before the address; each placement is buildAcpiTables' block there", () => {
  const options = {
    cpus: 300,
    hpetAddress: 0xfed0_0000n,
    pciHole: { start: 0x800_0000n, end: 0xfec0_0000n },
  };
  const layout = layoutAcpiTables(options);
  for (
    const address of [0n, 0xe_0000n, 0x7ff_0000n, 0x1_0000_0000n - BigInt(Math.ceil(layout.size / 64) * 64)]
  ) {
    const placed = layout.place(address);
    const built = buildAcpiTables({ ...options, address });
    assert.equal(placed.bytes.length, layout.size);
    assert.deepEqual(placed, built);
  }
  const first = layout.place(0xe_0000n);
  first.bytes.fill(0);
  assert.deepEqual(
    layout.place(0xe_0000n),
    buildAcpiTables({ ...options, address: 0xe_0000n }),
    "a new block each time",
  );
  assert.throws(() => layout.place(0x1_0000_0000n - 0x40n), /pass 4 GiB/);
  assert.throws(() => layout.place(0x20n), /64-byte aligned/);
  assert.throws(() => layoutAcpiTables({ cpus: 0 }), /cpus 0/);
});
