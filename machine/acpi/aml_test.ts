import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buffer,
  concat,
  device,
  dwordMemory,
  eisaId,
  extendedInterrupt,
  integer,
  ioPort,
  irqNoFlags,
  method,
  name,
  nameString,
  packageOf,
  pkgLength,
  resourceTemplate,
  returnOf,
  scope,
  wordBusNumber,
  wordIo,
} from "./aml.ts";

/** Decodes a PkgLength as ACPI 6.5 §20.2.4 defines it: [value, bytes used]. */
function decodePkgLength(bytes: Uint8Array): [number, number] {
  const lead = bytes[0];
  const follow = lead >> 6;
  if (follow === 0) return [lead & 0x3f, 1];
  let value = lead & 0x0f;
  for (let i = 0; i < follow; i++) value += bytes[1 + i] * 2 ** (4 + 8 * i);
  return [value, 1 + follow];
}

Deno.test("pkgLength: one byte up to 63 in all, then 2, 3 and 4 bytes, always counting itself", () => {
  assert.deepEqual([...pkgLength(0)], [1]);
  assert.deepEqual([...pkgLength(62)], [63]);
  // 63 body bytes + 2 length bytes = 65 = 0x41: lead 0x40 | 1, then 0x41 >> 4 = 4.
  assert.deepEqual([...pkgLength(63)], [0x41, 0x04]);
  assert.deepEqual([...pkgLength(0xffd)], [0x4f, 0xff]); // 0xfff in two bytes
  assert.deepEqual([...pkgLength(0xffe)], [0x81, 0x00, 0x01]); // 0x1001 needs three
  assert.throws(() => pkgLength(2 ** 28), /PkgLength|0-0x/);
  fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 28 - 5 }), (body) => {
    const encoded = pkgLength(body);
    const [value, used] = decodePkgLength(encoded);
    assert.equal(used, encoded.length);
    assert.equal(value, body + encoded.length);
  }));
});

Deno.test("nameString: segments padded with _, root and parent prefixes, dual and multi names", () => {
  const ascii = (b: Uint8Array) => String.fromCharCode(...b);
  assert.equal(ascii(nameString("MOU")), "MOU_");
  assert.equal(ascii(nameString("\\_S5")), "\\_S5_");
  assert.equal(ascii(nameString("^^PCI0")), "^^PCI0");
  assert.equal(ascii(nameString("\\_SB.PCI0")), "\\\x2e_SB_PCI0");
  assert.equal(ascii(nameString("_SB.PCI0.ISA")), "\x2f\x03_SB_PCI0ISA_");
  assert.deepEqual([...nameString("\\")], [0x5c, 0x00]);
  for (const bad of ["pci0", "0ABC", "ABCDE", "A.B-C", "PCI0..ISA"]) {
    assert.throws(() => nameString(bad), RangeError, bad);
  }
});

Deno.test("integer: shortest of Zero, One, Ones, Byte, Word, DWord, QWord", () => {
  assert.deepEqual([...integer(0)], [0x00]);
  assert.deepEqual([...integer(1)], [0x01]);
  assert.deepEqual([...integer(0xffff_ffff_ffff_ffffn)], [0xff]);
  assert.deepEqual([...integer(2)], [0x0a, 2]);
  assert.deepEqual([...integer(0x100)], [0x0b, 0x00, 0x01]);
  assert.deepEqual([...integer(0x0001_0000)], [0x0c, 0x00, 0x00, 0x01, 0x00]);
  assert.deepEqual([...integer(0x1_0000_0000n)], [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  assert.throws(() => integer(-1), RangeError);
  assert.throws(() => integer(1n << 64n), RangeError);
});

Deno.test("eisaId: compressed PNP ids as iasl's EisaId() encodes them", () => {
  // Values from ACPI tables compiled by iasl (the DSDTs of QEMU and of real PCs).
  assert.equal(eisaId("PNP0A03"), 0x030a_d041);
  assert.equal(eisaId("PNP0501"), 0x0105_d041);
  assert.equal(eisaId("PNP0303"), 0x0303_d041);
  assert.equal(eisaId("PNP0B00"), 0x000b_d041);
  assert.throws(() => eisaId("PNP0A0"), /EISA id/);
  assert.throws(() => eisaId("pnp0a03"), /EISA id/);
});

Deno.test("terms: opcodes and lengths of Name, Package, Scope, Device, Method, Return", () => {
  assert.deepEqual([...name("_ADR", integer(0))], [0x08, 0x5f, 0x41, 0x44, 0x52, 0x00]);
  // Package(2){1, 2}: PackageOp, PkgLength 5, NumElements 2, One, BytePrefix 2.
  assert.deepEqual([...packageOf([integer(1), integer(2)])], [0x12, 0x05, 0x02, 0x01, 0x0a, 0x02]);
  assert.throws(() => packageOf(Array.from({ length: 256 }, () => integer(0))), /255|VarPackage/);
  // Method(_STA, 0){Return(0x0F)}: MethodOp, PkgLength 8, "_STA", flags 0, ReturnOp, 0x0A 0x0F.
  assert.deepEqual(
    [...method("_STA", 0, [returnOf(integer(0x0f))])],
    [0x14, 0x09, 0x5f, 0x53, 0x54, 0x41, 0x00, 0xa4, 0x0a, 0x0f],
  );
  assert.equal(method("_SRS", 1, [], true)[6], 0x09); // one argument, serialized
  assert.throws(() => method("_SRS", 8, []), RangeError);
  const d = device("COM1");
  assert.deepEqual([...d], [0x5b, 0x82, 0x05, 0x43, 0x4f, 0x4d, 0x31]);
  assert.deepEqual([...scope("\\")], [0x10, 0x03, 0x5c, 0x00]);
});

Deno.test("resource descriptors: IO, IRQNoFlags, Interrupt and the end tag", () => {
  assert.deepEqual([...ioPort(0x3f8, 0x3f8, 0, 8)], [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08]);
  assert.deepEqual([...irqNoFlags([4])], [0x22, 0x10, 0x00]);
  assert.deepEqual([...irqNoFlags([1, 12])], [0x22, 0x02, 0x10]);
  assert.throws(() => irqNoFlags([16]), RangeError);
  assert.throws(() => ioPort(0x10000, 0, 0, 1), RangeError);
  // Interrupt(ResourceConsumer, Level, ActiveHigh, Shared){10}: flags 0x09.
  assert.deepEqual(
    [...extendedInterrupt({ trigger: "level", polarity: "high", shared: true }, [10])],
    [0x89, 0x06, 0x00, 0x09, 0x01, 0x0a, 0x00, 0x00, 0x00],
  );
  assert.equal(extendedInterrupt({ trigger: "edge", polarity: "low", shared: false }, [1])[3], 0x07);
  assert.throws(() => extendedInterrupt({ trigger: "edge", polarity: "low", shared: false }, []), RangeError);
  // BufferOp, PkgLength 8 (itself, BufferSize 0x0a 0x05, 5 bytes), IRQNoFlags{8}, end tag.
  const template = resourceTemplate(irqNoFlags([8]));
  assert.deepEqual([...template], [0x11, 0x08, 0x0a, 0x05, 0x22, 0x00, 0x01, 0x79, 0x00]);
});

// A model of the encoder written straight from the grammar (ACPI 6.5 §20.2), plain arrays and
// bigints, for the property below: the encoder must give the same bytes for any term tree.
const modelPkgLength = (body: number): number[] => {
  if (body + 1 <= 0x3f) return [body + 1];
  for (let extra = 1; extra <= 3; extra++) {
    const total = body + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const out = [(extra << 6) | (total % 16)];
      for (let i = 0; i < extra; i++) out.push(Math.floor(total / 2 ** (4 + 8 * i)) % 256);
      return out;
    }
  }
  throw new RangeError("too long");
};
const modelPackaged = (ops: number[], body: number[]) => [...ops, ...modelPkgLength(body.length), ...body];
const modelNameString = (path: string): number[] => {
  const prefix = /^(\\|\^*)/.exec(path)![0];
  const rest = path.slice(prefix.length);
  const chars = [...prefix].map((c) => c.charCodeAt(0));
  if (rest === "") return [...chars, 0];
  const segs = rest.split(".").map((s) => [...s.padEnd(4, "_")].map((c) => c.charCodeAt(0)));
  const lead = segs.length === 1 ? [] : segs.length === 2 ? [0x2e] : [0x2f, segs.length];
  return [...chars, ...lead, ...segs.flat()];
};
const modelInteger = (value: bigint): number[] => {
  if (value === 0n) return [0x00];
  if (value === 1n) return [0x01];
  if (value === 2n ** 64n - 1n) return [0xff];
  const [prefix, bytes] = value < 2n ** 8n
    ? [0x0a, 1]
    : value < 2n ** 16n
    ? [0x0b, 2]
    : value < 2n ** 32n
    ? [0x0c, 4]
    : [0x0e, 8];
  return [prefix, ...Array.from({ length: bytes }, (_, i) => Number((value >> BigInt(8 * i)) & 0xffn))];
};

type Term =
  | { kind: "integer"; value: bigint; asNumber: boolean }
  | { kind: "name-string"; path: string }
  | { kind: "buffer"; bytes: Uint8Array }
  | { kind: "name"; path: string; object: Term }
  | { kind: "package" | "return"; children: Term[] }
  | { kind: "scope" | "device"; path: string; children: Term[] }
  | { kind: "method"; path: string; args: number; serialized: boolean; children: Term[] };

function encode(t: Term): Uint8Array {
  switch (t.kind) {
    case "integer":
      return integer(t.asNumber ? Number(t.value) : t.value);
    case "name-string":
      return nameString(t.path);
    case "buffer":
      return buffer(t.bytes);
    case "name":
      return name(t.path, encode(t.object));
    case "package":
      return packageOf(t.children.map(encode));
    case "return":
      return returnOf(concat(...t.children.map(encode)));
    case "scope":
      return scope(t.path, ...t.children.map(encode));
    case "device":
      return device(t.path, ...t.children.map(encode));
    case "method":
      return method(t.path, t.args, t.children.map(encode), t.serialized);
  }
}

function model(t: Term): number[] {
  const all = (children: Term[]) => children.flatMap(model);
  switch (t.kind) {
    case "integer":
      return modelInteger(t.value);
    case "name-string":
      return modelNameString(t.path);
    case "buffer":
      return modelPackaged([0x11], [...modelInteger(BigInt(t.bytes.length)), ...t.bytes]);
    case "name":
      return [0x08, ...modelNameString(t.path), ...model(t.object)];
    case "package":
      return modelPackaged([0x12], [t.children.length, ...all(t.children)]);
    case "return":
      return [0xa4, ...all(t.children)];
    case "scope":
      return modelPackaged([0x10], [...modelNameString(t.path), ...all(t.children)]);
    case "device":
      return modelPackaged([0x5b, 0x82], [...modelNameString(t.path), ...all(t.children)]);
    case "method":
      return modelPackaged(
        [0x14],
        [...modelNameString(t.path), t.args | (t.serialized ? 8 : 0), ...all(t.children)],
      );
  }
}

const segment = fc.tuple(
  fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZ_"),
  fc.string({ unit: fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"), maxLength: 3 }),
).map(([first, rest]) => first + rest);
const path = fc.tuple(
  fc.oneof(
    fc.constant(""),
    fc.constant("\\"),
    fc.string({ unit: fc.constant("^"), minLength: 1, maxLength: 3 }),
  ),
  fc.array(segment, { maxLength: 6 }),
).map(([prefix, segs]) => prefix + segs.join("."));
const terms = fc.letrec<{ term: Term }>((tie) => ({
  term: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((value) => ({
        kind: "integer" as const,
        value,
        asNumber: false,
      })),
      fc.constantFrom(0n, 1n, 0xffn, 0x100n, 0xffffn, 0x1_0000n, 0xffff_ffffn, 0x1_0000_0000n, 2n ** 64n - 1n)
        .map((value) => ({ kind: "integer" as const, value, asNumber: false })),
      fc.maxSafeNat().map((n) => ({ kind: "integer" as const, value: BigInt(n), asNumber: true })),
    ),
    path.map((p) => ({ kind: "name-string" as const, path: p })),
    fc.uint8Array({ maxLength: 5000 }).map((bytes) => ({ kind: "buffer" as const, bytes })),
    fc.record({ kind: fc.constant("name" as const), path, object: tie("term") }),
    fc.record({
      kind: fc.constantFrom("package" as const, "return" as const),
      children: fc.array(tie("term"), { maxLength: 5 }),
    }),
    fc.record({
      kind: fc.constantFrom("scope" as const, "device" as const),
      path,
      children: fc.array(tie("term"), { maxLength: 5 }),
    }),
    fc.record({
      kind: fc.constant("method" as const),
      path,
      args: fc.integer({ min: 0, max: 7 }),
      serialized: fc.boolean(),
      children: fc.array(tie("term"), { maxLength: 5 }),
    }),
  ),
})).term;

Deno.test("every term tree encodes as the grammar's plain model says", () => {
  fc.assert(
    fc.property(terms, (t) => {
      assert.deepEqual([...encode(t)], model(t));
    }),
    { numRuns: 500 },
  );
});

Deno.test("resource descriptors encode as their plain models say", () => {
  const le = (value: number, bytes: number) =>
    Array.from({ length: bytes }, (_, i) => Math.floor(value / 2 ** (8 * i)) % 256);
  const window = (
    tag: number,
    width: number,
    type: number,
    general: number,
    flags: number,
    min: number,
    max: number,
  ) => {
    const body = [
      type,
      general,
      flags,
      ...le(0, width),
      ...le(min, width),
      ...le(max, width),
      ...le(0, width),
      ...le(max - min + 1, width),
    ];
    return [tag, ...le(body.length, 2), ...body];
  };
  const u16 = fc.integer({ min: 0, max: 0xffff });
  const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
  fc.assert(
    fc.property(
      u16,
      u16,
      fc.integer({ min: 0, max: 0xff }),
      fc.integer({ min: 0, max: 0xff }),
      (min, max, align, length) => {
        assert.deepEqual([...ioPort(min, max, align, length)], [
          0x47,
          1,
          ...le(min, 2),
          ...le(max, 2),
          align,
          length,
        ]);
      },
    ),
  );
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 15 })), (irqs) => {
    const mask = irqs.reduce((m, irq) => m | (1 << irq), 0);
    assert.deepEqual([...irqNoFlags(irqs)], [0x22, ...le(mask, 2)]);
  }));
  fc.assert(fc.property(
    fc.record({
      trigger: fc.constantFrom("level" as const, "edge" as const),
      polarity: fc.constantFrom("high" as const, "low" as const),
      shared: fc.boolean(),
    }),
    fc.array(u32, { minLength: 1, maxLength: 255 }),
    (flags, gsis) => {
      const bits = 1 | (flags.trigger === "edge" ? 2 : 0) | (flags.polarity === "low" ? 4 : 0) |
        (flags.shared ? 8 : 0);
      const body = [bits, gsis.length, ...gsis.flatMap((g) => le(g, 4))];
      assert.deepEqual([...extendedInterrupt(flags, gsis)], [0x89, ...le(body.length, 2), ...body]);
    },
  ));
  fc.assert(fc.property(u16, u16, (a, b) => {
    const [min, max] = a <= b ? [a, b] : [b, a];
    assert.deepEqual([...wordBusNumber(min, max)], window(0x88, 2, 2, 0x0c, 0, min, max));
    assert.deepEqual([...wordIo(min, max)], window(0x88, 2, 1, 0x0c, 3, min, max));
  }));
  fc.assert(fc.property(u32, u32, fc.boolean(), (a, b, cacheable) => {
    const [min, max] = a <= b ? [a, b] : [b, a];
    assert.deepEqual(
      [...dwordMemory(min, max, cacheable)],
      window(0x87, 4, 0, 0x0c, cacheable ? 3 : 1, min, max),
    );
  }));
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 5 }), (descriptors) => {
    const inner = [...descriptors.flatMap((d) => [...d]), 0x79, 0];
    assert.deepEqual(
      [...resourceTemplate(...descriptors)],
      modelPackaged([0x11], [...modelInteger(BigInt(inner.length)), ...inner]),
    );
  }));
});
