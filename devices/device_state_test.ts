import assert from "node:assert/strict";
import fc from "fast-check";
import {
  DeviceStateError,
  isPlainState,
  type StateObject,
  StateReader,
  type StateValue,
} from "./device_state.ts";

/** Any StateValue, a few levels deep. */
const stateValue: fc.Arbitrary<StateValue> = fc.letrec<{ value: StateValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.bigInt(),
    fc.string(),
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 8 }),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 4 }), tie("value"), { maxKeys: 3 }),
  ),
})).value;

type Kind = "int" | "bigint" | "bool" | "string" | "bytes" | "array" | "object";

/** The kind of reader that accepts `value`'s type, or null if none does. */
function kindOf(value: StateValue | undefined): Kind | null {
  if (typeof value === "number") return Number.isInteger(value) ? "int" : null;
  if (typeof value === "bigint") return "bigint";
  if (typeof value === "boolean") return "bool";
  if (typeof value === "string") return "string";
  if (value instanceof Uint8Array) return "bytes";
  if (Array.isArray(value)) return "array";
  if (value !== null && typeof value === "object") return "object";
  return null;
}

/** Reads `field` with the reader for `kind`, with ranges wide enough to accept any value of that type. */
function readAs(r: StateReader, kind: Kind, field: string): unknown {
  switch (kind) {
    case "int":
      return r.int(field, -Number.MAX_VALUE, Number.MAX_VALUE);
    case "bigint":
      return r.bigint(field, { min: -(2n ** 4096n), max: 2n ** 4096n });
    case "bool":
      return r.bool(field);
    case "string":
      return r.string(field);
    case "bytes":
      return r.bytes(field);
    case "array":
      return r.array(field);
    case "object":
      return r.object(field);
  }
}

const KINDS: readonly Kind[] = ["int", "bigint", "bool", "string", "bytes", "array", "object"];

/** Asserts `fn` throws a one-line DeviceStateError naming `device` and `field`. */
function assertRefused(fn: () => unknown, device: string, field: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DeviceStateError, String(e));
    assert.equal(e.device, device);
    assert.equal(e.field, field);
    assert.ok(e.message.startsWith(`${device}: state field "${field}" `), e.message);
    assert.ok(!/[\r\n]/.test(e.message), "one line");
    return true;
  });
}

Deno.test("StateReader: every reader refuses every value of another type, one line naming device and field", () => {
  fc.assert(
    fc.property(
      stateValue,
      fc.constantFrom(...KINDS),
      fc.string({ minLength: 1, maxLength: 12 }),
      (value, kind, field) => {
        fc.pre(kindOf(value) !== kind);
        const r = new StateReader("dev@0x10", { [field]: value });
        assertRefused(() => readAs(r, kind, field), "dev@0x10", field);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("StateReader: every reader accepts a value of its type and returns it", () => {
  fc.assert(
    fc.property(stateValue, (value) => {
      const kind = kindOf(value);
      fc.pre(kind !== null);
      const r = new StateReader("dev", { f: value });
      const read = readAs(r, kind!, "f");
      if (kind === "array" || kind === "object") {
        assert.ok(read instanceof StateReader || Array.isArray(read));
      } else assert.deepEqual(read, value);
    }),
  );
});

Deno.test("StateReader: a missing field is refused, also with a field of another name present", () => {
  fc.assert(
    fc.property(fc.constantFrom(...KINDS), stateValue, (kind, other) => {
      const r = new StateReader("pm", { other });
      assertRefused(() => readAs(r, kind, "wanted"), "pm", "wanted");
    }),
  );
  // Inherited properties are not fields.
  assertRefused(() => new StateReader("pm", {}).string("toString"), "pm", "toString");
});

Deno.test("StateReader: integer ranges, with the value and the range in the message", () => {
  fc.assert(
    fc.property(fc.integer({ min: -1000, max: 0x1_0000_0000 + 5 }), (n) => {
      const r = new StateReader("uart", { x: n });
      for (const [read, max] of [[r.u8, 0xff], [r.u16, 0xffff], [r.u32, 0xffff_ffff]] as const) {
        if (n >= 0 && n <= max) assert.equal(read.call(r, "x"), n);
        else assertRefused(() => read.call(r, "x"), "uart", "x");
      }
    }),
  );
  assert.throws(() => new StateReader("uart", { lcr: 256 }).u8("lcr"), {
    message: 'uart: state field "lcr" is 256, not in 0..255',
  });
  assert.throws(() => new StateReader("uart", { lcr: 1.5 }).u8("lcr"), /not an integer/);
  assert.equal(new StateReader("q", { n: -3 }).int("n", -5, 5), -3);
});

Deno.test("StateReader: bigint ranges default to unsigned 64-bit", () => {
  const r = new StateReader("bar", { a: 2n ** 64n, b: -1n, c: 5n });
  assertRefused(() => r.bigint("a"), "bar", "a");
  assertRefused(() => r.bigint("b"), "bar", "b");
  assert.equal(r.bigint("c", { min: 5n, max: 5n }), 5n);
  assertRefused(() => r.bigint("c", { max: 4n }), "bar", "c");
});

Deno.test("StateReader: bytes with exact, maximum and minimum length; a copy is returned", () => {
  const data = new Uint8Array([1, 2, 3]);
  const r = new StateReader("cmos", { d: data });
  assert.deepEqual(r.bytes("d", { length: 3 }), data);
  assertRefused(() => r.bytes("d", { length: 4 }), "cmos", "d");
  assertRefused(() => r.bytes("d", { maxLength: 2 }), "cmos", "d");
  assertRefused(() => r.bytes("d", { minLength: 4 }), "cmos", "d");
  const copy = r.bytes("d");
  copy[0] = 9;
  assert.equal(data[0], 1, "the state is not aliased");
  // Only Uint8Array counts as bytes.
  assertRefused(() => new StateReader("cmos", { d: [1, 2] }).bytes("d"), "cmos", "d");
  const other = new Uint16Array(2) as unknown as StateValue;
  assertRefused(() => new StateReader("cmos", { d: other }).bytes("d"), "cmos", "d");
});

Deno.test("StateReader: strings with allowed values and a maximum length", () => {
  const r = new StateReader("kbd", { mode: "scan", long: "x".repeat(500) });
  assert.equal(r.string("mode", { oneOf: ["scan", "echo"] }), "scan");
  assertRefused(() => r.string("mode", { oneOf: ["echo"] }), "kbd", "mode");
  assertRefused(() => r.string("long", { maxLength: 10 }), "kbd", "long");
  // A hostile string cannot stretch the message over lines or pages.
  const evil = new StateReader("kbd", { m: "a\nb".repeat(200) });
  assert.throws(() => evil.string("m", { oneOf: ["x"] }), (e: Error) => !e.message.includes("\n"));
});

Deno.test("StateReader: nested objects and arrays name the full path", () => {
  const state: StateObject = {
    queues: [{ size: 256, vec: 1 }, { size: 300, vec: 2 }],
    common: { select: 1, sub: { v: "x" } },
    regs: [1, 2, 300],
  };
  const r = new StateReader("virtio-blk@00:02.0", state);
  const queues = r.array("queues", { maxLength: 8 });
  assert.equal(queues.length, 2);
  assert.equal(queues[0].object().u16("size"), 256);
  assertRefused(() => queues[1].object().u8("size"), "virtio-blk@00:02.0", "queues[1].size");
  assertRefused(() => r.object("common").object("sub").u8("v"), "virtio-blk@00:02.0", "common.sub.v");
  assertRefused(() => r.array("queues", { length: 3 }), "virtio-blk@00:02.0", "queues");
  assert.deepEqual(r.ints("regs", 0, 0xffff), [1, 2, 300]);
  assertRefused(() => r.ints("regs", 0, 0xff), "virtio-blk@00:02.0", "regs[2]");
  assertRefused(() => r.ints("regs", 0, 0xff, { length: 2 }), "virtio-blk@00:02.0", "regs");
  // An array element that is not an object.
  const bad = new StateReader("d", { a: [1] }).array("a");
  assertRefused(() => bad[0].object(), "d", "a[0]");
  // Class instances and arrays are not objects.
  assertRefused(() => new StateReader("d", { o: [] }).object("o"), "d", "o");
  const map = new Map() as unknown as StateValue;
  assertRefused(() => new StateReader("d", { o: map }).object("o"), "d", "o");
});

Deno.test("StateReader: the state itself must be a plain object", () => {
  for (const bad of [null, undefined, 3, "x", [], new Uint8Array(1), new Map()]) {
    assertRefused(() => new StateReader("rtc", bad), "rtc", "(state)");
  }
  assert.equal(new StateReader("rtc", Object.create(null)).device, "rtc");
});

Deno.test("isPlainState: plain data only", () => {
  fc.assert(fc.property(stateValue, (v) => isPlainState(v)));
  const bad = [undefined, () => 1, new Map(), new Date(), NaN, Infinity, { a: undefined }, [Symbol()]];
  bad.forEach((value, i) => assert.equal(isPlainState(value), false, `bad[${i}]`));
  class Box {
    x = 1;
  }
  assert.equal(isPlainState({ b: new Box() }), false);
  class Bytes extends Uint8Array {}
  assert.equal(isPlainState(new Bytes(1)), false, "a Uint8Array subclass is not plain");
});
