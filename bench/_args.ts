/**
 * The benchmarks' command lines: `--help` prints the usage, and a wrong option or value is one line
 * naming it and exit status 2, never a stack trace.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** One option: a string (a number where `number` says so) or a flag. */
export interface BenchOption {
  type: "string" | "boolean";
  default?: string | boolean;
  multiple?: boolean;
  /** The value must be a whole number of at least {@link min}. */
  number?: boolean;
  /** The least value a `number` option takes (default 1). */
  min?: number;
}

/** What {@link benchArgs} parsed for options `O`: each option's value, and the positional arguments. */
export type BenchArgs<O extends Record<string, BenchOption>> = ReturnType<
  typeof parseArgs<{ options: O; allowPositionals: true; strict: true }>
>;

/**
 * Parses `args` for the benchmark `name` (as `deno task NAME` spells it). With `-h`/`--help` it prints
 * `usage` and exits 0; an unknown option, a missing value or a number that is not a whole number of at
 * least its `min` (default 1) prints one line and exits 2.
 */
export function benchArgs<const O extends Record<string, BenchOption>>(
  name: string,
  usage: string,
  options: O,
  args: string[] = Deno.args,
  maxPositionals = 0,
): BenchArgs<O> {
  if (args.includes("-h") || args.includes("--help")) {
    console.log(usage);
    Deno.exit(0);
  }
  const problem = benchArgsProblem(options, args, maxPositionals);
  if (typeof problem === "string") {
    console.error(`${name}: ${problem} (see --help)`);
    Deno.exit(2);
  }
  return problem;
}

/** {@link benchArgs} without the exits: the parsed arguments, or the line that says what is wrong. */
export function benchArgsProblem<const O extends Record<string, BenchOption>>(
  options: O,
  args: string[],
  maxPositionals = 0,
): BenchArgs<O> | string {
  const config = Object.fromEntries(
    Object.entries(options).map(([key, { type, default: value, multiple }]) => [
      key,
      { type, ...(value === undefined ? {} : { default: value }), ...(multiple ? { multiple } : {}) },
    ]),
  );
  let parsed;
  try {
    parsed = parseArgs({ args, options: config, allowPositionals: true, strict: true });
  } catch (error) {
    // node:util's messages end with advice for programs ("To specify a positional argument…").
    return (error as Error).message.split(/\.\s+(?=[A-Z])/)[0].replace(/\.$/, "");
  }
  if (parsed.positionals.length > maxPositionals) {
    return `unexpected argument ${parsed.positionals[maxPositionals]}`;
  }
  for (const [key, option] of Object.entries(options)) {
    const value = parsed.values[key];
    if (!option.number || value === undefined) continue;
    for (const text of [value].flat()) {
      const n = Number(text);
      const min = option.min ?? 1;
      if (typeof text !== "string" || !/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min) {
        const wanted = min === 1 ? "a positive whole number" : `a whole number of at least ${min}`;
        return `--${key} wants ${wanted}, not ${JSON.stringify(text)}`;
      }
    }
  }
  return { ...parsed, values: { ...parsed.values } } as BenchArgs<O>;
}
