/**
 * Keeps the layers clean: `memory/` and `devices/` pure (no Deno.*, no FFI), `kvm/` the only
 * folder that opens native libraries, `cli/` and `main.ts` the only code that touches stdio,
 * `Deno.args` and `Deno.exit`. Tests and benchmarks are exempt.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

function sources(folder: string): { path: string; text: string }[] {
  const out: { path: string; text: string }[] = [];
  const walk = (dir: URL, rel: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    for (const entry of entries) {
      const path = `${rel}/${entry.name}`;
      if (entry.isDirectory) {
        if (entry.name !== "testdata") walk(new URL(`${entry.name}/`, dir), path); // test programs
      } else if (
        /\.ts$/.test(entry.name) && !/_(test|bench)\.ts$/.test(entry.name) &&
        !/^_test(ing|_util)\.ts$/.test(entry.name)
      ) {
        out.push({ path, text: Deno.readTextFileSync(new URL(entry.name, dir)) });
      }
    }
  };
  walk(new URL(`${folder}/`, ROOT), folder);
  return out;
}

function offenders(files: { path: string; text: string }[], pattern: RegExp): string[] {
  return files.filter((f) => pattern.test(f.text.replace(/^\s*(\/\/|\*).*$/gm, ""))).map((f) => f.path);
}

Deno.test("memory/ and devices/ are pure: no Deno.* and no FFI", () => {
  const files = [...sources("memory"), ...sources("devices")];
  assert.ok(files.length > 5, "the scan found the sources");
  assert.deepEqual(offenders(files, /\bDeno\.|dlopen|UnsafePointer/), []);
});

Deno.test("only kvm/ opens native libraries", () => {
  const files = ["memory", "devices", "machine", "cli", "examples"].flatMap(sources);
  assert.deepEqual(offenders(files, /Deno\.dlopen|UnsafePointer|UnsafeFnPointer/), []);
  assert.ok(offenders(sources("kvm"), /Deno\.dlopen/).length <= 1, "one dlopen, in kvm/_libc.ts");
});

Deno.test("only cli/ and main.ts touch stdio, Deno.args and Deno.exit", () => {
  const files = ["memory", "devices", "kvm", "machine"].flatMap(sources);
  assert.deepEqual(
    offenders(files, /console\.(log|error|warn|info)|Deno\.(args|exit|stdout|stderr|stdin)\b/),
    [],
  );
});
