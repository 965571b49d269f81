/**
 * The KVM layer: typed wrappers over the `/dev/kvm` ioctls through Deno FFI on libc, guest RAM
 * mappings, and pure decoding of vCPU exits.
 *
 * Importing this module loads nothing native: libc is opened on the first call that needs it, so
 * the struct layouts, ioctl numbers and {@link decodeExit} work on any machine. Every failed
 * syscall throws {@link KvmError}. Owners of fds and mappings ({@link Kvm}, {@link Vm},
 * {@link Vcpu}, {@link GuestMemory}) have an idempotent `close()` and work with `using`.
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
export { dirtyBitmapSize, type MemoryRegionTrace, type UserMemoryRegion, Vm, type VmOptions } from "./vm.ts";
export {
  type CpuidEntry,
  type KvmDtable,
  type KvmFpu,
  type KvmRegs,
  type KvmSegment,
  type KvmSregs,
  type MsrEntry,
  Vcpu,
  type VcpuEvents,
  type VcpuOptions,
} from "./vcpu.ts";
export { GuestMemory } from "./guest_memory.ts";
export {
  type DebugExit,
  decodeExit,
  type ExceptionExit,
  type FailEntryExit,
  type HltExit,
  type InternalErrorExit,
  type IntrExit,
  type IoExit,
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
export * from "./ioctls.ts";
export { hostPageSize } from "./_libc.ts";
export {
  KvmMemoryListener,
  type KvmMemoryListenerOptions,
  type Memslot,
  type MemslotBackend,
  type MemslotCall,
} from "./kvm_memory_listener.ts";
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
export { VcpuHandle, type VcpuHandleInit, vcpuHandleInit } from "./vcpu_handle.ts";
