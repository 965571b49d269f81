/**
 * Guest-virtual to guest-physical translation by walking the guest's page tables in software, as
 * QEMU's `x86_cpu_get_phys_page_debug` does for `memsave` and the gdb stub: no paging (the
 * address is physical), 32-bit paging (4 KiB and, with CR4.PSE, 4 MiB pages), PAE, and 4- or
 * 5-level long-mode paging (2 MiB and 1 GiB pages). Pure: the tables are read through a callback.
 *
 * @module
 */

/** The control registers a walk needs (KVM's `kvm_sregs` has them under these names). */
export interface PagingRegisters {
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

const CR0_PG_BIT = 1n << 31n;
const CR4_PSE_BIT = 1n << 4n;
const CR4_PAE_BIT = 1n << 5n;
const CR4_LA57_BIT = 1n << 12n;
const EFER_LMA_BIT = 1n << 10n;
const PTE_PRESENT_BIT = 1n;
const PTE_PS_BIT = 1n << 7n;
/** Bits 12–51 of a 64-bit entry: the next table or the page frame. */
const PTE_ADDR_MASK = 0x000f_ffff_ffff_f000n;

/**
 * The guest-physical address of `vaddr` under `regs`, or null when no present mapping covers it.
 * `read64(pa)` / `read32(pa)` read one page-table entry (little-endian) from guest-physical memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { translateVirtual } from "./page_walk.ts";
 * // Long mode, one 2 MiB page at 0x20_0000 mapping virtual 0: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000.
 * const tables = new Map<bigint, bigint>([[0x1000n, 0x2003n], [0x2000n, 0x3003n], [0x3000n, 0x20_0083n]]);
 * const regs = { cr0: 0x8000_0001n, cr3: 0x1000n, cr4: 0x20n, efer: 0x500n };
 * const read64 = (pa: bigint) => tables.get(pa) ?? 0n;
 * assert.equal(translateVirtual(regs, 0x1234n, read64, (pa) => Number(read64(pa))), 0x20_1234n);
 * assert.equal(translateVirtual(regs, 0x40_0000n, read64, (pa) => Number(read64(pa))), null);
 * ```
 */
export function translateVirtual(
  regs: PagingRegisters,
  vaddr: bigint,
  read64: (pa: bigint) => bigint,
  read32: (pa: bigint) => number,
): bigint | null {
  if ((regs.cr0 & CR0_PG_BIT) === 0n) return vaddr;
  if ((regs.cr4 & CR4_PAE_BIT) === 0n) {
    // 32-bit paging: a page directory of 1024 entries, then a page table.
    const va = vaddr & 0xffff_ffffn;
    const pde = BigInt(read32((regs.cr3 & 0xffff_f000n) + ((va >> 22n) << 2n)) >>> 0);
    if ((pde & PTE_PRESENT_BIT) === 0n) return null;
    if ((pde & PTE_PS_BIT) !== 0n && (regs.cr4 & CR4_PSE_BIT) !== 0n) {
      // A 4 MiB page: bits 13–20 of the entry are bits 32–39 of the frame (PSE-36).
      const frame = (pde & 0xffc0_0000n) | (((pde >> 13n) & 0xffn) << 32n);
      return frame | (va & 0x3f_ffffn);
    }
    const pte = BigInt(read32((pde & 0xffff_f000n) + (((va >> 12n) & 0x3ffn) << 2n)) >>> 0);
    if ((pte & PTE_PRESENT_BIT) === 0n) return null;
    return (pte & 0xffff_f000n) | (va & 0xfffn);
  }
  let table: bigint;
  let levels: bigint[]; // the shift of each level's index, top first
  if ((regs.efer & EFER_LMA_BIT) !== 0n) {
    table = regs.cr3 & PTE_ADDR_MASK;
    levels = (regs.cr4 & CR4_LA57_BIT) !== 0n ? [48n, 39n, 30n, 21n, 12n] : [39n, 30n, 21n, 12n];
  } else {
    // PAE: four PDPTEs at CR3 (32-byte aligned), then a PD and a PT of 512 entries each.
    const va = vaddr & 0xffff_ffffn;
    const pdpte = read64((regs.cr3 & 0xffff_ffe0n) + ((va >> 30n) << 3n));
    if ((pdpte & PTE_PRESENT_BIT) === 0n) return null;
    table = pdpte & PTE_ADDR_MASK;
    vaddr = va;
    levels = [21n, 12n];
  }
  for (const shift of levels) {
    const entry = read64(table + (((vaddr >> shift) & 0x1ffn) << 3n));
    if ((entry & PTE_PRESENT_BIT) === 0n) return null;
    const frame = entry & PTE_ADDR_MASK;
    if (shift === 12n) return frame | (vaddr & 0xfffn);
    if ((entry & PTE_PS_BIT) !== 0n && (shift === 21n || shift === 30n)) {
      const size = 1n << shift;
      return (frame & ~(size - 1n)) | (vaddr & (size - 1n));
    }
    table = frame;
  }
  return null;
}
