import assert from "node:assert/strict";
import { type BlockBacking, VirtioNetFeature } from "../../devices/virtio/mod.ts";
import { DiskImage, TUN_F_CSUM, TUN_F_TSO4 } from "../../kvm/mod.ts";
import { buildDsdtAml } from "../acpi/mod.ts";
import { DiskBlockBacking, TapNetBackend } from "../virtio_backends.ts";
import { PcBoard } from "./pc_board.ts";
import { pciIntxIrq, SharedIrqLines } from "./pc_pci.ts";
import { cfg, fakeTap, netDriver } from "./_pci_test_util.ts";

function memoryDisk(size: number, readOnly = false): BlockBacking & { bytes: Uint8Array } {
  const bytes = new Uint8Array(size);
  return {
    bytes,
    size: BigInt(size),
    readOnly,
    read: (o, into) => into.set(bytes.subarray(Number(o), Number(o) + into.length)),
    write: (o, from) => bytes.set(from, Number(o)),
    flush: () => {},
  };
}

async function board() {
  return await PcBoard.create({
    ramSize: 256n << 20n,
    pciDevices: [
      { type: "virtio-rng-pci", entropy: (b) => b.fill(7) },
      { type: "virtio-blk-pci", backing: memoryDisk(1 << 20), id: "disk0" },
    ],
  });
}

Deno.test("PC PCI: virtio devices from slot 2 in order, BARs assigned as SeaBIOS packs them below the IOAPIC", async () => {
  using b = await board();
  assert.deepEqual(b.pciDevices.map((d) => [d.slot, d.spec.type]), [[2, "virtio-rng-pci"], [
    3,
    "virtio-blk-pci",
  ]]);
  const [rng, blk] = b.pciDevices.map((d) => d.fn);
  // 4 KiB MSI-X BARs at the top, the 16 KiB prefetchable ones below, largest first, slot order.
  assert.equal(rng.barAddress(1), 0xfebf_e000n);
  assert.equal(blk.barAddress(1), 0xfebf_f000n);
  assert.equal(rng.barAddress(4), 0xfebf_4000n);
  assert.equal(blk.barAddress(4), 0xfebf_8000n);
  // Decoding on, bus mastering left to the driver, the interrupt line as the DSDT's _PRT says.
  assert.equal(cfg(b, 2).read(0x04, 2), 0x0002);
  assert.equal(cfg(b, 2).read(0x3c, 1), pciIntxIrq(2, 1));
  assert.equal(cfg(b, 3).read(0x3c, 1), pciIntxIrq(3, 1));
  // The device answers at its BAR: common config's num_queues of virtio-blk is 1.
  assert.equal(Number(b.memory.read(0xfebf_8000 + 0x12, 2).value), 1);
  const info = b.infoPci();
  assert.match(info, /Bus {2}0, device {3}3, function 0:\n {4}SCSI controller: PCI device 1af4:1042\n/);
  assert.match(info, /BAR4: 64 bit prefetchable memory at 0xfebf8000 \[0xfebfbfff\]\.\n {6}id "disk0"/);
  assert.match(info, /device {3}2, function 0:\n {4}Class 0255: PCI device 1af4:1044/);
});

Deno.test("PC PCI: a guest that moves a BAR through configuration writes reaches the device at the new address", async () => {
  using b = await board();
  const c = cfg(b, 3);
  c.write(0x04, 0x0000, 2); // decoding off while the BAR moves, as Linux does
  c.write(0x20, 0xffff_ffff, 4); // sizing
  assert.equal(c.read(0x20, 4), 0xffff_c00c);
  c.write(0x20, 0xe000_000c, 4);
  c.write(0x24, 0, 4);
  c.write(0x04, 0x0006, 2);
  assert.equal(b.pciDevices[1].fn.barAddress(4), 0xe000_0000n);
  assert.equal(Number(b.memory.read(0xe000_0012, 2).value), 1, "num_queues at the new address");
  assert.notEqual(Number(b.memory.read(0xfebf_8012, 2).value), 1, "nothing left at the old one");
  // A system reset puts the BARs back where the board assigns them.
  b.resetDevices();
  assert.equal(b.pciDevices[1].fn.barAddress(4), 0xfebf_8000n);
});

Deno.test("PC PCI: INTx of slot s pin p is the DSDT's _PRT link, on a shared level line", () => {
  // QEMU 7.2's info pci: slot 3 (e1000) IRQ 11, slot 4 IRQ 11, slot 5 IRQ 10.
  assert.deepEqual([2, 3, 4, 5].map((s) => pciIntxIrq(s, 1)), [10, 11, 11, 10]);
  // The _PRT entry for slot 2 pin A names LNKB (IRQ 10): Package { 0x0002ffff, 0, LNKB, 0 }.
  const aml = buildDsdtAml();
  const entry = Uint8Array.from([0x0c, 0xff, 0xff, 0x02, 0x00, 0x00, 0x4c, 0x4e, 0x4b]);
  const at = aml.findIndex((_, i) => entry.every((v, j) => aml[i + j] === v));
  assert.ok(at > 0);
  assert.equal(String.fromCharCode(aml[at + entry.length]), "B");
  const levels: boolean[] = [];
  const shared = new SharedIrqLines(() => ({ set: (l) => levels.push(l) }));
  const [x, y] = [shared.source(11), shared.source(11)];
  x.set(true);
  y.set(true);
  x.set(false);
  assert.deepEqual(levels, [true]);
  y.set(false);
  assert.deepEqual(levels, [true, false]);
});

Deno.test("PC PCI: the MP table lists a PCI bus and each device's INTA# on the pin the _PRT gives (acpi=off)", async () => {
  using b = await board();
  const mp = b.firmwareTables.find((t) => t.name === "MP table")!;
  const bytes = mp.bytes;
  const at = (sig: string) =>
    bytes.findIndex((_, i) => sig.split("").every((c, j) => bytes[i + j] === c.charCodeAt(0)));
  const pcmp = at("PCMP");
  const count = bytes[pcmp + 34] | (bytes[pcmp + 35] << 8);
  const entries: number[][] = [];
  for (let p = pcmp + 44, n = 0; n < count; n++) {
    const len = bytes[p] === 0 ? 20 : 8;
    entries.push([...bytes.subarray(p, p + len)]);
    p += len;
  }
  const buses = entries.filter((e) => e[0] === 1).map((e) => String.fromCharCode(...e.slice(2, 8)).trim());
  // PCI bus 0 must be MP bus 0 (Linux matches the bus number); ISA follows as bus 1.
  assert.deepEqual(entries.filter((e) => e[0] === 1).map((e) => e[1]), [0, 1]);
  assert.deepEqual(buses, ["PCI", "ISA"]);
  // I/O interrupt entries on bus 0 (PCI): source IRQ = slot << 2 | (pin - 1), level/high.
  const pci = entries.filter((e) => e[0] === 3 && e[4] === 0).map((e) => [e[5] >> 2, e[7], e[2]]);
  assert.deepEqual(pci, [[2, pciIntxIrq(2, 1), 0x0d], [3, pciIntxIrq(3, 1), 0x0d]]);
  // The ISA entries of those pins agree (level/high, as the MADT's overrides).
  const isa = entries.filter((e) => e[0] === 3 && e[4] === 0 && (e[7] === 10 || e[7] === 11)).map((e) =>
    e[2]
  );
  assert.deepEqual(isa, [0x0d, 0x0d]);
});

Deno.test("PC PCI: a driver writes a sector through virtio-blk at the board's BARs; the image has it, MSI-X fires", async () => {
  const path = Deno.makeTempFileSync({ suffix: ".img" });
  try {
    Deno.truncateSync(path, 1 << 20);
    using image = DiskImage.open(path);
    const sent: [bigint, number][] = [];
    let fences = 0;
    using b = await PcBoard.create({
      ramSize: 64n << 20n,
      pciDevices: [{ type: "virtio-blk-pci", backing: new DiskBlockBacking(image) }],
      deliverMsi: (address, data) => void sent.push([address, data]),
      fence: () => void fences++,
    });
    const fn = b.pciDevices[0].fn;
    const bar4 = Number(fn.barAddress(4)!);
    const bar1 = Number(fn.barAddress(1)!);
    const c = cfg(b, 2);
    c.write(0x04, 0x0006, 2); // memory decode, bus master
    for (const [v, data] of [[0, 0x41], [1, 0x42]]) {
      b.memory.write(bar1 + 16 * v, 4, 0xfee0_0000);
      b.memory.write(bar1 + 16 * v + 8, 4, data);
      b.memory.write(bar1 + 16 * v + 12, 4, 0); // unmasked
    }
    c.write(fn.msix.capability + 2, 0x8000, 2); // MSI-X on
    const common = (off: number, size: number, v: number) => b.memory.write(bar4 + off, size, v);
    common(0x14, 1, 1 | 2); // ACKNOWLEDGE | DRIVER
    common(0x08, 4, 1); // driver_feature_select 1
    common(0x0c, 4, 1); // VIRTIO_F_VERSION_1
    common(0x14, 1, 1 | 2 | 8); // FEATURES_OK
    assert.equal(Number(b.memory.read(bar4 + 0x14, 1).value) & 8, 8);
    const [desc, avail, used] = [0x10_0000, 0x10_1000, 0x10_2000];
    common(0x16, 2, 0); // queue_select
    common(0x18, 2, 8); // queue_size
    common(0x1a, 2, 1); // queue_msix_vector
    common(0x20, 4, desc);
    common(0x28, 4, avail);
    common(0x30, 4, used);
    common(0x1c, 2, 1); // queue_enable
    common(0x14, 1, 1 | 2 | 8 | 4); // DRIVER_OK
    // OUT, sector 1: header, 512 bytes of data, status byte.
    const [header, data, status] = [0x20_0000, 0x20_1000, 0x20_2000];
    b.memory.write(header, 4, 1);
    b.memory.write(header + 8, 8, 1n);
    const sector = Uint8Array.from({ length: 512 }, (_, i) => (i * 7) & 0xff);
    b.memory.rw(data, sector, true);
    b.memory.write(status, 1, 0xff);
    const d = (i: number, addr: number, len: number, flags: number, next: number) => {
      b.memory.write(desc + 16 * i, 8, BigInt(addr));
      b.memory.write(desc + 16 * i + 8, 4, len);
      b.memory.write(desc + 16 * i + 12, 2, flags);
      b.memory.write(desc + 16 * i + 14, 2, next);
    };
    d(0, header, 16, 1, 1);
    d(1, data, 512, 1, 2);
    d(2, status, 1, 2, 0);
    b.memory.write(avail + 4, 2, 0); // ring[0] = head 0
    b.memory.write(avail + 2, 2, 1); // idx 1
    b.memory.write(bar4 + 0x3000, 2, 0); // notify queue 0
    assert.equal(Number(b.memory.read(used + 2, 2).value), 1, "used.idx");
    assert.equal(Number(b.memory.read(status, 1).value), 0, "status OK");
    const back = new Uint8Array(512);
    image.read(back, 512n);
    assert.deepEqual(back, sector);
    assert.deepEqual(sent, [[0xfee0_0000n, 0x42]]);
    assert.ok(fences > 0, "the ring barriers ran");
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("PC PCI: virtio-net through the board's BARs — a sent frame reaches the tap, a tap frame the guest, with back-pressure", async () => {
  const tap = fakeTap();
  const backend = new TapNetBackend(tap);
  const sent: number[] = [];
  using b = await PcBoard.create({
    ramSize: 64n << 20n,
    pciDevices: [{ type: "virtio-net-pci", mac: [0x52, 0x54, 0, 0x12, 0x34, 0x57], backend, id: "nic0" }],
    deliverMsi: (_a, data) => void sent.push(data),
  });
  assert.match(b.infoPci(), /Ethernet controller: PCI device 1af4:1041\n/);
  const d = netDriver(b, 2);
  assert.deepEqual(d.mac, [0x52, 0x54, 0, 0x12, 0x34, 0x57]);
  assert.equal(d.linkStatus, 1);
  const frame = Uint8Array.from({ length: 60 }, (_, i) => i);
  d.send(frame);
  assert.equal(d.usedIdx(1), 1);
  assert.deepEqual(
    tap.written,
    [Uint8Array.from([...new Array(12).fill(0), ...frame])],
    "a zero header in front",
  );
  assert.deepEqual(sent, [0x42]);
  // Receive: the tap's header (here with DATA_VALID set) is replaced by a zero one.
  const incoming = Uint8Array.from({ length: 100 }, (_, i) => 255 - i);
  tap.queued.push(
    Uint8Array.from([2, ...new Array(11).fill(0), ...incoming]),
    Uint8Array.from([0, ...new Array(11).fill(0), ...frame]),
  );
  assert.equal(backend.pump(), false, "no receive buffer: the frame waits");
  assert.equal(tap.queued.length, 1);
  d.post(0x40_0000); // the driver's notify pumps again: one buffer, one frame
  assert.equal(d.usedIdx(0), 1);
  assert.equal(d.usedLen(0, 0), 112);
  const got = new Uint8Array(112);
  b.memory.rw(0x40_0000, got, false);
  assert.deepEqual([...got.subarray(0, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
  assert.deepEqual(got.subarray(12), incoming);
  assert.equal(backend.drained, false);
  let drained = 0;
  backend.onDrained = () => void drained++;
  d.post(0x40_1000);
  assert.equal(d.usedIdx(0), 2);
  assert.equal(backend.drained, true);
  assert.equal(drained, 1);
  assert.deepEqual(sent, [0x42, 0x41, 0x41]);
});

Deno.test("PC PCI: virtio-net's tap takes the receive offloads the driver accepted (TUNSETOFFLOAD), and nothing more", async () => {
  const tap = fakeTap();
  const backend = new TapNetBackend(tap);
  using b = await PcBoard.create({
    ramSize: 64n << 20n,
    pciDevices: [{ type: "virtio-net-pci", mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56], backend }],
  });
  const F = VirtioNetFeature;
  netDriver(b, 2, Number(F.GUEST_CSUM | F.GUEST_TSO4 | F.HOST_TSO6 | F.CSUM | F.MRG_RXBUF));
  assert.deepEqual(tap.offloads, [TUN_F_CSUM | TUN_F_TSO4]);
  assert.equal(backend.offloads, TUN_F_CSUM | TUN_F_TSO4);
});
