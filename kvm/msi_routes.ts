/**
 * GSI routing: the table KVM_SET_GSI_ROUTING takes, the default one KVM_CREATE_IRQCHIP installs,
 * and {@link MsiRoutes}, which hands out GSIs for MSI messages above the IOAPIC's pins and
 * re-commits the whole table (as QEMU's `kvm_irqchip_add_msi_route` and
 * `kvm_irqchip_commit_routes` do).
 *
 * @module
 */

import { ENOSPC } from "./_errno.ts";
import { KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE } from "./ioctls.ts";
import { KvmError } from "./kvm_error.ts";

/** A GSI routed to an input pin of an in-kernel interrupt controller. */
export interface IrqchipRoute {
  /** The global system interrupt: what KVM_IRQ_LINE and KVM_IRQFD name. */
  readonly gsi: number;
  /** `KVM_IRQCHIP_PIC_MASTER` 0, `KVM_IRQCHIP_PIC_SLAVE` 1 or `KVM_IRQCHIP_IOAPIC` 2. */
  readonly irqchip: number;
  /** The pin: 0–7 on a PIC, 0–23 on the IOAPIC. */
  readonly pin: number;
}

/**
 * One MSI message as a PCI function writes it (an MSI-X table entry's three dwords): on x86 the
 * address is 0xFEExxxxx (destination APIC id in bits 19:12) and the data holds the vector
 * (bits 7:0) and the delivery mode (bits 10:8).
 */
export interface MsiMessage {
  /** Message Address, low 32 bits. */
  readonly addressLo: number;
  /** Message Upper Address (0 on x86 without x2APIC extended destination ids). */
  readonly addressHi: number;
  /** Message Data, 32 bits (16 significant on x86). */
  readonly data: number;
}

/** A GSI routed to an MSI message: a write to an irqfd on this GSI sends the message. */
export interface MsiRoute extends MsiMessage {
  /** The GSI; by convention above the IOAPIC's pins (24 and up). */
  readonly gsi: number;
}

/** One entry of a GSI routing table: an irqchip pin or an MSI message. */
export type GsiRoute = IrqchipRoute | MsiRoute;

/** Whether a route is an irqchip pin (else an MSI message). */
export function isIrqchipRoute(route: GsiRoute): route is IrqchipRoute {
  return "irqchip" in route;
}

/** Pins of the in-kernel IOAPIC, hence the first GSI free for MSI routes. */
export const IOAPIC_NUM_PINS = 24;
/** Inputs of one 8259. */
const PIC_NUM_PINS = 8;
/** GSIs 0–15 are the ISA IRQs, wired to both 8259s as well as the IOAPIC. */
const ISA_IRQS = 16;
/** KVM's routing table size limit (`KVM_MAX_IRQ_ROUTES`), also what KVM_CAP_IRQ_ROUTING answers. */
export const KVM_MAX_IRQ_ROUTES = 4096;

/**
 * The table KVM_CREATE_IRQCHIP installs on x86 (`kvm_setup_default_irq_routing`): GSI n goes to
 * IOAPIC pin n for n in 0–23, and GSIs 0–15 also to 8259 pin n % 8 (the master for 0–7, the
 * slave for 8–15), cascade GSI 2 included. Per GSI the IOAPIC entry comes first, as in the kernel.
 *
 * A KVM_SET_GSI_ROUTING table replaces this one entirely, so a table that adds MSI routes must
 * carry these (or the board's own irqchip routes) along, or KVM_IRQ_LINE stops reaching the pins.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultGsiRoutes, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_SLAVE } from "./mod.ts";
 * const routes = defaultGsiRoutes();
 * assert.equal(routes.length, 16 * 2 + 8);
 * assert.deepEqual(routes.filter((r) => r.gsi === 9), [
 *   { gsi: 9, irqchip: KVM_IRQCHIP_IOAPIC, pin: 9 },
 *   { gsi: 9, irqchip: KVM_IRQCHIP_PIC_SLAVE, pin: 1 },
 * ]);
 * ```
 */
export function defaultGsiRoutes(): IrqchipRoute[] {
  const routes: IrqchipRoute[] = [];
  for (let gsi = 0; gsi < IOAPIC_NUM_PINS; gsi++) {
    routes.push({ gsi, irqchip: KVM_IRQCHIP_IOAPIC, pin: gsi });
    if (gsi < ISA_IRQS) {
      const irqchip = gsi < PIC_NUM_PINS ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
      routes.push({ gsi, irqchip, pin: gsi % PIC_NUM_PINS });
    }
  }
  return routes;
}

/** What {@link MsiRoutes} commits to: a {@link Vm} (its `setGsiRouting`), or a fake in tests. */
export interface GsiRouter {
  /** Replaces the whole routing table (KVM_SET_GSI_ROUTING). */
  setGsiRouting(routes: readonly GsiRoute[]): void;
}

/** Options of the {@link MsiRoutes} constructor. */
export interface MsiRoutesOptions {
  /**
   * The irqchip routes every commit carries: {@link defaultGsiRoutes} unless given (a PC board
   * passes its own, e.g. QEMU's with GSI 0 on IOAPIC pin 2).
   */
  readonly base?: readonly IrqchipRoute[];
  /** First GSI handed out; {@link IOAPIC_NUM_PINS} (24) by default. */
  readonly firstGsi?: number;
  /**
   * GSIs KVM accepts (KVM_CHECK_EXTENSION of KVM_CAP_IRQ_ROUTING answers it);
   * {@link KVM_MAX_IRQ_ROUTES} by default.
   */
  readonly gsiCount?: number;
}

/**
 * The MSI part of a VM's GSI routing table: {@link MsiRoutes.add} hands out the lowest free GSI
 * at or above 24 (and not used by the base routes) for a message, {@link MsiRoutes.update}
 * changes a message (the guest reprogrammed an MSI-X entry), {@link MsiRoutes.remove} frees a
 * GSI. Changes are batched: {@link MsiRoutes.commit} sends base + MSI routes in one
 * KVM_SET_GSI_ROUTING when something changed. Attach an irqfd to the GSI to have an eventfd write
 * send the message.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type GsiRoute, MsiRoutes } from "./mod.ts";
 * const committed: (readonly GsiRoute[])[] = [];
 * const routes = new MsiRoutes({ setGsiRouting: (table) => committed.push(table) }); // or a Vm
 * const gsi = routes.add({ addressLo: 0xfee0_0000, addressHi: 0, data: 0x41 });
 * assert.equal(gsi, 24);
 * routes.commit();
 * routes.commit(); // nothing changed: no second ioctl
 * assert.equal(committed.length, 1);
 * assert.deepEqual(committed[0].at(-1), { gsi: 24, addressLo: 0xfee0_0000, addressHi: 0, data: 0x41 });
 * ```
 */
export class MsiRoutes {
  readonly #router: GsiRouter;
  readonly #base: readonly IrqchipRoute[];
  readonly #baseGsis: ReadonlySet<number>;
  readonly #firstGsi: number;
  readonly #gsiCount: number;
  readonly #msi = new Map<number, MsiRoute>();
  #dirty = true;

  /**
   * A table of `options.base` and no MSI route yet; nothing is committed until
   * {@link MsiRoutes.commit}.
   *
   * @throws {RangeError} when `firstGsi` or `gsiCount` are not integers with
   * `0 <= firstGsi <= gsiCount <= 4096`, or a base route is malformed.
   */
  constructor(router: GsiRouter, options: MsiRoutesOptions = {}) {
    const firstGsi = options.firstGsi ?? IOAPIC_NUM_PINS;
    const gsiCount = options.gsiCount ?? KVM_MAX_IRQ_ROUTES;
    if (
      !Number.isInteger(firstGsi) || !Number.isInteger(gsiCount) || firstGsi < 0 || firstGsi > gsiCount ||
      gsiCount > KVM_MAX_IRQ_ROUTES
    ) {
      throw new RangeError(
        `MsiRoutes: need integers 0 <= firstGsi (${firstGsi}) <= gsiCount (${gsiCount}) <= ${KVM_MAX_IRQ_ROUTES}`,
      );
    }
    const base = (options.base ?? defaultGsiRoutes()).map((route) => ({ ...checkIrqchipRoute(route) }));
    this.#router = router;
    this.#base = Object.freeze(base);
    this.#baseGsis = new Set(base.map((route) => route.gsi));
    this.#firstGsi = firstGsi;
    this.#gsiCount = gsiCount;
  }

  /** The irqchip routes every commit carries. */
  get base(): readonly IrqchipRoute[] {
    return this.#base;
  }

  /** The MSI routes, by GSI in ascending order. */
  get msiRoutes(): MsiRoute[] {
    return [...this.#msi.values()].sort((a, b) => a.gsi - b.gsi);
  }

  /** The table the next commit sends: the base routes, then the MSI routes by GSI. */
  get table(): GsiRoute[] {
    return [...this.#base, ...this.msiRoutes];
  }

  /** Whether a change awaits {@link MsiRoutes.commit} (true before the first commit). */
  get dirty(): boolean {
    return this.#dirty;
  }

  /**
   * Routes `message` to the lowest free GSI and returns it. Not sent to KVM until
   * {@link MsiRoutes.commit}.
   *
   * @throws {KvmError} with code `ENOSPC` (op `"MsiRoutes.add"`) when every GSI below `gsiCount`
   * is taken: fall back to KVM_SIGNAL_MSI, as QEMU does.
   */
  add(message: MsiMessage): number {
    const route = checkMsi(message);
    for (let gsi = this.#firstGsi; gsi < this.#gsiCount; gsi++) {
      if (this.#msi.has(gsi) || this.#baseGsis.has(gsi)) continue;
      this.#msi.set(gsi, { gsi, ...route });
      this.#dirty = true;
      return gsi;
    }
    throw new KvmError("MsiRoutes.add", ENOSPC, {
      detail: `GSIs ${this.#firstGsi}-${this.#gsiCount - 1} are all routed`,
      hint: "free one with remove(), or send the message with Vm.signalMsi instead",
    });
  }

  /**
   * Replaces the message of a GSI that {@link MsiRoutes.add} returned. Marks the table dirty
   * only if the message changed.
   *
   * @throws {RangeError} when `gsi` is not an MSI route of this table.
   */
  update(gsi: number, message: MsiMessage): void {
    const old = this.#msi.get(gsi);
    if (old === undefined) throw new RangeError(`MsiRoutes.update: GSI ${gsi} is not an MSI route`);
    const route = checkMsi(message);
    if (old.addressLo === route.addressLo && old.addressHi === route.addressHi && old.data === route.data) {
      return;
    }
    this.#msi.set(gsi, { gsi, ...route });
    this.#dirty = true;
  }

  /**
   * Frees a GSI for reuse. Detach irqfds from it first: until the next commit KVM still routes it.
   *
   * @throws {RangeError} when `gsi` is not an MSI route of this table.
   */
  remove(gsi: number): void {
    if (!this.#msi.delete(gsi)) throw new RangeError(`MsiRoutes.remove: GSI ${gsi} is not an MSI route`);
    this.#dirty = true;
  }

  /**
   * Sends {@link MsiRoutes.table} with one KVM_SET_GSI_ROUTING if anything changed since the last
   * successful commit. A failed commit leaves the table dirty.
   *
   * @throws {KvmError} with op `"KVM_SET_GSI_ROUTING"` from the router.
   */
  commit(): void {
    if (!this.#dirty) return;
    this.#router.setGsiRouting(this.table);
    this.#dirty = false;
  }
}

function checkU32(value: unknown, where: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`${where} must be an integer in [0, 2^32), got ${String(value)}`);
  }
  return value;
}

function checkMsi(message: MsiMessage): MsiMessage {
  return {
    addressLo: checkU32(message.addressLo, "MSI addressLo"),
    addressHi: checkU32(message.addressHi, "MSI addressHi"),
    data: checkU32(message.data, "MSI data"),
  };
}

function checkIrqchipRoute(route: IrqchipRoute): IrqchipRoute {
  return {
    gsi: checkU32(route.gsi, "route gsi"),
    irqchip: checkU32(route.irqchip, `route of GSI ${route.gsi}: irqchip`),
    pin: checkU32(route.pin, `route of GSI ${route.gsi}: pin`),
  };
}
