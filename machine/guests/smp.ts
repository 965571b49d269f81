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
0000f0 HUQQEAC+bgQQAOhHAgAA6A8CAADoSgIAAL6BBBAA6DMCAAChRBAQAOg2AgAAvosE
000120 EADoHwIAAIM9RBAQAAAPhJgAAAC+KAQQAL8AAAEAuSYAAADzpLgARQwA6GgBAAC5
000150 ECcAAOiEAQAAuBBGDADoVAEAALnQBwAA6HABAAC4EEYMAOhAAQAAuUBLTAChQBAQ
000180 ADsFRBAQAHND85BJde6+yQQQAOiuAQAAoUAQEADosQEAAL7UBBAA6JoBAAChRBAQ
0001b0 AOidAQAAvtkEEADohgEAAGa6AQWwAe7p5wAAAL6vBBAA6HABAAChRBAQAEDocgEA
0001e0 AL65BBAA6FsBAACDPVAQEAAAdFu/AQAAADHtOz1EEBAAdyiAv1QUEAAAdRxFvugE
000210 EADoLwEAAIn46DUBAAC+9gQQAOgeAQAAR+vQhe11kb4HBRAA6A0BAAChRBAQAOgQ
000240 AQAAvhsFEADo+QAAAOtdgz1MEBAAAHRUv2ICEADpgQAAAKFIEBAAOwVEEBAAdwTz
000270 kOvvMf++MAUQAOjHAAAAifjozQAAAL46BRAA6LYAAACLBL1UEBAA6LcAAACwCuiS
0002a0 AAAARzs9RBAQAHbJZrr5DLAG7vr06/zHBRAD4P4AAAAAowAD4P656AMAAPcFAAPg
0002d0 /gAQAAB0BfOQSXXvw/OQSXX7w7gBAAAAD6LB6xiNQwG5AMqaO2nADWYZAAVf8248
000300 SXXyiQSdVBAQAPD/BUgQEAD/5zHAD6KD+AtyDLgLAAAAMckPoonQw7gBAAAAD6KJ
000330 2MHoGMNQZrr9A+yoIHT7WGa6+APuw6yEwHQH6OX////r9MNTuwoAAAAxyTHS9/NS
000360 QYXAdfZYBDDoyP///0l19VvDZrgQAI7YjsCO4I7ojtCDPVAQEAAAdDgxwA+ig/gL
000390 cg24CwAAADHJD6KJ0+sKuAEAAAAPosHrGIH7ABAAAHNzxoNUFBAAAfD/BUAQEADr
0003c0 Y7gBAAAAhwUAEBAAhcB0DfOQgz0AEBAAAHX16+S8YCwQAL6RBBAA6Fr////oIv//
0003f0 /+hd////vqcEEADoRv///8cFABAQAAAAAADw/wVAEBAAgz1MEBAAAHQKvyQEEADp
000420 v/7///r06/z6jMiO2GYPARYgAA8gwGaDyAEPIsBm6nIDEAAIAA8fABcAUAQQAGaQ
000450 AAAAAAAAAAD//wAAAJvPAP//AAAAk88AFwBQBBAAc21wOiBCU1AgKEFQSUMgaWQg
000480 ACkgd2FraW5nIAAgQVBzCgBzbXA6IEFQIHdpdGggQVBJQyBpZCAAIGlzIHVwCgBz
0004b0 bXA6IGFsbCAAIENQVXMgcmVwb3J0ZWQKAHNtcDogb25seSAAIG9mIAAgQVBzIHJl
0004e0 cG9ydGVkCgBzbXA6IEFQSUMgaWQgACBuZXZlciByZXBvcnRlZAoAc21wOiBBUElD
000510 IGlkcyAxIHRvIAAgZWFjaCByZXBvcnRlZCBvbmNlCgBzbXA6IGNwdSAAIHJlc3Vs
000540 dCAAkA==
`,
);
