/**
 * Breakpoint bookkeeping for the gdb stub, and its translation into what `KVM_SET_GUEST_DEBUG`
 * takes: software breakpoints (an `int3` patched into guest memory, intercepted with
 * `KVM_GUESTDBG_USE_SW_BP`) and up to four hardware breakpoints and watchpoints sharing DR0–DR3
 * (`KVM_GUESTDBG_USE_HW_BP`, DR7 built here). Also the reverse: which of them a `KVM_EXIT_DEBUG`
 * belongs to, or that it is the guest's own trap to be given back to it. This is the scheme of
 * QEMU's KVM gdbstub (`target/i386/kvm/kvm.c`); the bit layout is the Intel SDM's (vol. 3,
 * 18.2 "Debug registers"). Pure: no guest memory here, the stub does the patching.
 *
 * @module
 */

import {
  KVM_GUESTDBG_ENABLE,
  KVM_GUESTDBG_SINGLESTEP,
  KVM_GUESTDBG_USE_HW_BP,
  KVM_GUESTDBG_USE_SW_BP,
} from "../kvm/ioctls.ts";
import type { GuestDebug } from "../kvm/vcpu.ts";

/** The opcode of `int3`. */
export const INT3_OPCODE = 0xcc;
/** Debug registers DR0–DR3: at most four hardware breakpoints and watchpoints together. */
export const HW_BREAKPOINT_SLOTS = 4;
/** `#DB`, the debug exception (single step, debug registers). */
export const DB_VECTOR = 1;
/** `#BP`, the breakpoint exception (`int3`). */
export const BP_VECTOR = 3;

// DR7 (SDM vol. 3, 18.2.4): L/G enable pairs at bits 2n/2n+1, LE 8, GE 9, bit 10 reads as 1,
// and for slot n the R/W field at 16 + 4n and the LEN field at 18 + 4n.
/** Global enable of slot n is bit `2n + 1`. */
const DR7_G_SHIFT = 1;
/** GE (global exact): recommended with data breakpoints, as QEMU sets it. */
export const DR7_GE_BIT = 1n << 9n;
/** Bit 10 of DR7 is reserved and reads as 1. */
export const DR7_FIXED_1_BIT = 1n << 10n;
const DR7_RW_SHIFT = 16;
const DR7_LEN_SHIFT = 18;
const DR7_SLOT_STRIDE = 4;
/** DR6 B0–B3: which slot matched. */
const DR6_B_MASK = 0xfn;
/** DR6.BS: the trap came from single-stepping. */
export const DR6_BS_BIT = 1n << 14n;

/** What a hardware slot watches: instruction fetch, data writes, or data reads and writes. */
export type HwBreakpointKind = "exec" | "write" | "access";

/** One DR0–DR3 slot in use. */
export interface HwBreakpoint {
  /** The linear address (DR0–DR3). */
  readonly address: bigint;
  /** What triggers it. */
  readonly kind: HwBreakpointKind;
  /** Bytes watched: 1 for `exec`; 1, 2, 4 or 8 (naturally aligned) for data. */
  readonly length: 1 | 2 | 4 | 8;
}

/** The R/W field of DR7 for each kind (00 execute, 01 write, 11 read/write; 10 is I/O). */
export const DR7_RW_CODE: Readonly<Record<HwBreakpointKind, number>> = {
  exec: 0b00,
  write: 0b01,
  access: 0b11,
};
/** The LEN field of DR7 for each length (00 one byte, 01 two, 11 four, 10 eight). */
export const DR7_LEN_CODE: Readonly<Record<1 | 2 | 4 | 8, number>> = { 1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10 };

/**
 * DR7 for the slots in use (`undefined` = free): bit 10 and GE always, and for each used slot its
 * global enable, R/W and LEN fields. Local enables stay clear (they are the guest's task-switch
 * business). An execution slot always gets LEN 00, as the SDM requires.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeDr7 } from "./gdb_breakpoints.ts";
 * // slot 1: a 4-byte write watchpoint → G1 (bit 3), R/W1 = 01, LEN1 = 11
 * assert.equal(encodeDr7([undefined, { address: 0x2000n, kind: "write", length: 4 }]), 0x00d0_0608n);
 * ```
 */
export function encodeDr7(slots: readonly (HwBreakpoint | undefined)[]): bigint {
  let dr7 = DR7_FIXED_1_BIT | DR7_GE_BIT;
  slots.forEach((slot, n) => {
    if (slot === undefined) return;
    if (n >= HW_BREAKPOINT_SLOTS) throw new RangeError(`DR7 has 4 slots, not ${n + 1}`);
    const len = slot.kind === "exec" ? 0 : DR7_LEN_CODE[slot.length];
    dr7 |= 1n << BigInt(2 * n + DR7_G_SHIFT);
    dr7 |= BigInt(DR7_RW_CODE[slot.kind]) << BigInt(DR7_RW_SHIFT + DR7_SLOT_STRIDE * n);
    dr7 |= BigInt(len) << BigInt(DR7_LEN_SHIFT + DR7_SLOT_STRIDE * n);
  });
  return dr7;
}

/** Why a vCPU stopped, as the stub reports it to gdb. */
export type DebugStopReason =
  | { readonly kind: "step" }
  | { readonly kind: "swbreak" }
  | { readonly kind: "hwbreak" }
  | { readonly kind: "watch"; readonly access: "write" | "access"; readonly address: bigint };

/** The fields of a `KVM_EXIT_DEBUG` that classification needs (`DebugExit` of kvm/exit.ts fits). */
export interface DebugTrap {
  /** 1 (#DB) or 3 (#BP). */
  readonly exception: number;
  /** Linear address of the instruction (for #BP: the `int3` itself). */
  readonly pc: bigint;
  /** DR6 as KVM reports it (B0–B3 and BS set when they fired). */
  readonly dr6: bigint;
}

/** Failure of an insert or remove, in the errno words gdb's `E` replies are built from. */
export type BreakpointError = "exists" | "full" | "invalid" | "absent";

interface SoftwareBreakpoint {
  /** The byte the `int3` replaced. */
  readonly saved: number;
  /** gdb may insert the same address twice; the byte goes back when the count drops to 0. */
  count: number;
}

/**
 * The stub's breakpoints: software ones by address (with the byte each `int3` replaced) and the
 * four hardware slots. One table for the whole VM: guest memory is shared by every vCPU, and the
 * hardware slots are loaded into every vCPU's debug registers alike.
 */
export class BreakpointTable {
  readonly #software = new Map<bigint, SoftwareBreakpoint>();
  readonly #slots: (HwBreakpoint | undefined)[] = new Array(HW_BREAKPOINT_SLOTS).fill(undefined);

  /** Addresses with an `int3` in place. */
  get softwareAddresses(): bigint[] {
    return [...this.#software.keys()];
  }

  /** The four DR0–DR3 slots (`undefined` = free). */
  get hardwareSlots(): readonly (HwBreakpoint | undefined)[] {
    return this.#slots;
  }

  /** Whether an `int3` of ours sits at `address`. */
  hasSoftware(address: bigint): boolean {
    return this.#software.has(address);
  }

  /** The original byte under our `int3` at `address`. */
  savedByte(address: bigint): number | undefined {
    return this.#software.get(address)?.saved;
  }

  /**
   * Records a software breakpoint. Returns true when the caller must now write the `int3` (the
   * first insert at this address), false when it was already there.
   */
  addSoftware(address: bigint, saved: number): boolean {
    const existing = this.#software.get(address);
    if (existing) {
      existing.count++;
      return false;
    }
    this.#software.set(address, { saved, count: 1 });
    return true;
  }

  /**
   * Drops one reference to a software breakpoint: `{ restore }` with the byte to write back when
   * it was the last, `{}` when others remain, `"absent"` when there is none at `address`.
   */
  removeSoftware(address: bigint): { restore?: number } | "absent" {
    const existing = this.#software.get(address);
    if (!existing) return "absent";
    if (--existing.count > 0) return {};
    this.#software.delete(address);
    return { restore: existing.saved };
  }

  /** Forgets every software breakpoint, returning address → byte to restore. */
  clearSoftware(): Map<bigint, number> {
    const out = new Map([...this.#software].map(([address, bp]) => [address, bp.saved]));
    this.#software.clear();
    return out;
  }

  /**
   * Takes a free slot for a hardware breakpoint or watchpoint. Refuses (as QEMU does) a duplicate,
   * a fifth slot, a data length other than 1, 2, 4, 8, and a data address not aligned to it.
   */
  addHardware(bp: HwBreakpoint): BreakpointError | undefined {
    if (bp.kind !== "exec") {
      if (![1, 2, 4, 8].includes(bp.length)) return "invalid";
      if ((bp.address & BigInt(bp.length - 1)) !== 0n) return "invalid";
    }
    const wanted = bp.kind === "exec" ? { ...bp, length: 1 as const } : bp;
    if (this.#slots.some((s) => s && sameSlot(s, wanted))) return "exists";
    const free = this.#slots.indexOf(undefined);
    if (free < 0) return "full";
    this.#slots[free] = wanted;
    return undefined;
  }

  /** Frees the slot holding exactly this breakpoint or watchpoint. */
  removeHardware(bp: HwBreakpoint): BreakpointError | undefined {
    const wanted = bp.kind === "exec" ? { ...bp, length: 1 as const } : bp;
    const n = this.#slots.findIndex((s) => s && sameSlot(s, wanted));
    if (n < 0) return "absent";
    this.#slots[n] = undefined;
    return undefined;
  }

  /** Frees every hardware slot. */
  clearHardware(): void {
    this.#slots.fill(undefined);
  }

  /**
   * What to give `KVM_SET_GUEST_DEBUG` for one vCPU: always ENABLE (so the stub sees the traps it
   * asked for), SINGLESTEP when this vCPU steps, USE_SW_BP while an `int3` of ours exists, and
   * USE_HW_BP with DR0–DR3 and DR7 while a slot is in use.
   */
  guestDebug(singleStep: boolean): GuestDebug {
    const used = this.#slots.some((s) => s !== undefined);
    let control = KVM_GUESTDBG_ENABLE;
    if (singleStep) control |= KVM_GUESTDBG_SINGLESTEP;
    if (this.#software.size > 0) control |= KVM_GUESTDBG_USE_SW_BP;
    const debugreg = [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n];
    if (used) {
      control |= KVM_GUESTDBG_USE_HW_BP;
      this.#slots.forEach((s, n) => debugreg[n] = s?.address ?? 0n);
      debugreg[7] = encodeDr7(this.#slots);
    }
    return { control, debugreg };
  }

  /**
   * Whose trap a `KVM_EXIT_DEBUG` is. A #DB with DR6.BS while this vCPU single-steps is the step;
   * a #DB with B0–B3 naming a slot of ours is that breakpoint or watchpoint; a #BP at one of our
   * `int3`s is that breakpoint. Anything else (the guest's own `int3`, its own TF or debug
   * registers) is `"guest"`: the runner re-injects the exception and keeps running, as QEMU does.
   */
  classify(trap: DebugTrap, singleStepping: boolean): DebugStopReason | "guest" {
    if (trap.exception === DB_VECTOR) {
      if ((trap.dr6 & DR6_BS_BIT) !== 0n) return singleStepping ? { kind: "step" } : "guest";
      const hits = trap.dr6 & DR6_B_MASK;
      for (let n = 0; n < HW_BREAKPOINT_SLOTS; n++) {
        const slot = this.#slots[n];
        if ((hits & (1n << BigInt(n))) === 0n || slot === undefined) continue;
        if (slot.kind === "exec") return { kind: "hwbreak" };
        return { kind: "watch", access: slot.kind, address: slot.address };
      }
      return "guest";
    }
    if (trap.exception === BP_VECTOR && this.#software.has(trap.pc)) return { kind: "swbreak" };
    return "guest";
  }
}

function sameSlot(a: HwBreakpoint, b: HwBreakpoint): boolean {
  return a.address === b.address && a.kind === b.kind && a.length === b.length;
}
