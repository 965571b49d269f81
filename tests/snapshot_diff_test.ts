/**
 * Diff snapshots and concurrent restores through the machine API (issue 11), on a real-mode guest
 * that writes ten known pages between two snapshots. Needs KVM (the nested VM where there is none).
 */
import assert from "node:assert/strict";
import { ifKvm, reportKvmSkip } from "../kvm/_testing.ts";
import { loadFlat } from "../machine/loader/mod.ts";
import { PcMachine } from "../machine/pc/pc_machine.ts";
import { decodeSnapshot } from "../machine/snapshot/snapshot_state.ts";
import { assemble, guestSource } from "./guests/assemble.ts";

reportKvmSkip("tests/snapshot_diff_test.ts");

const RAM = 32n << 20n;
const ENTRY = 0x1000n;
const WRITTEN_PAGES = Array.from({ length: 10 }, (_, i) => 0x30 + i);

async function guest(): Promise<PcMachine> {
  const image = await assemble(guestSource("snapshot_diff.S"), { base: Number(ENTRY) });
  return await PcMachine.create({
    ramSize: RAM,
    boot: loadFlat(image, { addr: ENTRY, mode: "real", ramSize: RAM }),
  });
}

function pagesOf(bitmap: Uint8Array): number[] {
  const out: number[] = [];
  for (let page = 0; page < bitmap.length * 8; page++) {
    if (bitmap[page >> 3] & (1 << (page & 7))) out.push(page);
  }
  return out;
}

function ramOf(pc: PcMachine): Uint8Array {
  return pc.memory.readBytes(0n, Number(RAM)).data;
}

Deno.test(
  "a diff snapshot holds exactly the pages written since the full one; base + diff restores as the full one",
  ifKvm,
  async () => {
    const dir = Deno.makeTempDirSync({ prefix: "kvmts-diff-" });
    try {
      {
        using pc = await guest();
        assert.equal(pc.run().kind, "exit");
        assert.equal(pc.snapshot(`${dir}/base`).kind, "full");
        assert.equal(pc.run().kind, "exit");
        const diff = pc.snapshot(`${dir}/diff`, { diff: true });
        assert.equal(diff.pages, WRITTEN_PAGES.length);
        pc.snapshot(`${dir}/full`); // the same moment, in full
      }
      const state = decodeSnapshot(Deno.readFileSync(`${dir}/diff/state`));
      assert.equal(state.memory.kind, "diff");
      // Nothing else: this guest has no stack, no kvmclock, no device that writes RAM.
      assert.deepEqual(pagesOf(state.memory.pages!), WRITTEN_PAGES);
      assert.equal(state.memory.base?.dir, `${dir}/base`);
      const onDisk = Deno.statSync(`${dir}/diff/memory.diff`);
      assert.ok(
        onDisk.blocks! * 512 <= 64 * 4096,
        `the diff file uses ${onDisk.blocks! * 512} bytes on disk`,
      );

      using fromDiff = await PcMachine.restore(`${dir}/diff`);
      using fromFull = await PcMachine.restore(`${dir}/full`);
      const a = ramOf(fromDiff);
      const b = ramOf(fromFull);
      for (const page of WRITTEN_PAGES) assert.equal(a[page * 4096] | (a[page * 4096 + 1] << 8), page << 8);
      assert.ok(a.every((byte, i) => byte === b[i]), "RAM differs between base + diff and full");
      assert.equal(fromDiff.registers(), fromFull.registers());
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

Deno.test("two machines restored from one snapshot at once are independent", ifKvm, async () => {
  const dir = Deno.makeTempDirSync({ prefix: "kvmts-twice-" });
  try {
    {
      using pc = await guest();
      assert.equal(pc.run().kind, "exit");
      pc.snapshot(`${dir}/s`);
    }
    using one = await PcMachine.restore(`${dir}/s`);
    using two = await PcMachine.restore(`${dir}/s`);
    assert.equal(one.run().kind, "exit"); // only the first writes its ten pages
    const first = ramOf(one);
    const second = ramOf(two);
    for (const page of WRITTEN_PAGES) {
      assert.equal(first[page * 4096 + 1], page);
      assert.equal(second[page * 4096 + 1], 0);
    }
    const file = Deno.readFileSync(`${dir}/s/memory`);
    assert.equal(file.length > 0x30000 ? file[0x30001] : 0, 0); // MAP_PRIVATE: the file never saw it
    assert.equal(two.run().kind, "exit");
    assert.deepEqual(ramOf(two), ramOf(one));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a diff with nothing to build on is refused", ifKvm, async () => {
  const dir = Deno.makeTempDirSync({ prefix: "kvmts-nobase-" });
  try {
    using pc = await guest();
    assert.equal(pc.run().kind, "exit");
    assert.throws(() => pc.snapshot(`${dir}/d`, { diff: true }), /needs an earlier snapshot/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
