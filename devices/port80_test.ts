import assert from "node:assert/strict";
import { Port80 } from "./port80.ts";
import { ioSpace, portIo } from "./_test_util.ts";

Deno.test("ioport80: writes are kept for debugging, reads are all-ones as in QEMU", () => {
  const { io, as } = ioSpace();
  using _ = as;
  const post = new Port80();
  post.map(io);
  const { inb, inw, outb } = portIo(as);
  assert.equal(inb(0x80), 0xff);
  outb(0x80, 0x12);
  outb(0x80, 0x34);
  assert.equal(post.lastValue, 0x34);
  assert.equal(post.writeCount, 2);
  assert.equal(inb(0x80), 0xff);
  assert.equal(inw(0x80), 0xffff, "a 2-byte read: two byte reads of ioport80");
  post.reset();
  assert.equal(post.lastValue, 0);
  assert.deepEqual([post.region.name, post.region.addr, post.region.size], ["ioport80", 0x80n, 1n]);
});
