/**
 * PCI functions as the configuration mechanism sees them, and the 256-byte configuration space with
 * QEMU's default access rules (`hw/pci/pci.c`: `pci_default_read_config` / `pci_default_write_config`
 * with the `wmask` and `w1cmask` of `pci_init_wmask` / `pci_init_w1cmask`).
 *
 * @module
 */

import type { StateReader } from "./device_state.ts";

/** Size of a conventional PCI configuration space. */
export const PCI_CONFIG_SPACE_SIZE = 256;
/** Size of the standard header; bytes from here on are device-specific. */
export const PCI_CONFIG_HEADER_SIZE = 0x40;

/** Offsets in the configuration header. */
export const PciConfig = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION_ID: 0x08,
  CLASS_PROG: 0x09,
  CLASS_DEVICE: 0x0a,
  CACHE_LINE_SIZE: 0x0c,
  LATENCY_TIMER: 0x0d,
  HEADER_TYPE: 0x0e,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
} as const;

/** Command bits a guest may set on every QEMU device: I/O, memory, bus master, SERR, INTx disable. */
const COMMAND_WRITABLE = 0x0001 | 0x0002 | 0x0004 | 0x0100 | 0x0400;
/** Status error bits that are write-1-to-clear: parity, target/master aborts, SERR, detected parity. */
const STATUS_W1C = 0x0100 | 0x0800 | 0x1000 | 0x2000 | 0x4000 | 0x8000;
/** QEMU's default subsystem IDs for devices that have none (Red Hat / QEMU). */
const SUBSYSTEM_VENDOR_QEMU = 0x1af4;
const SUBSYSTEM_ID_QEMU = 0x1100;

/**
 * A PCI function as a host bridge reaches it: configuration reads and writes of 1, 2 or 4 bytes that
 * stay within the 256 bytes (naturally aligned, unless the guest set the low bits of CONFIG_ADDRESS,
 * which QEMU passes through).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PciConfigSpace, type PciDevice } from "./pci_device.ts";
 * class Dummy implements PciDevice {
 *   readonly config = new PciConfigSpace({ vendorId: 0x1234, deviceId: 0x1111, classCode: 0x030000 });
 *   readConfig(offset: number, size: number) { return this.config.read(offset, size); }
 *   writeConfig(offset: number, value: number, size: number) { this.config.write(offset, value, size); }
 * }
 * assert.equal(new Dummy().readConfig(0, 4), 0x1111_1234);
 * ```
 */
export interface PciDevice {
  /** Reads `size` bytes of configuration space at `offset`, little-endian. */
  readConfig(offset: number, size: number): number;
  /** Writes the low `size` bytes of `value` at `offset`. */
  writeConfig(offset: number, value: number, size: number): void;
  /** PCI reset (`RST#`): back to the power-on state the bus reset gives. */
  reset?(): void;
}

/** Identity of a function, written into its header by {@link PciConfigSpace}. */
export interface PciIdentity {
  /** Vendor ID. */
  vendorId: number;
  /** Device ID. */
  deviceId: number;
  /** Revision ID (default 0). */
  revision?: number;
  /** 24-bit class code: base class, subclass, programming interface (0x060000 = host bridge). */
  classCode: number;
  /** Header type byte (default 0: a normal device, single function). */
  headerType?: number;
  /** Subsystem vendor ID (default QEMU's 0x1af4 for header type 0). */
  subsystemVendorId?: number;
  /** Subsystem ID (default QEMU's 0x1100 for header type 0). */
  subsystemId?: number;
}

/**
 * The 256 bytes of a function's configuration space plus, per byte, which bits a guest may write
 * (`wmask`) and which are write-1-to-clear (`w1cmask`), initialized as QEMU initializes every device.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PciConfigSpace } from "./pci_device.ts";
 * const cfg = new PciConfigSpace({ vendorId: 0x8086, deviceId: 0x1237, revision: 2, classCode: 0x060000 });
 * cfg.write(0x00, 0xffff_ffff, 4); // IDs are read-only
 * cfg.write(0x04, 0xffff, 2); // command: only the writable bits stick
 * assert.ok(cfg.read(0, 4) === 0x1237_8086 && cfg.read(0x04, 2) === 0x0507);
 * ```
 */
export class PciConfigSpace {
  /** The configuration bytes. */
  readonly bytes: Uint8Array = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Bits a guest write may change. */
  readonly wmask: Uint8Array = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Bits a guest write of 1 clears. */
  readonly w1cmask: Uint8Array = new Uint8Array(PCI_CONFIG_SPACE_SIZE);

  /** A configuration space with `identity` in its header and QEMU's default masks. */
  constructor(identity: PciIdentity) {
    const headerType = identity.headerType ?? 0;
    this.setWord(PciConfig.VENDOR_ID, identity.vendorId);
    this.setWord(PciConfig.DEVICE_ID, identity.deviceId);
    this.bytes[PciConfig.REVISION_ID] = identity.revision ?? 0;
    this.bytes[PciConfig.CLASS_PROG] = identity.classCode & 0xff;
    this.setWord(PciConfig.CLASS_DEVICE, (identity.classCode >> 8) & 0xffff);
    this.bytes[PciConfig.HEADER_TYPE] = headerType;
    if ((headerType & 0x7f) === 0) {
      this.setWord(PciConfig.SUBSYSTEM_VENDOR_ID, identity.subsystemVendorId ?? SUBSYSTEM_VENDOR_QEMU);
      this.setWord(PciConfig.SUBSYSTEM_ID, identity.subsystemId ?? SUBSYSTEM_ID_QEMU);
    }
    // pci_init_wmask: cache line size, interrupt line, command bits, the whole device-specific area.
    this.wmask[PciConfig.CACHE_LINE_SIZE] = 0xff;
    this.wmask[PciConfig.INTERRUPT_LINE] = 0xff;
    this.wmask[PciConfig.COMMAND] = COMMAND_WRITABLE & 0xff;
    this.wmask[PciConfig.COMMAND + 1] = COMMAND_WRITABLE >> 8;
    this.wmask.fill(0xff, PCI_CONFIG_HEADER_SIZE);
    // pci_init_w1cmask: the status error bits.
    this.w1cmask[PciConfig.STATUS] = STATUS_W1C & 0xff;
    this.w1cmask[PciConfig.STATUS + 1] = STATUS_W1C >> 8;
  }

  /** Reads `size` bytes at `offset`, little-endian (QEMU's `pci_default_read_config`). */
  read(offset: number, size: number): number {
    checkAccess(offset, size);
    let value = 0;
    for (let i = size - 1; i >= 0; i--) value = value * 256 + this.bytes[offset + i];
    return value;
  }

  /** A guest write: each byte through `wmask`, then `w1cmask` (QEMU's `pci_default_write_config`). */
  write(offset: number, value: number, size: number): void {
    checkAccess(offset, size);
    for (let i = 0; i < size; i++, value = Math.floor(value / 256)) {
      const byte = value & 0xff;
      const at = offset + i;
      const wmask = this.wmask[at];
      this.bytes[at] = ((this.bytes[at] & ~wmask) | (byte & wmask)) & ~(byte & this.w1cmask[at]);
    }
  }

  /**
   * Reads saved configuration bytes from `field` of `r` for a load: 256 bytes that agree with this
   * space in every bit the guest cannot write (`wmask`, `w1cmask`), except the bits `deviceBits`
   * allows per offset (bits the device itself changes, such as status.INTERRUPT). So a state saved
   * from another kind of function, or with forged read-only fields, is refused. Returns a copy.
   *
   * @throws {DeviceStateError} naming `field` and the first differing offset.
   */
  readSaved(r: StateReader, field: string, deviceBits: ReadonlyMap<number, number> = new Map()): Uint8Array {
    const saved = r.bytes(field, { length: PCI_CONFIG_SPACE_SIZE });
    for (let at = 0; at < PCI_CONFIG_SPACE_SIZE; at++) {
      const fixed = ~(this.wmask[at] | this.w1cmask[at] | (deviceBits.get(at) ?? 0)) & 0xff;
      if (((saved[at] ^ this.bytes[at]) & fixed) !== 0) {
        const hex = (v: number) => `0x${v.toString(16).padStart(2, "0")}`;
        r.fail(
          field,
          `has ${hex(saved[at])} at offset ${hex(at)}, where this function's read-only bits (${
            hex(fixed)
          }) are ${hex(this.bytes[at] & fixed)}: saved from another device?`,
        );
      }
    }
    return saved;
  }

  /** Sets a 16-bit field directly (device code, not a guest write). */
  setWord(offset: number, value: number): void {
    this.bytes[offset] = value & 0xff;
    this.bytes[offset + 1] = (value >> 8) & 0xff;
  }

  /**
   * The header part of a PCI reset (QEMU's `pci_do_device_reset`): command, status, cache line size
   * and interrupt line cleared where the guest could change them. Device-specific bytes stay.
   */
  resetHeader(): void {
    for (const at of [PciConfig.COMMAND, PciConfig.COMMAND + 1, PciConfig.STATUS, PciConfig.STATUS + 1]) {
      this.bytes[at] &= ~(this.wmask[at] | this.w1cmask[at]);
    }
    this.bytes[PciConfig.INTERRUPT_LINE] &=
      ~(this.wmask[PciConfig.INTERRUPT_LINE] | this.w1cmask[PciConfig.INTERRUPT_LINE]);
    this.bytes[PciConfig.CACHE_LINE_SIZE] = 0;
  }
}

function checkAccess(offset: number, size: number): void {
  if (size !== 1 && size !== 2 && size !== 4) {
    throw new RangeError(`PCI config access size ${size} is not 1, 2 or 4`);
  }
  if (!Number.isInteger(offset) || offset < 0 || offset + size > PCI_CONFIG_SPACE_SIZE) {
    throw new RangeError(
      `PCI config access of ${size} bytes at 0x${offset.toString(16)} is outside the 256 bytes`,
    );
  }
}
