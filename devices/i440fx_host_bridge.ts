/**
 * The i440FX host bridge (82441FX PMC) at PCI 00:00.0, as QEMU 7.2's `hw/pci-host/i440fx.c`: the
 * PCI identity, the PAM registers 0x59–0x5f that route the 0xc0000–0xfffff legacy area, and the SMRAM
 * register 0x72. The memory side of PAM and SMRAM belongs to the board (`machine/pc/pam.ts`); this
 * device reports the guest's writes through callbacks.
 *
 * @module
 */

import { checkCallback } from "./_ports.ts";
import { PciConfigSpace, type PciDevice } from "./pci_device.ts";
import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";
import { transaction } from "../memory/mod.ts";

/** Intel. */
export const I440FX_VENDOR_ID = 0x8086;
/** 82441FX PMC. */
export const I440FX_DEVICE_ID = 0x1237;
/** QEMU's revision. */
export const I440FX_REVISION = 0x02;
/** Host bridge. */
export const I440FX_CLASS_CODE = 0x06_00_00;
/** PAM0 (BIOS area, high nibble); PAM1–PAM6 follow. */
export const I440FX_PAM_OFFSET = 0x59;
/** Number of PAM registers. */
export const I440FX_PAM_COUNT = 7;
/** The SMRAM control register. */
export const I440FX_SMRAM_OFFSET = 0x72;
/** SMRAM at power-on: C_BASE_SEG = 010 (0xa0000), closed. */
export const I440FX_SMRAM_AT_POWER_ON = 0x02;
/**
 * Not in the real chip: RAM size in 8 MiB units (at most 255), which old coreboot read from QEMU
 * (`I440FX_COREBOOT_RAM_SIZE`).
 */
export const I440FX_COREBOOT_RAM_SIZE_OFFSET = 0x57;

/** Options of {@link I440fxHostBridge}. */
export interface I440fxHostBridgeOptions {
  /**
   * A guest write changed PAM byte `offset` (0x59–0x5f) to `value`; one call per byte the write
   * covered, after the whole write. Connect it to `Pam.writeConfig`.
   */
  onPamWrite?: (offset: number, value: number) => void;
  /** A guest write covered the SMRAM register (0x72); `value` is its new content. */
  onSmramWrite?: (value: number) => void;
  /** Guest RAM in bytes, for QEMU's coreboot RAM-size byte 0x57 (left 0 when absent). */
  ramSize?: number | bigint;
}

/**
 * PCI function 00:00.0 of an i440FX PC: vendor 0x8086, device 0x1237, revision 2, class 0x060000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { I440fxHostBridge } from "./i440fx_host_bridge.ts";
 * const writes: string[] = [];
 * const bridge = new I440fxHostBridge({ onPamWrite: (o, v) => writes.push(`${o.toString(16)}=${v.toString(16)}`) });
 * bridge.writeConfig(0x58, 0x0033_3000, 4); // PAM0 = 0x30 (BIOS area: RAM), PAM1 = 0x33
 * assert.ok(writes.join() === "59=30,5a=33,5b=0" && bridge.readConfig(0x59, 1) === 0x30);
 * ```
 */
export class I440fxHostBridge implements PciDevice, Snapshottable {
  /** The configuration space. */
  readonly config: PciConfigSpace;
  readonly #onPamWrite: ((offset: number, value: number) => void) | undefined;
  readonly #onSmramWrite: ((value: number) => void) | undefined;

  /** The bridge in its power-on state: PAM all to PCI, SMRAM 0x02. */
  constructor(options: I440fxHostBridgeOptions = {}) {
    checkCallback(options.onPamWrite, "I440fxHostBridge onPamWrite");
    checkCallback(options.onSmramWrite, "I440fxHostBridge onSmramWrite");
    this.#onPamWrite = options.onPamWrite;
    this.#onSmramWrite = options.onSmramWrite;
    this.config = new PciConfigSpace({
      vendorId: I440FX_VENDOR_ID,
      deviceId: I440FX_DEVICE_ID,
      revision: I440FX_REVISION,
      classCode: I440FX_CLASS_CODE,
    });
    this.config.bytes[I440FX_SMRAM_OFFSET] = I440FX_SMRAM_AT_POWER_ON;
    if (options.ramSize !== undefined) {
      const units = BigInt(options.ramSize) / (8n << 20n);
      this.config.bytes[I440FX_COREBOOT_RAM_SIZE_OFFSET] = Number(units > 255n ? 255n : units);
    }
  }

  /** PAM register `index` (0–6). */
  pam(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= I440FX_PAM_COUNT) {
      throw new RangeError(`PAM register ${index} is not 0–${I440FX_PAM_COUNT - 1}`);
    }
    return this.config.bytes[I440FX_PAM_OFFSET + index];
  }

  /** The SMRAM register. */
  get smram(): number {
    return this.config.bytes[I440FX_SMRAM_OFFSET];
  }

  /** A configuration read. */
  readConfig(offset: number, size: number): number {
    return this.config.read(offset, size);
  }

  /** A configuration write; PAM and SMRAM changes are reported after it (`i440fx_write_config`). */
  writeConfig(offset: number, value: number, size: number): void {
    this.config.write(offset, value, size);
    const end = offset + size;
    const pamEnd = I440FX_PAM_OFFSET + I440FX_PAM_COUNT;
    for (let at = Math.max(offset, I440FX_PAM_OFFSET); at < Math.min(end, pamEnd); at++) {
      this.#onPamWrite?.(at, this.config.bytes[at]);
    }
    if (offset <= I440FX_SMRAM_OFFSET && I440FX_SMRAM_OFFSET < end) this.#onSmramWrite?.(this.smram);
  }

  /** The configuration space, PAM and SMRAM included. */
  saveState(): StateObject {
    return { config: this.config.bytes.slice() };
  }

  /**
   * Puts a {@link saveState} result back, then reports every PAM byte and the SMRAM register through
   * `onPamWrite` / `onSmramWrite` inside one memory transaction, as a guest write covering them would:
   * the board's PAM and SMRAM mapping follows in a single rebuild.
   *
   * @throws {DeviceStateError} if `config` is missing, not 256 bytes, or differs from this bridge in
   * a read-only bit (the bridge is then unchanged).
   */
  loadState(state: StateObject): void {
    const r = new StateReader("i440fx", state);
    const config = this.config.readSaved(r, "config");
    transaction(() => {
      this.config.bytes.set(config);
      for (let i = 0; i < I440FX_PAM_COUNT; i++) {
        this.#onPamWrite?.(I440FX_PAM_OFFSET + i, this.config.bytes[I440FX_PAM_OFFSET + i]);
      }
      this.#onSmramWrite?.(this.smram);
    });
  }

  /** PCI reset: the header's writable bits clear; PAM and SMRAM keep their values, as in QEMU. */
  reset(): void {
    this.config.resetHeader();
  }
}
