/**
 * The `deno run` flags that `deno task start` gives `main.ts` (deno.json's `start` task spells the
 * same list), for every program that starts the front-end as a user's command does: the nested VM's
 * run of it, the benchmarks and the guest tests' console.
 *
 * `--v8-flags=--no-lazy` makes V8 compile every function when its module loads, so Deno's code cache
 * (written on a module's first load) holds the bytecode of all of them. Left lazy, each function the
 * run calls is parsed and compiled at its first call in every process: measured on a kvm_pvm host
 * (built-in guest, `--timings`, 8 alternating runs each with a code cache of its own), VM creation
 * took 42–47 ms lazy and 21–24 ms eager, module loading 27–30 ms against 32–35, the whole run
 * 0.16–0.19 s against 0.14–0.16, and peak RSS was the same.
 *
 * @module
 */

/** The permissions and V8 flags of `deno task start`, in its order. */
export const START_FLAGS: readonly string[] = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-sys=systemMemoryInfo",
  "--allow-run",
  "--allow-env",
  "--allow-net",
  "--v8-flags=--no-lazy",
];
