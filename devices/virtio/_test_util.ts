/**
 * Helpers for the virtio tests: guest RAM over a Uint8Array that counts refused accesses, and the
 * driver's side of a split virtqueue written as a driver would write it.
 *
 * @module
 */

import { AddressSpace, MemoryRegion, type RamBacking } from "../../memory/mod.ts";
import { AddressSpaceGuestMemory, type GuestMemory, type GuestMemoryCache } from "./guest_memory.ts";

/** Guest RAM `[0, size)` in a Uint8Array; every refused read or write is counted. */
export class ByteRam implements GuestMemory {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** Reads and writes that asked for bytes outside RAM (a careful device makes none). */
  refused = 0;
  fences = 0;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }

  check(addr: bigint, length: number): boolean {
    return addr >= 0n && length >= 0 && addr + BigInt(length) <= BigInt(this.bytes.length);
  }

  read(addr: bigint, into: Uint8Array): boolean {
    if (!this.check(addr, into.length)) return void this.refused++, false;
    into.set(this.bytes.subarray(Number(addr), Number(addr) + into.length));
    return true;
  }

  write(addr: bigint, from: Uint8Array): boolean {
    if (!this.check(addr, from.length)) return void this.refused++, false;
    this.bytes.set(from, Number(addr));
    return true;
  }

  fence(): void {
    this.fences++;
  }
}

/** Bytes on each side of {@link ViewRam}'s RAM in the same buffer, which nothing may change. */
const GUARD = 0x1000;

/**
 * Guest RAM `[0, size)` as a region of a real address space whose backing gives views (as the KVM
 * layer's mmap'd memory does), so queues reach it through caches. Guard bytes lie on both sides of
 * the RAM in the same buffer, and an MMIO region right after it fails any access: a device that
 * strays from RAM through a view or through the memory API is caught. Refused reads and writes are
 * counted as {@link ByteRam} counts them.
 */
export class ViewRam implements GuestMemory {
  readonly buffer: Uint8Array;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly region: MemoryRegion;
  readonly system: MemoryRegion;
  readonly as: AddressSpace;
  readonly inner: AddressSpaceGuestMemory;
  refused = 0;
  fences = 0;
  /** Accesses that reached the MMIO region after RAM (a careful device makes none). */
  mmio = 0;
  /** Reads and writes through the checked path (not through a cache). */
  checked = 0;

  constructor(size: number) {
    this.buffer = new Uint8Array(GUARD + size + GUARD).fill(0xcc);
    this.bytes = this.buffer.subarray(GUARD, GUARD + size);
    this.bytes.fill(0);
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, size);
    this.region = MemoryRegion.ram("ram", size, { backing: viewBacking(this.bytes) });
    this.system = MemoryRegion.container("system", 1n << 64n);
    this.system.addSubregion(0, this.region);
    const fail = () => {
      this.mmio++;
      throw new Error("MMIO after RAM was accessed");
    };
    this.system.addSubregion(size, MemoryRegion.io("mmio", 0x1_0000, { read: fail, write: fail }));
    this.as = new AddressSpace(this.system, "memory");
    this.inner = new AddressSpaceGuestMemory(this.as, () => void this.fences++);
  }

  /** Whether the bytes around the RAM are as they were made. */
  guardsIntact(): boolean {
    const n = this.buffer.length;
    return this.buffer.subarray(0, GUARD).every((b) => b === 0xcc) &&
      this.buffer.subarray(n - GUARD).every((b) => b === 0xcc);
  }

  check(addr: bigint, length: number, forWrite?: boolean): boolean {
    return this.inner.check(addr, length, forWrite);
  }

  read(addr: bigint, into: Uint8Array): boolean {
    this.checked++;
    return this.inner.read(addr, into) || (this.refused++, false);
  }

  write(addr: bigint, from: Uint8Array): boolean {
    this.checked++;
    return this.inner.write(addr, from) || (this.refused++, false);
  }

  map(addr: bigint, length: number, forWrite: boolean): Uint8Array | null {
    return this.inner.map(addr, length, forWrite);
  }

  cache(addr: bigint, length: number, forWrite: boolean): GuestMemoryCache | null {
    return this.inner.cache(addr, length, forWrite);
  }

  fence(): void {
    this.inner.fence();
  }

  [Symbol.dispose](): void {
    this.as.close();
  }
}

/** A RAM backing over `bytes` that gives views, as the KVM layer's does. */
export function viewBacking(bytes: Uint8Array): RamBacking {
  return {
    size: BigInt(bytes.length),
    read: (o, out) => out.set(bytes.subarray(Number(o), Number(o) + out.length)),
    write: (o, data) => bytes.set(data, Number(o)),
    view: (o, n) => bytes.subarray(Number(o), Number(o) + n),
  };
}

/** One descriptor as the driver writes it. */
export interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** The driver's side of a split virtqueue over a {@link ByteRam} (or any RAM with a DataView). */
export class DriverQueue {
  availIdx = 0;

  constructor(
    readonly ram: { readonly view: DataView },
    readonly size: number,
    readonly desc: bigint,
    readonly avail: bigint,
    readonly used: bigint,
  ) {}

  setDesc(table: bigint, i: number, d: Desc): void {
    const at = Number(table) + 16 * i;
    this.ram.view.setBigUint64(at, d.addr, true);
    this.ram.view.setUint32(at + 8, d.len, true);
    this.ram.view.setUint16(at + 12, d.flags, true);
    this.ram.view.setUint16(at + 14, d.next, true);
  }

  /** Puts `head` in the available ring and publishes the index. */
  offer(head: number): void {
    this.ram.view.setUint16(Number(this.avail) + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.ram.view.setUint16(Number(this.avail) + 2, this.availIdx, true);
  }

  setAvailIdx(idx: number): void {
    this.ram.view.setUint16(Number(this.avail) + 2, idx, true);
  }

  setAvailFlags(flags: number): void {
    this.ram.view.setUint16(Number(this.avail), flags, true);
  }

  setUsedEvent(idx: number): void {
    this.ram.view.setUint16(Number(this.avail) + 4 + 2 * this.size, idx, true);
  }

  usedIdx(): number {
    return this.ram.view.getUint16(Number(this.used) + 2, true);
  }

  usedElem(i: number): { id: number; len: number } {
    const at = Number(this.used) + 4 + 8 * (i % this.size);
    return { id: this.ram.view.getUint32(at, true), len: this.ram.view.getUint32(at + 4, true) };
  }

  availEvent(): number {
    return this.ram.view.getUint16(Number(this.used) + 4 + 8 * this.size, true);
  }
}

/** A read-write disk over a Uint8Array that records flushes and can be made to fail. */
export class ByteDisk {
  readonly bytes: Uint8Array;
  flushes = 0;
  fail = false;
  constructor(size: number, readonly readOnly = false) {
    this.bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) this.bytes[i] = (i * 31 + (i >> 9)) & 0xff;
  }
  get size(): bigint {
    return BigInt(this.bytes.length);
  }
  read(offset: bigint, into: Uint8Array): void {
    if (this.fail) throw new Error("disk read failed");
    into.set(this.bytes.subarray(Number(offset), Number(offset) + into.length));
  }
  write(offset: bigint, from: Uint8Array): void {
    if (this.fail || this.readOnly) throw new Error("disk write failed");
    this.bytes.set(from, Number(offset));
  }
  flush(): void {
    if (this.fail) throw new Error("flush failed");
    this.flushes++;
  }
}
