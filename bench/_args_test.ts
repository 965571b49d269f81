import assert from "node:assert/strict";
import { benchArgsProblem } from "./_args.ts";

const OPTIONS = {
  runs: { type: "string", default: "10", number: true },
  only: { type: "string", multiple: true },
  decode: { type: "boolean", default: false },
} as const;

Deno.test("bench arguments: values, defaults and positionals within the limit", () => {
  assert.deepEqual(benchArgsProblem(OPTIONS, ["--runs", "3", "--only", "a", "--only", "b"]), {
    values: { runs: "3", only: ["a", "b"], decode: false },
    positionals: [],
  });
  assert.deepEqual(benchArgsProblem(OPTIONS, ["256M"], 1), {
    values: { runs: "10", decode: false },
    positionals: ["256M"],
  });
});

Deno.test("bench arguments: each mistake is one line that names it", () => {
  const cases: [string[], string][] = [
    [["--bogus"], "Unknown option '--bogus'"],
    [["--runs"], "Option '--runs <value>' argument missing"],
    [["--runs", "0"], '--runs wants a positive whole number, not "0"'],
    [["--runs", "2.5"], '--runs wants a positive whole number, not "2.5"'],
    [["--runs", "ten"], '--runs wants a positive whole number, not "ten"'],
    [["--decode=yes"], "Option '--decode' does not take an argument"],
    [["extra"], "unexpected argument extra"],
  ];
  for (const [args, line] of cases) assert.equal(benchArgsProblem(OPTIONS, args), line, args.join(" "));
});

Deno.test("bench arguments: a number option with min 0 takes 0 and still refuses what is not a whole number", () => {
  const options = { warmup: { type: "string", default: "1", number: true, min: 0 } } as const;
  assert.deepEqual(benchArgsProblem(options, ["--warmup", "0"]), {
    values: { warmup: "0" },
    positionals: [],
  });
  assert.equal(
    benchArgsProblem(options, ["--warmup=-1"]),
    '--warmup wants a whole number of at least 0, not "-1"',
  );
  // node:util's own message is three lines; the first says it.
  assert.equal(benchArgsProblem(options, ["--warmup", "-1"]), "Option '--warmup' argument is ambiguous");
  assert.equal(
    benchArgsProblem(options, ["--warmup", "1.5"]),
    '--warmup wants a whole number of at least 0, not "1.5"',
  );
});
