/**
 * Entry point of `deno task start`: hands the command line to the front-end.
 *
 * @module
 */

import { main } from "./cli/main.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));
