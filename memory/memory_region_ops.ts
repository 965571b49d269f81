/**
 * The callbacks a device gives an MMIO or port-I/O region, and the result codes of an access.
 *
 * Mirrors QEMU's `MemoryRegionOps` (`include/exec/memory.h`): `valid` says what the guest may
 * issue, `impl` what the callbacks implement; the memory core splits or widens accesses between
 * the two (see `address_space.ts`).
 *
 * @module
 */

/** Size in bytes of one access: 1, 2, 4 or 8. */
export type AccessSize = 1 | 2 | 4 | 8;

/** Result of a memory transaction; results of several pieces are OR-ed (QEMU's `MemTxResult`). */
export const MemTxResult = {
  /** The access succeeded. */
  OK: 0,
  /** The device reported an error. */
  ERROR: 1,
  /** Nothing decodes the address, or the access was not valid for the device. */
  DECODE_ERROR: 2,
  /** The access was denied (for example re-entry into a device's own handler). */
  ACCESS_ERROR: 4,
} as const;

/** One of the {@link MemTxResult} codes, or an OR of several. */
export type MemTxResultCode = number;

/** Byte order of a device's registers. On an x86 guest "native" is little-endian. */
export type Endianness = "native" | "little" | "big";

/** Access constraints: zero or absent fields take QEMU's defaults. */
export interface AccessConstraints {
  /** Smallest access in bytes (default 1). */
  min?: number;
  /** Largest access in bytes (`valid`: 0 or absent means any size is valid; `impl`: default 4). */
  max?: number;
  /** Whether accesses need not be naturally aligned. */
  unaligned?: boolean;
}

/** What the guest may issue to a region; a violation reads 0 / drops the write with DECODE_ERROR. */
export interface ValidConstraints extends AccessConstraints {
  /** Extra device-specific check; returning false makes the access invalid. */
  accepts?(offset: number, size: number, isWrite: boolean): boolean;
}

/**
 * Callbacks of an I/O (MMIO or port) region or a ROM device.
 *
 * Offsets are relative to the start of the region that owns the ops, after alias resolution.
 * Values of accesses up to 4 bytes are numbers; a device that declares `impl.max: 8` receives
 * 8-byte write values as bigint and may return a bigint from an 8-byte read.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, type MemoryRegionOps } from "../mod.ts";
 * const scratch = [0, 0, 0, 0];
 * const ops: MemoryRegionOps = {
 *   read: (offset) => scratch[offset],
 *   write: (offset, value) => void (scratch[offset] = Number(value)),
 *   impl: { min: 1, max: 1 }, // the core splits wider accesses into bytes
 * };
 * using as = new AddressSpace(MemoryRegion.io("scratch", 4, ops), "I/O");
 * as.write(0, 4, 0x11223344);
 * assert.deepEqual(scratch, [0x44, 0x33, 0x22, 0x11]);
 * assert.equal(as.read(2, 2).value, 0x1122n);
 * ```
 */
export interface MemoryRegionOps {
  /** Reads `size` bytes at `offset`; the low `size` bytes of the result are used. */
  read?(offset: number, size: number): number | bigint;
  /** Writes the low `size` bytes of `value` at `offset`. */
  write?(offset: number, value: number | bigint, size: number): void;
  /** Register byte order (default "native", little-endian on x86). */
  endianness?: Endianness;
  /** What the guest may issue. */
  valid?: ValidConstraints;
  /** What the callbacks implement; other sizes are split or widened to fit. */
  impl?: AccessConstraints;
  /**
   * Allows a callback to access its own region again (QEMU's `disable_reentrancy_guard`);
   * otherwise such re-entry is refused with ACCESS_ERROR, the guard against CVE-2021-3750-style
   * DMA re-entrancy.
   */
  reentrant?: boolean;
}

/**
 * The ops of QEMU's `io` root region (`unassigned_io_ops`): reads return all-ones of the access
 * size, writes are ignored, and both succeed. Give them to the root of an I/O address space so
 * that unassigned ports behave as on a PC.
 */
export const UNASSIGNED_IO_OPS: MemoryRegionOps = Object.freeze({
  read: () => 0xffff_ffff,
  write: () => {},
});
