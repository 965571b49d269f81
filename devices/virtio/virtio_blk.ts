/**
 * virtio-blk (virtio 1.2 section 5.2), as QEMU 7.2's `hw/block/virtio-blk.c` handles requests:
 *
 * - a request is a 16-byte header (type, reserved, sector) in the device-readable part, data, and a
 *   status byte that is the last byte of the device-writable part; a chain without a readable or a
 *   writable buffer, or with a header shorter than 16 bytes, is a protocol error (the device needs a
 *   reset);
 * - IN reads and OUT writes whole 512-byte sectors; a range past the capacity, or a data length
 *   that is not a multiple of 512, completes with IOERR, as does an OUT on a read-only disk or any
 *   failure of the backing store;
 * - FLUSH flushes the backing store; GET_ID writes the serial (at most 20 bytes, NUL-terminated when
 *   shorter);
 * - DISCARD and WRITE_ZEROES (offered as QEMU 7.2 offers them, when the backing can: one segment
 *   per request, up to {@link VIRTIO_BLK_MAX_DISCARD_SECTORS} sectors; QEMU's
 *   `virtio_blk_handle_request` and `virtio_blk_handle_discard_write_zeroes`): more than one segment
 *   is UNSUPP, fewer than one a protocol error; a count over the limit or a range outside the disk
 *   is IOERR, a flag other than WRITE_ZEROES' UNMAP (or UNMAP on a DISCARD) is UNSUPP; a read-only
 *   disk answers WRITE_ZEROES with IOERR and leaves a DISCARD to its backing (QEMU's is OK unless
 *   its drive would unmap);
 * - any other type completes with UNSUPP;
 * - the used length is the whole device-writable size, as QEMU reports it.
 *
 * Features offered: SEG_MAX, BLK_SIZE, FLUSH, DISCARD and WRITE_ZEROES (each where the backing can,
 * and QEMU's `discard` and `write-zeroes` properties leave them on), and RO for a read-only disk.
 * (QEMU 7.2 also offers GEOMETRY, TOPOLOGY and CONFIG_WCE; not implemented.)
 *
 * @module
 */

import type { VirtioDevice, VirtioDeviceModel } from "./virtio_device.ts";
import type { StateObject, StateReader } from "../device_state.ts";
import { type DescriptorChain, RamSpans, VirtioProtocolError, type Virtqueue } from "./virtqueue.ts";

/** Virtio device ID of a block device. */
export const VIRTIO_ID_BLOCK = 2;
/** QEMU's default queue size for virtio-blk. */
export const VIRTIO_BLK_QUEUE_SIZE = 256;
/** Bytes in a virtio-blk sector (fixed by the spec, whatever the block size). */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
/** Bytes of a GET_ID answer. */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Bytes of the configuration space exposed without DISCARD and WRITE_ZEROES (capacity through num_queues). */
export const VIRTIO_BLK_CONFIG_SIZE = 0x24;
/** Bytes of it with DISCARD (through `discard_sector_alignment`), and with WRITE_ZEROES (through `write_zeroes_may_unmap`), as QEMU sizes it. */
const CONFIG_SIZE_DISCARD = 48;
const CONFIG_SIZE_WRITE_ZEROES = 57;
/**
 * The most sectors one DISCARD or WRITE_ZEROES may cover: QEMU's `max-discard-sectors` and
 * `max-write-zeroes-sectors` defaults (BDRV_REQUEST_MAX_SECTORS, INT_MAX >> 9).
 */
export const VIRTIO_BLK_MAX_DISCARD_SECTORS = 0x3f_ffff;
/** WRITE_ZEROES' one flag: the range's blocks may be freed. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** Bytes of data moved per backing-store call through the bounce buffer. */
const CHUNK = 0x1_0000;
/** Most buffers in one readv/writev (Linux's `IOV_MAX`). */
const IOV_MAX = 1024;
/** Largest request QEMU's block layer takes (BDRV_REQUEST_MAX_BYTES, rounded to sectors). */
const MAX_REQUEST_BYTES = 0x7fff_fe00;
/** PCI class of QEMU's virtio-blk-pci (`PCI_CLASS_STORAGE_SCSI`). */
const PCI_CLASS_STORAGE_SCSI = 0x01_00_00;

/** virtio-blk feature bits. */
export const VirtioBlkFeature = {
  /** `seg_max` is valid. */
  SEG_MAX: 1n << 2n,
  /** The disk is read-only. */
  RO: 1n << 5n,
  /** `blk_size` is valid. */
  BLK_SIZE: 1n << 6n,
  /** FLUSH is supported. */
  FLUSH: 1n << 9n,
  /** DISCARD is supported. */
  DISCARD: 1n << 13n,
  /** WRITE_ZEROES is supported. */
  WRITE_ZEROES: 1n << 14n,
} as const;

/** Request types. */
export const VirtioBlkRequest = {
  /** Read sectors. */
  IN: 0,
  /** Write sectors. */
  OUT: 1,
  /** Flush the write cache. */
  FLUSH: 4,
  /** Device ID string. */
  GET_ID: 8,
  /** The driver no longer needs a range. */
  DISCARD: 11,
  /** A range reads as zeros from now on. */
  WRITE_ZEROES: 13,
} as const;

/** Completion status bytes. */
export const VirtioBlkStatus = {
  /** Success. */
  OK: 0,
  /** I/O error. */
  IOERR: 1,
  /** Unsupported request. */
  UNSUPP: 2,
} as const;

/**
 * The disk behind a virtio-blk device: the test implements it over a Uint8Array, the kvm layer with
 * pread/pwrite/fdatasync on a file. A method may throw; the request then completes with IOERR.
 */
export interface BlockBacking {
  /** Size in bytes. */
  readonly size: bigint;
  /** Whether writes are refused. */
  readonly readOnly: boolean;
  /** Fills `into` from byte `offset`. */
  read(offset: bigint, into: Uint8Array): void;
  /** Writes `from` at byte `offset`. */
  write(offset: bigint, from: Uint8Array): void;
  /** Makes written data durable. */
  flush(): void;
  /**
   * DISCARD: the guest no longer needs `length` bytes from `offset`; the backing may free them
   * (QEMU's `-drive discard=unmap`) or do nothing (its default, `discard=ignore`). Called for a
   * read-only disk too: a backing that would free blocks throws (IOERR). Absent: DISCARD is not
   * offered.
   */
  discard?(offset: bigint, length: bigint): void;
  /**
   * WRITE_ZEROES: `length` bytes from `offset` read as zeros afterwards; with `mayUnmap` their
   * blocks may be freed. Absent: WRITE_ZEROES is not offered.
   */
  writeZeroes?(offset: bigint, length: bigint, mayUnmap: boolean): void;
  /**
   * Fills `into`, one buffer after the other, from byte `offset` (preadv): one call for a request's
   * pieces of guest RAM. Absent: one {@link read} per buffer.
   */
  readv?(offset: bigint, into: readonly Uint8Array[]): void;
  /** Writes `from`, one buffer after the other, at byte `offset` (pwritev). Absent: one {@link write} per buffer. */
  writev?(offset: bigint, from: readonly Uint8Array[]): void;
  /**
   * Fills the spans of guest RAM `into`, one after the other, from byte `offset` (preadv with the
   * spans as iovecs): a request whose data lies wholly in guest RAM, without a view per page.
   * Absent: {@link readv} over views.
   */
  readSpans?(offset: bigint, into: RamSpans): void;
  /** Writes the spans of guest RAM `from`, one after the other, at byte `offset` (pwritev). Absent: {@link writev}. */
  writeSpans?(offset: bigint, from: RamSpans): void;
  /**
   * Starts what {@link writeSpans} (`isWrite`) or {@link readSpans} does, without waiting for it:
   * `done` runs later, on the thread that serves the queue, with whether all of it moved. Returns
   * false, having started nothing, when it cannot start now (the device then moves the data with
   * readSpans/writeSpans). The spans are read at once; the memory they name must stay until `done`.
   * Absent: every transfer completes before the device answers.
   */
  startSpans?(isWrite: boolean, offset: bigint, spans: RamSpans, done: (ok: boolean) => void): boolean;
  /**
   * Starts what {@link flush} does without waiting: `done` runs later, as for {@link startSpans}.
   * Returns false, having started nothing, when it cannot (the device then calls flush). Absent:
   * flush.
   */
  startFlush?(done: (ok: boolean) => void): boolean;
  /** Waits until every started transfer ran its `done` (a device reset, a snapshot, teardown). */
  drain?(): void;
}

/** What {@link VirtioBlk}'s transfer answers when the backing finishes the request later. */
const STARTED = -1;

/** Options of {@link VirtioBlk}. */
export interface VirtioBlkOptions {
  /** The disk. */
  backing: BlockBacking;
  /** Serial number GET_ID returns (at most 20 bytes of UTF-8; default empty, as QEMU). */
  serial?: string;
  /** Queue size (default 256). */
  queueSize?: number;
  /** Offer DISCARD where the backing can (QEMU's `discard` property; default true). */
  discard?: boolean;
  /** Offer WRITE_ZEROES where the backing can (QEMU's `write-zeroes` property; default true). */
  writeZeroes?: boolean;
}

/**
 * The block device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VirtioBlk, VirtioBlkFeature } from "./virtio_blk.ts";
 * const disk = new Uint8Array(1 << 20);
 * const blk = new VirtioBlk({
 *   backing: {
 *     size: BigInt(disk.length), readOnly: true,
 *     read: (o, into) => into.set(disk.subarray(Number(o), Number(o) + into.length)),
 *     write: () => { throw new Error("read-only"); }, flush: () => {},
 *   },
 * });
 * assert.equal(blk.readConfig(0, 4), 2048); // capacity in 512-byte sectors
 * assert.ok(blk.features & VirtioBlkFeature.RO);
 * ```
 */
export class VirtioBlk implements VirtioDeviceModel {
  /** QEMU's device name. */
  readonly name: string = "virtio-blk";
  /** {@link VIRTIO_ID_BLOCK}. */
  readonly deviceId: number = VIRTIO_ID_BLOCK;
  /** Mass storage, SCSI subclass, as QEMU. */
  readonly pciClassCode: number = PCI_CLASS_STORAGE_SCSI;
  /** SEG_MAX, BLK_SIZE, FLUSH, DISCARD and WRITE_ZEROES where the backing can, and RO for a read-only disk. */
  readonly features: bigint;
  /** One request queue. */
  readonly queueSizes: readonly number[];
  /** {@link VIRTIO_BLK_CONFIG_SIZE}, or more with DISCARD and WRITE_ZEROES (QEMU's sizes). */
  readonly configSize: number;
  /** Capacity in 512-byte sectors. */
  readonly capacity: bigint;
  readonly #backing: BlockBacking;
  readonly #serial: Uint8Array;
  readonly #config: Uint8Array;
  /**
   * The bounce buffer, allocated once, for data that is not one piece of RAM the memory gives a
   * view of (MMIO, a buffer crossing regions, memory without views): a fresh 64 KiB array per chunk
   * cost more than the pread itself (V8 zero-fills it, and the GC then reclaims it), measured at
   * 3.7 ms per MiB against 0.1 ms for the pread into a reused buffer.
   */
  readonly #chunk = new Uint8Array(CHUNK);
  /** A request's data as spans of guest RAM, reused (for a backing with readSpans/writeSpans). */
  readonly #spans = new RamSpans();
  /** Views of guest RAM gathered for one readv/writev, reused. */
  readonly #batch: Uint8Array[] = [];
  /** A request's header and status byte, reused: nothing per request but what the guest asks for. */
  readonly #header = new Uint8Array(16);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #status = new Uint8Array(1);
  /** A DISCARD or WRITE_ZEROES segment, reused. */
  readonly #segment = new Uint8Array(16);
  readonly #segmentView = new DataView(this.#segment.buffer);
  /** The device this model serves (to complete a request the backing finished later). */
  #device: VirtioDevice | undefined;

  /**
   * A block device over `backing`.
   *
   * @throws {TypeError} if `backing` lacks a method or its size is not a bigint.
   * @throws {RangeError} if the serial is longer than 20 bytes or the queue size is not a power of
   *   two of at least 4.
   */
  constructor(options: VirtioBlkOptions) {
    const b = options?.backing;
    if (
      !b || typeof b.size !== "bigint" || typeof b.read !== "function" || typeof b.write !== "function" ||
      typeof b.flush !== "function"
    ) {
      throw new TypeError("VirtioBlk: backing must have a bigint size and read, write and flush");
    }
    const serial = new TextEncoder().encode(options.serial ?? "");
    if (serial.length > VIRTIO_BLK_ID_BYTES) {
      throw new RangeError(
        `VirtioBlk: serial of ${serial.length} bytes is longer than ${VIRTIO_BLK_ID_BYTES}`,
      );
    }
    const queueSize = options.queueSize ?? VIRTIO_BLK_QUEUE_SIZE;
    if (!Number.isInteger(queueSize) || queueSize < 4 || queueSize > 32768 || (queueSize & (queueSize - 1))) {
      throw new RangeError(`VirtioBlk: queue size ${queueSize} is not a power of two in 4–32768`);
    }
    this.#backing = b;
    this.#serial = serial;
    this.queueSizes = [queueSize];
    this.capacity = b.size / BigInt(VIRTIO_BLK_SECTOR_SIZE);
    const discard = (options.discard ?? true) && typeof b.discard === "function";
    const writeZeroes = (options.writeZeroes ?? true) && typeof b.writeZeroes === "function";
    this.features = VirtioBlkFeature.SEG_MAX | VirtioBlkFeature.BLK_SIZE | VirtioBlkFeature.FLUSH |
      (discard ? VirtioBlkFeature.DISCARD : 0n) | (writeZeroes ? VirtioBlkFeature.WRITE_ZEROES : 0n) |
      (b.readOnly ? VirtioBlkFeature.RO : 0n);
    this.configSize = writeZeroes
      ? CONFIG_SIZE_WRITE_ZEROES
      : discard
      ? CONFIG_SIZE_DISCARD
      : VIRTIO_BLK_CONFIG_SIZE;
    this.#config = new Uint8Array(this.configSize);
    const view = new DataView(this.#config.buffer);
    view.setBigUint64(0, this.capacity, true); // capacity
    view.setUint32(12, queueSize - 2, true); // seg_max: QEMU's seg-max-adjust gives queue size − 2
    view.setUint32(20, VIRTIO_BLK_SECTOR_SIZE, true); // blk_size
    view.setUint16(34, 1, true); // num_queues
    if (discard) {
      view.setUint32(36, VIRTIO_BLK_MAX_DISCARD_SECTORS, true); // max_discard_sectors
      view.setUint32(40, 1, true); // max_discard_seg: one segment per request, as QEMU
      view.setUint32(44, VIRTIO_BLK_SECTOR_SIZE >> 9, true); // discard_sector_alignment: blk_size in sectors
    }
    if (writeZeroes) {
      view.setUint32(48, VIRTIO_BLK_MAX_DISCARD_SECTORS, true); // max_write_zeroes_sectors
      view.setUint32(52, 1, true); // max_write_zeroes_seg
      view.setUint8(56, 1); // write_zeroes_may_unmap
    }
  }

  /** The configuration structure (capacity, limits): fixed by the disk, saved to check a restore. */
  saveState(): StateObject {
    return { config: this.#config.slice() };
  }

  /** Checks that the saved configuration is this one's (a disk of another size or queue size is refused); nothing to apply. */
  prepareState(r: StateReader): () => void {
    r.sameBytes("config", this.#config, "capacity, limits, discard and write-zeroes: another disk?");
    return () => {};
  }

  /** Reads the configuration structure (little-endian, read-only). */
  readConfig(offset: number, size: number): number {
    let value = 0;
    for (let i = size - 1; i >= 0; i--) value = value * 256 + this.#config[offset + i];
    return value;
  }

  /** The device to complete later requests on. */
  attach(device: VirtioDevice): void {
    this.#device = device;
  }

  /**
   * Handles every available request: each completes at once, or — a read or write the backing
   * started ({@link BlockBacking.startSpans}) — when the backing's `done` runs, in any order, as
   * virtio allows (QEMU's thread pool completes them so too).
   */
  handleQueue(queue: Virtqueue, _device: VirtioDevice): void {
    for (let chain = queue.pop(); chain; chain = queue.pop()) {
      if (this.#request(chain)) queue.push(chain, chain.writableLength);
    }
  }

  /**
   * Device reset: waits for the transfers in flight (the backing must not write guest memory the
   * driver takes back), as QEMU's reset drains the block device. Their requests are forgotten: the
   * device resets its queues before its model, so the completions the drain runs push nothing.
   */
  reset(): void {
    this.#backing.drain?.();
  }

  /** One request: completes it with a status byte (true), leaves it to the backing (false), or throws a protocol error. */
  #request(chain: DescriptorChain): boolean {
    // No buffer is empty, so a part of length 0 has no buffer.
    if (chain.readableLength === 0 || chain.writableLength === 0) {
      throw new VirtioProtocolError("virtio-blk request without a header or a status buffer");
    }
    const header = this.#header;
    if (chain.read(0, header) !== header.length) {
      throw new VirtioProtocolError(`virtio-blk request header of ${chain.readableLength} bytes (16 needed)`);
    }
    const view = this.#headerView;
    const type = view.getUint32(0, true);
    const sector = view.getBigUint64(8, true);
    const statusAt = chain.writableLength - 1;
    const status = this.#status;
    const result = this.#execute(chain, type & ~0x8000_0000, sector, statusAt);
    if (result === STARTED) return false;
    status[0] = result;
    chain.write(statusAt, status);
    return true;
  }

  /**
   * Has `begin` start the request `chain` on the backing, to complete when its `done` runs; false
   * when the backing did not start it (or the model serves no device yet).
   */
  #start(chain: DescriptorChain, begin: (done: (ok: boolean) => void) => boolean): boolean {
    const device = this.#device;
    if (device === undefined) return false;
    const statusAt = chain.writableLength - 1;
    return begin((ok) => this.#finish(device, chain, statusAt, ok));
  }

  /**
   * The backing finished a started request: its status byte, then the used ring and interrupt —
   * nothing when the queue was reset or the device broke meanwhile (`serviceQueue` runs no work then).
   */
  #finish(device: VirtioDevice, chain: DescriptorChain, statusAt: number, ok: boolean): void {
    device.serviceQueue(0, (queue) => {
      const status = this.#status;
      status[0] = ok ? VirtioBlkStatus.OK : VirtioBlkStatus.IOERR;
      chain.write(statusAt, status);
      queue.push(chain, chain.writableLength);
    });
  }

  #execute(chain: DescriptorChain, type: number, sector: bigint, inLength: number): number {
    try {
      switch (type) {
        case VirtioBlkRequest.IN:
          return this.#transfer(chain, sector, inLength, false);
        case VirtioBlkRequest.OUT:
          return this.#transfer(chain, sector, chain.readableLength - 16, true);
        case VirtioBlkRequest.FLUSH:
          if (
            this.#backing.startFlush !== undefined &&
            this.#start(chain, (done) => this.#backing.startFlush!(done))
          ) {
            return STARTED;
          }
          this.#backing.flush();
          return VirtioBlkStatus.OK;
        case VirtioBlkRequest.DISCARD:
        case VirtioBlkRequest.WRITE_ZEROES:
          return this.#discardOrZero(chain, type === VirtioBlkRequest.WRITE_ZEROES);
        case VirtioBlkRequest.GET_ID: {
          const n = Math.min(this.#serial.length + 1, inLength, VIRTIO_BLK_ID_BYTES);
          const id = new Uint8Array(n);
          id.set(this.#serial.subarray(0, n));
          chain.write(0, id);
          return VirtioBlkStatus.OK;
        }
        default:
          return VirtioBlkStatus.UNSUPP;
      }
    } catch (error) {
      if (error instanceof VirtioProtocolError) throw error;
      return VirtioBlkStatus.IOERR; // the backing store failed
    }
  }

  /**
   * DISCARD or WRITE_ZEROES (QEMU's `virtio_blk_handle_discard_write_zeroes`): the first segment
   * after the header — sector, sector count, flags — is the range; more segments are not read (one
   * is offered).
   */
  #discardOrZero(chain: DescriptorChain, zero: boolean): number {
    if (!(this.features & (zero ? VirtioBlkFeature.WRITE_ZEROES : VirtioBlkFeature.DISCARD))) {
      return VirtioBlkStatus.UNSUPP;
    }
    // QEMU takes one segment and refuses a request with more (the driver was told max_*_seg is 1).
    if (chain.readableLength > 32) return VirtioBlkStatus.UNSUPP;
    const segment = this.#segment;
    if (chain.read(16, segment) !== segment.length) {
      throw new VirtioProtocolError(
        `virtio-blk ${
          zero ? "write zeroes" : "discard"
        } request of ${chain.readableLength} bytes (32 needed)`,
      );
    }
    const view = this.#segmentView;
    const sector = view.getBigUint64(0, true);
    const sectors = view.getUint32(8, true);
    const flags = view.getUint32(12, true);
    if (sectors > VIRTIO_BLK_MAX_DISCARD_SECTORS) return VirtioBlkStatus.IOERR;
    if (!this.#inDisk(sector, BigInt(sectors))) return VirtioBlkStatus.IOERR;
    if (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return VirtioBlkStatus.UNSUPP;
    if (!zero && flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return VirtioBlkStatus.UNSUPP;
    // A discard on a read-only disk is the backing's to refuse (QEMU's does only if it would unmap).
    if (zero && this.#backing.readOnly) return VirtioBlkStatus.IOERR;
    const offset = sector * BigInt(VIRTIO_BLK_SECTOR_SIZE);
    const length = BigInt(sectors) * BigInt(VIRTIO_BLK_SECTOR_SIZE);
    if (zero) this.#backing.writeZeroes!(offset, length, (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0);
    else this.#backing.discard!(offset, length);
    return VirtioBlkStatus.OK;
  }

  /** Whether `sectors` sectors from `sector` lie on the disk (QEMU's `virtio_blk_sect_range_ok`). */
  #inDisk(sector: bigint, sectors: bigint): boolean {
    return sector <= this.capacity && sectors <= this.capacity - sector;
  }

  /**
   * The range checked (QEMU's `virtio_blk_sect_range_ok`), then the data: in place where a buffer is
   * one piece of guest RAM the memory gives a view of (consecutive ones gathered into one
   * readv/writev, as QEMU's `address_space_map` and preadv do; as spans when the backing takes them
   * and every buffer lies in a cache of RAM), through the bounce buffer otherwise.
   */
  #transfer(chain: DescriptorChain, sector: bigint, length: number, isWrite: boolean): number {
    if (length % VIRTIO_BLK_SECTOR_SIZE !== 0 || length > MAX_REQUEST_BYTES) return VirtioBlkStatus.IOERR;
    const sectors = BigInt(length / VIRTIO_BLK_SECTOR_SIZE);
    if (!this.#inDisk(sector, sectors)) return VirtioBlkStatus.IOERR;
    if (isWrite && this.#backing.readOnly) return VirtioBlkStatus.IOERR;
    const base = sector * BigInt(VIRTIO_BLK_SECTOR_SIZE);
    // A write's data follows the 16-byte header in the readable part; a read's fills the writable
    // part from its start (the status byte after it is not data).
    const skip = isWrite ? 16 : 0;
    const b = this.#backing;
    // All of it in guest RAM the queue holds caches of (the usual case): one call, no view per page.
    if (
      length > 0 && (isWrite ? b.writeSpans : b.readSpans) !== undefined &&
      chain.gather(!isWrite, skip, length, this.#spans)
    ) {
      const spans = this.#spans;
      if (
        b.startSpans !== undefined && this.#start(chain, (done) => b.startSpans!(isWrite, base, spans, done))
      ) {
        return STARTED;
      }
      if (isWrite) b.writeSpans!(base, this.#spans);
      else b.readSpans!(base, this.#spans);
      return VirtioBlkStatus.OK;
    }
    const batch = this.#batch;
    let batchAt = 0; // where the batch starts, in bytes of the transfer
    try {
      for (const piece of chain.pieces(!isWrite, skip, length)) {
        const at = piece.offset - skip;
        if (piece.view !== null) {
          if (batch.length === 0) batchAt = at;
          batch.push(piece.view);
          if (batch.length === IOV_MAX) this.#flushBatch(base + BigInt(batchAt), isWrite);
          continue;
        }
        if (batch.length > 0) this.#flushBatch(base + BigInt(batchAt), isWrite);
        this.#bounce(chain, base + BigInt(at), piece.offset, piece.length, isWrite);
      }
      if (batch.length > 0) this.#flushBatch(base + BigInt(batchAt), isWrite);
    } finally {
      batch.length = 0;
    }
    return VirtioBlkStatus.OK;
  }

  /** Moves the gathered views to or from the disk at `offset`, and empties the batch. */
  #flushBatch(offset: bigint, isWrite: boolean): void {
    const batch = this.#batch;
    const b = this.#backing;
    if (batch.length === 1) {
      if (isWrite) b.write(offset, batch[0]);
      else b.read(offset, batch[0]);
    } else if (isWrite && b.writev) {
      b.writev(offset, batch);
    } else if (!isWrite && b.readv) {
      b.readv(offset, batch);
    } else {
      let at = offset;
      for (const view of batch) {
        if (isWrite) b.write(at, view);
        else b.read(at, view);
        at += BigInt(view.length);
      }
    }
    batch.length = 0;
  }

  /** Copies `length` bytes between the disk at `offset` and the chain's part at `partOffset`, in chunks. */
  #bounce(
    chain: DescriptorChain,
    offset: bigint,
    partOffset: number,
    length: number,
    isWrite: boolean,
  ): void {
    for (let done = 0; done < length;) {
      const buf = this.#chunk.subarray(0, Math.min(CHUNK, length - done));
      if (isWrite) {
        chain.read(partOffset + done, buf);
        this.#backing.write(offset + BigInt(done), buf);
      } else {
        this.#backing.read(offset + BigInt(done), buf);
        chain.write(partOffset + done, buf);
      }
      done += buf.length;
    }
  }
}
