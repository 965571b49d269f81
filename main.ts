/**
 * Entry point of `deno task start`: hands the command line to the front-end. It runs the start-up
 * bundle (`build/`, made by `deno task bundle`) when that was built from the sources as they are
 * now, and the source (`cli/main.ts`) otherwise: the same program, the bundle loads faster.
 *
 * @module
 */

import { bundleState } from "./cli/bundle_manifest.ts";

if (import.meta.main) {
  const bundle = bundleState(new URL("./", import.meta.url), new URL("./build/", import.meta.url));
  // A computed specifier: Deno loads the source's module graph only when this takes it.
  const front: typeof import("./cli/main.ts") = await import(
    bundle.fresh ? bundle.entry.href : new URL("./cli/main.ts", import.meta.url).href
  );
  Deno.exit(await front.main(Deno.args));
}
