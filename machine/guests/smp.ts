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
 * reported" and exits through isa-debug-exit with 1 (status 3).
 *
 * 760 bytes, linked at 0x100000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SMP } from "./smp.ts";
 * assert.equal(SMP.length, 760);
 * ```
 */
export const SMP: Uint8Array = decodeImage(
  760,
  0x0,
  `
000000 ArCtGwAAAQD+T1HkAAAQAAAAEAD4AhAAUBgQACAAEAD6/A8BFXgCEADqMAAQAAgA
000030 ZrgQAI7YjsCO4I7ojtC8UBQQAMcFABAQAAAAAADHBUAQEAAAAAAAsF/mcORxD7bA
000060 o0QQEAC+fgIQAOg+AQAA6BsBAADoQQEAAL6RAhAA6CoBAAChRBAQAOgtAQAAvpsC
000090 EADoFgEAAIM9RBAQAAAPhJUAAAC+OwIQAL8AAAEAuSMAAADzpLgARQwA6KQAAAC5
0000c0 ECcAAOjAAAAAuBBGDADokAAAALnQBwAA6KwAAAC4EEYMAOh8AAAAuUBLTAChQBAQ
0000f0 ADsFRBAQAHNA85BJde6+2QIQAOilAAAAoUAQEADoqAAAAL7kAhAA6JEAAAChRBAQ
000120 AOiUAAAAvukCEADofQAAAGa6AQWwAe7rJr6/AhAA6GoAAAChRBAQAEDobAAAAL7J
000150 AhAA6FUAAABmuvkMsAbu+vTr/McFEAPg/gAAAACjAAPg/rnoAwAA9wUAA+D+ABAA
000180 AHQF85BJde/D85BJdfvDuAEAAAAPoonYwegYw1Bmuv0D7KggdPtYZrr4A+7DrITA
0001b0 dAfo5f///+v0w1O7CgAAADHJMdL381JBhcB19lgEMOjI////SXX1W8NmuBAAjtiO
0001e0 wI7gjuiO0LgBAAAAhwUAEBAAhcB0DfOQgz0AEBAAAHX16+S8UBgQAL6hAhAA6Jv/
000210 ///oeP///+ie////vrcCEADoh////8cFABAQAAAAAADw/wVAEBAA+vTr/PqMyI7Y
000240 Zg8BFh0ADyDAZoPIAQ8iwGbq2QEQAAgAFwBgAhAAZpAAAAAAAAAAAP//AAAAm88A
000270 //8AAACTzwAXAGACEABzbXA6IEJTUCAoQVBJQyBpZCAAKSB3YWtpbmcgACBBUHMK
0002a0 AHNtcDogQVAgd2l0aCBBUElDIGlkIAAgaXMgdXAKAHNtcDogYWxsIAAgQ1BVcyBy
0002d0 ZXBvcnRlZAoAc21wOiBvbmx5IAAgb2YgACBBUHMgcmVwb3J0ZWQK
`,
);
