import assert from "node:assert/strict";
import { JsonStreamer, MAX_NESTING, MAX_VALUE_SIZE, toQmpJson } from "./qmp_json.ts";

const feed = (s: JsonStreamer, text: string) => s.feed(new TextEncoder().encode(text));
const errors = (text: string) =>
  feed(new JsonStreamer(), text).map((r) => r.kind === "error" ? r.desc : `value ${toQmpJson(r.value)}`);

Deno.test("qmp json: QEMU 7.2's parse errors, worded as it words them (captured from qemu-system-x86_64)", () => {
  assert.deepEqual(errors("foo\n"), ["JSON parse error, invalid keyword 'foo'"]);
  assert.deepEqual(errors("}\n"), ["JSON parse error, expecting value"]);
  assert.deepEqual(errors('{"a":}\n'), ["JSON parse error, expecting value"]);
  assert.deepEqual(errors('{"a" 1}\n'), ["JSON parse error, missing : in object pair"]);
  assert.deepEqual(errors('"abc\n'), ["JSON parse error, stray '\"abc\n'"]);
  assert.deepEqual(errors("\x01\n"), ["JSON parse error, stray '\x01'"]);
  assert.deepEqual(errors('{"execute":"x" x,"id":2}\n'), ["JSON parse error, expected separator in dict"]);
  assert.deepEqual(errors('{"a":1,"a":2}'), ["JSON parse error, duplicate key"]);
  assert.deepEqual(errors('{"a":1,}'), ["JSON parse error, expecting value"]);
  assert.deepEqual(errors('foo bar {"id":1}\n'), [
    "JSON parse error, invalid keyword 'foo'",
    "JSON parse error, invalid keyword 'bar'",
    'value {"id": 1}',
  ]);
  assert.deepEqual(errors('{"id":3} ]\n'), ['value {"id": 3}', "JSON parse error, expecting value"]);
});

Deno.test("qmp json: values split without framing, QEMU's extensions, exact integers", () => {
  assert.deepEqual(errors(`{"id":1}{"id":2}[1, 2]\n123 'single' true null\n`), [
    'value {"id": 1}',
    'value {"id": 2}',
    "value [1, 2]",
    "value 123",
    'value "single"',
    "value true",
    "value null",
  ]);
  const s = new JsonStreamer();
  assert.deepEqual(feed(s, '{"id": 1234567890123456789'), []);
  const [r] = feed(s, '0, "x": "\\u00e9\\t", "f": 1e3, "n": -0}');
  assert.equal(r.kind, "value");
  assert.equal(
    toQmpJson(r.kind === "value" ? r.value : null),
    '{"id": 12345678901234567890, "x": "\\u00E9\\t", "f": 1000, "n": 0}',
  );
});

Deno.test("qmp json: a split UTF-8 sequence and a split token join up across reads", () => {
  const s = new JsonStreamer();
  const bytes = new TextEncoder().encode('{"id": "é"}');
  const out = [...s.feed(bytes.subarray(0, 9)), ...s.feed(bytes.subarray(9))];
  assert.deepEqual(out, [{ kind: "value", value: { id: "é" } }]);
});

Deno.test("qmp json: a value over the bound is refused while it arrives, with bounded memory; the stream goes on", () => {
  const s = new JsonStreamer();
  const chunk = "a".repeat(1 << 20);
  const out = [...feed(s, '{"execute": "x", "id": "')];
  for (let i = 0; i < 100; i++) out.push(...feed(s, chunk)); // a 100 MiB string
  out.push(...feed(s, '"}\n{"execute": "query-status"}\n'));
  assert.deepEqual(out, [
    { kind: "error", desc: "JSON token size limit exceeded" },
    { kind: "error", desc: "JSON parse error, expecting value" }, // its closing brace, alone: QEMU says the same
    { kind: "value", value: { execute: "query-status" } },
  ]);
  // 100 MiB of letters with no quote: one error, not one per chunk.
  const t = new JsonStreamer();
  const junk: unknown[] = [];
  for (let i = 0; i < 100; i++) junk.push(...feed(t, chunk));
  junk.push(...feed(t, '\n{"id": 7}'));
  assert.deepEqual(junk, [
    { kind: "error", desc: "JSON token size limit exceeded" },
    { kind: "value", value: { id: 7 } },
  ]);
  assert.ok(MAX_VALUE_SIZE <= 1 << 20);
});

Deno.test("qmp json: nesting deeper than QEMU's 1024 is refused", () => {
  const out = errors("[".repeat(MAX_NESTING + 1));
  assert.deepEqual(out, ["JSON nesting depth limit exceeded"]);
  assert.deepEqual(errors("[".repeat(MAX_NESTING) + "]".repeat(MAX_NESTING)).length, 1);
});
