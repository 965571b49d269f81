/**
 * A KVM virtual machine: its fd, its memslots, its in-kernel devices and its vCPUs.
 *
 * @module
 */

import {
  type AssertTrue,
  decodeFromBytes,
  encodeStruct,
  encodeToBytes,
  KVM_CLEAR_DIRTY_LOG_LAYOUT,
  KVM_CLOCK_DATA_LAYOUT,
  KVM_COALESCED_MMIO_ZONE_LAYOUT,
  KVM_DIRTY_LOG_LAYOUT,
  KVM_ENABLE_CAP_LAYOUT,
  KVM_IOEVENTFD_LAYOUT,
  KVM_IRQ_LEVEL_LAYOUT,
  KVM_IRQ_ROUTING_ENTRY_LAYOUT,
  KVM_IRQ_ROUTING_ENTRY_UNION_START,
  KVM_IRQ_ROUTING_IRQCHIP_LAYOUT,
  KVM_IRQ_ROUTING_LAYOUT,
  KVM_IRQ_ROUTING_MSI_LAYOUT,
  KVM_IRQCHIP_LAYOUT,
  KVM_IRQFD_LAYOUT,
  KVM_MSI_LAYOUT,
  KVM_PIT_CONFIG_LAYOUT,
  KVM_PIT_STATE2_LAYOUT,
  KVM_USERSPACE_MEMORY_REGION_LAYOUT,
  offsetsOf,
  type SameType,
  type ValueOf,
} from "./_structs.ts";
import { addressOf, closeFd, ioctlBuf, ioctlNone, ioctlU64, pointerBuffer } from "./_syscalls.ts";
import {
  KVM_CAP_SPLIT_IRQCHIP,
  KVM_CAP_X2APIC_API,
  KVM_CHECK_EXTENSION,
  KVM_CLEAR_DIRTY_LOG,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_ENABLE_CAP,
  KVM_GET_CLOCK,
  KVM_GET_DIRTY_LOG,
  KVM_GET_IRQCHIP,
  KVM_GET_PIT2,
  KVM_IOEVENTFD,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQ_LINE,
  KVM_IRQ_ROUTING_IRQCHIP,
  KVM_IRQ_ROUTING_MSI,
  KVM_IRQFD,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_RESAMPLE,
  KVM_REGISTER_COALESCED_MMIO,
  KVM_SET_CLOCK,
  KVM_SET_GSI_ROUTING,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_IRQCHIP,
  KVM_SET_PIT2,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SIGNAL_MSI,
  KVM_UNREGISTER_COALESCED_MMIO,
  KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
  KVM_X2APIC_API_USE_32BIT_IDS,
} from "./ioctls.ts";
import { KvmError } from "./kvm_error.ts";
import { type GsiRoute, isIrqchipRoute, type MsiMessage } from "./msi_routes.ts";
import { Vcpu } from "./vcpu.ts";

/**
 * One memslot as `KVM_SET_USER_MEMORY_REGION` takes it: `slot` is `as_id << 16 | index`, `flags`
 * a mix of `KVM_MEM_LOG_DIRTY_PAGES` and `KVM_MEM_READONLY`, `memorySize` 0 deletes the slot.
 * Addresses and sizes must be page aligned.
 */
export interface UserMemoryRegion {
  /** `as_id << 16 | index`: address space 0 is normal memory, 1 is x86 SMM. */
  slot: number;
  /** `KVM_MEM_LOG_DIRTY_PAGES` (1) and `KVM_MEM_READONLY` (2). */
  flags: number;
  /** Guest-physical start. */
  guestPhysAddr: bigint;
  /** Size in bytes; 0 deletes the slot. */
  memorySize: bigint;
  /** Host address of the memory behind the slot; it must stay mapped while the slot exists. */
  userspaceAddr: bigint;
}

// Compile-time check: the interface is exactly what its layout decodes to.
type _UserMemoryRegionMatches = AssertTrue<
  SameType<UserMemoryRegion, ValueOf<typeof KVM_USERSPACE_MEMORY_REGION_LAYOUT>>
>;

/** Byte offsets of `struct kvm_msi`'s fields, from its layout (the one place they are declared). */
const [MSI_ADDRESS_LO, MSI_ADDRESS_HI, MSI_DATA] = ["address_lo", "address_hi", "data"].map((name) =>
  KVM_MSI_LAYOUT.fields.find(([field]) => field === name)![1]
);

/**
 * Observer of memslot changes, called after every {@link Vm.setUserMemoryRegion} with the region
 * passed and the error, if the kernel refused it. For tracing and tests (e.g. checking that a
 * listener deletes a slot before changing its READONLY flag).
 */
export type MemoryRegionTrace = (region: Readonly<UserMemoryRegion>, error: KvmError | undefined) => void;

/** Bits per byte of a dirty bitmap. */
const BITS_PER_BYTE = 8;
/** Dirty bitmaps are arrays of `unsigned long` (api.rst, KVM_GET_DIRTY_LOG). */
const DIRTY_BITMAP_WORD_BITS = 64;

/** Bytes of the dirty bitmap for a slot of `pages` pages: `roundUp(pages, 64) / 8`. */
export function dirtyBitmapSize(pages: number): number {
  return Math.ceil(pages / DIRTY_BITMAP_WORD_BITS) * DIRTY_BITMAP_WORD_BITS / BITS_PER_BYTE;
}

function toU64(value: number | bigint, what: string): bigint {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`${what} must be an integer, got ${value}`);
  }
  const big = BigInt(value);
  if (big < 0n || big >= 1n << 64n) throw new RangeError(`${what} must be in [0, 2^64), got ${big}`);
  return big;
}

function toU32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`${what} must be an integer in [0, 2^32), got ${value}`);
  }
  return value;
}

/** An fd given by number or by its owner ({@link EventFd}, anything with an `fd`). */
export type FdLike = number | { readonly fd: number };

function fdOf(fd: FdLike, what: string): number {
  const n = typeof fd === "number" ? fd : fd.fd;
  if (!Number.isInteger(n) || n < 0 || n > 0x7fff_ffff) {
    throw new RangeError(`${what} must be an open fd, got ${n}`);
  }
  return n;
}

/** Options of {@link Vm.registerIrqfd}. */
export interface IrqfdOptions {
  /**
   * Makes the irqfd level-triggered (KVM_IRQFD_FLAG_RESAMPLE, needs KVM_CAP_IRQFD_RESAMPLE and a
   * GSI routed to an irqchip pin): a write asserts the GSI until the guest EOIs it, then KVM
   * de-asserts it and signals this eventfd, so the device can check whether to assert again.
   */
  readonly resampleFd?: FdLike;
}

/** Where and what a guest write must be to signal an ioeventfd ({@link Vm.registerIoeventfd}). */
export interface IoeventfdMatch {
  /** `"pio"`: `address` is an I/O port (KVM_IOEVENTFD_FLAG_PIO); `"mmio"`: a guest-physical address. */
  readonly space: "pio" | "mmio";
  /** The port or guest-physical address the write must start at. */
  readonly address: number | bigint;
  /**
   * The write's width in bytes: 1, 2, 4 or 8, or 0 for any width (KVM_CAP_IOEVENTFD_NO_LENGTH;
   * not with `datamatch`). A write of another width exits as usual.
   */
  readonly length: 0 | 1 | 2 | 4 | 8;
  /** Only a write of this value signals (KVM_IOEVENTFD_FLAG_DATAMATCH); any value when omitted. */
  readonly datamatch?: number | bigint;
}

/** A zone whose guest writes KVM queues in the coalesced-MMIO ring ({@link Vm.registerCoalescedZone}). */
export interface CoalescedZone {
  /** `"pio"`: `address` is an I/O port (KVM_CAP_COALESCED_PIO); `"mmio"`: a guest-physical address. */
  readonly space: "pio" | "mmio";
  /** First port or guest-physical address of the zone. */
  readonly address: number | bigint;
  /** Bytes (1 to 2^32 − 1). */
  readonly size: number;
}

/** kvmclock as `KVM_GET_CLOCK` reports it (`struct kvm_clock_data`, 48 bytes). */
export interface KvmClockData {
  /** Nanoseconds of kvmclock, the value the guest's kvm-clock reads. */
  clock: bigint;
  /** KVM_CLOCK_TSC_STABLE 2, KVM_CLOCK_REALTIME 4, KVM_CLOCK_HOST_TSC 8: which fields are valid. */
  flags: number;
  /** CLOCK_REALTIME (ns) at the moment `clock` was read, with KVM_CLOCK_REALTIME. */
  realtime: bigint;
  /** The host TSC at that moment, with KVM_CLOCK_HOST_TSC. */
  hostTsc: bigint;
}

/** The in-kernel PIT (`struct kvm_pit_state2`, 112 bytes). */
export interface KvmPitState2 {
  /** The three `struct kvm_pit_channel_state` (24 bytes each), raw. */
  channels: Uint8Array;
  /** KVM_PIT_FLAGS_HPET_LEGACY 1, KVM_PIT_FLAGS_SPEAKER_DATA_ON 2. */
  flags: number;
}

/** Bytes of one chip's state in `struct kvm_irqchip`. */
const IRQCHIP_STATE_SIZE = 512;

type _ClockMatches = AssertTrue<SameType<KvmClockData, ValueOf<typeof KVM_CLOCK_DATA_LAYOUT>>>;
type _PitMatches = AssertTrue<SameType<KvmPitState2, ValueOf<typeof KVM_PIT_STATE2_LAYOUT>>>;

/** Options for the {@link Vm} constructor. */
export interface VmOptions {
  /** `KVM_GET_VCPU_MMAP_SIZE` of the system fd, needed to map each vCPU's kvm_run. */
  readonly vcpuMmapSize: number;
  /** Called once when the VM closes (its Kvm uses it to forget the VM). */
  readonly onClose?: () => void;
}

/**
 * A VM. Created by {@link Kvm.createVm}; owns the VM fd and the vCPUs created from it.
 * {@link Vm.close} closes the vCPUs (their mappings and fds) first, then the VM fd; it is
 * idempotent and `using` works. Guest memory ({@link GuestMemory}) is owned by the caller and
 * must outlive the memslots that point at it.
 *
 * @example
 * ```ts ignore
 * import { GuestMemory, Kvm, KVM_MEM_LOG_DIRTY_PAGES } from "./mod.ts";
 * using kvm = Kvm.open();
 * using vm = kvm.createVm();
 * using ram = new GuestMemory(2n << 20n);
 * vm.onSetUserMemoryRegion = (region, error) => console.log("memslot", region, error?.code);
 * vm.setUserMemoryRegion({
 *   slot: 0,
 *   flags: KVM_MEM_LOG_DIRTY_PAGES,
 *   guestPhysAddr: 0n,
 *   memorySize: ram.size,
 *   userspaceAddr: ram.hostAddress,
 * });
 * const dirty = vm.getDirtyLog(0, Number(ram.size / 4096n));
 * ```
 */
export class Vm implements Disposable {
  #fd: number;
  readonly #vcpuMmapSize: number;
  readonly #vcpus = new Set<Vcpu>();
  readonly #slots = new Map<number, Readonly<UserMemoryRegion>>();
  #onClose: (() => void) | undefined;
  // KVM_IRQ_LINE is called on every device interrupt edge: reuse one argument buffer.
  readonly #irqLevel = new Uint8Array(KVM_IRQ_LEVEL_LAYOUT.size);
  readonly #irqLevelView = new DataView(this.#irqLevel.buffer);
  /** {@link enableX2apicApi} was called: MSI messages are swizzled into KVM's 32-bit format. */
  #x2apicApi = false;
  readonly #msi = new Uint8Array(KVM_MSI_LAYOUT.size);
  readonly #msiView = new DataView(this.#msi.buffer);

  /** Traces every {@link Vm.setUserMemoryRegion}; `undefined` (the default) traces nothing. */
  onSetUserMemoryRegion: MemoryRegionTrace | undefined;

  /**
   * Takes ownership of a VM fd. Use {@link Kvm.createVm} instead; public for wrapping an fd
   * obtained elsewhere.
   */
  constructor(fd: number, options: VmOptions) {
    this.#fd = fd;
    this.#vcpuMmapSize = options.vcpuMmapSize;
    this.#onClose = options.onClose;
  }

  /** The VM fd (-1 after close). */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@link Vm.close} has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * The memslots as KVM has them after the successful calls of {@link Vm.setUserMemoryRegion},
   * keyed by slot id (`as_id << 16 | index`).
   */
  get memorySlots(): ReadonlyMap<number, Readonly<UserMemoryRegion>> {
    return this.#slots;
  }

  /** `KVM_CHECK_EXTENSION` on the VM fd (more precise than on /dev/kvm): 0 if absent. */
  checkExtension(cap: number): number {
    return ioctlU64(
      this.#open(),
      KVM_CHECK_EXTENSION,
      BigInt(toU32(cap, "capability")),
      "KVM_CHECK_EXTENSION",
    );
  }

  /**
   * `KVM_SET_USER_MEMORY_REGION`: creates, moves, re-flags or (with `memorySize` 0n) deletes a
   * memslot. The kernel refuses an in-place change of size, host address or READONLY flag
   * (EINVAL) and an overlap with another slot (EEXIST); see {@link KvmError}'s hints.
   * {@link Vm.onSetUserMemoryRegion} sees every call, successful or not.
   */
  setUserMemoryRegion(region: Readonly<UserMemoryRegion>): void {
    const copy: Readonly<UserMemoryRegion> = Object.freeze({
      slot: region.slot,
      flags: region.flags,
      guestPhysAddr: region.guestPhysAddr,
      memorySize: region.memorySize,
      userspaceAddr: region.userspaceAddr,
    });
    const bytes = encodeToBytes(KVM_USERSPACE_MEMORY_REGION_LAYOUT, copy);
    const detail = `slot ${copy.slot}, gpa 0x${copy.guestPhysAddr.toString(16)}, size 0x${
      copy.memorySize.toString(16)
    }, flags ${copy.flags}`;
    let failure: KvmError | undefined;
    try {
      ioctlBuf(this.#open(), KVM_SET_USER_MEMORY_REGION, bytes, "KVM_SET_USER_MEMORY_REGION", detail);
    } catch (error) {
      if (!(error instanceof KvmError)) throw error;
      failure = error;
    }
    if (failure === undefined) {
      if (copy.memorySize === 0n) this.#slots.delete(copy.slot);
      else this.#slots.set(copy.slot, copy);
    }
    this.onSetUserMemoryRegion?.(copy, failure);
    if (failure) throw failure;
  }

  /**
   * `KVM_SET_TSS_ADDR`: three guest-physical pages KVM may use for real-mode emulation on Intel;
   * must not overlap a memslot (typically 0xfffbd000).
   */
  setTssAddr(address: number | bigint): void {
    ioctlU64(this.#open(), KVM_SET_TSS_ADDR, toU64(address, "TSS address"), "KVM_SET_TSS_ADDR");
  }

  /** `KVM_SET_IDENTITY_MAP_ADDR`: one guest-physical page for the real-mode identity map (Intel). */
  setIdentityMapAddr(address: number | bigint): void {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, toU64(address, "identity map address"), true);
    ioctlBuf(this.#open(), KVM_SET_IDENTITY_MAP_ADDR, bytes, "KVM_SET_IDENTITY_MAP_ADDR");
  }

  /** `KVM_CREATE_IRQCHIP`: in-kernel PIC, IOAPIC and local APICs. Call before the first vCPU. */
  createIrqchip(): void {
    ioctlNone(this.#open(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP");
  }

  /** `KVM_CREATE_PIT2`: in-kernel i8254 (flags: `KVM_PIT_SPEAKER_DUMMY`). Needs the irqchip. */
  createPit2(flags = 0): void {
    ioctlBuf(
      this.#open(),
      KVM_CREATE_PIT2,
      encodeToBytes(KVM_PIT_CONFIG_LAYOUT, { flags }),
      "KVM_CREATE_PIT2",
    );
  }

  /** `KVM_IRQ_LINE`: sets the level of an in-kernel irqchip input (GSI). */
  irqLine(irq: number, level: boolean | number): void {
    const view = this.#irqLevelView;
    view.setUint32(0, toU32(irq, "irq"), true);
    view.setUint32(4, level ? 1 : 0, true);
    ioctlBuf(this.#open(), KVM_IRQ_LINE, this.#irqLevel, "KVM_IRQ_LINE", () => `irq ${irq}`);
  }

  /**
   * `KVM_SET_GSI_ROUTING`: replaces the whole GSI routing table with irqchip pins (a GSI may go to
   * several chips, as ISA IRQs go to both the PIC and the IOAPIC) and MSI messages (one route per
   * GSI). The table replaces KVM_CREATE_IRQCHIP's default entirely: carry
   * {@link defaultGsiRoutes} (or the board's irqchip routes) along, or use {@link MsiRoutes}.
   *
   * @throws {KvmError} EINVAL without an in-kernel irqchip, for a pin beyond its chip, a GSI twice
   * on one chip, an MSI GSI that also has another route, or a GSI of 4096 and up.
   */
  setGsiRouting(routes: readonly GsiRoute[]): void {
    const header = KVM_IRQ_ROUTING_LAYOUT.size;
    const entry = KVM_IRQ_ROUTING_ENTRY_LAYOUT.size;
    const bytes = new Uint8Array(header + entry * routes.length);
    const view = new DataView(bytes.buffer);
    encodeStruct(KVM_IRQ_ROUTING_LAYOUT, { nr: routes.length, flags: 0 }, view);
    routes.forEach((r, i) => {
      const at = header + i * entry;
      const irqchip = isIrqchipRoute(r);
      encodeStruct(
        KVM_IRQ_ROUTING_ENTRY_LAYOUT,
        {
          gsi: toU32(r.gsi, "gsi"),
          type: irqchip ? KVM_IRQ_ROUTING_IRQCHIP : KVM_IRQ_ROUTING_MSI,
          flags: 0,
        },
        view,
        at,
      );
      const union = at + KVM_IRQ_ROUTING_ENTRY_UNION_START;
      if (irqchip) {
        encodeStruct(
          KVM_IRQ_ROUTING_IRQCHIP_LAYOUT,
          {
            irqchip: toU32(r.irqchip, "irqchip"),
            pin: toU32(r.pin, "pin"),
          },
          view,
          union,
        );
      } else {
        encodeStruct(KVM_IRQ_ROUTING_MSI_LAYOUT, { ...this.#msiFields(r), devid: 0 }, view, union);
      }
    });
    ioctlBuf(this.#open(), KVM_SET_GSI_ROUTING, bytes, "KVM_SET_GSI_ROUTING", `${routes.length} routes`);
  }

  /**
   * `KVM_IRQFD`: from now on a write to the eventfd `fd` injects GSI `gsi` as routed (an edge: assert
   * then de-assert; with `resampleFd`, a level held until EOI). Works while the vCPUs run, from
   * any thread. Closing the eventfd detaches it too.
   *
   * @throws {KvmError} EINVAL without an in-kernel irqchip or when `fd` is not an eventfd;
   * EBUSY when `fd` is already attached in this VM.
   */
  registerIrqfd(fd: FdLike, gsi: number, options: IrqfdOptions = {}): void {
    const resample = options.resampleFd === undefined ? undefined : fdOf(options.resampleFd, "resampleFd");
    this.#irqfd(fdOf(fd, "irqfd"), gsi, resample === undefined ? 0 : KVM_IRQFD_FLAG_RESAMPLE, resample ?? 0);
  }

  /**
   * `KVM_IRQFD` with DEASSIGN: detaches the eventfd from `gsi` (and de-asserts a resample irqfd's
   * level). Detaching an eventfd that is not attached there succeeds and does nothing.
   */
  unregisterIrqfd(fd: FdLike, gsi: number): void {
    this.#irqfd(fdOf(fd, "irqfd"), gsi, KVM_IRQFD_FLAG_DEASSIGN, 0);
  }

  /**
   * `KVM_IOEVENTFD`: a guest write that matches `match` signals the eventfd `fd` and completes in the
   * kernel, without a KVM_EXIT_IO or KVM_EXIT_MMIO (the written value is lost unless `datamatch`
   * names it). For MMIO the address must not be backed by a memslot (RAM never exits).
   *
   * @throws {RangeError} for a length other than 0/1/2/4/8, a datamatch with length 0 or wider
   * than the length, or a range that wraps.
   * @throws {KvmError} EEXIST when a registration with the same address, length and datamatch
   * exists; EINVAL when `fd` is not an eventfd.
   */
  registerIoeventfd(fd: FdLike, match: IoeventfdMatch): void {
    this.#ioeventfd(fdOf(fd, "ioeventfd"), match, 0);
  }

  /**
   * `KVM_IOEVENTFD` with DEASSIGN: removes the registration with exactly this fd, space, address,
   * length and datamatch.
   *
   * @throws {KvmError} ENOENT when there is none.
   */
  unregisterIoeventfd(fd: FdLike, match: IoeventfdMatch): void {
    this.#ioeventfd(fdOf(fd, "ioeventfd"), match, KVM_IOEVENTFD_FLAG_DEASSIGN);
  }

  /**
   * `KVM_REGISTER_COALESCED_MMIO`: guest writes inside `zone` no longer exit; KVM queues them in the
   * ring of the vCPU mapping's page `checkExtension(KVM_CAP_COALESCED_MMIO)`, where they wait for a
   * flush (kvm/kvm_coalesced_mmio.ts). Reads still exit. Port zones need KVM_CAP_COALESCED_PIO.
   *
   * @throws {RangeError} for a space other than "pio"/"mmio", a size outside [1, 2^32), or a zone
   * that wraps.
   * @throws {KvmError} when KVM refuses the zone (ENOSPC when its I/O bus is full).
   */
  registerCoalescedZone(zone: CoalescedZone): void {
    this.#coalescedZone(KVM_REGISTER_COALESCED_MMIO, "KVM_REGISTER_COALESCED_MMIO", zone);
  }

  /**
   * `KVM_UNREGISTER_COALESCED_MMIO`: removes every registered zone of `zone.space` that contains
   * all of `zone` (KVM's test; none is not an error) — so pass a zone exactly as registered.
   *
   * @throws {RangeError} as {@link registerCoalescedZone}.
   */
  unregisterCoalescedZone(zone: CoalescedZone): void {
    this.#coalescedZone(KVM_UNREGISTER_COALESCED_MMIO, "KVM_UNREGISTER_COALESCED_MMIO", zone);
  }

  #coalescedZone(request: number, name: string, zone: CoalescedZone): void {
    const what = `${zone.space} 0x${zone.address.toString(16)}+${zone.size}`;
    ioctlBuf(this.#open(), request, this.#zone(zone), name, what);
  }

  #zone(zone: CoalescedZone): Uint8Array {
    if (zone.space !== "pio" && zone.space !== "mmio") {
      throw new RangeError(`coalesced zone space must be "pio" or "mmio", got ${String(zone.space)}`);
    }
    const addr = toU64(zone.address, "coalesced zone address");
    const size = zone.size;
    if (!Number.isInteger(size) || size < 1 || size > 0xffff_ffff) {
      throw new RangeError(`coalesced zone size must be an integer in [1, 2^32), got ${size}`);
    }
    if (addr + BigInt(size) > (zone.space === "pio" ? 0x1_0000n : 1n << 64n)) {
      throw new RangeError(`coalesced zone 0x${addr.toString(16)}+${size} passes the end of ${zone.space}`);
    }
    return encodeToBytes(KVM_COALESCED_MMIO_ZONE_LAYOUT, { addr, size, pio: zone.space === "pio" ? 1 : 0 });
  }

  /**
   * `KVM_SIGNAL_MSI`: injects one MSI without a route. Returns KVM's answer: > 0 when delivered
   * (the number of vCPUs that took it), 0 when the guest blocked it (e.g. its LAPIC is
   * software-disabled).
   *
   * @throws {KvmError} EINVAL without an in-kernel irqchip.
   */
  signalMsi(message: MsiMessage): number {
    // Every virtio completion comes here: one reused buffer (flags, devid and the padding stay 0)
    // and no string unless the call fails. Encoding a fresh struct and the message cost ~2 µs.
    const { addressLo, addressHi, data } = this.#msiFields(message);
    const view = this.#msiView;
    view.setUint32(MSI_ADDRESS_LO, addressLo, true);
    view.setUint32(MSI_ADDRESS_HI, addressHi, true);
    view.setUint32(MSI_DATA, data, true);
    return ioctlBuf(
      this.#open(),
      KVM_SIGNAL_MSI,
      this.#msi,
      "KVM_SIGNAL_MSI",
      () => `address 0x${addressHi.toString(16)}_${addressLo.toString(16)}, data 0x${data.toString(16)}`,
    );
  }

  /**
   * `KVM_GET_IRQCHIP`: the raw state (512 bytes) of one in-kernel interrupt controller —
   * `struct kvm_pic_state` for `KVM_IRQCHIP_PIC_MASTER`/`PIC_SLAVE` (`irr` at byte 1),
   * `struct kvm_ioapic_state` for `KVM_IRQCHIP_IOAPIC` (`irr` u32 at byte 16, the 24 redirection
   * entries from 24).
   */
  getIrqchip(chipId: number): Uint8Array {
    const bytes = encodeToBytes(KVM_IRQCHIP_LAYOUT, {
      chipId: toU32(chipId, "chip id"),
      chip: new Uint8Array(512),
    });
    ioctlBuf(this.#open(), KVM_GET_IRQCHIP, bytes, "KVM_GET_IRQCHIP", `chip ${chipId}`);
    return bytes.slice(offsetsOf(KVM_IRQCHIP_LAYOUT).chip);
  }

  /**
   * `KVM_SET_IRQCHIP`: puts back the 512 raw bytes {@link getIrqchip} returned for `chipId`.
   *
   * @throws {RangeError} unless `state` is 512 bytes.
   */
  setIrqchip(chipId: number, state: Uint8Array): void {
    if (state.length !== IRQCHIP_STATE_SIZE) {
      throw new RangeError(
        `setIrqchip: chip ${chipId} state must be ${IRQCHIP_STATE_SIZE} bytes, got ${state.length}`,
      );
    }
    const bytes = encodeToBytes(KVM_IRQCHIP_LAYOUT, { chipId: toU32(chipId, "chip id"), chip: state });
    ioctlBuf(this.#open(), KVM_SET_IRQCHIP, bytes, "KVM_SET_IRQCHIP", `chip ${chipId}`);
  }

  /** `KVM_GET_PIT2`: the in-kernel PIT (KVM_CAP_PIT_STATE2). */
  getPit2(): KvmPitState2 {
    const bytes = new Uint8Array(KVM_PIT_STATE2_LAYOUT.size);
    ioctlBuf(this.#open(), KVM_GET_PIT2, bytes, "KVM_GET_PIT2");
    return decodeFromBytes(KVM_PIT_STATE2_LAYOUT, bytes);
  }

  /** `KVM_SET_PIT2`. */
  setPit2(state: KvmPitState2): void {
    ioctlBuf(this.#open(), KVM_SET_PIT2, encodeToBytes(KVM_PIT_STATE2_LAYOUT, state), "KVM_SET_PIT2");
  }

  /** `KVM_GET_CLOCK`: kvmclock now. */
  getClock(): KvmClockData {
    const bytes = new Uint8Array(KVM_CLOCK_DATA_LAYOUT.size);
    ioctlBuf(this.#open(), KVM_GET_CLOCK, bytes, "KVM_GET_CLOCK");
    return decodeFromBytes(KVM_CLOCK_DATA_LAYOUT, bytes);
  }

  /**
   * `KVM_SET_CLOCK`: kvmclock continues from `clock` nanoseconds. Only `clock` is used here (flags
   * 0): a restored guest's clock continues where it stopped, as QEMU's does without
   * KVM_CLOCK_REALTIME.
   */
  setClock(clock: bigint): void {
    const bytes = encodeToBytes(KVM_CLOCK_DATA_LAYOUT, {
      clock: toU64(clock, "clock"),
      flags: 0,
      realtime: 0n,
      hostTsc: 0n,
    });
    ioctlBuf(this.#open(), KVM_SET_CLOCK, bytes, "KVM_SET_CLOCK");
  }

  /**
   * `KVM_GET_DIRTY_LOG`: the pages of `slot` written by the guest since the last call, one bit per
   * 4 KiB page (bit `i % 8` of byte `i / 8` is page `i`), in a new buffer of
   * {@link dirtyBitmapSize}`(pages)` bytes. Without manual protection this also re-arms tracking.
   */
  getDirtyLog(slot: number, pages: number): Uint8Array {
    if (!Number.isInteger(pages) || pages <= 0) {
      throw new RangeError(`getDirtyLog: pages must be positive, got ${pages}`);
    }
    const bitmap = pointerBuffer(dirtyBitmapSize(pages));
    const args = encodeToBytes(KVM_DIRTY_LOG_LAYOUT, {
      slot: toU32(slot, "slot"),
      dirtyBitmap: addressOf(bitmap),
    });
    ioctlBuf(this.#open(), KVM_GET_DIRTY_LOG, args, "KVM_GET_DIRTY_LOG", `slot ${slot}`);
    return bitmap;
  }

  /**
   * `KVM_CLEAR_DIRTY_LOG`: re-protects the pages `firstPage + i` whose bit `i` is set in `bitmap`
   * (all `numPages` pages when omitted). Needs `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` enabled with
   * {@link Vm.enableCap}; `firstPage` must be a multiple of 64, `numPages` too unless the range
   * ends at the slot's end.
   */
  clearDirtyLog(slot: number, firstPage: number | bigint, numPages: number, bitmap?: Uint8Array): void {
    const size = dirtyBitmapSize(numPages);
    const stable = pointerBuffer(Math.max(size, 8));
    if (bitmap === undefined) {
      for (let page = 0; page < numPages; page++) stable[page >> 3] |= 1 << (page & 7);
    } else {
      if (bitmap.length < Math.ceil(numPages / BITS_PER_BYTE)) {
        throw new RangeError(
          `clearDirtyLog: bitmap of ${bitmap.length} bytes is too short for ${numPages} pages`,
        );
      }
      stable.set(bitmap.subarray(0, size));
    }
    const args = encodeToBytes(KVM_CLEAR_DIRTY_LOG_LAYOUT, {
      slot: toU32(slot, "slot"),
      numPages: toU32(numPages, "numPages"),
      firstPage: toU64(firstPage, "firstPage"),
      dirtyBitmap: addressOf(stable),
    });
    ioctlBuf(this.#open(), KVM_CLEAR_DIRTY_LOG, args, "KVM_CLEAR_DIRTY_LOG", `slot ${slot}`);
  }

  /**
   * A split irqchip (`KVM_CAP_SPLIT_IRQCHIP`): the LAPICs stay in the kernel, the PIC, IOAPIC and
   * PIT are the VMM's (QEMU's `kernel-irqchip=split`). The first `ioapicPins` GSI routes are then
   * reserved for the IOAPIC's pins, as MSI routes from which KVM learns which vectors are
   * level-triggered and exits with `KVM_EXIT_IOAPIC_EOI` when the guest EOIs one. Call it before
   * the first vCPU, instead of {@link createIrqchip}.
   *
   * @throws {KvmError} when KVM refuses it (EINVAL: a vCPU or an irqchip exists already).
   */
  enableSplitIrqchip(ioapicPins = 24): void {
    this.enableCap(KVM_CAP_SPLIT_IRQCHIP, [BigInt(ioapicPins)]);
  }

  /**
   * `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)` with 32-bit APIC ids and without the broadcast quirk, as QEMU
   * enables it for APIC ids above 254: KVM_GET/SET_LAPIC then carry an x2APIC-mode vCPU's whole id,
   * and an MSI's destination bits 31:8 travel in `address_hi`. From then on this VM hands every MSI
   * ({@link signalMsi}, the MSI routes of {@link setGsiRouting}) to KVM with the destination bits a
   * guest put in the extended destination ID (address bits 11:5, destination bits 14:8: Linux's
   * format when CPUID offers `KVM_FEATURE_MSI_EXT_DEST_ID`) moved into `address_hi`
   * ({@link swizzleMsiExtDestId}, QEMU's `kvm_swizzle_msi_ext_dest_id`). Call it before the first
   * vCPU.
   *
   * @throws {KvmError} when KVM has no such capability or a vCPU exists already.
   */
  enableX2apicApi(): void {
    this.enableCap(KVM_CAP_X2APIC_API, [
      BigInt(KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK),
    ]);
    this.#x2apicApi = true;
  }

  /** Whether {@link enableX2apicApi} was called. */
  get x2apicApi(): boolean {
    return this.#x2apicApi;
  }

  #msiFields(message: MsiMessage): { addressLo: number; addressHi: number; data: number } {
    const fields = msiFields(message);
    if (!this.#x2apicApi) return fields;
    const [addressLo, addressHi] = swizzleMsiExtDestId(fields.addressLo, fields.addressHi);
    return { addressLo, addressHi, data: fields.data };
  }

  /** `KVM_ENABLE_CAP` on the VM fd with up to four arguments. */
  enableCap(cap: number, args: readonly bigint[] = [], flags = 0): void {
    if (args.length > 4) throw new RangeError(`enableCap: at most 4 arguments, got ${args.length}`);
    const bytes = new Uint8Array(KVM_ENABLE_CAP_LAYOUT.size);
    encodeStruct(KVM_ENABLE_CAP_LAYOUT, {
      cap: toU32(cap, "capability"),
      flags,
      args: [0, 1, 2, 3].map((i) => args[i] ?? 0n),
    }, new DataView(bytes.buffer));
    ioctlBuf(this.#open(), KVM_ENABLE_CAP, bytes, "KVM_ENABLE_CAP", `capability ${cap}`);
  }

  /** `KVM_CREATE_VCPU` and the mapping of its `kvm_run`. The VM closes it when it closes. */
  createVcpu(id: number): Vcpu {
    const fd = ioctlU64(
      this.#open(),
      KVM_CREATE_VCPU,
      BigInt(toU32(id, "vCPU id")),
      "KVM_CREATE_VCPU",
      `id ${id}`,
    );
    const vcpu: Vcpu = new Vcpu(fd, id, {
      mmapSize: this.#vcpuMmapSize,
      onClose: () => this.#vcpus.delete(vcpu),
    });
    this.#vcpus.add(vcpu);
    return vcpu;
  }

  /** Closes the vCPUs, then the VM fd. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    for (const vcpu of [...this.#vcpus]) vcpu.close();
    const fd = this.#fd;
    this.#fd = -1;
    this.#slots.clear();
    closeFd(fd);
    const onClose = this.#onClose;
    this.#onClose = undefined;
    onClose?.();
  }

  /** Same as {@link Vm.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #open(): number {
    if (this.#fd < 0) throw new Deno.errors.BadResource("the VM was used after close()");
    return this.#fd;
  }

  #irqfd(fd: number, gsi: number, flags: number, resamplefd: number): void {
    const bytes = encodeToBytes(KVM_IRQFD_LAYOUT, { fd, gsi: toU32(gsi, "gsi"), flags, resamplefd });
    const what = flags & KVM_IRQFD_FLAG_DEASSIGN ? "detach" : "attach";
    ioctlBuf(this.#open(), KVM_IRQFD, bytes, "KVM_IRQFD", `${what} eventfd ${fd}, GSI ${gsi}`);
  }

  #ioeventfd(fd: number, match: IoeventfdMatch, flags: number): void {
    const { space, length } = match;
    if (space !== "pio" && space !== "mmio") throw new RangeError(`ioeventfd space must be "pio" or "mmio"`);
    if (![0, 1, 2, 4, 8].includes(length)) {
      throw new RangeError(`ioeventfd length must be 0, 1, 2, 4 or 8, got ${length}`);
    }
    const address = toU64(match.address, "ioeventfd address");
    const end = address + BigInt(Math.max(length, 1));
    if (end > (space === "pio" ? 0x1_0000n : 1n << 64n)) {
      throw new RangeError(`ioeventfd at 0x${address.toString(16)}+${length} passes the end of ${space}`);
    }
    let datamatch = 0n;
    if (match.datamatch !== undefined) {
      datamatch = toU64(match.datamatch, "ioeventfd datamatch");
      if (length === 0 || datamatch >> BigInt(8 * length) !== 0n) {
        throw new RangeError(
          `ioeventfd datamatch 0x${datamatch.toString(16)} does not fit a ${length}-byte write`,
        );
      }
      flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    }
    if (space === "pio") flags |= KVM_IOEVENTFD_FLAG_PIO;
    const bytes = encodeToBytes(KVM_IOEVENTFD_LAYOUT, { datamatch, addr: address, len: length, fd, flags });
    const value = match.datamatch === undefined ? "any value" : `value 0x${datamatch.toString(16)}`;
    ioctlBuf(
      this.#open(),
      KVM_IOEVENTFD,
      bytes,
      "KVM_IOEVENTFD",
      `${flags & KVM_IOEVENTFD_FLAG_DEASSIGN ? "remove" : "add"} eventfd ${fd} on ${space} 0x${
        address.toString(16)
      }, length ${length}, ${value}`,
    );
  }
}

/** MSI address bits 11:5: the extended destination ID (destination bits 14:8) of an untranslated MSI. */
const MSI_EXT_DEST_ID_MASK = 0xfe0;
/** MSI address bit 4: the interrupt-remapping format (its bits 11:5 are a handle, not a destination). */
const MSI_REMAPPABLE_FORMAT = 0x10;
/** Where those bits start in the address. */
const MSI_EXT_DEST_ID_SHIFT = 5;
/** Where destination bit 8 goes in KVM's 32-bit format (`address_hi` bits 31:8 = destination 31:8). */
const MSI_ADDRESS_HI_DEST_SHIFT = 8;

/**
 * An MSI address in the extended destination ID format (destination bits 14:8 in address bits
 * 11:5, the rest of the address as usual) rewritten for KVM's x2APIC API: those bits moved to
 * `address_hi` bits 14:8 and cleared below. An address that already uses `address_hi`, one in the
 * remappable format (bit 4), or one without extended bits is returned as it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { swizzleMsiExtDestId } from "./vm.ts";
 * // APIC id 300 = 0x12c: bits 7:0 (0x2c) at address bits 19:12, bits 14:8 (0x01) at bits 11:5.
 * assert.deepEqual(swizzleMsiExtDestId(0xfee2_c020, 0), [0xfee2_c000, 0x100]);
 * assert.deepEqual(swizzleMsiExtDestId(0xfee0_1000, 0), [0xfee0_1000, 0]);
 * ```
 */
export function swizzleMsiExtDestId(addressLo: number, addressHi: number): [number, number] {
  const ext = (addressLo & MSI_EXT_DEST_ID_MASK) >>> MSI_EXT_DEST_ID_SHIFT;
  if (ext === 0 || addressHi !== 0 || (addressLo & MSI_REMAPPABLE_FORMAT) !== 0) {
    return [addressLo, addressHi];
  }
  return [(addressLo & ~MSI_EXT_DEST_ID_MASK) >>> 0, (ext << MSI_ADDRESS_HI_DEST_SHIFT) >>> 0];
}

function msiFields(message: MsiMessage): { addressLo: number; addressHi: number; data: number } {
  return {
    addressLo: toU32(message.addressLo, "MSI addressLo"),
    addressHi: toU32(message.addressHi, "MSI addressHi"),
    data: toU32(message.data, "MSI data"),
  };
}
