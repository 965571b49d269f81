import assert from "node:assert/strict";
import { FIRMWARE } from "../guests/mod.ts";
import { firmwareEntry } from "./firmware.ts";
import { LoaderError } from "./loader_error.ts";

Deno.test("firmwareEntry: the reset state F000:FFF0 with CS base 0xffff0000, nothing written", () => {
  const plan = firmwareEntry(FIRMWARE);
  assert.deepEqual(plan, {
    writes: [],
    cpu: { mode: "real", rip: 0xfff0n, rflags: 2n, cs: { selector: 0xf000, base: 0xffff_0000n } },
    description: "firmware: 256 KiB at 0xfffc0000, reset vector 0xfffffff0 (CS 0xf000, IP 0xfff0)",
  });
});

Deno.test("firmwareEntry refuses sizes that are not a nonzero multiple of 64 KiB", () => {
  for (const size of [0, 0x1000, 0x1_8000]) {
    assert.throws(() => firmwareEntry(new Uint8Array(size)), (error: unknown) => {
      assert.ok(error instanceof LoaderError);
      assert.equal(error.code, "DOES_NOT_FIT");
      assert.equal(error.message, `firmware: ${size} bytes is not a nonzero multiple of 64 KiB`);
      return true;
    });
  }
  assert.equal(
    firmwareEntry(new Uint8Array(0x2_0000)).description.startsWith("firmware: 128 KiB at 0xfffe0000"),
    true,
  );
});
