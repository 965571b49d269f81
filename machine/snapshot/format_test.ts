import assert from "node:assert/strict";
import fc from "fast-check";
import {
  crc32,
  decodeStateFile,
  decodeValue,
  encodeStateFile,
  encodeValue,
  type Section,
  SNAPSHOT_HEADER_SIZE,
  SnapshotFormatError,
  type SnapValue,
  stateFileCrc,
} from "./format.ts";

const snapValue: fc.Arbitrary<SnapValue> = fc.letrec<{ value: SnapValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.double(),
    fc.bigInt({ min: -(1n << 200n), max: 1n << 200n }),
    fc.string({ unit: "grapheme" }),
    fc.uint8Array({ maxLength: 64 }),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(fc.string(), tie("value"), { maxKeys: 4, noNullPrototype: true }),
  ),
})).value;

const sections: fc.Arbitrary<Section[]> = fc.array(
  fc.record({ type: fc.integer({ min: 0, max: 0xffff_ffff }), value: snapValue }, { noNullPrototype: true }),
  { maxLength: 5 },
);

/** A small realistic file: the shape the machine writes. */
function sample(): Uint8Array {
  return encodeStateFile([
    { type: 1, value: { ramSize: 256n << 20n, cpus: 2, firmware: null } },
    { type: 2, value: { regs: { rip: 0xffff_fff0n, rflags: 2n }, lapic: new Uint8Array(1024).fill(7) } },
    { type: 4, value: { "uart@0x3f8": { lcr: 3, fifo: new Uint8Array([1, 2, 3]) } } },
  ]);
}

Deno.test("crc32 is zlib's", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf4_3926);
  assert.equal(crc32(new Uint8Array(0)), 0);
  const all = new TextEncoder().encode("hello, world");
  assert.equal(crc32(all.subarray(5), crc32(all.subarray(0, 5))), crc32(all));
});

/** CRC-32 from its definition, one bit at a time: the model the table-driven crc32 must match. */
function crc32Bitwise(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (const byte of bytes) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (0xedb8_8320 ^ (c >>> 1)) >>> 0 : c >>> 1;
  }
  return ~c >>> 0;
}

Deno.test("crc32 matches the bitwise definition at every length, offset and starting CRC", () => {
  fc.assert(fc.property(
    fc.uint8Array({ maxLength: 100 }),
    fc.nat(7),
    fc.integer({ min: 0, max: 0xffff_ffff }),
    (bytes, skip, start) => {
      // Views that start inside their buffer: the slicing loop must not assume an aligned start.
      const view = bytes.subarray(Math.min(skip, bytes.length));
      assert.equal(crc32(view, start), crc32Bitwise(view, start));
    },
  ));
});

Deno.test("values round-trip exactly (bigints, bytes, -0, NaN, nesting)", () => {
  fc.assert(fc.property(snapValue, (value) => {
    assert.deepEqual(decodeValue(encodeValue(value)), value);
  }));
  assert.ok(Object.is(decodeValue(encodeValue(-0)), -0));
  assert.throws(
    () => encodeValue({ f: (() => 1) as unknown as SnapValue }),
    /value\.f is not a storable value/,
  );
});

Deno.test("state files round-trip", () => {
  fc.assert(fc.property(sections, (s) => {
    assert.deepEqual(decodeStateFile(encodeStateFile(s)), s);
  }));
});

Deno.test("stateFileCrc is the CRC-32 of the whole file, taken from its trailer", () => {
  fc.assert(fc.property(sections, (s) => {
    const bytes = encodeStateFile(s);
    assert.equal(stateFileCrc(bytes), crc32(bytes));
  }));
});

Deno.test("a key named __proto__ is data, not a prototype", () => {
  const value = decodeValue(encodeValue(JSON.parse('{"__proto__": 5}'))) as Record<string, SnapValue>;
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.deepEqual(Object.keys(value), ["__proto__"]);
});

Deno.test("truncation at every byte gives one clean SnapshotFormatError", () => {
  const bytes = sample();
  for (let n = 0; n < bytes.length; n++) {
    assert.throws(
      () => decodeStateFile(bytes.subarray(0, n)),
      (e: unknown) => e instanceof SnapshotFormatError && !e.message.includes("\n"),
      `cut at ${n}`,
    );
  }
  assert.throws(() => decodeStateFile(bytes.subarray(0, 100)), /truncated: 100 of \d+ bytes/);
});

Deno.test("every flipped bit is refused; past the header it is the checksum that says so", () => {
  const bytes = sample();
  for (let i = 0; i < bytes.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const copy = bytes.slice();
      copy[i] ^= 1 << bit;
      let error: unknown;
      try {
        decodeStateFile(copy);
      } catch (e) {
        error = e;
      }
      assert.ok(error instanceof SnapshotFormatError, `byte ${i} bit ${bit} was accepted`);
      if (i >= SNAPSHOT_HEADER_SIZE || (i >= 8 && i < 16)) {
        assert.match(error.message, /CRC-32/, `byte ${i} bit ${bit}: ${error.message}`);
      }
    }
  }
});

Deno.test("another version is refused by name, with a valid checksum", () => {
  const bytes = sample();
  const view = new DataView(bytes.buffer);
  view.setUint32(8, 6, true); // version 6's virtio-blk disks saved a 36-byte configuration
  view.setUint32(bytes.length - 4, crc32(bytes.subarray(0, bytes.length - 4)), true);
  assert.throws(() => decodeStateFile(bytes), /version 6: this build reads version 7 only/);
});

Deno.test("not a state file, and trailing bytes", () => {
  assert.throws(() => decodeStateFile(new TextEncoder().encode("#!/bin/sh\n")), /no "KVMTSNAP" magic/);
  const longer = new Uint8Array(sample().length + 1);
  longer.set(sample());
  assert.throws(() => decodeStateFile(longer), /corrupted: \d+ bytes where its header says/);
});

Deno.test("random bytes after a valid header never throw anything but SnapshotFormatError", () => {
  const head = sample().subarray(0, SNAPSHOT_HEADER_SIZE);
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (tail) => {
    const bytes = new Uint8Array(head.length + tail.length + 4);
    bytes.set(head);
    bytes.set(tail, head.length);
    const view = new DataView(bytes.buffer);
    view.setBigUint64(16, BigInt(bytes.length), true);
    view.setUint32(bytes.length - 4, crc32(bytes.subarray(0, bytes.length - 4)), true);
    try {
      decodeStateFile(bytes);
    } catch (e) {
      assert.ok(e instanceof SnapshotFormatError, String(e));
    }
  }));
});
