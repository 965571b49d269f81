// Generated from machine/guests/smp.S by `node_modules/deno/deno run -A machine/guests/build.ts`.
// Do not edit: change the source and regenerate (build_test.ts checks that the two agree).
/**
 * The `smp` guest image, built from `smp.S`.
 *
 * @module
 */

import { decodeImage } from "./_image.ts";

/**
 * The SMP proof guest: a Multiboot v1 image (32-bit protected mode, loaded at 1 MiB) whose BSP reads
 * the CPU count from CMOS byte 0x5f, prints it, and wakes the other CPUs with INIT-SIPI-SIPI (vector
 * 0x10, a real-mode trampoline at 0x10000). Each AP prints "smp: AP with APIC id K is up" under a
 * spinlock and counts itself in; the BSP then prints "smp: all N CPUs reported" and resets through
 * port 0xcf9 (run status 0), or, if not every AP reported in time, prints "smp: only M of N-1 APs
 * reported" and exits through isa-debug-exit with 1 (status 3). With "work" in its command line every
 * CPU first runs a billion steps of an LCG seeded by its APIC id (seconds, all at once) and the BSP
 * prints "smp: cpu K result R" for each before the reset.
 *
 * 1348 bytes, linked at 0x100000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SMP } from "./smp.ts";
 * assert.equal(SMP.length, 1348);
 * ```
 */
export const SMP: Uint8Array = decodeImage(
  1348,
  0x0,
  `
000000 ArCtGwAAAQD+T1HkAAAQAAAAEABEBRAAYCwQACAAEAD6/A8BFWgEEADqMAAQAAgA
000030 ZrgQAI7YjsCO4I7ojtC8YCgQAMcFABAQAAAAAADHBUAQEAAAAAAAxwVIEBAAAAAA
000060 AMcFTBAQAAAAAADHBVAQEAAAAAAAv1QUEAC5ABAAADHA86r3AwQAAAB0MYtzEIA+
000090 AHQpgT53b3JrdAuBPmNvdW50D0br6McFTBAQAAEAAADrCscFUBAQAAEAAACwX+Zw
0000c0 5HEPtsCjRBAQADHAD6KD+AtyIrgLAAAAuQEAAAAPog+324XbdA9LOx1EEBAAdgaJ
0000f0 HUQQEAC+bgQQAOhIAgAA6A8CAADoSwIAAL6BBBAA6DQCAAChRBAQAOg3AgAAvosE
000120 EADoIAIAAIM9RBAQAAAPhJgAAAC+KQQQAL8AAAEAuSUAAADzpLgARQwA6GgBAAC5
000150 ECcAAOiEAQAAuBBGDADoVAEAALnQBwAA6HABAAC4EEYMAOhAAQAAuUBLTAChQBAQ
000180 ADsFRBAQAHND85BJde6+yQQQAOivAQAAoUAQEADosgEAAL7UBBAA6JsBAAChRBAQ
0001b0 AOieAQAAvtkEEADohwEAAGa6AQWwAe7p5wAAAL6vBBAA6HEBAAChRBAQAEDocwEA
0001e0 AL65BBAA6FwBAACDPVAQEAAAdFu/AQAAADHtOz1EEBAAdyiAv1QUEAAAdRxFvugE
000210 EADoMAEAAIn46DYBAAC+9gQQAOgfAQAAR+vQhe11kb4HBRAA6A4BAAChRBAQAOgR
000240 AQAAvhsFEADo+gAAAOtdgz1MEBAAAHRUv2ICEADpgQAAAKFIEBAAOwVEEBAAdwTz
000270 kOvvMf++MAUQAOjIAAAAifjozgAAAL46BRAA6LcAAACLBL1UEBAA6LgAAACwCuiT
0002a0 AAAARzs9RBAQAHbJZrr5DLAG7vr06/zHBRAD4P4AAAAAowAD4P656AMAAPcFAAPg
0002d0 /gAQAAB0BfOQSXXvw/OQSXX7w7gBAAAAD6LB6xiNQwG5AMqaO2nADWYZAAVf8248
000300 SXXyiQSdVBAQAPD/BUgQEAD/5zHAD6KD+AtyDbgLAAAAMckPoonT6wq4AQAAAA+i
000330 wesYidjDUGa6/QPsqCB0+1hmuvgD7sOshMB0B+jl////6/TDU7sKAAAAMckx0vfz
000360 UkGFwHX2WAQw6Mj///9JdfVbw2a4EACO2I7AjuCO6I7Qgz1QEBAAAHQ4McAPooP4
000390 C3INuAsAAAAxyQ+iidPrCrgBAAAAD6LB6xiB+wAQAABzc8aDVBQQAAHw/wVAEBAA
0003c0 62O4AQAAAIcFABAQAIXAdA3zkIM9ABAQAAB19evkvGAsEAC+kQQQAOha////6CH/
0003f0 ///oXf///76nBBAA6Eb////HBQAQEAAAAAAA8P8FQBAQAIM9TBAQAAB0Cr8lBBAA
000420 6b7+///69Ov8+ozIjthmDwEWHwAPIMBmg8gBDyLAZupzAxAACABmkBcAUAQQAGaQ
000450 AAAAAAAAAAD//wAAAJvPAP//AAAAk88AFwBQBBAAc21wOiBCU1AgKEFQSUMgaWQg
000480 ACkgd2FraW5nIAAgQVBzCgBzbXA6IEFQIHdpdGggQVBJQyBpZCAAIGlzIHVwCgBz
0004b0 bXA6IGFsbCAAIENQVXMgcmVwb3J0ZWQKAHNtcDogb25seSAAIG9mIAAgQVBzIHJl
0004e0 cG9ydGVkCgBzbXA6IEFQSUMgaWQgACBuZXZlciByZXBvcnRlZAoAc21wOiBBUElD
000510 IGlkcyAxIHRvIAAgZWFjaCByZXBvcnRlZCBvbmNlCgBzbXA6IGNwdSAAIHJlc3Vs
000540 dCAAkA==
`,
);
