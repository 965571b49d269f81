/**
 * Hand-built `kvm_run` pages: the exits KVM would report, written where KVM writes them, so that
 * exit handling (`serveExit`, a runner's outcome, the SMP doorbell protocol) is tested without
 * /dev/kvm — as Firecracker's vCPU tests inject exits into `run_emulation`.
 *
 * @module
 */

import {
  KVM_RUN_EXIT_UNION_START as UNION,
  KVM_RUN_FAIL_ENTRY_LAYOUT,
  KVM_RUN_INTERNAL_LAYOUT,
  KVM_RUN_IO_LAYOUT,
  KVM_RUN_LAYOUT,
  KVM_RUN_MMIO_LAYOUT,
  KVM_RUN_SYSTEM_EVENT_LAYOUT,
  offsetsOf,
} from "./_structs.ts";
import {
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_IN,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_EXIT_SYSTEM_EVENT,
} from "./ioctls.ts";

const RUN = offsetsOf(KVM_RUN_LAYOUT);
const IO = offsetsOf(KVM_RUN_IO_LAYOUT);
const MMIO = offsetsOf(KVM_RUN_MMIO_LAYOUT);
const FAIL_ENTRY = offsetsOf(KVM_RUN_FAIL_ENTRY_LAYOUT);
const INTERNAL = offsetsOf(KVM_RUN_INTERNAL_LAYOUT);
const SYSTEM_EVENT = offsetsOf(KVM_RUN_SYSTEM_EVENT_LAYOUT);
/** The size of the `kvm_run` mapping on x86 (KVM_GET_VCPU_MMAP_SIZE: three pages). */
const FAKE_RUN_MAPPING_SIZE = 3 * 4096;
/** Where KVM puts port data: the second page of the mapping (`KVM_PIO_PAGE_OFFSET`). */
export const FAKE_IO_DATA_OFFSET = 4096;
/** The most bytes an MMIO exit carries (`mmio.data[8]`). */
const MMIO_DATA_MAX = 8;

/** A zeroed `kvm_run` mapping and a DataView over it, as a vCPU's `runPage` / `runView`. */
export interface FakeRunPage {
  /** The mapping's bytes. */
  readonly page: Uint8Array;
  /** A DataView over the same bytes. */
  readonly view: DataView;
}

/**
 * A zeroed, three-page `kvm_run` mapping. With `shared`, its bytes live in a SharedArrayBuffer, so
 * a Worker can write exits into it as a vCPU thread does into the real mapping.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fakeRunPage } from "./fake_exit.ts";
 * const { page } = fakeRunPage({ shared: true });
 * assert.ok(page.buffer instanceof SharedArrayBuffer);
 * assert.equal(page.length, 12288);
 * ```
 */
export function fakeRunPage(options: { shared?: boolean } = {}): FakeRunPage {
  const buffer = options.shared
    ? new SharedArrayBuffer(FAKE_RUN_MAPPING_SIZE)
    : new ArrayBuffer(FAKE_RUN_MAPPING_SIZE);
  return { page: new Uint8Array(buffer), view: new DataView(buffer) };
}

/** Sets `exit_reason` alone (for exits with no payload: `KVM_EXIT_HLT`, `KVM_EXIT_SHUTDOWN`, …). */
export function writeExitReason(run: FakeRunPage, reason: number): void {
  run.view.setUint32(RUN.exitReason, reason, true);
}

/**
 * Writes a `KVM_EXIT_IO`: `count` accesses of `size` bytes at `port`. For `out`, `data` holds the
 * `count × size` bytes the guest sent; for `in` the data area is zeroed. Returns a view of the
 * data area, where an `in`'s result is read back.
 *
 * @throws {RangeError} when `data` is not `count × size` bytes for an `out`.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeExit } from "./exit.ts";
 * import { fakeRunPage, writeIoExit } from "./fake_exit.ts";
 * const run = fakeRunPage();
 * writeIoExit(run, { direction: "out", port: 0x3f8, size: 1, data: [0x41] });
 * const exit = decodeExit(run.page);
 * assert.ok(exit.kind === "io" && exit.port === 0x3f8 && exit.data[0] === 0x41);
 * ```
 */
export function writeIoExit(
  run: FakeRunPage,
  io: { direction: "in" | "out"; port: number; size: 1 | 2 | 4; count?: number; data?: ArrayLike<number> },
): Uint8Array {
  const count = io.count ?? 1;
  const bytes = count * io.size;
  const { page, view } = run;
  if (io.direction === "out" && io.data?.length !== bytes) {
    throw new RangeError(`writeIoExit: an out of ${count} × ${io.size} bytes needs ${bytes} data bytes`);
  }
  writeExitReason(run, KVM_EXIT_IO);
  page[UNION + IO.direction] = io.direction === "out" ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN;
  page[UNION + IO.size] = io.size;
  view.setUint16(UNION + IO.port, io.port, true);
  view.setUint32(UNION + IO.count, count, true);
  view.setBigUint64(UNION + IO.dataOffset, BigInt(FAKE_IO_DATA_OFFSET), true);
  const data = page.subarray(FAKE_IO_DATA_OFFSET, FAKE_IO_DATA_OFFSET + bytes);
  if (io.direction === "out") data.set(io.data!);
  else data.fill(0);
  return data;
}

/**
 * Writes a `KVM_EXIT_MMIO` of `len` bytes at `physAddr` (a write carries `data`). Returns a view of
 * `mmio.data`, where a read's result is read back.
 *
 * @throws {RangeError} when `len` is not 1 to 8, or a write's `data` is not `len` bytes.
 */
export function writeMmioExit(
  run: FakeRunPage,
  mmio: { physAddr: bigint; isWrite: boolean; len: number; data?: ArrayLike<number> },
): Uint8Array {
  const { page, view } = run;
  if (!Number.isInteger(mmio.len) || mmio.len < 1 || mmio.len > MMIO_DATA_MAX) {
    throw new RangeError(`writeMmioExit: len ${mmio.len} is not 1 to ${MMIO_DATA_MAX}`);
  }
  if (mmio.isWrite && mmio.data?.length !== mmio.len) {
    throw new RangeError(`writeMmioExit: a write of ${mmio.len} bytes needs ${mmio.len} data bytes`);
  }
  writeExitReason(run, KVM_EXIT_MMIO);
  view.setBigUint64(UNION + MMIO.physAddr, mmio.physAddr, true);
  view.setUint32(UNION + MMIO.len, mmio.len, true);
  page[UNION + MMIO.isWrite] = mmio.isWrite ? 1 : 0;
  const data = page.subarray(UNION + MMIO.data, UNION + MMIO.data + MMIO_DATA_MAX);
  data.fill(0);
  if (mmio.isWrite) data.set(mmio.data!);
  return data.subarray(0, mmio.len);
}

/** Writes a `KVM_EXIT_SYSTEM_EVENT` of `type` (`KVM_SYSTEM_EVENT_RESET`, …). */
export function writeSystemEventExit(run: FakeRunPage, type: number): void {
  writeExitReason(run, KVM_EXIT_SYSTEM_EVENT);
  run.view.setUint32(UNION + SYSTEM_EVENT.type, type, true);
}

/** Writes a `KVM_EXIT_FAIL_ENTRY` with the hardware's reason and the CPU it happened on. */
export function writeFailEntryExit(run: FakeRunPage, reason: bigint, cpu: number): void {
  writeExitReason(run, KVM_EXIT_FAIL_ENTRY);
  run.view.setBigUint64(UNION + FAIL_ENTRY.hardwareEntryFailureReason, reason, true);
  run.view.setUint32(UNION + FAIL_ENTRY.cpu, cpu, true);
}

/** Writes a `KVM_EXIT_INTERNAL_ERROR` with `suberror` and up to 16 data words. */
export function writeInternalErrorExit(
  run: FakeRunPage,
  suberror: number,
  data: readonly bigint[] = [],
): void {
  writeExitReason(run, KVM_EXIT_INTERNAL_ERROR);
  run.view.setUint32(UNION + INTERNAL.suberror, suberror, true);
  run.view.setUint32(UNION + INTERNAL.ndata, data.length, true);
  data.forEach((d, i) => run.view.setBigUint64(UNION + INTERNAL.data + 8 * i, d, true));
}
