/**
 * Where a module that the program starts by URL (a Worker's, or `main.ts` for the nested VM) is:
 * beside its source, or, when this code runs from the start-up bundle (`tools/bundle.ts`), beside
 * the bundle.
 *
 * Inside the bundle every source module's `import.meta.url` is the URL of the bundle file that
 * holds it, so `new URL("./vcpu_worker.ts", import.meta.url)` names a file that does not exist
 * there. The bundle holds each such module as its own entry, `<name>.js`, flat in one folder
 * beside the other bundle files (`tools/bundle.ts` refuses two with one name); this module maps
 * the source URL to it.
 *
 * @module
 */

/**
 * Whether this code runs from the bundle: the bundle's files are JavaScript (`.js`), every source
 * module of the project is TypeScript (`.ts`).
 */
export const RUNNING_FROM_BUNDLE: boolean = import.meta.url.endsWith(".js");

/**
 * The module to load for `source`, a `.ts` module of this project given by its source URL: `source`
 * itself when running from source, its bundled twin `<name>.js` beside the bundle when running from
 * the bundle. Use it at every `new Worker(...)` site.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bundledModule } from "./bundled_module.ts";
 *
 * const source = new URL("./vcpu_worker.ts", import.meta.url);
 * assert.equal(bundledModule(source).href, source.href); // this example runs from source
 * ```
 */
export function bundledModule(source: URL): URL {
  if (!RUNNING_FROM_BUNDLE) return source;
  return bundleTwin(source, import.meta.url);
}

/**
 * The bundled twin of `source` in the folder of the bundle file `bundleFile`: its file name with
 * `.ts` replaced by `.js`.
 *
 * @throws {TypeError} when `source` is not a `.ts` module.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bundleTwin } from "./bundled_module.ts";
 *
 * const twin = bundleTwin(new URL("file:///kvm-ts/machine/vcpu_worker.ts"), "file:///kvm-ts/build/chunk-A1.js");
 * assert.equal(twin.href, "file:///kvm-ts/build/vcpu_worker.js");
 * ```
 */
export function bundleTwin(source: URL, bundleFile: string | URL): URL {
  const name = /([^/]+)\.ts$/.exec(source.pathname)?.[1];
  if (name === undefined) throw new TypeError(`bundledModule: ${source.href} is not a .ts module`);
  return new URL(`./${name}.js`, bundleFile);
}
