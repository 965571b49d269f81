/**
 * QEMU's `isa-debug-exit` (`hw/misc/debugexit.c`): a guest write of `v` ends the VM with exit status
 * `(v << 1) | 1`, so test guests can report success or failure. QEMU's defaults: iobase 0x501,
 * iosize 2.
 *
 * @module
 */

import { MemoryRegion } from "../memory/mod.ts";
import { checkPortRange } from "./_ports.ts";
import type { PortDevice } from "./port_device.ts";

/** QEMU's default `iobase`. */
export const DEBUG_EXIT_PORT = 0x501;
/** QEMU's default `iosize`. */
export const DEBUG_EXIT_SIZE = 2;

/** Options of {@link IsaDebugExit}. */
export interface IsaDebugExitOptions {
  /**
   * Receives `(value << 1) | 1` for a write of `value` (computed without 32-bit overflow; the host
   * process's exit status keeps the low 8 bits, as QEMU's `exit()` does).
   */
  onExit: (status: number) => void;
  /** First port (default 0x501). */
  base?: number;
  /** Number of ports (default 2). */
  size?: number;
}

/**
 * Region "isa-debug-exit".
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
 * import { IsaDebugExit } from "./isa_debug_exit.ts";
 * const io = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
 * using ports = new AddressSpace(io, "I/O");
 * let status = -1;
 * new IsaDebugExit({ onExit: (s) => status = s }).map(io);
 * ports.write(0x501, 1, 0x31);
 * assert.equal(status, 0x63);
 * ```
 */
export class IsaDebugExit implements PortDevice {
  /** First port. */
  readonly base: number;
  /** Region "isa-debug-exit". */
  readonly region: MemoryRegion;
  readonly #onExit: (status: number) => void;

  /** The device at `options.base` (0x501) with `options.size` (2) ports. */
  constructor(options: IsaDebugExitOptions) {
    if (typeof options?.onExit !== "function") throw new TypeError("IsaDebugExit: onExit must be a function");
    const size = options.size ?? DEBUG_EXIT_SIZE;
    this.base = checkPortRange(options.base ?? DEBUG_EXIT_PORT, size, "isa-debug-exit");
    this.#onExit = options.onExit;
    // QEMU's debug_exit_ops: any 1–4 byte access, one callback per access.
    this.region = MemoryRegion.io("isa-debug-exit", size, {
      read: () => 0,
      write: (_offset, value) => this.write(Number(value)),
      valid: { min: 1, max: 4 },
      endianness: "little",
    });
  }

  /** The device's only region. */
  get regions(): readonly MemoryRegion[] {
    return [this.region];
  }

  /** Maps "isa-debug-exit" at its base. */
  map(io: MemoryRegion): void {
    io.addSubregion(this.base, this.region);
  }

  /** A write of `value`: calls `onExit((value << 1) | 1)`. */
  write(value: number): void {
    this.#onExit(value * 2 + 1);
  }

  /** Nothing to reset. */
  reset(): void {}
}
