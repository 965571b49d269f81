/**
 * Every guest-physical address the boot loaders write to, in one place. All of it lies in the
 * first 256 KiB of RAM, above the real-mode interrupt vector table and BIOS data area
 * (0x0-0x4ff), and below the usual 1 MiB load address of kernels:
 *
 * | range             | what                                   | written by                  |
 * |-------------------|----------------------------------------|-----------------------------|
 * | 0x0500 - 0x051f   | boot GDT (4 descriptors)               | flat protected32/long64, multiboot |
 * | 0x7000 - 0x7fff   | boot stack (RSP = 0x8000, not written) | flat protected32/long64     |
 * | 0x9000 - 0x94ff   | Multiboot memory map (QEMU's address)  | multiboot                   |
 * | 0x9500 - 0x9557   | Multiboot information (QEMU's address) | multiboot                   |
 * | 0x9580 - 0x95ff   | boot loader name "kvm-ts"              | multiboot                   |
 * | 0x9600 - 0x9fff   | kernel command line                    | multiboot                   |
 * | 0xa000 - 0xafff   | PML4                                   | flat long64                 |
 * | 0xb000 - 0xbfff   | PDPT                                   | flat long64                 |
 * | 0xc000 - 0xffff   | 4 page directories: 4 GiB identity map | flat long64, linux          |
 * | 0x10000 - 0x10fff | Linux zero page (`struct boot_params`) | linux (bzImage, vmlinux)    |
 * | 0x20000 - 0x20fff | Linux kernel command line              | linux (bzImage, vmlinux)    |
 *
 * The Linux loaders also use the boot GDT, the boot stack and the page tables above. Their zero page
 * and command line sit where QEMU puts them for a bzImage (`hw/i386/x86.c`: the real-mode part at
 * 0x10000 with `heap_end_ptr` 0xfe00, the command line at 0x20000; Firecracker uses 0x7000 and
 * 0x20000, but 0x7000 is our boot stack). Above 1 MiB the kernel goes at {@link LINUX_KERNEL_START}
 * or at its `pref_address` (linux.ts explains), and the initrd as high as it can below 4 GiB.
 *
 * The Multiboot addresses are QEMU's (`hw/i386/multiboot.c`: `ADDR_E820_MAP` 0x9000, `ADDR_MBI`
 * 0x9500), so a guest sees the same pointers under both; QEMU puts the command line and loader name
 * after the kernel instead, we keep them in the same page as the information structure.
 *
 * @module
 */

/** The boot GDT: null, 32-bit code, flat data, 64-bit code. */
export const BOOT_GDT_START = 0x500n;
/** Size of the boot GDT (4 descriptors of 8 bytes). */
export const BOOT_GDT_SIZE = 0x20n;
/** Selector of the flat 32-bit code segment (descriptor 0x00cf9b000000ffff), as QEMU's multiboot ROM. */
export const BOOT_CODE32_SELECTOR = 0x08;
/** Selector of the flat data segment (descriptor 0x00cf93000000ffff) for DS, ES, FS, GS and SS. */
export const BOOT_DATA_SELECTOR = 0x10;
/** Selector of the 64-bit code segment (descriptor 0x00af9b000000ffff). */
export const BOOT_CODE64_SELECTOR = 0x18;
/** The boot GDT's descriptors, indexed by selector / 8 (accessed bits preset, as KVM loads them). */
export const BOOT_GDT_DESCRIPTORS: readonly bigint[] = [
  0n,
  0x00cf_9b00_0000_ffffn,
  0x00cf_9300_0000_ffffn,
  0x00af_9b00_0000_ffffn,
];

/** Lowest address of the boot stack that flat protected32/long64 images get. */
export const BOOT_STACK_START = 0x7000n;
/** Initial RSP for flat protected32/long64 images (the stack grows down from here). */
export const BOOT_STACK_TOP = 0x8000n;

/** The Multiboot memory map (`mmap_addr`), one 24-byte entry per e820 entry. */
export const MULTIBOOT_MMAP_START = 0x9000n;
/** Room for the memory map: 53 entries. */
export const MULTIBOOT_MMAP_SIZE = 0x500n;
/** The Multiboot information structure (EBX at entry). */
export const MULTIBOOT_INFO_START = 0x9500n;
/** Size of the Multiboot information structure (Multiboot 0.6.96 §3.3, through the VBE fields). */
export const MULTIBOOT_INFO_SIZE = 88n;
/** The boot loader name string (`boot_loader_name`). */
export const MULTIBOOT_LOADER_NAME_START = 0x9580n;
/** Room for the boot loader name, NUL included. */
export const MULTIBOOT_LOADER_NAME_SIZE = 0x80n;
/** The kernel command line (`cmdline`). */
export const MULTIBOOT_CMDLINE_START = 0x9600n;
/** Room for the command line, NUL included. */
export const MULTIBOOT_CMDLINE_SIZE = 0xa00n;
/** The page the Multiboot loader writes: memory map, information, name and command line. */
export const MULTIBOOT_AREA_START = 0x9000n;
/** Size of the Multiboot area. */
export const MULTIBOOT_AREA_SIZE = 0x1000n;

/** PML4 of the long64 identity map (CR3). */
export const BOOT_PML4_START = 0xa000n;
/** PDPT of the long64 identity map: entries 0-3 point at the page directories. */
export const BOOT_PDPT_START = 0xb000n;
/** Four page directories of 512 2-MiB pages each: the first 4 GiB, identity-mapped. */
export const BOOT_PD_START = 0xc000n;
/** Number of page directories (GiB mapped). */
export const BOOT_PD_COUNT = 4;
/** End of the page tables, and of everything the loaders place in low memory. */
export const BOOT_PAGE_TABLES_END = 0x1_0000n;
/** The long64 identity map covers [0, this). */
export const BOOT_IDENTITY_MAP_END = 0x1_0000_0000n;
/** The last GiB of the identity map (PCI holes, IOAPIC, LAPIC, firmware) is mapped cache-disabled. */
export const BOOT_UNCACHED_START = 0xc000_0000n;

/** The Linux zero page (`struct boot_params`, zero-page.rst): RSI at the 64-bit entry. */
export const LINUX_ZERO_PAGE_START = 0x1_0000n;
/** Size of the zero page. */
export const LINUX_ZERO_PAGE_SIZE = 0x1000n;
/** The Linux kernel command line (`cmd_line_ptr`), NUL-terminated. */
export const LINUX_CMDLINE_START = 0x2_0000n;
/**
 * Room for the command line, NUL included. x86 kernels accept at most `cmdline_size` bytes (2047:
 * COMMAND_LINE_SIZE 2048 less the NUL), so one page is enough for any of them.
 */
export const LINUX_CMDLINE_SIZE = 0x1000n;
/**
 * Where a bzImage's protected-mode kernel is loaded when it is not relocatable (boot.rst: the
 * default `code32_start`; QEMU and Firecracker always load it here).
 */
export const LINUX_KERNEL_START = 0x10_0000n;
/**
 * The initrd is never placed below this (1 MiB): Linux reserves low memory for its real-mode
 * trampoline and the BIOS areas, and our own boot structures live there.
 */
export const LINUX_INITRD_LOWEST = 0x10_0000n;
