/**
 * The modern (virtio 1.x only) PCI transport, laid out as QEMU 7.2 lays out
 * `-device virtio-<x>-pci,disable-legacy=on` (`hw/virtio/virtio-pci.c`; see
 * `tests/golden/qemu/virtio-modern-*.txt`):
 *
 * - identity: vendor 0x1af4, device 0x1040 + device ID, revision 1, subsystem 0x1af4:0x1100, the
 *   model's class code, interrupt pin A;
 * - BAR 4: 64-bit prefetchable memory "virtio-pci" of 0x4000 bytes with
 *   "virtio-pci-common-<name>" (0x0), "virtio-pci-isr-<name>" (0x1000),
 *   "virtio-pci-device-<name>" (0x2000) and "virtio-pci-notify-<name>" (0x3000, 4 bytes a queue);
 * - BAR 1: MSI-X, "<type>-msix" of 0x1000 with "msix-table" at 0 and "msix-pba" at 0x800, one vector
 *   per queue plus one for configuration changes by default;
 * - capabilities: vendor-specific virtio structures at 0x40 (common), 0x50 (ISR), 0x60 (device),
 *   0x70 (notify), 0x84 (PCI configuration access), then MSI-X at 0x98, which heads the list.
 *
 * QEMU's default for the pc machine is a transitional device (IDs 0x1000 + n, an I/O BAR 0 with the
 * legacy registers); the issue asks for virtio 1.x only, so there is no legacy interface here.
 *
 * @module
 */

import { MemoryRegion } from "../../memory/mod.ts";
import type { IrqLine } from "../irq_line.ts";
import { Msix, type MsixVectorState } from "../msix.ts";
import { PciBarType, type PciBusSpaces, PciCommand, PciFunction } from "../pci_function.ts";
import type { GuestMemory } from "./guest_memory.ts";
import { VirtioDevice, type VirtioDeviceModel, VirtioStatus } from "./virtio_device.ts";
import { VIRTIO_NO_VECTOR } from "./virtqueue.ts";
import { type StateObject, StateReader } from "../device_state.ts";

/** Red Hat / Qumranet, the virtio vendor. */
export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
/** Modern device IDs are this plus the virtio device ID. */
export const VIRTIO_PCI_MODERN_DEVICE_ID_BASE = 0x1040;
/** Revision of a modern-only device. */
export const VIRTIO_PCI_MODERN_REVISION = 1;
/** The BAR of the virtio structures. */
export const VIRTIO_PCI_MODERN_BAR = 4;
/** The BAR of MSI-X. */
export const VIRTIO_PCI_MSIX_BAR = 1;
/** Size of the virtio structures' BAR. */
export const VIRTIO_PCI_MODERN_BAR_SIZE = 0x4000;
/** Size of each virtio structure's region. */
export const VIRTIO_PCI_REGION_SIZE = 0x1000;
/** Notify region: bytes between the notify addresses of consecutive queues. */
export const VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER = 4;
/** Capability ID of the virtio structures (vendor-specific). */
export const PCI_CAP_ID_VNDR = 0x09;

/** `cfg_type` of the virtio capabilities. */
export const VirtioPciCapType = {
  /** Common configuration. */
  COMMON: 1,
  /** Notifications. */
  NOTIFY: 2,
  /** ISR status. */
  ISR: 3,
  /** Device-specific configuration. */
  DEVICE: 4,
  /** PCI configuration access. */
  PCI: 5,
} as const;

/** Offsets in the common configuration structure (virtio 1.2 section 4.1.4.3). */
export const VirtioPciCommon = {
  DEVICE_FEATURE_SELECT: 0x00,
  DEVICE_FEATURE: 0x04,
  DRIVER_FEATURE_SELECT: 0x08,
  DRIVER_FEATURE: 0x0c,
  CONFIG_MSIX_VECTOR: 0x10,
  NUM_QUEUES: 0x12,
  DEVICE_STATUS: 0x14,
  CONFIG_GENERATION: 0x15,
  QUEUE_SELECT: 0x16,
  QUEUE_SIZE: 0x18,
  QUEUE_MSIX_VECTOR: 0x1a,
  QUEUE_ENABLE: 0x1c,
  QUEUE_NOTIFY_OFF: 0x1e,
  QUEUE_DESC_LO: 0x20,
  QUEUE_DESC_HI: 0x24,
  QUEUE_DRIVER_LO: 0x28,
  QUEUE_DRIVER_HI: 0x2c,
  QUEUE_DEVICE_LO: 0x30,
  QUEUE_DEVICE_HI: 0x34,
} as const;

/** Offsets of the four structures in the virtio BAR. */
const COMMON_OFFSET = 0x0000;
const ISR_OFFSET = 0x1000;
const DEVICE_OFFSET = 0x2000;
const NOTIFY_OFFSET = 0x3000;
const VIRTIO_CAP_SIZE = 16;
const NOTIFY_CAP_SIZE = 20;
const PCI_CFG_CAP_SIZE = 20;

/** Options of {@link VirtioPci}. */
export interface VirtioPciOptions {
  /** The device type. */
  model: VirtioDeviceModel;
  /** Guest RAM, for the queues. */
  memory: GuestMemory;
  /** Where the BARs are mapped. */
  bus: PciBusSpaces;
  /** Sends an MSI-X message (a 32-bit write of `data` at `address`). */
  deliverMsi: (address: bigint, data: number) => void;
  /** Told when an MSI-X vector's address, data or mask changes (for irqfd routing). */
  onMsixVectorChange?: (vector: number, state: MsixVectorState) => void;
  /** INTx pin A's line, used while MSI-X is off (default: none). */
  irq?: IrqLine;
  /** Where one line per device error goes. */
  log?: (line: string) => void;
  /** MSI-X vectors (default: queues + 1, QEMU's default for virtio-blk-pci and virtio-rng-pci). */
  vectors?: number;
  /** QEMU's type name, for the MSI-X BAR's name (default `<model name>-pci`). */
  typeName?: string;
}

/**
 * A virtio device behind the modern virtio-pci transport.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryRegion, UNASSIGNED_IO_OPS } from "../../memory/mod.ts";
 * import { VirtioPci } from "./virtio_pci.ts";
 * import { VirtioRng } from "./virtio_rng.ts";
 * const bus = { memory: MemoryRegion.container("pci", 1n << 64n), io: MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS) };
 * const memory = { check: () => false, read: () => false, write: () => false };
 * const rng = new VirtioPci({ model: new VirtioRng({ entropy: (b) => b.fill(4) }), memory, bus, deliverMsi: () => {} });
 * assert.equal(rng.readConfig(0, 4), 0x1044_1af4);
 * rng.writeConfig(0x20, 0xfe00_000c, 4); // BAR 4
 * rng.writeConfig(0x04, 0x0006, 2); // memory decode, bus master
 * assert.equal(rng.notifyAddress(0), 0xfe00_3000n);
 * ```
 */
export class VirtioPci extends PciFunction {
  /** The virtio device state. */
  readonly device: VirtioDevice;
  /** MSI-X. */
  readonly msix: Msix;
  /** BAR 4's region "virtio-pci". */
  readonly modernBar: MemoryRegion;
  /**
   * BAR 4's notify region ("virtio-pci-notify-<name>"): queue n's notify is the 2-byte write at
   * {@link notifyOffset}(n), where the machine may add an ioeventfd (QEMU's
   * `virtio_pci_set_host_notifier_mr` does the same, without data match).
   */
  readonly notifyRegion: MemoryRegion;
  /** Offset of the PCI-configuration-access capability. */
  readonly pciCfgCap: number;
  #deviceFeatureSelect = 0;
  #driverFeatureSelect = 0;
  #queueSelect = 0;

  /**
   * The function with its BARs and capabilities, not yet mapped (the guest programs the BARs).
   *
   * @throws {TypeError} if `deliverMsi` is not a function.
   * @throws {RangeError} if `vectors` is not 1–128.
   */
  constructor(options: VirtioPciOptions) {
    const model = options.model;
    super({
      stateName: options.typeName ?? `${model.name}-pci`,
      vendorId: VIRTIO_PCI_VENDOR_ID,
      deviceId: VIRTIO_PCI_MODERN_DEVICE_ID_BASE + model.deviceId,
      revision: VIRTIO_PCI_MODERN_REVISION,
      classCode: model.pciClassCode,
      bus: options.bus,
      interruptPin: 1,
      irq: options.irq,
    });
    const device = this.device = new VirtioDevice(model, { memory: options.memory, log: options.log });
    device.interrupt = (vector) => this.#interrupt(vector);

    const name = model.name;
    const bar = this.modernBar = MemoryRegion.container("virtio-pci", VIRTIO_PCI_MODERN_BAR_SIZE);
    const ops = (
      read: (o: number, s: number) => number,
      write: (o: number, v: number, s: number) => void,
    ) => ({
      read,
      write: (o: number, v: number | bigint, s: number) => write(o, Number(v), s),
      endianness: "little" as const,
      impl: { min: 1, max: 4 },
    });
    const notify = this.notifyRegion = MemoryRegion.io(
      `virtio-pci-notify-${name}`,
      VIRTIO_PCI_REGION_SIZE,
      ops(() => 0, (o) => this.#notifyWrite(o)),
    );
    const regions: [string, number, number, MemoryRegion][] = [
      [
        "common",
        VirtioPciCapType.COMMON,
        COMMON_OFFSET,
        MemoryRegion.io(
          `virtio-pci-common-${name}`,
          VIRTIO_PCI_REGION_SIZE,
          ops((o) => this.#commonRead(o), (o, v) => this.#commonWrite(o, v)),
        ),
      ],
      [
        "isr",
        VirtioPciCapType.ISR,
        ISR_OFFSET,
        MemoryRegion.io(
          `virtio-pci-isr-${name}`,
          VIRTIO_PCI_REGION_SIZE,
          ops(() => this.#isrRead(), () => {}),
        ),
      ],
      [
        "device",
        VirtioPciCapType.DEVICE,
        DEVICE_OFFSET,
        MemoryRegion.io(
          `virtio-pci-device-${name}`,
          VIRTIO_PCI_REGION_SIZE,
          ops((o, s) => this.#deviceRead(o, s), (o, v, s) => this.#deviceWrite(o, v, s)),
        ),
      ],
      [
        "notify",
        VirtioPciCapType.NOTIFY,
        NOTIFY_OFFSET,
        notify,
      ],
    ];
    const bytes = this.config.bytes;
    const setLong = (at: number, value: number) => {
      this.config.setWord(at, value & 0xffff);
      this.config.setWord(at + 2, value >>> 16);
    };
    for (const [kind, type, offset, region] of regions) {
      bar.addSubregion(offset, region);
      const size = kind === "notify" ? NOTIFY_CAP_SIZE : VIRTIO_CAP_SIZE;
      const cap = this.addCapability(PCI_CAP_ID_VNDR, size);
      bytes[cap + 2] = size; // cap_len
      bytes[cap + 3] = type; // cfg_type
      bytes[cap + 4] = VIRTIO_PCI_MODERN_BAR;
      setLong(cap + 8, offset);
      setLong(cap + 12, VIRTIO_PCI_REGION_SIZE);
      if (kind === "notify") setLong(cap + 16, VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
    }
    this.registerBar(
      VIRTIO_PCI_MODERN_BAR,
      bar,
      PciBarType.MEMORY_64 | PciBarType.PREFETCH,
    );
    // VIRTIO_PCI_CAP_PCI_CFG: a window onto the BAR through configuration space; bar, offset,
    // length and data are writable.
    const cfg = this.pciCfgCap = this.addCapability(PCI_CAP_ID_VNDR, PCI_CFG_CAP_SIZE);
    bytes[cfg + 2] = PCI_CFG_CAP_SIZE;
    bytes[cfg + 3] = VirtioPciCapType.PCI;
    this.config.wmask[cfg + 4] = 0xff;
    this.config.wmask.fill(0xff, cfg + 8, cfg + 20);

    const vectors = options.vectors ?? model.queueSizes.length + 1;
    this.msix = Msix.exclusiveBar(this, {
      name: options.typeName ?? `${name}-pci`,
      vectors,
      barIndex: VIRTIO_PCI_MSIX_BAR,
      deliver: options.deliverMsi,
      onVectorChange: options.onMsixVectorChange,
    });
  }

  /**
   * The guest-physical address a driver writes to notify queue `index` (BAR 4 + 0x3000 + 4 × index),
   * for KVM_IOEVENTFD; `undefined` while BAR 4 is not mapped or there is no such queue.
   */
  notifyAddress(index: number): bigint | undefined {
    const base = this.barAddress(VIRTIO_PCI_MODERN_BAR);
    if (base === undefined || !Number.isInteger(index) || index < 0 || index >= this.device.queues.length) {
      return undefined;
    }
    return base + BigInt(NOTIFY_OFFSET + VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER * index);
  }

  /** Where in {@link notifyRegion} the driver notifies queue `index` (4 × index). */
  notifyOffset(index: number): number {
    return VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER * index;
  }

  /**
   * The function ({@link PciFunction.saveState}: config space with BARs and command, INTx), MSI-X
   * (table, PBA), the common configuration's select registers, and the virtio device with its queues
   * ({@link VirtioDevice.saveState}). Per-queue notify offsets are the queue index, so they need no
   * saving.
   */
  override saveState(): StateObject {
    return {
      ...super.saveState(),
      msix: this.msix.saveState(),
      deviceFeatureSelect: this.#deviceFeatureSelect,
      driverFeatureSelect: this.#driverFeatureSelect,
      queueSelect: this.#queueSelect,
      device: this.device.saveState(),
    };
  }

  /**
   * Puts a {@link saveState} result back: every field is checked first, then the function (BARs
   * mapped where the config says, INTx re-driven), MSI-X (pending vectors that are not masked fire;
   * `onMsixVectorChange` hears every vector that differs), the select registers and the device; queue
   * processing follows the command register's bus-master bit, as after a guest write.
   *
   * @throws {DeviceStateError} naming the field (`device.queues[0].size`, …) if one is missing, of the
   * wrong type or out of range, or saved from another kind of device (the device is then unchanged).
   */
  override loadState(state: StateObject): void {
    const r = new StateReader(this.stateName, state);
    const applyPci = this.preparePciState(r);
    const applyMsix = this.msix.prepareState(r.object("msix"));
    const deviceFeatureSelect = r.u32("deviceFeatureSelect");
    const driverFeatureSelect = r.u32("driverFeatureSelect");
    const queueSelect = r.int("queueSelect", 0, Math.max(0, this.device.queues.length - 1));
    const applyDevice = this.device.prepareState(r.object("device"));
    applyPci();
    applyMsix();
    this.#deviceFeatureSelect = deviceFeatureSelect;
    this.#driverFeatureSelect = driverFeatureSelect;
    this.#queueSelect = queueSelect;
    applyDevice();
    this.device.disabled = (this.command & PciCommand.MASTER) === 0;
  }

  /** A configuration read; the PCI-configuration-access window reads the BAR first. */
  override readConfig(offset: number, size: number): number {
    const data = this.pciCfgCap + 16;
    if (offset < data + 4 && data < offset + size) {
      const length = this.config.read(this.pciCfgCap + 12, 4);
      if (length === 1 || length === 2 || length === 4) {
        const value = this.#windowAccess(length);
        if (value !== undefined) {
          for (let i = 0; i < length; i++) this.config.bytes[data + i] = (value >>> (8 * i)) & 0xff;
        }
      }
    }
    return super.readConfig(offset, size);
  }

  /**
   * A configuration write (QEMU's `virtio_write_config`): the PCI-configuration-access window writes
   * the BAR; turning bus mastering off clears DRIVER_OK and stops queue processing.
   */
  override writeConfig(offset: number, value: number, size: number): void {
    super.writeConfig(offset, value, size);
    const data = this.pciCfgCap + 16;
    if (offset < data + 4 && data < offset + size) {
      const length = this.config.read(this.pciCfgCap + 12, 4);
      if (length === 1 || length === 2 || length === 4) {
        this.#windowAccess(length, this.config.read(data, length));
      }
    }
    if (offset <= 0x04 && 0x04 < offset + size) {
      const master = (this.command & PciCommand.MASTER) !== 0;
      this.device.disabled = !master;
      if (!master) this.device.setStatus(this.device.status & ~VirtioStatus.DRIVER_OK);
    }
  }

  /** PCI reset: the function, MSI-X and the virtio device. */
  override reset(): void {
    super.reset();
    this.#virtioReset();
  }

  /** A read (no `value`) or write of `length` bytes at the window's BAR offset; undefined if it hits nothing. */
  #windowAccess(length: number, value?: number): number | undefined {
    const cap = this.pciCfgCap;
    if (this.config.bytes[cap + 4] !== VIRTIO_PCI_MODERN_BAR) return undefined;
    const offset = this.config.read(cap + 8, 4) & ~(length - 1);
    if (offset + length > VIRTIO_PCI_MODERN_BAR_SIZE) return undefined;
    const inRegion = offset % VIRTIO_PCI_REGION_SIZE;
    const read = value === undefined;
    switch (offset - inRegion) {
      case COMMON_OFFSET:
        return read ? this.#commonRead(inRegion) : void this.#commonWrite(inRegion, value);
      case ISR_OFFSET:
        return read ? this.#isrRead() : undefined;
      case DEVICE_OFFSET:
        return read ? this.#deviceRead(inRegion, length) : void this.#deviceWrite(inRegion, value, length);
      default:
        return read ? 0 : void this.#notifyWrite(inRegion);
    }
  }

  // ------------------------------------------------------------------ interrupts

  /** QEMU's `virtio_pci_notify`: MSI-X when enabled, else INTx follows ISR bit 0. */
  #interrupt(vector: number): void {
    if (this.msix.enabled) {
      if (vector !== VIRTIO_NO_VECTOR) this.msix.notify(vector);
    } else {
      this.setIrq((this.device.isr & 1) !== 0);
    }
  }

  #virtioReset(): void {
    this.device.reset();
    this.setIrq(false);
  }

  // ------------------------------------------------------------------ the four regions

  #isrRead(): number {
    const isr = this.device.takeIsr();
    this.setIrq(false);
    return isr;
  }

  #deviceRead(offset: number, size: number): number {
    const model = this.device.model;
    if (offset + size > model.configSize) return 0xffff_ffff;
    return model.readConfig(offset, size);
  }

  #deviceWrite(offset: number, value: number, size: number): void {
    const model = this.device.model;
    if (offset + size > model.configSize) return;
    model.writeConfig?.(offset, value, size);
  }

  #notifyWrite(offset: number): void {
    const index = Math.floor(offset / VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
    this.device.notifyQueue(index);
  }

  #queue() {
    return this.device.queues[this.#queueSelect];
  }

  /** QEMU's `virtio_pci_common_read`: the access size is ignored, the offset picks the field. */
  #commonRead(offset: number): number {
    const device = this.device;
    const queue = this.#queue();
    const C = VirtioPciCommon;
    switch (offset) {
      case C.DEVICE_FEATURE_SELECT:
        return this.#deviceFeatureSelect;
      case C.DEVICE_FEATURE:
        return this.#deviceFeatureSelect > 1 ? 0 : half(device.hostFeatures, this.#deviceFeatureSelect);
      case C.DRIVER_FEATURE_SELECT:
        return this.#driverFeatureSelect;
      case C.DRIVER_FEATURE:
        return this.#driverFeatureSelect > 1 ? 0 : half(device.driverFeatures, this.#driverFeatureSelect);
      case C.CONFIG_MSIX_VECTOR:
        return device.configVector;
      case C.NUM_QUEUES:
        return device.queues.length;
      case C.DEVICE_STATUS:
        return device.status;
      case C.CONFIG_GENERATION:
        return device.configGeneration;
      case C.QUEUE_SELECT:
        return this.#queueSelect;
      case C.QUEUE_SIZE:
        return queue ? queue.size : 0;
      case C.QUEUE_MSIX_VECTOR:
        return queue ? queue.msixVector : VIRTIO_NO_VECTOR;
      case C.QUEUE_ENABLE:
        return queue?.enabled ? 1 : 0;
      case C.QUEUE_NOTIFY_OFF:
        return this.#queueSelect;
      case C.QUEUE_DESC_LO:
      case C.QUEUE_DESC_HI:
        return queue ? half(queue.descAddr, (offset - C.QUEUE_DESC_LO) / 4) : 0;
      case C.QUEUE_DRIVER_LO:
      case C.QUEUE_DRIVER_HI:
        return queue ? half(queue.driverAddr, (offset - C.QUEUE_DRIVER_LO) / 4) : 0;
      case C.QUEUE_DEVICE_LO:
      case C.QUEUE_DEVICE_HI:
        return queue ? half(queue.deviceAddr, (offset - C.QUEUE_DEVICE_LO) / 4) : 0;
      default:
        return 0;
    }
  }

  /** QEMU's `virtio_pci_common_write`. Queue fields are read-only while the queue is enabled. */
  #commonWrite(offset: number, value: number): void {
    const device = this.device;
    const queue = this.#queue();
    const C = VirtioPciCommon;
    const vector = (v: number) => (v & 0xffff) < this.msix.vectors ? v & 0xffff : VIRTIO_NO_VECTOR;
    const settable = queue !== undefined && !queue.enabled;
    const q = queue as NonNullable<typeof queue>; // used only when settable
    switch (offset) {
      case C.DEVICE_FEATURE_SELECT:
        this.#deviceFeatureSelect = value >>> 0;
        break;
      case C.DRIVER_FEATURE_SELECT:
        this.#driverFeatureSelect = value >>> 0;
        break;
      case C.DRIVER_FEATURE:
        if (this.#driverFeatureSelect <= 1) {
          device.setDriverFeatures(withHalf(device.driverFeatures, this.#driverFeatureSelect, value));
        }
        break;
      case C.CONFIG_MSIX_VECTOR:
        device.configVector = vector(value);
        break;
      case C.DEVICE_STATUS:
        if ((value & 0xff) === 0) this.#virtioReset();
        else device.setStatus(value);
        break;
      case C.QUEUE_SELECT:
        if ((value & 0xffff) < device.queues.length) this.#queueSelect = value & 0xffff;
        break;
      case C.QUEUE_SIZE: {
        const size = value & 0xffff;
        if (settable && size > 0 && size <= q.maxSize && (size & (size - 1)) === 0) q.size = size;
        break;
      }
      case C.QUEUE_MSIX_VECTOR:
        if (queue) queue.msixVector = vector(value);
        break;
      case C.QUEUE_ENABLE:
        if ((value & 0xffff) === 1) {
          if (settable) device.enableQueue(this.#queueSelect);
        } else {
          device.needsReset(`wrong value for queue_enable: ${value & 0xffff}`);
        }
        break;
      case C.QUEUE_DESC_LO:
      case C.QUEUE_DESC_HI:
        if (settable) q.descAddr = withHalf(q.descAddr, (offset - C.QUEUE_DESC_LO) / 4, value);
        break;
      case C.QUEUE_DRIVER_LO:
      case C.QUEUE_DRIVER_HI:
        if (settable) q.driverAddr = withHalf(q.driverAddr, (offset - C.QUEUE_DRIVER_LO) / 4, value);
        break;
      case C.QUEUE_DEVICE_LO:
      case C.QUEUE_DEVICE_HI:
        if (settable) q.deviceAddr = withHalf(q.deviceAddr, (offset - C.QUEUE_DEVICE_LO) / 4, value);
        break;
      default:
        break;
    }
  }
}

/** The low (0) or high (1) 32 bits of a 64-bit value. */
function half(value: bigint, which: number): number {
  return Number((value >> BigInt(32 * which)) & 0xffff_ffffn);
}

/** `value` with its low (0) or high (1) 32 bits replaced. */
function withHalf(value: bigint, which: number, bits: number): bigint {
  const shift = BigInt(32 * which);
  return (value & ~(0xffff_ffffn << shift)) | (BigInt(bits >>> 0) << shift);
}
