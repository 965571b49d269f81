// Generated from machine/guests/firmware.S by `node_modules/deno/deno run -A machine/guests/build.ts`.
// Do not edit: change the source and regenerate (build_test.ts checks that the two agree).
/**
 * The `firmware` guest image, built from `firmware.S`.
 *
 * @module
 */

import { decodeImage } from "./_image.ts";

/**
 * The default `pc.bios` image (256 KiB, mapped at 4 GiB - 256 KiB): its reset vector jumps to
 * real-mode code at F000:0000 that prints a line saying no kernel was given and resets through port
 * 0xcf9 (run status 0).
 *
 * 262144 bytes, linked at 0xfffc0000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FIRMWARE } from "./firmware.ts";
 * assert.equal(FIRMWARE.length, 262144);
 * ```
 */
export const FIRMWARE: Uint8Array = decodeImage(
  262144,
  0x0,
  `
030000 +vyMyI7YvikArITAdBKIxLr9A+yoIHT7iOC6+APu6+m6+QywBu706/1rdm0tdHMg
030030 ZmlybXdhcmU6IG5vIGtlcm5lbCBnaXZlbiAodXNlIC1rZXJuZWwgRklMRSkK
03fff0 6gAAAPA=
`,
);
