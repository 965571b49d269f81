import assert from "node:assert/strict";
import fc from "fast-check";
import { AddressSpace, MemoryRegion, type RamBacking } from "../../memory/mod.ts";
import { AddressSpaceGuestMemory, type GuestMemory } from "./guest_memory.ts";
import { StateReader } from "../device_state.ts";
import { ByteDisk, ByteRam, DriverQueue } from "./_test_util.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./virtqueue.ts";
import { VirtioDevice, VirtioFeature, VirtioStatus } from "./virtio_device.ts";
import { VirtioBlk, VirtioBlkFeature, VirtioBlkRequest, VirtioBlkStatus } from "./virtio_blk.ts";

const DESC = 0x1000n;
const HDR = 0x8000;
const DATA = 0x9000;
const STATUS = 0xf000;

/** `blk` on a device whose queue 0 (16 entries) the driver set up in `ram`; the device reaches it through `memory`. */
function readyDevice(blk: VirtioBlk, memory: GuestMemory, ram: ByteRam) {
  const log: string[] = [];
  const dev = new VirtioDevice(blk, { memory, log: (l) => log.push(l) });
  dev.setDriverFeatures(VirtioFeature.VERSION_1);
  dev.setStatus(VirtioStatus.FEATURES_OK);
  const q = dev.queues[0];
  q.size = 16;
  q.descAddr = DESC;
  q.driverAddr = 0x2000n;
  q.deviceAddr = 0x3000n;
  dev.enableQueue(0);
  const driver = new DriverQueue(ram, 16, DESC, 0x2000n, 0x3000n);
  /** Posts a request: header, the data buffers (readable for OUT, writable otherwise), status. */
  const post = (type: number, sector: bigint, data: { addr: number; len: number }[]) => {
    ram.view.setUint32(HDR, type, true);
    ram.view.setUint32(HDR + 4, 0, true);
    ram.view.setBigUint64(HDR + 8, sector, true);
    ram.bytes[STATUS] = 0xaa;
    const readable = type === VirtioBlkRequest.OUT || type === VirtioBlkRequest.DISCARD ||
      type === VirtioBlkRequest.WRITE_ZEROES;
    const flags = readable ? 0 : VIRTQ_DESC_F_WRITE;
    const descs = [
      { addr: BigInt(HDR), len: 16, flags: 0 },
      ...data.map((s) => ({ addr: BigInt(s.addr), len: s.len, flags })),
      { addr: BigInt(STATUS), len: 1, flags: VIRTQ_DESC_F_WRITE },
    ];
    descs.forEach((d, i) =>
      driver.setDesc(DESC, i, {
        ...d,
        flags: d.flags | (i + 1 < descs.length ? VIRTQ_DESC_F_NEXT : 0),
        next: i + 1,
      })
    );
    driver.offer(0);
    dev.notifyQueue(0);
  };
  return { log, dev, driver, post };
}

/** A disk that can discard and zero ranges: discarded bytes read as 0xdd here, to tell them apart. */
class TrimDisk extends ByteDisk {
  readonly calls: string[] = [];
  discard(offset: bigint, length: bigint): void {
    if (this.fail || this.readOnly) throw new Error("discard failed"); // as a backing that unmaps
    this.calls.push(`discard ${offset} ${length}`);
    this.bytes.fill(0xdd, Number(offset), Number(offset + length));
  }
  writeZeroes(offset: bigint, length: bigint, mayUnmap: boolean): void {
    if (this.fail) throw new Error("write zeroes failed");
    this.calls.push(`zeroes ${offset} ${length}${mayUnmap ? " unmap" : ""}`);
    this.bytes.fill(0, Number(offset), Number(offset + length));
  }
}

function setup(
  options: {
    readOnly?: boolean;
    serial?: string;
    diskSize?: number;
    trim?: boolean;
    discard?: boolean;
    writeZeroes?: boolean;
  } = {},
) {
  const ram = new ByteRam(0x2_0000);
  const size = options.diskSize ?? 64 * 512;
  const disk = options.trim ? new TrimDisk(size, options.readOnly) : new ByteDisk(size, options.readOnly);
  const blk = new VirtioBlk({
    backing: disk,
    serial: options.serial,
    queueSize: 16,
    discard: options.discard,
    writeZeroes: options.writeZeroes,
  });
  const { log, dev, driver, post } = readyDevice(blk, ram, ram);
  /** Posts header + data (readable for OUT, writable otherwise) + status; returns the used element. */
  const request = (type: number, sector: bigint, dataLen: number, data?: Uint8Array) => {
    if (data) ram.bytes.set(data, DATA);
    const before = driver.usedIdx();
    post(type, sector, dataLen > 0 ? [{ addr: DATA, len: dataLen }] : []);
    assert.equal(driver.usedIdx(), (before + 1) & 0xffff, "one request completed");
    return { status: ram.bytes[STATUS], len: driver.usedElem(before).len };
  };
  return { ram, disk, blk, dev, log, request, driver, post };
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

/** Guest RAM in two regions of a real address space, whose backings give views (as KVM's does). */
function twoRegionSetup() {
  const half = 0x2_0000;
  const ram = new ByteRam(2 * half);
  const backing = (base: number): RamBacking => ({
    size: BigInt(half),
    read: (o, out) => out.set(ram.bytes.subarray(base + Number(o), base + Number(o) + out.length)),
    write: (o, data) => ram.bytes.set(data, base + Number(o)),
    view: (o, n) => ram.bytes.subarray(base + Number(o), base + Number(o) + n),
  });
  const system = MemoryRegion.container("system", 1n << 64n);
  system.addSubregion(0, MemoryRegion.ram("ram-below", half, { backing: backing(0) }));
  system.addSubregion(half, MemoryRegion.ram("ram-above", half, { backing: backing(half) }));
  const as = new AddressSpace(system, "memory");
  const disk = new ByteDisk(256 * 512);
  // Which transfers went straight between the disk and guest RAM, and which through a copy.
  const calls = { inPlace: 0, bounced: 0, vectored: 0 };
  const count = (b: Uint8Array) => b.buffer === ram.bytes.buffer ? calls.inPlace++ : calls.bounced++;
  const blk = new VirtioBlk({
    backing: {
      size: disk.size,
      readOnly: false,
      read: (o, into) => (count(into), disk.read(o, into)),
      write: (o, from) => (count(from), disk.write(o, from)),
      flush: () => disk.flush(),
      readv: (o, into) => {
        calls.vectored++;
        for (const b of into) disk.read(o, b), count(b), o += BigInt(b.length);
      },
      writev: (o, from) => {
        calls.vectored++;
        for (const b of from) disk.write(o, b), count(b), o += BigInt(b.length);
      },
    },
    queueSize: 16,
  });
  const { log, post } = readyDevice(blk, new AddressSpaceGuestMemory(as), ram);
  /** Header, the data in `segments` (address, length), status; returns the status byte. */
  const request = (type: number, sector: bigint, segments: { addr: number; len: number }[]) => {
    post(type, sector, segments);
    return ram.bytes[STATUS];
  };
  return { half, ram, disk, calls, log, request, [Symbol.dispose]: () => as.close() };
}

Deno.test("VirtioBlk: data moves in place where a buffer is one piece of RAM, through the bounce buffer where it crosses regions", () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(fc.record({ len: fc.integer({ min: 1, max: 5000 }), gap: fc.nat(64) }), {
        minLength: 1,
        maxLength: 6,
      }),
      fc.nat(12_000),
      fc.nat(100),
      fc.uint8Array({ minLength: 64, maxLength: 64 }),
      (isWrite, shape, before, sector, seed) => {
        using t = twoRegionSetup();
        const { half, ram, disk, calls } = t;
        // Lay the buffers out from just below the region boundary, with gaps; pad to whole sectors.
        const total = shape.reduce((sum, s) => sum + s.len, 0);
        const pad = (512 - total % 512) % 512;
        const segments: { addr: number; len: number }[] = [];
        let at = half - before;
        shape.forEach((s, i) => {
          at += s.gap;
          const len = s.len + (i === shape.length - 1 ? pad : 0);
          segments.push({ addr: at, len });
          at += len;
        });
        for (let i = 0x1_0000; i < ram.bytes.length; i++) ram.bytes[i] = seed[i & 63] ^ (i >> 6);
        const ramBefore = ram.bytes.slice();
        const diskBefore = disk.bytes.slice();
        const status = t.request(
          isWrite ? VirtioBlkRequest.OUT : VirtioBlkRequest.IN,
          BigInt(sector),
          segments,
        );
        assert.equal(status, VirtioBlkStatus.OK);
        assert.deepEqual(t.log, []);
        // The guest's bytes, in order, are the disk's at the sector; nothing else changed.
        const start = sector * 512;
        let offset = start;
        const inside = new Uint8Array(ram.bytes.length);
        for (const s of segments) {
          const guest = ram.bytes.subarray(s.addr, s.addr + s.len);
          assert.deepEqual(guest, disk.bytes.subarray(offset, offset + s.len));
          inside.fill(1, s.addr, s.addr + s.len);
          offset += s.len;
        }
        for (let i = 0x1_0000; i < ram.bytes.length; i++) {
          if (!inside[i] && ram.bytes[i] !== ramBefore[i]) {
            assert.fail(`guest byte 0x${i.toString(16)} changed`);
          }
        }
        assert.deepEqual(disk.bytes.subarray(0, start), diskBefore.subarray(0, start));
        assert.deepEqual(disk.bytes.subarray(offset), diskBefore.subarray(offset));
        // Exactly the buffers that cross the boundary were copied.
        const crossing = segments.filter((s) => s.addr < half && s.addr + s.len > half).length;
        assert.equal(calls.bounced, crossing);
        assert.equal(calls.inPlace, segments.length - crossing);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("VirtioBlk: consecutive in-place buffers go to the disk in one vectored call", () => {
  using t = twoRegionSetup();
  const segments = [0x1_0000, 0x1_2000, 0x1_1000, 0x2_4000].map((addr) => ({ addr, len: 0x1000 }));
  assert.equal(t.request(VirtioBlkRequest.IN, 8n, segments), VirtioBlkStatus.OK);
  assert.deepEqual(t.calls, { inPlace: 4, bounced: 0, vectored: 1 });
  assert.deepEqual(
    t.ram.bytes.subarray(0x1_2000, 0x1_3000),
    t.disk.bytes.subarray(8 * 512 + 0x1000, 8 * 512 + 0x2000),
  );
});

/**
 * A device over one region of RAM that gives views (so requests gather into spans), whose backing
 * starts transfers and finishes them when the test says (`pending`), as the io_uring backing does.
 */
function asyncSetup() {
  const ram = new ByteRam(0x4_0000);
  const system = MemoryRegion.container("system", 1n << 64n);
  system.addSubregion(
    0,
    MemoryRegion.ram("ram", ram.bytes.length, {
      backing: {
        size: BigInt(ram.bytes.length),
        read: (o, out) => out.set(ram.bytes.subarray(Number(o), Number(o) + out.length)),
        write: (o, data) => ram.bytes.set(data, Number(o)),
        view: (o, n) => ram.bytes.subarray(Number(o), Number(o) + n),
      },
    }),
  );
  const as = new AddressSpace(system, "memory");
  const disk = new ByteDisk(256 * 512);
  const pending: { isWrite: boolean; offset: number; bytes: number; done: (ok: boolean) => void }[] = [];
  const spansCopy = (
    isWrite: boolean,
    offset: bigint,
    spans: {
      count: number;
      buffers: readonly ArrayBufferLike[];
      offsets: readonly number[];
      lengths: readonly number[];
    },
  ) => {
    let at = Number(offset);
    for (let i = 0; i < spans.count; i++) {
      const view = new Uint8Array(spans.buffers[i], spans.offsets[i], spans.lengths[i]);
      if (isWrite) disk.bytes.set(view, at);
      else view.set(disk.bytes.subarray(at, at + view.length));
      at += view.length;
    }
    return at - Number(offset);
  };
  let room = true;
  /** What a backing's drain does: every started request completes. */
  const drain = () => {
    while (pending.length > 0) pending.shift()!.done(true);
  };
  const blk = new VirtioBlk({
    backing: {
      size: disk.size,
      readOnly: false,
      read: (o, into) => disk.read(o, into),
      write: (o, from) => disk.write(o, from),
      flush: () => disk.flush(),
      readSpans: (o, spans) => void spansCopy(false, o, spans),
      writeSpans: (o, spans) => void spansCopy(true, o, spans),
      // The data moves at once (the spans are read now); the completion waits for the test.
      startSpans: (isWrite, o, spans, done) => {
        if (!room) return false;
        const bytes = spansCopy(isWrite, o, spans);
        pending.push({ isWrite, offset: Number(o), bytes, done });
        return true;
      },
      startFlush: (done) => {
        if (!room) return false;
        pending.push({ isWrite: false, offset: -1, bytes: 0, done });
        return true;
      },
      drain,
    },
    queueSize: 16,
  });
  const { log, dev, driver } = readyDevice(blk, new AddressSpaceGuestMemory(as), ram);
  const irqs: number[] = [];
  dev.interrupt = (vector) => irqs.push(vector);
  dev.setStatus(VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK);
  /** Request `k` (descriptors 3k…3k+2, its own header, 4 KiB of data and status byte), offered. */
  const offer = (k: number, type: number, sector: bigint) => {
    const hdr = HDR + 16 * k;
    ram.view.setUint32(hdr, type, true);
    ram.view.setBigUint64(hdr + 8, sector, true);
    ram.bytes[STATUS + k] = 0xaa;
    const flags = type === VirtioBlkRequest.OUT ? 0 : VIRTQ_DESC_F_WRITE;
    driver.setDesc(DESC, 3 * k, { addr: BigInt(hdr), len: 16, flags: VIRTQ_DESC_F_NEXT, next: 3 * k + 1 });
    driver.setDesc(DESC, 3 * k + 1, {
      addr: BigInt(0x1_0000 + 0x1000 * k),
      len: 0x1000,
      flags: flags | VIRTQ_DESC_F_NEXT,
      next: 3 * k + 2,
    });
    driver.setDesc(DESC, 3 * k + 2, { addr: BigInt(STATUS + k), len: 1, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    driver.offer(3 * k);
  };
  return {
    ram,
    disk,
    blk,
    dev,
    log,
    irqs,
    driver,
    pending,
    offer,
    drain,
    setRoom: (r: boolean) => room = r,
    [Symbol.dispose]: () => as.close(),
  };
}

Deno.test("VirtioBlk: a started read or write completes when the backing says, in any order, with one interrupt each", () => {
  using t = asyncSetup();
  t.offer(0, VirtioBlkRequest.IN, 8n);
  t.offer(1, VirtioBlkRequest.OUT, 16n);
  t.ram.bytes.fill(0x5a, 0x1_1000, 0x1_2000);
  t.dev.notifyQueue(0);
  assert.equal(t.pending.length, 2, "both started");
  assert.equal(t.driver.usedIdx(), 0, "nothing completes before the backing does");
  assert.deepEqual(t.irqs, []);
  t.pending[1].done(true); // the write ends first
  assert.equal(t.driver.usedIdx(), 1);
  assert.deepEqual(t.driver.usedElem(0), { id: 3, len: 1 });
  assert.equal(t.ram.bytes[STATUS + 1], VirtioBlkStatus.OK);
  assert.equal(t.ram.bytes[STATUS], 0xaa, "the read's status is not written yet");
  assert.equal(t.irqs.length, 1);
  t.pending[0].done(false); // the read fails
  assert.equal(t.driver.usedIdx(), 2);
  assert.deepEqual(t.driver.usedElem(1), { id: 0, len: 0x1001 });
  assert.equal(t.ram.bytes[STATUS], VirtioBlkStatus.IOERR);
  assert.equal(t.irqs.length, 2);
  assert.deepEqual(t.disk.bytes.subarray(16 * 512, 16 * 512 + 0x1000), new Uint8Array(0x1000).fill(0x5a));
  assert.deepEqual(t.log, []);
});

Deno.test("VirtioBlk: a backing with no room now moves the data itself; checks still come first", () => {
  using t = asyncSetup();
  t.setRoom(false);
  t.offer(0, VirtioBlkRequest.IN, 2n);
  t.offer(1, VirtioBlkRequest.IN, 255n); // 8 sectors from the last one: past the capacity
  t.dev.notifyQueue(0);
  assert.equal(t.pending.length, 0);
  assert.equal(t.driver.usedIdx(), 2, "both completed at once");
  assert.equal(t.ram.bytes[STATUS], VirtioBlkStatus.OK);
  assert.equal(t.ram.bytes[STATUS + 1], VirtioBlkStatus.IOERR);
  assert.deepEqual(t.ram.bytes.subarray(0x1_0000, 0x1_1000), t.disk.bytes.subarray(1024, 1024 + 0x1000));
  t.setRoom(true);
  t.offer(2, VirtioBlkRequest.IN, 255n);
  t.dev.notifyQueue(0);
  assert.equal(t.pending.length, 0, "a request past the capacity never starts");
  assert.equal(t.ram.bytes[STATUS + 2], VirtioBlkStatus.IOERR);
});

Deno.test("VirtioBlk: drain completes the requests in flight; a reset drains and completes none", () => {
  using t = asyncSetup();
  t.offer(0, VirtioBlkRequest.IN, 0n);
  t.dev.notifyQueue(0);
  assert.equal(t.pending.length, 1);
  t.drain(); // a snapshot's: the request completes, with its interrupt
  assert.equal(t.driver.usedIdx(), 1);
  assert.equal(t.irqs.length, 1);
  t.offer(1, VirtioBlkRequest.IN, 0n);
  t.dev.notifyQueue(0);
  assert.equal(t.pending.length, 1);
  t.dev.reset(); // the queues first, then the model's drain: its completion finds the queue reset
  assert.equal(t.pending.length, 0, "reset drained the backing");
  assert.equal(t.ram.bytes[STATUS + 1], 0xaa, "a request from before the reset is not completed");
  assert.equal(t.driver.usedIdx(), 1);
  assert.equal(t.irqs.length, 1);
  assert.deepEqual(t.log, []);
});

Deno.test("VirtioBlk: a FLUSH the backing started completes when it says; without room it flushes at once", () => {
  using t = asyncSetup();
  t.offer(0, VirtioBlkRequest.FLUSH, 0n);
  t.dev.notifyQueue(0);
  assert.equal(t.pending.length, 1);
  assert.equal(t.pending[0].offset, -1, "the flush, not a transfer");
  assert.equal(t.driver.usedIdx(), 0);
  assert.equal(t.disk.flushes, 0);
  t.pending[0].done(true);
  assert.equal(t.driver.usedIdx(), 1);
  assert.equal(t.ram.bytes[STATUS], VirtioBlkStatus.OK);
  t.setRoom(false);
  t.offer(1, VirtioBlkRequest.FLUSH, 0n);
  t.dev.notifyQueue(0);
  assert.equal(t.driver.usedIdx(), 2);
  assert.equal(t.disk.flushes, 1);
  assert.equal(t.ram.bytes[STATUS + 1], VirtioBlkStatus.OK);
});

/** A DISCARD or WRITE_ZEROES segment: sector, sector count, flags. */
function segment(sector: bigint, sectors: number, flags = 0): Uint8Array {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, sector, true);
  view.setUint32(8, sectors, true);
  view.setUint32(12, flags, true);
  return bytes;
}

Deno.test("VirtioBlk: DISCARD and WRITE_ZEROES offered where the backing can, with QEMU 7.2's limits", () => {
  const { blk } = setup({ trim: true, diskSize: 1 << 20 });
  assert.equal(
    blk.features,
    VirtioBlkFeature.SEG_MAX | VirtioBlkFeature.BLK_SIZE | VirtioBlkFeature.FLUSH | VirtioBlkFeature.DISCARD |
      VirtioBlkFeature.WRITE_ZEROES,
  );
  assert.equal(blk.configSize, 57, "through write_zeroes_may_unmap, as QEMU sizes it");
  assert.equal(blk.readConfig(36, 4), 0x3f_ffff, "max_discard_sectors: BDRV_REQUEST_MAX_SECTORS");
  assert.equal(blk.readConfig(40, 4), 1, "max_discard_seg");
  assert.equal(blk.readConfig(44, 4), 1, "discard_sector_alignment: blk_size in sectors");
  assert.equal(blk.readConfig(48, 4), 0x3f_ffff, "max_write_zeroes_sectors");
  assert.equal(blk.readConfig(52, 4), 1, "max_write_zeroes_seg");
  assert.equal(blk.readConfig(56, 1), 1, "write_zeroes_may_unmap");
  // QEMU's properties take them away; a backing without the methods never offers them.
  const noDiscard = setup({ trim: true, discard: false }).blk;
  assert.equal(noDiscard.features & VirtioBlkFeature.DISCARD, 0n);
  assert.equal(noDiscard.configSize, 57);
  assert.equal(noDiscard.readConfig(36, 4), 0);
  const onlyDiscard = setup({ trim: true, writeZeroes: false }).blk;
  assert.equal(onlyDiscard.configSize, 48);
  assert.equal(setup({ trim: true, discard: false, writeZeroes: false }).blk.configSize, 0x24);
  assert.equal(setup().blk.configSize, 0x24);
});

Deno.test("VirtioBlk: DISCARD and WRITE_ZEROES act on the first segment's range; QEMU's IOERR and UNSUPP cases", () => {
  const { disk, request } = setup({ trim: true });
  const trim = disk as TrimDisk;
  const ok = VirtioBlkStatus.OK;
  assert.equal(request(VirtioBlkRequest.DISCARD, 0n, 16, segment(2n, 3)).status, ok);
  assert.equal(request(VirtioBlkRequest.WRITE_ZEROES, 0n, 16, segment(10n, 2)).status, ok);
  assert.equal(request(VirtioBlkRequest.WRITE_ZEROES, 0n, 16, segment(20n, 1, 1)).status, ok);
  assert.deepEqual(trim.calls, ["discard 1024 1536", "zeroes 5120 1024", "zeroes 10240 512 unmap"]);
  assert.ok(disk.bytes.subarray(1024, 2560).every((b) => b === 0xdd));
  assert.ok(disk.bytes.subarray(5120, 6144).every((b) => b === 0));
  // The header's own sector is not used: the segment says where.
  const { status, len } = request(VirtioBlkRequest.DISCARD, 99n, 16, segment(63n, 1));
  assert.deepEqual([status, len], [ok, 1]);
  const calls = trim.calls.length;
  const io = VirtioBlkStatus.IOERR;
  assert.equal(request(VirtioBlkRequest.DISCARD, 0n, 16, segment(63n, 2)).status, io, "past the end");
  assert.equal(request(VirtioBlkRequest.DISCARD, 0n, 16, segment(1n << 62n, 1)).status, io);
  const unsupp = VirtioBlkStatus.UNSUPP;
  assert.equal(
    request(VirtioBlkRequest.DISCARD, 0n, 16, segment(0n, 1, 1)).status,
    unsupp,
    "UNMAP on a discard",
  );
  assert.equal(
    request(VirtioBlkRequest.WRITE_ZEROES, 0n, 16, segment(0n, 1, 2)).status,
    unsupp,
    "unknown flag",
  );
  assert.equal(trim.calls.length, calls, "none of those reached the disk");
  disk.fail = true;
  assert.equal(request(VirtioBlkRequest.WRITE_ZEROES, 0n, 16, segment(0n, 1)).status, io, "a failing disk");
  // Two segments (one is offered): UNSUPP, as QEMU; neither range is touched.
  const two = new Uint8Array([...segment(0n, 1), ...segment(8n, 1)]);
  assert.equal(request(VirtioBlkRequest.WRITE_ZEROES, 0n, 32, two).status, unsupp, "two segments");
  assert.equal(trim.calls.length, calls);
  // A read-only disk refuses WRITE_ZEROES itself and leaves DISCARD to its backing (this one
  // unmaps: IOERR; QEMU's with discard=ignore answers OK). A disk without them, or a property that
  // took them away: UNSUPP.
  const ro = setup({ trim: true, readOnly: true });
  assert.equal(ro.request(VirtioBlkRequest.DISCARD, 0n, 16, segment(0n, 1)).status, io);
  assert.equal(ro.request(VirtioBlkRequest.WRITE_ZEROES, 0n, 16, segment(0n, 1)).status, io);
  assert.deepEqual((ro.disk as TrimDisk).calls, []);
  assert.equal(setup().request(VirtioBlkRequest.DISCARD, 0n, 16, segment(0n, 1)).status, unsupp);
  const off = setup({ trim: true, writeZeroes: false });
  assert.equal(off.request(VirtioBlkRequest.WRITE_ZEROES, 0n, 16, segment(0n, 1)).status, unsupp);
  assert.equal(off.request(VirtioBlkRequest.DISCARD, 0n, 16, segment(0n, 1)).status, ok);
});

Deno.test("VirtioBlk: a DISCARD without its whole segment is a protocol error (the device needs a reset)", () => {
  const { ram, dev, log, post, disk } = setup({ trim: true });
  ram.bytes.set(segment(0n, 1), DATA);
  post(VirtioBlkRequest.DISCARD, 0n, [{ addr: DATA, len: 8 }]);
  assert.ok(dev.status & VirtioStatus.DEVICE_NEEDS_RESET);
  assert.match(log.join("\n"), /discard request of 24 bytes \(32 needed\)/);
  assert.deepEqual((disk as TrimDisk).calls, []);
});

Deno.test("VirtioBlk: a DISCARD or WRITE_ZEROES over the sector limit is IOERR even inside a large disk", () => {
  // An 8 GiB disk that is never read: only its size and the two methods matter here.
  const calls: string[] = [];
  const big = {
    size: 8n << 30n,
    readOnly: false,
    read: () => {},
    write: () => {},
    flush: () => {},
    discard: (o: bigint, n: bigint) => void calls.push(`discard ${o} ${n}`),
    writeZeroes: (o: bigint, n: bigint) => void calls.push(`zeroes ${o} ${n}`),
  };
  const ram = new ByteRam(0x2_0000);
  const { post, driver } = readyDevice(new VirtioBlk({ backing: big, queueSize: 16 }), ram, ram);
  const status = (type: number, sectors: number) => {
    ram.bytes.set(segment(0n, sectors), DATA);
    const before = driver.usedIdx();
    post(type, 0n, [{ addr: DATA, len: 16 }]);
    assert.equal(driver.usedIdx(), (before + 1) & 0xffff);
    return ram.bytes[STATUS];
  };
  assert.equal(status(VirtioBlkRequest.DISCARD, 0x40_0000), VirtioBlkStatus.IOERR);
  assert.equal(status(VirtioBlkRequest.WRITE_ZEROES, 0x40_0000), VirtioBlkStatus.IOERR);
  assert.equal(status(VirtioBlkRequest.DISCARD, 0x3f_ffff), VirtioBlkStatus.OK);
  assert.equal(status(VirtioBlkRequest.WRITE_ZEROES, 0x3f_ffff), VirtioBlkStatus.OK);
  assert.deepEqual(calls, [`discard 0 ${0x3f_ffffn * 512n}`, `zeroes 0 ${0x3f_ffffn * 512n}`]);
});
