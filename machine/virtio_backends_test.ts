/**
 * The disk backing's DISCARD and WRITE_ZEROES on real files: the blocks a file gives back (its
 * `st_blocks`) and what reads back, with `-drive discard=unmap` and without, on this machine's file
 * system and on tmpfs, which has no ZERO_RANGE (the fallback writes zeros).
 */
import assert from "node:assert/strict";
import { DiskImage } from "../kvm/disk_image.ts";
import { DiskBlockBacking } from "./virtio_backends.ts";

const MIB = 1 << 20;
const CHUNK = 256 * 1024;

/** A 1 MiB image of nonzero bytes in `dir` (every block allocated once it is written back). */
function filledImage(dir: string): string {
  const path = `${dir}/disk-${crypto.randomUUID().slice(0, 8)}.img`;
  using file = Deno.openSync(path, { write: true, create: true });
  file.writeSync(new Uint8Array(MIB).fill(0x5a));
  file.syncSync();
  return path;
}

const blocks = (path: string) => Deno.statSync(path).blocks!;
const bytesAt = (path: string, offset: number, length: number) =>
  Deno.readFileSync(path).subarray(offset, offset + length);

for (
  const [where, dir] of [["this file system", Deno.env.get("TMPDIR") ?? "/tmp"], [
    "tmpfs",
    "/dev/shm",
  ]] as const
) {
  const usable = (() => {
    try {
      return Deno.statSync(dir).isDirectory;
    } catch {
      return false;
    }
  })();
  if (!usable) console.log(`machine/virtio_backends_test.ts: the ${where} case skipped: no ${dir}`);
  Deno.test({
    name:
      `DiskBlockBacking on ${where}: discard=unmap frees blocks, ignore keeps them; write zeroes reads as zeros`,
    ignore: !usable,
    fn() {
      const path = filledImage(dir);
      try {
        const full = blocks(path);
        {
          using image = DiskImage.open(path, { lock: false });
          const ignore = new DiskBlockBacking(image);
          ignore.discard(BigInt(CHUNK), BigInt(CHUNK));
          assert.equal(blocks(path), full, "discard=ignore frees nothing");
          assert.ok(bytesAt(path, CHUNK, CHUNK).every((b) => b === 0x5a), "nor changes the data");
          ignore.writeZeroes(0n, 4096n, true); // may unmap, but discard=ignore: zeroed in place
          assert.ok(bytesAt(path, 0, 4096).every((b) => b === 0));
          const unmap = new DiskBlockBacking(image, { unmap: true });
          unmap.discard(BigInt(CHUNK), BigInt(CHUNK));
          assert.ok(
            blocks(path) <= full - CHUNK / 512,
            `${blocks(path)} of ${full} blocks: the range was freed`,
          );
          assert.ok(bytesAt(path, CHUNK, CHUNK).every((b) => b === 0), "a hole reads as zeros");
          const before = blocks(path);
          unmap.writeZeroes(BigInt(2 * CHUNK), BigInt(CHUNK), true);
          assert.ok(bytesAt(path, 2 * CHUNK, CHUNK).every((b) => b === 0));
          assert.ok(blocks(path) <= before - CHUNK / 512, "write zeroes with unmap freed the range");
          unmap.writeZeroes(BigInt(3 * CHUNK), 512n, false);
          assert.ok(bytesAt(path, 3 * CHUNK, 512).every((b) => b === 0));
          assert.ok(bytesAt(path, 3 * CHUNK + 512, 512).every((b) => b === 0x5a), "and nothing past it");
          assert.equal(Deno.statSync(path).size, MIB, "the size never changes");
        }
        // A read-only image: the fallocate fails (EBADF), which the device reports as IOERR.
        using ro = DiskImage.open(path, { readOnly: true, lock: false });
        assert.throws(() => new DiskBlockBacking(ro, { unmap: true }).discard(0n, 512n), /fallocate/);
      } finally {
        Deno.removeSync(path);
      }
    },
  });
}
