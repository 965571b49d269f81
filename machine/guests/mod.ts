/**
 * The guest images committed with the repository, decoded at import: the default guest the main
 * command runs, the default firmware of the PC board, and small test guests. Their sources sit
 * beside them (`*.S`, sharing the Multiboot header, UART output and long-mode setup through the
 * `_*.inc` files they `.include`); `build.ts` regenerates the modules.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FIRMWARE, HELLO64 } from "./mod.ts";
 * assert.equal(FIRMWARE.length, 256 * 1024);
 * assert.equal(new DataView(HELLO64.buffer).getUint32(0, true), 0x1badb002); // Multiboot magic
 * ```
 *
 * @module
 */

export { HELLO64 } from "./hello64.ts";
export { EXIT_STATUS } from "./exit_status.ts";
export { RING3_LOOP } from "./ring3_loop.ts";
export { ECHO } from "./echo.ts";
export { SMP } from "./smp.ts";
export { VIRTIO_HOSTILE } from "./virtio_hostile.ts";
export { FIRMWARE } from "./firmware.ts";
export { assemble, type AssembleOptions, GUEST_LOAD_ADDRESS } from "./assemble.ts";
