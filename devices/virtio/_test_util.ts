/**
 * Helpers for the virtio tests: guest RAM over a Uint8Array that counts refused accesses, and the
 * driver's side of a split virtqueue written as a driver would write it.
 *
 * @module
 */

import type { GuestMemory } from "./guest_memory.ts";

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

/** One descriptor as the driver writes it. */
export interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** The driver's side of a split virtqueue over a {@link ByteRam}. */
export class DriverQueue {
  availIdx = 0;

  constructor(
    readonly ram: ByteRam,
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
