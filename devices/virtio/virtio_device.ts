/**
 * The transport-independent part of a virtio 1.x device (virtio 1.2 sections 2 and 3, QEMU 7.2's
 * `VirtIODevice` in `hw/virtio/virtio.c`): device status, feature negotiation, the queues, the ISR
 * bits, the configuration generation, reset, and the device-needs-reset path that a hostile driver
 * triggers instead of an exception.
 *
 * A device type (virtio-rng, virtio-blk) is a {@link VirtioDeviceModel}; a transport (virtio-pci)
 * maps registers onto a {@link VirtioDevice} and turns its interrupts into MSI-X or INTx.
 *
 * @module
 */

import type { GuestMemory } from "./guest_memory.ts";
import { type Snapshottable, type StateObject, StateReader } from "../device_state.ts";
import { VIRTIO_NO_VECTOR, VirtioProtocolError, Virtqueue } from "./virtqueue.ts";

/** Device status bits (virtio 1.2 section 2.1). */
export const VirtioStatus = {
  /** The guest found the device. */
  ACKNOWLEDGE: 0x01,
  /** The guest has a driver for it. */
  DRIVER: 0x02,
  /** The driver is ready. */
  DRIVER_OK: 0x04,
  /** Feature negotiation is complete. */
  FEATURES_OK: 0x08,
  /** The device hit an error and needs a reset. */
  DEVICE_NEEDS_RESET: 0x40,
  /** The driver gave up on the device. */
  FAILED: 0x80,
} as const;

/** Transport feature bits this implementation knows (virtio 1.2 section 6). */
export const VirtioFeature = {
  /** Indirect descriptor tables. */
  INDIRECT_DESC: 1n << 28n,
  /** `used_event` / `avail_event` notification suppression. */
  EVENT_IDX: 1n << 29n,
  /** virtio 1.x (not legacy); required. */
  VERSION_1: 1n << 32n,
} as const;

/** Transport features every device offers: VERSION_1, INDIRECT_DESC and EVENT_IDX. */
export const VIRTIO_TRANSPORT_FEATURES: bigint = VirtioFeature.VERSION_1 | VirtioFeature.INDIRECT_DESC |
  VirtioFeature.EVENT_IDX;

/** ISR bit: a queue has used buffers. */
export const VIRTIO_ISR_QUEUE = 0x1;
/** ISR bit: the configuration changed. */
export const VIRTIO_ISR_CONFIG = 0x2;

/**
 * What a device type provides to the core: identity, features, queue sizes, configuration space
 * and the work done when the driver notifies a queue.
 */
export interface VirtioDeviceModel {
  /** Name as QEMU's `vdev->name` (`"virtio-blk"`), used in region names and log lines. */
  readonly name: string;
  /** Virtio device ID (2 block, 4 entropy). */
  readonly deviceId: number;
  /** 24-bit PCI class code the PCI transport shows. */
  readonly pciClassCode: number;
  /** Device-specific feature bits offered (the core adds {@link VIRTIO_TRANSPORT_FEATURES}). */
  readonly features: bigint;
  /** Largest size of each queue (powers of two). */
  readonly queueSizes: readonly number[];
  /** Bytes of device configuration space. */
  readonly configSize: number;
  /** Reads `size` bytes (1, 2, 4) at `offset` of the configuration space; only called inside it. */
  readConfig(offset: number, size: number): number;
  /** Writes configuration space; only called inside it. Absent: writes are ignored. */
  writeConfig?(offset: number, value: number, size: number): void;
  /**
   * The driver notified `queue`: pop chains, do the work, push them back. May throw
   * {@link VirtioProtocolError} for a malformed request; the core then marks the device
   * DEVICE_NEEDS_RESET. The core raises the interrupt afterwards if anything was pushed.
   */
  handleQueue(queue: Virtqueue, device: VirtioDevice): void;
  /** Device reset: forget device-specific state. */
  reset?(): void;
  /**
   * The features in force changed: the driver set FEATURES_OK with these (QEMU's `set_features`),
   * a reset dropped them (0n, after {@link reset}), or a snapshot's were loaded (0n when it was
   * taken before FEATURES_OK). virtio-net tells its backend what the driver takes to receive here.
   */
  featuresChanged?(features: bigint): void;
  /**
   * The driver set FEATURES_OK with `features` (before {@link featuresChanged}): state that each
   * negotiation starts afresh, which a loaded snapshot brings instead (virtio-net's VLAN filter and
   * the receive offloads in force).
   */
  featuresNegotiated?(features: bigint): void;
  /**
   * A restored machine is about to run: every device's state is loaded and interrupts can be
   * delivered (virtio-net asks its driver to announce the card, as QEMU after an incoming migration).
   */
  restored?(): void;
  /**
   * Called once by the {@link VirtioDevice} constructor with the device this model belongs to, for
   * a model that does work the driver did not ask for (virtio-net delivering a frame from its
   * backend through {@link VirtioDevice.serviceQueue}).
   */
  attach?(device: VirtioDevice): void;
  /**
   * The model's own state for a snapshot (absent: it has none). Models whose configuration is fixed
   * by their options save it anyway, so a restore onto a different disk or MAC is refused.
   */
  saveState?(): StateObject;
  /**
   * Checks a {@link saveState} result read through `r` (throwing a DeviceStateError naming the field)
   * and returns the function that applies it; nothing changes before that function runs.
   */
  prepareState?(r: StateReader): () => void;
}

/** Options of {@link VirtioDevice}. */
export interface VirtioDeviceOptions {
  /** Guest RAM the queues read. */
  memory: GuestMemory;
  /** Where one line per device error goes (default: nowhere). */
  log?: (line: string) => void;
}

/**
 * The state machine of one virtio device, shared by every transport.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { VirtioDevice, VirtioFeature, VirtioStatus } from "./virtio_device.ts";
 * const model = {
 *   name: "virtio-demo", deviceId: 99, pciClassCode: 0xff0000, features: 0n, queueSizes: [8], configSize: 0,
 *   readConfig: () => 0, handleQueue: () => {},
 * };
 * const memory = { check: () => false, read: () => false, write: () => false };
 * const dev = new VirtioDevice(model, { memory });
 * dev.setDriverFeatures(VirtioFeature.VERSION_1);
 * dev.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
 * assert.equal(dev.status & VirtioStatus.FEATURES_OK, VirtioStatus.FEATURES_OK);
 * dev.reset(); // what a transport does when the driver writes status 0
 * assert.equal(dev.driverFeatures, 0n);
 * ```
 */
export class VirtioDevice implements Snapshottable {
  /** The device type. */
  readonly model: VirtioDeviceModel;
  /** The queues. */
  readonly queues: readonly Virtqueue[];
  /** Every feature offered (device-specific plus transport). */
  readonly hostFeatures: bigint;
  /** MSI-X vector for configuration changes, or {@link VIRTIO_NO_VECTOR}. */
  configVector: number = VIRTIO_NO_VECTOR;
  /**
   * Set by the transport: raise the interrupt for `vector` (a queue's or the configuration's); the
   * ISR bits are already set.
   */
  interrupt: (vector: number) => void = () => {};
  /** Whether queue notifications are ignored (PCI bus mastering off, as QEMU's `disabled`). */
  disabled = false;
  readonly #log: (line: string) => void;
  #driverFeatures = 0n;
  #status = 0;
  #isr = 0;
  #generation = 0;
  #broken = false;
  /** The queue whose notification is being handled, or -1 (see {@link serviceQueue}). */
  #handling = -1;

  /**
   * A device of type `model` in its reset state.
   *
   * @throws {RangeError} if a queue size is not a power of two in 1–32768.
   */
  constructor(model: VirtioDeviceModel, options: VirtioDeviceOptions) {
    this.model = model;
    this.hostFeatures = model.features | VIRTIO_TRANSPORT_FEATURES;
    this.queues = model.queueSizes.map((size, i) => new Virtqueue(i, size, options.memory));
    this.#log = options.log ?? (() => {});
    model.attach?.(this);
  }

  /** The device status byte. */
  get status(): number {
    return this.#status;
  }

  /** Features the driver accepted. */
  get driverFeatures(): bigint {
    return this.#driverFeatures;
  }

  /** The pending ISR bits (not cleared by reading this). */
  get isr(): number {
    return this.#isr;
  }

  /** The configuration generation (changes with every configuration change). */
  get configGeneration(): number {
    return this.#generation;
  }

  /** Whether the device stopped after a protocol error (until reset). */
  get broken(): boolean {
    return this.#broken;
  }

  /**
   * The driver wrote its features (QEMU's `virtio_set_features`): bits the device did not offer are
   * dropped. Refused (returns false) once FEATURES_OK is set.
   */
  setDriverFeatures(features: bigint): boolean {
    if (this.#status & VirtioStatus.FEATURES_OK) return false;
    this.#driverFeatures = BigInt.asUintN(64, features) & this.hostFeatures;
    return true;
  }

  /**
   * Sets the status byte (QEMU's `virtio_set_status`). FEATURES_OK is refused (left clear) unless
   * VERSION_1 was accepted: this is a virtio 1.x-only device. DEVICE_NEEDS_RESET stays set until a
   * reset. Writing 0 does not reset here: the transport calls {@link reset} for a driver's 0 (QEMU
   * also clears DRIVER_OK through this path, which must not reset).
   */
  setStatus(value: number): void {
    value &= 0xff;
    if ((value & VirtioStatus.FEATURES_OK) && !(this.#status & VirtioStatus.FEATURES_OK)) {
      if (!(this.#driverFeatures & VirtioFeature.VERSION_1)) {
        this.#log(`${this.model.name}: FEATURES_OK refused: the driver did not accept VIRTIO_F_VERSION_1`);
        value &= ~VirtioStatus.FEATURES_OK;
      }
    }
    const accepted = (value & VirtioStatus.FEATURES_OK) && !(this.#status & VirtioStatus.FEATURES_OK);
    this.#status = value | (this.#status & VirtioStatus.DEVICE_NEEDS_RESET);
    if (accepted) {
      this.model.featuresNegotiated?.(this.#driverFeatures);
      this.model.featuresChanged?.(this.#driverFeatures);
    }
  }

  /** Reads and clears the ISR bits (the transport lowers INTx). */
  takeIsr(): number {
    const isr = this.#isr;
    this.#isr = 0;
    return isr;
  }

  /** The driver enabled queue `index`; a bad ring placement makes the device need a reset. */
  enableQueue(index: number): void {
    const queue = this.queues[index];
    if (!queue || this.#broken) return;
    const f = this.#driverFeatures;
    this.#guard(() =>
      queue.enable({
        indirect: (f & VirtioFeature.INDIRECT_DESC) !== 0n,
        eventIdx: (f & VirtioFeature.EVENT_IDX) !== 0n,
      })
    );
  }

  /**
   * The driver notified queue `index` (a write to the notify region, or an ioeventfd later): the
   * model handles it, then the queue's interrupt is raised if the driver wants one. Never throws.
   */
  notifyQueue(index: number): void {
    const queue = this.queues[index];
    if (!queue || !queue.enabled || this.#broken || this.disabled) return;
    const before = queue.usedIdx;
    const outer = this.#handling;
    this.#handling = index;
    // #guard's work inline: no closure per notify.
    let ok = true;
    try {
      this.model.handleQueue(queue, this);
    } catch (error) {
      ok = false;
      this.#fail(error);
    } finally {
      this.#handling = outer;
    }
    if (ok && queue.usedIdx !== before) this.signalQueue(index);
  }

  /**
   * Runs device work on queue `index` that the backend, not the driver, started (a frame arrived
   * for virtio-net's receive queue): the same protection as {@link notifyQueue} — a protocol error
   * or any exception from `work` makes the device need a reset — and the queue's interrupt if
   * `work` pushed anything and the driver wants one. Inside {@link notifyQueue} of the same queue
   * the interrupt is left to it, so one notification raises at most one interrupt. Never throws.
   *
   * @returns what `work` returned, or `undefined` when the queue is not usable (not enabled, bus
   *   mastering off, the device broken) or `work` broke the protocol.
   */
  serviceQueue<T>(index: number, work: (queue: Virtqueue) => T): T | undefined {
    const queue = this.queues[index];
    if (!queue || !queue.enabled || this.#broken || this.disabled) return undefined;
    const before = queue.usedIdx;
    let result: T | undefined;
    const ok = this.#guard(() => void (result = work(queue)));
    if (ok && queue.usedIdx !== before && this.#handling !== index) this.signalQueue(index);
    return ok ? result : undefined;
  }

  /**
   * Raises queue `index`'s interrupt if the driver wants it now (for devices that complete work
   * later, outside {@link notifyQueue}). Never throws.
   */
  signalQueue(index: number): void {
    const queue = this.queues[index];
    if (!queue || !queue.enabled || this.#broken) return;
    let wanted: boolean;
    try {
      wanted = queue.shouldNotify();
    } catch (error) {
      this.#fail(error);
      return;
    }
    if (!wanted) return;
    this.#isr |= VIRTIO_ISR_QUEUE;
    this.interrupt(queue.msixVector);
  }

  /**
   * The configuration changed (QEMU's `virtio_notify_config`): with DRIVER_OK set, the generation
   * moves and the configuration interrupt is raised.
   */
  configChanged(): void {
    if (!(this.#status & VirtioStatus.DRIVER_OK)) return;
    this.#isr |= VIRTIO_ISR_QUEUE | VIRTIO_ISR_CONFIG;
    this.#generation = (this.#generation + 1) & 0xff;
    this.interrupt(this.configVector);
  }

  /**
   * The driver broke the protocol (QEMU's `virtio_error`): one log line, DEVICE_NEEDS_RESET (when
   * VERSION_1 was negotiated) with a configuration interrupt, and the device stops until reset.
   */
  needsReset(message: string): void {
    if (this.#broken) return;
    this.#log(`${this.model.name}: ${message}; the device needs a reset`);
    if (this.#driverFeatures & VirtioFeature.VERSION_1) {
      this.#status |= VirtioStatus.DEVICE_NEEDS_RESET;
      this.configChanged();
    }
    this.#broken = true;
  }

  /** Device reset: status, features, ISR, vectors and every queue back to their reset state. */
  reset(): void {
    this.#status = 0;
    this.#driverFeatures = 0n;
    this.#isr = 0;
    this.#broken = false;
    this.configVector = VIRTIO_NO_VECTOR;
    for (const queue of this.queues) queue.reset();
    // After the queues: work a model finishes while it resets (virtio-blk's drain) pushes nothing.
    this.model.reset?.();
    this.model.featuresChanged?.(0n);
  }

  /**
   * Status (with DEVICE_NEEDS_RESET), the driver's features, the ISR bits, the configuration
   * generation and vector, whether the device stopped after a protocol error or is disabled by its
   * transport, every queue ({@link Virtqueue.saveState}) and the model's own state.
   */
  saveState(): StateObject {
    return {
      status: this.#status,
      driverFeatures: this.#driverFeatures,
      isr: this.#isr,
      configGeneration: this.#generation,
      configVector: this.configVector,
      broken: this.#broken,
      disabled: this.disabled,
      queues: this.queues.map((q) => q.saveState()),
      model: this.model.saveState?.() ?? {},
    };
  }

  /**
   * Puts a {@link saveState} result back. No interrupt is raised: the transport re-drives its lines
   * from its own saved state.
   *
   * @throws {DeviceStateError} naming the field if one is missing, of the wrong type or out of range,
   * if features were accepted that this device does not offer, or if the queue count differs (the
   * device is then unchanged).
   */
  loadState(state: StateObject): void {
    this.prepareState(new StateReader(this.model.name, state))();
  }

  /** Checks a saved device state read through `r` and returns the function that applies it. */
  prepareState(r: StateReader): () => void {
    const status = r.u8("status");
    const driverFeatures = r.bigint("driverFeatures");
    if (driverFeatures & ~this.hostFeatures) {
      r.fail(
        "driverFeatures",
        `has 0x${(driverFeatures & ~this.hostFeatures).toString(16)}, not offered by this device`,
      );
    }
    const isr = r.bits("isr", VIRTIO_ISR_QUEUE | VIRTIO_ISR_CONFIG);
    const generation = r.u8("configGeneration");
    const configVector = r.u16("configVector");
    const broken = r.bool("broken");
    const disabled = r.bool("disabled");
    const queues = r.array("queues", { length: this.queues.length });
    const applyQueues = queues.map((q, i) => this.queues[i].prepareState(q.object()));
    const model = r.object("model");
    const applyModel = this.model.prepareState?.(model) ?? (() => {});
    return () => {
      this.#status = status;
      this.#driverFeatures = driverFeatures;
      this.#isr = isr;
      this.#generation = generation;
      this.configVector = configVector;
      this.#broken = broken;
      this.disabled = disabled;
      this.#handling = -1;
      for (const apply of applyQueues) apply();
      applyModel();
      this.model.featuresChanged?.(status & VirtioStatus.FEATURES_OK ? driverFeatures : 0n);
    };
  }

  /** Runs `fn`; a protocol error (or any other) becomes {@link needsReset}. Returns whether it completed. */
  #guard(fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (error) {
      this.#fail(error);
      return false;
    }
  }

  /** A protocol error or any other exception from device work: the device needs a reset. */
  #fail(error: unknown): void {
    const message = error instanceof VirtioProtocolError
      ? error.message
      : `internal error: ${error instanceof Error ? error.message : String(error)}`;
    this.needsReset(message);
  }
}
