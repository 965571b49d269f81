import assert from "node:assert/strict";
import { getRandom } from "./get_random.ts";
import { GuestMemory } from "./guest_memory.ts";

Deno.test("getRandom fills small, empty and large buffers (beyond crypto.getRandomValues' 64 KiB)", () => {
  assert.equal(getRandom(new Uint8Array(0)).length, 0);
  const a = getRandom(new Uint8Array(32));
  const b = getRandom(new Uint8Array(32));
  assert.notDeepEqual(a, b);
  const large = getRandom(new Uint8Array(3 << 20));
  // Every byte value turns up, roughly equally often (expected 12288 each; 5 sigma is about ±550).
  const counts = new Array(256).fill(0);
  for (const byte of large) counts[byte]++;
  assert.ok(
    Math.min(...counts) > 11_000 && Math.max(...counts) < 13_600,
    `${Math.min(...counts)}..${Math.max(...counts)}`,
  );
  // The last bytes were written too (the loop reached the end).
  assert.ok(large.subarray(large.length - 64).some((byte) => byte !== 0));
});

Deno.test("getRandom writes into guest memory in place, and only the view given", () => {
  using ram = new GuestMemory(0x10000);
  getRandom(ram.bytes.subarray(0x1000, 0x1100));
  assert.ok(ram.bytes.subarray(0x1000, 0x1100).some((byte) => byte !== 0));
  assert.ok(ram.bytes.subarray(0, 0x1000).every((byte) => byte === 0));
  assert.ok(ram.bytes.subarray(0x1100).every((byte) => byte === 0));
});
