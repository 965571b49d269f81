/**
 * Keeps the layers clean: `memory/` and `devices/` pure (no Deno.*, no FFI), `kvm/` the only
 * folder that opens native libraries, `cli/` and `main.ts` the only code that touches stdio,
 * `Deno.args` and `Deno.exit` (`nested/` may spawn processes, but not touch its own stdio), and
 * imports pointing only downwards, as ARCHITECTURE.md draws the layers. Tests and benchmarks are
 * exempt.
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

Deno.test("only cli/ and main.ts touch stdio, Deno.args and Deno.exit; nested/ only spawns", () => {
  const files = ["memory", "devices", "kvm", "machine", "nested"].flatMap(sources);
  assert.deepEqual(
    offenders(files, /console\.(log|error|warn|info)|Deno\.(args|exit|stdout|stderr|stdin)\b/),
    [],
  );
});

/**
 * What each layer may import of ours, as repository paths with a trailing slash (a folder) or
 * without (one file). ARCHITECTURE.md's rule: `memory/` imports nothing of ours outside itself;
 * `devices/` and `kvm/` only `memory/`; `machine/` only `memory/`, `devices/`, `kvm/`; `nested/` only
 * the cpio writer's folder `machine/loader/`; `cli/` anything but `tools/`; `tools/` anything.
 */
const ALLOWED_IMPORTS: Readonly<Record<string, readonly string[]>> = {
  memory: ["memory/"],
  devices: ["devices/", "memory/"],
  kvm: ["kvm/", "memory/"],
  machine: ["machine/", "memory/", "devices/", "kvm/"],
  nested: ["nested/", "machine/loader/"],
  cli: ["cli/", "main.ts", "mod.ts", "memory/", "devices/", "kvm/", "machine/", "nested/"],
};

/** Relative specifiers of `import … from`, `export … from`, `import "…"` and `import("…")`. */
const IMPORT_SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"']+)["']/g;

/** Each of `files`' imports of ours that `allowed` does not cover, as `file -> target`. */
function badImports(files: { path: string; text: string }[], allowed: readonly string[]): string[] {
  const out: string[] = [];
  for (const file of files) {
    const code = file.text.replace(/^\s*(\/\/|\*).*$/gm, ""); // JSDoc examples are not imports
    for (const [, specifier] of code.matchAll(IMPORT_SPECIFIER)) {
      const target = new URL(specifier, new URL(file.path, ROOT)).href.slice(ROOT.href.length);
      if (!allowed.some((a) => a.endsWith("/") ? target.startsWith(a) : target === a)) {
        out.push(`${file.path} -> ${target}`);
      }
    }
  }
  return out;
}

/**
 * Violations known and owned elsewhere, each to be removed with its fix: the memory-listener test
 * model imports the top-level `mod.ts` where `./mod.ts` would do (memory/ is being reworked in
 * parallel).
 */
const KNOWN_BAD_IMPORTS: readonly string[] = ["memory/_listener_model.ts -> mod.ts"];

for (const [layer, allowed] of Object.entries(ALLOWED_IMPORTS)) {
  Deno.test(`${layer}/ imports only ${allowed.join(", ")}`, () => {
    const files = sources(layer);
    assert.ok(files.length > 0, `the scan found ${layer}/'s sources`);
    assert.deepEqual(badImports(files, allowed).filter((bad) => !KNOWN_BAD_IMPORTS.includes(bad)), []);
  });
}

Deno.test("main.ts imports only cli/", () => {
  const text = Deno.readTextFileSync(new URL("main.ts", ROOT));
  assert.deepEqual(badImports([{ path: "main.ts", text }], ["cli/"]), []);
});
