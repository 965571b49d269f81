// Generated from machine/guests/exit_status.S by `node_modules/deno/deno run -A machine/guests/build.ts`.
// Do not edit: change the source and regenerate (build_test.ts checks that the two agree).
/**
 * The `exit_status` guest image, built from `exit_status.S`.
 *
 * @module
 */

import { decodeImage } from "./_image.ts";

/**
 * A Multiboot v1 image (a.out kludge, loaded at 1 MiB) that prints one line over COM1 and writes 0x10
 * to isa-debug-exit (port 0x501): the run ends with status 33.
 *
 * 144 bytes, linked at 0x100000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EXIT_STATUS } from "./exit_status.ts";
 * assert.equal(EXIT_STATUS.length, 144);
 * ```
 */
export const EXIT_STATUS: Uint8Array = decodeImage(
  144,
  0x0,
  `
000000 ArCtGwAAAQD+T1HkAAAQAAAAEACQABAAAAAAACAAEAD6/L5KABAArITAdBSIxGa6
000030 /QPsqCB0+4jgZrr4A+7r52a6AQWwEO706/1leGl0X3N0YXR1czogbGVhdmluZyB0
000060 aHJvdWdoIGlzYS1kZWJ1Zy1leGl0IHdpdGggMHgxMCAoc3RhdHVzIDMzKQoADx8=
`,
);
