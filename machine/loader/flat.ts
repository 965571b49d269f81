/**
 * The flat-binary loader: an image placed at one address and entered in a chosen CPU mode, with
 * the GDT (and, for long mode, identity page tables) it needs written to low memory at the
 * addresses of `layout.ts`.
 *
 * @module
 */

import { type AddrInput, toAddress } from "../../memory/mod.ts";
import { BOOT_RFLAGS, type BootPlan, type CpuMode } from "./boot_plan.ts";
import {
  BOOT_CODE32_SELECTOR,
  BOOT_CODE64_SELECTOR,
  BOOT_IDENTITY_MAP_END,
  BOOT_PD_COUNT,
  BOOT_PD_START,
  BOOT_PDPT_START,
  BOOT_PML4_START,
  BOOT_STACK_START,
  BOOT_STACK_TOP,
  BOOT_UNCACHED_START,
} from "./layout.ts";
import { LoaderError } from "./loader_error.ts";
import {
  bootGdtRegister,
  bootGdtWrite,
  checkInRam,
  checkNoOverlap,
  hex,
  type LabelledWrite,
  planWrites,
  sourceWrite,
  span,
} from "./_plan.ts";
import { type ImageSource, imageSource } from "./image_source.ts";

/** How to place and enter a flat binary. */
export interface FlatOptions {
  /** Guest-physical address of the image's first byte. */
  addr: AddrInput;
  /** CPU mode at entry. */
  mode: CpuMode;
  /** Guest-physical entry address; default `addr`. */
  entry?: AddrInput;
  /**
   * Real mode only: the code segment. Default: selector `addr >> 4`, base `addr` (then `addr`
   * must be 16-byte aligned and below 1 MiB).
   */
  cs?: { selector: number; base: AddrInput };
  /** If given, the image must end at or below this many bytes of RAM. */
  ramSize?: AddrInput;
  /**
   * More images that are only placed, not entered (QEMU's generic loader without `cpu-num`), each
   * named by `what` in messages (default "image 2", "image 3"…). They too must end below
   * `ramSize`, and no two writes of the plan may overlap. Each is bytes, or a source (an open
   * file) that the plan names a range of.
   */
  data?: readonly { addr: AddrInput; data: Uint8Array | ImageSource; what?: string }[];
}

/** Real-mode code reaches 1 MiB (A20 aside). */
const REAL_MODE_END = 0x10_0000n;
/** A real-mode offset (IP) is 16 bits. */
const REAL_MODE_OFFSET_LIMIT = 0xffffn;
/** 32-bit linear addresses end at 4 GiB. */
const PROTECTED_MODE_END = 0x1_0000_0000n;

/** 4 KiB paging structure: 512 eight-byte entries. */
const PAGE_TABLE_SIZE = 0x1000;
const PAGE_TABLE_ENTRIES = 512;
/** One PD entry maps 2 MiB. */
const LARGE_PAGE_SIZE = 0x20_0000n;
/** Entry bits (Intel SDM vol. 3 §4.5). */
const PTE_PRESENT_BIT = 1n << 0n;
const PTE_WRITABLE_BIT = 1n << 1n;
const PTE_WRITE_THROUGH_BIT = 1n << 3n;
const PTE_CACHE_DISABLE_BIT = 1n << 4n;
const PTE_LARGE_PAGE_BIT = 1n << 7n;

/**
 * The identity map of the first 4 GiB with 2-MiB pages: PML4 (1 entry), PDPT (4 entries) and four
 * page directories, as writes at their `layout.ts` addresses. The last GiB is cache-disabled
 * (it holds the PCI hole, IOAPIC, LAPIC and firmware on a PC).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { identityPageTables } from "./flat.ts";
 * const tables = identityPageTables();
 * assert.equal(tables.length, 6);
 * assert.equal(tables[0].addr, 0xa000n);
 * ```
 */
export function identityPageTables(): { addr: bigint; data: Uint8Array }[] {
  const table = (entries: (i: number) => bigint | undefined): Uint8Array => {
    const bytes = new Uint8Array(PAGE_TABLE_SIZE);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < PAGE_TABLE_ENTRIES; i++) {
      const entry = entries(i);
      if (entry !== undefined) view.setBigUint64(i * 8, entry, true);
    }
    return bytes;
  };
  const link = PTE_PRESENT_BIT | PTE_WRITABLE_BIT;
  const writes = [
    { addr: BOOT_PML4_START, data: table((i) => (i === 0 ? BOOT_PDPT_START | link : undefined)) },
    {
      addr: BOOT_PDPT_START,
      data: table((
        i,
      ) => (i < BOOT_PD_COUNT ? (BOOT_PD_START + BigInt(i * PAGE_TABLE_SIZE)) | link : undefined)),
    },
  ];
  for (let pd = 0; pd < BOOT_PD_COUNT; pd++) {
    writes.push({
      addr: BOOT_PD_START + BigInt(pd * PAGE_TABLE_SIZE),
      data: table((i) => {
        const page = BigInt(pd * PAGE_TABLE_ENTRIES + i) * LARGE_PAGE_SIZE;
        const uncached = page >= BOOT_UNCACHED_START ? PTE_CACHE_DISABLE_BIT | PTE_WRITE_THROUGH_BIT : 0n;
        return page | link | PTE_LARGE_PAGE_BIT | uncached;
      }),
    });
  }
  return writes;
}

/**
 * Places a flat binary (bytes, or a source that the plan names a range of) at `options.addr`
 * and enters it at `options.entry` in `options.mode`:
 * - `real`: CS = `addr >> 4` (or `options.cs`), IP = entry - CS base; no other writes.
 * - `protected32`: the boot GDT at 0x500, CS 0x08, data 0x10, RSP 0x8000, paging off.
 * - `long64`: the same GDT (CS 0x18), identity page tables for 4 GiB at 0xa000-0xffff, CR3 0xa000.
 * Throws {@link LoaderError} (DOES_NOT_FIT, OVERLAP) when the image cannot be placed so, and
 * `RangeError` for malformed options.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadFlat } from "./flat.ts";
 * const plan = loadFlat(new Uint8Array([0xf4]), { addr: 0x7c00, mode: "real" });
 * assert.equal(plan.cpu.cs?.selector, 0x7c0);
 * assert.equal(plan.cpu.rip, 0n);
 * ```
 */
export function loadFlat(image: Uint8Array | ImageSource, options: FlatOptions): BootPlan {
  const source = imageSource(image);
  const format = `flat ${options.mode}`;
  const addr = toAddress(options.addr, "flat image address");
  const entry = options.entry === undefined ? addr : toAddress(options.entry, "flat image entry");
  const ramSize = options.ramSize === undefined ? undefined : toAddress(options.ramSize, "RAM size");
  const size = BigInt(source.size);
  const end = addr + size;
  const imageWrite = sourceWrite(addr, source, 0, source.size, "the image");
  const description = (mode: string) =>
    `flat binary: ${source.size} bytes at ${hex(addr)}, entry ${hex(entry)} in ${mode}`;
  checkInRam(addr, size, "the image", format, ramSize);
  const extras: LabelledWrite[] = (options.data ?? []).map((d, i) => {
    const what = d.what ?? `image ${i + 2}`;
    const data = imageSource(d.data);
    const write = sourceWrite(toAddress(d.addr, `${what} address`), data, 0, data.size, what);
    checkInRam(write.addr, BigInt(data.size), what, format, ramSize);
    return write;
  });

  switch (options.mode) {
    case "real": {
      let cs: { selector: number; base: bigint };
      if (options.cs !== undefined) {
        const { selector } = options.cs;
        if (!Number.isInteger(selector) || selector < 0 || selector > 0xffff) {
          throw new RangeError(`${format}: CS selector ${selector} is not a 16-bit value`);
        }
        cs = { selector, base: toAddress(options.cs.base, "real-mode CS base") };
      } else {
        if (addr % 16n !== 0n) {
          throw new RangeError(`${format}: address ${hex(addr)} is not 16-byte aligned; pass options.cs`);
        }
        if (end > REAL_MODE_END) {
          throw new LoaderError("DOES_NOT_FIT", `${format}: the image ${span(addr, size)} passes 1 MiB`);
        }
        cs = { selector: Number(addr >> 4n), base: addr };
      }
      const ip = entry - cs.base;
      if (ip < 0n || ip > REAL_MODE_OFFSET_LIMIT) {
        throw new LoaderError(
          "DOES_NOT_FIT",
          `${format}: entry ${hex(entry)} is not within 64 KiB above the CS base ${hex(cs.base)}`,
        );
      }
      checkNoOverlap([imageWrite, ...extras], format);
      return {
        writes: planWrites([imageWrite, ...extras]),
        cpu: { mode: "real", rip: ip, rflags: BOOT_RFLAGS, cs },
        description: `${description("real mode")} (CS ${hex(cs.selector)}, IP ${hex(ip)})`,
      };
    }
    case "protected32":
    case "long64": {
      const long = options.mode === "long64";
      const reach = long ? BOOT_IDENTITY_MAP_END : PROTECTED_MODE_END;
      if (end > reach || entry >= reach) {
        throw new LoaderError(
          "DOES_NOT_FIT",
          `${format}: the image ${span(addr, size)} or entry ${hex(entry)} is beyond ${hex(reach)}` +
            (long ? " (the identity map)" : ""),
        );
      }
      const writes: LabelledWrite[] = [bootGdtWrite()];
      if (long) {
        for (const table of identityPageTables()) writes.push({ ...table, what: "the boot page tables" });
      }
      const stack = {
        addr: BOOT_STACK_START,
        data: new Uint8Array(Number(BOOT_STACK_TOP - BOOT_STACK_START)),
      };
      checkNoOverlap([...writes, imageWrite, ...extras, { ...stack, what: "the boot stack" }], format);
      writes.push(imageWrite, ...extras);
      return {
        writes: planWrites(writes),
        cpu: {
          mode: options.mode,
          rip: entry,
          rsp: BOOT_STACK_TOP,
          rflags: BOOT_RFLAGS,
          cs: { selector: long ? BOOT_CODE64_SELECTOR : BOOT_CODE32_SELECTOR, base: 0n },
          gdt: bootGdtRegister(),
          ...(long ? { cr3: BOOT_PML4_START } : {}),
        },
        description: description(long ? "64-bit long mode" : "32-bit protected mode"),
      };
    }
    default:
      throw new RangeError(`flat: unknown CPU mode ${JSON.stringify(options.mode)}`);
  }
}
