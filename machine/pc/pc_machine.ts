/**
 * The i440fx PC as a running machine: a {@link PcBoard} with KVM attached — a VM with in-kernel
 * irqchip and PIT, guest RAM and firmware in mmap'd memory, the KVM memory listener — a loaded
 * guest, its vCPUs and a runner. {@link PcMachine.create} is a recipe of named steps, in the
 * manner of Firecracker's `builder.rs`: plan, create the VM, allocate guest memory, build the
 * board, attach KVM, create the vCPUs, load the guest, make the runner.
 *
 * @module
 */

import type { Uart16550 } from "../../devices/mod.ts";
import { GuestMemory } from "../../kvm/guest_memory.ts";
import {
  KVM_CAP_COALESCED_MMIO,
  KVM_CAP_COALESCED_PIO,
  KVM_CAP_MAX_VCPUS,
  KVM_CAP_NR_VCPUS,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
  KVM_IRQCHIP_PIC_SLAVE,
} from "../../kvm/ioctls.ts";
import { Kvm } from "../../kvm/kvm.ts";
import { CoalescedRing, KvmCoalescedListener } from "../../kvm/kvm_coalesced_mmio.ts";
import { ioapicEoiVector } from "../../kvm/exit.ts";
import { KvmIoeventfdListener } from "../../kvm/kvm_ioeventfd_listener.ts";
import { KvmMemoryListener, type MemslotCall } from "../../kvm/kvm_memory_listener.ts";
import type { CpuidEntry, KvmRegs, KvmSregs, MsrEntry, Vcpu, VcpuEvents } from "../../kvm/vcpu.ts";
import { readableMsrs, restoreVcpuState, type VcpuState } from "../../kvm/vcpu_state.ts";
import type { Vm } from "../../kvm/vm.ts";
import {
  type AddressSpace,
  DirtyLogClient,
  flushCoalescedMmio,
  type MtreeOptions,
  registerCoalescedFlusher,
} from "../../memory/mod.ts";
import {
  completePendingIo,
  readSnapshotChain,
  type SnapshotBase,
  type SnapshotOptions,
  type SnapshotResult,
  writeSnapshot,
} from "../snapshot/snapshot.ts";
import { restoredBootPlan } from "../snapshot/boot_file.ts";
import { mapMemoryChain } from "../snapshot/memory_file.ts";
import { loadDevices } from "../snapshot/device_states.ts";
import { SnapshotMismatchError } from "../snapshot/errors.ts";
import type { SnapValue } from "../snapshot/format.ts";
import { translateVirtual } from "../page_walk.ts";
import { formatRegisters, regsFor, sregsFor } from "../cpu_state.ts";
import {
  bootFpu,
  bootMsrs,
  cpuidFeaturesLacking,
  lapicWithLints,
  linuxCpuid,
  type LinuxCpuidOptions,
  resetMsrs,
} from "../x86_cpu.ts";
import type { BootPlan, E820Entry } from "../loader/boot_plan.ts";
import { loadKernel } from "../loader/detect.ts";
import { firmwareEntry } from "../loader/firmware.ts";
import { copyBootWrites, type ImageSource } from "../loader/image_source.ts";
import { type ExtIntSource, offerExtInt } from "../ext_int.ts";
import { FIRMWARE } from "../guests/firmware.ts";
import type { Doorbell, HostFdSource, Runner, RunnerHooks, RunOutcome } from "../runner.ts";
import { VcpuRunner } from "../vcpu_runner.ts";
import type { SmpRunner } from "../smp_runner.ts";
import type { VirtioNotifiers } from "../virtio_notifiers.ts";
import type { VirtioNet } from "../../devices/virtio/virtio_net.ts";
import type { VirtioNetRxFilter } from "../../devices/virtio/virtio_net_ctrl.ts";
import { VirtioNetFeature } from "../../devices/virtio/virtio_net_frame.ts";
import {
  announceDelay,
  type AnnounceParameters,
  announceProblem,
  DEFAULT_ANNOUNCE,
} from "../../devices/net_announce.ts";
import { VmTimers } from "../vm_timers.ts";
import type { DeviceTimers } from "../../devices/device_timers.ts";
import { KVM_IDENTITY_MAP_START, KVM_TSS_START, PC_ROM_SIZE } from "./layout.ts";
import { closeAll, MAX_CPUS, PcBoard, type PcBoardOptions, pcE820, pcGuestTables } from "./pc_board.ts";
import { type PcMemory, splitRam } from "./pc_memory.ts";
import type { PcPciDevice, PcPciDeviceSpec } from "./pc_pci.ts";
import type { PcIrqchipMode, PcSplitIrqchip } from "./pc_split_irqchip.ts";
import { kernelIrqchipInfo } from "./kernel_irqchip_info.ts";
import type { IoapicRoute } from "../../devices/ioapic.ts";
import { HostTimer } from "../../kvm/host_timer.ts";
import { currentThread, handleKickSignal, KICK_SIGNAL } from "../../kvm/vcpu_kicker.ts";
import { KVM_EXIT_IOAPIC_EOI, KVM_EXIT_IRQ_WINDOW_OPEN } from "../../kvm/ioctls.ts";
import type { UserspaceIrqchip } from "../vcpu_runner.ts";

export { MAX_CPUS, pcE820 };

/** Options of {@link PcMachine.create}. */
export interface PcMachineOptions {
  /** Guest RAM in bytes. */
  ramSize: bigint;
  /** The `pc.bios` image (default: the project's firmware, 256 KiB). */
  firmware?: Uint8Array;
  /**
   * A kernel to load as QEMU's `-kernel` does: Linux (bzImage or ELF vmlinux) or Multiboot, with its
   * command line and, for Linux, an initial ramdisk. Either may be a source (an open file) instead
   * of bytes: the plan then names ranges of it, read again at every reset, and it must stay open
   * (the caller's to close) as long as the machine.
   */
  kernel?: { image: Uint8Array | ImageSource; cmdline?: string; initrd?: Uint8Array | ImageSource };
  /** Or a boot plan made elsewhere (a flat binary from `loadFlat`, say); wins over `kernel`. */
  boot?: BootPlan;
  /** Every byte the guest sends through COM1. */
  serial?: (byte: number) => void;
  /** Every `KVM_SET_USER_MEMORY_REGION` call (the `--trace-memslots` flag). */
  traceMemslots?: (call: MemslotCall) => void;
  /** Number of vCPUs (default 1); more than one runs each on its own thread (see `runAsync`). */
  cpus?: number;
  /** An open /dev/kvm to use (default: opened here and closed with the machine). */
  kvm?: Kvm;
  /** PCI devices (virtio), in QEMU's creation order; their backends stay the caller's to close. */
  pciDevices?: readonly PcPciDeviceSpec[];
  /** Where a device's error line goes (a guest that breaks the virtio protocol, say). */
  log?: (line: string) => void;
  /**
   * Whose interrupt controllers (QEMU's `kernel-irqchip`): `"kernel"` (the default, `on`: PIC,
   * IOAPIC and PIT in KVM) or `"split"` (only the LAPIC in KVM; the board's own PIC, IOAPIC and
   * PIT, as QEMU's microvm has by default). They run on the VM thread; with several vCPUs (or
   * ioeventfd devices) vCPU 0's thread takes the PIC's vectors from it.
   */
  irqchip?: PcIrqchipMode;
}

/** Options of {@link PcMachine.restore}: what a front-end supplies that a snapshot cannot hold. */
export interface PcRestoreOptions {
  /** When given, must be the snapshot's RAM size (`-m` given with `--restore`). */
  ramSize?: bigint;
  /** When given, must be the snapshot's vCPU count. */
  cpus?: number;
  /** Every byte the guest sends through COM1. */
  serial?: (byte: number) => void;
  /** Every `KVM_SET_USER_MEMORY_REGION` call. */
  traceMemslots?: (call: MemslotCall) => void;
  /** An open /dev/kvm to use. */
  kvm?: Kvm;
  /** The PCI devices with their backends, of the same types in the same order as the snapshot's. */
  pciDevices?: readonly PcPciDeviceSpec[];
  /** Where a device's error line goes. */
  log?: (line: string) => void;
  /** When given, must be the snapshot's irqchip (`-machine kernel-irqchip=` given with `--restore`). */
  irqchip?: PcIrqchipMode;
}

/**
 * A full memory barrier for the virtio rings, which vCPU threads write while the VM thread reads
 * them: a sequentially consistent read-modify-write on shared memory (V8 emits a `lock`ed
 * instruction on x86-64, a full fence). JavaScript has no bare fence; this is the cheapest one.
 */
export function sharedMemoryFence(): () => void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  return () => void Atomics.add(cell, 0, 0);
}

/**
 * Step 1, before anything is acquired: what the guest needs loaded and where its CPU starts — the
 * kernel (with its command line and initrd) through the loaders against the board's e820 map, a
 * plan made elsewhere, or the firmware's reset vector.
 *
 * @throws {LoaderError} for a kernel or firmware image that cannot be loaded.
 * @throws {RangeError} for a vCPU count outside 1 to {@link MAX_CPUS}.
 */
export async function planBoot(options: PcMachineOptions): Promise<BootPlan> {
  const firmware = options.firmware ?? FIRMWARE;
  const firmwarePlan = firmwareEntry(firmware);
  const cpus = options.cpus ?? 1;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
    throw new RangeError(`PC: ${cpus} vCPUs is not between 1 and ${MAX_CPUS}`);
  }
  const irqchipProblem = x2apicIrqchipProblem(cpus, options.irqchip ?? "kernel");
  if (irqchipProblem) throw new RangeError(`PC: ${cpus} vCPUs: ${irqchipProblem}`);
  if (options.boot) return options.boot;
  if (!options.kernel) return firmwarePlan;
  // The kernel is planned against the e820 map the board will report (the ACPI tables' pages
  // reserved, so nothing is loaded over them) and told where the board's RSDP is.
  const { e820, rsdpAddress } = pcGuestTables({
    ramSize: options.ramSize,
    firmwareSize: BigInt(firmware.length),
    cpus,
    pciDevices: options.pciDevices?.length ?? 0,
  });
  return await loadKernel(options.kernel.image, {
    cmdline: options.kernel.cmdline ?? "",
    initrd: options.kernel.initrd,
    e820,
    ramSize: splitRam(options.ramSize).below4g,
    ...(rsdpAddress === undefined ? {} : { rsdpAddress }),
  });
}

/**
 * Step 2: a VM as QEMU's `kvm_arch_init` sets it up: the identity map and TSS just below the
 * firmware, and with a split irqchip the in-kernel LAPICs (`KVM_CAP_SPLIT_IRQCHIP`, and x2APIC's API
 * past 255 vCPUs). The in-kernel PICs, IOAPIC and PIT come later ({@link createPcIrqchip}), once the
 * memslots are in.
 *
 * @throws {KvmError} when the kernel refuses one of them (the VM is closed again).
 */
export function createPcVm(kvm: Kvm, irqchip: PcIrqchipMode = "kernel", cpus = 1): Vm {
  // Every KVM runs one vCPU: the usual start asks nothing more.
  const most = cpus > 1 ? kvm.checkExtension(KVM_CAP_MAX_VCPUS) || kvm.checkExtension(KVM_CAP_NR_VCPUS) : 1;
  if (most > 0 && cpus > most) {
    throw new RangeError(`PC: ${cpus} vCPUs: this host's KVM runs at most ${most} (KVM_CAP_MAX_VCPUS)`);
  }
  const vm = kvm.createVm();
  try {
    vm.setIdentityMapAddr(KVM_IDENTITY_MAP_START);
    vm.setTssAddr(KVM_TSS_START);
    if (irqchip === "split") {
      // Only the LAPICs in the kernel: no bus device to unregister when the VM is destroyed.
      vm.enableSplitIrqchip(IOAPIC_PINS);
      // APIC ids from 255 on: 32-bit ids in KVM's LAPIC state and MSIs (QEMU's kvm_enable_x2apic).
      if (cpus > XAPIC_MAX_CPUS) vm.enableX2apicApi();
    }
    return vm;
  } catch (error) {
    vm.close();
    throw error;
  }
}

/**
 * Step 5c, with the in-kernel irqchip (`irqchip` "kernel"): KVM's PICs and IOAPIC with QEMU's GSI
 * routing, and its PIT — after the memslots and the notify eventfds are registered, before any vCPU
 * (all KVM asks). The order is for speed: creating them registers devices on the VM's buses, and
 * the next change to the memslots or the buses then waits for the kernel's grace period on some
 * hosts (7.7 ms on a kvm_pvm host: the first memslot 0.6–8 ms after the irqchip, 0.03–0.1 ms before
 * it; none seen with Linux 6.1's kvm_amd). Nothing to do with a split irqchip.
 *
 * @throws {KvmError} when the kernel refuses one of them.
 */
export function createPcIrqchip(vm: Vm, irqchip: PcIrqchipMode): void {
  if (irqchip === "split") return;
  vm.createIrqchip();
  vm.setGsiRouting(pcGsiRoutes());
  vm.createPit2();
}

/** Guest memory behind the board's RAM and ROM regions (step 3). */
export interface PcGuestMemory {
  /** Behind `pc.ram`. */
  readonly ram: GuestMemory;
  /** Behind `pc.bios`. */
  readonly bios: GuestMemory;
  /** Behind `pc.rom`. */
  readonly rom: GuestMemory;
}

/**
 * Step 3: mmap'd guest memory for RAM, the firmware and the option-ROM area, registered with
 * `cleanup` as it is allocated.
 *
 * @throws {KvmError} op `"mmap"` when the host cannot map that much.
 */
export function allocatePcMemory(ramSize: bigint, biosSize: bigint, cleanup: Disposable[]): PcGuestMemory {
  const ram = new GuestMemory(ramSize);
  cleanup.push(ram);
  // Huge pages for RAM, as QEMU advises its RAM blocks (a 59 MiB kernel loads in half the time on a
  // host whose THP mode is `madvise`), but not for the first and last 2 MiB below 4 GiB, even where
  // the host's mode is `always`: the VMM writes a few pages there (real-mode area, boot information,
  // the ACPI tables at the top), and a small guest would pay 2 MiB of RSS for each.
  const below4g = splitRam(ramSize).below4g;
  const edge = 2n << 20n;
  if (below4g > 2n * edge) {
    ram.adviseHugePages(edge, below4g - 2n * edge);
    ram.avoidHugePages(0n, edge);
    ram.avoidHugePages(below4g - edge, edge);
  } else {
    ram.avoidHugePages(0n, below4g);
  }
  if (ramSize > below4g) ram.adviseHugePages(below4g, ramSize - below4g);
  const bios = new GuestMemory(biosSize);
  cleanup.push(bios);
  const rom = new GuestMemory(PC_ROM_SIZE);
  cleanup.push(rom);
  return { ram, bios, rom };
}

/**
 * Step 5: the KVM memory listener on the board's "memory" space; its replay maps every memslot of
 * the finished board in one pass. Ioeventfds are registered here too; coalesced zones come with
 * the ring that plays them back (step 6b).
 *
 * @throws {KvmError} when the kernel refuses a memslot.
 */
export function attachKvm(board: PcBoard, vm: Vm, trace?: (call: MemslotCall) => void): KvmMemoryListener {
  const listener = KvmMemoryListener.forVm(vm, { trace });
  board.memory.registerListener(listener);
  // Ioeventfds as QEMU's KVM listeners register them: MMIO ones from "memory", port ones from "I/O".
  board.memory.registerListener(new KvmIoeventfdListener(vm, "mmio"));
  board.io.registerListener(new KvmIoeventfdListener(vm, "pio"));
  return listener;
}

/** Playbacks the guest's accesses ask for (PCI configuration cycles, the RTC) before split zones merge. */
const MERGE_AFTER_FLUSHES = 32;
/** How often a lone vCPU is kicked to play the ring back once any port's writes may sit in it. */
const MERGED_RING_PERIOD_NS = 20_000_000;

/**
 * Step 6b: coalesced writes as QEMU's KVM listeners register them (MMIO zones; port zones where KVM
 * also takes ports: the PCI host's CONFIG_ADDRESS and the RTC index), and the ring, a page of vCPU
 * 0's mapping, played back into the board's address spaces whenever the memory API flushes (before
 * an access to the PCI host's data port or the RTC, at every transaction, at a snapshot). The zones
 * reach KVM at the guest's first such access during a run, not before (the listeners are deferred):
 * a guest that never uses those devices leaves its VM without a zone, which kvm_pvm destroys ≈15 ms
 * sooner.
 *
 * QEMU's zones do not spare the exit they are for: the PIIX3 reset control at 0xcf9 splits the
 * CONFIG_ADDRESS zone, and a guest's 4-byte write to 0xcf8 fits neither piece (a Linux boot spends
 * half its exits there). So once the guest has asked for {@link MERGE_AFTER_FLUSHES} playbacks (it
 * probes PCI, or reads the clock), split ranges are registered whole
 * (`KvmCoalescedListener.mergeSplitZones`); a write to the reset control may then be queued too, so
 * from then on the runner plays the ring back before every exit it serves, and a lone vCPU is
 * kicked every {@link MERGED_RING_PERIOD_NS} in case the guest halts after such a write. Call
 * {@link CoalescedRingDriver.attachRunner} once the runner exists. Null where KVM has no ring.
 */
function attachCoalescedRing(board: PcBoard, vm: Vm, bsp: Vcpu): CoalescedRingDriver | null {
  const page = vm.checkExtension(KVM_CAP_COALESCED_MMIO);
  if (page <= 0 || (page + 1) * 4096 > bsp.mmapSize) return null;
  const mmio = new KvmCoalescedListener(vm, "mmio", { deferred: true });
  board.memory.registerListener(mmio);
  const pio = vm.checkExtension(KVM_CAP_COALESCED_PIO) > 0
    ? new KvmCoalescedListener(vm, "pio", { deferred: true })
    : null;
  if (pio) board.io.registerListener(pio);
  const ring = new CoalescedRing(bsp.runPage.subarray(page * 4096, (page + 1) * 4096), board);
  return new CoalescedRingDriver(ring, mmio, pio);
}

/** The ring's playback, and the merge of split port zones once the guest uses them (step 6b). */
class CoalescedRingDriver implements Disposable {
  readonly #ring: CoalescedRing;
  readonly #mmio: KvmCoalescedListener;
  readonly #pio: KvmCoalescedListener | null;
  readonly #unregister: Disposable;
  #runner: Runner | null = null;
  #flushes = 0;
  #timer: HostTimer | null = null;

  constructor(ring: CoalescedRing, mmio: KvmCoalescedListener, pio: KvmCoalescedListener | null) {
    this.#ring = ring;
    this.#mmio = mmio;
    this.#pio = pio;
    this.#unregister = registerCoalescedFlusher(() => this.#flush());
  }

  /** Whether KVM holds the zones yet (from the guest's first use of a coalesced device on). */
  get active(): boolean {
    return this.#mmio.active;
  }

  /** From now on the ring's writes may be merged: `runner` plays it back before its exits. */
  attachRunner(runner: Runner): void {
    this.#runner = runner;
  }

  #flush(): void {
    this.#ring.flush();
    // Counted during runs only (building the board flushes at each transaction).
    if (!this.#runner || this.#flushes >= MERGE_AFTER_FLUSHES) return;
    // The guest's first use of a coalesced device: from now on KVM queues its writes.
    if (this.#flushes === 0) {
      this.#mmio.activate();
      this.#pio?.activate();
    }
    if (++this.#flushes === MERGE_AFTER_FLUSHES) this.#merge();
  }

  #merge(): void {
    const runner = this.#runner;
    if (!this.#pio || !runner) return;
    // Whether or not a range is split now: the listener merges any that splits later as well.
    this.#pio.mergeSplitZones();
    runner.flushBeforeEachExit(flushCoalescedMmio);
    if (runner.doorbell !== null) return; // the VM thread's pass comes every 200 ms at the latest
    // One vCPU on this thread: a kick makes KVM_RUN return, and the runner plays the ring back.
    this.#timer = kickTimer(MERGED_RING_PERIOD_NS);
    this.#timer.armAfter(MERGED_RING_PERIOD_NS);
  }

  /** Stops the playback and the kicks; before the vCPUs' mappings go. Idempotent. */
  [Symbol.dispose](): void {
    this.#timer?.close();
    this.#timer = null;
    this.#unregister[Symbol.dispose]();
  }
}

/**
 * What a board needs of the VM (step 4): interrupt lines to the in-kernel irqchip, MSI-X messages
 * to KVM_SIGNAL_MSI from the VM thread (one ioctl, what an irqfd write would cost there), and the
 * ring barrier for RAM that vCPU threads write.
 */
function kvmBoardWiring(vm: Vm): Pick<PcBoardOptions, "irq" | "deliverMsi" | "fence"> {
  return {
    irq: (line) => ({ set: (level) => vm.irqLine(line, level) }),
    deliverMsi: (address, data) =>
      void vm.signalMsi({
        addressLo: Number(address & 0xffff_ffffn),
        addressHi: Number(address >> 32n),
        data,
      }),
    fence: sharedMemoryFence(),
  };
}

/** Monotonic nanoseconds. */
function monotonicNs(): number {
  return Math.round(performance.now() * 1e6);
}

/**
 * The split irqchip's PIT clock: monotonic nanoseconds that stand still while the machine is paused
 * (QEMU's virtual clock), so that a long `stop` is not played back as a burst of timer interrupts.
 */
class GuestClock {
  #pausedNs = 0;
  #since = 0;
  #depth = 0;

  /** Now, on this clock. */
  readonly now = (): number => (this.#depth > 0 ? this.#since : monotonicNs()) - this.#pausedNs;

  /** Runs `fn` with the clock stopped (calls nest). */
  paused<T>(fn: () => T): T {
    if (this.#depth++ === 0) this.#since = monotonicNs();
    try {
      return fn();
    } finally {
      if (--this.#depth === 0) this.#pausedNs += monotonicNs() - this.#since;
    }
  }
}

/**
 * Step 4 of a split irqchip: the KVM side of the board's own PIC, PIT and IOAPIC — a host timer
 * that signals this thread (the vCPU's) at the PIT's next output change, and KVM's GSI routes 0–23
 * kept equal to the IOAPIC pins' messages (committed only when a message changes: each commit
 * costs KVM a grace period), from which KVM learns the level-triggered vectors whose EOI it
 * reports.
 */
function splitIrqchipWiring(
  vm: Vm,
  timer: HostTimer,
  clock: GuestClock,
): NonNullable<PcBoardOptions["splitIrqchip"]> {
  let committed = "";
  return {
    clock: clock.now,
    onPitDeadline: (deadline) => {
      if (deadline === undefined) timer.disarm();
      else timer.armAfter(deadline - clock.now());
    },
    onRoutes: (routes: readonly IoapicRoute[]) => {
      const key = routes.map((r) => `${r.address}:${r.data}`).join(",");
      if (key === committed) return;
      vm.setGsiRouting(routes.map((r) => ({ gsi: r.pin, addressLo: r.address, addressHi: 0, data: r.data })));
      committed = key;
    },
  };
}

/**
 * A host timer that interrupts this thread's `KVM_RUN` (the kick signal, which does nothing else),
 * repeating every `repeatNs` after its first expiry (HostTimer's default: 1 ms).
 */
function kickTimer(repeatNs?: number): HostTimer {
  handleKickSignal();
  return HostTimer.create({
    signal: KICK_SIGNAL,
    tid: currentThread().tid,
    ...(repeatNs ? { repeatNs } : {}),
  });
}

/**
 * The VM thread's timers (machine/vm_timers.ts) with the host timer that wakes this thread for them,
 * made at their first use. Made on the VM thread (the thread the timer signals).
 */
function vmThreadTimers(): VmTimers & Disposable {
  let host: HostTimer | null = null;
  let closed = false;
  const timers = new VmTimers((ms) => {
    if (closed) return;
    if (ms === null) host?.disarm();
    else (host ??= kickTimer()).armAfter(ms * 1e6);
  });
  return Object.assign(timers, {
    [Symbol.dispose]: () => {
      closed = true;
      host?.close();
      host = null;
    },
  });
}

/**
 * What the runner does around each `KVM_RUN` with a split irqchip (QEMU's `kvm_arch_pre_run` and
 * its exits): play the PIT up to now when its timer may have fired; while the PIC's INT is high,
 * give the BSP its vector (`Vcpu.injectExtInt`) once KVM says the vCPU can take one, and ask for the
 * interrupt window until then; hand the IOAPIC the vectors the guest EOIs.
 */
function splitIrqchipHooks(irqchip: PcSplitIrqchip): UserspaceIrqchip {
  let window = false;
  const pic: ExtIntSource = {
    get pending() {
      return irqchip.extIntPending;
    },
    acknowledge: () => irqchip.extInt(),
  };
  return {
    beforeRun(vcpu) {
      irqchip.tick();
      window = offerExtInt(pic, vcpu, window);
    },
    exit(reason, page) {
      if (reason === KVM_EXIT_IRQ_WINDOW_OPEN) return true; // beforeRun gives the vector
      if (reason !== KVM_EXIT_IOAPIC_EOI) return false;
      irqchip.eoi(ioapicEoiVector(page));
      return true;
    },
  };
}

/**
 * Step 5b: an eventfd on the notify address of every queue of the devices with `ioeventfd`, which
 * the KVM ioeventfd listeners of step 5 register (machine/virtio_notifiers.ts); closed on failure.
 */
async function createNotifiers(board: PcBoard, cleanup: Disposable[]): Promise<VirtioNotifiers | null> {
  const functions = board.pciDevices.filter((d) => d.spec.ioeventfd).map((d) => d.fn);
  if (functions.length === 0) return null; // nothing to load
  const { VirtioNotifiers } = await import("../virtio_notifiers.ts");
  const notifiers = VirtioNotifiers.create(functions);
  cleanup.push({ [Symbol.dispose]: () => notifiers.close(false) });
  return notifiers;
}

/**
 * Step 8b: when the runner's serving thread waits in poll(2) between exits (a doorbell), each disk
 * whose spec can move its transfers off that thread does (`offload`); their completion fds join the
 * wait. With one vCPU on the calling thread, inside `KVM_RUN`, nothing would reap them: transfers
 * stay synchronous.
 */
function offloadDisks(board: PcBoard, runner: Runner, cleanup: Disposable[]): (HostFdSource & Disposable)[] {
  if (runner.doorbell === null) return [];
  const sources: (HostFdSource & Disposable)[] = [];
  for (const device of board.pciDevices) {
    if (device.spec.type !== "virtio-blk-pci") continue;
    const source = device.spec.offload?.();
    if (!source) continue;
    cleanup.push(source);
    sources.push(source);
  }
  return sources;
}

/**
 * Step 6: the vCPUs, each set up as a VMM sets one up before Linux runs (Firecracker's list):
 * CPUID with its APIC id and the topology, the boot MSRs, the FPU, LINT0 = ExtINT and LINT1 = NMI
 * on the LAPIC. They are closed with the VM.
 *
 * @throws {KvmError} when KVM refuses a vCPU (more than KVM_CAP_MAX_VCPUS, say) or its setup.
 */
export function createPcVcpus(kvm: Kvm, vm: Vm, cpus: number): Vcpu[] {
  return createPcVcpusWithResetState(kvm, vm, cpus).vcpus;
}

/**
 * A vCPU's state at power-on, as KVM created it and step 6 set it up: what a system reset puts
 * back (QEMU's `x86_cpu_reset` + `kvm_arch_reset_vcpu`, then `kvm_arch_put_registers` with
 * `KVM_PUT_RESET_STATE`).
 */
export interface VcpuResetState {
  readonly regs: KvmRegs;
  /** Real mode at the reset vector, the APIC base (xAPIC on, BSP bit), no pending interrupt. */
  readonly sregs: KvmSregs;
  /** The LAPIC page: xAPIC registers at reset, with LINT0/LINT1 as step 6 set them. */
  readonly lapic: Uint8Array;
  /** No pending exception, interrupt or NMI. */
  readonly events: VcpuEvents;
  /** RUNNABLE for the bootstrap processor, UNINITIALIZED (waiting for INIT/SIPI) for the others. */
  readonly mpState: number;
  /** The boot MSRs and KVM's paravirtual MSRs at their reset values. */
  readonly msrs: readonly MsrEntry[];
}

/**
 * Refuses a snapshot whose guest saw CPU features that this host's KVM cannot offer (a snapshot
 * from another machine): its vCPUs get their saved CPUID back on restore, and a feature the host
 * lacks would fault the guest later, far from the cause.
 *
 * What a host offers is what a guest booted here would see. On a hardware KVM that is the leaves
 * made from `KVM_GET_SUPPORTED_CPUID`. A KVM may present more than it reports as supported (kvm_pvm
 * answers `KVM_GET_CPUID2` with the host's own feature bits, which its guests do see): when the
 * supported leaves fall short, the restore's own vCPU `i`, created with those leaves as for a boot
 * and not yet given its saved state, says what it really presents (`presented(i)`), and only bits
 * missing from that too are refused.
 */
function checkCpuid(
  dir: string,
  vcpus: readonly VcpuState[],
  kvm: Kvm,
  presented: (i: number) => CpuidEntry[],
): void {
  const supported = kvm.supportedCpuid();
  vcpus.forEach((saved, i) => {
    const offered = linuxCpuid(supported, pcCpuidOptions(i, vcpus.length));
    let lacking = cpuidFeaturesLacking(saved.cpuid, offered);
    if (lacking.length > 0) lacking = cpuidFeaturesLacking(saved.cpuid, presented(i));
    if (lacking.length > 0) {
      throw new SnapshotMismatchError(
        `snapshot ${dir}: vCPU ${i} saw CPU features this host's KVM lacks (${lacking.join(", ")})`,
      );
    }
  });
}

/**
 * The most vCPUs whose APIC ids (0 … n-1) all fit the xAPIC's 8 bits below the broadcast id 255;
 * more need x2APIC: the split irqchip (an IOAPIC of ours that carries Linux's extended destination
 * ID), KVM's x2APIC API and `KVM_FEATURE_MSI_EXT_DEST_ID`, as QEMU arranges them.
 */
export const XAPIC_MAX_CPUS = 255;

/**
 * Why `cpus` vCPUs cannot run on `irqchip`, or undefined when they can: APIC ids above 254 need
 * x2APIC, which the in-kernel IOAPIC (8-bit destinations) cannot address.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { x2apicIrqchipProblem } from "./pc_machine.ts";
 * assert.equal(x2apicIrqchipProblem(255, "kernel"), undefined);
 * assert.equal(x2apicIrqchipProblem(300, "split"), undefined);
 * assert.match(x2apicIrqchipProblem(256, "kernel")!, /kernel-irqchip=split/);
 * ```
 */
export function x2apicIrqchipProblem(cpus: number, irqchip: PcIrqchipMode): string | undefined {
  if (cpus <= XAPIC_MAX_CPUS || irqchip === "split") return undefined;
  return "APIC ids above 254 need x2APIC, which the in-kernel IOAPIC cannot address: " +
    "use -machine kernel-irqchip=split";
}

/** CPUID options of vCPU `id` of `cpus`: extended MSI destinations where APIC ids pass 254. */
function pcCpuidOptions(id: number, cpus: number): LinuxCpuidOptions {
  return { apicId: id, cpuCount: cpus, msiExtDestId: cpus > XAPIC_MAX_CPUS };
}

/** Step 6, keeping each vCPU's {@link VcpuResetState} for {@link resetPcVcpus}. */
export function createPcVcpusWithResetState(
  kvm: Kvm,
  vm: Vm,
  cpus: number,
): { vcpus: Vcpu[]; resetStates: VcpuResetState[] } {
  const supported = kvm.supportedCpuid();
  const vcpus: Vcpu[] = [];
  const resetStates: VcpuResetState[] = [];
  for (let id = 0; id < cpus; id++) {
    const vcpu = vm.createVcpu(id);
    const cpuid: CpuidEntry[] = linuxCpuid(supported, pcCpuidOptions(id, cpus));
    vcpu.setCpuid2(cpuid);
    vcpu.setMsrs(bootMsrs());
    vcpu.setFpu(bootFpu());
    vcpu.setLapic(lapicWithLints(vcpu.getLapic()));
    vcpus.push(vcpu);
    resetStates.push({
      regs: vcpu.getRegs(),
      sregs: vcpu.getSregs(),
      lapic: vcpu.getLapic(),
      events: vcpu.getVcpuEvents(),
      mpState: vcpu.getMpState(),
      msrs: resetMsrs(cpuid),
    });
  }
  return { vcpus, resetStates };
}

/**
 * A system reset of every vCPU (the run must be over: no vCPU inside `KVM_RUN`): the power-on
 * state back, in the order KVM needs it — special registers first (the APIC base decides how the
 * LAPIC page is read), then the general registers, the MSRs (kvm-clock, steal time, PV EOI and
 * async page faults off, TSC 0 on all vCPUs, which KVM takes as a synchronised reset), the FPU,
 * the LAPIC, the pending events and the MP state (the other vCPUs wait for INIT/SIPI again).
 *
 * Without it a rebooted Linux inherits x2APIC mode, a LAPIC timer and pending vectors of the
 * previous kernel, and KVM keeps writing kvm-clock and steal-time data into the new kernel's memory.
 *
 * @throws {KvmError} when KVM refuses one of the writes.
 */
export function resetPcVcpus(vcpus: readonly Vcpu[], states: readonly VcpuResetState[]): void {
  vcpus.forEach((vcpu, i) => {
    const state = states[i];
    vcpu.setSregs(state.sregs);
    vcpu.setRegs(state.regs);
    vcpu.setMsrs(state.msrs);
    vcpu.setFpu(bootFpu());
    vcpu.setLapic(state.lapic);
    vcpu.setVcpuEvents(state.events);
    vcpu.setMpState(state.mpState);
  });
}

/**
 * Step 7 (and every `-reboot`): the boot plan's bytes and the firmware tables (MP table, ACPI
 * tables) written through the memory API, and the bootstrap processor set at the plan's entry. The other vCPUs wait for
 * INIT/SIPI in the kernel. A plan's source ranges (a kernel or initrd kept in its file) are read
 * again each time, a chunk at a time, as Cloud Hypervisor reloads its kernel on reboot.
 *
 * @throws {LoaderError} (CHANGED) when such a file changed since it was opened.
 */
export function loadGuest(board: PcBoard, boot: BootPlan, bsp: Vcpu): void {
  // Ranges of files go straight into RAM where they can (one copy); ROM and the rest take writeRom.
  copyBootWrites(
    boot.writes,
    (addr, data) => board.memory.writeRom(addr, data),
    { map: (addr, length) => board.memory.map(addr, length, true) },
  );
  for (const table of board.firmwareTables) board.memory.writeRom(table.address, table.bytes);
  bsp.setSregs(sregsFor(bsp.getSregs(), boot.cpu));
  bsp.setRegs(regsFor(bsp.getRegs(), boot.cpu));
}

/** The threaded runner's class, loaded on first use. */
async function smpRunner(): Promise<typeof SmpRunner> {
  return (await import("../smp_runner.ts")).SmpRunner;
}

/**
 * Step 8: one vCPU runs on this thread (the fastest exit path); more get a thread each. The
 * board's reset and debug-exit requests end the runner's run.
 */
export async function makeRunner(board: PcBoard, vcpus: readonly Vcpu[], threaded = false): Promise<Runner> {
  const spaces = { memory: board.memory, io: board.io };
  // The threaded runner (and its Worker protocol) is loaded only when a run needs it.
  const runner: Runner = vcpus.length === 1 && !threaded
    ? new VcpuRunner(vcpus[0], spaces, board.irqchip ? splitIrqchipHooks(board.irqchip) : null)
    : new (await smpRunner())(vcpus, spaces, board.irqchip ?? undefined);
  board.onStop = (outcome) => runner.stop(outcome);
  return runner;
}

/**
 * A PC with its vCPUs, ready to run.
 *
 * @example
 * ```ts ignore
 * using pc = await PcMachine.create({ ramSize: 128n << 20n, serial: (b) => out.push(b) });
 * const outcome = pc.run();
 * ```
 */
export class PcMachine implements Disposable {
  /** The board: regions, devices, address spaces. */
  readonly board: PcBoard;
  /** What was loaded and where the CPU starts. */
  readonly boot: BootPlan;
  /** The KVM memory listener of "memory". */
  readonly kvmListener: KvmMemoryListener;
  readonly #kvm: Kvm | null;
  readonly #vm: Vm;
  readonly #vcpus: readonly Vcpu[];
  readonly #runner: Runner;
  readonly #memory: PcGuestMemory;
  readonly #resetStates: readonly VcpuResetState[];
  readonly #notifiers: VirtioNotifiers | null;
  /** The completion fds of the disks whose transfers left the serving thread (see {@link offloadDisks}). */
  readonly #diskSources: readonly (HostFdSource & Disposable)[];
  readonly #kvmRef: Kvm;
  /** The coalesced-MMIO ring's flusher (null without a ring). */
  readonly #coalesced: CoalescedRingDriver | null;
  /** The split irqchip's PIT timer (null with the in-kernel irqchip). */
  readonly #timer: HostTimer | null;
  /** The split irqchip's PIT clock, stopped while paused (null with the in-kernel irqchip). */
  readonly #clock: GuestClock | null;
  /** The VM thread's timers: devices' and the self-announcement's rounds, run from the kick hook. */
  readonly #timers: VmTimers & Disposable;
  /**
   * The self-announcements in progress by id (QEMU's named announce timers), and the restore's own
   * under {@link RESTORE_ANNOUNCE} (QEMU's migration timer, apart from the named ones): each one's
   * cancel.
   */
  readonly #announcing = new Map<string | symbol, () => void>();
  /** The last snapshot written or restored: what a diff snapshot builds on. */
  #lastSnapshot: SnapshotBase | null = null;
  /** The front-end's description stored in the snapshot this machine was restored from. */
  #restoredFrontEnd: SnapValue = null;
  /** The saveable MSRs, probed at the first snapshot. */
  #msrIndices: number[] | null = null;
  #closed = false;

  private constructor(parts: {
    board: PcBoard;
    boot: BootPlan;
    kvmListener: KvmMemoryListener;
    ownedKvm: Kvm | null;
    vm: Vm;
    vcpus: Vcpu[];
    runner: Runner;
    memory: PcGuestMemory;
    resetStates: VcpuResetState[];
    notifiers: VirtioNotifiers | null;
    diskSources: readonly (HostFdSource & Disposable)[];
    kvm: Kvm;
    coalesced: CoalescedRingDriver | null;
    timer?: HostTimer | null;
    clock?: GuestClock | null;
    timers: VmTimers & Disposable;
  }) {
    this.board = parts.board;
    this.boot = parts.boot;
    this.kvmListener = parts.kvmListener;
    this.#kvm = parts.ownedKvm;
    this.#vm = parts.vm;
    this.#vcpus = parts.vcpus;
    this.#runner = parts.runner;
    this.#memory = parts.memory;
    this.#resetStates = parts.resetStates;
    this.#notifiers = parts.notifiers;
    this.#diskSources = parts.diskSources;
    this.#kvmRef = parts.kvm;
    this.#coalesced = parts.coalesced;
    this.#timer = parts.timer ?? null;
    this.#clock = parts.clock ?? null;
    this.#timers = parts.timers;
  }

  /**
   * The eventfds KVM signals for queue notifies of the devices with `ioeventfd` (empty without):
   * {@link runAsync} waits on them between exits and serves their queues.
   */
  get notifyFds(): number[] {
    return this.#notifiers?.fds ?? [];
  }

  /** Processes the queues whose notify eventfd was signalled; how many were. */
  serveNotifies(): number {
    return this.#notifiers?.serve() ?? 0;
  }

  /**
   * Builds the machine, one named step after another. On any failure everything created so far is
   * released and the error is re-thrown.
   *
   * @throws {LoaderError} for a kernel or firmware image that cannot be loaded (nothing acquired).
   * @throws {RangeError} for a bad vCPU count, RAM or firmware size (nothing acquired).
   * @throws {KvmError} when the kernel refuses a step.
   */
  static async create(options: PcMachineOptions): Promise<PcMachine> {
    const boot = await planBoot(options); // 1
    const firmware = options.firmware ?? FIRMWARE;
    const cpus = options.cpus ?? 1;
    const cleanup: Disposable[] = [];
    try {
      const kvm = options.kvm ?? Kvm.open();
      if (!options.kvm) cleanup.push(kvm);
      const irqchip = options.irqchip ?? "kernel";
      const vm = createPcVm(kvm, irqchip, cpus); // 2
      cleanup.push(vm);
      const timer = irqchip === "split" ? kickTimer() : null; // the split irqchip's PIT signals this thread
      if (timer) cleanup.push(timer);
      const clock = new GuestClock();
      const timers = vmThreadTimers();
      cleanup.push(timers);
      const memory = allocatePcMemory(options.ramSize, BigInt(firmware.length), cleanup); // 3
      const board = await PcBoard.create({ // 4
        ramSize: options.ramSize,
        firmware,
        cpus,
        backings: memory,
        serial: options.serial,
        pciDevices: options.pciDevices,
        log: options.log,
        timers,
        ...kvmBoardWiring(vm),
        irqchip,
        ...(timer ? { splitIrqchip: splitIrqchipWiring(vm, timer, clock) } : {}),
      });
      cleanup.push(board);
      const kvmListener = attachKvm(board, vm, options.traceMemslots); // 5
      const notifiers = await createNotifiers(board, cleanup); // 5b
      createPcIrqchip(vm, irqchip); // 5c
      const { vcpus, resetStates } = createPcVcpusWithResetState(kvm, vm, cpus); // 6
      const coalesced = attachCoalescedRing(board, vm, vcpus[0]); // 6b
      if (coalesced) cleanup.push(coalesced);
      loadGuest(board, boot, vcpus[0]); // 7
      const runner = await makeRunner(board, vcpus, notifiers !== null); // 8
      coalesced?.attachRunner(runner);
      return new PcMachine({
        board,
        boot,
        kvmListener,
        ownedKvm: options.kvm ? null : kvm,
        vm,
        vcpus,
        runner,
        memory,
        resetStates,
        notifiers,
        diskSources: offloadDisks(board, runner, cleanup),
        kvm,
        coalesced,
        timer,
        clock: timer ? clock : null,
        timers,
      });
    } catch (error) {
      try {
        closeAll(cleanup.reverse().map((item) => ({ close: () => item[Symbol.dispose]() })));
      } catch {
        // the original error is the one to report
      }
      throw error;
    }
  }

  /**
   * Builds the machine a snapshot describes (`dir`, through its chain of bases): the board from
   * its description, guest memory mapped from the memory files (`MAP_PRIVATE`, nothing read up
   * front; diffs copied over), the memory map replayed to the KVM listener (dirty logging on, as it
   * was when the snapshot was taken), then the irqchip and PIT, every vCPU's state, every device's
   * state, kvmclock. The machine is ready to run where the snapshot stopped. Everything is read and
   * checked before anything is acquired; on any later failure everything is released.
   *
   * @throws {SnapshotFormatError} for a state file that cannot be read (truncated, corrupted…).
   * @throws {SnapshotMismatchError} when `options` contradict the snapshot (RAM, vCPUs, devices),
   *   its boot file is missing or not its recorded size, or this host's KVM lacks a CPU feature
   *   the guest saw.
   * @throws {KvmError} when the kernel refuses a step.
   */
  static async restore(dir: string, options: PcRestoreOptions = {}): Promise<PcMachine> {
    const chain = readSnapshotChain(dir);
    const state = chain[chain.length - 1].state;
    const board = state.board;
    if (options.ramSize !== undefined && options.ramSize !== board.ramSize) {
      throw new SnapshotMismatchError(
        `snapshot ${dir} has ${board.ramSize >> 20n} MiB of RAM, not the ${
          options.ramSize >> 20n
        } MiB asked for`,
      );
    }
    if (options.cpus !== undefined && options.cpus !== board.cpus) {
      throw new SnapshotMismatchError(
        `snapshot ${dir} has ${board.cpus} vCPUs, not the ${options.cpus} asked for`,
      );
    }
    if (options.irqchip !== undefined && options.irqchip !== board.irqchip) {
      const name = (mode: PcIrqchipMode) => mode === "split" ? "split" : "on";
      throw new SnapshotMismatchError(
        `snapshot ${dir} has kernel-irqchip=${name(board.irqchip)}, not the ${
          name(options.irqchip)
        } asked for`,
      );
    }
    const given = (options.pciDevices ?? []).map((d) => d.type);
    const saved = board.pciDevices.map((d) => d.type);
    if (given.join(",") !== saved.join(",")) {
      throw new SnapshotMismatchError(
        `snapshot ${dir} has PCI devices [${saved.join(", ")}], not [${given.join(", ")}]`,
      );
    }
    // What a reset loads: ranges of the full snapshot's boot file, read only then (its size is
    // checked now, so a missing one is refused before anything is built).
    const boot = restoredBootPlan(chain[0].dir, board.boot);
    const cleanup: Disposable[] = [];
    try {
      const kvm = options.kvm ?? Kvm.open();
      if (!options.kvm) cleanup.push(kvm);
      const vm = createPcVm(kvm, board.irqchip, board.cpus);
      cleanup.push(vm);
      const timer = board.irqchip === "split" ? kickTimer() : null;
      if (timer) cleanup.push(timer);
      const clock = new GuestClock();
      const timers = vmThreadTimers();
      cleanup.push(timers);
      const [ram, bios, rom] = mapMemoryChain(
        chain.map((link) => ({ dir: link.dir, memory: link.state.memory })),
      );
      cleanup.push(ram, bios, rom);
      const memory = { ram, bios, rom };
      // The firmware is the memory file's pc.bios block, mapped (the state holds its size only).
      const firmware = bios.bytes;
      const pc = await PcBoard.create({
        ramSize: board.ramSize,
        firmware,
        firmwareLoaded: true,
        irqchip: board.irqchip,
        ...(timer ? { splitIrqchip: splitIrqchipWiring(vm, timer, clock) } : {}),
        cpus: board.cpus,
        backings: memory,
        serial: options.serial,
        pciDevices: options.pciDevices,
        log: options.log,
        timers,
        ...kvmBoardWiring(vm),
      });
      cleanup.push(pc);
      // Logging was on when the snapshot was taken (every snapshot turns it on): the replay below
      // makes the same memslots, flags included, and a diff can build on this restore.
      pc.map.ram.setLog(true, DirtyLogClient.MIGRATION);
      const kvmListener = attachKvm(pc, vm, options.traceMemslots);
      // The same notify eventfds as the machine that was saved (its snapshot served every pending one).
      const notifiers = await createNotifiers(pc, cleanup);
      createPcIrqchip(vm, board.irqchip);
      const { vcpus, resetStates } = createPcVcpusWithResetState(kvm, vm, board.cpus);
      // Each vCPU has the CPUID a boot here would give it: what it presents is what this host offers.
      checkCpuid(dir, state.vcpus, kvm, (i) => vcpus[i].getCpuid2());
      const coalesced = attachCoalescedRing(pc, vm, vcpus[0]);
      if (coalesced) cleanup.push(coalesced);
      // In-kernel PICs, IOAPIC and PIT (a split irqchip's are devices, loaded with the others below).
      state.vm.irqchips?.forEach((chip, id) => vm.setIrqchip(id, chip));
      if (state.vm.pit) vm.setPit2(state.vm.pit);
      vcpus.forEach((vcpu, i) => restoreVcpuState(vcpu, state.vcpus[i]));
      loadDevices(pc, state.devices);
      vm.setClock(state.vm.clock);
      // As QEMU after an incoming migration: a virtio-net driver that negotiated GUEST_ANNOUNCE is
      // asked to announce its card (gratuitous ARP), so the network learns where it is again.
      for (const device of pc.pciDevices) device.fn.device.model.restored?.();
      // A split irqchip's PIC gives vCPU 0 its vector only once KVM said the vCPU can take one
      // (kvm_run.ready_for_interrupt_injection, written at each exit). This run page has seen no
      // exit: a vCPU restored halted with the PIC's INT high would ask for the interrupt window,
      // which does not wake a halted vCPU, and sleep for ever. Its first KVM_RUN returns at once
      // instead (immediate_exit, the kick's way), with the flag as KVM sees this vCPU.
      if (board.irqchip === "split") vcpus[0].setImmediateExit(true);
      const runner = await makeRunner(pc, vcpus, notifiers !== null);
      coalesced?.attachRunner(runner);
      const machine = new PcMachine({
        board: pc,
        boot,
        kvmListener,
        ownedKvm: options.kvm ? null : kvm,
        vm,
        vcpus,
        runner,
        memory,
        resetStates,
        notifiers,
        diskSources: offloadDisks(pc, runner, cleanup),
        kvm,
        coalesced,
        timer,
        clock: timer ? clock : null,
        timers,
      });
      machine.#lastSnapshot = { reference: chain[chain.length - 1].reference, boot: board.boot };
      machine.#restoredFrontEnd = board.frontEnd;
      // And, as QEMU's incoming migration, every card announces itself from the host side (on a
      // timer of its own: an `announce-self` without an id does not cancel it).
      machine.#announce(DEFAULT_ANNOUNCE, RESTORE_ANNOUNCE);
      return machine;
    } catch (error) {
      try {
        closeAll(cleanup.reverse().map((item) => ({ close: () => item[Symbol.dispose]() })));
      } catch {
        // the original error is the one to report
      }
      throw error;
    }
  }

  /**
   * Writes a snapshot of the machine into `dir` (created if needed): the state file and the memory
   * file, full or — with `diff` — only the RAM pages written since the previous snapshot of this
   * machine (or the one it was restored from), which it then references as its base. Every vCPU is
   * held out of `KVM_RUN` meanwhile (with one vCPU, call it from a run hook). The first snapshot
   * turns on dirty logging of RAM, which stays on.
   *
   * @throws {SnapshotMismatchError} for a diff with nothing to build on.
   */
  snapshot(dir: string, options: SnapshotOptions = {}): SnapshotResult {
    this.#checkOpen();

    return this.#runner.withVcpusPaused(() => {
      // A notify KVM signalled but the VM thread has not served yet would be lost in the snapshot:
      // serve them now, with every vCPU out of KVM_RUN none can come after.
      this.#notifiers?.serve();
      // Requests whose data a disk's kernel worker still moves: complete them, so that the used
      // ring, the interrupt and guest memory are all in the snapshot.
      this.#drainDisks();
      // Writes KVM queued in the coalesced ring belong to the devices' state: play them back first.
      flushCoalescedMmio();
      this.#msrIndices ??= readableMsrs(this.#vcpus[0], this.#kvmRef.msrIndexList());
      const result = writeSnapshot(dir, {
        ...options,
        base: this.#lastSnapshot,
        vm: this.#vm,
        vcpus: this.#vcpus,
        msrIndices: this.#msrIndices,
        board: this.board,
        boot: this.boot,
        memory: [this.#memory.ram, this.#memory.bios, this.#memory.rom],
      });
      this.#lastSnapshot = { reference: result.reference, boot: result.boot };
      return result;
    });
  }

  /** What the front-end stored in the snapshot this machine was restored from (null otherwise). */
  get restoredFrontEnd(): SnapValue {
    return this.#restoredFrontEnd;
  }

  /** The "memory" address space. */
  get memory(): AddressSpace {
    return this.board.memory;
  }

  /** The CPU's view of memory (shares the FlatView of "memory", as in QEMU). */
  get cpuMemory(): AddressSpace {
    return this.board.cpuMemory;
  }

  /** The "I/O" address space. */
  get io(): AddressSpace {
    return this.board.io;
  }

  /** The regions of the memory map. */
  get map(): PcMemory {
    return this.board.map;
  }

  /** COM1. */
  get uart(): Uart16550 {
    return this.board.uart;
  }

  /** The e820 map the board reports. */
  get e820(): readonly E820Entry[] {
    return this.board.e820;
  }

  /** I/O and MMIO exits served so far. */
  get exits(): number {
    return this.#runner.exits;
  }

  /**
   * Whether KVM holds the board's coalesced zones (the RTC's index port, the PCI host's ports, …) yet:
   * they are registered at the guest's first access to a coalesced device during a run, so a VM whose
   * guest never touches one has none (it is cheaper to destroy). False where KVM has no ring.
   */
  get coalescedZonesRegistered(): boolean {
    return this.#coalesced?.active ?? false;
  }

  /** Per vCPU, its exits so far by `KVM_EXIT_*` reason (index = reason; live views). */
  get exitCounts(): readonly Uint32Array[] {
    return this.#runner.exitCounts;
  }

  /** Number of vCPUs. */
  get cpus(): number {
    return this.#vcpus.length;
  }

  /**
   * Runs a one-vCPU machine on this thread until the guest exits, resets, fails or {@link stop} is
   * called.
   *
   * @throws {TypeError} with more than one vCPU (use {@link runAsync}), or once closed.
   */
  run(hooks: RunnerHooks = {}): RunOutcome {
    this.#checkOpen();
    if (this.#runner.doorbell !== null) {
      throw new TypeError("PcMachine.run: with more than one vCPU, use runAsync");
    }
    const outcome = this.#runner.run(this.#withTimers(hooks));
    if (outcome instanceof Promise) throw new TypeError("PcMachine.run: this runner needs runAsync");
    return outcome;
  }

  /**
   * The VM thread's timers: `after(ms, fn)` runs `fn` on the thread that runs the machine, during a
   * {@link run} or {@link runAsync}, once `ms` milliseconds have passed (not while the machine is
   * held stopped). The devices' own waits (a card's announcement rounds) use them too.
   *
   * @example
   * ```ts ignore
   * pc.timers.after(100, () => pc.stop({ kind: "quit" })); // end a run that would go on for ever
   * const outcome = await pc.runAsync(); // { kind: "quit" } after about 100 ms
   * ```
   */
  get timers(): DeviceTimers {
    return this.#timers;
  }

  /** `hooks` with the VM thread's due timers run first at each kick (a timer's signal is one). */
  #withTimers(hooks: RunnerHooks): RunnerHooks {
    const timers = this.#timers;
    const onKick = hooks.onKick;
    return {
      ...hooks,
      onKick: () => {
        timers.runDue();
        onKick?.();
      },
    };
  }

  /**
   * Runs any machine until an outcome: one vCPU on this thread, or one thread per vCPU with this
   * thread serving their I/O (its `hooks.onKick` runs whenever the {@link doorbell} rings).
   *
   * @throws {TypeError} once closed.
   */
  async runAsync(hooks: RunnerHooks = {}): Promise<RunOutcome> {
    this.#checkOpen();
    const timed = this.#withTimers(hooks);
    if (this.#notifiers === null && this.#diskSources.length === 0) return await this.#runner.run(timed);
    // The queue notify eventfds join the serving thread's wait (machine/virtio_notifiers.ts), and
    // so do the completions of the disks' transfers.
    const sources = [...(this.#notifiers?.sources() ?? []), ...this.#diskSources, ...(hooks.sources ?? [])];
    return await this.#runner.run({ ...timed, sources });
  }

  /** Where another thread rings to wake this thread during a multi-vCPU run (null with one vCPU). */
  get doorbell(): Doorbell | null {
    return this.#runner.doorbell;
  }

  /**
   * The ACPI power button (the monitor's `system_powerdown`): whether the guest's OS listens. It
   * shuts down through S5 if it does; nothing happens otherwise, as in QEMU.
   */
  powerButton(): boolean {
    this.#checkOpen();
    return this.board.powerButton();
  }

  /** Ends the current run after the exit being handled (for example on a monitor `quit`). */
  stop(outcome: RunOutcome): void {
    this.#runner.stop(outcome);
  }

  /**
   * A system reset for `-reboot`, between runs: devices back to their reset state, every vCPU back
   * to its power-on state ({@link resetPcVcpus}), the guest loaded again, the bootstrap processor at
   * the plan's entry. RAM keeps its contents, as on a real warm reset.
   *
   * @throws {TypeError} once closed.
   * @throws {LoaderError} (CHANGED) when a file the plan reads changed: a kernel or initrd since it
   *   was opened, a restored snapshot's boot file since it was written.
   */
  reset(): void {
    this.#checkOpen();
    this.board.resetDevices();
    resetPcVcpus(this.#vcpus, this.#resetStates);
    loadGuest(this.board, this.boot, this.#vcpus[0]);
  }

  /** Bytes typed on the console, for COM1: queued, and fed as fast as the guest reads them. */
  input(bytes: Uint8Array): void {
    this.board.input(bytes);
  }

  /**
   * Each network card's receive filter, for QMP's `query-rx-filter`: named as QEMU names the card's
   * net client (its `-device id=`, else `virtio-net-pci.N` with N the cards made before it), with
   * whether the driver negotiated the VLAN filter.
   */
  rxFilters(): NicRxFilter[] {
    this.#checkOpen();
    const all = this.board.pciDevices;
    return this.#nics().map(({ device: d, name }) => {
      const net = d.fn.device.model as VirtioNet;
      // QEMU's QOM path of the card's virtio device: under its id, or the how-manieth device
      // created without one.
      const anonymous = all.slice(0, all.indexOf(d)).filter((o) => o.spec.id === undefined).length;
      const parent = d.spec.id === undefined
        ? `/machine/peripheral-anon/device[${anonymous}]`
        : `/machine/peripheral/${d.spec.id}`;
      return {
        name,
        id: d.spec.id,
        path: `${parent}/virtio-backend`,
        filter: net.rxFilter,
        vlanFiltering: (d.fn.device.driverFeatures & VirtioNetFeature.CTRL_VLAN) !== 0n,
      };
    });
  }

  /**
   * QMP's `announce-self` (QEMU's `qemu_announce_self`): `params.rounds` rounds, the first now and
   * the others {@link announceDelay} apart on the VM thread's timers, each sending a RARP frame from
   * every network card's address through its backend and asking each card's driver to announce it
   * ({@link VirtioNet.announce}). `interfaces` limits it to the cards
   * of those net client names (as {@link rxFilters} names them; an unknown name matches nothing);
   * a second call with the same `id` replaces the first's rounds. A restored machine runs it with
   * {@link DEFAULT_ANNOUNCE}, as QEMU after an incoming migration. Rounds wait while the machine is
   * stopped (QEMU's go on), and a reset does not end them (nor QEMU's).
   *
   * @throws {RangeError} when a parameter is outside the bounds of `devices/net_announce.ts`
   *   (nothing changes).
   */
  announceSelf(
    params: AnnounceParameters,
    options: { readonly interfaces?: readonly string[]; readonly id?: string } = {},
  ): void {
    this.#checkOpen();
    const problem = announceProblem(params);
    if (problem !== undefined) throw new RangeError(`announce-self: ${problem}`);
    this.#announce(params, options.id ?? "", options.interfaces);
  }

  #announce(params: AnnounceParameters, id: string | symbol, interfaces?: readonly string[]): void {
    this.#announcing.get(id)?.();
    this.#announcing.delete(id);
    if (params.rounds === 0) return;
    const nics = this.#nics().filter(({ name }) => interfaces === undefined || interfaces.includes(name));
    let left = params.rounds;
    const round = () => {
      for (const { device } of nics) device.announce?.();
      if (--left === 0) {
        this.#announcing.delete(id);
        return;
      }
      this.#announcing.set(id, this.#timers.after(announceDelay(params, left), round));
    };
    round();
  }

  /**
   * The network cards in device order, each with QEMU's net client name: its `-device id=`, else
   * `virtio-net-pci.N` with N the cards made before it.
   */
  #nics(): { device: PcPciDevice; name: string }[] {
    return this.board.pciDevices.filter((d) => d.spec.type === "virtio-net-pci")
      .map((device, i) => ({ device, name: device.spec.id ?? `virtio-net-pci.${i}` }));
  }

  /** QEMU's `info pci`. */
  infoPci(): string {
    return this.board.infoPci();
  }

  /**
   * QEMU's `info pic`: both 8259s and the IOAPIC, in QEMU's format — the board's own with a split
   * irqchip, KVM's (`KVM_GET_IRQCHIP`, decoded into the same models) with the in-kernel one.
   */
  infoPic(): string {
    this.#checkOpen();
    const own = this.board.irqchip;
    if (own) return `${own.pic.info()}\n${own.ioapic.info()}`.trimEnd();
    return kernelIrqchipInfo([0, 1, 2].map((chip) => this.#vm.getIrqchip(chip)));
  }

  /** `info mtree` of this machine's address spaces. */
  mtree(options: MtreeOptions = {}): string {
    return this.board.mtree(options);
  }

  /**
   * `info registers` of vCPU `cpu` (default 0), or of every vCPU with `"all"` (QEMU's `-a`). With
   * several vCPUs running on their threads, they are held out of KVM_RUN while their registers are
   * read.
   */
  registers(cpu: number | "all" = 0): string {
    return this.#runner.withVcpusPaused(() =>
      (cpu === "all" ? this.#vcpus : [this.#vcpus[cpu] ?? this.#vcpus[0]])
        .map((v) =>
          `${this.#vcpus.length > 1 ? `CPU#${v.id}\n` : ""}${formatRegisters(v.getRegs(), v.getSregs())}`
        )
        .join("\n")
    );
  }

  /**
   * Runs `fn` with every vCPU out of `KVM_RUN` (QMP's `stop` holds the machine here while it serves
   * commands). With one vCPU the caller is already outside it (a run hook); calls nest.
   */
  whilePaused<T>(fn: () => T): T {
    const clock = this.#clock;
    const timers = this.#timers;
    return this.#runner.withVcpusPaused(() => timers.paused(clock ? () => clock.paused(fn) : fn));
  }

  /** The host thread id of each vCPU (QMP's `query-cpus-fast`); 0 for one whose thread is not running. */
  threadIds(): number[] {
    return this.#runner.threadIds();
  }

  /**
   * The guest-physical address of virtual address `vaddr` as vCPU `cpu` sees it (its page tables,
   * walked in software as QEMU's debug accesses do), or null when nothing is mapped there.
   */
  translate(cpu: number, vaddr: bigint): bigint | null {
    const vcpu = this.#vcpus[cpu];
    if (vcpu === undefined) throw new RangeError(`PcMachine.translate: no vCPU ${cpu}`);
    const sregs = this.#runner.withVcpusPaused(() => vcpu.getSregs());
    const memory = this.board.memory;
    const read = (pa: bigint, size: number) => memory.read(pa, size).value;
    return translateVirtual(sregs, vaddr, (pa) => read(pa, 8), (pa) => Number(read(pa, 4)));
  }

  /**
   * Finishes the I/O or MMIO instruction each vCPU's last exit stopped at, without running the
   * guest on: KVM completes one (an `out` moves RIP past it, an `in` writes its register) only at
   * the next `KVM_RUN`, so until then the registers read as before it. A snapshot does this by
   * itself; a tool that reads or changes registers after {@link run} returned calls it first.
   * Every vCPU is held out of `KVM_RUN` meanwhile (with one vCPU, call it between runs).
   */
  completePendingIo(): void {
    this.#checkOpen();
    this.#runner.withVcpusPaused(() => {
      for (const vcpu of this.#vcpus) completePendingIo(vcpu, this.board);
    });
  }

  /** The bootstrap vCPU, for kickers and tools. */
  get vcpu(): Vcpu {
    return this.#vcpus[0];
  }

  /**
   * vCPU `cpu`, for a debugger on the thread that serves exits: call its state ioctls only while it
   * is out of `KVM_RUN` (in {@link whilePaused}, or in a run's `onDebug` for the vCPU that stopped).
   *
   * @throws {RangeError} when there is no such vCPU.
   */
  vcpuAt(cpu: number): Vcpu {
    const vcpu = this.#vcpus[cpu];
    if (vcpu === undefined) throw new RangeError(`PcMachine: no vCPU ${cpu}`);
    return vcpu;
  }

  /** Waits for every disk transfer in flight and completes its request. */
  #drainDisks(): void {
    for (const device of this.board.pciDevices) {
      if (device.spec.type === "virtio-blk-pci") device.spec.backing.drain?.();
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new TypeError("PcMachine: the machine is closed");
  }

  /**
   * Releases everything, in this order, and each even when an earlier one throws: the VM and its
   * vCPUs (KVM frees the memslots and ioeventfds with it), the board's address spaces (their KVM
   * listeners see a closed VM and only forget their slots), guest memory (no slot points at it any
   * more), then /dev/kvm if the machine opened it. Idempotent.
   *
   * Deleting the memslots one by one before the VM costs the kernel an SRCU grace period each:
   * measured 1 to 36 ms for the five slots of a PC, against nothing when they go with the VM.
   *
   * @throws {Error} the first failure once everything was tried (an AggregateError for several).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const memory = this.#memory;
    const notifiers = { close: () => this.#notifiers?.close(false) }; // the VM dropped them already
    closeAll([
      // Nothing may write guest memory once it is unmapped: the disks' transfers end first, while
      // the VM can still take their completion interrupts.
      { close: () => this.#drainDisks() },
      ...this.#diskSources.map((source) => ({ close: () => source[Symbol.dispose]() })), // transfers synchronous again
      { close: () => this.#timer?.close() }, // no signal to a thread that no longer runs a vCPU
      { close: () => this.#timers[Symbol.dispose]() }, // nor from the VM thread's timers
      { close: () => this.#coalesced?.[Symbol.dispose]() }, // before the vCPUs' mappings go
      this.#vm,
      this.board,
      notifiers,
      this.#runner,
      memory.ram,
      memory.bios,
      memory.rom,
      ...(this.#kvm ? [this.#kvm] : []),
    ]);
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The key of a restored machine's self-announcement among the named ones. */
const RESTORE_ANNOUNCE = Symbol("restore");

/** Number of IOAPIC pins (KVM's in-kernel IOAPIC). */
const IOAPIC_PINS = 24;

/**
 * QEMU's GSI routing for a PC with the in-kernel irqchip (`kvm_pc_setup_irq_routing`): ISA IRQs
 * 0–15 to the two 8259s (except the cascade, 2), and every GSI to the IOAPIC pin of the same number
 * except GSI 0, the PIT, which goes to pin 2 — as the MP table says.
 */
export function pcGsiRoutes(): { gsi: number; irqchip: number; pin: number }[] {
  const routes: { gsi: number; irqchip: number; pin: number }[] = [];
  for (let gsi = 0; gsi < 8; gsi++) {
    if (gsi !== 2) routes.push({ gsi, irqchip: KVM_IRQCHIP_PIC_MASTER, pin: gsi });
  }
  for (let gsi = 8; gsi < 16; gsi++) routes.push({ gsi, irqchip: KVM_IRQCHIP_PIC_SLAVE, pin: gsi - 8 });
  for (let gsi = 0; gsi < IOAPIC_PINS; gsi++) {
    if (gsi === 0) routes.push({ gsi, irqchip: KVM_IRQCHIP_IOAPIC, pin: 2 });
    else if (gsi !== 2) routes.push({ gsi, irqchip: KVM_IRQCHIP_IOAPIC, pin: gsi });
  }
  return routes;
}

/** A network card's receive filter, as {@link PcMachine.rxFilters} gives it. */
export interface NicRxFilter {
  /** QEMU's net client name of the card. */
  readonly name: string;
  /** Its `-device id=`, if any. */
  readonly id?: string;
  /** QEMU's QOM path of its virtio device (`/machine/peripheral/ID/virtio-backend`). */
  readonly path: string;
  /** The filter (read it with `describe()`). */
  readonly filter: VirtioNetRxFilter;
  /** Whether the driver negotiated CTRL_VLAN (without it every VLAN passes). */
  readonly vlanFiltering: boolean;
}
