/**
 * Every guest-physical address and size of the i440fx PC board, named and commented in one place
 * (the values of QEMU 7.2's `hw/i386/pc.c`, `pc_piix.c`, `pc_sysfw.c`, `hw/pci-host/i440fx.c`).
 *
 * @module
 */

/** Default `max-ram-below-4g`: RAM below 4 GiB ends here at most (3.5 GiB). */
export const LOWMEM_LIMIT = 0xe000_0000n;
/** With gigabyte alignment, RAM reaching the limit is split at 3 GiB instead. */
export const LOWMEM_GIGABYTE_ALIGNED = 0xc000_0000n;
/** Where RAM above the PCI hole is mapped. */
export const HIGHMEM_START = 0x1_0000_0000n;

/** Legacy VGA window, shown from PCI space while SMRAM is closed (`smram-region`). */
export const SMRAM_C_START = 0xa_0000n;
/** Size of the legacy VGA / SMRAM window. */
export const SMRAM_C_SIZE = 0x2_0000n;

/** Option-ROM area (`pc.rom`), read-only RAM in PCI space. */
export const PC_ROM_START = 0xc_0000n;
/** Size of `pc.rom`. */
export const PC_ROM_SIZE = 0x2_0000n;

/** The firmware ends at 4 GiB: `pc.bios` sits at 4 GiB minus its size. */
export const BIOS_END = 0x1_0000_0000n;
/** Default firmware size: 256 KiB, as Debian's SeaBIOS. */
export const BIOS_DEFAULT_SIZE = 0x4_0000n;
/** The top of the firmware (at most 128 KiB) is also visible below 1 MiB as `isa-bios`. */
export const ISA_BIOS_MAX_SIZE = 0x2_0000n;
/** `isa-bios` ends at 1 MiB. */
export const ISA_BIOS_END = 0x10_0000n;
/** Firmware sizes must be a nonzero multiple of 64 KiB. */
export const BIOS_SIZE_GRANULE = 0x1_0000n;

/** PAM segment of the BIOS area (0xf0000, 64 KiB), attribute in the high nibble of PAM0. */
export const PAM_BIOS_START = 0xf_0000n;
/** Size of the BIOS PAM segment. */
export const PAM_BIOS_SIZE = 0x1_0000n;
/** First of the twelve 16 KiB expansion-area PAM segments. */
export const PAM_EXPAN_START = 0xc_0000n;
/** Size of one expansion-area PAM segment. */
export const PAM_EXPAN_SIZE = 0x4000n;
/** Number of expansion-area segments. */
export const PAM_EXPAN_COUNT = 12;
/** Offset of PAM0 in the host bridge's PCI configuration space. */
export const I440FX_PAM_CONFIG = 0x59;

/** In-kernel IOAPIC registers. */
export const IOAPIC_START = 0xfec0_0000n;
/** Size of the IOAPIC window. */
export const IOAPIC_SIZE = 0x1000n;
/** HPET registers (not modeled by this board). */
export const HPET_START = 0xfed0_0000n;
/** LAPIC / MSI window: writes here are MSIs. */
export const APIC_MSI_START = 0xfee0_0000n;
/** Size of the MSI window. */
export const APIC_MSI_SIZE = 0x10_0000n;
/** The MSI window overrides everything below it (QEMU maps it with priority 0x1000). */
export const APIC_MSI_PRIORITY = 0x1000;

/** KVM's identity-map page, placed just below the TSS (QEMU's choice with the capability). */
export const KVM_IDENTITY_MAP_START = 0xfeff_c000n;
/** KVM's TSS: three pages after the identity-map page. */
export const KVM_TSS_START = 0xfeff_d000n;
/** The e820 reservation covering both. */
export const KVM_RESERVED_SIZE = 0x4000n;

/** Size of the port I/O space (the `io` root region). */
export const IO_SPACE_SIZE = 0x1_0000n;
