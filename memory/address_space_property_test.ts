import assert from "node:assert/strict";
import fc from "fast-check";
import { AddressSpace } from "./address_space.ts";
import { FlatView } from "./flat_view.ts";
import { MemoryRegion } from "./memory_region.ts";
import type { MemoryRegionOps } from "./memory_region_ops.ts";
import { modelRw } from "./_access_model.ts";

/** Fixed seed: every run checks the same cases; change it to explore others. */
const SEED = 0x5eed_2027;
const TOP = 1n << 64n;
const P53 = 1n << 53n;

/** Where regions and accesses cluster: zero, 4 GiB, both sides of 2^53 (where doubles stop being
 * exact), and the top of the space. */
const ANCHORS = [0n, 0x1_0000_0000n - 0x40n, P53 - 0x40n, P53 + 0x1000n, TOP - 0x100n];
/** Offsets of alias windows into the big targets: small, just below 2^53, far above it. */
const ALIAS_OFFSETS = [0n, P53 - 0x20n, 1n << 55n];

const opsArb = fc.record({
  validMin: fc.constantFrom(0, 1, 2, 4),
  validMax: fc.constantFrom(0, 0, 1, 2, 4, 8),
  validUnaligned: fc.boolean(),
  refuseOdd: fc.boolean(),
  implMin: fc.constantFrom(0, 0, 1, 2, 4, 8),
  implMax: fc.constantFrom(0, 0, 1, 2, 4, 8),
  implUnaligned: fc.boolean(),
  big: fc.boolean(),
  /** Device reads return values wider than the access, or negative, to check the masking. */
  wide: fc.constantFrom(0, 1, 2),
  silent: fc.boolean(),
});

const regionArb = fc.record({
  kind: fc.constantFrom("ram", "ram", "rom", "romd", "romdOff", "io", "io", "alias", "aliasIo"),
  anchor: fc.nat(ANCHORS.length - 1),
  delta: fc.nat(0xc0),
  size: fc.integer({ min: 1, max: 0x80 }),
  priority: fc.integer({ min: -1, max: 2 }),
  readonly: fc.boolean(),
  logged: fc.boolean(),
  aliasOffset: fc.nat(ALIAS_OFFSETS.length - 1),
  aliasDelta: fc.nat(0x40),
  ops: opsArb,
});

type RegionSpec = typeof regionArb extends fc.Arbitrary<infer T> ? T : never;
type OpsSpec = RegionSpec["ops"];

const accessArb = fc.record({
  kind: fc.constantFrom("read", "write", "readBytes", "writeBytes"),
  anchor: fc.nat(ANCHORS.length - 1),
  delta: fc.nat(0x140),
  size: fc.constantFrom(1, 2, 4, 8),
  length: fc.nat(24),
  value: fc.oneof(
    fc.bigInt({ min: -(1n << 70n), max: 1n << 70n }),
    fc.integer({ min: -(2 ** 31), max: 2 ** 32 }),
    fc.constantFrom(-1, 2 ** 53 - 1, -(2 ** 53) + 1, 1e20, -1e20, 0x1_0000_0001),
  ),
  seed: fc.nat(255),
});

/** Deterministic device ops that log every callback to `log`. */
function makeOps(spec: OpsSpec, name: string, log: string[]): MemoryRegionOps {
  const ops: MemoryRegionOps = {
    valid: {
      min: spec.validMin,
      max: spec.validMax,
      unaligned: spec.validUnaligned,
      ...(spec.refuseOdd ? { accepts: (o: number) => o % 3 !== 1 } : {}),
    },
    impl: { min: spec.implMin, max: spec.implMax, unaligned: spec.implUnaligned },
    endianness: spec.big ? "big" : "little",
  };
  if (!spec.silent) {
    ops.read = (o, s) => {
      log.push(`${name} r ${o}/${s}`);
      const v = BigInt(o % 251) * 0x01_0203_0405_0607n + BigInt(s);
      if (s === 8) return spec.wide === 1 ? -v : v;
      const n = Number(v & 0xffff_ffffn);
      return spec.wide === 0 ? n & (2 ** (8 * s) - 1) : spec.wide === 1 ? -n : n * 1024 + 7;
    };
    ops.write = (o, v, s) => void log.push(`${name} w ${o}/${s}=${typeof v}:${v}`);
  }
  return ops;
}

/** One world: a tree built from the specs, with its own RAM and its own device log. */
function build(specs: RegionSpec[]) {
  const log: string[] = [];
  const root = MemoryRegion.container("root", TOP);
  const bigRam = MemoryRegion.ram("big-ram", 1n << 60n);
  const bigIo = MemoryRegion.io("big-io", 1n << 60n, makeOps(specs[0].ops, "big-io", log));
  const rams: MemoryRegion[] = [bigRam];
  specs.forEach((s, i) => {
    const name = `r${i}`;
    let mr: MemoryRegion;
    switch (s.kind) {
      case "ram":
        mr = MemoryRegion.ram(name, s.size);
        if (s.readonly) mr.setReadonly(true);
        break;
      case "rom":
        mr = MemoryRegion.rom(name, s.size);
        break;
      case "romd":
      case "romdOff":
        mr = MemoryRegion.romDevice(name, s.size, makeOps(s.ops, name, log));
        if (s.kind === "romdOff") mr.setRomdMode(false);
        break;
      case "io":
        mr = MemoryRegion.io(name, s.size, makeOps(s.ops, name, log));
        break;
      default: {
        const target = s.kind === "alias" ? bigRam : bigIo;
        mr = MemoryRegion.alias(name, target, ALIAS_OFFSETS[s.aliasOffset] + BigInt(s.aliasDelta), s.size);
      }
    }
    if (mr.hasRamBacking) {
      // Recognisable contents, and dirty logging on some.
      const fill = new Uint8Array(s.size).map((_, j) => (i * 37 + j) & 0xff);
      mr.ramBacking.write(0n, fill);
      if (s.logged) mr.setLog(true);
      rams.push(mr);
    }
    const at = ANCHORS[s.anchor] + BigInt(s.delta);
    const end = at + BigInt(s.size) > TOP ? TOP - BigInt(s.size) : at;
    root.addSubregionOverlap(end, mr, s.priority);
  });
  bigRam.setLog(true);
  return { root, rams, log };
}

function dump(mr: MemoryRegion, at: bigint, length: number): number[] {
  const out = new Uint8Array(length);
  mr.ramBacking.read(at, out);
  return [...out];
}

Deno.test("accesses equal a plain bigint model: bytes, results, device calls and dirty pages", () => {
  fc.assert(
    fc.property(
      fc.array(regionArb, { minLength: 1, maxLength: 10 }),
      fc.array(accessArb, { minLength: 1, maxLength: 40 }),
      (specs, accesses) => {
        const real = build(specs);
        const model = build(specs);
        using as = new AddressSpace(real.root, "real");
        const ranges = FlatView.render(model.root).ranges;
        for (const [n, acc] of accesses.entries()) {
          const base = ANCHORS[acc.anchor] + BigInt(acc.delta);
          const width = acc.kind === "read" || acc.kind === "write" ? acc.size : acc.length;
          const addr = base + BigInt(width) >= TOP ? TOP - BigInt(width || 1) : base;
          const what = `access ${n} (${acc.kind} at 0x${addr.toString(16)})`;
          const bytes = new Uint8Array(width).map((_, j) => (acc.seed + 13 * j) & 0xff);
          if (acc.kind === "read") {
            const got = as.read(addr, acc.size);
            const want = new Uint8Array(acc.size);
            const result = modelRw(ranges, addr, want, false);
            const value = want.reduceRight((v, b) => (v << 8n) | BigInt(b), 0n);
            assert.deepEqual(got, { value, result }, what);
          } else if (acc.kind === "write") {
            const result = as.write(addr, acc.size, acc.value);
            const le = new Uint8Array(8);
            new DataView(le.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(acc.value)), true);
            assert.equal(result, modelRw(ranges, addr, le.subarray(0, acc.size), true), what);
          } else if (acc.kind === "readBytes") {
            const got = as.readBytes(addr, acc.length);
            const want = new Uint8Array(acc.length);
            const result = modelRw(ranges, addr, want, false);
            assert.deepEqual(got, { data: want, result }, what);
          } else {
            const copy = bytes.slice();
            assert.equal(as.writeBytes(addr, bytes), modelRw(ranges, addr, copy, true), what);
          }
          assert.deepEqual(real.log, model.log, what);
        }
        real.rams.forEach((mr, i) => {
          const twin = model.rams[i];
          const size = mr === real.rams[0] ? 0x100 : Number(mr.size);
          for (const at of mr === real.rams[0] ? ALIAS_OFFSETS : [0n]) {
            assert.deepEqual(dump(mr, at, size), dump(twin, at, size), `${mr.name} at 0x${at.toString(16)}`);
          }
          assert.deepEqual(mr.takeDirtyPages(), twin.takeDirtyPages(), `${mr.name} dirty pages`);
        });
      },
    ),
    { seed: SEED, numRuns: 400 },
  );
});
