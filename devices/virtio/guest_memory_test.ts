import assert from "node:assert/strict";
import { AddressSpace, DirtyLogClient, MemoryRegion } from "../../memory/mod.ts";
import { AddressSpaceGuestMemory } from "./guest_memory.ts";
import { viewBacking } from "./_test_util.ts";

/** RAM at 0x10000 and 0x20000 (adjacent, two regions), ROM at 0x40000, MMIO at 0x50000, RAM without views at 0x60000. */
function board() {
  const low = new Uint8Array(0x1_0000);
  const high = new Uint8Array(0x1_0000);
  const rom = new Uint8Array(0x1000);
  const system = MemoryRegion.container("system", 1n << 64n);
  const lowRam = MemoryRegion.ram("low", 0x1_0000, { backing: viewBacking(low) });
  system.addSubregion(0x1_0000, lowRam);
  system.addSubregion(0x2_0000, MemoryRegion.ram("high", 0x1_0000, { backing: viewBacking(high) }));
  system.addSubregion(0x4_0000, MemoryRegion.rom("rom", 0x1000, { backing: viewBacking(rom) }));
  system.addSubregion(0x5_0000, MemoryRegion.io("mmio", 0x1000, { read: () => 0 }));
  system.addSubregion(0x6_0000, MemoryRegion.ram("sparse", 0x1000));
  const as = new AddressSpace(system, "memory");
  return { low, lowRam, system, as, memory: new AddressSpaceGuestMemory(as) };
}

Deno.test("AddressSpaceGuestMemory.cache: the whole RAM range holding the bytes, live", () => {
  const t = board();
  using _ = t.as;
  const cache = t.memory.cache(0x1_8000n, 16, true)!;
  assert.equal(cache.start, 0x1_0000);
  assert.equal(cache.bytes.length, 0x1_0000);
  assert.equal(cache.writable, true);
  cache.data.setUint32(0x8000, 0x1234_5678, true);
  assert.equal(new DataView(t.low.buffer).getUint32(0x8000, true), 0x1234_5678);
  assert.equal(cache.valid(), true);
  // ROM: readable, never writable.
  const rom = t.memory.cache(0x4_0000n, 4, false)!;
  assert.equal(rom.writable, false);
  assert.equal(t.memory.cache(0x4_0000n, 4, true), null);
});

Deno.test("AddressSpaceGuestMemory.cache: none for MMIO, holes, ranges crossing regions, RAM without views, empty ranges", () => {
  const t = board();
  using _ = t.as;
  assert.equal(t.memory.cache(0x5_0000n, 4, false), null, "MMIO");
  assert.equal(t.memory.cache(0x3_0000n, 4, false), null, "hole");
  assert.equal(t.memory.cache(0x1_fff0n, 0x20, false), null, "two regions: RAM for check, but no one view");
  assert.equal(t.memory.check(0x1_fff0n, 0x20), true);
  assert.equal(t.memory.cache(0x6_0000n, 4, false), null, "SparseRam gives no views");
  assert.equal(t.memory.cache(0x1_0000n, 0, false), null, "empty");
  assert.equal(t.memory.cache(0xffff_ffff_ffff_fff0n, 0x20, false), null, "past 2^64");
});

Deno.test("AddressSpaceGuestMemory.cache: none at or past 2^53, where addresses are not exact numbers", () => {
  const bytes = new Uint8Array(0x1000);
  const system = MemoryRegion.container("system", 1n << 64n);
  system.addSubregion(1n << 53n, MemoryRegion.ram("far", 0x1000, { backing: viewBacking(bytes) }));
  system.addSubregion(
    (1n << 53n) - 0x1000n,
    MemoryRegion.ram("edge", 0x1000, { backing: viewBacking(bytes) }),
  );
  using as = new AddressSpace(system, "memory");
  const memory = new AddressSpaceGuestMemory(as);
  assert.equal(memory.check(1n << 53n, 4), true);
  assert.equal(memory.cache(1n << 53n, 4, false), null);
  assert.equal(memory.cache((1n << 53n) - 0x10n, 4, false)?.start, 2 ** 53 - 0x1000, "ends at 2^53: exact");
});

Deno.test("AddressSpaceGuestMemory.cache: invalid for good once the memory map changes", () => {
  const t = board();
  using _ = t.as;
  const cache = t.memory.cache(0x1_0000n, 4, true)!;
  t.lowRam.setAddress(0x8_0000);
  assert.equal(cache.valid(), false);
  t.lowRam.setAddress(0x1_0000);
  assert.equal(cache.valid(), false, "the same map again is still a new one");
  assert.equal(t.memory.cache(0x1_0000n, 4, true)!.valid(), true);
});

Deno.test("AddressSpaceGuestMemory.cache: a reported write marks its pages dirty while the region logs", () => {
  const t = board();
  using _ = t.as;
  const cache = t.memory.cache(0x1_0000n, 4, true)!;
  cache.wrote(0x2ffe, 4);
  assert.deepEqual(t.lowRam.takeDirtyPages(), [], "not logging");
  t.lowRam.setLog(true, DirtyLogClient.MIGRATION);
  const logged = t.memory.cache(0x1_0000n, 4, true)!;
  logged.wrote(0x2ffe, 4);
  assert.deepEqual(t.lowRam.takeDirtyPages(), [0x2000n, 0x3000n], "region offsets of both pages");
});

Deno.test("AddressSpaceGuestMemory.cache: RAM without views is refused again without a look-up, until the map changes", () => {
  const t = board();
  using _ = t.as;
  let lookups = 0;
  // One counting wrapper per flat view, so a new map is a new view here too.
  const wrappers = new WeakMap<object, { lookup: typeof t.as.view.lookup }>();
  const counting = new AddressSpaceGuestMemory({
    get view() {
      const view = t.as.view;
      let wrapper = wrappers.get(view);
      if (!wrapper) {
        wrappers.set(view, wrapper = { lookup: (addr: bigint) => (lookups++, view.lookup(addr)) });
      }
      return wrapper;
    },
    rw: (addr, data, isWrite) => t.as.rw(addr, data, isWrite),
    map: (addr, length, isWrite) => t.as.map(addr, length, isWrite),
  });
  assert.equal(counting.cache(0x6_0000n, 4, false), null);
  assert.ok(lookups > 0);
  lookups = 0;
  assert.equal(counting.cache(0x6_0800n, 4, true), null);
  assert.equal(lookups, 0, "the range is known to give no view");
  assert.notEqual(counting.cache(0x1_0000n, 4, false), null, "other ranges still do");
  // The RAM without views goes; RAM with views takes its place.
  t.system.addSubregionOverlap(
    0x6_0000,
    MemoryRegion.ram("viewed", 0x1000, { backing: viewBacking(new Uint8Array(0x1000)) }),
    1,
  );
  assert.equal(counting.cache(0x6_0000n, 4, true)?.start, 0x6_0000);
});
