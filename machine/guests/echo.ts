// Generated from machine/guests/echo.S by `node_modules/deno/deno run -A machine/guests/build.ts`.
// Do not edit: change the source and regenerate (build_test.ts checks that the two agree).
/**
 * The `echo` guest image, built from `echo.S`.
 *
 * @module
 */

import { decodeImage } from "./_image.ts";

/**
 * An interactive Multiboot v1 image (32-bit protected mode, loaded at 1 MiB): it sleeps in `hlt` with
 * COM1's received-data interrupt enabled, echoes what is typed (Enter as CR LF), and resets through
 * port 0xcf9 when 'q' arrives (run status 0).
 *
 * 376 bytes, linked at 0x100000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ECHO } from "./echo.ts";
 * assert.equal(ECHO.length, 376);
 * ```
 */
export const ECHO: Uint8Array = decodeImage(
  376,
  0x0,
  `
000000 ArCtGwAAAQD+T1HkAAAQAAAAEAB4ARAAKBUQACAAEAD6/A8BFSABEADqMAAQAAgA
000030 ZrgQAI7YjsCO0LwoFRAAuKYAEAC/IBEQAGaJB2bHRwIIAGbHRwQAjsHoEGaJRwYP
000060 AR0mARAAsBHmIOagsCDmIbAo5qGwBOYhsALmobAB5iHmobDv5iGw/+ahviwBEADo
000090 ZgAAAGa6/AOwC+5muvkDsAHu+/Tr/Wa6/QPsqAF0G2a6+APsPHF0HjwNdQfoKAAA
0000c0 ALAK6CEAAADr3LAg5iC8KBUQAPvrzb5bARAA6BoAAABmuvkMsAbu67pQZrr9A+yo
0000f0 IHT7WGa6+APuw6yEwHQH6OX////r9MOQAAAAAAAAAAD//wAAAJrPAP//AAAAks8A
000120 FwAIARAAJwEAEBAAZWNobzogdHlwZTsgRW50ZXIgc3RhcnRzIGEgbmV3IGxpbmUs
000150 IHEgcmVzZXRzCgAKZWNobzogcSBwcmVzc2VkLCByZXNldHRpbmcK
`,
);
