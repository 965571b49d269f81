/**
 * The memory API: QEMU's regions, flat views, address spaces, transactions and listeners, in pure
 * TypeScript (no `Deno.*`, no FFI).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, transaction } from "./mod.ts";
 * const system = MemoryRegion.container("system", 1n << 64n);
 * const ram = MemoryRegion.ram("pc.ram", 0x10_0000);
 * transaction(() => system.addSubregion(0, MemoryRegion.alias("ram-low", ram, 0, 0x10_0000)));
 * using memory = new AddressSpace(system, "memory");
 * memory.write(0x1000, 4, 0xdeadbeef);
 * assert.equal(memory.read(0x1000, 4).value, 0xdeadbeefn);
 * ```
 *
 * @module
 */

export {
  ADDRESS_SPACE_SIZE,
  type AddrInput,
  alignDown,
  alignUp,
  rangesOverlap,
  toAddress,
  toSize,
  UINT64_MAX,
} from "./address.ts";
export { AddressSpace, type ReadResult } from "./address_space.ts";
export { type CoalescedRange, flushCoalescedMmio, registerCoalescedFlusher } from "./coalesced_mmio.ts";
export { type FlatRange, FlatView } from "./flat_view.ts";
export {
  type IoeventfdSection,
  ListenerPriority,
  type MemoryListener,
  type MemoryRegionSection,
} from "./memory_listener.ts";
export {
  DIRTY_PAGE_SIZE,
  DirtyLogClient,
  MemoryRegion,
  type MemoryRegionIoeventfd,
  type RamOptions,
  type RegionKind,
} from "./memory_region.ts";
export {
  type AccessConstraints,
  type AccessSize,
  type Endianness,
  type MemoryRegionOps,
  MemTxResult,
  type MemTxResultCode,
  UNASSIGNED_IO_OPS,
  type ValidConstraints,
} from "./memory_region_ops.ts";
export { type RamBacking, SparseRam } from "./ram_backing.ts";
export { beginTransaction, commitTransaction, transaction, transactionDepth } from "./transaction.ts";
export { formatMtree, type MtreeOptions } from "./mtree.ts";
