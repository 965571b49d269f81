import assert from "node:assert/strict";
import { MemTxResult } from "../memory/mod.ts";
import { IsaDebugExit } from "./isa_debug_exit.ts";
import { ioSpace, portIo } from "./_test_util.ts";

function setup(base?: number) {
  const { io, as } = ioSpace();
  const statuses: number[] = [];
  const dev = new IsaDebugExit({ onExit: (s) => statuses.push(s), base });
  dev.map(io);
  return { as, dev, statuses, ...portIo(as) };
}

Deno.test("isa-debug-exit: a write of v exits with (v << 1) | 1, at either port and any width", () => {
  const { as, statuses, outb, outw, outl, inb } = setup();
  using _ = as;
  outb(0x501, 0);
  outb(0x501, 0x31);
  outb(0x502, 0x01);
  outw(0x501, 0x1234);
  outl(0x501, 0xffff_ffff);
  assert.deepEqual(statuses, [1, 0x63, 3, 0x2469, 0x1_ffff_ffff]);
  assert.equal(inb(0x501), 0);
  assert.equal(as.read(0x501, 2).result, MemTxResult.OK);
});

Deno.test("isa-debug-exit: QEMU's defaults iobase 0x501, iosize 2; other bases", () => {
  const { as, dev, statuses, outb } = setup(0xf4);
  using _ = as;
  assert.deepEqual([dev.region.name, dev.region.addr, dev.region.size], ["isa-debug-exit", 0xf4n, 2n]);
  outb(0xf4, 1);
  assert.deepEqual(statuses, [3]);
  assert.throws(() => new IsaDebugExit({} as never), TypeError);
  assert.throws(() => new IsaDebugExit({ onExit: () => {}, base: 0xffff }), RangeError);
});
