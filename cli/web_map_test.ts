import assert from "node:assert/strict";
import { PcBoard } from "../machine/pc/pc_board.ts";
import { type MapRegion, mapSnapshot, memslotData } from "./web_map.ts";
import { MemoryRegion } from "../memory/mod.ts";

/** The snapshot printed back as `info mtree` would print it. */
function treeText(map: ReturnType<typeof mapSnapshot>): string {
  const out: string[] = [];
  const row = (r: MapRegion, level: number) => {
    const head = `${r.start}-${r.end} (prio ${r.prio}, ${r.nv ? "nv-" : ""}${r.kind}): `;
    if (r.enabled) {
      out.push(
        `${"  ".repeat(level)}${head}${
          r.alias ? `alias ${r.name} @${r.alias.target} ${r.alias.start}-${r.alias.end}` : r.name
        }`,
      );
    }
    r.children.forEach((c) => row(c, level + 1));
  };
  for (const t of map.trees) {
    for (const s of t.spaces) out.push(`address-space: ${s}`);
    row(t.root, 1);
    out.push("");
  }
  for (const t of map.aliasTargets) {
    out.push(`memory-region: ${t.root.name}`);
    row(t.root, 1);
    out.push("");
  }
  return out.join("\n");
}

Deno.test("mapSnapshot holds exactly what info mtree prints of a PC board", async () => {
  using board = await PcBoard.create({ ramSize: 6n << 30n }); // RAM above 4 GiB too
  const spaces = [board.memory, board.cpuMemory, board.io];
  const map = mapSnapshot(spaces);
  assert.equal(treeText(map), board.mtree().trimEnd() + "\n");
  const flat = board.mtree({ flat: true }).split("\n").filter((l) => /^\s+[0-9a-f]{16}-/.test(l)).map((l) =>
    l.trim()
  );
  const mine = map.flat.flatMap((f) =>
    f.ranges.map((r) =>
      `${r.start}-${r.end} (prio ${r.prio}, ${r.kind}): ${r.name}${r.offset ? ` @${r.offset}` : ""}${
        r.kvm ? " KVM" : ""
      }`
    )
  );
  assert.deepEqual(mine, flat);
});

Deno.test("mapSnapshot follows a PAM change", async () => {
  using board = await PcBoard.create({ ramSize: 128n << 20n });
  const before = mapSnapshot([board.memory]).flat[0].ranges.find((r) => r.start === "00000000000f0000");
  assert.equal(before, undefined); // inside isa-bios's range
  board.map.pam.writeConfig(0x59, 0x30);
  const after = mapSnapshot([board.memory]).flat[0].ranges.find((r) => r.start === "00000000000f0000");
  // One range with the RAM above 1 MiB: the same region at contiguous offsets.
  assert.deepEqual(after && [after.name, after.kind, after.end], ["pc.ram", "ram", "0000000007ffffff"]);
});

Deno.test("memslotData lists slots by address with their flags", () => {
  const ram = MemoryRegion.ram("ram", 0x2000);
  const slots = memslotData([
    { index: 1, start: 0x10000n, size: 0x1000n, flags: 2, region: ram, regionOffset: 0x1000n },
    { index: 0, start: 0n, size: 0x1000n, flags: 1, region: ram, regionOffset: 0n },
  ]);
  assert.deepEqual(slots.map((s) => [s.slot, s.start, s.end, s.flags]), [
    [0, "0000000000000000", "0000000000000fff", 1],
    [1, "0000000000010000", "0000000000010fff", 2],
  ]);
});
