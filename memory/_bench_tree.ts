/**
 * The region tree the memory benchmarks share.
 *
 * @module
 */

import { MemoryRegion } from "./memory_region.ts";

const ops = { read: () => 0, write: () => {} };

/**
 * A container with `n` children: every tenth an alias into a shared RAM, every seventh an MMIO
 * region, the rest RAM; priorities cycle through -1..2 and a quarter of the children overlap
 * their neighbour, so the renderer has real precedence work to do.
 */
export function bigContainer(n: number): MemoryRegion {
  const root = MemoryRegion.container("root", 1n << 64n);
  const shared = MemoryRegion.ram("shared", 0x100_0000);
  for (let i = 0; i < n; i++) {
    const addr = BigInt(i) * 0x1000n;
    const size = i % 4 === 0 ? 0x1800n : 0x1000n; // overlaps the next child
    const child = i % 10 === 0
      ? MemoryRegion.alias(`alias${i}`, shared, BigInt(i % 256) * 0x1000n, size)
      : i % 7 === 0
      ? MemoryRegion.io(`mmio${i}`, size, ops)
      : MemoryRegion.ram(`ram${i}`, size);
    root.addSubregionOverlap(addr, child, (i % 4) - 1);
  }
  return root;
}
