/**
 * Access speed through an address space: `deno bench memory/address_space_bench.ts`.
 * Kept apart from the render benchmarks, whose garbage would be collected during these.
 */
import { AddressSpace } from "../mod.ts";
import { bigContainer } from "./_bench_tree.ts";

const as = new AddressSpace(bigContainer(10_000), "bench");
const ranges = as.flatView().length;
let i = 0;
Deno.bench({ name: `4-byte RAM read, ${ranges} ranges, a different range each time`, group: "read" }, () => {
  i = (i + 7919) % 10_000; // stride over the whole space so the one-entry cache never hits
  as.read(BigInt(i) * 0x1000n + 0x10n, 4);
});
Deno.bench({ name: "4-byte RAM read, same range as the last access", group: "read" }, () => {
  as.read(0x1010n, 4);
});
const mmioAddr = 0x7000n * 7n; // region mmio49 (every seventh child is MMIO): dispatch through ops
Deno.bench({ name: "4-byte MMIO read through the region's ops", group: "read" }, () => {
  as.read(mmioAddr, 4);
});
