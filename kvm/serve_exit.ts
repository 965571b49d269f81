/**
 * The one exit path of every runner: a vCPU's port I/O and MMIO exits routed to the memory API as
 * QEMU's `kvm_cpu_exec` routes them (port I/O to the "I/O" address space, `count` accesses of
 * `size` bytes for string I/O; MMIO to the "memory" address space), read straight from the shared
 * run page with no exit object allocated. Results are written into the page, where KVM reads them
 * on the next `KVM_RUN`. (`decodeExit` gives a typed exit for everything else, and for tools.)
 *
 * @module
 */

import {
  KVM_RUN_EXIT_UNION_START as UNION,
  KVM_RUN_IO_LAYOUT,
  KVM_RUN_LAYOUT,
  KVM_RUN_MMIO_LAYOUT,
  offsetsOf,
} from "./_structs.ts";
import type { AddressSpace } from "../memory/mod.ts";
import { KVM_EXIT_IO, KVM_EXIT_MMIO } from "./ioctls.ts";

const RUN = offsetsOf(KVM_RUN_LAYOUT);
const IO = offsetsOf(KVM_RUN_IO_LAYOUT);
const MMIO = offsetsOf(KVM_RUN_MMIO_LAYOUT);
const IO_DIRECTION = UNION + IO.direction;
const IO_SIZE = UNION + IO.size;
const IO_PORT = UNION + IO.port;
const IO_COUNT = UNION + IO.count;
const IO_DATA_OFFSET = UNION + IO.dataOffset;
const MMIO_ADDR = UNION + MMIO.physAddr;
const MMIO_DATA = UNION + MMIO.data;
const MMIO_LEN = UNION + MMIO.len;
const MMIO_IS_WRITE = UNION + MMIO.isWrite;
const EXIT_IO_OUT = 1;

/** The two address spaces a PC vCPU's exits go to. */
export interface ExitSpaces {
  /** The "memory" address space (MMIO exits). */
  readonly memory: AddressSpace;
  /** The "I/O" address space (port exits). */
  readonly io: AddressSpace;
}

/**
 * The views of the data of one-item port exits, made once per run page and offset (KVM always puts
 * the data at the same offset of a vCPU's page): no allocation per exit. Indexed by access size.
 */
let viewPage: Uint8Array | null = null;
let viewAt = -1;
const views: (Uint8Array | undefined)[] = [];

function ioView(page: Uint8Array, at: number, size: number): Uint8Array {
  if (page !== viewPage || at !== viewAt) {
    viewPage = page;
    viewAt = at;
    views.length = 0;
  }
  return views[size] ??= page.subarray(at, at + size);
}

/**
 * Serves the exit in `page` if it is port I/O or MMIO and returns true; otherwise returns false
 * and leaves it to the caller (halt, shutdown, errors…). `view` is a DataView over the same bytes.
 * Access results are ignored, as under QEMU's KVM: an unassigned port reads all-ones, unassigned
 * memory reads 0. Allocates nothing but the data subarray per access.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { fakeRunPage, writeIoExit } from "./fake_exit.ts";
 * import { serveExit } from "./serve_exit.ts";
 * const out: number[] = [];
 * const ioRoot = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * ioRoot.addSubregion(0x3f8, MemoryRegion.io("serial", 8, { write: (_o, v) => void out.push(Number(v)) }));
 * using io = new AddressSpace(ioRoot, "I/O");
 * using memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
 * const run = fakeRunPage();
 * writeIoExit(run, { direction: "out", port: 0x3f8, size: 1, count: 2, data: [0x48, 0x69] });
 * assert.equal(serveExit(run.page, run.view, { memory, io }), true);
 * assert.deepEqual(out, [0x48, 0x69]);
 * ```
 */
export function serveExit(page: Uint8Array, view: DataView, spaces: ExitSpaces): boolean {
  const reason = view.getUint32(RUN.exitReason, true);
  if (reason === KVM_EXIT_IO) {
    const size = page[IO_SIZE];
    const port = view.getUint16(IO_PORT, true);
    const count = view.getUint32(IO_COUNT, true);
    const write = page[IO_DIRECTION] === EXIT_IO_OUT;
    // data_offset is a u64 but always an offset into the run mapping: its low half, no bigint.
    let at = view.getUint32(IO_DATA_OFFSET, true);
    if (count === 1) {
      spaces.io.rw(port, ioView(page, at, size), write);
    } else {
      for (let i = 0; i < count; i++, at += size) spaces.io.rw(port, page.subarray(at, at + size), write);
    }
    return true;
  }
  if (reason === KVM_EXIT_MMIO) {
    const len = view.getUint32(MMIO_LEN, true);
    spaces.memory.rw(
      view.getBigUint64(MMIO_ADDR, true),
      page.subarray(MMIO_DATA, MMIO_DATA + len),
      page[MMIO_IS_WRITE] !== 0,
    );
    return true;
  }
  return false;
}
