import assert from "node:assert/strict";
import { cpioNewc } from "./cpio.ts";

Deno.test("newc headers: magic, 4-byte alignment, trailer", () => {
  const archive = cpioNewc([{ name: "/init", type: "file", data: "abc" }]);
  const text = new TextDecoder().decode(archive);
  assert.equal(archive.length % 4, 0);
  assert.ok(text.startsWith("070701"));
  assert.equal(text.slice(6 + 8 * 6, 6 + 8 * 7), "00000003", "c_filesize");
  assert.ok(text.includes("init\0"), "the leading slash is dropped");
  assert.ok(text.includes("TRAILER!!!\0"));
  assert.throws(() => cpioNewc([{ name: "", type: "file" }]), /bad member name/);
});

let hasCpio = true;
try {
  new Deno.Command("cpio", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
} catch {
  hasCpio = false;
  console.log("machine/loader/cpio_test.ts: the system cpio is missing; the round-trip test is skipped");
}

Deno.test({
  name: "the system's cpio extracts what cpioNewc wrote: files, directories, symlinks, modes",
  ignore: !hasCpio,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "cpio-" });
    try {
      const archive = cpioNewc([
        { name: "bin", type: "directory" },
        { name: "bin/tool", type: "file", data: new Uint8Array([0, 1, 2, 3, 4]), mode: 0o700 },
        { name: "bin/sh", type: "symlink", data: "tool" },
        { name: "init", type: "file", data: "#!/bin/sh\necho hi\n" },
      ]);
      const child = new Deno.Command("cpio", { args: ["-id", "--quiet"], cwd: dir, stdin: "piped" }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(archive);
      await writer.close();
      assert.ok((await child.status).success);
      assert.deepEqual(await Deno.readFile(`${dir}/bin/tool`), new Uint8Array([0, 1, 2, 3, 4]));
      assert.equal((await Deno.stat(`${dir}/bin/tool`)).mode! & 0o777, 0o700);
      assert.equal(await Deno.readLink(`${dir}/bin/sh`), "tool");
      assert.equal(await Deno.readTextFile(`${dir}/init`), "#!/bin/sh\necho hi\n");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
