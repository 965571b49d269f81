/**
 * The i440fx PC as a running machine: KVM VM with in-kernel irqchip and PIT, guest RAM and firmware
 * in mmap'd memory behind the memory API, the KVM memory listener, the legacy devices wired in
 * QEMU's order, a loaded guest, and one vCPU.
 *
 * @module
 */

import type { PortDevice, Uart16550 } from "../../devices/mod.ts";
import {
  GuestMemory,
  Kvm,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
  KVM_IRQCHIP_PIC_SLAVE,
  KvmMemoryListener,
  type MemslotCall,
  type Vcpu,
  type Vm,
} from "../../kvm/mod.ts";
import { AddressSpace, formatMtree, type MtreeOptions } from "../../memory/mod.ts";
import { formatRegisters, regsFor, sregsFor } from "../cpu_state.ts";
import { bootFpu, bootMsrs, lapicWithLints, linuxCpuid } from "../x86_cpu.ts";
import {
  type BootPlan,
  E820_RAM,
  E820_RESERVED,
  type E820Entry,
  firmwareEntry,
  loadKernel,
} from "../loader/mod.ts";
import { FIRMWARE } from "../guests/firmware.ts";
import { type RunnerHooks, type RunOutcome, VcpuRunner } from "../vcpu_runner.ts";
import { type Doorbell, SmpRunner } from "../smp_runner.ts";
import {
  BIOS_END,
  HIGHMEM_START,
  KVM_IDENTITY_MAP_START,
  KVM_RESERVED_SIZE,
  KVM_TSS_START,
  PC_ROM_SIZE,
} from "./layout.ts";
import { buildMpTable, MP_TABLE_MAX_CPUS } from "./mptable.ts";
import { buildPcDevices } from "./pc_devices.ts";
import { buildPcMemory, type PcMemory, splitRam } from "./pc_memory.ts";

/** End of conventional memory as the e820 map reports it (the EBDA follows). */
const CONVENTIONAL_END = 0x9_fc00n;
/** The BIOS area below 1 MiB that the e820 map reserves. */
const BIOS_AREA_START = 0xf_0000n;
const BIOS_AREA_END = 0x10_0000n;
/**
 * The most vCPUs the board offers: as many as an MP table can describe with 8-bit xAPIC ids (254).
 * KVM itself may refuse fewer (KVM_CAP_MAX_VCPUS); that is reported when the vCPU is created.
 */
export const MAX_CPUS: number = MP_TABLE_MAX_CPUS;

/** Options of {@link PcMachine.create}. */
export interface PcMachineOptions {
  /** Guest RAM in bytes. */
  ramSize: bigint;
  /** The `pc.bios` image (default: the project's firmware, 256 KiB). */
  firmware?: Uint8Array;
  /**
   * A kernel to load as QEMU's `-kernel` does: Linux (bzImage or ELF vmlinux) or Multiboot, with its
   * command line and, for Linux, an initial ramdisk.
   */
  kernel?: { image: Uint8Array; cmdline?: string; initrd?: Uint8Array };
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
}

/**
 * A PC with one vCPU, ready to run.
 *
 * @example
 * ```ts ignore
 * using pc = PcMachine.create({ ramSize: 128n << 20n, serial: (b) => out.push(b) });
 * const outcome = pc.run();
 * ```
 */
export class PcMachine implements Disposable {
  /** The "memory" address space. */
  readonly memory: AddressSpace;
  /** The CPU's view of memory (shares the FlatView of "memory", as in QEMU). */
  readonly cpuMemory: AddressSpace;
  /** The "I/O" address space. */
  readonly io: AddressSpace;
  /** The regions of the memory map. */
  readonly map: PcMemory;
  /** COM1. */
  readonly uart: Uart16550;
  /** The e820 map the board reports. */
  readonly e820: readonly E820Entry[];
  /** What was loaded and where the CPU starts. */
  readonly boot: BootPlan;
  /** The KVM memory listener of "memory". */
  readonly kvmListener: KvmMemoryListener;
  readonly #kvm: Kvm;
  readonly #ownsKvm: boolean;
  readonly #vm: Vm;
  readonly #vcpus: readonly Vcpu[];
  readonly #runner: VcpuRunner | SmpRunner;
  readonly #devices: PortDevice[];
  readonly #memories: GuestMemory[];
  readonly #input: (bytes: Uint8Array) => void;
  #closed = false;

  private constructor(parts: {
    kvm: Kvm;
    ownsKvm: boolean;
    vm: Vm;
    vcpus: Vcpu[];
    memory: AddressSpace;
    cpuMemory: AddressSpace;
    io: AddressSpace;
    map: PcMemory;
    uart: Uart16550;
    devices: PortDevice[];
    memories: GuestMemory[];
    e820: E820Entry[];
    boot: BootPlan;
    kvmListener: KvmMemoryListener;
    runner: VcpuRunner | SmpRunner;
    input: (bytes: Uint8Array) => void;
  }) {
    this.#kvm = parts.kvm;
    this.#ownsKvm = parts.ownsKvm;
    this.#vm = parts.vm;
    this.#vcpus = parts.vcpus;
    this.memory = parts.memory;
    this.cpuMemory = parts.cpuMemory;
    this.io = parts.io;
    this.map = parts.map;
    this.uart = parts.uart;
    this.#devices = parts.devices;
    this.#memories = parts.memories;
    this.e820 = parts.e820;
    this.boot = parts.boot;
    this.kvmListener = parts.kvmListener;
    this.#runner = parts.runner;
    this.#input = parts.input;
  }

  /**
   * Builds the machine. On any failure everything created so far is released and the error is
   * re-thrown (a KvmError for the kernel, a LoaderError for a bad kernel image, a RangeError for
   * bad sizes).
   */
  static create(options: PcMachineOptions): PcMachine {
    // Check the inputs before acquiring anything: the firmware size, the kernel image.
    const firmware = options.firmware ?? FIRMWARE;
    const firmwarePlan = firmwareEntry(firmware);
    const cpus = options.cpus ?? 1;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
      throw new RangeError(`PC: ${cpus} vCPUs is not between 1 and ${MAX_CPUS}`);
    }
    const split = splitRam(options.ramSize);
    // The Intel MP table, ending at 640 KiB where Linux's smp_scan_config finds it.
    const mpTable = buildMpTable({ cpus });
    const e820 = pcE820(split.below4g, split.above4g, BigInt(firmware.length), mpTable.address);
    const boot = options.boot ?? (options.kernel
      ? loadKernel(options.kernel.image, {
        cmdline: options.kernel.cmdline ?? "",
        ...(options.kernel.initrd === undefined ? {} : { initrd: options.kernel.initrd }),
        e820,
        ramSize: split.below4g,
      })
      : firmwarePlan);
    const cleanup: Disposable[] = [];
    const ownsKvm = !options.kvm;
    try {
      const kvm = options.kvm ?? Kvm.open();
      if (ownsKvm) cleanup.push(kvm);
      const vm = kvm.createVm();
      cleanup.push(vm);
      // QEMU's kvm_arch_init: identity map and TSS just below the firmware, before anything else.
      vm.setIdentityMapAddr(KVM_IDENTITY_MAP_START);
      vm.setTssAddr(KVM_TSS_START);
      vm.createIrqchip();
      vm.setGsiRouting(pcGsiRoutes());
      vm.createPit2();

      const ram = new GuestMemory(options.ramSize);
      cleanup.push(ram);
      const bios = new GuestMemory(BigInt(firmware.length));
      cleanup.push(bios);
      bios.bytes.set(firmware);
      const rom = new GuestMemory(PC_ROM_SIZE);
      cleanup.push(rom);

      const map = buildPcMemory({
        ramSize: options.ramSize,
        ramBacking: ram,
        biosSize: BigInt(firmware.length),
        biosBacking: bios,
        romBacking: rom,
      });
      // The whole board first, then the address spaces: each renders once, and the listener's
      // replay maps the memslots in one pass (no re-render per device while the board is built).
      let runner: VcpuRunner | SmpRunner | undefined = undefined; // set below; the devices reach it lazily
      // Typed input waits here until COM1 has room, as QEMU's character backends wait for
      // can_receive: with the FIFO off the UART holds one byte, and more would overrun it.
      const pendingInput: number[] = [];
      const pumpInput = () => {
        const n = Math.min(uart.canReceive(), pendingInput.length);
        if (n > 0) uart.receive(pendingInput.splice(0, n));
      };
      const { all: devices, uart } = buildPcDevices(map, {
        irq: (line) => ({ set: (level) => vm.irqLine(line, level) }),
        onReset: () => runner?.stop({ kind: "reset" }),
        onExit: (status) => runner?.stop({ kind: "exit", status }),
        serial: options.serial,
        onSerialReady: () => pumpInput(),
        ramSize: options.ramSize,
        cpus,
        split,
      });

      const memory = new AddressSpace(map.system, "memory");
      cleanup.push(memory);
      const cpuMemory = new AddressSpace(map.system, "cpu-memory-0");
      cleanup.push(cpuMemory);
      const io = new AddressSpace(map.io, "I/O");
      cleanup.push(io);
      const kvmListener = KvmMemoryListener.forVm(vm, { trace: options.traceMemslots });
      memory.registerListener(kvmListener);

      const supported = kvm.supportedCpuid();
      const vcpus: Vcpu[] = [];
      for (let id = 0; id < cpus; id++) {
        const vcpu = vm.createVcpu(id); // closed with the VM
        // What a VMM sets up before Linux runs (Firecracker's list): CPUID with this CPU's APIC id and
        // the topology, the boot MSRs, the FPU, LINT0 = ExtINT and LINT1 = NMI on the LAPIC.
        vcpu.setCpuid2(linuxCpuid(supported, { apicId: id, cpuCount: cpus }));
        vcpu.setMsrs(bootMsrs());
        vcpu.setFpu(bootFpu());
        vcpu.setLapic(lapicWithLints(vcpu.getLapic()));
        vcpus.push(vcpu);
      }
      // One vCPU runs on this thread (the fastest exit path); more get a thread each.
      runner = cpus === 1 ? new VcpuRunner(vcpus[0], { memory, io }) : new SmpRunner(vcpus, { memory, io });

      for (const { addr, data } of boot.writes) memory.writeRom(addr, data);
      memory.writeRom(mpTable.address, mpTable.bytes);

      // The bootstrap processor enters the guest; the others wait for INIT/SIPI in the kernel.
      const bsp = vcpus[0];
      bsp.setSregs(sregsFor(bsp.getSregs(), boot.cpu));
      bsp.setRegs(regsFor(bsp.getRegs(), boot.cpu));

      return new PcMachine({
        kvm,
        ownsKvm,
        vm,
        vcpus,
        memory,
        cpuMemory,
        io,
        map,
        uart,
        devices,
        memories: [ram, bios, rom],
        e820,
        boot,
        kvmListener,
        runner,
        input: (bytes) => {
          for (const byte of bytes) pendingInput.push(byte);
          pumpInput();
        },
      });
    } catch (error) {
      for (const item of cleanup.reverse()) {
        try {
          item[Symbol.dispose]();
        } catch {
          // the original error is the one to report
        }
      }
      throw error;
    }
  }

  /** I/O and MMIO exits served so far. */
  get exits(): number {
    return this.#runner.exits;
  }

  /** Number of vCPUs. */
  get cpus(): number {
    return this.#vcpus.length;
  }

  /**
   * Runs a one-vCPU machine on this thread until the guest exits, resets, fails or {@link stop} is
   * called. (A machine with more vCPUs runs with {@link runAsync}.)
   */
  run(hooks: RunnerHooks = {}): RunOutcome {
    this.#checkOpen();
    const runner = this.#runner;
    if (runner instanceof SmpRunner) {
      throw new TypeError("PcMachine.run: with more than one vCPU, use runAsync");
    }
    return runner.run(hooks);
  }

  /**
   * Runs any machine until an outcome: one vCPU on this thread, or one thread per vCPU with this
   * thread serving their I/O (its `hooks.onKick` runs whenever the {@link doorbell} rings).
   */
  async runAsync(hooks: RunnerHooks = {}): Promise<RunOutcome> {
    this.#checkOpen();
    const runner = this.#runner;
    return runner instanceof SmpRunner ? await runner.run(hooks) : runner.run(hooks);
  }

  /** Where another thread rings to wake this thread during a multi-vCPU run (null with one vCPU). */
  get doorbell(): Doorbell | null {
    return this.#runner instanceof SmpRunner ? this.#runner.doorbell : null;
  }

  /** Ends the current run after the exit being handled (for example on a monitor `quit`). */
  stop(outcome: RunOutcome): void {
    this.#runner.stop(outcome);
  }

  /**
   * A system reset for `-reboot`: devices back to their reset state, the boot plan's bytes written
   * again, the CPU at the plan's entry. RAM keeps its contents, as on a real warm reset.
   */
  reset(): void {
    this.#checkOpen();
    for (const device of this.#devices) device.reset();
    for (const { addr, data } of this.boot.writes) this.memory.writeRom(addr, data);
    const bsp = this.#vcpus[0];
    bsp.setSregs(sregsFor(bsp.getSregs(), this.boot.cpu));
    bsp.setRegs(regsFor(bsp.getRegs(), this.boot.cpu));
  }

  /** Bytes typed on the console, for COM1: queued, and fed as fast as the guest reads them. */
  input(bytes: Uint8Array): void {
    this.#input(bytes);
  }

  /** `info mtree` of this machine's address spaces. */
  mtree(options: MtreeOptions = {}): string {
    return formatMtree([this.memory, this.cpuMemory, this.io], options);
  }

  /**
   * `info registers` of vCPU `cpu` (default 0), or of every vCPU with `"all"` (QEMU's `-a`). With
   * several vCPUs running on their threads, they are held out of KVM_RUN while their registers are
   * read.
   */
  registers(cpu: number | "all" = 0): string {
    const read = () =>
      (cpu === "all" ? this.#vcpus : [this.#vcpus[cpu] ?? this.#vcpus[0]])
        .map((v) =>
          `${this.#vcpus.length > 1 ? `CPU#${v.id}\n` : ""}${formatRegisters(v.getRegs(), v.getSregs())}`
        )
        .join("\n");
    const runner = this.#runner;
    return runner instanceof SmpRunner ? runner.withVcpusPaused(read) : read();
  }

  /** The bootstrap vCPU, for kickers and tools. */
  get vcpu(): Vcpu {
    return this.#vcpus[0];
  }

  #checkOpen(): void {
    if (this.#closed) throw new TypeError("PcMachine: the machine is closed");
  }

  /**
   * Releases everything: listeners first (their memslots go while the VM exists), then the VM and
   * its vCPU, then guest memory (only once no slot points at it), then /dev/kvm. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.io.close();
    this.cpuMemory.close();
    this.memory.close();
    this.#vm.close();
    for (const m of this.#memories) m.close();
    if (this.#ownsKvm) this.#kvm.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The board's e820 map: conventional memory up to the EBDA, the BIOS area, RAM above 1 MiB, KVM's
 * identity map and TSS, the firmware, and RAM above 4 GiB. (QEMU passes only the RAM and KVM
 * entries through fw_cfg and lets SeaBIOS carve the rest; for `-kernel` we are the firmware.)
 */
export function pcE820(
  below4g: bigint,
  above4g: bigint,
  firmwareSize: bigint,
  mpTableStart: bigint = CONVENTIONAL_END,
): E820Entry[] {
  // Conventional memory ends at 639 KiB, or lower where a large MP table needs the room (KiB aligned).
  const conventionalEnd = mpTableStart < CONVENTIONAL_END ? mpTableStart & ~0x3ffn : CONVENTIONAL_END;
  const entries: E820Entry[] = [
    { addr: 0n, size: below4g < conventionalEnd ? below4g : conventionalEnd, type: E820_RAM },
    { addr: conventionalEnd, size: 0xa_0000n - conventionalEnd, type: E820_RESERVED },
    { addr: BIOS_AREA_START, size: BIOS_AREA_END - BIOS_AREA_START, type: E820_RESERVED },
  ];
  if (below4g > BIOS_AREA_END) {
    entries.push({ addr: BIOS_AREA_END, size: below4g - BIOS_AREA_END, type: E820_RAM });
  }
  entries.push({ addr: KVM_IDENTITY_MAP_START, size: KVM_RESERVED_SIZE, type: E820_RESERVED });
  entries.push({ addr: BIOS_END - firmwareSize, size: firmwareSize, type: E820_RESERVED });
  if (above4g > 0n) entries.push({ addr: HIGHMEM_START, size: above4g, type: E820_RAM });
  return entries;
}

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
