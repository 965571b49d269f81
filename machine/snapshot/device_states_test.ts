import assert from "node:assert/strict";
import { PcBoard } from "../pc/pc_board.ts";
import { boardDevices, loadDevices, saveDevices } from "./device_states.ts";
import { decodeValue, encodeValue, SnapshotFormatError, type SnapValue } from "./format.ts";

/** PCI configuration mechanism #1 (ports 0xcf8/0xcfc). */
const PCI_CONFIG_ADDRESS = 0xcf8;
const PCI_CONFIG_DATA = 0xcfc;
/** i440fx PAM1 (0xc0000-0xc7fff): 0x33 makes both halves RAM, read and write. */
const PAM1 = 0x5a;
const PAM_READ_WRITE = 0x33;

function configWrite(board: PcBoard, register: number, value: number): void {
  board.io.write(PCI_CONFIG_ADDRESS, 4, 0x8000_0000 | (register & ~3));
  board.io.write(PCI_CONFIG_DATA + (register & 3), 1, value);
}

Deno.test("the board's stateful devices have stable names, the PCI functions by address and class", async () => {
  using board = await PcBoard.create({ ramSize: 64n << 20n });
  const names = [...boardDevices(board).keys()];
  for (const name of ["Uart16550", "CmosRtc", "I8042", "AcpiPm", "pci.00.0:I440fxHostBridge"]) {
    assert.ok(names.includes(name), `${name} missing from ${names.join(", ")}`);
  }
});

Deno.test("device states through the codec into a second board: PAM and the UART come back", async () => {
  using a = await PcBoard.create({ ramSize: 64n << 20n });
  using b = await PcBoard.create({ ramSize: 64n << 20n });
  configWrite(a, PAM1, PAM_READ_WRITE);
  a.io.write(0x3fb, 1, 0x03); // UART LCR: 8N1
  a.io.write(0x3f9, 1, 0x05); // UART IER
  assert.notEqual(a.mtree({ flat: true }), b.mtree({ flat: true }));
  const stored = decodeValue(encodeValue(saveDevices(a) as SnapValue)) as Record<
    string,
    Record<string, SnapValue>
  >;
  loadDevices(b, stored);
  assert.equal(b.mtree({ flat: true }), a.mtree({ flat: true })); // PAM's memory map too
  assert.equal(b.io.read(0x3fb, 1).value, 3n);
  assert.equal(b.io.read(0x3f9, 1).value, 5n);
});

Deno.test("a devices section that names other devices is refused before anything is loaded", async () => {
  using a = await PcBoard.create({ ramSize: 64n << 20n });
  using b = await PcBoard.create({ ramSize: 64n << 20n });
  const states = saveDevices(a);
  const { Uart16550: _, ...withoutUart } = states;
  a.io.write(0x3fb, 1, 0x03);
  assert.throws(() => loadDevices(a, { ...withoutUart, Gizmo: {} }), SnapshotFormatError);
  assert.equal(a.io.read(0x3fb, 1).value, 3n); // unchanged
  assert.throws(() => loadDevices(b, { ...states, Uart16550: { lcr: "x" } }), /Uart16550|uart/i);
});
