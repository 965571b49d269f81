/**
 * Every device at its PC port, in one `io` root, against QEMU 7.2's `info mtree` of `-machine pc`:
 * each line naming one of our regions must be QEMU's line, in the tree and in the flat view.
 */
import assert from "node:assert/strict";
import { AddressSpace, formatMtree, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import {
  CmosRtc,
  I440fxHostBridge,
  I8042,
  IsaDebugExit,
  PciHost,
  Port80,
  Port92,
  type PortDevice,
  ResetControl,
  Uart16550,
} from "./mod.ts";

/** The regions this folder models, by QEMU name. */
const OURS = new Set([
  "pci-conf-idx",
  "pci-conf-data",
  "piix3-reset-control",
  "ioport80",
  "rtc",
  "rtc-index",
  "serial",
  "i8042-data",
  "i8042-cmd",
  "port92",
  "isa-debug-exit",
]);

/** Not in the golden capture (`-nodefaults`, no `-device isa-debug-exit`): QEMU's lines for them. */
const NOT_CAPTURED = new Map([
  ["serial", {
    tree: "    00000000000003f8-00000000000003ff (prio 0, i/o): serial",
    flat: "  00000000000003f8-00000000000003ff (prio 0, i/o): serial",
  }],
  ["isa-debug-exit", {
    tree: "    0000000000000501-0000000000000502 (prio 0, i/o): isa-debug-exit",
    flat: "  0000000000000501-0000000000000502 (prio 0, i/o): isa-debug-exit",
  }],
]);

const LINE = /^\s+[0-9a-f]{16}-[0-9a-f]{16} \(prio -?\d+, [^)]+\): (\S+)(?: @[0-9a-f]{16})?$/;

/** QEMU's output in a golden file, without its two `#` header lines (see tests/golden/README.md). */
function readGolden(name: string): string {
  const text = Deno.readTextFileSync(new URL(`../tests/golden/qemu/${name}`, import.meta.url));
  return text.split("\n").slice(2).join("\n");
}

/** The lines of `block` that name one of our regions. */
function ourLines(block: string): string[] {
  return block.split("\n").filter((line) => OURS.has(LINE.exec(line)?.[1] ?? ""));
}

/** The block of mtree text that starts with `header` (up to the next empty line). */
function blockOf(text: string, header: string): string {
  const block = text.split("\n\n").find((b) => b.split("\n").includes(header));
  assert.ok(block, `no block with "${header}"`);
  return block;
}

/** The PC's port devices in the order QEMU 7.2's pc_init1 creates them. */
function pcDevices(): PortDevice[] {
  const pci = new PciHost();
  pci.attach({ device: 0 }, new I440fxHostBridge());
  return [
    pci, // i440fx_init
    new ResetControl(), // piix3
    new Port80(), // pc_basic_device_init
    new CmosRtc({ ramBelow4g: 256 << 20 }),
    new Uart16550(), // pc_superio_init
    new I8042(),
    new Port92(),
    new IsaDebugExit({ onExit: () => {} }), // -device isa-debug-exit
  ];
}

function build() {
  const io = MemoryRegion.io("io", 0x1_0000, UNASSIGNED_IO_OPS);
  for (const device of pcDevices()) device.map(io);
  return { io, as: new AddressSpace(io, "I/O") };
}

Deno.test("PC I/O space: our lines of `info mtree -f` are QEMU's", () => {
  const { as } = build();
  using _ = as;
  const ours = ourLines(formatMtree([as], { flat: true }));
  const golden = ourLines(blockOf(readGolden("pc-256M.mtree-f.txt"), ` AS "I/O", root: io`));
  const expected = [...golden, ...[...NOT_CAPTURED.values()].map((l) => l.flat)];
  assert.deepEqual(ours.slice().sort(), expected.slice().sort());
  // The shape that matters: rtc-index over 0x70, rtc's data port seen at offset 1, and the
  // reset control splitting pci-conf-idx.
  assert.ok(ours.includes("  0000000000000070-0000000000000070 (prio 0, i/o): rtc-index"));
  assert.ok(ours.includes("  0000000000000071-0000000000000071 (prio 0, i/o): rtc @0000000000000001"));
  assert.ok(ours.includes("  0000000000000cf9-0000000000000cf9 (prio 1, i/o): piix3-reset-control"));
  assert.ok(
    ours.includes("  0000000000000cfa-0000000000000cfb (prio 0, i/o): pci-conf-idx @0000000000000002"),
  );
});

Deno.test("PC I/O space: our lines of `info mtree` are QEMU's", () => {
  const { as } = build();
  using _ = as;
  const ours = ourLines(formatMtree([as]));
  const golden = ourLines(blockOf(readGolden("pc-256M.mtree.txt"), "address-space: I/O"));
  const expected = [...golden, ...[...NOT_CAPTURED.values()].map((l) => l.tree)];
  assert.deepEqual(ours.slice().sort(), expected.slice().sort());
  // Order within the tree follows QEMU's (address, then priority): compare the captured ones in order.
  assert.deepEqual(ours.filter((l) => !l.endsWith("serial") && !l.endsWith("isa-debug-exit")), golden);
});

Deno.test("PC I/O space: every device answers at its port through one address space", () => {
  const { as } = build();
  using _ = as;
  assert.equal(as.read(0x3fd, 1).value, 0x60n, "COM1 LSR");
  assert.equal(as.read(0x64, 1).value, 0x18n, "i8042 status");
  as.write(0x70, 1, 0x0d);
  assert.equal(as.read(0x71, 1).value, 0x80n, "RTC register D");
  as.write(0xcf8, 4, 0x8000_0000);
  assert.equal(as.read(0xcfc, 4).value, 0x1237_8086n, "i440FX");
  assert.equal(as.read(0x80, 1).value, 0xffn);
  assert.equal(as.read(0x92, 1).value, 0x00n);
  assert.equal(as.read(0xcf9, 1).value, 0x00n);
  assert.equal(as.read(0x501, 1).value, 0x00n);
  assert.equal(as.read(0x2f8, 1).value, 0xffn, "unassigned ports read all-ones");
});
