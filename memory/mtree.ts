/**
 * `info mtree` text, byte-compatible with QEMU 7.2 (`mtree_info` in `system/memory.c`), so that a
 * board built here can be diffed against QEMU's own monitor output.
 *
 * QEMU prints its blocks in hash-table order, which changes between runs; here they come in
 * address-space creation order. Compare blocks as a set when diffing against QEMU.
 *
 * @module
 */

import { ADDRESS_SPACE_SIZE, hex16 } from "./address.ts";
import { show } from "./_check.ts";
import { AddressSpace } from "./address_space.ts";
import type { FlatView } from "./flat_view.ts";
import type { MemoryRegion } from "./memory_region.ts";

/** Options of {@link formatMtree}, named after QEMU's flags. */
export interface MtreeOptions {
  /** `-f`: print the flat views instead of the region trees. */
  flat?: boolean;
  /** `-D`: also print disabled regions, marked ` [disabled]` (tree view). */
  disabled?: boolean;
  /** `-o`: print each region's owner. */
  owner?: boolean;
}

const INDENT = "  ";
const MASK64 = ADDRESS_SPACE_SIZE - 1n;

/** QEMU's `MR_SIZE`: the inclusive end offset (size - 1, or 0 for an empty region). */
function lastOffset(size: bigint): bigint {
  return size === 0n ? 0n : size - 1n;
}

function ownerText(region: MemoryRegion): string {
  return region.owner ? ` owner:{${region.owner}}` : " orphan";
}

function printRegion(
  out: string[],
  mr: MemoryRegion,
  level: number,
  base: bigint,
  aliasQueue: MemoryRegion[],
  options: MtreeOptions,
): void {
  const start = (base + mr.addr) & MASK64;
  const end = (start + lastOffset(mr.size)) & MASK64;
  const overflow = start < base || end < start ? "[DETECTED OVERFLOW!] " : "";
  const show = mr.enabled || options.disabled;
  const disabled = mr.enabled ? "" : " [disabled]";
  const owner = options.owner ? ownerText(mr) : "";
  const nv = mr.nonvolatile ? "nv-" : "";
  const head = `${overflow}${hex16(start)}-${hex16(end)} (prio ${mr.priority}, ${nv}${mr.mtreeType}): `;
  const target = mr.aliasTarget;
  if (target) {
    if (!aliasQueue.includes(target)) aliasQueue.push(target);
    if (show) {
      const aend = mr.aliasOffset + lastOffset(mr.size);
      out.push(
        `${INDENT.repeat(level)}${head}alias ${mr.name} @${target.name} ${hex16(mr.aliasOffset)}-${
          hex16(aend)
        }${disabled}${owner}\n`,
      );
    }
  } else if (show) {
    out.push(`${INDENT.repeat(level)}${head}${mr.name}${disabled}${owner}\n`);
  }
  // Display order: address ascending, then higher priority, then list order (a stable sort).
  const children = mr.subregions.slice().sort((a, b) =>
    a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : b.priority - a.priority
  );
  for (const child of children) printRegion(out, child, level + 1, start, aliasQueue, options);
}

function formatTree(spaces: readonly AddressSpace[], options: MtreeOptions): string {
  const out: string[] = [];
  const groups = new Map<MemoryRegion, AddressSpace[]>();
  for (const as of spaces) {
    const group = groups.get(as.root) ?? [];
    group.push(as);
    groups.set(as.root, group);
  }
  const aliasQueue: MemoryRegion[] = [];
  for (const [root, group] of groups) {
    const names = group.map((as) => as.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of names) out.push(`address-space: ${name}\n`);
    printRegion(out, root, 1, 0n, aliasQueue, options);
    out.push("\n");
  }
  // The queue grows while it is printed: aliases inside these blocks add their targets too.
  for (let i = 0; i < aliasQueue.length; i++) {
    out.push(`memory-region: ${aliasQueue[i].name}\n`);
    printRegion(out, aliasQueue[i], 1, 0n, aliasQueue, options);
    out.push("\n");
  }
  return out.join("");
}

function accelerators(as: AddressSpace, start: bigint, size: bigint): string {
  let text = "";
  for (const listener of as.listeners) {
    if (listener.accelerator && listener.hasMemory?.(start, size)) text += ` ${listener.accelerator}`;
  }
  return text;
}

function formatFlat(spaces: readonly AddressSpace[], options: MtreeOptions): string {
  const out: string[] = [];
  const groups = new Map<FlatView, AddressSpace[]>();
  for (const as of spaces) {
    const group = groups.get(as.view) ?? [];
    group.push(as);
    groups.set(as.view, group);
  }
  let counter = 0;
  for (const [view, group] of groups) {
    out.push(`FlatView #${counter++}\n`);
    for (const as of group) {
      const alias = as.root.aliasTarget ? `, alias ${as.root.aliasTarget.name}` : "";
      out.push(` AS "${as.name}", root: ${as.root.name}${alias}\n`);
    }
    out.push(` Root memory region: ${view.root ? view.root.name : "(none)"}\n`);
    if (view.ranges.length === 0) {
      out.push(`${INDENT}No rendered FlatView\n\n`);
      continue;
    }
    for (const r of view.ranges) {
      const mr = r.region;
      const kind = `${r.nonvolatile ? "nv-" : ""}${r.readonly ? "rom" : mr.mtreeType}`;
      const offset = r.offsetInRegion !== 0n ? ` @${hex16(r.offsetInRegion)}` : "";
      let line = `${INDENT}${hex16(r.start)}-${
        hex16(r.start + lastOffset(r.size))
      } (prio ${mr.priority}, ${kind}): ${mr.name}${offset}`;
      if (options.owner) line += ownerText(mr);
      for (const as of group) line += accelerators(as, r.start, r.size);
      out.push(`${line}\n`);
    }
    out.push("\n");
  }
  return out.join("");
}

/**
 * Prints address spaces as QEMU 7.2's `info mtree` (`flat: true` for `info mtree -f`).
 *
 * @throws {TypeError} if `addressSpaces` is not an array of AddressSpace or `options` is not an object.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AddressSpace, formatMtree, MemoryRegion } from "../mod.ts";
 * const system = MemoryRegion.container("system", 1n << 64n);
 * system.addSubregion(0, MemoryRegion.ram("ram", 64n << 20n));
 * using memory = new AddressSpace(system, "memory");
 * assert.match(formatMtree([memory]), /\(prio 0, ram\): ram\n/);
 * assert.match(formatMtree([memory], { flat: true }), /Root memory region: ram\n/);
 * ```
 */
export function formatMtree(addressSpaces: readonly AddressSpace[], options: MtreeOptions = {}): string {
  if (!Array.isArray(addressSpaces)) {
    throw new TypeError(`formatMtree: expected an array of address spaces, got ${show(addressSpaces)}`);
  }
  addressSpaces.forEach((as, i) => {
    if (!(as instanceof AddressSpace)) {
      throw new TypeError(`formatMtree: entry ${i} is not an AddressSpace but ${show(as)}`);
    }
  });
  if (options === null || typeof options !== "object") {
    throw new TypeError(`formatMtree: options must be an object, got ${show(options)}`);
  }
  return options.flat ? formatFlat(addressSpaces, options) : formatTree(addressSpaces, options);
}
