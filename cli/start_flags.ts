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
 * `--invocation-count-for-maglev=2000` (V8's default is 400) keeps a short run out of Maglev, V8's
 * middle optimizing tier. Start-up calls a few functions often enough for it (esbuild's keep-names
 * helper, once per bundled function and class; the KVM struct encoder), and its first compile costs a
 * plain run 3–6 MiB of peak RSS: the compiler's code pages in the `deno` executable, its zone and its
 * thread. Measured on a kvm_pvm host (built-in exit guest, 5 runs each): peak RSS 50.4–53.6 →
 * 47.5–48.0 MiB, resident after module loading 49.3–51.3 → 44.4–45.0 MiB, no function compiled at
 * all (`--trace-opt`). Long loops still go to Maglev on-stack (its OSR threshold is untouched): the
 * snapshot state file's CRC-32 (22 KB, once per restore) took 0.8–1.0 ms so and 1.7–2.1 ms with
 * `--no-maglev`, which saves the same memory. A long run's hot functions reach Maglev after 2,000
 * calls instead of 400, and TurboFan as before.
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
  "--v8-flags=--no-lazy,--invocation-count-for-maglev=2000",
];
