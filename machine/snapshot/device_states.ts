/**
 * The board's stateful devices by name, for the devices section of a snapshot: every device of
 * the board's list (named by its class, in QEMU's creation order) and every PCI function on the host
 * (named by device, function and class) that implements the device-state contract (`devices/device_state.ts`).
 *
 * @module
 */

import type { Snapshottable, StateObject } from "../../devices/mod.ts";
import type { PcBoard } from "../pc/pc_board.ts";
import { SnapshotFormatError } from "./format.ts";

function isSnapshottable(device: unknown): device is Snapshottable {
  const d = device as Partial<Snapshottable>;
  return typeof d.saveState === "function" && typeof d.loadState === "function";
}

/** The board's devices that save state, by name (`Uart16550`, `pci.02.0:VirtioPci`, …), in board order. */
export function boardDevices(board: PcBoard): Map<string, Snapshottable> {
  const out = new Map<string, Snapshottable>();
  const add = (name: string, device: unknown) => {
    if (!isSnapshottable(device)) return;
    let unique = name;
    for (let n = 2; out.has(unique); n++) unique = `${name}#${n}`;
    out.set(unique, device);
  };
  for (const device of board.devices) add(device.constructor.name, device);
  // A split irqchip's IOAPIC is on the memory bus, not among the port devices.
  if (board.irqchip) add(board.irqchip.ioapic.constructor.name, board.irqchip.ioapic);
  // Every PCI function on the host (the i440fx with PAM and SMRAM, then the virtio functions).
  for (const { address, device } of board.pci.functions()) {
    const at = `${address.device.toString(16).padStart(2, "0")}.${address.function}`;
    add(`pci.${at}:${device.constructor.name}`, device);
  }
  return out;
}

/** Every device's {@link Snapshottable.saveState}, by name. */
export function saveDevices(board: PcBoard): Record<string, StateObject> {
  const out: Record<string, StateObject> = {};
  for (const [name, device] of boardDevices(board)) out[name] = device.saveState();
  return out;
}

/**
 * Loads `states` into the board's devices. The names must be the board's exactly: a state for a
 * device the board lacks, or a device without a state, is refused before anything is loaded.
 *
 * @throws {SnapshotFormatError} when the names differ.
 * @throws {DeviceStateError} from the first device that refuses its state.
 */
export function loadDevices(board: PcBoard, states: { readonly [name: string]: StateObject }): void {
  const devices = boardDevices(board);
  const missing = [...devices.keys()].filter((name) => !(name in states));
  const extra = Object.keys(states).filter((name) => !devices.has(name));
  if (missing.length > 0 || extra.length > 0) {
    throw new SnapshotFormatError(
      `snapshot devices differ from this board's: ${
        [...missing.map((n) => `no state for ${n}`), ...extra.map((n) => `no device ${n}`)].join(", ")
      }`,
    );
  }
  for (const [name, device] of devices) device.loadState(states[name]);
}
