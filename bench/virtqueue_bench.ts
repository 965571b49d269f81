/**
 * The JavaScript cost of one virtio request on the VM thread, without KVM:
 * `deno bench -A bench/virtqueue_bench.ts`.
 *
 * A PcBoard with mmap'd guest RAM (the KVM layer's `GuestMemory`, as a running machine has, so
 * data moves through live views), its devices set up as Linux sets them up (VERSION_1,
 * INDIRECT_DESC, EVENT_IDX, MSI-X), and a driver written here that posts requests straight into
 * guest RAM and re-arms `used_event` after each completion, as a guest at queue depth 1 does. The
 * notify is `VirtioDevice.notifyQueue`, what the VM thread calls when a queue's ioeventfd fires;
 * the completion interrupt is a counted MSI message. Cases:
 *
 * - virtio-blk 4 KiB read: header, data and status in an indirect table (Linux's layout with
 *   INDIRECT_DESC), from a raw image file (pread into guest RAM), and from an in-memory disk (no
 *   system call: what is left is the JavaScript);
 * - the same as a plain 3-descriptor chain, and without EVENT_IDX;
 * - the ring alone: `Virtqueue.pop` + `push` + `shouldNotify` of a 3-descriptor chain, no device;
 * - virtio-net: a 1500-byte frame transmitted (header and frame in one buffer, as Linux with
 *   VERSION_1) to a tap backend whose tap takes every write, and one received into a posted buffer.
 *
 * @module
 */

import { cfg } from "../machine/pc/_pci_test_util.ts";
import { PcBoard } from "../machine/pc/pc_board.ts";
import { allocatePcMemory, sharedMemoryFence } from "../machine/pc/pc_machine.ts";
import { FIRMWARE } from "../machine/guests/firmware.ts";
import { DiskBlockBacking, TapNetBackend } from "../machine/virtio_backends.ts";
import type { PcPciDeviceSpec } from "../machine/pc/pc_pci.ts";
import { DiskImage, Kvm } from "../kvm/mod.ts";
import type { BlockBacking } from "../devices/virtio/virtio_blk.ts";
import { VIRTIO_NET_DEFAULT_MAC } from "../devices/virtio/virtio_net.ts";

const RAM_SIZE = 64n << 20n;
const QUEUE_SIZE = 256;
const F_INDIRECT = 1 << 28;
const F_EVENT_IDX = 1 << 29;
const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;
const DESC_F_INDIRECT = 4;
const NET_HDR = 12;
const FRAME = 1500;

/** Guest-physical layout of each queue: 64 KiB apart from 1 MiB. */
const queueBase = (q: number) => 0x10_0000 + q * 0x1_0000;

/** A board with one PCI device set up by a driver with `features` (word 0), every queue enabled. */
async function board(spec: PcPciDeviceSpec, features: number) {
  const cleanup: Disposable[] = [];
  const memory = allocatePcMemory(RAM_SIZE, BigInt(FIRMWARE.length), cleanup);
  let messages = 0;
  const b = await PcBoard.create({
    ramSize: RAM_SIZE,
    backings: memory,
    pciDevices: [spec],
    deliverMsi: () => void messages++,
    fence: sharedMemoryFence(),
  });
  const fn = b.pciDevices[0].fn;
  const bar4 = Number(fn.barAddress(4)!);
  const bar1 = Number(fn.barAddress(1)!);
  const config = cfg(b, 2); // the first PCI device's slot
  config.write(0x04, 0x0006, 2); // memory decoding, bus mastering
  const queues = fn.device.queues.length;
  for (let v = 1; v <= queues; v++) {
    b.memory.write(bar1 + 16 * v, 4, 0xfee0_0000);
    b.memory.write(bar1 + 16 * v + 12, 4, 0); // unmasked
  }
  config.write(fn.msix.capability + 2, 0x8000, 2); // MSI-X on
  const common = (off: number, size: number, v: number) => b.memory.write(bar4 + off, size, v);
  common(0x14, 1, 3); // ACKNOWLEDGE | DRIVER
  common(0x08, 4, 0);
  common(0x0c, 4, features);
  common(0x08, 4, 1);
  common(0x0c, 4, 1); // VERSION_1
  common(0x14, 1, 11); // | FEATURES_OK
  for (let q = 0; q < queues; q++) {
    common(0x16, 2, q);
    common(0x18, 2, QUEUE_SIZE);
    common(0x1a, 2, q + 1);
    const base = queueBase(q);
    common(0x20, 4, base);
    common(0x28, 4, base + 0x1000);
    common(0x30, 4, base + 0x2000);
    common(0x1c, 2, 1);
  }
  common(0x14, 1, 15); // | DRIVER_OK
  const ram = memory.ram.view(0n, Number(RAM_SIZE));
  return {
    board: b,
    device: fn.device,
    ram,
    dv: new DataView(ram.buffer, ram.byteOffset, ram.byteLength),
    get messages() {
      return messages;
    },
    [Symbol.dispose]() {
      b[Symbol.dispose]();
      for (const c of cleanup.reverse()) c[Symbol.dispose]();
    },
  };
}

/** The driver's side of queue `q`: descriptors, offers, and `used_event` re-armed at every completion. */
class Driver {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  availIdx = 0;
  usedSeen = 0;
  constructor(readonly dv: DataView, q: number) {
    const base = queueBase(q);
    this.desc = base;
    this.avail = base + 0x1000;
    this.used = base + 0x2000;
  }
  setDesc(table: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const at = table + 16 * i;
    this.dv.setBigUint64(at, BigInt(addr), true);
    this.dv.setUint32(at + 8, len, true);
    this.dv.setUint16(at + 12, flags, true);
    this.dv.setUint16(at + 14, next, true);
  }
  offer(head: number): void {
    this.dv.setUint16(this.avail + 4 + 2 * (this.availIdx % QUEUE_SIZE), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.dv.setUint16(this.avail + 2, this.availIdx, true);
  }
  /** Takes the completions and asks for an interrupt at the next one (virtqueue_enable_cb). */
  reap(): number {
    const idx = this.dv.getUint16(this.used + 2, true);
    const n = (idx - this.usedSeen) & 0xffff;
    this.usedSeen = idx;
    this.dv.setUint16(this.avail + 4 + 2 * QUEUE_SIZE, idx, true);
    return n;
  }
}

const HEADER = 0x20_0000;
const STATUS = 0x20_1000;
const DATA = 0x30_0000;
const INDIRECT = 0x20_2000;

/**
 * virtio-blk reading `segments` pages at a stride over `backing`; `indirect`: Linux's layout. The
 * pages lie 8 KiB apart, as an O_DIRECT buffer's pages in a guest are rarely adjacent.
 */
async function blkCase(backing: BlockBacking, features: number, indirect: boolean, segments = 1) {
  const t = await board({ type: "virtio-blk-pci", backing }, features);
  const d = new Driver(t.dv, 0);
  if (indirect) {
    d.setDesc(INDIRECT, 0, HEADER, 16, DESC_F_NEXT, 1);
    for (let i = 1; i <= segments; i++) {
      d.setDesc(INDIRECT, i, DATA + 0x2000 * (i - 1), 4096, DESC_F_WRITE | DESC_F_NEXT, i + 1);
    }
    d.setDesc(INDIRECT, segments + 1, STATUS, 1, DESC_F_WRITE, 0);
    d.setDesc(d.desc, 0, INDIRECT, 16 * (segments + 2), DESC_F_INDIRECT, 0);
  } else {
    d.setDesc(d.desc, 0, HEADER, 16, DESC_F_NEXT, 1);
    d.setDesc(d.desc, 1, DATA, 4096, DESC_F_WRITE | DESC_F_NEXT, 2);
    d.setDesc(d.desc, 2, STATUS, 1, DESC_F_WRITE, 0);
  }
  const sectors = Number(backing.size / 512n) - 8 * segments;
  let sector = 0;
  const device = t.device;
  return {
    t,
    request() {
      sector = (sector + 8 * 97) % sectors & ~7;
      t.dv.setUint32(HEADER, 0, true); // IN
      t.dv.setBigUint64(HEADER + 8, BigInt(sector), true);
      d.offer(0);
      device.notifyQueue(0);
      if (d.reap() !== 1 || t.ram[STATUS] !== 0) throw new Error("request failed");
    },
  };
}

const imagePath = Deno.makeTempFileSync({ suffix: ".img" });
{
  const bytes = new Uint8Array(16 << 20);
  for (let i = 0; i < bytes.length; i += 512) bytes[i] = i >> 9;
  Deno.writeFileSync(imagePath, bytes);
}
const image = DiskImage.open(imagePath, { lock: false });
globalThis.addEventListener("unload", () => {
  image.close();
  Deno.removeSync(imagePath);
});

const memDisk = new Uint8Array(16 << 20);
const memBacking: BlockBacking = {
  size: BigInt(memDisk.length),
  readOnly: false,
  read: (o, into) => into.set(memDisk.subarray(Number(o), Number(o) + into.length)),
  write: (o, from) => memDisk.set(from, Number(o)),
  flush: () => {},
};

const linux = F_INDIRECT | F_EVENT_IDX;
const fileBlk = await blkCase(new DiskBlockBacking(image), linux, true);
Deno.bench({ name: "virtio-blk 4 KiB read, indirect, EVENT_IDX, raw file (pread)", group: "blk" }, () => {
  fileBlk.request();
});
const bigBlk = await blkCase(new DiskBlockBacking(image), linux, true, 256);
Deno.bench({ name: "virtio-blk 1 MiB read in 256 pages, indirect, raw file (preadv)", group: "blk" }, () => {
  bigBlk.request();
});
/** A disk whose vectored reads move nothing: what is left of a big request is the JavaScript per page. */
const nullBacking: BlockBacking = { ...memBacking, readSpans: () => {}, writeSpans: () => {} };
const nullBigBlk = await blkCase(nullBacking, linux, true, 256);
Deno.bench({
  name: "virtio-blk 1 MiB read in 256 pages, indirect, null disk (readSpans moves nothing)",
  group: "blk",
}, () => {
  nullBigBlk.request();
});
const memBlk = await blkCase(memBacking, linux, true);
Deno.bench({
  name: "virtio-blk 4 KiB read, indirect, EVENT_IDX, in-memory disk",
  group: "blk",
  baseline: true,
}, () => {
  memBlk.request();
});
const directBlk = await blkCase(memBacking, F_EVENT_IDX, false);
Deno.bench(
  { name: "virtio-blk 4 KiB read, 3-descriptor chain, EVENT_IDX, in-memory disk", group: "blk" },
  () => {
    directBlk.request();
  },
);
const plainBlk = await blkCase(memBacking, 0, false);
Deno.bench(
  { name: "virtio-blk 4 KiB read, 3-descriptor chain, no EVENT_IDX, in-memory disk", group: "blk" },
  () => {
    plainBlk.request();
  },
);

/** The ring alone: the blk device's queue walked without the device. */
async function ringCase(features: number) {
  const t = await board({ type: "virtio-blk-pci", backing: memBacking }, features);
  const d = new Driver(t.dv, 0);
  d.setDesc(d.desc, 0, HEADER, 16, DESC_F_NEXT, 1);
  d.setDesc(d.desc, 1, DATA, 4096, DESC_F_WRITE | DESC_F_NEXT, 2);
  d.setDesc(d.desc, 2, STATUS, 1, DESC_F_WRITE, 0);
  const queue = t.device.queues[0];
  return () => {
    d.offer(0);
    const chain = queue.pop()!;
    queue.push(chain, chain.writableLength);
    if (!queue.shouldNotify() || d.reap() !== 1) throw new Error("no completion");
  };
}
const ringEvent = await ringCase(F_EVENT_IDX);
Deno.bench({ name: "ring only: pop + push + shouldNotify, 3 descriptors, EVENT_IDX", group: "ring" }, () => {
  ringEvent();
});
const ringPlain = await ringCase(0);
Deno.bench(
  { name: "ring only: pop + push + shouldNotify, 3 descriptors, no EVENT_IDX", group: "ring" },
  () => {
    ringPlain();
  },
);

/** virtio-net over a tap backend whose tap takes every frame and has none to give. */
async function netCase() {
  let sent = 0;
  const tap = {
    fd: -1,
    vnetHeaderSize: NET_HDR,
    writeSpans: (header: Uint8Array) => (sent++, header.length),
    setOffloads: () => {},
    read: () => null,
  };
  const backend = new TapNetBackend(tap);
  let net: { receive(frame: Uint8Array): boolean } | undefined;
  const t = await board({
    type: "virtio-net-pci",
    mac: VIRTIO_NET_DEFAULT_MAC,
    backend: {
      attach: (n) => (net = n, backend.attach(n)),
      send: (header, frame) => backend.send(header, frame),
      receiveReady: () => backend.receiveReady(),
    },
  }, linux);
  const rx = new Driver(t.dv, 0);
  const tx = new Driver(t.dv, 1);
  const RX_BUF = 0x40_0000;
  const TX_BUF = 0x50_0000;
  rx.setDesc(rx.desc, 0, RX_BUF, NET_HDR + 1518, DESC_F_WRITE, 0);
  tx.setDesc(tx.desc, 0, TX_BUF, NET_HDR + FRAME, 0, 0);
  t.ram.fill(0x5a, TX_BUF + NET_HDR, TX_BUF + NET_HDR + FRAME);
  const frame = new Uint8Array(FRAME).fill(0xa5);
  return {
    transmit() {
      tx.offer(0);
      t.device.notifyQueue(1);
      if (tx.reap() !== 1) throw new Error("not sent");
    },
    receive() {
      rx.offer(0);
      if (!net!.receive(frame) || rx.reap() !== 1) throw new Error("not received");
    },
    get sent() {
      return sent;
    },
  };
}
const net = await netCase();
Deno.bench(
  { name: "virtio-net transmit of a 1500-byte frame (tap backend, no syscall)", group: "net" },
  () => {
    net.transmit();
  },
);
Deno.bench({ name: "virtio-net receive of a 1500-byte frame into a posted buffer", group: "net" }, () => {
  net.receive();
});

// The completion interrupt as PcMachine sends it: KVM_SIGNAL_MSI from the VM thread (where the host
// has a KVM; the vCPU's LAPIC is left software-disabled, so KVM answers 0 after the whole path).
let kvm: Kvm | undefined;
try {
  kvm = Kvm.open();
} catch {
  kvm = undefined;
}
if (kvm !== undefined) {
  const vm = kvm.createVm();
  vm.createIrqchip();
  vm.createVcpu(0);
  const message = { addressLo: 0xfee0_0000, addressHi: 0, data: 0x41 };
  Deno.bench({ name: "KVM_SIGNAL_MSI of one completion interrupt", group: "msi" }, () => {
    vm.signalMsi(message);
  });
}
