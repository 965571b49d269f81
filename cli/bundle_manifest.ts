/**
 * The start-up bundle's record of what it was built from, and the check `main.ts` makes before it
 * runs the bundle instead of the source: a bundle is used only when every file it was built from
 * still has the size, modification time and change time it had during the build, and every file
 * of the bundle is as the build left it. Anything else (a missing bundle, an edited, added-to or
 * deleted source, another Deno) means the source runs.
 *
 * This module imports nothing: `main.ts` loads it on every start.
 *
 * @module
 */

/** The manifest's file name, in the bundle's folder. */
export const MANIFEST_NAME = "manifest.json";
/** The bundle's entry (the front-end, `cli/main.ts`), in the bundle's folder. */
export const BUNDLE_ENTRY = "main.js";

/** A file as `stat` saw it: path, size in bytes, mtime and ctime in milliseconds. */
export type FileStamp = readonly [path: string, size: number, mtimeMs: number, ctimeMs: number];

/** What `tools/bundle.ts` records beside the bundle. */
export interface BundleManifest {
  /** The Deno that built it (`Deno.version.deno`). */
  readonly deno: string;
  /** Every file the bundle was built from, path relative to the source root. */
  readonly inputs: readonly FileStamp[];
  /** Every file of the bundle, path relative to the bundle's folder. */
  readonly outputs: readonly FileStamp[];
}

/** Whether the bundle may run: its entry, or why not. */
export type BundleState = { readonly fresh: true; readonly entry: URL } | {
  readonly fresh: false;
  readonly reason: string;
};

/**
 * The stamp of the file `path` relative to `base`, or `undefined` when it cannot be stat'ed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stampFile } from "./bundle_manifest.ts";
 *
 * const stamp = stampFile(new URL("./", import.meta.url), "bundle_manifest.ts");
 * assert.equal(stamp?.[0], "bundle_manifest.ts");
 * assert.equal(stampFile(new URL("./", import.meta.url), "no_such_file.ts"), undefined);
 * ```
 */
export function stampFile(base: URL, path: string): FileStamp | undefined {
  return stampPath(decodeURIComponent(base.pathname), path);
}

/** {@link stampFile} on a folder path ending in `/`: no URL is parsed (`main.ts` stats ~160 files). */
function stampPath(base: string, path: string): FileStamp | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(base + path);
  } catch {
    return undefined;
  }
  return [path, info.size, info.mtime?.getTime() ?? -1, info.ctime?.getTime() ?? -1];
}

/** The first of `stamps` (paths relative to `base`) whose file differs from it now, or undefined. */
function firstChanged(base: URL, stamps: readonly FileStamp[]): string | undefined {
  const folder = decodeURIComponent(base.pathname);
  for (const stamp of stamps) {
    const now = stampPath(folder, stamp[0]);
    if (now === undefined || now[1] !== stamp[1] || now[2] !== stamp[2] || now[3] !== stamp[3]) {
      return stamp[0];
    }
  }
  return undefined;
}

/**
 * Whether the bundle in `dir` (a folder URL ending in `/`) was built from the sources under `root`
 * as they are now. Cheap: one small read and one `stat` per file. Without read permission for both
 * folders it answers stale rather than prompt.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bundleState } from "./bundle_manifest.ts";
 *
 * const empty = await Deno.makeTempDir();
 * const state = bundleState(new URL("../", import.meta.url), new URL(`file://${empty}/`));
 * assert.deepEqual(state, { fresh: false, reason: "no manifest.json" });
 * await Deno.remove(empty);
 * ```
 */
export function bundleState(root: URL, dir: URL): BundleState {
  for (const folder of dir.href.startsWith(root.href) ? [root] : [root, dir]) {
    if (Deno.permissions.querySync({ name: "read", path: folder }).state !== "granted") {
      return { fresh: false, reason: `no read permission for ${folder.pathname}` };
    }
  }
  let manifest: BundleManifest;
  try {
    manifest = JSON.parse(Deno.readTextFileSync(new URL(MANIFEST_NAME, dir)));
  } catch {
    return { fresh: false, reason: `no ${MANIFEST_NAME}` };
  }
  if (!Array.isArray(manifest?.inputs) || !Array.isArray(manifest.outputs) || manifest.inputs.length === 0) {
    return { fresh: false, reason: `${MANIFEST_NAME} is not a manifest` };
  }
  if (manifest.deno !== Deno.version.deno) {
    return { fresh: false, reason: `built by Deno ${manifest.deno}, this is ${Deno.version.deno}` };
  }
  const input = firstChanged(root, manifest.inputs);
  if (input !== undefined) return { fresh: false, reason: `${input} changed` };
  const output = firstChanged(dir, manifest.outputs);
  if (output !== undefined) return { fresh: false, reason: `bundle file ${output} changed` };
  return { fresh: true, entry: new URL(BUNDLE_ENTRY, dir) };
}
