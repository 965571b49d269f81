/**
 * Receiving from taps while the guest runs. When the vCPUs have threads of their own, the VM thread
 * waits in `poll(2)` between exits and the taps join that wait ({@link tapSources}). When the one
 * vCPU runs on the VM thread, that thread is inside `KVM_RUN`, so a Worker (`net_rx_worker.ts`)
 * waits in `poll(2)` on the taps and kicks the vCPU out of `KVM_RUN` the way the QMP Worker
 * does (or rings a doorbell). The runner then calls its `onKick` hook, where the VM thread asks
 * {@link NetRxPoller.signalled} and pumps the taps.
 *
 * The handshake keeps the wait from spinning on a tap whose frames the guest cannot take yet
 * (no receive buffers): after a wake-up the Worker waits (state SIGNALLED) until the VM thread
 * calls {@link NetRxPoller.resume}, which it does once every tap was read empty — right away, or
 * after the driver added buffers (virtio-net's `onReceiveReady`). poll is level-triggered, so a
 * frame that arrives between the last empty read and the next poll is not lost.
 *
 * Closing follows the console channel: once {@link NetRxPoller.close} returned no kick can reach
 * the vCPU, whose run page may then be unmapped.
 *
 * @module
 */

import type { VcpuKickTarget } from "../kvm/vcpu_kicker.ts";
import { KickFence } from "./kick_fence.ts";
import type { Doorbell, HostFdSource } from "./runner.ts";
import { bundledModule } from "./bundled_module.ts";

/** How long the Worker sleeps in one poll or wait before looking at the stop cell. */
export const POLL_SLICE_MS = 100;

/** The Worker's state cell. */
export const RxState = {
  /** The Worker polls the taps. */
  POLLING: 0,
  /** The Worker woke the VM thread and waits for {@link NetRxPoller.resume}. */
  SIGNALLED: 1,
} as const;

const STATE = 0;
const KICK = 1; // the KickFence
const STOP = 2;
const CELLS = 4;

/** The shared cells, as both threads see them. */
export class RxCells {
  readonly #cells: Int32Array;
  readonly #fence: KickFence;

  /** Cells over `buffer`. */
  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(CELLS * 4)) {
    this.#cells = new Int32Array(buffer);
    this.#fence = new KickFence(this.#cells, KICK);
  }

  /** {@link RxState}. */
  get state(): number {
    return Atomics.load(this.#cells, STATE);
  }

  set state(value: number) {
    Atomics.store(this.#cells, STATE, value);
    Atomics.notify(this.#cells, STATE);
  }

  /** Whether the Worker must leave. */
  get stopped(): boolean {
    return Atomics.load(this.#cells, STOP) === 1;
  }

  /** Worker: sleeps while the state is SIGNALLED, at most `ms`. */
  waitWhileSignalled(ms: number): void {
    Atomics.wait(this.#cells, STATE, RxState.SIGNALLED, ms);
  }

  /** Worker: runs `kick` unless the VM thread closed (the shared `KickFence`). */
  kickUnlessClosed(kick: () => void): void {
    this.#fence.kickUnlessClosed(kick);
  }

  /** VM thread: stop, and return once no kick is in progress (none can start afterwards). */
  close(): void {
    Atomics.store(this.#cells, STOP, 1);
    Atomics.notify(this.#cells, STATE);
    this.#fence.close();
  }
}

/** The first message the Worker gets. */
export interface NetRxWorkerInit {
  /** {@link RxCells.buffer}. */
  buffer: SharedArrayBuffer;
  /** The taps' fds. */
  fds: number[];
  /** The vCPU to kick (a one-vCPU machine, run on the VM thread). */
  kick?: VcpuKickTarget;
  /** Or the runner's doorbell (several vCPUs). */
  doorbell?: Doorbell;
}

/**
 * The VM thread's end of the receive Worker.
 *
 * @example
 * ```ts ignore
 * const poller = NetRxPoller.start({ fds: [tap.fd], kick: vcpuKickTarget(pc.vcpu) });
 * backend.onDrained = () => poller.resume();
 * await pc.runAsync({ onKick: () => { if (poller.signalled) backend.pump(); } });
 * poller.close(); // before the machine is closed
 * ```
 */
export class NetRxPoller {
  readonly #cells: RxCells;
  readonly #worker: Worker;
  #closed = false;

  private constructor(cells: RxCells, worker: Worker) {
    this.#cells = cells;
    this.#worker = worker;
  }

  /**
   * Starts the Worker on `fds`, waking the VM thread by kicking `kick` or ringing `doorbell`. The
   * process must handle the kick signal (`handleKickSignal`).
   *
   * @throws {TypeError} when neither or both of `kick` and `doorbell` are given.
   */
  static start(init: Omit<NetRxWorkerInit, "buffer">): NetRxPoller {
    if ((init.kick === undefined) === (init.doorbell === undefined)) {
      throw new TypeError("NetRxPoller.start: give exactly one of kick and doorbell");
    }
    const cells = new RxCells();
    const worker = new Worker(bundledModule(new URL("./net_rx_worker.ts", import.meta.url)), {
      type: "module",
    });
    worker.postMessage({ ...init, buffer: cells.buffer } satisfies NetRxWorkerInit);
    return new NetRxPoller(cells, worker);
  }

  /** Whether the Worker saw a readable tap and waits for {@link resume}. */
  get signalled(): boolean {
    return this.#cells.state === RxState.SIGNALLED;
  }

  /** Every tap was read empty: poll them again. */
  resume(): void {
    if (this.#cells.state !== RxState.POLLING) this.#cells.state = RxState.POLLING;
  }

  /** Stops the Worker; once this returns, it kicks no more. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cells.close();
    this.#worker.terminate();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** What {@link tapSources} needs of a tap backend (`TapNetBackend`). */
export interface PumpedTap {
  /** The tap (its fd is waited on). */
  readonly tap: { readonly fd: number };
  /** Moves frames to the card; true once the tap was read empty. */
  pump(): boolean;
  /** Called whenever a pump left the tap empty (also one the driver's new buffers started). */
  onDrained: () => void;
}

/**
 * The taps as sources of the serving thread's wait (a runner with a doorbell). A readable tap is
 * pumped; a tap whose frame the guest had no buffer for is left out of the wait until a pump
 * empties it (the driver's new buffers pump it: `onReceiveReady`), so a guest without receive
 * buffers cannot make the VM thread spin: the frames wait in the kernel's tap queue, as with QEMU.
 * Takes over each backend's `onDrained`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tapSources } from "./net_rx.ts";
 * let room = false;
 * const backend = { tap: { fd: 7 }, pump: () => room, onDrained: () => {} };
 * const [source] = tapSources([backend]);
 * assert.equal(source.fd, 7);
 * source.ready(); // the guest had no buffer: left out of the wait
 * assert.equal(source.armed(), false);
 * room = true;
 * backend.onDrained(); // a later pump emptied the tap
 * assert.equal(source.armed(), true);
 * ```
 */
export function tapSources(backends: readonly PumpedTap[]): HostFdSource[] {
  return backends.map((backend) => {
    let held = false; // the last pump kept a frame back
    backend.onDrained = () => {
      held = false;
    };
    return {
      fd: backend.tap.fd,
      armed: () => !held,
      ready: () => {
        held = !backend.pump();
      },
    };
  });
}
