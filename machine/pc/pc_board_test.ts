/**
 * The PC board without KVM: built, wired and closed on any machine.
 */
import assert from "node:assert/strict";
import { DEBUG_EXIT_PORT, RESET_CONTROL_PORT } from "../../devices/mod.ts";
import type { RunOutcome } from "../runner.ts";
import { E820_RAM } from "../loader/mod.ts";
import { closeAll, MAX_CPUS, PcBoard } from "./pc_board.ts";
import { MP_TABLE_MAX_CPUS } from "./mptable.ts";

Deno.test("the board's devices end a run through onStop: a reset request, a debug-exit write", () => {
  using board = PcBoard.create({ ramSize: 64n << 20n });
  const outcomes: RunOutcome[] = [];
  board.onStop = (outcome) => outcomes.push(outcome);
  board.io.write(RESET_CONTROL_PORT, 1, 0x06); // PIIX3 RCR: hard reset
  board.io.write(DEBUG_EXIT_PORT, 1, 0x21);
  assert.deepEqual(outcomes, [{ kind: "reset" }, { kind: "exit", status: 0x43 }]);
});

Deno.test("the firmware is in pc.bios and its top below 1 MiB (isa-bios)", () => {
  const firmware = new Uint8Array(0x1_0000).map((_, i) => i & 0xff);
  using board = PcBoard.create({ ramSize: 64n << 20n, firmware });
  assert.equal(board.memory.read(0xffff_0000 + 0x1234, 2).value, 0x3534n);
  assert.equal(board.memory.read(0x000f_1234, 2).value, 0x3534n);
});

Deno.test("firmware tables land inside memory the e820 map does not offer as RAM", () => {
  using board = PcBoard.create({ ramSize: 64n << 20n, cpus: MP_TABLE_MAX_CPUS });
  assert.ok(board.firmwareTables.length >= 1);
  for (const table of board.firmwareTables) {
    const end = table.address + BigInt(table.bytes.length);
    for (const entry of board.e820.filter((e) => e.type === E820_RAM)) {
      assert.ok(end <= entry.addr || table.address >= entry.addr + entry.size, `${table.name} overlaps RAM`);
    }
  }
});

Deno.test("typed input waits until COM1 has room", () => {
  using board = PcBoard.create({ ramSize: 64n << 20n });
  board.input(new TextEncoder().encode("ab"));
  const LSR = 0x3fd, RBR = 0x3f8, DATA_READY = 1n;
  assert.equal(board.io.read(LSR, 1).value & DATA_READY, DATA_READY);
  assert.equal(board.io.read(RBR, 1).value, 0x61n);
  assert.equal(board.io.read(RBR, 1).value, 0x62n, "the second byte was fed once the first was read");
  assert.equal(board.io.read(LSR, 1).value & DATA_READY, 0n);
});

Deno.test("bad vCPU counts are refused before anything is built", () => {
  for (const cpus of [0, MAX_CPUS + 1, 1.5]) {
    assert.throws(
      () => PcBoard.create({ ramSize: 64n << 20n, cpus }),
      (e: Error) => e instanceof RangeError && e.message.includes(`${cpus} vCPUs`),
    );
  }
});

Deno.test("closeAll closes every item even when some throw, and reports all failures", () => {
  const closed: string[] = [];
  const item = (name: string, fail = false) => ({
    close() {
      closed.push(name);
      if (fail) throw new Error(`${name} failed`);
    },
  });
  assert.throws(
    () => closeAll([item("a", true), item("b"), item("c", true)]),
    (e: unknown) =>
      e instanceof AggregateError && e.errors.map((x: Error) => x.message).join() === "a failed,c failed",
  );
  assert.deepEqual(closed, ["a", "b", "c"]);
  closeAll([item("d")]);
  assert.deepEqual(closed, ["a", "b", "c", "d"]);
});

Deno.test("close is idempotent and unregisters the listeners (their regions are deleted)", () => {
  const board = PcBoard.create({ ramSize: 64n << 20n });
  const deleted: string[] = [];
  board.memory.registerListener({ regionDel: (section) => void deleted.push(section.region.name) });
  board.close();
  const once = deleted.length;
  board.close();
  assert.ok(deleted.includes("pc.ram"), deleted.join());
  assert.equal(deleted.length, once, "the second close does nothing");
});
