import assert from "node:assert/strict";
import fc from "fast-check";
import type { StateObject } from "../device_state.ts";
import { checkBadStates, checkRoundTrip, type StateHarness } from "../_state_test_util.ts";
import {
  AddressSpace,
  formatMtree,
  MemoryRegion,
  type RamBacking,
  UNASSIGNED_IO_OPS,
} from "../../memory/mod.ts";
import { RecordingIrqLine } from "../irq_line.ts";
import { PciHost } from "../pci_host.ts";
import { ByteDisk } from "./_test_util.ts";
import { AddressSpaceGuestMemory } from "./guest_memory.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./virtqueue.ts";
import { VirtioFeature, VirtioStatus } from "./virtio_device.ts";
import { VirtioBlk, VirtioBlkRequest, VirtioBlkStatus } from "./virtio_blk.ts";
import { VirtioPci, VirtioPciCommon as C } from "./virtio_pci.ts";
import { VirtioRng } from "./virtio_rng.ts";

const GOLDEN = new URL("../../tests/golden/qemu/", import.meta.url);
const RAM_SIZE = 0x10_0000;

/** Guest RAM over a Uint8Array, as the memory API's RamBacking. */
class ArrayRam implements RamBacking {
  readonly bytes = new Uint8Array(RAM_SIZE);
  readonly size = BigInt(RAM_SIZE);
  read(offset: bigint, out: Uint8Array): void {
    out.set(this.bytes.subarray(Number(offset), Number(offset) + out.length));
  }
  write(offset: bigint, data: Uint8Array): void {
    this.bytes.set(data, Number(offset));
  }
}

/** A board in miniature: RAM at 0, the PCI container at priority -1, the I/O space, config ports. */
function board() {
  const ram = new ArrayRam();
  const system = MemoryRegion.container("system", 1n << 64n);
  system.addSubregion(0, MemoryRegion.ram("pc.ram", RAM_SIZE, { backing: ram }));
  const pci = MemoryRegion.container("pci", 1n << 64n);
  system.addSubregionOverlap(0, pci, -1);
  const io = MemoryRegion.io("io", 0x1_0000, UNASSIGNED_IO_OPS);
  const host = new PciHost();
  host.map(io);
  const memory = new AddressSpace(system, "memory");
  const ports = new AddressSpace(io, "I/O");
  const msis: [bigint, number][] = [];
  const log: string[] = [];
  const irq = new RecordingIrqLine();
  const options = {
    memory: new AddressSpaceGuestMemory(memory),
    bus: { memory: pci, io },
    deliverMsi: (address: bigint, data: number) => void msis.push([address, data]),
    log: (line: string) => void log.push(line),
    irq,
  };
  const cfg = (dev: number) => ({
    read: (offset: number, size: number) => {
      ports.write(0xcf8, 4, 0x8000_0000 | (dev << 11) | (offset & 0xfc));
      return Number(ports.read(0xcfc + (offset & 3), size).value);
    },
    write: (offset: number, value: number, size: number) => {
      ports.write(0xcf8, 4, 0x8000_0000 | (dev << 11) | (offset & 0xfc));
      ports.write(0xcfc + (offset & 3), size, value);
    },
  });
  return {
    ram,
    pci,
    host,
    memory,
    ports,
    msis,
    log,
    irq,
    options,
    cfg,
    [Symbol.dispose]() {
      ports.close();
      memory.close();
    },
  };
}

function rngAndBlk(b: ReturnType<typeof board>, disk = new ByteDisk(1 << 20)) {
  const rng = new VirtioPci({ ...b.options, model: new VirtioRng({ entropy: (x) => x.fill(0x42) }) });
  const blk = new VirtioPci({ ...b.options, model: new VirtioBlk({ backing: disk }) });
  b.host.attach({ device: 4 }, rng);
  b.host.attach({ device: 5 }, blk);
  return { rng, blk, disk };
}

/** Programs the BARs and IRQ line as SeaBIOS did in the golden run, and turns decoding on. */
function programLikeSeabios(
  b: ReturnType<typeof board>,
  dev: number,
  bar1: number,
  bar4: number,
  line: number,
) {
  const c = b.cfg(dev);
  c.write(0x14, bar1, 4);
  c.write(0x20, bar4, 4);
  c.write(0x24, 0, 4);
  c.write(0x3c, line, 1);
  c.write(0x04, 0x0007, 2);
}

/** `info pci`'s block for one function, in QEMU 7.2's format (hw/pci/pci-hmp-cmds.c). */
function infoPci(fn: VirtioPci, slot: number): string {
  const hex = (v: number, w: number) => v.toString(16).padStart(w, "0");
  const cls = fn.readConfig(0x0a, 2);
  const names: Record<number, string> = { 0x0100: "SCSI controller" };
  const lines = [
    `  Bus  0, device ${String(slot).padStart(3)}, function 0:`,
    `    ${names[cls] ?? `Class ${String(cls).padStart(4, "0")}`}: PCI device ${
      hex(fn.readConfig(0, 2), 4)
    }:${hex(fn.readConfig(2, 2), 4)}`,
    `      PCI subsystem ${hex(fn.readConfig(0x2c, 2), 4)}:${hex(fn.readConfig(0x2e, 2), 4)}`,
    `      IRQ ${fn.readConfig(0x3c, 1)}, pin ${String.fromCharCode(64 + fn.readConfig(0x3d, 1))}`,
  ];
  for (const i of [1, 4]) {
    const region = fn.barRegion(i)!;
    const type = fn.readConfig(0x10 + 4 * i, 1);
    const kind = `${type & 4 ? "64" : "32"} bit ${type & 8 ? "prefetchable " : ""}memory`;
    const addr = fn.barAddress(i) ?? 0xffff_ffff_ffff_ffffn;
    const last = BigInt.asUintN(64, addr + region.size - 1n);
    const fmt = (v: bigint) =>
      fn.barAddress(i) === undefined ? v.toString(16).padStart(8, "0") : v.toString(16);
    lines.push(`      BAR${i}: ${kind} at 0x${fmt(addr)} [0x${fmt(last)}].`);
  }
  lines.push(`      id ""`);
  return lines.join("\n");
}

function goldenBody(name: string): string {
  return Deno.readTextFileSync(new URL(name, GOLDEN)).split("\n").filter((l) => !l.startsWith("#")).join(
    "\n",
  );
}

Deno.test("VirtioPci golden: info pci of virtio-rng-pci and virtio-blk-pci, disable-legacy=on, as QEMU 7.2", () => {
  using b = board();
  const { rng, blk } = rngAndBlk(b);
  const before = goldenBody("virtio-modern-S.pci.txt");
  // Before the firmware: IRQ line 0, BARs unassigned (QEMU prints the size mask).
  assert.ok(before.includes(infoPci(rng, 4)), infoPci(rng, 4));
  assert.ok(before.includes(infoPci(blk, 5)), infoPci(blk, 5));
  programLikeSeabios(b, 4, 0xfebf_1000, 0xfe00_000c, 11);
  programLikeSeabios(b, 5, 0xfebf_2000, 0xfe00_400c, 10);
  const after = goldenBody("virtio-modern-run.pci.txt");
  assert.ok(after.includes(infoPci(rng, 4)), infoPci(rng, 4));
  assert.ok(after.includes(infoPci(blk, 5)), infoPci(blk, 5));
});

Deno.test("VirtioPci golden: the BAR regions in info mtree match QEMU 7.2's, name for name", () => {
  using b = board();
  rngAndBlk(b);
  programLikeSeabios(b, 4, 0xfebf_1000, 0xfe00_000c, 11);
  programLikeSeabios(b, 5, 0xfebf_2000, 0xfe00_400c, 10);
  const pick = (text: string) => {
    const lines = text.split("\n").filter((l) => /virtio|msix/.test(l) && /^\s+[0-9a-f]{16}-/.test(l));
    const indent = Math.min(...lines.map((l) => l.search(/\S/)));
    return lines.map((l) => l.slice(indent));
  };
  const golden = goldenBody("virtio-modern-run.mtree.txt");
  const memoryBlock = golden.split("\n\n").find((block) => /(^|\n)address-space: memory\n/.test(block))!;
  assert.deepEqual(pick(formatMtree([b.memory])), pick(memoryBlock));
  assert.equal(pick(memoryBlock).length, 16);
});

Deno.test("VirtioPci: capability list as QEMU places it: virtio structures from 0x40, MSI-X at 0x98", () => {
  using b = board();
  const { blk } = rngAndBlk(b);
  assert.deepEqual(blk.capabilities(), [0x98, 0x84, 0x70, 0x60, 0x50, 0x40]);
  const cap = (at: number) => [0, 1, 2, 3, 4].map((i) => blk.readConfig(at + i, 1));
  assert.deepEqual(cap(0x40), [0x09, 0x00, 16, 1, 4], "common: vndr, next, len, cfg_type, bar");
  assert.deepEqual(cap(0x50), [0x09, 0x40, 16, 3, 4]);
  assert.deepEqual(cap(0x60), [0x09, 0x50, 16, 4, 4]);
  assert.deepEqual(cap(0x70), [0x09, 0x60, 20, 2, 4]);
  assert.deepEqual(cap(0x84), [0x09, 0x70, 20, 5, 0]);
  assert.deepEqual(cap(0x98), [0x11, 0x84, 0x01, 0x00, 0x01], "MSI-X, 2 vectors, table in BAR 1");
  assert.deepEqual([0x48, 0x4c, 0x58, 0x5c, 0x68, 0x6c, 0x78, 0x7c, 0x80].map((o) => blk.readConfig(o, 4)), [
    0x0000,
    0x1000,
    0x1000,
    0x1000,
    0x2000,
    0x1000,
    0x3000,
    0x1000,
    4,
  ]);
  assert.equal(blk.readConfig(0x08, 1), 1, "revision 1");
  assert.equal(blk.readConfig(0x06, 2) & 0x10, 0x10);
});

/** Accessors of one device's structures through the memory API, at BAR 4 = 0xfe000000. */
function regs(b: ReturnType<typeof board>, base = 0xfe00_0000) {
  const w = (off: number, size: number, v: number | bigint) => b.memory.write(base + off, size, v);
  const r = (off: number, size: number) => Number(b.memory.read(base + off, size).value);
  return { w, r, isr: () => r(0x1000, 1), notify: (q: number) => w(0x3000 + 4 * q, 2, q) };
}

Deno.test("VirtioPci: feature windows, FEATURES_OK, queue registers, reset by status 0", () => {
  using b = board();
  const { rng } = rngAndBlk(b);
  programLikeSeabios(b, 4, 0xfebf_1000, 0xfe00_000c, 11);
  const { w, r } = regs(b);
  w(C.DEVICE_FEATURE_SELECT, 4, 0);
  assert.equal(r(C.DEVICE_FEATURE, 4), 0x3000_0000, "INDIRECT_DESC and EVENT_IDX");
  w(C.DEVICE_FEATURE_SELECT, 4, 1);
  assert.equal(r(C.DEVICE_FEATURE, 4), 1, "VERSION_1");
  w(C.DEVICE_FEATURE_SELECT, 4, 2);
  assert.equal(r(C.DEVICE_FEATURE, 4), 0);
  assert.equal(r(C.NUM_QUEUES, 2), 1);
  w(C.DEVICE_STATUS, 1, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
  w(C.DRIVER_FEATURE_SELECT, 4, 0);
  w(C.DRIVER_FEATURE, 4, 0xffff_ffff);
  w(C.DEVICE_STATUS, 1, 0x0b);
  assert.equal(r(C.DEVICE_STATUS, 1), 0x03, "FEATURES_OK refused without VERSION_1");
  w(C.DRIVER_FEATURE_SELECT, 4, 1);
  w(C.DRIVER_FEATURE, 4, 1);
  w(C.DEVICE_STATUS, 1, 0x0b);
  assert.equal(r(C.DEVICE_STATUS, 1), 0x0b);
  assert.equal(
    rng.device.driverFeatures,
    VirtioFeature.VERSION_1 | VirtioFeature.INDIRECT_DESC | VirtioFeature.EVENT_IDX,
  );
  // Queue 0.
  w(C.QUEUE_SELECT, 2, 0);
  assert.equal(r(C.QUEUE_SIZE, 2), 8);
  w(C.QUEUE_SIZE, 2, 6);
  assert.equal(r(C.QUEUE_SIZE, 2), 8, "not a power of two: ignored");
  w(C.QUEUE_SIZE, 2, 4);
  assert.equal(r(C.QUEUE_SIZE, 2), 4);
  w(C.QUEUE_MSIX_VECTOR, 2, 0);
  assert.equal(r(C.QUEUE_MSIX_VECTOR, 2), 0);
  w(C.QUEUE_MSIX_VECTOR, 2, 5);
  assert.equal(r(C.QUEUE_MSIX_VECTOR, 2), 0xffff, "beyond the table: NO_VECTOR");
  w(C.QUEUE_DESC_LO, 8, 0x1000n); // one 8-byte access, split in two by the memory core
  w(C.QUEUE_DRIVER_LO, 4, 0x2000);
  w(C.QUEUE_DRIVER_HI, 4, 0);
  w(C.QUEUE_DEVICE_LO, 4, 0x3000);
  assert.equal(r(C.QUEUE_DESC_LO, 4), 0x1000);
  assert.equal(r(C.QUEUE_NOTIFY_OFF, 2), 0);
  w(C.QUEUE_ENABLE, 2, 1);
  assert.equal(r(C.QUEUE_ENABLE, 2), 1);
  w(C.QUEUE_DESC_LO, 4, 0x5000);
  assert.equal(r(C.QUEUE_DESC_LO, 4), 0x1000, "read-only while enabled");
  w(C.QUEUE_SELECT, 2, 9);
  assert.equal(r(C.QUEUE_SELECT, 2), 0, "no queue 9");
  assert.equal(rng.notifyAddress(0), 0xfe00_3000n);
  assert.equal(rng.notifyAddress(1), undefined);
  // Reset.
  w(C.DEVICE_STATUS, 1, 0);
  assert.equal(r(C.DEVICE_STATUS, 1), 0);
  assert.equal(r(C.QUEUE_ENABLE, 2), 0);
  assert.equal(r(C.QUEUE_SIZE, 2), 8);
  assert.equal(r(C.QUEUE_MSIX_VECTOR, 2), 0xffff);
  w(C.DRIVER_FEATURE_SELECT, 4, 1);
  assert.equal(r(C.DRIVER_FEATURE, 4), 0);
  // Device configuration of virtio-rng is empty: reads all-ones.
  assert.equal(r(0x2000, 4), 0xffff_ffff);
});

Deno.test("VirtioPci: INTx while MSI-X is off; the ISR read clears it; a bad queue_enable needs a reset", () => {
  using b = board();
  const { rng } = rngAndBlk(b);
  programLikeSeabios(b, 4, 0xfebf_1000, 0xfe00_000c, 11);
  const { w, r, isr } = regs(b);
  w(C.DRIVER_FEATURE_SELECT, 4, 1);
  w(C.DRIVER_FEATURE, 4, 1);
  w(C.DEVICE_STATUS, 1, 0x0f);
  w(C.QUEUE_ENABLE, 2, 0);
  assert.equal(r(C.DEVICE_STATUS, 1), 0x4f, "DEVICE_NEEDS_RESET");
  assert.match(b.log[0], /^virtio-rng: wrong value for queue_enable: 0; the device needs a reset$/);
  assert.ok(b.irq.level, "configuration change on INTx");
  assert.equal(r(C.CONFIG_GENERATION, 1), 1);
  assert.equal(isr(), 3);
  assert.equal(b.irq.level, false);
  assert.equal(isr(), 0);
  w(C.DEVICE_STATUS, 1, 0);
  assert.equal(rng.device.broken, false);
});

Deno.test("VirtioPci: the PCI configuration access capability reaches the BAR", () => {
  using b = board();
  const { blk } = rngAndBlk(b);
  const c = b.cfg(5);
  c.write(0x84 + 4, 4, 1); // bar
  c.write(0x84 + 8, C.DEVICE_FEATURE_SELECT, 4);
  c.write(0x84 + 12, 4, 4); // length
  c.write(0x84 + 16, 1, 4); // data: select the high half
  c.write(0x84 + 8, C.DEVICE_FEATURE, 4);
  assert.equal(c.read(0x84 + 16, 4), 1, "VERSION_1, read through configuration space with no BAR mapped");
  c.write(0x84 + 8, 0x2000, 4);
  assert.equal(c.read(0x84 + 16, 4), 2048, "virtio-blk capacity");
  c.write(0x84 + 4, 2, 1); // another BAR: nothing happens
  c.write(0x84 + 8, C.DEVICE_FEATURE_SELECT, 4);
  c.write(0x84 + 16, 0, 4);
  c.write(0x84 + 4, 4, 1);
  c.write(0x84 + 8, C.DEVICE_FEATURE, 4);
  assert.equal(c.read(0x84 + 16, 4), 1);
  void blk;
});

Deno.test("VirtioPci: turning bus mastering off clears DRIVER_OK and stops notifications", () => {
  using b = board();
  const { rng } = rngAndBlk(b);
  programLikeSeabios(b, 4, 0xfebf_1000, 0xfe00_000c, 11);
  const { w, r } = regs(b);
  w(C.DEVICE_STATUS, 1, 0x07);
  b.cfg(4).write(0x04, 0x0002, 2);
  assert.equal(r(C.DEVICE_STATUS, 1), 0x03);
  w(C.DEVICE_STATUS, 1, 0x04);
  b.cfg(4).write(0x04, 0x0006, 2);
  w(C.QUEUE_SIZE, 2, 4);
  b.cfg(4).write(0x04, 0x0002, 2);
  assert.equal(r(C.DEVICE_STATUS, 1), 0, "DRIVER_OK cleared");
  assert.equal(r(C.QUEUE_SIZE, 2), 4, "but no reset");
  assert.ok(rng.device.disabled);
  b.cfg(4).write(0x04, 0x0006, 2);
  assert.equal(rng.device.disabled, false);
});

Deno.test("VirtioPci end to end: a driver negotiates, sets up a queue, reads two sectors and gets an MSI-X message", () => {
  using b = board();
  const { blk, disk } = rngAndBlk(b);
  const guest = new DataView(b.ram.bytes.buffer);
  // 1. Firmware: BARs and decoding, through configuration mechanism #1.
  programLikeSeabios(b, 5, 0xfebf_2000, 0xfe00_400c, 10);
  const c = b.cfg(5);
  // 2. Find the structures by walking the capability list, as a driver does.
  const caps = new Map<number, { bar: number; offset: number }>();
  let msixCap = 0;
  for (let at = c.read(0x34, 1); at !== 0; at = c.read(at + 1, 1)) {
    if (c.read(at, 1) === 0x09) {
      caps.set(c.read(at + 3, 1), { bar: c.read(at + 4, 1), offset: c.read(at + 8, 4) });
    }
    if (c.read(at, 1) === 0x11) msixCap = at;
  }
  const barBase = (i: number) =>
    BigInt((c.read(0x10 + 4 * i, 4) & ~0xf) >>> 0) | BigInt(c.read(0x14 + 4 * i, 4)) << 32n;
  const at = (type: number) => barBase(caps.get(type)!.bar) + BigInt(caps.get(type)!.offset);
  const common = at(1);
  const notify = at(2);
  const isr = at(3);
  const device = at(4);
  const multiplier = c.read(0x70 + 16, 4);
  const w = (base: bigint, off: number, size: number, v: number | bigint) =>
    b.memory.write(base + BigInt(off), size, v);
  const r = (base: bigint, off: number, size: number) =>
    Number(b.memory.read(base + BigInt(off), size).value);
  // 3. MSI-X: vector 0 for the queue, vector 1 for configuration changes.
  const table = BigInt((c.read(0x14, 4) & ~0xf) >>> 0) + BigInt((c.read(msixCap + 4, 4) & ~7) >>> 0);
  for (const [v, data] of [[0, 0x4021], [1, 0x4022]]) {
    w(table, 16 * v, 4, 0xfee0_0000);
    w(table, 16 * v + 4, 4, 0);
    w(table, 16 * v + 8, 4, data);
    w(table, 16 * v + 12, 4, 0);
  }
  c.write(msixCap + 2, 0x8000, 2);
  // 4. virtio initialization (virtio 1.2 section 3.1.1).
  w(common, C.DEVICE_STATUS, 1, 0);
  w(common, C.DEVICE_STATUS, 1, VirtioStatus.ACKNOWLEDGE);
  w(common, C.DEVICE_STATUS, 1, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
  w(common, C.DEVICE_FEATURE_SELECT, 4, 0);
  const low = r(common, C.DEVICE_FEATURE, 4);
  w(common, C.DEVICE_FEATURE_SELECT, 4, 1);
  const high = r(common, C.DEVICE_FEATURE, 4);
  assert.equal(high & 1, 1, "VERSION_1 offered");
  w(common, C.DRIVER_FEATURE_SELECT, 4, 0);
  w(common, C.DRIVER_FEATURE, 4, low & (1 << 29)); // EVENT_IDX only
  w(common, C.DRIVER_FEATURE_SELECT, 4, 1);
  w(common, C.DRIVER_FEATURE, 4, 1);
  w(common, C.DEVICE_STATUS, 1, 0x0b);
  assert.equal(r(common, C.DEVICE_STATUS, 1) & VirtioStatus.FEATURES_OK, VirtioStatus.FEATURES_OK);
  assert.equal(r(device, 0, 4), 2048, "capacity of the 1 MiB disk");
  w(common, C.CONFIG_MSIX_VECTOR, 2, 1);
  w(common, C.QUEUE_SELECT, 2, 0);
  const size = 16;
  w(common, C.QUEUE_SIZE, 2, size);
  w(common, C.QUEUE_MSIX_VECTOR, 2, 0);
  const [DESC, AVAIL, USED] = [0x1_0000, 0x1_1000, 0x1_2000];
  w(common, C.QUEUE_DESC_LO, 8, DESC);
  w(common, C.QUEUE_DRIVER_LO, 8, AVAIL);
  w(common, C.QUEUE_DEVICE_LO, 8, USED);
  w(common, C.QUEUE_ENABLE, 2, 1);
  const notifyOff = r(common, C.QUEUE_NOTIFY_OFF, 2);
  w(common, C.DEVICE_STATUS, 1, 0x0f);
  // 5. A read of sectors 7 and 8: header, 1024 data bytes, status byte.
  const [HDR, DATA, STATUS] = [0x2_0000, 0x2_1000, 0x2_2000];
  guest.setUint32(HDR, VirtioBlkRequest.IN, true);
  guest.setBigUint64(HDR + 8, 7n, true);
  const descs = [[HDR, 16, 0], [DATA, 1024, VIRTQ_DESC_F_WRITE], [STATUS, 1, VIRTQ_DESC_F_WRITE]];
  descs.forEach(([addr, len, flags], i) => {
    guest.setBigUint64(DESC + 16 * i, BigInt(addr), true);
    guest.setUint32(DESC + 16 * i + 8, len, true);
    guest.setUint16(DESC + 16 * i + 12, flags | (i < 2 ? VIRTQ_DESC_F_NEXT : 0), true);
    guest.setUint16(DESC + 16 * i + 14, i + 1, true);
  });
  guest.setUint16(AVAIL + 4, 0, true); // ring[0] = head 0
  guest.setUint16(AVAIL + 4 + 2 * size, 0, true); // used_event: interrupt after the first
  guest.setUint16(AVAIL + 2, 1, true); // idx
  b.ram.bytes[STATUS] = 0xff;
  // 6. Kick.
  assert.equal(blk.notifyAddress(0), notify + BigInt(notifyOff * multiplier));
  w(notify, notifyOff * multiplier, 2, 0);
  // 7. Results.
  assert.equal(b.ram.bytes[STATUS], VirtioBlkStatus.OK);
  assert.deepEqual(b.ram.bytes.subarray(DATA, DATA + 1024), disk.bytes.subarray(7 * 512, 9 * 512));
  assert.equal(guest.getUint16(USED + 2, true), 1, "used idx");
  assert.deepEqual([guest.getUint32(USED + 4, true), guest.getUint32(USED + 8, true)], [0, 1025]);
  assert.equal(guest.getUint16(USED + 4 + 8 * size, true), 1, "avail_event published");
  assert.deepEqual(b.msis, [[0xfee0_0000n, 0x4021]]);
  assert.equal(r(isr, 0, 1), 1, "ISR bit 0 is set with MSI-X too, as in QEMU");
  assert.deepEqual(b.log, []);
  // 8. A hostile request: the device needs a reset, says so once, and raises the config vector.
  guest.setUint16(DESC + 12, VIRTQ_DESC_F_NEXT, true);
  guest.setUint16(DESC + 14, 0, true); // descriptor 0 points at itself
  guest.setUint16(AVAIL + 4 + 2, 0, true);
  guest.setUint16(AVAIL + 2, 2, true);
  w(notify, notifyOff * multiplier, 2, 0);
  assert.equal(r(common, C.DEVICE_STATUS, 1), 0x4f);
  assert.equal(b.log.length, 1);
  assert.deepEqual(b.msis.at(-1), [0xfee0_0000n, 0x4022]);
});

// ---- Device state (issue 11) ----

const Q_DESC = 0x1_0000;
const Q_AVAIL = 0x1_1000;
const Q_USED = 0x1_2000;
const Q_HEADERS = 0x1_3000; // request slot s: header at + 0x100 s, status at + 0x100 s + 0x20
const Q_DATA = 0x2_0000; // request slot s: 512 bytes at + 0x1000 s
const Q_SIZE = 16;
const SLOTS = 5; // three descriptors each

type VpOp =
  | { bringUp: { eventIdx: boolean; msix: boolean } }
  | { common: number; size: 1 | 2 | 4; value: number }
  | { readCommon: number }
  | { request: { slot: number; type: number; sector: number; fill: number } }
  | { notify: number }
  | { usedEvent: number }
  | { isr: true }
  | { command: number }
  | { msixControl: number }
  | { readDeviceConfig: number };

const vpOp: fc.Arbitrary<VpOp> = fc.oneof(
  { weight: 1, arbitrary: fc.record({ bringUp: fc.record({ eventIdx: fc.boolean(), msix: fc.boolean() }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      common: fc.constantFrom(
        C.DEVICE_FEATURE_SELECT,
        C.DRIVER_FEATURE_SELECT,
        C.DRIVER_FEATURE,
        C.CONFIG_MSIX_VECTOR,
        C.DEVICE_STATUS,
        C.QUEUE_SELECT,
        C.QUEUE_SIZE,
        C.QUEUE_MSIX_VECTOR,
        C.QUEUE_ENABLE,
      ),
      size: fc.constantFrom(1 as const, 2 as const, 4 as const),
      value: fc.oneof(fc.constantFrom(0, 1, 2, 4, 0x0f, 0x4f, 16), fc.integer({ min: 0, max: 0xffff_ffff })),
    }),
  },
  { weight: 2, arbitrary: fc.record({ readCommon: fc.integer({ min: 0, max: 0x1c }).map((o) => o * 2) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      request: fc.record({
        slot: fc.integer({ min: 0, max: SLOTS - 1 }),
        type: fc.constantFrom(0, 1, 1, 4, 8, 99),
        sector: fc.integer({ min: 0, max: 140 }),
        fill: fc.integer({ min: 0, max: 0xff }),
      }),
    }),
  },
  { weight: 4, arbitrary: fc.record({ notify: fc.constantFrom(0, 0, 0, 1) }) },
  { weight: 1, arbitrary: fc.record({ usedEvent: fc.integer({ min: 0, max: 20 }) }) },
  { weight: 2, arbitrary: fc.constant({ isr: true as const }) },
  { weight: 1, arbitrary: fc.record({ command: fc.constantFrom(0x7, 0x3, 0x407, 0x6) }) },
  { weight: 1, arbitrary: fc.record({ msixControl: fc.constantFrom(0, 0x8000, 0xc000) }) },
  { weight: 1, arbitrary: fc.record({ readDeviceConfig: fc.integer({ min: 0, max: 8 }).map((o) => o * 4) }) },
);

/**
 * A virtio-blk-pci on a miniature board, BARs programmed, driven as a driver would. Its saved state
 * carries the device and, as the snapshot's memory file and the disk would, guest RAM and the disk.
 */
function vpHarness(): StateHarness<VpOp> & Disposable & { vp: VirtioPci } {
  const b = board();
  const disk = new ByteDisk(1 << 16); // 128 sectors: requests past the end are exercised too
  const vp = new VirtioPci({ ...b.options, model: new VirtioBlk({ backing: disk }) });
  b.host.attach({ device: 5 }, vp);
  programLikeSeabios(b, 5, 0xfebf_2000, 0xfe00_000c, 10);
  const { w, r, isr, notify } = regs(b);
  const view = new DataView(b.ram.bytes.buffer);
  let availIdx = 0;
  const bringUp = (eventIdx: boolean, msix: boolean) => {
    w(C.DEVICE_STATUS, 1, 0);
    w(C.DEVICE_STATUS, 1, VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
    w(C.DRIVER_FEATURE_SELECT, 4, 0);
    w(C.DRIVER_FEATURE, 4, eventIdx ? 0x3000_0000 : 0x1000_0000);
    w(C.DRIVER_FEATURE_SELECT, 4, 1);
    w(C.DRIVER_FEATURE, 4, 1);
    w(C.DEVICE_STATUS, 1, 0x0b);
    w(C.QUEUE_SELECT, 2, 0);
    w(C.QUEUE_SIZE, 2, Q_SIZE);
    w(C.QUEUE_DESC_LO, 4, Q_DESC);
    w(C.QUEUE_DRIVER_LO, 4, Q_AVAIL);
    w(C.QUEUE_DEVICE_LO, 4, Q_USED);
    w(C.QUEUE_MSIX_VECTOR, 2, msix ? 0 : 0xffff);
    w(C.CONFIG_MSIX_VECTOR, 2, msix ? 1 : 0xffff);
    w(C.QUEUE_ENABLE, 2, 1);
    w(C.DEVICE_STATUS, 1, 0x0f);
    b.ram.bytes.fill(0, Q_AVAIL, Q_USED + 0x100);
    availIdx = 0;
    if (msix) {
      for (const v of [0, 1]) {
        b.memory.write(0xfebf_2000 + 16 * v, 4, 0xfee0_0000 + v * 0x1000);
        b.memory.write(0xfebf_2000 + 16 * v + 8, 4, 0x40 + v);
        b.memory.write(0xfebf_2000 + 16 * v + 12, 4, 0);
      }
      b.cfg(5).write(vp.msix.capability + 2, 0x8000, 2);
    }
  };
  const setDesc = (i: number, addr: number, len: number, flags: number) => {
    const at = Q_DESC + 16 * i;
    view.setBigUint64(at, BigInt(addr), true);
    view.setUint32(at + 8, len, true);
    view.setUint16(at + 12, flags, true);
    view.setUint16(at + 14, i + 1, true);
  };
  const request = (
    { slot, type, sector, fill }: { slot: number; type: number; sector: number; fill: number },
  ) => {
    const header = Q_HEADERS + 0x100 * slot;
    const data = Q_DATA + 0x1000 * slot;
    view.setUint32(header, type, true);
    view.setBigUint64(header + 8, BigInt(sector), true);
    if (type === VirtioBlkRequest.OUT) b.ram.bytes.fill(fill, data, data + 512);
    const d = 3 * slot;
    setDesc(d, header, 16, VIRTQ_DESC_F_NEXT);
    setDesc(
      d + 1,
      data,
      type === VirtioBlkRequest.GET_ID ? 20 : 512,
      VIRTQ_DESC_F_NEXT | (type === 1 ? 0 : W),
    );
    setDesc(d + 2, header + 0x20, 1, W);
    view.setUint16(Q_AVAIL + 4 + 2 * (availIdx % Q_SIZE), d, true);
    availIdx = (availIdx + 1) & 0xffff;
    view.setUint16(Q_AVAIL + 2, availIdx, true);
  };
  const W = VIRTQ_DESC_F_WRITE;
  const RAM_SAVED = Q_DATA + 0x1000 * SLOTS;
  return {
    vp,
    device: {
      saveState: () => ({
        vp: vp.saveState(),
        ram: b.ram.bytes.slice(0, RAM_SAVED),
        disk: disk.bytes.slice(),
      }),
      loadState: (state) => {
        vp.loadState(state.vp as StateObject);
        b.ram.bytes.set(state.ram as Uint8Array);
        disk.bytes.set(state.disk as Uint8Array);
        availIdx = view.getUint16(Q_AVAIL + 2, true);
      },
    },
    step(op) {
      if ("bringUp" in op) bringUp(op.bringUp.eventIdx, op.bringUp.msix);
      else if ("common" in op) w(op.common, op.size, op.value);
      else if ("readCommon" in op) return r(op.readCommon, 2);
      else if ("request" in op) request(op.request);
      else if ("notify" in op) notify(op.notify);
      else if ("usedEvent" in op) view.setUint16(Q_AVAIL + 4 + 2 * Q_SIZE, op.usedEvent, true);
      else if ("isr" in op) return isr();
      else if ("command" in op) b.cfg(5).write(0x04, op.command, 2);
      else if ("msixControl" in op) b.cfg(5).write(vp.msix.capability + 2, op.msixControl, 2);
      else return r(0x2000 + op.readDeviceConfig, 4);
      return [vp.device.status, vp.device.broken];
    },
    observe: () => [
      b.irq.level,
      b.msis.splice(0),
      b.log.splice(0),
      b.ram.bytes.slice(Q_USED, Q_USED + 8 + 8 * Q_SIZE),
      b.ram.bytes.slice(Q_HEADERS, Q_HEADERS + 0x100 * SLOTS),
    ],
    close: () => b[Symbol.dispose](),
    [Symbol.dispose]: () => b[Symbol.dispose](),
  };
}

Deno.test("VirtioPci state: a loaded virtio-blk-pci completes the same requests with the same interrupts", () => {
  checkRoundTrip(vpHarness, vpOp, { numRuns: 80, maxPrefix: 50, maxSuffix: 30 });
});

Deno.test("VirtioPci state: mid-run, the next notify processes exactly the next request; MSI-X routes rebuilt", () => {
  using a = vpHarness();
  a.step({ bringUp: { eventIdx: true, msix: true } });
  a.step({ request: { slot: 0, type: 1, sector: 3, fill: 0xab } });
  a.step({ notify: 0 });
  a.step({ request: { slot: 1, type: 0, sector: 3, fill: 0 } }); // offered, not yet notified
  a.observe();
  const state = a.device.saveState();
  const vectors: number[] = [];
  using b = vpHarness();
  b.observe();
  const onChange = b.vp.msix; // the harness's board does not route: look at the vectors directly
  b.device.loadState(state);
  for (let v = 0; v < 2; v++) if (!onChange.isMasked(v)) vectors.push(v);
  assert.deepEqual(vectors, [0, 1], "both vectors unmasked after load");
  assert.equal(b.vp.notifyAddress(0), 0xfe00_3000n, "BAR 4 mapped where the config says");
  b.step({ notify: 0 });
  a.step({ notify: 0 });
  assert.deepEqual(b.observe(), a.observe());
  const data = (h: typeof a) =>
    (h.device.saveState().ram as Uint8Array).slice(Q_DATA + 0x1000, Q_DATA + 0x1000 + 512);
  assert.ok(data(b).every((x) => x === 0xab), "the read after the load sees the write before it");
});

Deno.test("VirtioPci state: bad states name the field path and leave the device unchanged", () => {
  using h = vpHarness();
  h.step({ bringUp: { eventIdx: false, msix: false } });
  h.step({ request: { slot: 0, type: 4, sector: 0, fill: 0 } });
  h.step({ notify: 0 });
  const vpHarnessOnly: StateHarness<never> = {
    device: h.vp,
    step: () => undefined,
    observe: () => h.observe(),
  };
  assert.ok(checkBadStates(vpHarnessOnly, "virtio-blk-pci", { skipOutOfRange: [] }) >= 50);
  const state = h.vp.saveState();
  const device = state.device as StateObject;
  const queues = device.queues as StateObject[];
  const bad: [StateObject, RegExp][] = [
    [{ ...state, queueSelect: 1 }, /"queueSelect" is 1, not in 0..0/],
    [
      { ...state, device: { ...device, queues: [{ ...queues[0], size: 512 }] } },
      /"device.queues\[0\].size" is 512/,
    ],
    [{ ...state, device: { ...device, queues: [] } }, /"device.queues" has 0 elements, not 1/],
    [
      { ...state, device: { ...device, driverFeatures: 1n << 40n } },
      /"device.driverFeatures" has 0x10000000000, not offered/,
    ],
    [
      { ...state, device: { ...device, model: { config: new Uint8Array(0x24) } } },
      /"device.model.config" differs .* another disk/,
    ],
    [
      { ...state, msix: { ...(state.msix as StateObject), pba: new Uint8Array(1) } },
      /"msix.pba" has 1 bytes, not 8/,
    ],
  ];
  for (const [s, message] of bad) {
    assert.throws(
      () => h.vp.loadState(s),
      (e: Error) => e.name === "DeviceStateError" && message.test(e.message),
    );
  }
  // A state from virtio-rng-pci: another device ID in the read-only config bytes.
  using other = board();
  const rng = new VirtioPci({ ...other.options, model: new VirtioRng({ entropy: (x) => x.fill(1) }) });
  assert.throws(
    () => h.vp.loadState(rng.saveState()),
    /virtio-blk-pci: state field "config" has 0x44 at offset 0x02/,
  );
  assert.deepEqual(h.vp.saveState(), state);
});
