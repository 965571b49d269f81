/**
 * Reading QEMU's captured `info mtree` text (tests/golden/qemu) for comparisons.
 *
 * @module
 */

import { type MemoryListener, type MemoryRegionSection } from "../mod.ts";

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
 * A stand-in accelerator for `info mtree -f` before KVM: maps what QEMU's KVM listener maps (RAM,
 * ROM and romd sections, trimmed to 4 KiB pages) and answers `hasMemory` for exact matches.
 */
export function fakeAccelerator(): MemoryListener {
  const slots = new Set<string>();
  const key = (start: bigint, size: bigint) => `${start}:${size}`;
  const trimmed = (s: MemoryRegionSection): [bigint, bigint] | null => {
    if (!s.region.isRam && !s.region.isRomd) return null;
    const start = (s.start + 0xfffn) & ~0xfffn;
    const delta = start - s.start;
    if (delta >= s.size) return null;
    const size = (s.size - delta) & ~0xfffn;
    return size > 0n ? [start, size] : null;
  };
  return {
    name: "fake-kvm",
    priority: 10,
    accelerator: "KVM",
    regionAdd: (s) => {
      const t = trimmed(s);
      if (t) slots.add(key(...t));
    },
    regionDel: (s) => {
      const t = trimmed(s);
      if (t) slots.delete(key(...t));
    },
    hasMemory: (start, size) => slots.has(key(start, size)),
  };
}
