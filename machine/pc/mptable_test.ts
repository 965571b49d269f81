import assert from "node:assert/strict";
import {
  buildMpTable,
  type IsaIrqRoute,
  MP_SCAN_START,
  MP_TABLE_END,
  MP_TABLE_MAX_CPUS,
  type MpTable,
  PC_ISA_IRQ_ROUTES,
} from "./mptable.ts";

// An independent reader of what a guest sees, written from the MP spec 1.4 chapter 4 layouts and
// the checks of Linux's mpparse.c (smp_scan_config, smp_check_mpc).

interface Processor {
  apicId: number;
  version: number;
  enabled: boolean;
  bsp: boolean;
  signature: number;
  features: number;
}
interface IoInterrupt {
  type: number;
  polarity: number;
  trigger: number;
  bus: number;
  irq: number;
  ioapic: number;
  pin: number;
}
interface LocalInterrupt {
  type: number;
  flags: number;
  bus: number;
  irq: number;
  lapic: number;
  lint: number;
}
interface Parsed {
  floatingSum: number;
  physptr: number;
  length: number;
  floatingRevision: number;
  features: number[];
  tableSum: number;
  tableLength: number;
  tableRevision: number;
  oem: string;
  product: string;
  oemPointer: number;
  oemSize: number;
  entryCount: number;
  lapicAddress: number;
  extendedLength: number;
  types: number[];
  processors: Processor[];
  buses: { id: number; type: string }[];
  ioapics: { id: number; version: number; enabled: boolean; address: number }[];
  ioInterrupts: IoInterrupt[];
  localInterrupts: LocalInterrupt[];
}

const text = (bytes: Uint8Array) => String.fromCharCode(...bytes);
const sum = (bytes: Uint8Array) => bytes.reduce((a, b) => a + b, 0) & 0xff;

/** Reads the table the way a guest would: by guest-physical address, following the pointers. */
function parse(table: MpTable): Parsed {
  const memory = (address: number, size: number) => {
    const offset = address - Number(table.address);
    assert.ok(
      offset >= 0 && offset + size <= table.bytes.length,
      `0x${address.toString(16)} is in the block`,
    );
    return table.bytes.subarray(offset, offset + size);
  };
  const floating = memory(Number(table.floatingPointerAddress), 16);
  const fv = new DataView(floating.buffer, floating.byteOffset, 16);
  assert.equal(text(floating.subarray(0, 4)), "_MP_");
  const physptr = fv.getUint32(4, true);
  const header = memory(physptr, 44);
  const hv = new DataView(header.buffer, header.byteOffset, 44);
  assert.equal(text(header.subarray(0, 4)), "PCMP");
  const tableLength = hv.getUint16(4, true);
  const base = memory(physptr, tableLength);
  const bv = new DataView(base.buffer, base.byteOffset, tableLength);
  const parsed: Parsed = {
    floatingSum: sum(floating),
    physptr,
    length: fv.getUint8(8),
    floatingRevision: fv.getUint8(9),
    features: [...floating.subarray(11, 16)],
    tableSum: sum(base),
    tableLength,
    tableRevision: hv.getUint8(6),
    oem: text(header.subarray(8, 16)),
    product: text(header.subarray(16, 28)),
    oemPointer: hv.getUint32(28, true),
    oemSize: hv.getUint16(32, true),
    entryCount: hv.getUint16(34, true),
    lapicAddress: hv.getUint32(36, true),
    extendedLength: hv.getUint16(40, true),
    types: [],
    processors: [],
    buses: [],
    ioapics: [],
    ioInterrupts: [],
    localInterrupts: [],
  };
  let at = 44;
  while (at < tableLength) {
    const type = bv.getUint8(at);
    parsed.types.push(type);
    switch (type) {
      case 0: {
        const flags = bv.getUint8(at + 3);
        parsed.processors.push({
          apicId: bv.getUint8(at + 1),
          version: bv.getUint8(at + 2),
          enabled: (flags & 1) !== 0,
          bsp: (flags & 2) !== 0,
          signature: bv.getUint32(at + 4, true),
          features: bv.getUint32(at + 8, true),
        });
        assert.deepEqual([...base.subarray(at + 12, at + 20)], new Array(8).fill(0), "reserved bytes");
        at += 20;
        continue;
      }
      case 1:
        parsed.buses.push({ id: bv.getUint8(at + 1), type: text(base.subarray(at + 2, at + 8)) });
        break;
      case 2:
        parsed.ioapics.push({
          id: bv.getUint8(at + 1),
          version: bv.getUint8(at + 2),
          enabled: (bv.getUint8(at + 3) & 1) !== 0,
          address: bv.getUint32(at + 4, true),
        });
        break;
      case 3: {
        const flags = bv.getUint16(at + 2, true);
        parsed.ioInterrupts.push({
          type: bv.getUint8(at + 1),
          polarity: flags & 3,
          trigger: (flags >> 2) & 3,
          bus: bv.getUint8(at + 4),
          irq: bv.getUint8(at + 5),
          ioapic: bv.getUint8(at + 6),
          pin: bv.getUint8(at + 7),
        });
        break;
      }
      case 4:
        parsed.localInterrupts.push({
          type: bv.getUint8(at + 1),
          flags: bv.getUint16(at + 2, true),
          bus: bv.getUint8(at + 4),
          irq: bv.getUint8(at + 5),
          lapic: bv.getUint8(at + 6),
          lint: bv.getUint8(at + 7),
        });
        break;
      default:
        assert.fail(`unknown entry type ${type} at table offset ${at}`);
    }
    at += 8;
  }
  assert.equal(at, tableLength, "the entries end exactly at the base table length");
  return parsed;
}

Deno.test("MP table for 4 CPUs: floating pointer and header as Linux's mpparse checks them", () => {
  const table = buildMpTable({ cpus: 4 });
  const p = parse(table);
  assert.equal(table.floatingPointerAddress, 0x9fff0n);
  assert.equal(table.address, 0x9fed0n, "the table right below the pointer, on a paragraph");
  assert.equal(p.floatingSum, 0, "floating pointer checksum");
  assert.equal(p.length, 1, "one 16-byte paragraph");
  assert.equal(p.floatingRevision, 4);
  assert.deepEqual(p.features, [0, 0, 0, 0, 0], "feature byte 1 = 0: a configuration table is present");
  assert.equal(p.physptr, 0x9fed0);
  assert.equal(BigInt(p.physptr), table.configTableAddress);
  assert.equal(p.tableSum, 0, "base table checksum");
  assert.equal(p.tableRevision, 4);
  assert.equal(p.oem, "KVM-TS  ");
  assert.equal(p.product.length, 12);
  assert.equal(p.oemPointer, 0);
  assert.equal(p.oemSize, 0);
  assert.equal(p.lapicAddress, 0xfee00000);
  assert.equal(p.extendedLength, 0);
  const gap = table.floatingPointerAddress - (table.configTableAddress + BigInt(p.tableLength));
  assert.ok(gap >= 0n && gap < 16n, "the base table ends within a paragraph below the pointer");
  assert.equal(table.size, BigInt(table.bytes.length));
  assert.equal(p.entryCount, p.types.length);
  assert.equal(p.entryCount, table.entryCount);
  assert.equal(p.entryCount, 4 + 1 + 1 + 15 + 2);
  assert.deepEqual(p.types, [...p.types].sort((a, b) => a - b), "entries in ascending type order");
});

Deno.test("MP table: one enabled processor per vCPU, APIC id = index, BSP flag only on vCPU 0", () => {
  for (const cpus of [1, 2, 4, 8]) {
    const p = parse(buildMpTable({ cpus }));
    assert.equal(p.processors.length, cpus);
    p.processors.forEach((cpu, index) => {
      assert.equal(cpu.apicId, index);
      assert.equal(cpu.version, 0x14);
      assert.ok(cpu.enabled, `vCPU ${index} enabled`);
      assert.equal(cpu.bsp, index === 0, `BSP flag of vCPU ${index}`);
      assert.equal(cpu.signature, 0x600);
      assert.equal(cpu.features & 0x200, 0x200, "CPUID.1:EDX.APIC");
    });
  }
});

Deno.test("MP table: ISA bus, the IOAPIC, ISA IRQs with IRQ 0 on pin 2, virtual-wire LINT0/LINT1", () => {
  const p = parse(buildMpTable({ cpus: 4 }));
  assert.deepEqual(p.buses, [{ id: 0, type: "ISA   " }]);
  assert.deepEqual(p.ioapics, [{ id: 4, version: 0x11, enabled: true, address: 0xfec00000 }]);
  const pinOf = new Map(p.ioInterrupts.map((entry) => [entry.irq, entry.pin]));
  assert.equal(pinOf.get(0), 2, "the PIT's IRQ 0 arrives on pin 2");
  assert.equal(pinOf.has(2), false, "IRQ 2 (the cascade) has no entry: pin 2 is IRQ 0's");
  for (let irq = 1; irq < 16; irq++) if (irq !== 2) assert.equal(pinOf.get(irq), irq, `IRQ ${irq}`);
  assert.equal(p.ioInterrupts.length, 15);
  for (const entry of p.ioInterrupts) {
    assert.deepEqual(
      [entry.type, entry.polarity, entry.trigger, entry.bus, entry.ioapic],
      [0, 0, 0, 0, 4],
      `IRQ ${entry.irq}: INT, conforming, from bus 0 to IOAPIC 4`,
    );
  }
  assert.deepEqual(p.localInterrupts, [
    { type: 3, flags: 0, bus: 0, irq: 0, lapic: 0xff, lint: 0 },
    { type: 1, flags: 0, bus: 0, irq: 0, lapic: 0xff, lint: 1 },
  ]);
});

Deno.test("MP table: the pointer in the paragraph Linux scans, the block up to 640 KiB, 1 to 254 CPUs", () => {
  assert.equal(MP_TABLE_MAX_CPUS, 254);
  for (let cpus = 1; cpus <= MP_TABLE_MAX_CPUS; cpus++) {
    const table = buildMpTable({ cpus });
    const p = parse(table);
    assert.equal(p.floatingSum, 0, `${cpus} CPUs: floating checksum`);
    assert.equal(p.tableSum, 0, `${cpus} CPUs: table checksum`);
    assert.equal(p.processors.length, cpus);
    assert.equal(table.address % 16n, 0n, "Linux looks at 16-byte boundaries");
    assert.equal(table.address + table.size, MP_TABLE_END, "the block ends at 640 KiB");
    assert.ok(table.floatingPointerAddress >= MP_SCAN_START, "in smp_scan_config(639 * 0x400, 0x400)");
    if (cpus <= 40) assert.ok(table.address >= MP_SCAN_START, `${cpus} CPUs: all in the last KiB`);
  }
  assert.throws(() => buildMpTable({ cpus: 255 }), /cpus/);
});

Deno.test("MP table: options for the IOAPIC, the addresses, the ISA wiring and CPU identity", () => {
  const routes: IsaIrqRoute[] = [
    { irq: 0, pin: 0 },
    { irq: 4, pin: 4 },
    { irq: 9, pin: 9, polarity: "low", trigger: "level" },
  ];
  const p = parse(buildMpTable({
    cpus: 2,
    ioapicId: 9,
    ioapicAddress: 0xfec01000,
    lapicAddress: 0xfee10000n,
    isaIrqs: routes,
    cpuSignature: 0x806f8,
    cpuFeatures: 0x178bfbff,
  }));
  assert.equal(p.tableSum, 0);
  assert.deepEqual(p.ioapics, [{ id: 9, version: 0x11, enabled: true, address: 0xfec01000 }]);
  assert.equal(p.lapicAddress, 0xfee10000);
  assert.deepEqual(p.ioInterrupts.map((e) => [e.irq, e.pin, e.polarity, e.trigger, e.ioapic]), [
    [0, 0, 0, 0, 9],
    [4, 4, 0, 0, 9],
    [9, 9, 3, 3, 9],
  ]);
  assert.deepEqual(p.processors.map((c) => [c.signature, c.features]), [[0x806f8, 0x178bfbff], [
    0x806f8,
    0x178bfbff,
  ]]);
  assert.equal(PC_ISA_IRQ_ROUTES.length, 15);
});

Deno.test("MP table: bad options are RangeErrors naming the field", () => {
  const bad: [Parameters<typeof buildMpTable>[0], RegExp][] = [
    [{ cpus: 0 }, /cpus 0 is outside 1–254/],
    [{ cpus: 1.5 }, /cpus 1\.5 is not an integer/],
    [{ cpus: 4, ioapicId: 3 }, /ioapicId 3 is the APIC id of vCPU 3/],
    [{ cpus: 4, ioapicId: 256 }, /ioapicId 256 is outside/],
    [{ cpus: 1, lapicAddress: 0 }, /lapicAddress 0x0 is not a nonzero 32-bit address/],
    [{ cpus: 1, ioapicAddress: 0x1_0000_0000n }, /ioapicAddress 0x100000000/],
    [{ cpus: 1, isaIrqs: [{ irq: 16, pin: 16 }] }, /ISA IRQ 16 is outside 0–15/],
    [{ cpus: 1, isaIrqs: [{ irq: 1, pin: 24 }] }, /IOAPIC pin of ISA IRQ 1 24 is outside 0–23/],
    [{ cpus: 1, isaIrqs: [{ irq: 1, pin: 1 }, { irq: 1, pin: 3 }] }, /ISA IRQ 1 is routed twice/],
    [{ cpus: 1, isaIrqs: [{ irq: 0, pin: 2 }, { irq: 2, pin: 2 }] }, /pin 2 is given two ISA IRQs/],
  ];
  for (const [options, message] of bad) {
    assert.throws(() => buildMpTable(options), { name: "RangeError", message });
  }
});
