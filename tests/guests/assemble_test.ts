import assert from "node:assert/strict";
import { assemble, guestSource } from "./assemble.ts";

Deno.test("assemble links a real-mode guest as a flat binary at its load address", async () => {
  const code = await assemble(guestSource("port_io.S"), { base: 0x1000 });
  assert.deepEqual([...code.subarray(0, 3)], [0xba, 0x10, 0x00], "mov $0x10, %dx in 16-bit encoding");
  // `mov $message, %si` carries the absolute address of "hello": it must be based at 0x1000.
  const hello = new TextEncoder().encode("hello");
  const message = code.findIndex((_, i) => hello.every((byte, j) => code[i + j] === byte));
  const movSi = code.indexOf(0xbe); // mov imm16, %si
  assert.equal(code[movSi + 1] | (code[movSi + 2] << 8), 0x1000 + message);
  assert.equal(code[message - 1], 0xf4, "hlt right before the string");
});

Deno.test("assemble reports assembler errors with the tool's message", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bad = `${dir}/bad.S`;
    await Deno.writeTextFile(bad, "\t.code16\n_start:\n\tnot_an_instruction %ax\n");
    await assert.rejects(assemble(bad), /as .* failed[\s\S]*not_an_instruction/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
