import assert from "node:assert/strict";
import { StateReader } from "../device_state.ts";
import { ByteDisk, ByteRam, DriverQueue } from "./_test_util.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./virtqueue.ts";
import { VirtioDevice, VirtioFeature, VirtioStatus } from "./virtio_device.ts";
import { VirtioBlk, VirtioBlkFeature, VirtioBlkRequest, VirtioBlkStatus } from "./virtio_blk.ts";

const DESC = 0x1000n;
const HDR = 0x8000;
const DATA = 0x9000;
const STATUS = 0xf000;

function setup(options: { readOnly?: boolean; serial?: string; diskSize?: number } = {}) {
  const ram = new ByteRam(0x2_0000);
  const disk = new ByteDisk(options.diskSize ?? 64 * 512, options.readOnly);
  const blk = new VirtioBlk({ backing: disk, serial: options.serial, queueSize: 16 });
  const log: string[] = [];
  const dev = new VirtioDevice(blk, { memory: ram, log: (l) => log.push(l) });
  dev.setDriverFeatures(VirtioFeature.VERSION_1);
  dev.setStatus(VirtioStatus.FEATURES_OK);
  const q = dev.queues[0];
  q.size = 16;
  q.descAddr = DESC;
  q.driverAddr = 0x2000n;
  q.deviceAddr = 0x3000n;
  dev.enableQueue(0);
  const driver = new DriverQueue(ram, 16, DESC, 0x2000n, 0x3000n);
  /** Posts header + data (readable for OUT, writable otherwise) + status; returns the used element. */
  const request = (type: number, sector: bigint, dataLen: number, data?: Uint8Array) => {
    ram.view.setUint32(HDR, type, true);
    ram.view.setUint32(HDR + 4, 0, true);
    ram.view.setBigUint64(HDR + 8, sector, true);
    ram.bytes[STATUS] = 0xaa;
    if (data) ram.bytes.set(data, DATA);
    const out = type === VirtioBlkRequest.OUT;
    const descs = [{ addr: BigInt(HDR), len: 16, flags: 0 }];
    if (dataLen > 0) descs.push({ addr: BigInt(DATA), len: dataLen, flags: out ? 0 : VIRTQ_DESC_F_WRITE });
    descs.push({ addr: BigInt(STATUS), len: 1, flags: VIRTQ_DESC_F_WRITE });
    descs.forEach((d, i) =>
      driver.setDesc(DESC, i, {
        ...d,
        flags: d.flags | (i + 1 < descs.length ? VIRTQ_DESC_F_NEXT : 0),
        next: i + 1,
      })
    );
    driver.offer(0);
    const before = driver.usedIdx();
    dev.notifyQueue(0);
    assert.equal(driver.usedIdx(), (before + 1) & 0xffff, "one request completed");
    return { status: ram.bytes[STATUS], len: driver.usedElem(before).len };
  };
  return { ram, disk, blk, dev, log, request, driver };
}

Deno.test("VirtioBlk: configuration space and features as QEMU offers them", () => {
  const { blk } = setup({ diskSize: 1 << 20 });
  assert.equal(blk.readConfig(0, 4), 2048);
  assert.equal(blk.readConfig(4, 4), 0);
  assert.equal(blk.readConfig(12, 4), 14, "seg_max = queue size − 2");
  assert.equal(blk.readConfig(20, 4), 512);
  assert.equal(blk.readConfig(34, 2), 1);
  assert.equal(blk.features, VirtioBlkFeature.SEG_MAX | VirtioBlkFeature.BLK_SIZE | VirtioBlkFeature.FLUSH);
  assert.ok(setup({ readOnly: true }).blk.features & VirtioBlkFeature.RO);
  // A size that is not whole sectors rounds down.
  const odd = new VirtioBlk({ backing: new ByteDisk(1000) });
  assert.equal(odd.capacity, 1n);
  assert.throws(() => new VirtioBlk({ backing: new ByteDisk(512), serial: "x".repeat(21) }), RangeError);
});

Deno.test("VirtioBlk: IN reads whole sectors; the used length is the whole writable part", () => {
  const { ram, disk, request } = setup();
  const r = request(VirtioBlkRequest.IN, 3n, 1024);
  assert.equal(r.status, VirtioBlkStatus.OK);
  assert.equal(r.len, 1025);
  assert.deepEqual(ram.bytes.subarray(DATA, DATA + 1024), disk.bytes.subarray(3 * 512, 5 * 512));
});

Deno.test("VirtioBlk: OUT writes; FLUSH flushes", () => {
  const { disk, request } = setup();
  const data = new Uint8Array(512).fill(0x77);
  assert.equal(request(VirtioBlkRequest.OUT, 63n, 512, data).status, VirtioBlkStatus.OK);
  assert.ok(disk.bytes.subarray(63 * 512).every((b) => b === 0x77));
  assert.equal(request(VirtioBlkRequest.FLUSH, 0n, 0).status, VirtioBlkStatus.OK);
  assert.equal(disk.flushes, 1);
});

Deno.test("VirtioBlk: IOERR for ranges past the capacity, partial sectors, read-only writes, failing disks", () => {
  const { request, disk } = setup();
  assert.equal(request(VirtioBlkRequest.IN, 63n, 1024).status, VirtioBlkStatus.IOERR, "one sector too far");
  assert.equal(request(VirtioBlkRequest.IN, 64n, 512).status, VirtioBlkStatus.IOERR);
  assert.equal(request(VirtioBlkRequest.IN, 0xffff_ffff_ffff_ffffn, 512).status, VirtioBlkStatus.IOERR);
  assert.equal(request(VirtioBlkRequest.IN, 0n, 100).status, VirtioBlkStatus.IOERR);
  assert.equal(request(VirtioBlkRequest.IN, 62n, 1024).status, VirtioBlkStatus.OK, "the last two sectors");
  disk.fail = true;
  assert.equal(request(VirtioBlkRequest.IN, 0n, 512).status, VirtioBlkStatus.IOERR);
  assert.equal(request(VirtioBlkRequest.FLUSH, 0n, 0).status, VirtioBlkStatus.IOERR);
  const ro = setup({ readOnly: true });
  const before = ro.disk.bytes.slice();
  assert.equal(ro.request(VirtioBlkRequest.OUT, 0n, 512, new Uint8Array(512)).status, VirtioBlkStatus.IOERR);
  assert.deepEqual(ro.disk.bytes, before);
  assert.equal(ro.request(VirtioBlkRequest.IN, 0n, 512).status, VirtioBlkStatus.OK);
});

Deno.test("VirtioBlk: GET_ID writes the serial (NUL-terminated when shorter than 20); other types UNSUPP", () => {
  const { ram, request } = setup({ serial: "KVMTS-0001" });
  ram.bytes.fill(0xee, DATA, DATA + 20);
  assert.equal(request(VirtioBlkRequest.GET_ID, 0n, 20).status, VirtioBlkStatus.OK);
  assert.equal(new TextDecoder().decode(ram.bytes.subarray(DATA, DATA + 10)), "KVMTS-0001");
  assert.equal(ram.bytes[DATA + 10], 0);
  assert.equal(ram.bytes[DATA + 11], 0xee, "nothing past the NUL");
  const full = setup({ serial: "ABCDEFGHIJKLMNOPQRST" });
  full.request(VirtioBlkRequest.GET_ID, 0n, 20);
  assert.equal(new TextDecoder().decode(full.ram.bytes.subarray(DATA, DATA + 20)), "ABCDEFGHIJKLMNOPQRST");
  assert.equal(request(11, 0n, 512).status, VirtioBlkStatus.UNSUPP, "DISCARD is not offered");
  assert.equal(
    request(VirtioBlkRequest.IN | 0x8000_0000, 0n, 512).status,
    VirtioBlkStatus.OK,
    "barrier bit ignored",
  );
});

Deno.test("VirtioBlk: a request without header or status buffer makes the device need a reset", () => {
  const { ram, driver, dev, log } = setup();
  driver.setDesc(DESC, 0, { addr: BigInt(HDR), len: 16, flags: 0, next: 0 }); // no status byte
  driver.offer(0);
  dev.notifyQueue(0);
  assert.ok(dev.status & VirtioStatus.DEVICE_NEEDS_RESET);
  assert.match(log[0], /virtio-blk: virtio-blk request without a header or a status buffer/);
  const short = setup();
  short.driver.setDesc(DESC, 0, { addr: BigInt(HDR), len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
  short.driver.setDesc(DESC, 1, { addr: BigInt(STATUS), len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  short.driver.offer(0);
  short.dev.notifyQueue(0);
  assert.match(short.log[0], /header of 8 bytes/);
  assert.equal(ram.refused, 0);
});

Deno.test("VirtioBlk state: the configuration is checked; a disk of another size is refused", () => {
  const blk = new VirtioBlk({ backing: new ByteDisk(1 << 20) });
  const state = blk.saveState();
  assert.equal(new DataView((state.config as Uint8Array).buffer).getBigUint64(0, true), 2048n, "capacity");
  assert.doesNotThrow(() =>
    new VirtioBlk({ backing: new ByteDisk(1 << 20) }).prepareState(new StateReader("d", state))()
  );
  const smaller = new VirtioBlk({ backing: new ByteDisk(1 << 19) });
  assert.throws(
    () => smaller.prepareState(new StateReader("virtio-blk-pci", state)),
    /virtio-blk-pci: state field "config" differs from this device's at byte 1 \(capacity/,
  );
  assert.throws(
    () => smaller.prepareState(new StateReader("d", { config: 1 })),
    /"config" is the number 1, not bytes/,
  );
});
