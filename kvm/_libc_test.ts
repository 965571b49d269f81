import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { lazySymbols, libc } from "./_libc.ts";

// These need --allow-ffi only.

Deno.test("libc symbols are bound on first use, once, and stay the same function", () => {
  const symbols = libc();
  assert.ok(Object.keys(symbols).includes("ioctl_buf") && Object.keys(symbols).includes("pwritev64"));
  // This file never calls fdatasync: it is not bound yet.
  assert.equal(typeof Object.getOwnPropertyDescriptor(symbols, "fdatasync")?.get, "function");
  const getpid = symbols.getpid;
  assert.equal(getpid(), Deno.pid);
  assert.equal(symbols.getpid, getpid, "the second read finds the bound function");
  assert.equal(libc().getpid, getpid);
  const bound = Object.getOwnPropertyDescriptor(symbols, "getpid");
  assert.deepEqual(
    [bound?.value, bound?.writable, bound?.get],
    [getpid, false, undefined],
    "a plain data property once bound",
  );
});

Deno.test("lazySymbols binds each symbol once, on its first read; a failed bind is tried again", () => {
  const definitions = {
    one: { parameters: [], result: "i32" },
    two: { name: "other", parameters: ["i32"], result: "i32" },
  } as const;
  const bound: string[] = [];
  let fail = true;
  const lazy = lazySymbols(definitions, (name) => {
    bound.push(name);
    if (name === "two" && fail) throw new Error("no such symbol");
    return name === "one" ? () => 1 : (x: number) => x + 2;
  });
  assert.deepEqual(Object.keys(lazy), ["one", "two"]);
  assert.deepEqual(bound, []);
  const one = lazy.one;
  assert.equal(one(), 1);
  assert.equal(lazy.one, one);
  assert.deepEqual(bound, ["one"]);
  assert.throws(() => lazy.two(1), /no such symbol/);
  fail = false;
  assert.equal(lazy.two(1), 3);
  assert.equal(lazy.two(2), 4);
  assert.deepEqual(bound, ["one", "two", "two"]);
});

Deno.test("without --allow-ffi the first libc() call is a KvmError dlopen EPERM naming the flag", async () => {
  const module = fileURLToPath(new URL("./_libc.ts", import.meta.url));
  const script = `
    import { libc } from ${JSON.stringify(module)};
    try {
      libc();
      console.log("no error");
    } catch (e) {
      console.log(JSON.stringify({ name: e.name, op: e.op, code: e.code, errno: e.errno, message: e.message }));
    }`;
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, script);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--no-prompt", file], // no permission at all
    stdout: "piped",
    stderr: "piped",
  }).output().finally(() => Deno.remove(file));
  const stdout = new TextDecoder().decode(out.stdout).trim();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const error = JSON.parse(stdout);
  assert.deepEqual({ ...error, message: undefined }, {
    name: "KvmError",
    op: "dlopen",
    code: "EPERM",
    errno: 1,
    message: undefined,
  });
  assert.match(error.message, /^dlopen failed \(libc\.so\.6\): EPERM .*--allow-ffi/);
});
