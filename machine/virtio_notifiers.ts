/**
 * Queue notifies through KVM_IOEVENTFD, as QEMU's `virtio_bus_set_host_notifier` sets them up: an
 * eventfd per queue of each virtio device that asks for it (the `ioeventfd` property), added to the
 * device's notify region through the memory API. The KVM ioeventfd listener registers it at the
 * address where BAR 4 sits (and moves it with the BAR), so a driver's 2-byte notify write signals
 * the eventfd inside the kernel and the vCPU goes on running: no exit. The VM thread waits in
 * poll(2) on the eventfds between exits ({@link VirtioNotifiers.sources}, the SMP runner's wait),
 * so a notify wakes it directly, and it processes the queue as if the write had exited.
 *
 * The vCPU must not run on the VM thread then (it would have to leave `KVM_RUN` to serve the
 * queue, which is what the ioeventfd avoids): a machine with notifiers runs every vCPU on a thread
 * of its own (the SMP runner, also for one vCPU).
 *
 * @module
 */

import type { VirtioPci } from "../devices/virtio/mod.ts";
import { EventFd } from "../kvm/event_fd.ts";
import type { HostFdSource } from "./runner.ts";

/** Bytes a modern driver writes to notify a queue (`vp_notify`'s iowrite16 of the queue index). */
const NOTIFY_WRITE_SIZE = 2;

interface Notifier {
  readonly fn: VirtioPci;
  readonly queue: number;
  readonly eventfd: EventFd;
}

/**
 * The eventfds of the devices' queues.
 *
 * @example
 * ```ts ignore
 * using notifiers = VirtioNotifiers.create(board.pciDevices.filter((d) => d.spec.ioeventfd).map((d) => d.fn));
 * await runner.run({ sources: notifiers.sources() }); // a signalled eventfd's queue is served
 * ```
 */
export class VirtioNotifiers implements Disposable {
  readonly #notifiers: Notifier[];
  #closed = false;

  private constructor(notifiers: Notifier[]) {
    this.#notifiers = notifiers;
  }

  /**
   * An eventfd for every queue of each of `devices`, added to its notify region (the listeners
   * hear of it at the outermost commit). On a failure every eventfd made so far is removed and
   * closed.
   *
   * @throws {KvmError} when the kernel refuses an eventfd or a listener refuses KVM_IOEVENTFD.
   */
  static create(devices: readonly VirtioPci[]): VirtioNotifiers {
    const made = new VirtioNotifiers([]);
    try {
      for (const fn of devices) {
        for (let queue = 0; queue < fn.device.queues.length; queue++) {
          const eventfd = new EventFd();
          made.#notifiers.push({ fn, queue, eventfd });
          fn.notifyRegion.addEventfd(fn.notifyOffset(queue), NOTIFY_WRITE_SIZE, false, 0n, eventfd);
        }
      }
      return made;
    } catch (error) {
      made.close();
      throw error;
    }
  }

  /** The eventfds' fds, for a poll loop. */
  get fds(): number[] {
    return this.#notifiers.map((n) => n.eventfd.fd);
  }

  /** How many queues have an eventfd. */
  get count(): number {
    return this.#notifiers.length;
  }

  /**
   * One source per eventfd for the runner's wait: readable means notified; serving takes the
   * counter and processes the queue.
   */
  sources(): HostFdSource[] {
    return this.#notifiers.map((n) => ({
      fd: n.eventfd.fd,
      armed: () => true,
      ready: () => {
        if (n.eventfd.read() !== 0n) n.fn.device.notifyQueue(n.queue);
      },
    }));
  }

  /**
   * Takes every signalled eventfd's counter and processes its queue (VirtioDevice.notifyQueue, the
   * same call the notify region's write makes). Returns how many queues were signalled.
   */
  serve(): number {
    let served = 0;
    for (const n of this.#notifiers) {
      if (n.eventfd.read() === 0n) continue;
      served++;
      n.fn.device.notifyQueue(n.queue);
    }
    return served;
  }

  /**
   * Removes the eventfds from the regions (listeners deregister them) and closes them. Idempotent;
   * once the VM is closed, removing is skipped by passing `detach = false`.
   */
  close(detach = true): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const n of this.#notifiers.splice(0)) {
      try {
        if (detach && n.fn.notifyRegion.ioeventfds.some((fd) => fd.eventfd === n.eventfd)) {
          n.fn.notifyRegion.delEventfd(n.fn.notifyOffset(n.queue), NOTIFY_WRITE_SIZE, false, 0n, n.eventfd);
        }
      } finally {
        n.eventfd.close();
      }
    }
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
