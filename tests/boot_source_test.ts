/**
 * A guest loaded from an open file (the CLI's `-kernel`, `-initrd`, `-device loader`): the plan
 * names ranges of the file, the machine copies them into RAM when it is created and again at every
 * reset, and a file whose size changed since it was opened stops the reset with one CHANGED line.
 */
import assert from "node:assert/strict";
import { kvmAvailability, LoaderError, loadFlat, PcMachine } from "../mod.ts";
import { FileImage } from "../cli/file_image.ts";
import { readSnapshotChain } from "../machine/snapshot/snapshot.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`tests/boot_source_test.ts: skipped: ${KVM.reason}`);

const ADDR = 0x20_0000n;
/** Three chunks and a bit of the copy's 1 MiB buffer. */
const SIZE = 0x30_0100;

Deno.test({
  name: "a file-backed plan is copied in at create and read again at reset; a resized file is refused",
  ignore: !KVM.available,
  async fn() {
    const path = Deno.makeTempFileSync({ prefix: "boot-source-test-" });
    try {
      const first = Uint8Array.from({ length: SIZE }, (_, i) => (i * 7 + 3) & 0xff);
      Deno.writeFileSync(path, first);
      using image = new FileImage(Deno.openSync(path), SIZE, `-device loader,file=${path}`);
      const boot = loadFlat(image, { addr: ADDR, mode: "protected32", ramSize: 64n << 20n });
      assert.ok(boot.writes.some((w) => "source" in w && w.source === image), "the plan names the file");
      using pc = await PcMachine.create({ ramSize: 64n << 20n, boot });
      assert.deepEqual(pc.memory.readBytes(ADDR, SIZE).data, first);
      // The same size, new bytes: a reset loads what the file holds now.
      const second = first.map((b) => b ^ 0xff);
      Deno.writeFileSync(path, second);
      pc.reset();
      assert.deepEqual(pc.memory.readBytes(ADDR, SIZE).data, second);
      // Another size: the reset stops with one line naming the file.
      Deno.writeFileSync(path, second.subarray(0, SIZE - 1));
      assert.throws(
        () => pc.reset(),
        (e) =>
          e instanceof LoaderError && e.code === "CHANGED" &&
          e.message ===
            `-device loader,file=${path}: the file changed since it was opened (${SIZE} bytes when it was ` +
              `opened, ${SIZE - 1} now)`,
      );
    } finally {
      Deno.removeSync(path);
    }
  },
});

Deno.test({
  name:
    "a snapshot keeps a file-backed plan's bytes in its boot file: a small state file, and restores (and diffs) that reset without the source",
  ignore: !KVM.available,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "boot-source-snap-" });
    try {
      const path = `${dir}/image`;
      // A kernel's worth: more than 1 MiB, so more than one chunk of the boot file's writer.
      const bytes = Uint8Array.from({ length: 0x10_2345 }, (_, i) => (i * 5 + 1 + (i >> 12)) & 0xff);
      Deno.writeFileSync(path, bytes);
      const placed = (pc: PcMachine) => pc.memory.readBytes(ADDR, bytes.length).data;
      {
        using image = new FileImage(Deno.openSync(path), bytes.length, `-device loader,file=${path}`);
        const boot = loadFlat(image, { addr: ADDR, mode: "protected32", ramSize: 64n << 20n });
        using pc = await PcMachine.create({ ramSize: 64n << 20n, boot });
        const full = pc.snapshot(`${dir}/snap`);
        // The state file no longer holds the image: it is in the boot file beside it.
        assert.ok(full.stateBytes < bytes.length / 2, `a ${full.stateBytes}-byte state file`);
        assert.ok(Deno.statSync(`${dir}/snap/boot`).size >= bytes.length);
        // A diff of a machine created from the file writes no boot file: it uses its base's.
        pc.snapshot(`${dir}/diff`, { diff: true });
        assert.throws(() => Deno.statSync(`${dir}/diff/boot`), Deno.errors.NotFound);
      }
      const [link] = readSnapshotChain(`${dir}/snap`);
      const write = link.state.board.boot.writes.find((w) => w.addr === ADDR);
      assert.ok(write !== undefined && "offset" in write, "the image is a range of the boot file");
      const file = Deno.readFileSync(`${dir}/snap/boot`);
      assert.deepEqual(file.subarray(write.offset, write.offset + write.length), bytes);
      const diffChain = readSnapshotChain(`${dir}/diff`);
      assert.deepEqual(diffChain[1].state.board.boot, link.state.board.boot);
      Deno.removeSync(path);
      {
        using restored = await PcMachine.restore(`${dir}/diff`, {});
        restored.memory.writeBytes(ADDR, new Uint8Array(bytes.length)); // what a reset must undo
        restored.reset();
        assert.deepEqual(placed(restored), bytes);
        // A diff of a restored machine builds on the same boot file, and so does a full snapshot
        // of it (its own boot file, read from the first).
        restored.snapshot(`${dir}/diff2`, { diff: true });
        restored.snapshot(`${dir}/full2`);
      }
      for (const snap of ["diff2", "full2"]) {
        using again = await PcMachine.restore(`${dir}/${snap}`, {});
        again.memory.writeBytes(ADDR, new Uint8Array(bytes.length));
        again.reset();
        assert.deepEqual(placed(again), bytes, snap);
      }
      assert.deepEqual(Deno.readFileSync(`${dir}/full2/boot`), file);
      // A boot file whose bytes changed stops the reset with one CHANGED line (the restore itself
      // does not read it).
      file[file.length - 1] ^= 1;
      Deno.writeFileSync(`${dir}/snap/boot`, file);
      using changed = await PcMachine.restore(`${dir}/diff2`, {});
      assert.throws(
        () => changed.reset(),
        (e) =>
          e instanceof LoaderError && e.code === "CHANGED" && /snapshot boot file .*CRC-32/.test(e.message),
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
