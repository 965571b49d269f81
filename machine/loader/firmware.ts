/**
 * The entry state for booting firmware: the x86 reset state, set explicitly. The board maps the
 * firmware itself (`pc.bios` at 4 GiB minus its size, `isa-bios` below 1 MiB), so nothing is
 * written; the plan only says where the CPU starts. It is needed because the reset CS differs
 * between KVM implementations (docs/kvm-abi.md §8: base 0 on kvm_pvm, 0xffff0000 elsewhere).
 *
 * @module
 */

import { BOOT_RFLAGS, type BootPlan } from "./boot_plan.ts";
import { LoaderError } from "./loader_error.ts";
import { hex } from "./_plan.ts";

/** CS selector at reset. */
export const RESET_CS_SELECTOR = 0xf000;
/** CS base at reset: the top 64 KiB below 4 GiB. */
export const RESET_CS_BASE = 0xffff_0000n;
/** IP at reset: CS base + IP = 0xfffffff0, the last 16 bytes of the firmware. */
export const RESET_IP = 0xfff0n;
/** Firmware sizes are a nonzero multiple of 64 KiB (QEMU's check for `-bios`). */
const FIRMWARE_SIZE_GRANULE = 0x1_0000;
/** Firmware ends at 4 GiB. */
const FIRMWARE_END = 0x1_0000_0000n;

/**
 * The reset-vector entry for `firmware` (which the board maps; no writes).
 * Throws {@link LoaderError} (DOES_NOT_FIT) unless its size is a nonzero multiple of 64 KiB.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { firmwareEntry } from "./firmware.ts";
 * import { FIRMWARE } from "../guests/mod.ts";
 * const plan = firmwareEntry(FIRMWARE);
 * assert.equal(plan.cpu.cs?.base, 0xffff0000n);
 * assert.equal(plan.cpu.rip, 0xfff0n);
 * ```
 */
export function firmwareEntry(firmware: Uint8Array): BootPlan {
  const size = firmware.length;
  if (size === 0 || size % FIRMWARE_SIZE_GRANULE !== 0) {
    throw new LoaderError(
      "DOES_NOT_FIT",
      `firmware: ${size} bytes is not a nonzero multiple of 64 KiB`,
    );
  }
  return {
    writes: [],
    cpu: {
      mode: "real",
      rip: RESET_IP,
      rflags: BOOT_RFLAGS,
      cs: { selector: RESET_CS_SELECTOR, base: RESET_CS_BASE },
    },
    description: `firmware: ${size >> 10} KiB at ${hex(FIRMWARE_END - BigInt(size))}, reset vector ` +
      `${hex(RESET_CS_BASE + RESET_IP)} (CS ${hex(RESET_CS_SELECTOR)}, IP ${hex(RESET_IP)})`,
  };
}
