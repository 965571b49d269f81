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
 * `--no-maglev` leaves V8 one optimizing compiler, TurboFan (Ignition, Sparkplug, TurboFan: V8's
 * tiers before Maglev). A start-up calls a few functions often enough for Maglev (esbuild's
 * keep-names helper once per bundled function and class, the ACPI checksum's loop, the KVM struct
 * encoder), and its first compile alone costs a plain run ≈3–6 MiB of peak RSS: the compiler's code
 * pages in the `deno` executable, its zone and its thread. Measured on a kvm_pvm host (built-in
 * exit guest, split and in-kernel irqchip alike, 5 runs each): peak RSS 50.4–53.6 → 47.6–47.9 MiB,
 * resident after module loading 49.3–51.3 → 44.4–45.0 MiB. The exit path, where TurboFan is the
 * tier that counts, did not move (`deno task bench:exit`, two alternating runs of 5 rounds: the
 * device path ×1.105–1.109 of C with Maglev, ×1.093–1.100 without).
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
  "--v8-flags=--no-lazy,--no-maglev",
];
