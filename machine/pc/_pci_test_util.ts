/**
 * The driver's side of the PC board's virtio functions, for the board tests: configuration access
 * through ports 0xcf8/0xcfc, a virtio-net bring-up at the BARs, and a tap in memory.
 *
 * @module
 */
import type { BufferSpans } from "../../kvm/disk_image.ts";
import type { PcBoard } from "./pc_board.ts";

/** Configuration access through ports 0xcf8/0xcfc, as a guest does it. */
export function cfg(b: PcBoard, slot: number) {
  const select = (offset: number) => b.io.write(0xcf8, 4, 0x8000_0000 | (slot << 11) | (offset & 0xfc));
  return {
    read(offset: number, size: number): number {
      select(offset);
      return Number(b.io.read(0xcfc + (offset & 3), size).value);
    },
    write(offset: number, value: number, size: number): void {
      select(offset);
      b.io.write(0xcfc + (offset & 3), size, value);
    },
  };
}

/**
 * A driver's bring-up of a two-queue virtio-net function at the board's BARs (MSI-X vectors 1 and
 * 2), accepting MAC, STATUS and the offered ones of `accept` (bits 0–31).
 */
export function netDriver(b: PcBoard, slot: number, accept = 0) {
  const fn = b.pciDevices[slot - 2].fn;
  const bar4 = Number(fn.barAddress(4)!);
  const bar1 = Number(fn.barAddress(1)!);
  const c = cfg(b, slot);
  c.write(0x04, 0x0006, 2);
  for (const [v, data] of [[0, 0x40], [1, 0x41], [2, 0x42]]) {
    b.memory.write(bar1 + 16 * v, 4, 0xfee0_0000);
    b.memory.write(bar1 + 16 * v + 8, 4, data);
    b.memory.write(bar1 + 16 * v + 12, 4, 0);
  }
  c.write(fn.msix.capability + 2, 0x8000, 2);
  const common = (off: number, size: number, v: number) => b.memory.write(bar4 + off, size, v);
  common(0x14, 1, 1 | 2);
  common(0x00, 4, 0); // device_feature_select 0
  const features = Number(b.memory.read(bar4 + 0x04, 4).value);
  common(0x08, 4, 0);
  common(0x0c, 4, features & ((1 << 5) | (1 << 16) | accept)); // MAC, STATUS and those asked for
  common(0x08, 4, 1);
  common(0x0c, 4, 1); // VERSION_1
  common(0x14, 1, 1 | 2 | 8);
  const base = 0x10_0000;
  const rings = [0, 1].map((q) => ({
    desc: base + q * 0x1_0000,
    avail: base + q * 0x1_0000 + 0x1000,
    used: base + q * 0x1_0000 + 0x2000,
  }));
  for (const q of [0, 1]) {
    common(0x16, 2, q);
    common(0x18, 2, 8);
    common(0x1a, 2, q + 1);
    common(0x20, 4, rings[q].desc);
    common(0x28, 4, rings[q].avail);
    common(0x30, 4, rings[q].used);
    common(0x1c, 2, 1);
  }
  common(0x14, 1, 1 | 2 | 8 | 4);
  const notifyOff = (q: number) => {
    common(0x16, 2, q);
    return Number(b.memory.read(bar4 + 0x1e, 2).value);
  };
  const availIdx = [0, 0];
  const offer = (q: number, addr: number, len: number, flags: number) => {
    const i = availIdx[q] % 8;
    b.memory.write(rings[q].desc + 16 * i, 8, BigInt(addr));
    b.memory.write(rings[q].desc + 16 * i + 8, 4, len);
    b.memory.write(rings[q].desc + 16 * i + 12, 2, flags);
    b.memory.write(rings[q].avail + 4 + 2 * i, 2, i);
    b.memory.write(rings[q].avail + 2, 2, ++availIdx[q]);
    b.memory.write(bar4 + 0x3000 + 4 * notifyOff(q), 2, q);
  };
  return {
    mac: [0, 1, 2, 3, 4, 5].map((i) => Number(b.memory.read(bar4 + 0x2000 + i, 1).value)),
    linkStatus: Number(b.memory.read(bar4 + 0x2006, 2).value),
    /** Sends `frame` (`header`, zeros by default, in front) on the transmit queue. */
    send(frame: Uint8Array, at = 0x30_0000, header: Uint8Array = new Uint8Array(12)) {
      b.memory.rw(at, header, true);
      b.memory.rw(at + 12, frame, true);
      offer(1, at, 12 + frame.length, 0);
    },
    /** Posts a receive buffer of `len` bytes (2 KiB) at `at`. */
    post(at: number, len = 2048) {
      offer(0, at, len, 2);
    },
    usedIdx: (q: number) => Number(b.memory.read(rings[q].used + 2, 2).value),
    usedLen: (q: number, i: number) => Number(b.memory.read(rings[q].used + 4 + 8 * (i % 8) + 4, 4).value),
  };
}

/**
 * A tap in memory: what was written (header included), frames queued for reading (header
 * included), and every TUNSETOFFLOAD value set.
 */
export function fakeTap() {
  const written: Uint8Array[] = [];
  const queued: Uint8Array[] = [];
  const offloads: number[] = [];
  return {
    written,
    queued,
    offloads,
    vnetHeaderSize: 12,
    fd: -1,
    writeSpans: (header: Uint8Array, frame: BufferSpans) => {
      const parts = [header.slice()];
      for (let i = 0; i < frame.count; i++) {
        parts.push(new Uint8Array(frame.buffers[i], frame.offsets[i], frame.lengths[i]).slice());
      }
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
      written.push(all);
      return all.length;
    },
    setOffloads: (bits: number) => void offloads.push(bits),
    read: (into: Uint8Array) => {
      const next = queued.shift();
      if (next === undefined) return null;
      into.set(next);
      return next.length;
    },
  };
}
