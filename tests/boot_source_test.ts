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
  fn() {
    const path = Deno.makeTempFileSync({ prefix: "boot-source-test-" });
    try {
      const first = Uint8Array.from({ length: SIZE }, (_, i) => (i * 7 + 3) & 0xff);
      Deno.writeFileSync(path, first);
      using image = new FileImage(Deno.openSync(path), SIZE, `-device loader,file=${path}`);
      const boot = loadFlat(image, { addr: ADDR, mode: "protected32", ramSize: 64n << 20n });
      assert.ok(boot.writes.some((w) => "source" in w && w.source === image), "the plan names the file");
      using pc = PcMachine.create({ ramSize: 64n << 20n, boot });
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
  name: "a snapshot stores a file-backed plan's ranges as bytes: a restore and its reset need no file",
  ignore: !KVM.available,
  fn() {
    const dir = Deno.makeTempDirSync({ prefix: "boot-source-snap-" });
    try {
      const path = `${dir}/image`;
      const bytes = Uint8Array.from({ length: 0x1_2345 }, (_, i) => (i * 5 + 1) & 0xff);
      Deno.writeFileSync(path, bytes);
      {
        using image = new FileImage(Deno.openSync(path), bytes.length, `-device loader,file=${path}`);
        const boot = loadFlat(image, { addr: ADDR, mode: "protected32", ramSize: 64n << 20n });
        using pc = PcMachine.create({ ramSize: 64n << 20n, boot });
        pc.snapshot(`${dir}/snap`);
      }
      const [link] = readSnapshotChain(`${dir}/snap`);
      const write = link.state.board.boot.writes.find((w) => w.addr === ADDR);
      assert.ok(write !== undefined && "data" in write);
      assert.deepEqual(write.data, bytes);
      Deno.removeSync(path);
      using restored = PcMachine.restore(`${dir}/snap`, {});
      restored.reset();
      assert.deepEqual(restored.memory.readBytes(ADDR, bytes.length).data, bytes);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
