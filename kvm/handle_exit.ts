/**
 * Routing a vCPU's I/O and MMIO exits to the memory API, as QEMU's `kvm_cpu_exec` does: port I/O
 * to the "I/O" address space (`count` accesses of `size` bytes for string I/O), MMIO to the
 * "memory" address space. Pure: no FFI; the exit's data views point into the shared run page, so
 * results are written where KVM reads them.
 *
 * @module
 */

import type { AddressSpace } from "../memory/mod.ts";
import type { VcpuExit } from "./exit.ts";

/** The two address spaces a PC vCPU's exits go to. */
export interface ExitSpaces {
  /** The "memory" address space (MMIO exits). */
  readonly memory: AddressSpace;
  /** The "I/O" address space (port exits). */
  readonly io: AddressSpace;
}

/**
 * Serves an I/O or MMIO exit and returns true; returns false for every other exit, which the
 * caller handles (halt, shutdown, errors…). Access results are ignored, as under QEMU's KVM: an
 * unassigned port reads all-ones, unassigned memory reads 0.
 *
 * @example
 * ```ts
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { handleExit } from "./handle_exit.ts";
 * const out: number[] = [];
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * io.addSubregion(0x3f8, MemoryRegion.io("serial", 8, { write: (_o, v) => void out.push(Number(v)) }));
 * using ports = new AddressSpace(io, "I/O");
 * using memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
 * const data = new Uint8Array([0x48, 0x69]);
 * handleExit({ kind: "io", direction: "out", size: 1, port: 0x3f8, count: 2, dataOffset: 4096, data }, { memory, io: ports });
 * console.assert(out.join() === "72,105");
 * ```
 */
export function handleExit(exit: VcpuExit, spaces: ExitSpaces): boolean {
  switch (exit.kind) {
    case "io": {
      const write = exit.direction === "out";
      for (let i = 0; i < exit.count; i++) {
        spaces.io.rw(exit.port, exit.data.subarray(i * exit.size, (i + 1) * exit.size), write);
      }
      return true;
    }
    case "mmio":
      spaces.memory.rw(exit.physAddr, exit.data, exit.isWrite);
      return true;
    default:
      return false;
  }
}
