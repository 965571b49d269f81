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
 * 1004 bytes, linked at 0x100000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SMP } from "./smp.ts";
 * assert.equal(SMP.length, 1004);
 * ```
 */
export const SMP: Uint8Array = decodeImage(
  1004,
  0x0,
  `
000000 ArCtGwAAAQD+T1HkAAAQAAAAEADsAxAAUBwQACAAEAD6/A8BFVgDEADqMAAQAAgA
000030 ZrgQAI7YjsCO4I7ojtC8UBgQAMcFABAQAAAAAADHBUAQEAAAAAAAxwVIEBAAAAAA
000060 AMcFTBAQAAAAAAD3AwQAAAB0HYtzEIA+AHQVgT53b3JrdANG6/DHBUwQEAABAAAA
000090 sF/mcORxD7bAo0QQEAC+XgMQAOjOAQAA6KsBAADo0QEAAL5xAxAA6LoBAAChRBAQ
0000c0 AOi9AQAAvnsDEADopgEAAIM9RBAQAAAPhJgAAAC+FwMQAL8AAAEAuSMAAADzpLgA
0000f0 RQwA6AQBAAC5ECcAAOggAQAAuBBGDADo8AAAALnQBwAA6AwBAAC4EEYMAOjcAAAA
000120 uUBLTAChQBAQADsFRBAQAHND85BJde6+uQMQAOg1AQAAoUAQEADoOAEAAL7EAxAA
000150 6CEBAAChRBAQAOgkAQAAvskDEADoDQEAAGa6AQWwAe7pgwAAAL6fAxAA6PcAAACh
000180 RBAQAEDo+QAAAL6pAxAA6OIAAACDPUwQEAAAdFS/pwEQAOmBAAAAoUgQEAA7BUQQ
0001b0 EAB3BPOQ6+8x/77YAxAA6LIAAACJ+Oi4AAAAvuIDEADooQAAAIsEvVAQEADoogAA
0001e0 ALAK6H0AAABHOz1EEBAAdslmuvkMsAbu+vTr/McFEAPg/gAAAACjAAPg/rnoAwAA
000210 9wUAA+D+ABAAAHQF85BJde/D85BJdfvDuAEAAAAPosHrGI1DAbkAypo7acANZhkA
000240 BV/zbjxJdfKJBJ1QEBAA8P8FSBAQAP/nuAEAAAAPoonYwegYw1Bmuv0D7KggdPtY
000270 Zrr4A+7DrITAdAfo5f///+v0w1O7CgAAADHJMdL381JBhcB19lgEMOjI////SXX1
0002a0 W8NmuBAAjtiOwI7gjuiO0LgBAAAAhwUAEBAAhcB0DfOQgz0AEBAAAHX16+S8UBwQ
0002d0 AL6BAxAA6Jv////oeP///+ie////vpcDEADoh////8cFABAQAAAAAADw/wVAEBAA
000300 gz1MEBAAAHQKvxMDEADpFf////r06/z6jMiO2GYPARYdAA8gwGaDyAEPIsBm6qIC
000330 EAAIABcAQAMQAGYPH0QAAAAAAAAAAAAA//8AAACbzwD//wAAAJPPABcAQAMQAHNt
000360 cDogQlNQIChBUElDIGlkIAApIHdha2luZyAAIEFQcwoAc21wOiBBUCB3aXRoIEFQ
000390 SUMgaWQgACBpcyB1cAoAc21wOiBhbGwgACBDUFVzIHJlcG9ydGVkCgBzbXA6IG9u
0003c0 bHkgACBvZiAAIEFQcyByZXBvcnRlZAoAc21wOiBjcHUgACByZXN1bHQgAJA=
`,
);
