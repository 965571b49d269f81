/**
 * KVM ABI numbers: ioctl requests computed from the `_IOC` encoding and the struct sizes of
 * `_structs.ts`, capability numbers, exit reasons and the small flag sets that go with them.
 *
 * Sources: `include/uapi/asm-generic/ioctl.h` (the encoding), `include/uapi/linux/kvm.h` and
 * `Documentation/virt/kvm/api.rst`. Every number is pinned to a literal in `ioctls_test.ts`.
 *
 * @module
 */

import {
  KVM_CLEAR_DIRTY_LOG_LAYOUT,
  KVM_CLOCK_DATA_LAYOUT,
  KVM_COALESCED_MMIO_ZONE_LAYOUT,
  KVM_CPUID2_LAYOUT,
  KVM_DEBUGREGS_LAYOUT,
  KVM_DIRTY_LOG_LAYOUT,
  KVM_ENABLE_CAP_LAYOUT,
  KVM_FPU_LAYOUT,
  KVM_GUEST_DEBUG_LAYOUT,
  KVM_IOEVENTFD_LAYOUT,
  KVM_IRQ_LEVEL_LAYOUT,
  KVM_IRQ_ROUTING_LAYOUT,
  KVM_IRQCHIP_LAYOUT,
  KVM_IRQFD_LAYOUT,
  KVM_LAPIC_STATE_LAYOUT,
  KVM_MP_STATE_LAYOUT,
  KVM_MSI_LAYOUT,
  KVM_MSR_LIST_LAYOUT,
  KVM_MSRS_LAYOUT,
  KVM_PIT_CONFIG_LAYOUT,
  KVM_PIT_STATE2_LAYOUT,
  KVM_REGS_LAYOUT,
  KVM_SREGS_LAYOUT,
  KVM_TRANSLATION_LAYOUT,
  KVM_USERSPACE_MEMORY_REGION_LAYOUT,
  KVM_VCPU_EVENTS_LAYOUT,
  KVM_XCRS_LAYOUT,
  KVM_XSAVE_LAYOUT,
} from "./_structs.ts";

// asm-generic/ioctl.h: | dir:2 | size:14 | type:8 | nr:8 |
const IOC_NR_SHIFT = 0;
const IOC_TYPE_SHIFT = 8;
const IOC_SIZE_SHIFT = 16;
const IOC_DIR_SHIFT = 30;
const IOC_SIZE_MAX = (1 << 14) - 1;
const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;

/** The ioctl "type" byte of every KVM request (`KVMIO`). */
export const KVMIO = 0xae;

/** `_IOC(dir, type, nr, size)` as an unsigned 32-bit number. */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  if (size < 0 || size > IOC_SIZE_MAX) {
    throw new RangeError(`ioctl argument size ${size} does not fit 14 bits`);
  }
  return ((dir << IOC_DIR_SHIFT) | (size << IOC_SIZE_SHIFT) | (type << IOC_TYPE_SHIFT) |
    (nr << IOC_NR_SHIFT)) >>> 0;
}
/** `_IO(type, nr)`: no argument, or an integer argument. */
export const io = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
/** `_IOR(type, nr, size)`: the kernel writes a struct of `size` bytes. */
export const ior = (type: number, nr: number, size: number): number => ioc(IOC_READ, type, nr, size);
/** `_IOW(type, nr, size)`: the kernel reads a struct of `size` bytes. */
export const iow = (type: number, nr: number, size: number): number => ioc(IOC_WRITE, type, nr, size);
/** `_IOWR(type, nr, size)`: both. */
export const iowr = (type: number, nr: number, size: number): number =>
  ioc(IOC_READ | IOC_WRITE, type, nr, size);

/** `sizeof(__u64)`, the argument of KVM_SET_IDENTITY_MAP_ADDR. */
const U64_SIZE = 8;

// System ioctls (/dev/kvm fd)
/** Returns 12, the only stable API version. */
export const KVM_GET_API_VERSION: number = io(KVMIO, 0x00);
/** Integer argument: machine type (0). Returns a VM fd. */
export const KVM_CREATE_VM: number = io(KVMIO, 0x01);
/** `struct kvm_msr_list`; E2BIG (with `nmsrs` updated) when too small. */
export const KVM_GET_MSR_INDEX_LIST: number = iowr(KVMIO, 0x02, KVM_MSR_LIST_LAYOUT.size);
/** Integer argument: capability number. Returns 0 (absent) or a positive value. Also on VM fds. */
export const KVM_CHECK_EXTENSION: number = io(KVMIO, 0x03);
/** Returns the size of the vCPU fd's mapping (`struct kvm_run` and the pages that follow). */
export const KVM_GET_VCPU_MMAP_SIZE: number = io(KVMIO, 0x04);
/** `struct kvm_cpuid2`; E2BIG when `nent` is too small. */
export const KVM_GET_SUPPORTED_CPUID: number = iowr(KVMIO, 0x05, KVM_CPUID2_LAYOUT.size);

// VM ioctls
/** Integer argument: vCPU id. Returns a vCPU fd. */
export const KVM_CREATE_VCPU: number = io(KVMIO, 0x41);
/** `struct kvm_dirty_log`. */
export const KVM_GET_DIRTY_LOG: number = iow(KVMIO, 0x42, KVM_DIRTY_LOG_LAYOUT.size);
/** `struct kvm_userspace_memory_region`. */
export const KVM_SET_USER_MEMORY_REGION: number = iow(KVMIO, 0x46, KVM_USERSPACE_MEMORY_REGION_LAYOUT.size);
/** Integer argument: guest-physical address of a 3-page region for the real-mode TSS (Intel). */
export const KVM_SET_TSS_ADDR: number = io(KVMIO, 0x47);
/** Pointer to a u64: guest-physical address of the 1-page identity map (Intel, real mode). */
export const KVM_SET_IDENTITY_MAP_ADDR: number = iow(KVMIO, 0x48, U64_SIZE);
/** No argument: in-kernel PIC, IOAPIC and LAPICs; before any vCPU. */
export const KVM_CREATE_IRQCHIP: number = io(KVMIO, 0x60);
/** `struct kvm_irq_level`. */
export const KVM_IRQ_LINE: number = iow(KVMIO, 0x61, KVM_IRQ_LEVEL_LAYOUT.size);
/** `struct kvm_irq_routing` (its header's size; the entries follow). */
export const KVM_SET_GSI_ROUTING: number = iow(KVMIO, 0x6a, KVM_IRQ_ROUTING_LAYOUT.size);
/** Routing entry type: an irqchip pin. */
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
/** Routing entry type: an MSI message (address and data) delivered to the local APICs. */
export const KVM_IRQ_ROUTING_MSI = 2;
/** `flags` of an MSI routing entry or `struct kvm_msi`: `devid` is valid (KVM_CAP_MSI_DEVID; not x86). */
export const KVM_MSI_VALID_DEVID = 1 << 0;
/** In-kernel irqchips a GSI can be routed to. */
export const KVM_IRQCHIP_PIC_MASTER = 0;
/** The slave 8259. */
export const KVM_IRQCHIP_PIC_SLAVE = 1;
/** The IOAPIC. */
export const KVM_IRQCHIP_IOAPIC = 2;
/** `struct kvm_irqchip` in/out: the state of one in-kernel PIC or the IOAPIC. */
export const KVM_GET_IRQCHIP: number = iowr(KVMIO, 0x62, KVM_IRQCHIP_LAYOUT.size);
/** `struct kvm_irqchip` in. */
export const KVM_SET_IRQCHIP: number = ior(KVMIO, 0x63, KVM_IRQCHIP_LAYOUT.size);
/** `struct kvm_irq_level`; the delivery status is written back into `irq`. */
export const KVM_IRQ_LINE_STATUS: number = iowr(KVMIO, 0x67, KVM_IRQ_LEVEL_LAYOUT.size);
/** `struct kvm_irqfd`: attach (or, with DEASSIGN, detach) an eventfd to a GSI. */
export const KVM_IRQFD: number = iow(KVMIO, 0x76, KVM_IRQFD_LAYOUT.size);
/** `kvm_irqfd.flags`: detach the eventfd from the GSI instead. */
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
/** `kvm_irqfd.flags`: level-triggered, de-asserted on EOI and reported on `resamplefd`. */
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;
/** `struct kvm_coalesced_mmio_zone`: queue guest writes there in the ring instead of exiting. */
export const KVM_REGISTER_COALESCED_MMIO: number = iow(KVMIO, 0x67, KVM_COALESCED_MMIO_ZONE_LAYOUT.size);
/** `struct kvm_coalesced_mmio_zone`: stop queueing writes to the zones inside it. */
export const KVM_UNREGISTER_COALESCED_MMIO: number = iow(KVMIO, 0x68, KVM_COALESCED_MMIO_ZONE_LAYOUT.size);
/** `struct kvm_ioeventfd`: signal an eventfd on a guest write instead of exiting. */
export const KVM_IOEVENTFD: number = iow(KVMIO, 0x79, KVM_IOEVENTFD_LAYOUT.size);
/** `kvm_ioeventfd.flags`: only writes of the value `datamatch` signal. */
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
/** `kvm_ioeventfd.flags`: `addr` is an I/O port, not a guest-physical address. */
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
/** `kvm_ioeventfd.flags`: remove the matching registration instead. */
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;
/** `struct kvm_msi`: inject one MSI; returns > 0 delivered, 0 blocked by the guest. */
export const KVM_SIGNAL_MSI: number = iow(KVMIO, 0xa5, KVM_MSI_LAYOUT.size);
/** `struct kvm_pit_config`. */
export const KVM_CREATE_PIT2: number = iow(KVMIO, 0x77, KVM_PIT_CONFIG_LAYOUT.size);
/** `struct kvm_enable_cap`; on VM and vCPU fds. */
export const KVM_ENABLE_CAP: number = iow(KVMIO, 0xa3, KVM_ENABLE_CAP_LAYOUT.size);
/** `struct kvm_clear_dirty_log` (with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled). */
export const KVM_CLEAR_DIRTY_LOG: number = iowr(KVMIO, 0xc0, KVM_CLEAR_DIRTY_LOG_LAYOUT.size);

// vCPU ioctls
/** No argument (must be 0). Runs the vCPU until an exit that userspace must handle. */
export const KVM_RUN: number = io(KVMIO, 0x80);
/** `struct kvm_regs` out. */
export const KVM_GET_REGS: number = ior(KVMIO, 0x81, KVM_REGS_LAYOUT.size);
/** `struct kvm_regs` in. */
export const KVM_SET_REGS: number = iow(KVMIO, 0x82, KVM_REGS_LAYOUT.size);
/** `struct kvm_sregs` out. */
export const KVM_GET_SREGS: number = ior(KVMIO, 0x83, KVM_SREGS_LAYOUT.size);
/** `struct kvm_sregs` in. */
export const KVM_SET_SREGS: number = iow(KVMIO, 0x84, KVM_SREGS_LAYOUT.size);
/** `struct kvm_translation` in/out: a guest-virtual address through the vCPU's page tables. */
export const KVM_TRANSLATE: number = iowr(KVMIO, 0x85, KVM_TRANSLATION_LAYOUT.size);
/** `struct kvm_msrs`; returns the number of MSRs read. */
export const KVM_GET_MSRS: number = iowr(KVMIO, 0x88, KVM_MSRS_LAYOUT.size);
/** `struct kvm_msrs`; returns the number of MSRs written. */
export const KVM_SET_MSRS: number = iow(KVMIO, 0x89, KVM_MSRS_LAYOUT.size);
/** `struct kvm_fpu` out. */
export const KVM_GET_FPU: number = ior(KVMIO, 0x8c, KVM_FPU_LAYOUT.size);
/** `struct kvm_fpu` in. */
export const KVM_SET_FPU: number = iow(KVMIO, 0x8d, KVM_FPU_LAYOUT.size);
/** `struct kvm_lapic_state` out. */
export const KVM_GET_LAPIC: number = ior(KVMIO, 0x8e, KVM_LAPIC_STATE_LAYOUT.size);
/** `struct kvm_lapic_state` in. */
export const KVM_SET_LAPIC: number = iow(KVMIO, 0x8f, KVM_LAPIC_STATE_LAYOUT.size);
/** `struct kvm_cpuid2` in. */
export const KVM_SET_CPUID2: number = iow(KVMIO, 0x90, KVM_CPUID2_LAYOUT.size);
/** `struct kvm_cpuid2`; E2BIG when `nent` is too small. */
export const KVM_GET_CPUID2: number = iowr(KVMIO, 0x91, KVM_CPUID2_LAYOUT.size);
/** `struct kvm_mp_state` out. */
export const KVM_GET_MP_STATE: number = ior(KVMIO, 0x98, KVM_MP_STATE_LAYOUT.size);
/** `struct kvm_mp_state` in. */
export const KVM_SET_MP_STATE: number = iow(KVMIO, 0x99, KVM_MP_STATE_LAYOUT.size);
/** No argument: queue an NMI (in-kernel LAPIC). */
export const KVM_NMI: number = io(KVMIO, 0x9a);
/**
 * `struct kvm_interrupt` (a u32 vector) in: queue an external interrupt, as an 8259's INTA cycle
 * would give it. With a split irqchip KVM holds it until the LAPIC accepts ExtINT (LVT0) and the
 * guest can take it; without an irqchip, when `ready_for_interrupt_injection` said so.
 */
export const KVM_INTERRUPT: number = iow(KVMIO, 0x86, 4);
/** `struct kvm_vcpu_events` out. */
export const KVM_GET_VCPU_EVENTS: number = ior(KVMIO, 0x9f, KVM_VCPU_EVENTS_LAYOUT.size);
/** `struct kvm_vcpu_events` in. */
export const KVM_SET_VCPU_EVENTS: number = iow(KVMIO, 0xa0, KVM_VCPU_EVENTS_LAYOUT.size);
/** `struct kvm_guest_debug` in: single-step, breakpoints and debug registers of one vCPU. */
export const KVM_SET_GUEST_DEBUG: number = iow(KVMIO, 0x9b, KVM_GUEST_DEBUG_LAYOUT.size);

// struct kvm_guest_debug.control (include/uapi/linux/kvm.h; the USE_* bits are x86's, asm/kvm.h)
/** Debugging on; without it the other bits are ignored and the guest owns its debug registers. */
export const KVM_GUESTDBG_ENABLE = 0x0000_0001;
/** Exit with KVM_EXIT_DEBUG (#DB, DR6.BS) after each guest instruction. */
export const KVM_GUESTDBG_SINGLESTEP = 0x0000_0002;
/** Intercept `int3` (#BP): it exits with KVM_EXIT_DEBUG instead of reaching the guest. */
export const KVM_GUESTDBG_USE_SW_BP = 0x0001_0000;
/** Load `debugreg[0..3]` and `debugreg[7]` into the guest's DR0–DR3 and DR7 while it runs. */
export const KVM_GUESTDBG_USE_HW_BP = 0x0002_0000;
/** Inject a #DB into the guest on the next entry. */
export const KVM_GUESTDBG_INJECT_DB = 0x0004_0000;
/** Inject a #BP into the guest on the next entry. */
export const KVM_GUESTDBG_INJECT_BP = 0x0008_0000;
/** Keep interrupts from being injected while single-stepping (KVM_CAP_SET_GUEST_DEBUG2). */
export const KVM_GUESTDBG_BLOCKIRQ = 0x0010_0000;

// State ioctls for snapshots (api.rst; numbers pinned in ioctls_test.ts)
/** VM: `struct kvm_pit_state2` out (the in-kernel PIT's three channels). */
export const KVM_GET_PIT2: number = ior(KVMIO, 0x9f, KVM_PIT_STATE2_LAYOUT.size);
/** VM: `struct kvm_pit_state2` in. */
export const KVM_SET_PIT2: number = iow(KVMIO, 0xa0, KVM_PIT_STATE2_LAYOUT.size);
/** VM: `struct kvm_clock_data` in: kvmclock's value as the guest will read it. */
export const KVM_SET_CLOCK: number = iow(KVMIO, 0x7b, KVM_CLOCK_DATA_LAYOUT.size);
/** VM: `struct kvm_clock_data` out. */
export const KVM_GET_CLOCK: number = ior(KVMIO, 0x7c, KVM_CLOCK_DATA_LAYOUT.size);
/** vCPU: `struct kvm_debugregs` out. */
export const KVM_GET_DEBUGREGS: number = ior(KVMIO, 0xa1, KVM_DEBUGREGS_LAYOUT.size);
/** vCPU: `struct kvm_debugregs` in. */
export const KVM_SET_DEBUGREGS: number = iow(KVMIO, 0xa2, KVM_DEBUGREGS_LAYOUT.size);
/** vCPU: the guest TSC frequency in kHz as the value argument (KVM_CAP_TSC_CONTROL). */
export const KVM_SET_TSC_KHZ: number = io(KVMIO, 0xa2);
/** vCPU: returns the guest TSC frequency in kHz (KVM_CAP_GET_TSC_KHZ). */
export const KVM_GET_TSC_KHZ: number = io(KVMIO, 0xa3);
/** vCPU: `struct kvm_xsave` out (4 KiB). */
export const KVM_GET_XSAVE: number = ior(KVMIO, 0xa4, KVM_XSAVE_LAYOUT.size);
/** vCPU: `struct kvm_xsave` in (the size KVM_CAP_XSAVE2 reports, when larger than 4 KiB). */
export const KVM_SET_XSAVE: number = iow(KVMIO, 0xa5, KVM_XSAVE_LAYOUT.size);
/** vCPU: `struct kvm_xsave` out, with room for the size KVM_CAP_XSAVE2 reports (AMX state). */
export const KVM_GET_XSAVE2: number = ior(KVMIO, 0xcf, KVM_XSAVE_LAYOUT.size);
/** vCPU: `struct kvm_xcrs` out. */
export const KVM_GET_XCRS: number = ior(KVMIO, 0xa6, KVM_XCRS_LAYOUT.size);
/** vCPU: `struct kvm_xcrs` in. */
export const KVM_SET_XCRS: number = iow(KVMIO, 0xa7, KVM_XCRS_LAYOUT.size);

/** The only KVM API version there has ever been (api.rst, KVM_GET_API_VERSION). */
export const KVM_API_VERSION = 12;

// Capabilities (KVM_CHECK_EXTENSION), include/uapi/linux/kvm.h
/** In-kernel PIC/IOAPIC/LAPIC. */
export const KVM_CAP_IRQCHIP = 0;
/** HLT exits. */
export const KVM_CAP_HLT = 1;
/** KVM_SET_USER_MEMORY_REGION. */
export const KVM_CAP_USER_MEMORY = 3;
/** KVM_SET_TSS_ADDR. */
export const KVM_CAP_SET_TSS_ADDR = 4;
/** KVM_GET_SUPPORTED_CPUID. */
export const KVM_CAP_EXT_CPUID = 7;
/** Recommended vCPU count. */
export const KVM_CAP_NR_VCPUS = 9;
/** Returns the number of memslots per address space. */
export const KVM_CAP_NR_MEMSLOTS = 10;
/** Returns the page offset of the coalesced-MMIO ring in the vCPU mapping. */
export const KVM_CAP_COALESCED_MMIO = 15;
/** Memslot host mappings may change under a running VM (MMU notifiers). */
export const KVM_CAP_SYNC_MMU = 16;
/** KVM_SET_GSI_ROUTING. */
export const KVM_CAP_IRQ_ROUTING = 25;
/** KVM_IRQFD. */
export const KVM_CAP_IRQFD = 32;
/** KVM_CREATE_PIT2. */
export const KVM_CAP_PIT2 = 33;
/** KVM_GET/SET_PIT2. */
export const KVM_CAP_PIT_STATE2 = 35;
/** KVM_IOEVENTFD. */
export const KVM_CAP_IOEVENTFD = 36;
/** KVM_SET_IDENTITY_MAP_ADDR. */
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
/** KVM_SET_GUEST_DEBUG. */
export const KVM_CAP_SET_GUEST_DEBUG = 23;
/** Maximum vCPU count. */
export const KVM_CAP_MAX_VCPUS = 66;
/** TSC-deadline timer in the in-kernel LAPIC. */
export const KVM_CAP_TSC_DEADLINE_TIMER = 72;
/** KVM_SIGNAL_MSI. */
export const KVM_CAP_SIGNAL_MSI = 77;
/** KVM_IRQFD_FLAG_RESAMPLE (level-triggered irqfds with an EOI notification). */
export const KVM_CAP_IRQFD_RESAMPLE = 82;
/** KVM_IOEVENTFD with `len` 0 (match any write length). */
export const KVM_CAP_IOEVENTFD_NO_LENGTH = 100;
/** KVM_MEM_READONLY memslots: guest writes exit as MMIO (81, not 31). */
export const KVM_CAP_READONLY_MEM = 81;
/** Returns the number of address spaces (2 on x86 with SMM). */
export const KVM_CAP_MULTI_ADDRESS_SPACE = 118;
/** Number of hardware breakpoints KVM_SET_GUEST_DEBUG can set (arm64; x86 always has DR0–DR3). */
export const KVM_CAP_GUEST_DEBUG_HW_BPS = 119;
/** Number of hardware watchpoints (arm64; on x86 they share DR0–DR3 with the breakpoints). */
export const KVM_CAP_GUEST_DEBUG_HW_WPS = 120;
/** KVM_ENABLE_CAP for a split (userspace IOAPIC) irqchip. */
export const KVM_CAP_SPLIT_IRQCHIP = 121;
/** KVM_IOEVENTFD with `len` 0, possibly on a faster path. */
export const KVM_CAP_IOEVENTFD_ANY_LENGTH = 122;
/** Maximum vCPU id + 1. */
export const KVM_CAP_MAX_VCPU_ID = 128;
/** x2APIC API extensions. */
export const KVM_CAP_X2APIC_API = 129;
/** KVM_CAP_X2APIC_API flag: 32-bit APIC ids in KVM_GET/SET_LAPIC and MSI destinations (`address_hi`). */
export const KVM_X2APIC_API_USE_32BIT_IDS = 1;
/** KVM_CAP_X2APIC_API flag: an x2APIC destination of 0xff is APIC id 255, not a broadcast. */
export const KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK = 2;
/** `kvm_run.immediate_exit`. */
export const KVM_CAP_IMMEDIATE_EXIT = 136;
/** Coalesced PIO. */
export const KVM_CAP_COALESCED_PIO = 162;
/** KVM_SET_TSC_KHZ. */
export const KVM_CAP_TSC_CONTROL = 60;
/** KVM_GET_TSC_KHZ. */
export const KVM_CAP_GET_TSC_KHZ = 61;
/** KVM_GET/SET_XSAVE. */
export const KVM_CAP_XSAVE = 55;
/** KVM_GET/SET_XCRS. */
export const KVM_CAP_XCRS = 56;
/** KVM_GET/SET_DEBUGREGS. */
export const KVM_CAP_DEBUGREGS = 50;
/** KVM_GET_XSAVE2; KVM_CHECK_EXTENSION on the VM returns the buffer size it needs. */
export const KVM_CAP_XSAVE2 = 208;
/** KVM_GET/SET_CLOCK with `realtime` and `host_tsc` (KVM_CLOCK_REALTIME, KVM_CLOCK_HOST_TSC). */
export const KVM_CAP_ADJUST_CLOCK = 39;
/** KVM_CLEAR_DIRTY_LOG with manual re-protection; enable with KVM_ENABLE_CAP. */
export const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168;
/** Dirty ring instead of bitmaps. */
export const KVM_CAP_DIRTY_LOG_RING = 192;
/** Returns the `KVM_GUESTDBG_*` control bits this KVM accepts. */
export const KVM_CAP_SET_GUEST_DEBUG2 = 195;

// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enable flags (args[0])
/** GET_DIRTY_LOG no longer write-protects; userspace calls CLEAR_DIRTY_LOG. */
export const KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0;
/** New logging slots start all dirty (lazy write-protection). */
export const KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1;

// Memslot flags (struct kvm_userspace_memory_region.flags)
/** Track guest writes in a per-slot bitmap. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
/** Guest writes exit as KVM_EXIT_MMIO; reads and fetches stay in the kernel. */
export const KVM_MEM_READONLY = 1 << 1;
/** Memslot id bits that select the address space (`as_id << 16 | index`). */
export const KVM_MEMSLOT_AS_ID_SHIFT = 16;

/** `struct kvm_pit_config.flags`: do not emulate the PC speaker port 0x61. */
export const KVM_PIT_SPEAKER_DUMMY = 1;
/** `struct kvm_cpuid_entry2.flags`: `index` (the ECX sub-leaf) is significant. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

// Exit reasons (kvm_run.exit_reason)
/** Unknown hardware exit; `hw.hardware_exit_reason` says which. */
export const KVM_EXIT_UNKNOWN = 0;
/** A guest exception. */
export const KVM_EXIT_EXCEPTION = 1;
/** Port I/O: `in`/`out`/`ins`/`outs`. */
export const KVM_EXIT_IO = 2;
/** Hypercall (unused on x86 by default). */
export const KVM_EXIT_HYPERCALL = 3;
/** Debug trap (KVM_SET_GUEST_DEBUG). */
export const KVM_EXIT_DEBUG = 4;
/** `hlt` without an in-kernel irqchip. */
export const KVM_EXIT_HLT = 5;
/** Guest access to guest-physical memory without a (writable) memslot. */
export const KVM_EXIT_MMIO = 6;
/** The guest can take an interrupt (request_interrupt_window). */
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
/** Triple fault. */
export const KVM_EXIT_SHUTDOWN = 8;
/** VM entry failed; `fail_entry` has the hardware reason. */
export const KVM_EXIT_FAIL_ENTRY = 9;
/** KVM_RUN interrupted by a signal or `immediate_exit` (returned as -1/EINTR). */
export const KVM_EXIT_INTR = 10;
/** TPR below threshold (userspace LAPIC). */
export const KVM_EXIT_SET_TPR = 11;
/** TPR access reporting. */
export const KVM_EXIT_TPR_ACCESS = 12;
/** NMI (s390/ppc; unused on x86). */
export const KVM_EXIT_NMI = 16;
/** KVM could not handle something; `internal.suberror` says what. */
export const KVM_EXIT_INTERNAL_ERROR = 17;
/** OSI hypercall (ppc). */
export const KVM_EXIT_OSI = 18;
/** Shutdown/reset/crash request (PSCI, Hyper-V, TDX…); `system_event.type` says which. */
export const KVM_EXIT_SYSTEM_EVENT = 24;
/** EOI of a level-triggered IOAPIC interrupt (split irqchip). */
export const KVM_EXIT_IOAPIC_EOI = 26;
/** `rdmsr` forwarded to userspace (KVM_CAP_X86_USER_SPACE_MSR). */
export const KVM_EXIT_X86_RDMSR = 29;
/** `wrmsr` forwarded to userspace. */
export const KVM_EXIT_X86_WRMSR = 30;
/** The dirty ring is full. */
export const KVM_EXIT_DIRTY_RING_FULL = 31;
/** A bus lock was detected. */
export const KVM_EXIT_X86_BUS_LOCK = 33;

/** Names of the exit reasons, for messages. */
export const KVM_EXIT_NAMES: Readonly<Record<number, string>> = {
  [KVM_EXIT_UNKNOWN]: "KVM_EXIT_UNKNOWN",
  [KVM_EXIT_EXCEPTION]: "KVM_EXIT_EXCEPTION",
  [KVM_EXIT_IO]: "KVM_EXIT_IO",
  [KVM_EXIT_HYPERCALL]: "KVM_EXIT_HYPERCALL",
  [KVM_EXIT_DEBUG]: "KVM_EXIT_DEBUG",
  [KVM_EXIT_HLT]: "KVM_EXIT_HLT",
  [KVM_EXIT_MMIO]: "KVM_EXIT_MMIO",
  [KVM_EXIT_IRQ_WINDOW_OPEN]: "KVM_EXIT_IRQ_WINDOW_OPEN",
  [KVM_EXIT_SHUTDOWN]: "KVM_EXIT_SHUTDOWN",
  [KVM_EXIT_FAIL_ENTRY]: "KVM_EXIT_FAIL_ENTRY",
  [KVM_EXIT_INTR]: "KVM_EXIT_INTR",
  [KVM_EXIT_SET_TPR]: "KVM_EXIT_SET_TPR",
  [KVM_EXIT_TPR_ACCESS]: "KVM_EXIT_TPR_ACCESS",
  [KVM_EXIT_NMI]: "KVM_EXIT_NMI",
  [KVM_EXIT_INTERNAL_ERROR]: "KVM_EXIT_INTERNAL_ERROR",
  [KVM_EXIT_OSI]: "KVM_EXIT_OSI",
  [KVM_EXIT_SYSTEM_EVENT]: "KVM_EXIT_SYSTEM_EVENT",
  [KVM_EXIT_IOAPIC_EOI]: "KVM_EXIT_IOAPIC_EOI",
  [KVM_EXIT_X86_RDMSR]: "KVM_EXIT_X86_RDMSR",
  [KVM_EXIT_X86_WRMSR]: "KVM_EXIT_X86_WRMSR",
  [KVM_EXIT_DIRTY_RING_FULL]: "KVM_EXIT_DIRTY_RING_FULL",
  [KVM_EXIT_X86_BUS_LOCK]: "KVM_EXIT_X86_BUS_LOCK",
};

/** `"KVM_EXIT_IO"` for 2; `"KVM_EXIT_#<n>"` for a reason this table does not know. */
export function exitReasonName(reason: number): string {
  return KVM_EXIT_NAMES[reason] ?? `KVM_EXIT_#${reason}`;
}

/** `kvm_run.io.direction` of an `in`. */
export const KVM_EXIT_IO_IN = 0;
/** `kvm_run.io.direction` of an `out`. */
export const KVM_EXIT_IO_OUT = 1;

// kvm_run.internal.suberror
/** The instruction emulator failed (e.g. an instruction it does not implement). */
export const KVM_INTERNAL_ERROR_EMULATION = 1;
/** An exception occurred while delivering another. */
export const KVM_INTERNAL_ERROR_SIMUL_EX = 2;
/** An event could not be delivered (e.g. an MMIO-backed IDT). */
export const KVM_INTERNAL_ERROR_DELIVERY_EV = 3;
/** The hardware exit reason is not handled by KVM. */
export const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4;

// kvm_run.system_event.type
/** The guest asked to power off. */
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
/** The guest asked to reset. */
export const KVM_SYSTEM_EVENT_RESET = 2;
/** The guest crashed. */
export const KVM_SYSTEM_EVENT_CRASH = 3;

// struct kvm_mp_state.mp_state (x86 values)
/** The vCPU runs. */
export const KVM_MP_STATE_RUNNABLE = 0;
/** An application processor waiting for INIT. */
export const KVM_MP_STATE_UNINITIALIZED = 1;
/** INIT received, waiting for SIPI. */
export const KVM_MP_STATE_INIT_RECEIVED = 2;
/** Halted (`hlt` with an in-kernel irqchip). */
export const KVM_MP_STATE_HALTED = 3;
/** SIPI received. */
export const KVM_MP_STATE_SIPI_RECEIVED = 4;

// TUN/TAP (include/uapi/linux/if_tun.h). The historic `_IOW('T', nr, int)` sizes are kept even
// where the argument is a `struct ifreq` (TUNSETIFF) or an integer by value (TUNSETOFFLOAD).

/** The ioctl "type" byte of the TUN/TAP requests, `'T'`. */
export const TUN_IOCTL_TYPE = 0x54;
/** `sizeof(int)`, the size the TUN requests were declared with. */
const INT_SIZE = 4;
/** `struct ifreq` in/out: attach the fd to a new or existing interface; the name is written back. */
export const TUNSETIFF: number = iow(TUN_IOCTL_TYPE, 202, INT_SIZE);
/** Integer argument by value: the `TUN_F_*` offloads the reader can take (0: none). */
export const TUNSETOFFLOAD: number = iow(TUN_IOCTL_TYPE, 208, INT_SIZE);
/** `struct ifreq` out: the interface's name and flags. */
export const TUNGETIFF: number = ior(TUN_IOCTL_TYPE, 210, INT_SIZE);
/** Pointer to an int out: the virtio-net header size. */
export const TUNGETVNETHDRSZ: number = ior(TUN_IOCTL_TYPE, 215, INT_SIZE);
/** Pointer to an int in: the virtio-net header size in front of each frame (at least 10). */
export const TUNSETVNETHDRSZ: number = iow(TUN_IOCTL_TYPE, 216, INT_SIZE);
/** `ifr_flags`: a layer-3 TUN device. */
export const IFF_TUN = 0x0001;
/** `ifr_flags`: a layer-2 TAP device (Ethernet frames). */
export const IFF_TAP = 0x0002;
/** `ifr_flags`: no 4-byte packet-information prefix. */
export const IFF_NO_PI = 0x1000;
/** `ifr_flags`: a virtio-net header in front of each frame, both directions. */
export const IFF_VNET_HDR = 0x4000;
/** `ifr_flags`: one queue per fd on the same interface. */
export const IFF_MULTI_QUEUE = 0x0100;
