/**
 * The memory API: QEMU's regions, flat views, address spaces, transactions and listeners, in pure
 * TypeScript (no `Deno.*`, no FFI).
 *
 * @module
 */

export * from "./address.ts";
export * from "./address_space.ts";
export * from "./flat_view.ts";
export * from "./memory_listener.ts";
export * from "./memory_region.ts";
export * from "./memory_region_ops.ts";
export * from "./ram_backing.ts";
export * from "./transaction.ts";
export * from "./mtree.ts";
