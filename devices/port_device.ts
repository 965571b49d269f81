/**
 * What every port-I/O device of the board offers: its regions, a way to map them, and a reset.
 *
 * @module
 */

import type { MemoryRegion } from "../memory/mod.ts";

/**
 * A device reached through the port-I/O address space (an ISA-style device in QEMU terms).
 *
 * The board keeps an ordered list of these and calls {@link PortDevice.map} on each with the `io`
 * root region, in the order QEMU creates the devices, and {@link PortDevice.reset} on a system reset
 * (QEMU's `qemu_register_reset` / device reset).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import type { PortDevice } from "./port_device.ts";
 * import { Port80 } from "./port80.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * const devices: PortDevice[] = [new Port80()];
 * for (const device of devices) device.map(io);
 * assert.equal(io.subregions[0].name, "ioport80");
 * ```
 */
export interface PortDevice {
  /** The regions the device maps, named as QEMU names them. */
  readonly regions: readonly MemoryRegion[];
  /** Adds the regions to `io` (the port-I/O root) at the device's ports and priorities. */
  map(io: MemoryRegion): void;
  /** Returns to the power-on state (a system reset). */
  reset(): void;
}
