/**
 * What a boot loader produces: the bytes to place in guest memory and the initial CPU state.
 * Loaders are pure functions from an image (bytes, or an `ImageSource` read by position) to a
 * {@link BootPlan}; the board writes the bytes (`copyBootWrites` into `AddressSpace.writeRom`) and
 * the vCPU runner turns `cpu` into `KVM_SET_SREGS`/`KVM_SET_REGS`.
 *
 * @module
 */

import type { BootSourceWrite } from "./image_source.ts";

/**
 * One write of a {@link BootPlan}: bytes the plan holds (the structures a loader builds, and views
 * of an image given in memory), or a range of an image source (a kernel or initrd kept in its file),
 * read when the guest is loaded.
 */
export type BootWrite = { addr: bigint; data: Uint8Array } | BootSourceWrite;

/** The CPU mode a loader enters a guest in. */
export type CpuMode = "real" | "protected32" | "long64";

/**
 * Everything needed to start a guest.
 *
 * Segment state by mode (the runner builds the hidden descriptor parts from this):
 * - `real`: CS = `cpu.cs` (selector and base, limit 0xffff); DS, ES, FS, GS, SS equal CS.
 * - `protected32`: CS = `cpu.cs.selector` (layout's `BOOT_CODE32_SELECTOR`), 32-bit flat code;
 *   DS, ES, FS, GS, SS = `BOOT_DATA_SELECTOR`, flat data; CR0 = PE; paging off.
 * - `long64`: CS = `BOOT_CODE64_SELECTOR` (L = 1), data as above; CR0 = PE | PG, CR4 = PAE,
 *   EFER = LME | LMA, CR3 = `cpu.cr3`.
 * In both protected modes the descriptors match the GDT the loader wrote at `cpu.gdt`, so a guest
 * may reload its segment registers before it installs its own GDT. The IDT is left empty (limit 0).
 *
 * @example
 * ```ts
 * import type { BootPlan } from "./boot_plan.ts";
 * const plan: BootPlan = {
 *   writes: [{ addr: 0x7c00n, data: new Uint8Array([0xf4]) }],
 *   cpu: { mode: "real", rip: 0n, cs: { selector: 0x7c0, base: 0x7c00n } },
 *   description: "1 byte at 0x7c00",
 * };
 * ```
 */
export interface BootPlan {
  /**
   * What to place in guest memory (through the memory API's AddressSpace.writeRom, by
   * `copyBootWrites`). Never overlapping. Plans of images given as bytes hold bytes only.
   */
  writes: BootWrite[];
  /** Initial CPU state: mode and registers. */
  cpu: {
    mode: CpuMode;
    rip: bigint;
    rsp?: bigint;
    /** Default 0x2 (only the reserved bit; interrupts off). */
    rflags?: bigint;
    gpr?: Partial<Record<"rax" | "rbx" | "rcx" | "rdx" | "rsi" | "rdi" | "rbp", bigint>>;
    /** long64: page tables the loader placed. */
    cr3?: bigint;
    /** Code segment selector and base: set in every mode (the base is 0 in the protected modes). */
    cs?: { selector: number; base: bigint };
    /** Where the loader placed a GDT, if any. */
    gdt?: { base: bigint; limit: number };
  };
  /** For messages: what was loaded. */
  description: string;
}

/** An e820 memory map entry, as the board describes its RAM and holes. */
export interface E820Entry {
  /** First byte. */
  addr: bigint;
  /** Length in bytes. */
  size: bigint;
  /** {@link E820_RAM}, {@link E820_RESERVED}, 3 ACPI, 4 NVS, 5 unusable. */
  type: number;
}

/** e820 type of usable RAM. */
export const E820_RAM = 1;
/** e820 type of reserved memory. */
export const E820_RESERVED = 2;

/** RFLAGS at entry: bit 1 is reserved and always set; IF is clear. */
export const BOOT_RFLAGS = 0x2n;
