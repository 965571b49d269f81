/**
 * The KVM side of the memory API's ioeventfds: a listener that registers each eventfd the flat
 * view shows with `KVM_IOEVENTFD` and deregisters it when it goes, as QEMU's KVM memory listener
 * (`kvm_mem_ioeventfd_add`) and its I/O listener (`kvm_io_ioeventfd_add`) do. A guest write that
 * matches then signals the eventfd inside the kernel: the vCPU does not leave `KVM_RUN` for it.
 *
 * @module
 */

import type { IoeventfdSection, MemoryListener } from "../memory/mod.ts";
import { ListenerPriority } from "../memory/mod.ts";
import type { FdLike, IoeventfdMatch } from "./vm.ts";

/** What the listener needs from a VM: the real `Vm`, or a recording fake in tests. */
export interface IoeventfdBackend {
  /** `KVM_IOEVENTFD`; throws on failure. */
  registerIoeventfd(fd: FdLike, match: IoeventfdMatch): void;
  /** `KVM_IOEVENTFD` with DEASSIGN; throws on failure. */
  unregisterIoeventfd(fd: FdLike, match: IoeventfdMatch): void;
  /** True once the VM is closed: KVM dropped its ioeventfds with it. Absent: never closed. */
  readonly closed?: boolean;
}

/** An eventfd object the memory API carries: anything with an fd (`EventFd` is one). */
function fdOf(section: IoeventfdSection): FdLike {
  const fd = (section.eventfd as { fd?: unknown }).fd;
  if (typeof fd !== "number") {
    throw new TypeError(
      `KVM ioeventfd at 0x${section.start.toString(16)}: the region's eventfd object has no numeric fd`,
    );
  }
  return { fd };
}

/**
 * Keeps a VM's ioeventfds equal to those of the address space it is registered on: `"mmio"` for
 * the memory space, `"pio"` for the I/O space.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
 * import { KvmIoeventfdListener } from "./kvm_ioeventfd_listener.ts";
 * const calls: string[] = [];
 * const vm = {
 *   registerIoeventfd: (fd: unknown, m: { address: number | bigint }) => calls.push(`+${m.address}`),
 *   unregisterIoeventfd: (fd: unknown, m: { address: number | bigint }) => calls.push(`-${m.address}`),
 * };
 * const root = MemoryRegion.container("system", 1n << 64n);
 * const notify = MemoryRegion.io("notify", 0x1000, { write: () => {} });
 * root.addSubregion(0x1000, notify);
 * using as = new AddressSpace(root, "memory");
 * as.registerListener(new KvmIoeventfdListener(vm, "mmio"));
 * notify.addEventfd(4, 2, false, 0n, { fd: 7 });
 * notify.setAddress(0x2000);
 * assert.deepEqual(calls, ["+4100", "-4100", "+8196"]); // in address order, as QEMU walks them
 * ```
 */
export class KvmIoeventfdListener implements MemoryListener {
  /** For messages. */
  readonly name: string;
  /** QEMU registers its KVM listeners at the accelerator's priority. */
  readonly priority: number = ListenerPriority.ACCEL;
  readonly #backend: IoeventfdBackend;
  readonly #space: "pio" | "mmio";

  /** A listener for `space` (`"mmio"` on the memory address space, `"pio"` on the I/O one). */
  constructor(backend: IoeventfdBackend, space: "pio" | "mmio") {
    if (space !== "pio" && space !== "mmio") {
      throw new RangeError(`KvmIoeventfdListener: space must be "pio" or "mmio", got ${String(space)}`);
    }
    this.#backend = backend;
    this.#space = space;
    this.name = `kvm-ioeventfd-${space}`;
  }

  /** `KVM_IOEVENTFD` for an eventfd that became visible. */
  eventfdAdd(section: IoeventfdSection): void {
    this.#backend.registerIoeventfd(fdOf(section), this.#match(section));
  }

  /** `KVM_IOEVENTFD` with DEASSIGN for one that went; nothing once the VM is closed (it went with it). */
  eventfdDel(section: IoeventfdSection): void {
    if (this.#backend.closed) return;
    this.#backend.unregisterIoeventfd(fdOf(section), this.#match(section));
  }

  #match(section: IoeventfdSection): IoeventfdMatch {
    return {
      space: this.#space,
      address: section.start,
      length: section.size as IoeventfdMatch["length"],
      ...(section.matchData ? { datamatch: section.data } : {}),
    };
  }
}
