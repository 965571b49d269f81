import assert from "node:assert/strict";
import { main } from "./main.ts";

async function run(args: string[]): Promise<{ status: number; err: string }> {
  const err: string[] = [];
  const status = await main(args, { out: () => {}, err: (t) => void err.push(t), console: () => {} });
  return { status, err: err.join("\n") };
}

Deno.test("--web: a value that is not [HOST:]PORT is one line and status 2", async () => {
  for (const value of ["abc", "70000", "host:", ":8080", "a:b:1"]) {
    const { status, err } = await run(["--web", value, "--dump-mtree"]);
    assert.equal(status, 2, value);
    assert.match(
      err,
      /^error: --web .*: expected \[HOST:\]PORT with a port from 0 to 65535 \(try --help\)$/,
      value,
    );
  }
  const { status, err } = await run(["--web"]);
  assert.equal(status, 2);
  assert.match(err, /--web needs a value/);
});

Deno.test("--help lists --web", async () => {
  const out: string[] = [];
  assert.equal(await main(["--help"], { out: (t) => void out.push(t), err: () => {}, console: () => {} }), 0);
  assert.match(out.join("\n"), /--web \[HOST:\]PORT/);
});
