/**
 * PCI configuration mechanism #1 (ports 0xcf8–0xcff), as QEMU 7.2's `hw/pci/pci_host.c`
 * (`pci_host_conf_le_ops` and `pci_host_data_le_ops`) on the i440FX:
 *
 * - "pci-conf-idx" (0xcf8, 4 bytes) holds CONFIG_ADDRESS: bit 31 enable, bus in 23:16, device in
 *   15:11, function in 10:8, register in 7:2. Only a 4-byte write at 0xcf8 sets it; any read returns
 *   it whole (as QEMU: byte reads of 0xcfa do not shift). Byte 0xcf9 is the PIIX3 reset control,
 *   mapped over it with priority 1 (`reset_control.ts`).
 * - "pci-conf-data" (0xcfc, 4 bytes): 1-, 2- and 4-byte accesses at offset `n` reach configuration
 *   byte `register + n` of the addressed function. With the enable bit clear, or no function there,
 *   reads are all-ones and writes are dropped.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import type { PciDevice } from "./pci_device.ts";
import { PCI_CONFIG_SPACE_SIZE } from "./pci_device.ts";
import type { PortDevice } from "./port_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";

/** CONFIG_ADDRESS. */
export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
/** CONFIG_DATA. */
export const PCI_CONFIG_DATA_PORT = 0xcfc;
/** Enable bit of CONFIG_ADDRESS. */
export const PCI_CONFIG_ENABLE_BIT = 0x8000_0000;

/** Where a function sits: bus 0–255, device 0–31, function 0–7. */
export interface PciAddress {
  /** Bus number (default 0). */
  bus?: number;
  /** Device (slot) number. */
  device: number;
  /** Function number (default 0). */
  function?: number;
}

function checkField(value: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`PCI ${what} ${value} is not 0–${max}`);
  }
  return value;
}

/** Key of a function: bus << 8 | devfn, as in CONFIG_ADDRESS bits 23:8. */
function keyOf(address: PciAddress): number {
  const bus = checkField(address.bus ?? 0, 255, "bus");
  const device = checkField(address.device, 31, "device");
  const fn = checkField(address.function ?? 0, 7, "function");
  return (bus << 8) | (device << 3) | fn;
}

/**
 * The host side of configuration mechanism #1, holding functions by bus, device and function.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { I440fxHostBridge } from "./i440fx_host_bridge.ts";
 * import { PciHost } from "./pci_host.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * const host = new PciHost();
 * host.attach({ device: 0 }, new I440fxHostBridge());
 * host.map(io);
 * ports.write(0xcf8, 4, 0x8000_0000); // bus 0, device 0, function 0, register 0
 * assert.equal(ports.read(0xcfc, 4).value, 0x1237_8086n);
 * ports.write(0xcf8, 4, 0x8000_0800); // device 1: nothing there
 * assert.equal(ports.read(0xcfc, 4).value, 0xffff_ffffn);
 * ```
 */
export class PciHost implements PortDevice, Snapshottable {
  /** Region "pci-conf-idx" (0xcf8–0xcfb). */
  readonly addressRegion: MemoryRegion;
  /** Region "pci-conf-data" (0xcfc–0xcff). */
  readonly dataRegion: MemoryRegion;
  readonly #devices = new Map<number, PciDevice>();
  #configAddress = 0;

  /** A host with no functions attached and CONFIG_ADDRESS 0. */
  constructor() {
    this.addressRegion = MemoryRegion.io("pci-conf-idx", 4, {
      read: () => this.#configAddress,
      write: (offset, value, size) => this.writeAddress(offset, Number(value), size),
      endianness: "little",
    });
    this.dataRegion = MemoryRegion.io("pci-conf-data", 4, {
      read: (offset, size) => this.readData(offset, size),
      write: (offset, value, size) => this.writeData(offset, Number(value), size),
      endianness: "little",
    });
    // As QEMU's i440fx: an accelerator may queue CONFIG_ADDRESS writes instead of exiting for each
    // (KVM's coalesced PIO), and every access to the data port plays the queue back first.
    this.dataRegion.setFlushCoalesced();
    this.addressRegion.addCoalescing(0, 4);
  }

  /** Both regions: address, then data. */
  get regions(): readonly MemoryRegion[] {
    return [this.addressRegion, this.dataRegion];
  }

  /** Maps "pci-conf-idx" at 0xcf8 and "pci-conf-data" at 0xcfc. */
  map(io: MemoryRegion): void {
    io.addSubregion(PCI_CONFIG_ADDRESS_PORT, this.addressRegion);
    io.addSubregion(PCI_CONFIG_DATA_PORT, this.dataRegion);
  }

  /** Plugs `device` in at `address`; the slot must be free. */
  attach(address: PciAddress, device: PciDevice): void {
    const key = keyOf(address);
    if (!device || typeof device.readConfig !== "function" || typeof device.writeConfig !== "function") {
      throw new TypeError("PciHost.attach: the device must have readConfig and writeConfig");
    }
    if (this.#devices.has(key)) {
      throw new RangeError(`PCI ${formatAddress(key)} is already taken`);
    }
    this.#devices.set(key, device);
  }

  /** Unplugs and returns the function at `address`, if any. */
  detach(address: PciAddress): PciDevice | undefined {
    const key = keyOf(address);
    const device = this.#devices.get(key);
    this.#devices.delete(key);
    return device;
  }

  /** The function at `address`, if any. */
  deviceAt(address: PciAddress): PciDevice | undefined {
    return this.#devices.get(keyOf(address));
  }

  /** Every function plugged in, in bus, device, function order (for `info pci`). */
  functions(): { address: Required<PciAddress>; device: PciDevice }[] {
    return [...this.#devices.entries()].sort(([a], [b]) => a - b).map(([key, device]) => ({
      address: { bus: key >> 8, device: (key >> 3) & 0x1f, function: key & 7 },
      device,
    }));
  }

  /** The current CONFIG_ADDRESS. */
  get configAddress(): number {
    return this.#configAddress;
  }

  /** CONFIG_ADDRESS (the functions behind the host save their own state). */
  saveState(): StateObject {
    return { configAddress: this.#configAddress };
  }

  /**
   * Puts a {@link saveState} result back.
   *
   * @throws {DeviceStateError} if `configAddress` is missing or not a 32-bit value (the host is then unchanged).
   */
  loadState(state: StateObject): void {
    this.#configAddress = new StateReader("pci-host", state).u32("configAddress");
  }

  /** A write to "pci-conf-idx": only a 4-byte write at 0xcf8 counts (QEMU's `pci_host_config_write`). */
  writeAddress(offset: number, value: number, size: number): void {
    if (offset !== 0 || size !== 4) return;
    this.#configAddress = value >>> 0;
  }

  /** A read of "pci-conf-data" at `offset` (0–3). */
  readData(offset: number, size: number): number {
    const target = this.#target(offset, size);
    if (!target) return 0xffff_ffff;
    return target.device.readConfig(target.register, target.size);
  }

  /** A write to "pci-conf-data" at `offset` (0–3). */
  writeData(offset: number, value: number, size: number): void {
    const target = this.#target(offset, size);
    if (!target) return;
    const mask = target.size === 4 ? 0xffff_ffff : (1 << (8 * target.size)) - 1;
    target.device.writeConfig(target.register, (value & mask) >>> 0, target.size);
  }

  /** PCI reset: CONFIG_ADDRESS clears and every function gets `RST#`. */
  reset(): void {
    this.#configAddress = 0;
    for (const device of this.#devices.values()) device.reset?.();
  }

  /** QEMU's `pci_data_read`/`pci_data_write` addressing: the register is `(address | offset) & 0xff`. */
  #target(offset: number, size: number): { device: PciDevice; register: number; size: number } | undefined {
    const address = this.#configAddress;
    if (!(address & PCI_CONFIG_ENABLE_BIT)) return undefined;
    const device = this.#devices.get((address >>> 8) & 0xffff);
    if (!device) return undefined;
    const register = (address | (offset & 3)) & (PCI_CONFIG_SPACE_SIZE - 1);
    // Accesses never run past the configuration space (QEMU clamps to the limit; a 3-byte remainder,
    // possible only with garbage in CONFIG_ADDRESS bits 1:0, is cut to 2 to keep sizes 1, 2, 4).
    const clamped = Math.min(size, PCI_CONFIG_SPACE_SIZE - register);
    return { device, register, size: clamped === 3 ? 2 : clamped };
  }
}

function formatAddress(key: number): string {
  const hex = (v: number, width: number) => v.toString(16).padStart(width, "0");
  return `${hex(key >> 8, 2)}:${hex((key >> 3) & 0x1f, 2)}.${key & 7}`;
}
