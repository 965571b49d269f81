import assert from "node:assert/strict";
import * as memory from "./mod.ts";
import * as root from "../mod.ts";

Deno.test("the memory API publishes no internals", () => {
  for (const [where, mod] of [["memory/mod.ts", memory], ["mod.ts", root]] as const) {
    const internal = Object.keys(mod).filter((name) => name.startsWith("_"));
    assert.deepEqual(internal, [], `${where} exports internals`);
  }
  const methods = Object.getOwnPropertyNames(memory.AddressSpace.prototype);
  assert.deepEqual(methods.filter((name) => name.startsWith("_")), [], "AddressSpace has internal methods");
  assert.ok(!("flatViewRoot" in memory) && !("hex16" in memory), "helpers of the implementation stay inside");
});
