/**
 * The PC board without KVM: built, wired and closed on any machine.
 */
import assert from "node:assert/strict";
import {
  ACPI_PM_BASE,
  ACPI_SLP_TYP_S5,
  DEBUG_EXIT_PORT,
  PM1_CNT_SLP_EN_BIT,
  PM1_PWRBTN_BIT,
  RESET_CONTROL_PORT,
} from "../../devices/mod.ts";
import type { RunOutcome } from "../runner.ts";
import { E820_RAM, E820_RESERVED } from "../loader/mod.ts";
import { closeAll, MAX_CPUS, PcBoard, pcFirmwareTables, pcGuestTables } from "./pc_board.ts";
import { MP_TABLE_MAX_CPUS } from "./mptable.ts";
import { FIRMWARE } from "../guests/firmware.ts";
import { nonZeroSpans } from "../guests/_image.ts";

Deno.test("the board's devices end a run through onStop: a reset request, a debug-exit write", async () => {
  using board = await PcBoard.create({ ramSize: 64n << 20n });
  const outcomes: RunOutcome[] = [];
  board.onStop = (outcome) => outcomes.push(outcome);
  board.io.write(RESET_CONTROL_PORT, 1, 0x06); // PIIX3 RCR: hard reset
  board.io.write(DEBUG_EXIT_PORT, 1, 0x21);
  assert.deepEqual(outcomes, [{ kind: "reset" }, { kind: "exit", status: 0x43 }]);
});

Deno.test("the firmware is in pc.bios and its top below 1 MiB (isa-bios)", async () => {
  const firmware = new Uint8Array(0x1_0000).map((_, i) => i & 0xff);
  using board = await PcBoard.create({ ramSize: 64n << 20n, firmware });
  assert.equal(board.memory.read(0xffff_0000 + 0x1234, 2).value, 0x3534n);
  assert.equal(board.memory.read(0x000f_1234, 2).value, 0x3534n);
});

Deno.test("the built-in firmware reads back whole, though only its code is written into the ROM", async () => {
  using board = await PcBoard.create({ ramSize: 64n << 20n });
  const rom = new Uint8Array(FIRMWARE.length);
  board.memory.rw(0x1_0000_0000 - FIRMWARE.length, rom, false);
  assert.deepEqual(rom, FIRMWARE);
  const spans = nonZeroSpans(FIRMWARE);
  assert.ok(spans, "decoded with a zero fill");
  assert.ok(spans.reduce((n, s) => n + s.length, 0) < 4096, "a few hundred bytes of code, not 256 KiB");
});

Deno.test("more vCPUs than an MP table can name: it lists the first 254", async () => {
  using board = await PcBoard.create({ ramSize: 64n << 20n, cpus: 300, irqchip: "split" });
  const mp = board.firmwareTables.find((t) => t.name === "MP table")!;
  assert.deepEqual(mp.bytes, pcFirmwareTables({ cpus: MP_TABLE_MAX_CPUS })[0].bytes);
  // The MADT's 255 local APIC and 45 local x2APIC entries: machine/acpi/acpica_test.ts, through iasl.
  assert.ok(board.firmwareTables.some((t) => t.name !== "MP table"), "the ACPI tables are there");
});

Deno.test("firmware tables land inside memory the e820 map does not offer as RAM", async () => {
  using board = await PcBoard.create({ ramSize: 64n << 20n, cpus: MP_TABLE_MAX_CPUS });
  assert.ok(board.firmwareTables.length >= 1);
  for (const table of board.firmwareTables) {
    const end = table.address + BigInt(table.bytes.length);
    for (const entry of board.e820.filter((e) => e.type === E820_RAM)) {
      assert.ok(end <= entry.addr || table.address >= entry.addr + entry.size, `${table.name} overlaps RAM`);
    }
  }
});

Deno.test("typed input waits until COM1 has room", async () => {
  using board = await PcBoard.create({ ramSize: 64n << 20n });
  board.input(new TextEncoder().encode("ab"));
  const LSR = 0x3fd, RBR = 0x3f8, DATA_READY = 1n;
  assert.equal(board.io.read(LSR, 1).value & DATA_READY, DATA_READY);
  assert.equal(board.io.read(RBR, 1).value, 0x61n);
  assert.equal(board.io.read(RBR, 1).value, 0x62n, "the second byte was fed once the first was read");
  assert.equal(board.io.read(LSR, 1).value & DATA_READY, 0n);
});

Deno.test("bad vCPU counts are refused before anything is built", async () => {
  for (const cpus of [0, MAX_CPUS + 1, 1.5]) {
    await assert.rejects(
      async () => await PcBoard.create({ ramSize: 64n << 20n, cpus }),
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

Deno.test("close is idempotent and unregisters the listeners (their regions are deleted)", async () => {
  const board = await PcBoard.create({ ramSize: 64n << 20n });
  const deleted: string[] = [];
  board.memory.registerListener({ regionDel: (section) => void deleted.push(section.region.name) });
  board.close();
  const once = deleted.length;
  board.close();
  assert.ok(deleted.includes("pc.ram"), deleted.join());
  assert.equal(deleted.length, once, "the second close does nothing");
});

Deno.test("the ACPI tables are in guest RAM the e820 map reserves, and the RSDP points at them", async () => {
  using board = await PcBoard.create({ ramSize: 256n << 20n, cpus: 2 });
  const acpi = board.firmwareTables.find((t) => t.name === "ACPI tables");
  assert.ok(acpi, board.firmwareTables.map((t) => t.name).join());
  assert.equal(board.rsdpAddress, acpi.address);
  const rsdp = new TextDecoder().decode(acpi.bytes.subarray(0, 8));
  assert.equal(rsdp, "RSD PTR ");
  const end = acpi.address + BigInt(acpi.bytes.length);
  const reserved = board.e820.find((e) => e.addr <= acpi.address && end <= e.addr + e.size);
  assert.ok(reserved && reserved.type === E820_RESERVED, JSON.stringify(board.e820, (_, v) => String(v)));
  // At the start of a 128 KiB block at the top of RAM below 4 GiB, as SeaBIOS puts QEMU's: the RAM
  // ranges are QEMU's (its e820 for -m 256M reserves 0xffe0000-0xfffffff).
  assert.deepEqual(reserved, { addr: 0xffe_0000n, size: 0x2_0000n, type: E820_RESERVED });
  assert.equal(acpi.address, 0xffe_0000n);
});

Deno.test("a board too small for the ACPI tables has none (and no RSDP)", async () => {
  using board = await PcBoard.create({ ramSize: 1n << 20n });
  assert.equal(board.rsdpAddress, undefined);
  assert.ok(!board.firmwareTables.some((t) => t.name === "ACPI tables"));
});

Deno.test("the ACPI PM block: the SCI is ISA IRQ 9, S5 through PM1a_CNT ends the run as a power-off", async () => {
  const levels: [number, boolean][] = [];
  using board = await PcBoard.create({
    ramSize: 64n << 20n,
    irq: (n) => ({ set: (level) => void levels.push([n, level]) }),
  });
  const outcomes: RunOutcome[] = [];
  board.onStop = (outcome) => outcomes.push(outcome);
  assert.equal(board.powerButton(), false, "the OS has not enabled PWRBTN_EN");
  board.io.write(ACPI_PM_BASE + 2, 2, PM1_PWRBTN_BIT); // PM1_EN
  assert.equal(board.powerButton(), true);
  assert.deepEqual(levels.filter(([n]) => n === 9).at(-1), [9, true]);
  board.io.write(ACPI_PM_BASE, 2, PM1_PWRBTN_BIT); // acknowledged
  assert.deepEqual(levels.filter(([n]) => n === 9).at(-1), [9, false]);
  board.io.write(ACPI_PM_BASE + 4, 2, (1 << 10) | PM1_CNT_SLP_EN_BIT); // SLP_TYP 1: not S5
  assert.deepEqual(outcomes, []);
  board.io.write(ACPI_PM_BASE + 4, 2, (ACPI_SLP_TYP_S5 << 10) | PM1_CNT_SLP_EN_BIT);
  assert.deepEqual(outcomes, [{ kind: "poweroff" }]);
});

Deno.test("pcGuestTables: the same sizes give the same answer, which the caller may change without effect", () => {
  const options = { ramSize: 256n << 20n, firmwareSize: 0x4_0000n, cpus: 2, pciDevices: 1 };
  const first = pcGuestTables(options);
  const expected = structuredClone(first);
  for (const t of first.firmwareTables) t.bytes.fill(0xee);
  first.firmwareTables.pop();
  first.e820[0].size = 1n;
  first.e820.push({ addr: 0n, size: 0n, type: E820_RAM });
  assert.deepEqual(pcGuestTables(options), expected);
  // Other sizes, and back: each answer is the one of its own sizes.
  const small = pcGuestTables({ ...options, ramSize: 1n << 20n });
  assert.equal(small.rsdpAddress, undefined);
  assert.deepEqual(
    pcGuestTables({ ...options, pciDevices: undefined }),
    pcGuestTables({ ...options, pciDevices: 0 }),
  );
  assert.notDeepEqual(pcGuestTables({ ...options, cpus: 3 }).firmwareTables, expected.firmwareTables);
  assert.deepEqual(pcGuestTables(options), expected);
});
