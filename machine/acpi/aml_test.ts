import assert from "node:assert/strict";
import fc from "fast-check";
import {
  device,
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
