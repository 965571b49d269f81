import assert from "node:assert/strict";
import {
  checksum,
  escapeBinary,
  framePacket,
  fromHex,
  latin1,
  latin1Bytes,
  PacketReader,
  toHex,
  unescapeBinary,
} from "./gdb_packet.ts";

const text = (bytes: Uint8Array) => latin1(bytes);

Deno.test("checksum: modulo-256 sum of the payload bytes", () => {
  assert.equal(checksum("g"), 0x67);
  assert.equal(checksum("qSupported"), 0x37);
  assert.equal(checksum(""), 0);
  assert.equal(checksum(new Uint8Array([0xff, 0x02])), 0x01);
});

Deno.test("framePacket: $payload#cs with two lower-case hex digits", () => {
  assert.equal(text(framePacket("OK")), "$OK#9a");
  assert.equal(text(framePacket("")), "$#00");
  assert.equal(text(framePacket(new Uint8Array([0x6c, 0x7d, 0x03]))), "$l}\x03#ec");
});

Deno.test("escapes: $ # } * become } and the byte XOR 0x20, and back", () => {
  const raw = new Uint8Array([0x24, 0x23, 0x7d, 0x2a, 0x41, 0x00, 0xff]);
  const escaped = escapeBinary(raw);
  assert.equal(text(escaped), "}\x04}\x03}]}\x0aA\x00\xff");
  assert.deepEqual(unescapeBinary(text(escaped)), raw);
  assert.throws(() => unescapeBinary("ab}"), RangeError);
});

Deno.test("hex helpers", () => {
  assert.equal(toHex(new Uint8Array([0, 0xab, 0x10])), "00ab10");
  assert.deepEqual(fromHex("00AB10"), new Uint8Array([0, 0xab, 0x10]));
  assert.throws(() => fromHex("abc"), RangeError);
  assert.throws(() => fromHex("zz"), RangeError);
  assert.deepEqual(latin1Bytes(latin1(new Uint8Array([0, 0x80, 0xff]))), new Uint8Array([0, 0x80, 0xff]));
});

Deno.test("PacketReader: acks, interrupt, packets split across pushes, bad checksums, noise", () => {
  const r = new PacketReader();
  const enc = (s: string) => latin1Bytes(s);
  assert.deepEqual(r.push(enc("+-\x03xyz$m0,")), [{ kind: "ack" }, { kind: "nack" }, { kind: "interrupt" }]);
  assert.deepEqual(r.push(enc("4#f")), []);
  assert.deepEqual(r.push(enc("d")), [{ kind: "packet", payload: "m0,4", ok: true }]);
  assert.deepEqual(r.push(enc("$g#00")), [{ kind: "packet", payload: "g", ok: false }]);
  assert.deepEqual(r.push(enc("$g#zz")), [{ kind: "packet", payload: "g", ok: false }]);
  // An escaped '#' (} 0x03) does not end the packet; the checksum covers the escaped bytes.
  const body = "X0,1:}\x03";
  assert.deepEqual(r.push(framePacket(body)), [{ kind: "packet", payload: body, ok: true }]);
});

Deno.test("PacketReader: an over-long packet is dropped, and the stream recovers", () => {
  const r = new PacketReader(8);
  assert.deepEqual(r.push(latin1Bytes("$0123456789#00")), [{ kind: "overflow" }]);
  assert.deepEqual(r.push(framePacket("?")), [{ kind: "packet", payload: "?", ok: true }]);
});
