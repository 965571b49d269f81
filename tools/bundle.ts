/**
 * Builds the start-up bundle that `main.ts` runs instead of the source when it is fresh: the
 * front-end (`cli/main.ts`) and every module the program starts by URL (each Worker, found as
 * `new URL("./…_worker.ts", import.meta.url)` in the sources it loads) bundled by `deno bundle`
 * with code splitting (the `await import()`ed parts stay in chunks of their own, loaded only by the
 * runs that need them), flat in one folder, so that `machine/bundled_module.ts` finds a Worker's
 * bundle as `<name>.js` beside any bundle file. The folder also gets the files a Worker reads
 * beside its module (`cli/web/` for the web Worker), and `manifest.json`: every input's size,
 * mtime and ctime and every output's, written last, which `cli/bundle_manifest.ts` checks at
 * start.
 *
 * Usage: deno task bundle [--out DIR] [--if-stale]
 *
 * `--out DIR` builds elsewhere than `build/` (tests); `--if-stale` does nothing when the bundle
 * there is fresh (`npm start`'s prestart).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  type BundleManifest,
  bundleState,
  type FileStamp,
  MANIFEST_NAME,
  stampFile,
} from "../cli/bundle_manifest.ts";

/** The source root: the folder of `main.ts`. */
const ROOT = new URL("../", import.meta.url);
/** The front-end, bundled as `main.js` (`BUNDLE_ENTRY`). */
const FRONT_END = "cli/main.ts";
/** Folders read at run time beside a module: source folder → the same folder beside the bundle. */
const ASSETS: readonly (readonly [source: string, bundled: string])[] = [["cli/web/", "web/"]];
/** Files that change how the sources resolve, besides the modules themselves. */
const CONFIG = ["deno.json"];
/** A module the program starts by URL: a Worker's module, by this project's naming. */
const WORKER_URL = /new URL\(\s*"(\.{1,2}\/[^"]+_worker\.ts)",\s*import\.meta\.url\s*\)/g;

/** What a build made: the folder, its manifest, and how long it took. */
export interface BundleResult {
  /** The bundle's folder. */
  readonly dir: URL;
  /** Its manifest, as written. */
  readonly manifest: BundleManifest;
  /** The modules bundled as entries, relative to the root. */
  readonly entries: readonly string[];
  /** Milliseconds the build took. */
  readonly ms: number;
}

function relative(url: URL): string {
  if (!url.href.startsWith(ROOT.href)) throw new Error(`bundle: ${url.href} is outside ${ROOT.href}`);
  return decodeURIComponent(url.href.slice(ROOT.href.length));
}

async function deno(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`deno ${args[0]} failed:\n${text.decode(out.stderr)}${text.decode(out.stdout)}`);
  }
  return text.decode(out.stdout);
}

/** The local modules `stub`'s graph loads (static and dynamic imports), relative to the root. */
async function graph(stub: string): Promise<string[]> {
  const info = JSON.parse(await deno(["info", "--json", stub])) as { modules: { specifier: string }[] };
  return info.modules.map((m) => new URL(m.specifier)).filter((u) => u.href.startsWith(ROOT.href)).map(
    relative,
  );
}

/** The stub entry that bundles `module` as `<name>.js`: the front-end runs itself when run directly. */
function stubText(module: string): string {
  const url = JSON.stringify(new URL(module, ROOT).href);
  if (module !== FRONT_END) return `import ${url};\n`;
  return `import { main } from ${url};\nexport { main };\nif (import.meta.main) Deno.exit(await main(Deno.args));\n`;
}

function entryName(module: string): string {
  return module === FRONT_END ? "main" : module.replace(/^.*\//, "").replace(/\.ts$/, "");
}

function filesUnder(dir: URL, rel = ""): string[] {
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory ? filesUnder(new URL(`${e.name}/`, dir), `${rel}${e.name}/`) : [`${rel}${e.name}`]
  ).sort();
}

/** The manifest as JSON, one file a line. */
function manifestText(m: BundleManifest): string {
  const stamps = (list: readonly FileStamp[]) => list.map((s) => `  ${JSON.stringify(s)}`).join(",\n");
  return `{\n "deno": ${JSON.stringify(m.deno)},\n "inputs": [\n${stamps(m.inputs)}\n ],\n` +
    ` "outputs": [\n${stamps(m.outputs)}\n ]\n}\n`;
}

/** Whether `dir` may be replaced by a bundle: missing, empty, or a bundle (it has a manifest). */
function isBundleFolder(dir: URL): boolean {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return true;
    throw e;
  }
  return names.length === 0 || names.includes(MANIFEST_NAME);
}

function stampAll(base: URL, paths: readonly string[]): FileStamp[] {
  return paths.map((p) => {
    const stamp = stampFile(base, p);
    if (stamp === undefined) throw new Error(`bundle: cannot stat ${new URL(p, base).pathname}`);
    return stamp;
  });
}

/**
 * Builds the bundle into `out` (a folder URL ending in `/`, replaced whole) and returns what it made.
 *
 * @throws {Error} when `deno bundle` fails, two entries share a name, or an input changed during
 * the build (nothing is replaced then).
 */
export async function buildBundle(out: URL): Promise<BundleResult> {
  const start = performance.now();
  if (ROOT.href.startsWith(out.href)) throw new Error(`bundle: ${out.pathname} holds the sources`);
  if (!isBundleFolder(out)) {
    throw new Error(`bundle: ${out.pathname} is not empty and holds no ${MANIFEST_NAME}`);
  }
  const stubs = await Deno.makeTempDir({ prefix: "kvm-ts-bundle-" });
  const fresh = new URL(`${out.href.replace(/\/$/, "")}.new-${Deno.pid}/`);
  try {
    // The entries: the front-end, then every Worker module its graph names, until none is new.
    const entries = [FRONT_END];
    let modules: string[] = [];
    for (let known = 0; known < entries.length;) {
      known = entries.length;
      const all = `${stubs}/all.ts`;
      await Deno.writeTextFile(
        all,
        entries.map((e) => `import ${JSON.stringify(new URL(e, ROOT).href)};\n`).join(""),
      );
      modules = await graph(all);
      for (const module of modules) {
        for (const match of Deno.readTextFileSync(new URL(module, ROOT)).matchAll(WORKER_URL)) {
          const worker = relative(new URL(match[1], new URL(module, ROOT)));
          if (!entries.includes(worker)) entries.push(worker);
        }
      }
    }
    const names = entries.map(entryName);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice !== undefined) throw new Error(`bundle: two entries named ${twice}.js (${entries.join(", ")})`);
    const assets = ASSETS.flatMap(([source]) =>
      filesUnder(new URL(source, ROOT)).map((f) => `${source}${f}`)
    );
    const inputs = [...new Set([...modules, ...CONFIG, ...assets])].sort();
    const before = stampAll(ROOT, inputs);

    for (const [i, entry] of entries.entries()) {
      await Deno.writeTextFile(`${stubs}/${names[i]}.ts`, stubText(entry));
    }
    await Deno.remove(fresh, { recursive: true }).catch(() => {});
    await deno([
      "bundle",
      "--quiet",
      "--platform",
      "deno",
      "--code-splitting",
      // Minified, a plain run's module loading is 2-4 ms shorter (12 alternating runs); class and
      // function names are kept, as snapshots name devices by class (machine/snapshot/device_states.ts).
      "--minify",
      "--keep-names",
      "--outdir",
      fresh.pathname,
      ...names.map((n) => `${stubs}/${n}.ts`),
    ]);
    // A literal `import("./chunk.js")` is part of Deno's module graph: every start would read and
    // analyse every lazy chunk (52 files instead of 27 for a plain run). Computed, a chunk is read
    // only when the run imports it.
    for (const file of filesUnder(fresh).filter((f) => f.endsWith(".js"))) {
      const url = new URL(file, fresh);
      const text = await Deno.readTextFile(url);
      const computed = computeDynamicImports(text);
      if (computed !== text) await Deno.writeTextFile(url, computed);
    }
    for (const [source, bundled] of ASSETS) {
      for (const file of filesUnder(new URL(source, ROOT))) {
        const to = new URL(`${bundled}${file}`, fresh);
        await Deno.mkdir(new URL("./", to), { recursive: true });
        await Deno.copyFile(new URL(`${source}${file}`, ROOT), to);
      }
    }
    const after = stampAll(ROOT, inputs);
    const moved = after.find((s, i) => JSON.stringify(s) !== JSON.stringify(before[i]));
    if (moved !== undefined) throw new Error(`bundle: ${moved[0]} changed during the build; run it again`);

    const manifest: BundleManifest = {
      deno: Deno.version.deno,
      inputs: before,
      outputs: stampAll(fresh, filesUnder(fresh)),
    };
    await Deno.writeTextFile(new URL(MANIFEST_NAME, fresh), manifestText(manifest));
    await Deno.remove(out, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    await Deno.rename(fresh, out);
    return { dir: out, manifest, entries, ms: performance.now() - start };
  } finally {
    await Deno.remove(stubs, { recursive: true });
    await Deno.remove(fresh, { recursive: true }).catch(() => {});
  }
}

/**
 * `text` with each `import("./name.js")` of a bundle file rewritten to import the same file through
 * a computed specifier, which Deno's module graph does not follow at start.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { computeDynamicImports } from "./bundle.ts";
 * assert.equal(
 *   computeDynamicImports('const m = await import("./pvh-AB12.js");'),
 *   'const m = await import(new URL("./pvh-AB12.js",import.meta.url).href);',
 * );
 * ```
 */
export function computeDynamicImports(text: string): string {
  return text.replace(/\bimport\("(\.\/[\w.-]+\.js)"\)/g, 'import(new URL("$1",import.meta.url).href)');
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { out: { type: "string" }, "if-stale": { type: "boolean", default: false } },
  });
  const out = values.out === undefined
    ? new URL("build/", ROOT)
    : new URL(`${values.out.replace(/\/$/, "")}/`, new URL(`file://${Deno.cwd()}/`));
  const state = bundleState(ROOT, out);
  if (values["if-stale"] && state.fresh) {
    console.log(`bundle: ${out.pathname} is fresh`);
  } else {
    if (!state.fresh) console.log(`bundle: ${state.reason}: building ${out.pathname}`);
    const result = await buildBundle(out);
    const bytes = result.manifest.outputs.reduce((sum, o) => sum + o[1], 0);
    console.log(
      `bundle: ${result.manifest.inputs.length} inputs, ${result.entries.length} entries → ` +
        `${result.manifest.outputs.length} files (${(bytes / 1024).toFixed(0)} KiB) in ${
          result.ms.toFixed(0)
        } ms`,
    );
  }
}
