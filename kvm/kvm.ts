/**
 * The KVM system fd (`/dev/kvm`): API version, capabilities, CPUID and MSR lists, VM creation.
 *
 * @module
 */

import { E2BIG } from "./_errno.ts";
import { decodeStruct, encodeStruct, KVM_MSR_LIST_LAYOUT, structBuffer } from "./_structs.ts";
import { closeFd, ioctlBuf, ioctlNone, ioctlU64, openDevice, retryOnEintr } from "./_syscalls.ts";
import { libc } from "./_libc.ts";
import {
  KVM_API_VERSION,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_MSR_INDEX_LIST,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
} from "./ioctls.ts";
import { KVM_ERROR_BAD_API_VERSION, KvmError } from "./kvm_error.ts";
import { type CpuidEntry, readCpuidEntries } from "./vcpu.ts";
import { Vm } from "./vm.ts";

/** Where the KVM device lives on Linux. */
export const KVM_DEVICE_PATH = "/dev/kvm";

/** First capacity tried for KVM_GET_MSR_INDEX_LIST; the kernel reports the real count on E2BIG. */
const MSR_LIST_START = 256;

/** Result of {@link kvmAvailability}. */
export type KvmAvailability =
  | { readonly available: true }
  | { readonly available: false; readonly reason: string };

/**
 * Whether KVM can be used from this process: opens the device and checks the API version, then
 * closes it. Never throws; `reason` says what is missing (FFI permission, the device, access…).
 * Tests use it to skip, with the reason printed, on machines without KVM.
 *
 * @example
 * ```ts
 * import { kvmAvailability } from "./kvm.ts";
 * const kvm = kvmAvailability();
 * if (!kvm.available) console.log(`skipping KVM tests: ${kvm.reason}`);
 * ```
 */
export function kvmAvailability(path: string = KVM_DEVICE_PATH): KvmAvailability {
  try {
    Kvm.open(path).close();
    return { available: true };
  } catch (error) {
    return { available: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

/**
 * An open `/dev/kvm`. Owns the VMs it creates: {@link Kvm.close} closes them (and their vCPUs)
 * before the device fd, so `using kvm = Kvm.open()` releases everything in the right order.
 *
 * @example
 * ```ts ignore
 * import { Kvm, KVM_CAP_READONLY_MEM } from "./mod.ts";
 * using kvm = Kvm.open();
 * console.log(kvm.apiVersion(), kvm.checkExtension(KVM_CAP_READONLY_MEM), kvm.vcpuMmapSize());
 * using vm = kvm.createVm();
 * ```
 */
export class Kvm implements Disposable {
  #fd: number;
  readonly #path: string;
  #vcpuMmapSize: number | undefined;
  #supportedCpuid: readonly Readonly<CpuidEntry>[] | undefined;
  readonly #vms = new Set<Vm>();

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.#path = path;
  }

  /**
   * Opens the KVM device (`O_RDWR | O_CLOEXEC`) and checks that its API version is 12.
   *
   * @throws {KvmError} op `"open /dev/kvm"` with advice when the device is missing (ENOENT) or not
   *   accessible (EACCES/EPERM); code `"BAD_API_VERSION"` for an API other than 12.
   */
  static open(path: string = KVM_DEVICE_PATH): Kvm {
    const kvm = new Kvm(openDevice(path), path);
    try {
      const version = kvm.apiVersion();
      if (version !== KVM_API_VERSION) {
        throw new KvmError("KVM_GET_API_VERSION", 0, {
          code: KVM_ERROR_BAD_API_VERSION,
          detail: path,
          hint:
            `the kernel reports API version ${version}; this program speaks version ${KVM_API_VERSION} only`,
        });
      }
    } catch (error) {
      kvm.close();
      throw error;
    }
    return kvm;
  }

  /** The /dev/kvm fd (-1 after close). */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@link Kvm.close} has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** `KVM_GET_API_VERSION` (always 12 on a usable kernel). */
  apiVersion(): number {
    return ioctlNone(this.#open(), KVM_GET_API_VERSION, "KVM_GET_API_VERSION", this.#path);
  }

  /** `KVM_CHECK_EXTENSION`: 0 when the capability is absent, else 1 or a capability-specific value. */
  checkExtension(cap: number): number {
    if (!Number.isInteger(cap) || cap < 0) throw new RangeError(`checkExtension: bad capability ${cap}`);
    return ioctlU64(
      this.#open(),
      KVM_CHECK_EXTENSION,
      BigInt(cap),
      "KVM_CHECK_EXTENSION",
      `capability ${cap}`,
    );
  }

  /** `KVM_GET_VCPU_MMAP_SIZE`: bytes to map from each vCPU fd (cached after the first call). */
  vcpuMmapSize(): number {
    this.#vcpuMmapSize ??= ioctlNone(this.#open(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE");
    return this.#vcpuMmapSize;
  }

  /**
   * `KVM_GET_SUPPORTED_CPUID`: the CPUID leaves KVM can offer, a starting point for KVM_SET_CPUID2.
   * Asked once per open `/dev/kvm` (the answer is the host's and does not change; on kvm_pvm the
   * ioctl takes 0.4 ms, and a restore needs it twice); each call returns fresh entries to edit.
   */
  supportedCpuid(): CpuidEntry[] {
    this.#supportedCpuid ??= readCpuidEntries((bytes) =>
      ioctlBuf(this.#open(), KVM_GET_SUPPORTED_CPUID, bytes, "KVM_GET_SUPPORTED_CPUID")
    );
    return this.#supportedCpuid.map((entry) => ({ ...entry }));
  }

  /** `KVM_GET_MSR_INDEX_LIST`: the MSR numbers KVM saves and restores. */
  msrIndexList(): number[] {
    const header = KVM_MSR_LIST_LAYOUT.size;
    let capacity = MSR_LIST_START;
    for (let attempt = 0;; attempt++) {
      const { bytes, view } = structBuffer(header + capacity * 4);
      encodeStruct(KVM_MSR_LIST_LAYOUT, { nmsrs: capacity }, view);
      try {
        ioctlBuf(this.#open(), KVM_GET_MSR_INDEX_LIST, bytes, "KVM_GET_MSR_INDEX_LIST");
      } catch (error) {
        // On E2BIG the kernel stores the number it needs in nmsrs (api.rst, KVM_GET_MSR_INDEX_LIST).
        const needed = decodeStruct(KVM_MSR_LIST_LAYOUT, view).nmsrs;
        if (error instanceof KvmError && error.errno === E2BIG && attempt < 2 && needed > capacity) {
          capacity = needed;
          continue;
        }
        throw error;
      }
      const count = decodeStruct(KVM_MSR_LIST_LAYOUT, view).nmsrs;
      return Array.from({ length: count }, (_, i) => view.getUint32(header + i * 4, true));
    }
  }

  /**
   * `KVM_CREATE_VM` (machine type 0 on x86). The VM is closed with this Kvm, or earlier by its own
   * `close()`.
   */
  createVm(machineType = 0): Vm {
    const mmapSize = this.vcpuMmapSize();
    const kvmFd = this.#open();
    // A signal that arrives while the kernel sets the VM up fails the call with EINTR (a profiler's
    // SIGPROF does, for one); QEMU asks again, and so does this.
    const fd = retryOnEintr(() => libc().ioctl_u64(kvmFd, KVM_CREATE_VM, BigInt(machineType)));
    if (fd < 0) throw new KvmError("KVM_CREATE_VM", -fd);
    const vm: Vm = new Vm(fd, { vcpuMmapSize: mmapSize, onClose: () => this.#vms.delete(vm) });
    this.#vms.add(vm);
    return vm;
  }

  /** Closes the VMs created here (vCPUs first), then /dev/kvm. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    for (const vm of [...this.#vms]) vm.close();
    const fd = this.#fd;
    this.#fd = -1;
    closeFd(fd);
  }

  /** Same as {@link Kvm.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(): number {
    if (this.#fd < 0) throw new Deno.errors.BadResource("/dev/kvm was used after close()");
    return this.#fd;
  }
}
