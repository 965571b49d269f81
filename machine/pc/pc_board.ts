/**
 * The i440fx PC as a board, without KVM: the memory map, the firmware in `pc.bios`, the legacy
 * devices, the firmware tables, the e820 map and the address spaces. `PcMachine` attaches KVM to
 * one; `--dump-mtree` and the golden tests print one as it is. Nothing here opens a device.
 *
 * The board is built as an ordered list of steps in {@link PcBoard.create}; a new device goes into
 * `buildPcDevices`' list, a new firmware table into {@link pcFirmwareTables}.
 *
 * @module
 */

import type { DeviceTimers } from "../../devices/device_timers.ts";
import type { AcpiPm, IrqLine, PciHost, PortDevice, Uart16550 } from "../../devices/mod.ts";
import { AddressSpace, formatMtree, type MtreeOptions, type RamBacking } from "../../memory/mod.ts";
import { ACPI_PLACEMENT_LOWEST, placeAcpiTables } from "../acpi/mod.ts";
import { nonZeroSpans } from "../guests/_image.ts";
import { FIRMWARE } from "../guests/firmware.ts";
import { E820_RAM, E820_RESERVED, type E820Entry } from "../loader/boot_plan.ts";
import type { RunOutcome } from "../runner.ts";
import { BIOS_END, HIGHMEM_START, KVM_IDENTITY_MAP_START, KVM_RESERVED_SIZE } from "./layout.ts";
import { buildMpTable, MP_TABLE_MAX_CPUS } from "./mptable.ts";
import { buildPcDevices } from "./pc_devices.ts";
import type { PcIrqchipMode, PcSplitIrqchip, PcSplitIrqchipWiring } from "./pc_split_irqchip.ts";
import { buildPcMemory, type PcMemory, type RamSplit, splitRam } from "./pc_memory.ts";
import {
  assignPciBars,
  formatInfoPci,
  PC_PCI_FIRST_FREE_SLOT,
  PC_PCI_HOLE_END,
  pciIntxIrq,
  type PcPciDevice,
  type PcPciDeviceSpec,
  SharedIrqLines,
} from "./pc_pci.ts";

/** End of conventional memory as the e820 map reports it (the EBDA follows). */
const CONVENTIONAL_END = 0x9_fc00n;
/** The BIOS area below 1 MiB that the e820 map reserves. */
const BIOS_AREA_START = 0xf_0000n;
const BIOS_AREA_END = 0x10_0000n;

/**
 * The most vCPUs the board describes: the ACPI MADT lists each (x2APIC entries from APIC id 255 on),
 * and 4096 is the most any x86 KVM has allowed (`KVM_MAX_VCPUS`); the MP table lists the first
 * {@link MP_TABLE_MAX_CPUS}. A host's KVM says its own limit (`KVM_CAP_MAX_VCPUS`, 1024 on Linux
 * 6.1), which the machine checks before it creates the VM.
 */
export const MAX_CPUS = 4096;

/** A table the firmware would build, placed in guest memory before the guest starts. */
export interface FirmwareTable {
  /** What it is, for messages (`"MP table"`). */
  readonly name: string;
  /** Guest-physical address of its first byte. */
  readonly address: bigint;
  /** Its bytes. */
  readonly bytes: Uint8Array;
}

/** Options of {@link PcBoard.create}. */
export interface PcBoardOptions {
  /** Guest RAM in bytes. */
  ramSize: bigint;
  /** The `pc.bios` image (default: the project's firmware, 256 KiB). */
  firmware?: Uint8Array;
  /** Number of vCPUs the board describes (CMOS, MP table); default 1. */
  cpus?: number;
  /**
   * Memory behind `pc.ram`, `pc.bios` and `pc.rom` (default: sparse memory of the memory API), zero
   * when given: only the firmware's non-zero bytes are written into `bios`.
   */
  backings?: { ram?: RamBacking; bios?: RamBacking; rom?: RamBacking };
  /**
   * The `bios` backing holds `firmware` already (a restore maps it from the snapshot's memory
   * file), so it is not written again: no copy, and no page of the mapping made private.
   */
  firmwareLoaded?: boolean;
  /** The interrupt line for ISA IRQ `n` (default: lines that go nowhere). */
  irq?: (n: number) => IrqLine;
  /** Every byte the guest sends through COM1. */
  serial?: (byte: number) => void;
  /** PCI devices, in QEMU's creation order: each takes the next free slot from 2. */
  pciDevices?: readonly PcPciDeviceSpec[];
  /** Sends an MSI message for the PCI devices (default: dropped; KVM_SIGNAL_MSI on a machine). */
  deliverMsi?: (address: bigint, data: number) => void;
  /**
   * Whose interrupt controllers: the kernel's (`"kernel"`, the default: `irq` reaches them) or, for
   * `"split"`, the board's own PIC, PIT and IOAPIC ({@link PcSplitIrqchip}), which deliver through
   * `deliverMsi` and `splitIrqchip`.
   */
  irqchip?: PcIrqchipMode;
  /** A split irqchip's KVM side: its GSI routes and the PIT's host timer. */
  splitIrqchip?: Omit<PcSplitIrqchipWiring, "deliverMsi">;
  /** The machine's timers, for devices that wait (a network card's announcement rounds). */
  timers?: DeviceTimers;
  /** A full memory barrier between the devices' guest-memory accesses (vCPUs write the rings). */
  fence?: () => void;
  /** Where a device's error line goes (default: dropped). */
  log?: (line: string) => void;
}

/** An interrupt line that goes nowhere, for a board without an interrupt controller. */
const UNCONNECTED_IRQ: IrqLine = { set: () => {} };

/**
 * A PC board: regions, devices and address spaces, with no KVM. Its devices end a run through
 * {@link PcBoard.onStop}, which a machine points at its runner.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PcBoard } from "./pc_board.ts";
 * using board = await PcBoard.create({ ramSize: 256n << 20n });
 * assert.match(board.mtree({ flat: true }), /00000000fffc0000-00000000ffffffff \(prio 0, rom\): pc\.bios/);
 * assert.equal(board.memory.read(0xffff_fff0, 1).value, BigInt(board.firmware[0x3_fff0])); // the reset vector
 * ```
 */
export class PcBoard implements Disposable {
  /** The regions of the memory map. */
  readonly map: PcMemory;
  /** The RAM split around the PCI hole. */
  readonly split: RamSplit;
  /** Number of vCPUs the board describes. */
  readonly cpus: number;
  /** The firmware in `pc.bios`. */
  readonly firmware: Uint8Array;
  /** Every device, in QEMU's creation order. */
  readonly devices: readonly PortDevice[];
  /** COM1. */
  readonly uart: Uart16550;
  /** The ACPI PM registers: the SCI on ISA IRQ 9, S5 powers off. */
  readonly acpiPm: AcpiPm;
  /** PCI configuration mechanism #1 and bus 0. */
  readonly pci: PciHost;
  /** The PCI devices of {@link PcBoardOptions.pciDevices}, with their slots. */
  readonly pciDevices: readonly PcPciDevice[];
  /** The userspace PIC, PIT and IOAPIC of a split irqchip (null: the kernel has them). */
  readonly irqchip: PcSplitIrqchip | null;
  /** Tables placed in guest memory before the guest starts (the MP table, the ACPI tables). */
  get firmwareTables(): readonly FirmwareTable[] {
    return this.#guestTables().firmwareTables;
  }
  /** Where the ACPI RSDP is (for the loaders), or undefined when RAM has no room for the tables. */
  get rsdpAddress(): bigint | undefined {
    return this.#guestTables().rsdpAddress;
  }
  /** The e820 map the board reports. */
  get e820(): readonly E820Entry[] {
    return this.#guestTables().e820;
  }
  /** The "memory" address space. */
  readonly memory: AddressSpace;
  /** The CPU's view of memory (shares the FlatView of "memory", as in QEMU). */
  readonly cpuMemory: AddressSpace;
  /** The "I/O" address space. */
  readonly io: AddressSpace;
  /** Where the devices' reset and debug-exit requests go (a machine points it at its runner). */
  onStop: (outcome: RunOutcome) => void = () => {};
  /**
   * Typed input waits here until COM1 has room, as QEMU's character backends wait for
   * can_receive: with the FIFO off the UART holds one byte, and more would overrun it.
   */
  readonly #pendingInput: number[] = [];
  #closed = false;
  /** What {@link pcGuestTables} is asked for, and its answer once something needed it. */
  readonly #tablesOptions: PcGuestTablesOptions;
  #tables: PcGuestTables | undefined;

  private constructor(parts: {
    map: PcMemory;
    cpus: number;
    firmware: Uint8Array;
    devices: PortDevice[];
    uart: Uart16550;
    acpiPm: AcpiPm;
    pci: PciHost;
    pciDevices: PcPciDevice[];
    irqchip: PcSplitIrqchip | null;
    tables: PcGuestTablesOptions;
  }) {
    this.map = parts.map;
    this.split = parts.map.split;
    this.cpus = parts.cpus;
    this.firmware = parts.firmware;
    this.devices = parts.devices;
    this.uart = parts.uart;
    this.acpiPm = parts.acpiPm;
    this.pci = parts.pci;
    this.pciDevices = parts.pciDevices;
    this.irqchip = parts.irqchip;
    this.#tablesOptions = parts.tables;
    // The whole board first, then the address spaces: each renders once (a KVM listener registered
    // later maps every memslot in one replay).
    this.memory = new AddressSpace(parts.map.system, "memory");
    this.cpuMemory = new AddressSpace(parts.map.system, "cpu-memory-0");
    this.io = new AddressSpace(parts.map.io, "I/O");
  }

  /**
   * Builds the board, step by step in this order: check the inputs; the memory map (QEMU's
   * `pc_memory_init`); the devices (`pc_init1`'s order); the firmware tables; the e820 map; the
   * address spaces; the firmware written into `pc.bios`.
   *
   * @throws {RangeError} for a vCPU count outside 1 to {@link MAX_CPUS}, a RAM size that is not
   *   positive, or a firmware size that is not a nonzero multiple of 64 KiB (nothing is built).
   */
  static async create(options: PcBoardOptions): Promise<PcBoard> {
    const cpus = options.cpus ?? 1;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
      throw new RangeError(`PC: ${cpus} vCPUs is not between 1 and ${MAX_CPUS}`);
    }
    // The virtio models are loaded only for a board with PCI devices to plug (before anything is built).
    const specs = options.pciDevices ?? [];
    const pciModule = specs.length > 0 ? await import("./pc_pci_devices.ts") : undefined;
    const firmware = options.firmware ?? FIRMWARE;
    const biosSize = BigInt(firmware.length);
    // A split irqchip's own IOAPIC replaces the in-kernel one's reservation at 0xfec00000.
    // (Its device models are loaded only for it: a board with the in-kernel irqchip needs none.)
    const irqchip = options.irqchip === "split"
      ? new (await import("./pc_split_irqchip.ts")).PcSplitIrqchip({
        deliverMsi: options.deliverMsi ?? (() => {}),
        ...options.splitIrqchip,
      })
      : null;
    const map = buildPcMemory({
      ramSize: options.ramSize,
      ramBacking: options.backings?.ram,
      biosSize,
      biosBacking: options.backings?.bios,
      romBacking: options.backings?.rom,
      ...(irqchip ? { ioapic: irqchip.ioapic.region } : {}),
    });

    const self: { board?: PcBoard } = {}; // the devices reach the board once it exists
    // A split irqchip's PIC and PIT come first, as QEMU's pc_init1 creates the i8259 before the
    // other ISA devices.
    const irq = irqchip ? (n: number) => irqchip.irq(n) : options.irq ?? (() => UNCONNECTED_IRQ);
    for (const device of irqchip?.portDevices ?? []) device.map(map.io);
    const { all: boardDevices, uart, acpiPm, pci } = buildPcDevices(map, {
      irq,
      onReset: () => self.board?.onStop({ kind: "reset" }),
      onPowerOff: () => self.board?.onStop({ kind: "poweroff" }),
      onExit: (status) => self.board?.onStop({ kind: "exit", status }),
      serial: options.serial,
      onSerialReady: () => self.board?.pumpInput(),
      ramSize: options.ramSize,
      cpus,
      split: map.split,
    });
    const devices = irqchip ? [...irqchip.portDevices, ...boardDevices] : boardDevices;

    // The PCI devices reach guest RAM through the board's "memory" space once it exists.
    const pciDevices = pciModule?.createPcPciDevices(pci, specs, {
      bus: { memory: map.pci, io: map.io },
      intx: new SharedIrqLines(irq),
      memory: new pciModule.AddressSpaceGuestMemory({
        get view() {
          return self.board!.memory.view;
        },
        rw: (addr, data, isWrite) => self.board!.memory.rw(addr, data, isWrite),
        map: (addr, length, isWrite) => self.board!.memory.map(addr, length, isWrite),
      }, options.fence),
      deliverMsi: options.deliverMsi ?? (() => {}),
      log: options.log,
      timers: options.timers,
    }) ?? [];
    // No firmware runs before a -kernel guest: the board assigns the BARs as SeaBIOS would.
    assignPciBars(pci, map.split.below4g);

    // The tables are built when first needed: by a boot, a reset, or the e820 map's reader (a
    // restore needs none of them: they are in the guest's memory already).
    const tables = { ramSize: options.ramSize, firmwareSize: biosSize, cpus, pciDevices: pciDevices.length };
    const board = self.board = new PcBoard(
      { map, cpus, firmware, devices, uart, acpiPm, pci, pciDevices, irqchip, tables },
    );
    if (!options.firmwareLoaded) {
      // The ROM is fresh and zero: of the built-in firmware only its code is written (two pages
      // touched, not 64 — each first touch is a page fault, about 1 ms for all on a kvm_pvm host).
      const base = BIOS_END - biosSize;
      const spans = nonZeroSpans(firmware) ?? [{ offset: 0, length: firmware.length }];
      for (const { offset, length } of spans) {
        board.memory.writeRom(base + BigInt(offset), firmware.subarray(offset, offset + length));
      }
    }
    return board;
  }

  #guestTables(): PcGuestTables {
    return this.#tables ??= pcGuestTables(this.#tablesOptions);
  }

  /** Bytes typed on the console, for COM1: queued, and fed as fast as the guest reads them. */
  input(bytes: Uint8Array): void {
    for (const byte of bytes) this.#pendingInput.push(byte);
    this.pumpInput();
  }

  /** Feeds COM1 as much queued input as it has room for (it calls this when it has room again). */
  pumpInput(): void {
    const n = Math.min(this.uart.canReceive(), this.#pendingInput.length);
    if (n > 0) this.uart.receive(this.#pendingInput.splice(0, n));
  }

  /**
   * The ACPI power button (the monitor's `system_powerdown`): true when the OS listens (it enabled
   * PWRBTN_EN) and the SCI was raised; false when nobody listens, and nothing happens — as in QEMU.
   */
  powerButton(): boolean {
    return this.acpiPm.powerButton();
  }

  /**
   * Every device back to its reset state (a system reset; RAM keeps its contents), then the PCI
   * BARs assigned again, as the firmware would on the way back up.
   */
  resetDevices(): void {
    for (const device of this.devices) device.reset();
    this.irqchip?.ioapic.reset();
    assignPciBars(this.pci, this.split.below4g);
  }

  /** QEMU's `info pci`. */
  infoPci(): string {
    const ids = new Map<number, string>();
    for (const d of this.pciDevices) if (d.spec.id !== undefined) ids.set(d.slot, d.spec.id);
    return formatInfoPci(this.pci, ids);
  }

  /** `info mtree` of the board's address spaces. */
  mtree(options: MtreeOptions = {}): string {
    return formatMtree([this.memory, this.cpuMemory, this.io], options);
  }

  /** Closes the address spaces (their listeners are unregistered first). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeAll([this.io, this.cpuMemory, this.memory]);
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The name of the MP table among {@link PcBoard.firmwareTables}. */
const MP_TABLE_NAME = "MP table";
/** The name of the ACPI tables' block among {@link PcBoard.firmwareTables}. */
export const ACPI_TABLES_NAME = "ACPI tables";

/**
 * The tables the board places in guest memory for the guest to find, in placement order: the
 * Intel MP table, ending at 640 KiB where Linux's `smp_scan_config` finds it (what Linux uses with
 * `acpi=off`). The ACPI tables depend on the memory map and come from {@link pcGuestTables}.
 */
export function pcFirmwareTables(options: { cpus: number; pciDevices?: number }): FirmwareTable[] {
  // INTA# of each PCI device's slot, on the ISA IRQ the PIIX3 routes it to (the DSDT's _PRT says the same).
  const pciIrqs = Array.from({ length: options.pciDevices ?? 0 }, (_, i) => {
    const slot = PC_PCI_FIRST_FREE_SLOT + i;
    return { slot, pin: 1, ioapicPin: pciIntxIrq(slot, 1) };
  });
  // An MP table names processors by 8-bit APIC ids: with more vCPUs it lists the first 254, the
  // MADT all of them (so `acpi=off` brings up those 254).
  const mpTable = buildMpTable({ cpus: Math.min(options.cpus, MP_TABLE_MAX_CPUS), pciIrqs });
  return [{ name: MP_TABLE_NAME, address: mpTable.address, bytes: mpTable.bytes }];
}

/** What the board tells the guest about itself. */
export interface PcGuestTables {
  /** The MP table and, when RAM has room, the ACPI tables. */
  firmwareTables: FirmwareTable[];
  /** The e820 map: the MP table out of conventional memory, the ACPI tables' pages reserved. */
  e820: E820Entry[];
  /** The ACPI RSDP's address, for the zero page (`acpi_rsdp_addr`) or PVH's `rsdp_paddr`. */
  rsdpAddress: bigint | undefined;
}

/** The sizes {@link pcGuestTables} depends on. */
export interface PcGuestTablesOptions {
  /** Guest RAM in bytes. */
  readonly ramSize: bigint;
  /** Size of the firmware in `pc.bios`. */
  readonly firmwareSize: bigint;
  /** Number of vCPUs. */
  readonly cpus: number;
  /** Number of PCI devices (their INTA# lines go into the MP table); default 0. */
  readonly pciDevices?: number;
}

/**
 * What the board tells the guest about itself, from its sizes alone: the firmware tables and the
 * e820 map. Pure, so a kernel can be planned against it before anything is acquired; the loaders
 * see this e820 map, so nothing they place covers the tables.
 *
 * The ACPI tables go at the top of RAM below 4 GiB, in a reserved 128 KiB block (where SeaBIOS puts
 * QEMU's);
 * a board with 2 MiB of RAM or less below 4 GiB has none, and a guest falls back to the MP table.
 *
 * A run asks twice with the same sizes (its boot plan, then its board): the last answer is kept
 * and each call returns a copy of it, which the caller may change freely.
 */
export function pcGuestTables(options: PcGuestTablesOptions): PcGuestTables {
  const { ramSize, firmwareSize, cpus, pciDevices = 0 } = options;
  const last = lastGuestTables;
  const tables = last !== undefined && last.ramSize === ramSize && last.firmwareSize === firmwareSize &&
      last.cpus === cpus && last.pciDevices === pciDevices
    ? last.tables
    : (lastGuestTables = { ramSize, firmwareSize, cpus, pciDevices, tables: buildGuestTables(options) })
      .tables;
  return {
    firmwareTables: tables.firmwareTables.map((t) => ({ ...t, bytes: t.bytes.slice() })),
    e820: tables.e820.map((e) => ({ ...e })),
    rsdpAddress: tables.rsdpAddress,
  };
}

/** The last {@link pcGuestTables} answer and its sizes (never handed out: callers get copies). */
let lastGuestTables:
  | { ramSize: bigint; firmwareSize: bigint; cpus: number; pciDevices: number; tables: PcGuestTables }
  | undefined;

function buildGuestTables(options: PcGuestTablesOptions): PcGuestTables {
  const split = splitRam(options.ramSize);
  const firmwareTables = pcFirmwareTables({ cpus: options.cpus, pciDevices: options.pciDevices });
  const mpTable = firmwareTables.find((t) => t.name === MP_TABLE_NAME)!;
  const e820 = pcE820(split.below4g, split.above4g, options.firmwareSize, mpTable.address);
  if (split.below4g <= ACPI_PLACEMENT_LOWEST + ACPI_TABLES_ROOM) {
    return { firmwareTables, e820, rsdpAddress: undefined };
  }
  // The root bridge's 32-bit window is QEMU's PCI hole: from the end of RAM below 4 GiB to the IOAPIC.
  const acpi = placeAcpiTables(e820, {
    cpus: options.cpus,
    reserve: ACPI_HIGH_RESERVE,
    pciHole: { start: split.below4g, end: PC_PCI_HOLE_END },
  });
  firmwareTables.push({ name: ACPI_TABLES_NAME, address: acpi.tables.address, bytes: acpi.tables.bytes });
  return { firmwareTables, e820: acpi.e820, rsdpAddress: acpi.tables.rsdp.address };
}

/**
 * The block reserved at the top of RAM for the ACPI tables: SeaBIOS's 128 KiB "high" zone, which it
 * reserves for QEMU's tables on the `pc` machine — so Linux finds the same RAM ranges as under QEMU.
 */
const ACPI_HIGH_RESERVE = 0x2_0000n;

/** RAM above 1 MiB a board needs before it gets ACPI tables: their pages and room for a guest. */
const ACPI_TABLES_ROOM = 0x10_0000n;

/**
 * Closes every item in order even when some throw; then throws the first error (or an
 * AggregateError naming them all when several failed).
 *
 * @throws {Error} the first failure, or an AggregateError when more than one close failed.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { closeAll } from "./pc_board.ts";
 * const closed: string[] = [];
 * const item = (name: string, fail = false) => ({
 *   close() {
 *     closed.push(name);
 *     if (fail) throw new Error(`${name} failed`);
 *   },
 * });
 * assert.throws(() => closeAll([item("a"), item("b", true), item("c")]), /b failed/);
 * assert.deepEqual(closed, ["a", "b", "c"]);
 * ```
 */
export function closeAll(items: readonly { close(): void }[]): void {
  const errors: unknown[] = [];
  for (const item of items) {
    try {
      item.close();
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `${errors.length} closes failed`);
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
