import assert from "node:assert/strict";
import { type BundleManifest, bundleState, MANIFEST_NAME, stampFile } from "./bundle_manifest.ts";

/** A source root with one input and a bundle folder with one output, and its manifest. */
async function fixture(): Promise<
  { root: URL; dir: URL; write: (m: BundleManifest) => void; manifest: BundleManifest }
> {
  const root = new URL(`file://${await Deno.makeTempDir({ prefix: "bundle-manifest-" })}/`);
  const dir = new URL("build/", root);
  Deno.mkdirSync(new URL("cli/", root));
  Deno.mkdirSync(dir);
  Deno.writeTextFileSync(new URL("cli/main.ts", root), "export const x = 1;\n");
  Deno.writeTextFileSync(new URL("main.js", dir), "export const x = 1;\n");
  const manifest: BundleManifest = {
    deno: Deno.version.deno,
    inputs: [stampFile(root, "cli/main.ts")!],
    outputs: [stampFile(dir, "main.js")!],
  };
  const write = (m: BundleManifest) => Deno.writeTextFileSync(new URL(MANIFEST_NAME, dir), JSON.stringify(m));
  write(manifest);
  return { root, dir, write, manifest };
}

Deno.test("bundleState: fresh while every input and output is as recorded", async () => {
  const { root, dir } = await fixture();
  assert.deepEqual(bundleState(root, dir), { fresh: true, entry: new URL("main.js", dir) });
  await Deno.remove(root, { recursive: true });
});

Deno.test("bundleState: stale when an input's mtime, size or existence changes", async (t) => {
  const { root, dir } = await fixture();
  const input = new URL("cli/main.ts", root);
  await t.step("mtime", () => {
    const before = Deno.statSync(input).mtime!;
    Deno.utimeSync(input, before, new Date(before.getTime() + 1000));
    assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "cli/main.ts changed" });
  });
  await t.step("size", async () => {
    const { root, dir } = await fixture();
    const input = new URL("cli/main.ts", root);
    const before = Deno.statSync(input);
    Deno.writeTextFileSync(input, "export const x = 12;\n");
    Deno.utimeSync(input, before.atime!, before.mtime!); // only the size (and maybe the ctime) tells
    assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "cli/main.ts changed" });
    await Deno.remove(root, { recursive: true });
  });
  await t.step("deleted", async () => {
    const { root, dir } = await fixture();
    Deno.removeSync(new URL("cli/main.ts", root));
    assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "cli/main.ts changed" });
    await Deno.remove(root, { recursive: true });
  });
  await Deno.remove(root, { recursive: true });
});

Deno.test("bundleState: stale when a bundle file changed", async () => {
  const { root, dir } = await fixture();
  const file = new URL("main.js", dir);
  Deno.writeTextFileSync(file, "export const x = 2;\n"); // the same size
  // A rewrite within the file system's clock tick (a few ms) can keep the recorded mtime and ctime:
  // the test moves the mtime on, as any later edit does.
  const later = new Date(Deno.statSync(file).mtime!.getTime() + 2000);
  Deno.utimeSync(file, later, later);
  assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "bundle file main.js changed" });
  await Deno.remove(root, { recursive: true });
});

Deno.test("bundleState: stale without a manifest, with a broken one, or from another Deno", async () => {
  const { root, dir, write, manifest } = await fixture();
  write({ ...manifest, deno: "0.0.1" });
  assert.deepEqual(bundleState(root, dir), {
    fresh: false,
    reason: `built by Deno 0.0.1, this is ${Deno.version.deno}`,
  });
  Deno.writeTextFileSync(new URL(MANIFEST_NAME, dir), "{");
  assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "no manifest.json" });
  Deno.writeTextFileSync(new URL(MANIFEST_NAME, dir), "null");
  assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "manifest.json is not a manifest" });
  write({ ...manifest, inputs: [] });
  assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "manifest.json is not a manifest" });
  Deno.removeSync(new URL(MANIFEST_NAME, dir));
  assert.deepEqual(bundleState(root, dir), { fresh: false, reason: "no manifest.json" });
  await Deno.remove(root, { recursive: true });
});
