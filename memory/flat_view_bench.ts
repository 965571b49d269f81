/**
 * Rendering and lookup speed: `deno bench memory/flat_view_bench.ts`. Figures go in the README.
 */
import { FlatView } from "../mod.ts";
import { bigContainer } from "./_bench_tree.ts";

const c10k = bigContainer(10_000);
const c100k = bigContainer(100_000);

Deno.bench({ name: "render 10,000 subregions", group: "render", baseline: true }, () => {
  FlatView.render(c10k);
});
Deno.bench({ name: "render 100,000 subregions", group: "render" }, () => {
  FlatView.render(c100k);
});
