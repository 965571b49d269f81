/**
 * Reading QEMU's captured `info mtree` text (tests/golden/qemu) for comparisons.
 *
 * @module
 */

import { KvmMemoryListener, type RamBacking } from "../mod.ts";

const GOLDEN_DIR = new URL("./golden/qemu/", import.meta.url);

/** The monitor output of a golden file, without its two `#` header lines (command, version). */
export function readGolden(name: string): string {
  const text = Deno.readTextFileSync(new URL(name, GOLDEN_DIR));
  const lines = text.split("\n");
  if (!lines[0].startsWith("# qemu-system-x86_64") || !lines[1].startsWith("# QEMU ")) {
    throw new Error(`${name}: missing the header lines that record the QEMU command`);
  }
  return lines.slice(2).join("\n");
}

/**
 * Splits mtree text into its blocks (QEMU prints them in hash-table order, so tests compare them
 * as a set), numbering FlatViews `#N` so the order does not matter.
 */
export function blocks(text: string, drop: RegExp[] = []): string[] {
  return text.split("\n\n")
    .map((b) =>
      b.split("\n").filter((line) => !drop.some((re) => re.test(line))).join("\n").replace(
        /^FlatView #\d+/,
        "FlatView #N",
      )
    )
    .filter((b) => b.trim() !== "");
}

/**
 * The KVM listener without KVM, for `info mtree -f` marks: its memslot calls go to a backend that
 * accepts everything, so ` KVM` appears exactly where the real listener would map.
 */
export function kvmListenerWithoutKvm(): KvmMemoryListener {
  return new KvmMemoryListener(
    {
      setUserMemoryRegion: () => {},
      getDirtyLog: (_slot, pages) => new Uint8Array(Math.ceil(pages / 64) * 8),
    },
    { maxSlots: 32, readonlyMem: true },
  );
}

let nextHostAddress = 0x7f00_0000_0000n;

/** A RAM backing with a page-aligned made-up host address (the listener needs one; no memory is used). */
export function fakeHostMemory(size: bigint): RamBacking {
  const hostAddress = nextHostAddress;
  nextHostAddress += (size + 0xfffn) & ~0xfffn;
  return { size, hostAddress, read: () => {}, write: () => {} };
}
