import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { lastErrno, lazySymbols, libc } from "./_libc.ts";
import { EBADF, EINVAL, ENOENT } from "./_errno.ts";

// These need --allow-ffi only.

Deno.test("libc symbols are bound on first use, once, and stay the same function", () => {
  const symbols = libc();
  assert.ok(Object.keys(symbols).includes("ioctl_buf") && Object.keys(symbols).includes("pwritev64"));
  // This file never calls pwritev64: it is not bound yet.
  assert.equal(typeof Object.getOwnPropertyDescriptor(symbols, "pwritev64")?.get, "function");
  const read = symbols.read;
  assert.equal(read(-1, new Uint8Array(1), 1n), -1n);
  assert.equal(symbols.read, read, "the second read finds the bound function");
  assert.equal(libc().read, read);
  const bound = Object.getOwnPropertyDescriptor(symbols, "read");
  assert.deepEqual(
    [bound?.value, bound?.writable, bound?.get],
    [read, false, undefined],
    "a plain data property once bound",
  );
});

Deno.test("the cold calls go through syscall(2) with glibc's results and errno", () => {
  const c = libc();
  assert.equal(c.getpid(), Deno.pid);
  assert.ok(c.gettid() > 0);
  assert.equal(c.close(-1), -1);
  assert.equal(lastErrno(), EBADF);
  const path = new TextEncoder().encode("/dev/null\0");
  const fd = c.open(path, 0);
  assert.ok(fd >= 0);
  assert.equal(c.fcntl_int(fd, 3, /* F_GETFL */ 0), 0x8000 /* O_LARGEFILE */);
  assert.equal(c.close(fd), 0);
  assert.equal(c.open(new TextEncoder().encode("/nonexistent/x\0"), 0), -1);
  assert.equal(lastErrno(), ENOENT);
  // mmap: an address, then MAP_FAILED on a bad request; munmap and mprotect on the mapping.
  const page = c.mmap(null, 4096n, 3, 0x22, /* MAP_PRIVATE | MAP_ANONYMOUS */ -1, 0n);
  assert.notEqual(Deno.UnsafePointer.value(page), 0xffff_ffff_ffff_ffffn);
  new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(page!, 4096))[0] = 7;
  assert.equal(c.mprotect(page, 4096n, 1 /* PROT_READ */), 0);
  assert.equal(c.munmap(page, 4096n), 0);
  const failed = c.mmap(null, 0n, 3, 0x22, -1, 0n);
  assert.equal(BigInt(Deno.UnsafePointer.value(failed)), 0xffff_ffff_ffff_ffffn);
  assert.equal(lastErrno(), EINVAL);
  assert.equal(BigInt(c.lseek64(-1, 0n, 0)), -1n);
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
