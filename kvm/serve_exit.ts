/**
 * The vCPU loop's fast path for the exits that dominate a running guest: port I/O and MMIO are
 * served straight from the shared run page, with no exit object allocated (`decodeExit` +
 * `handleExit` do the same with a typed exit, at 300–500 ns more per exit).
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
import type { ExitSpaces } from "./handle_exit.ts";
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

/**
 * Serves the exit in `page` if it is port I/O or MMIO and returns true; otherwise returns false
 * and leaves it to the caller. `view` is a DataView over the same bytes.
 *
 * @example
 * ```ts ignore
 * for (;;) {
 *   vcpu.run();
 *   if (!serveExit(vcpu.runPage, vcpu.runView, spaces)) break; // hlt, shutdown, …
 * }
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
    for (let i = 0; i < count; i++, at += size) spaces.io.rw(port, page.subarray(at, at + size), write);
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
