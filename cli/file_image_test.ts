import assert from "node:assert/strict";
import { LoaderError } from "../machine/loader/mod.ts";
import { FileImage } from "./file_image.ts";

function withImage(bytes: Uint8Array, fn: (path: string, image: FileImage) => void): void {
  const path = Deno.makeTempFileSync({ prefix: "file-image-test-" });
  try {
    Deno.writeFileSync(path, bytes);
    using image = new FileImage(Deno.openSync(path), bytes.length, `-kernel ${path}`);
    fn(path, image);
  } finally {
    Deno.removeSync(path);
  }
}

const BYTES = Uint8Array.from({ length: 5000 }, (_, i) => (i * 31) & 0xff);

Deno.test("FileImage reads by position, in any order, as often as asked", () => {
  withImage(BYTES, (_path, image) => {
    assert.equal(image.size, BYTES.length);
    for (const [offset, length] of [[4000, 1000], [0, 16], [1, 4999], [4000, 1000], [5000, 0]]) {
      const target = new Uint8Array(length);
      image.readInto(offset, target);
      assert.deepEqual(target, BYTES.subarray(offset, offset + length), `[${offset}, +${length})`);
    }
    assert.throws(() => image.readInto(4999, new Uint8Array(2)), RangeError);
    assert.throws(() => image.readInto(-1, new Uint8Array(1)), RangeError);
  });
});

Deno.test("a file whose size changed is one CHANGED line naming it; a closed one is refused", () => {
  withImage(BYTES, (path, image) => {
    Deno.truncateSync(path, 100);
    const changed = (e: unknown) =>
      e instanceof LoaderError && e.code === "CHANGED" && !e.message.includes("\n") &&
      e.message ===
        `-kernel ${path}: the file changed since it was opened (5000 bytes when it was opened, 100 now)`;
    assert.throws(() => image.readInto(0, new Uint8Array(10)), changed);
    Deno.writeFileSync(path, BYTES);
    image.readInto(0, new Uint8Array(10)); // the same size again: read
    image.close();
    image.close(); // idempotent
    assert.throws(() => image.readInto(0, new Uint8Array(1)), /the file is closed/);
  });
});
