/**
 * The cost of one virtio-blk request through the board without KVM: the driver's notify write to
 * BAR 4 through the memory API, the queue walk over guest RAM (with the ring barriers), the copy
 * from the backing store, the used-ring update and the MSI-X message. On a KVM machine an MMIO
 * exit round trip is added per notify (docs/kvm-abi.md §8).
 *
 * @module
 */

import { cfg } from "./_pci_test_util.ts";
import { PcBoard } from "./pc_board.ts";
import { sharedMemoryFence } from "./pc_machine.ts";

async function setup(requestBytes: number) {
  const disk = new Uint8Array(1 << 20);
  let messages = 0;
  const b = await PcBoard.create({
    ramSize: 64n << 20n,
    pciDevices: [{
      type: "virtio-blk-pci",
      backing: {
        size: BigInt(disk.length),
        readOnly: false,
        read: (o, into) => into.set(disk.subarray(Number(o), Number(o) + into.length)),
        write: (o, from) => disk.set(from, Number(o)),
        flush: () => {},
      },
    }],
    deliverMsi: () => void messages++,
    fence: sharedMemoryFence(),
  });
  const fn = b.pciDevices[0].fn;
  const bar4 = Number(fn.barAddress(4)!);
  const bar1 = Number(fn.barAddress(1)!);
  const config = cfg(b, 2); // the first PCI device's slot
  config.write(0x04, 0x0006, 2);
  b.memory.write(bar1 + 16, 4, 0xfee0_0000);
  b.memory.write(bar1 + 28, 4, 0);
  config.write(fn.msix.capability + 2, 0x8000, 2);
  const common = (off: number, size: number, v: number) => b.memory.write(bar4 + off, size, v);
  common(0x14, 1, 3);
  common(0x08, 4, 1);
  common(0x0c, 4, 1);
  common(0x14, 1, 11);
  const [desc, avail, used] = [0x10_0000, 0x10_1000, 0x10_2000];
  common(0x16, 2, 0);
  common(0x18, 2, 256);
  common(0x1a, 2, 1);
  common(0x20, 4, desc);
  common(0x28, 4, avail);
  common(0x30, 4, used);
  common(0x1c, 2, 1);
  common(0x14, 1, 15);
  const [header, data, status] = [0x20_0000, 0x30_0000, 0x20_2000];
  b.memory.write(header, 4, 0); // IN, sector 0
  const d = (i: number, addr: number, len: number, flags: number, next: number) => {
    b.memory.write(desc + 16 * i, 8, BigInt(addr));
    b.memory.write(desc + 16 * i + 8, 4, len);
    b.memory.write(desc + 16 * i + 12, 2, flags);
    b.memory.write(desc + 16 * i + 14, 2, next);
  };
  d(0, header, 16, 1, 1);
  d(1, data, requestBytes, 1 | 2, 2);
  d(2, status, 1, 2, 0);
  let idx = 0;
  return {
    request() {
      b.memory.write(avail + 4 + 2 * (idx % 256), 2, 0);
      idx = (idx + 1) & 0xffff;
      b.memory.write(avail + 2, 2, idx);
      b.memory.write(bar4 + 0x3000, 2, 0);
    },
    get messages() {
      return messages;
    },
  };
}

for (const size of [4096, 65536]) {
  const driver = await setup(size);
  Deno.bench(
    `virtio-blk: one ${size / 1024} KiB read request through the board (notify → MSI-X), no KVM`,
    () => {
      driver.request();
    },
  );
}
