/**
 * Builds the committed guest images of this folder from their GNU assembler sources and writes
 * them as TypeScript modules, so that the main command needs no toolchain:
 *
 * ```sh
 * node_modules/deno/deno run -A machine/guests/build.ts
 * ```
 *
 * Each source is assembled with binutils `as --64` (the 16- and 32-bit parts use `.code16` and
 * `.code32`) and linked with `ld --oformat binary` at its link address into a temporary
 * directory; the flat binary becomes `<name>.ts`, exporting the bytes as a `Uint8Array` decoded at
 * import (see `_image.ts` for the encoding). The script prints nothing on success (the layer check
 * keeps stdio out of `machine/`); a failing tool throws with its message.
 * `build_test.ts` rebuilds everything and checks the committed modules are identical.
 *
 * @module
 */

import { encodeImage, mostFrequentByte } from "./_image.ts";
import { assemble } from "./assemble.ts";

/** The command that regenerates the guest modules, quoted in each module's header. */
export const BUILD_COMMAND = "node_modules/deno/deno run -A machine/guests/build.ts";

/** One guest: its source, link address and the module it becomes. */
export interface GuestBuild {
  /** Base name: `<name>.S` is the source, `<name>.ts` the generated module. */
  readonly name: string;
  /** Name of the exported `Uint8Array`. */
  readonly exportName: string;
  /** Address of the image's first byte (`ld -Ttext`). */
  readonly linkAddress: number;
  /** JSDoc summary of the export: what the guest does and prints. */
  readonly summary: string;
}

/** Every guest this script builds, in the order the modules are written. */
export const GUESTS: readonly GuestBuild[] = [
  {
    name: "hello64",
    exportName: "HELLO64",
    linkAddress: 0x10_0000,
    summary: "The default guest of the main command: a Multiboot v1 image (a.out kludge, loaded at 1 MiB) " +
      "that enters long mode, prints a banner, the IOAPIC version register, a UART interrupt, a " +
      "50,000,000-iteration ring-3 loop (sysret/syscall) and a goodbye line over COM1, then resets " +
      "through port 0xcf9 (run status 0).",
  },
  {
    name: "ring3_loop",
    exportName: "RING3_LOOP",
    linkAddress: 0x10_0000,
    summary: "A guest for snapshot tests: hello64 with its ring-3 step replaced by 16 rounds of 20,000,000 " +
      "steps of a 64-bit LCG, run and printed from ring 3 (IOPL 3), a line per round, then the goodbye " +
      "line and a reset through port 0xcf9 (run status 0).",
  },
  {
    name: "exit_status",
    exportName: "EXIT_STATUS",
    linkAddress: 0x10_0000,
    summary: "A Multiboot v1 image (a.out kludge, loaded at 1 MiB) that prints one line over COM1 and " +
      "writes 0x10 to isa-debug-exit (port 0x501): the run ends with status 33.",
  },
  {
    name: "echo",
    exportName: "ECHO",
    linkAddress: 0x10_0000,
    summary: "An interactive Multiboot v1 image (32-bit protected mode, loaded at 1 MiB): it sleeps in " +
      "`hlt` with COM1's received-data interrupt enabled, echoes what is typed (Enter as CR LF), and " +
      "resets through port 0xcf9 when 'q' arrives (run status 0).",
  },
  {
    name: "smp",
    exportName: "SMP",
    linkAddress: 0x10_0000,
    summary: "The SMP proof guest: a Multiboot v1 image (32-bit protected mode, loaded at 1 MiB) whose BSP " +
      "reads the CPU count from CMOS byte 0x5f, prints it, and wakes the other CPUs with INIT-SIPI-SIPI " +
      '(vector 0x10, a real-mode trampoline at 0x10000). Each AP prints "smp: AP with APIC id K is up" ' +
      'under a spinlock and counts itself in; the BSP then prints "smp: all N CPUs reported" and resets ' +
      "through port 0xcf9 (run status 0), or, if not every AP reported in time, prints " +
      '"smp: only M of N-1 APs reported" and exits through isa-debug-exit with 1 (status 3). With ' +
      '"work" in its command line every CPU first runs a billion steps of an LCG seeded by its APIC id ' +
      '(seconds, all at once) and the BSP prints "smp: cpu K result R" for each before the reset.',
  },
  {
    name: "virtio_hostile",
    exportName: "VIRTIO_HOSTILE",
    linkAddress: 0x10_0000,
    summary: "A hostile virtio driver: a Multiboot v1 image (32-bit protected mode, loaded at 1 MiB) that " +
      "finds virtio-rng-pci through PCI configuration mechanism #1 and its vendor capabilities, then, " +
      "resetting the device in between, posts a valid request, a buffer outside guest RAM, a descriptor " +
      "loop, a 4 GiB chain, a used ring past the end of RAM, an indirect table of 24 bytes and a valid " +
      "request again, printing one line each over COM1; every broken one must leave DEVICE_NEEDS_RESET " +
      "set. All as expected: isa-debug-exit 0x10 (status 33); otherwise 0x40 | failed-scenario bits (status 129-255), or 0x20 (status 65) without a working device.",
  },
  {
    name: "firmware",
    exportName: "FIRMWARE",
    linkAddress: 0xfffc_0000,
    summary: "The default `pc.bios` image (256 KiB, mapped at 4 GiB - 256 KiB): its reset vector jumps " +
      "to real-mode code at F000:0000 that prints a line saying no kernel was given and resets " +
      "through port 0xcf9 (run status 0).",
  },
];

/** A built guest: the flat binary and the text of its module. */
export interface BuiltGuest {
  /** The guest that was built. */
  readonly guest: GuestBuild;
  /** The flat binary, first byte at `guest.linkAddress`. */
  readonly image: Uint8Array;
  /** The TypeScript module that embeds `image`. */
  readonly module: string;
}

/** The URL of a file in this folder. */
function here(file: string): URL {
  return new URL(`./${file}`, import.meta.url);
}

/**
 * Assembles and links one guest and returns its flat binary.
 *
 * @example
 * ```ts ignore
 * import { assembleGuest, GUESTS } from "./build.ts";
 * const image = await assembleGuest(GUESTS[0]);
 * ```
 */
export function assembleGuest(guest: GuestBuild): Promise<Uint8Array> {
  return assemble(here(`${guest.name}.S`), { base: guest.linkAddress, elf: 64 });
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

/**
 * The text of the generated module for `guest` holding `image`. Formatted as `deno fmt` leaves it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GUESTS, renderGuestModule } from "./build.ts";
 * const text = renderGuestModule(GUESTS.find((g) => g.name === "exit_status")!, new Uint8Array(16));
 * assert.ok(text.includes("export const EXIT_STATUS: Uint8Array = decodeImage("));
 * ```
 */
export function renderGuestModule(guest: GuestBuild, image: Uint8Array): string {
  const fill = mostFrequentByte(image);
  const words = guest.summary.split(" ");
  const summary: string[] = [];
  let line = "";
  for (const word of words) {
    if (line !== "" && line.length + 1 + word.length > 100) {
      summary.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  summary.push(line);
  return [
    `// Generated from machine/guests/${guest.name}.S by \`${BUILD_COMMAND}\`.`,
    `// Do not edit: change the source and regenerate (build_test.ts checks that the two agree).`,
    `/**`,
    ` * The \`${guest.name}\` guest image, built from \`${guest.name}.S\`.`,
    ` *`,
    ` * @module`,
    ` */`,
    ``,
    `import { decodeImage } from "./_image.ts";`,
    ``,
    `/**`,
    ...summary.map((text) => ` * ${text}`),
    ` *`,
    ` * ${image.length} bytes, linked at ${hex(guest.linkAddress)}.`,
    ` *`,
    ` * @example`,
    ` * \`\`\`ts`,
    ` * import assert from "node:assert/strict";`,
    ` * import { ${guest.exportName} } from "./${guest.name}.ts";`,
    ` * assert.equal(${guest.exportName}.length, ${image.length});`,
    ` * \`\`\``,
    ` */`,
    `export const ${guest.exportName}: Uint8Array = decodeImage(`,
    `  ${image.length},`,
    `  ${hex(fill)},`,
    "  `",
    encodeImage(image, fill) + "`,",
    `);`,
    ``,
  ].join("\n");
}

/**
 * Assembles every guest in a temporary directory (removed afterwards) and renders its module.
 * Needs `--allow-run` (as, ld), `--allow-read` and `--allow-write`.
 *
 * @example
 * ```ts ignore
 * import { buildGuests } from "./build.ts";
 * for (const { guest, image } of await buildGuests()) console.log(guest.name, image.length);
 * ```
 */
export async function buildGuests(): Promise<BuiltGuest[]> {
  const built: BuiltGuest[] = [];
  for (const guest of GUESTS) {
    const image = await assembleGuest(guest);
    built.push({ guest, image, module: renderGuestModule(guest, image) });
  }
  return built;
}

/** The URL of the committed module of `guest`. */
export function guestModuleUrl(guest: GuestBuild): URL {
  return here(`${guest.name}.ts`);
}

/** Builds every guest and writes `<name>.ts` beside its source. */
export async function writeGuestModules(): Promise<void> {
  for (const { guest, module } of await buildGuests()) {
    await Deno.writeTextFile(guestModuleUrl(guest), module);
  }
}

if (import.meta.main) await writeGuestModules();
