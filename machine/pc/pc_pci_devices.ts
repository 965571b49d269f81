/**
 * The PCI devices of `-device` plugged into the PC board: each spec's virtio model behind a
 * virtio-pci function, in slots from {@link PC_PCI_FIRST_FREE_SLOT} on. The board loads this module
 * (and with it the virtio device models) only when there is a device to plug: a run without one
 * does not load them.
 *
 * @module
 */

import type { DeviceTimers } from "../../devices/device_timers.ts";
import type { PciBusSpaces, PciHost } from "../../devices/mod.ts";
import type { GuestMemory } from "../../devices/virtio/guest_memory.ts";
import { VirtioBlk } from "../../devices/virtio/virtio_blk.ts";
import type { VirtioDeviceModel } from "../../devices/virtio/virtio_device.ts";
import {
  VIRTIO_NET_DEFAULT_FEATURES,
  VIRTIO_NET_HDR_SIZE,
  VirtioNet,
  virtioNetFeatures,
} from "../../devices/virtio/virtio_net.ts";
import { RamSpans } from "../../devices/virtio/virtqueue.ts";
import { selfAnnounceFrame } from "../../devices/net_announce.ts";
import { VirtioPci } from "../../devices/virtio/virtio_pci.ts";
import { VirtioRng } from "../../devices/virtio/virtio_rng.ts";
import {
  PC_PCI_FIRST_FREE_SLOT,
  PC_PCI_SLOTS,
  pciIntxIrq,
  type PcPciDevice,
  type PcPciDeviceSpec,
  type SharedIrqLines,
} from "./pc_pci.ts";

export { AddressSpaceGuestMemory } from "../../devices/virtio/mod.ts";

/** What {@link createPcPciDevices} needs from the board. */
export interface PcPciWiring {
  /** Where BARs are mapped: the board's `pci` container and `io` space. */
  readonly bus: PciBusSpaces;
  /** Level-triggered ISA lines for INTx. */
  readonly intx: SharedIrqLines;
  /** Guest RAM as the devices' DMA sees it. */
  readonly memory: GuestMemory;
  /** Sends an MSI message (KVM_SIGNAL_MSI on a running machine). */
  readonly deliverMsi: (address: bigint, data: number) => void;
  /** Where a device's error line goes. */
  readonly log?: (line: string) => void;
  /** The machine's timers (a network card's announcement rounds after a restore). */
  readonly timers?: DeviceTimers;
}

/**
 * Creates the functions of `specs` and plugs them into `host` from slot
 * {@link PC_PCI_FIRST_FREE_SLOT} on, in order, INTA# wired by {@link pciIntxIrq}.
 *
 * @throws {RangeError} when there are more devices than free slots.
 */
export function createPcPciDevices(
  host: PciHost,
  specs: readonly PcPciDeviceSpec[],
  wiring: PcPciWiring,
): PcPciDevice[] {
  if (specs.length > PC_PCI_SLOTS - PC_PCI_FIRST_FREE_SLOT) {
    throw new RangeError(
      `PCI: ${specs.length} devices do not fit in the ${
        PC_PCI_SLOTS - PC_PCI_FIRST_FREE_SLOT
      } free slots of bus 0`,
    );
  }
  return specs.map((spec, i) => {
    const slot = PC_PCI_FIRST_FREE_SLOT + i;
    const model = pcPciModel(spec, wiring.timers);
    const fn = new VirtioPci({
      model,
      memory: wiring.memory,
      bus: wiring.bus,
      deliverMsi: wiring.deliverMsi,
      irq: wiring.intx.source(pciIntxIrq(slot, 1)),
      log: wiring.log,
      typeName: spec.type,
    });
    host.attach({ device: slot }, fn);
    if (spec.type !== "virtio-net-pci") return { slot, spec, fn };
    const frame = selfAnnounceFrame(Uint8Array.from(spec.mac));
    const spans = new RamSpans();
    spans.add(frame.buffer, 0, frame.length);
    const header = new Uint8Array(VIRTIO_NET_HDR_SIZE); // no offload asked: a plain frame
    const announce = () => {
      spec.backend.send(header, spans);
      (model as VirtioNet).announce();
    };
    return { slot, spec, fn, announce };
  });
}

/** The device model of `spec`. */
function pcPciModel(spec: PcPciDeviceSpec, timers: DeviceTimers | undefined): VirtioDeviceModel {
  switch (spec.type) {
    case "virtio-blk-pci":
      return new VirtioBlk({
        backing: spec.backing,
        serial: spec.serial,
        discard: spec.discard,
        writeZeroes: spec.writeZeroes,
      });
    case "virtio-rng-pci":
      return new VirtioRng({ entropy: spec.entropy });
    case "virtio-net-pci": {
      const backend = spec.backend;
      // A backend that cannot be told what the guest takes gives it no receive offload: without
      // GUEST_CSUM, every GUEST_* feature goes (each needs it).
      const offered = spec.features ?? VIRTIO_NET_DEFAULT_FEATURES;
      const features = backend.setOffloads ? offered : virtioNetFeatures(["guest_csum"], offered);
      const net = new VirtioNet({
        mac: spec.mac,
        features,
        send: (header, frame) => backend.send(header, frame),
        onReceiveReady: () => backend.receiveReady(),
        setOffloads: backend.setOffloads && ((offloads) => backend.setOffloads!(offloads)),
        onRxFilterChanged: spec.onRxFilterChanged,
        timers,
      });
      backend.attach(net);
      return net;
    }
  }
}
