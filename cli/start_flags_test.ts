import assert from "node:assert/strict";
import { START_FLAGS } from "./start_flags.ts";

Deno.test("deno.json's start task runs main.ts with START_FLAGS, in that order", () => {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)));
  assert.equal(config.tasks.start, `deno run ${START_FLAGS.join(" ")} main.ts`);
});
