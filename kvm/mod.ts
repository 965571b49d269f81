/**
 * The KVM layer: typed wrappers over the `/dev/kvm` ioctls through Deno FFI on libc, guest RAM
 * mappings, and pure decoding of vCPU exits.
 *
 * Importing this module loads nothing native: libc is opened on the first call that needs it, so
 * the struct layouts, ioctl numbers and {@link decodeExit} work on any machine. Every failed
 * syscall throws {@link KvmError}. Owners of fds and mappings ({@link Kvm}, {@link Vm},
 * {@link Vcpu}, {@link GuestMemory}, {@link EventFd}, {@link Tap}, {@link DiskImage}) have an
 * idempotent `close()` and work with `using`.
 *
 * The host side of virtio devices lives here too, since it is all syscalls: eventfds that KVM
 * signals on a guest doorbell write ({@link Vm.registerIoeventfd}) or turns into interrupts
 * ({@link Vm.registerIrqfd}, {@link MsiRoutes}, {@link Vm.signalMsi}), a {@link Tap} for
 * virtio-net, raw {@link DiskImage}s locked as QEMU locks them for virtio-blk, and
 * {@link getRandom} for virtio-rng.
 *
 * @example
 * ```ts ignore
 * import { decodeExit, GuestMemory, Kvm, KVM_EXIT_HLT } from "./mod.ts";
 * using kvm = Kvm.open();
 * using vm = kvm.createVm();
 * using ram = new GuestMemory(0x10000);
 * vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: ram.size, userspaceAddr: ram.hostAddress });
 * ram.bytes.set([0xb0, 0x41, 0xe6, 0x10, 0xf4], 0x1000); // mov al,0x41; out 0x10,al; hlt
 * using vcpu = vm.createVcpu(0);
 * const sregs = vcpu.getSregs();
 * vcpu.setSregs({ ...sregs, cs: { ...sregs.cs, base: 0n, selector: 0 } });
 * vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n, rflags: 0x2n });
 * while (vcpu.run() !== KVM_EXIT_HLT) console.log(decodeExit(vcpu.runPage));
 * ```
 *
 * @module
 */

export { Kvm, KVM_DEVICE_PATH, type KvmAvailability, kvmAvailability } from "./kvm.ts";
export {
  type CoalescedZone,
  dirtyBitmapSize,
  type FdLike,
  type IoeventfdMatch,
  type IrqfdOptions,
  type KvmClockData,
  type KvmPitState2,
  type MemoryRegionTrace,
  swizzleMsiExtDestId,
  type UserMemoryRegion,
  Vm,
  type VmOptions,
} from "./vm.ts";
export {
  defaultGsiRoutes,
  type GsiRoute,
  type GsiRouter,
  IOAPIC_NUM_PINS,
  type IrqchipRoute,
  isIrqchipRoute,
  KVM_MAX_IRQ_ROUTES,
  type MsiMessage,
  type MsiRoute,
  MsiRoutes,
  type MsiRoutesOptions,
} from "./msi_routes.ts";
export {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  EventFd,
  EVENTFD_MAX,
  type EventFdOptions,
} from "./event_fd.ts";
export { POLLERR, POLLHUP, POLLIN, POLLNVAL, pollReadable, PollSet } from "./poll.ts";
export {
  type Doorbell,
  doorbellRinger,
  DoorbellWait,
  ringDoorbell,
  vmWaker,
  type VmWakeTarget,
} from "./doorbell.ts";
export {
  IFNAMSIZ,
  Tap,
  type TapOptions,
  TUN_DEVICE_PATH,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_UFO,
  VIRTIO_NET_HDR_LEGACY_SIZE,
  VIRTIO_NET_HDR_SIZE,
} from "./tap.ts";
export {
  type BufferSpans,
  DiskImage,
  type DiskImageOptions,
  F_OFD_GETLK,
  F_OFD_SETLK,
  F_RDLCK,
  F_UNLCK,
  F_WRLCK,
  type ImageLocks,
  imageLocks,
  QEMU_LOCK_PERM_BASE,
  QEMU_LOCK_SHARED_BASE,
  QEMU_PERMISSIONS,
  type QemuPermission,
  SECTOR_SIZE,
} from "./disk_image.ts";
export { getRandom, GRND_NONBLOCK } from "./get_random.ts";
export { IO_RING_MAX_IOVECS, IoRing, type IoRingDone, type IoRingOp, type IoRingOptions } from "./io_ring.ts";
export {
  type CpuidEntry,
  type GuestDebug,
  type KvmDebugregs,
  type KvmDtable,
  type KvmFpu,
  type KvmRegs,
  type KvmSegment,
  type KvmSregs,
  type MsrEntry,
  type Translation,
  Vcpu,
  type VcpuEvents,
  type VcpuOptions,
  type XcrEntry,
} from "./vcpu.ts";
export {
  KVM_VCPUEVENT_VALID_NMI_PENDING,
  KVM_VCPUEVENT_VALID_SIPI_VECTOR,
  MSR_IA32_TSC_DEADLINE,
  readableMsrs,
  restoreVcpuState,
  saveVcpuState,
  type VcpuState,
  type VcpuStateOptions,
} from "./vcpu_state.ts";
export { GuestMemory } from "./guest_memory.ts";
export { HostTimer, type HostTimerOptions } from "./host_timer.ts";
export {
  type DebugExit,
  decodeExit,
  type ExceptionExit,
  type FailEntryExit,
  type HltExit,
  type InternalErrorExit,
  type IntrExit,
  type IoapicEoiExit,
  type IoExit,
  type IrqWindowOpenExit,
  type MmioExit,
  type ShutdownExit,
  type SystemEventExit,
  type UnknownExit,
  type VcpuExit,
} from "./exit.ts";
export {
  ERRNO_NAMES,
  errnoName,
  KVM_ERROR_BAD_API_VERSION,
  KVM_ERROR_PARTIAL,
  KvmError,
  type KvmErrorOptions,
  kvmOpenError,
} from "./kvm_error.ts";
export {
  exitReasonName,
  IFF_MULTI_QUEUE,
  IFF_NO_PI,
  IFF_TAP,
  IFF_TUN,
  IFF_VNET_HDR,
  io,
  ioc,
  ior,
  iow,
  iowr,
  KVM_API_VERSION,
  KVM_CAP_ADJUST_CLOCK,
  KVM_CAP_COALESCED_MMIO,
  KVM_CAP_COALESCED_PIO,
  KVM_CAP_DEBUGREGS,
  KVM_CAP_DIRTY_LOG_RING,
  KVM_CAP_EXT_CPUID,
  KVM_CAP_GET_TSC_KHZ,
  KVM_CAP_HLT,
  KVM_CAP_IMMEDIATE_EXIT,
  KVM_CAP_IOEVENTFD,
  KVM_CAP_IOEVENTFD_ANY_LENGTH,
  KVM_CAP_IOEVENTFD_NO_LENGTH,
  KVM_CAP_IRQ_ROUTING,
  KVM_CAP_IRQCHIP,
  KVM_CAP_IRQFD,
  KVM_CAP_IRQFD_RESAMPLE,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_CAP_MAX_VCPU_ID,
  KVM_CAP_MAX_VCPUS,
  KVM_CAP_MULTI_ADDRESS_SPACE,
  KVM_CAP_NR_MEMSLOTS,
  KVM_CAP_NR_VCPUS,
  KVM_CAP_PIT2,
  KVM_CAP_PIT_STATE2,
  KVM_CAP_READONLY_MEM,
  KVM_CAP_SET_GUEST_DEBUG,
  KVM_CAP_SET_GUEST_DEBUG2,
  KVM_CAP_SET_IDENTITY_MAP_ADDR,
  KVM_CAP_SET_TSS_ADDR,
  KVM_CAP_SIGNAL_MSI,
  KVM_CAP_SPLIT_IRQCHIP,
  KVM_CAP_SYNC_MMU,
  KVM_CAP_TSC_CONTROL,
  KVM_CAP_TSC_DEADLINE_TIMER,
  KVM_CAP_USER_MEMORY,
  KVM_CAP_X2APIC_API,
  KVM_CAP_XCRS,
  KVM_CAP_XSAVE,
  KVM_CAP_XSAVE2,
  KVM_CHECK_EXTENSION,
  KVM_CLEAR_DIRTY_LOG,
  KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_DIRTY_LOG_INITIALLY_SET,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_ENABLE_CAP,
  KVM_EXIT_DEBUG,
  KVM_EXIT_DIRTY_RING_FULL,
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_HYPERCALL,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_IN,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_IOAPIC_EOI,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_MMIO,
  KVM_EXIT_NAMES,
  KVM_EXIT_NMI,
  KVM_EXIT_OSI,
  KVM_EXIT_SET_TPR,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_EXIT_TPR_ACCESS,
  KVM_EXIT_UNKNOWN,
  KVM_EXIT_X86_BUS_LOCK,
  KVM_EXIT_X86_RDMSR,
  KVM_EXIT_X86_WRMSR,
  KVM_GET_API_VERSION,
  KVM_GET_CPUID2,
  KVM_GET_DIRTY_LOG,
  KVM_GET_FPU,
  KVM_GET_IRQCHIP,
  KVM_GET_LAPIC,
  KVM_GET_MP_STATE,
  KVM_GET_MSR_INDEX_LIST,
  KVM_GET_MSRS,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_EVENTS,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_GUESTDBG_BLOCKIRQ,
  KVM_GUESTDBG_ENABLE,
  KVM_GUESTDBG_INJECT_BP,
  KVM_GUESTDBG_INJECT_DB,
  KVM_GUESTDBG_SINGLESTEP,
  KVM_GUESTDBG_USE_HW_BP,
  KVM_GUESTDBG_USE_SW_BP,
  KVM_INTERNAL_ERROR_DELIVERY_EV,
  KVM_INTERNAL_ERROR_EMULATION,
  KVM_INTERNAL_ERROR_SIMUL_EX,
  KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
  KVM_INTERRUPT,
  KVM_IOEVENTFD,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQ_LINE,
  KVM_IRQ_LINE_STATUS,
  KVM_IRQ_ROUTING_IRQCHIP,
  KVM_IRQ_ROUTING_MSI,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
  KVM_IRQCHIP_PIC_SLAVE,
  KVM_IRQFD,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_RESAMPLE,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_MEMSLOT_AS_ID_SHIFT,
  KVM_MP_STATE_HALTED,
  KVM_MP_STATE_INIT_RECEIVED,
  KVM_MP_STATE_RUNNABLE,
  KVM_MP_STATE_SIPI_RECEIVED,
  KVM_MP_STATE_UNINITIALIZED,
  KVM_MSI_VALID_DEVID,
  KVM_NMI,
  KVM_PIT_SPEAKER_DUMMY,
  KVM_RUN,
  KVM_SET_CPUID2,
  KVM_SET_FPU,
  KVM_SET_GSI_ROUTING,
  KVM_SET_GUEST_DEBUG,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_IRQCHIP,
  KVM_SET_LAPIC,
  KVM_SET_MP_STATE,
  KVM_SET_MSRS,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SET_VCPU_EVENTS,
  KVM_SIGNAL_MSI,
  KVM_SYSTEM_EVENT_CRASH,
  KVM_SYSTEM_EVENT_RESET,
  KVM_SYSTEM_EVENT_SHUTDOWN,
  KVM_TRANSLATE,
  KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
  KVM_X2APIC_API_USE_32BIT_IDS,
  KVMIO,
  TUN_IOCTL_TYPE,
  TUNGETIFF,
  TUNGETVNETHDRSZ,
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETVNETHDRSZ,
} from "./ioctls.ts";
export { hostPageSize } from "./_libc.ts";
export {
  KvmMemoryListener,
  type KvmMemoryListenerOptions,
  type Memslot,
  type MemslotBackend,
  type MemslotCall,
} from "./kvm_memory_listener.ts";
export { type IoeventfdBackend, KvmIoeventfdListener } from "./kvm_ioeventfd_listener.ts";
export { type CoalescedBackend, CoalescedRing, KvmCoalescedListener } from "./kvm_coalesced_mmio.ts";
export {
  currentThread,
  handleKickSignal,
  KICK_SIGNAL,
  VcpuKicker,
  type VcpuKickTarget,
  vcpuKickTarget,
} from "./vcpu_kicker.ts";
export { type ExitSpaces, serveExit } from "./serve_exit.ts";
export {
  FAKE_IO_DATA_OFFSET,
  type FakeRunPage,
  fakeRunPage,
  writeExitReason,
  writeFailEntryExit,
  writeInternalErrorExit,
  writeIoExit,
  writeMmioExit,
  writeSystemEventExit,
} from "./fake_exit.ts";
export { type ExtIntPath, VcpuHandle, type VcpuHandleInit, vcpuHandleInit } from "./vcpu_handle.ts";
// Memory-API types that the KVM layer's public types refer to (the KVM listener is a memory
// listener; guest RAM is a RAM backing; exits are served on address spaces), so that this module's
// documentation is complete on its own.
export type {
  AccessConstraints,
  AddressSpace,
  AddrInput,
  Endianness,
  FlatRange,
  FlatView,
  MemoryListener,
  MemoryRegion,
  MemoryRegionOps,
  MemoryRegionSection,
  RamBacking,
  ReadResult,
  RegionKind,
  ValidConstraints,
} from "../memory/mod.ts";
export { type HostKvm, hostKvm, kvmDeviceOpens } from "./host_kvm.ts";
