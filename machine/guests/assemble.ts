/**
 * Builds guests from GNU assembler source with binutils' `as` and `ld`: assemble to an ELF object,
 * link it to a flat binary at a fixed load address. Used by the committed guests' build script, the
 * tests' guests and the examples.
 *
 * Sources are plain GNU assembler (AT&T syntax, `.code16`/`.code32`/`.code64` chosen inside the
 * file); they are not run through the C preprocessor. Each must define `_start` at its first byte.
 * A source may `.include` files from its own folder (GNU as `-I`, the source's directory): the
 * guests here share their Multiboot header, UART routines and long-mode setup through `_*.inc` files.
 *
 * @module
 */

/** How to build a guest. */
export interface AssembleOptions {
  /** Guest-physical address the binary is linked for (its first byte). Default 0x1000. */
  readonly base?: number;
  /** 64 for a long-mode guest (`as --64`, `ld -m elf_x86_64`); otherwise 32-bit ELF, which also carries `.code16`. */
  readonly elf?: 32 | 64;
  /** Symbols defined before the source is read (`as --defsym NAME=VALUE`), for `.if` variants. */
  readonly defines?: Readonly<Record<string, number>>;
}

/** Default link address. */
export const GUEST_LOAD_ADDRESS = 0x1000;

async function run(command: string, args: string[]): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        `${command} not found: install binutils (apt-get install binutils) to build guests`,
      );
    }
    throw error;
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr);
    throw new Error(`${command} ${args.join(" ")} failed (exit ${output.code}):\n${stderr}`);
  }
}

/**
 * Assembles and links `source` into a flat binary whose first byte belongs at `options.base`.
 * Needs `--allow-run` (as, ld), `--allow-write` and `--allow-read` (a temporary directory).
 *
 * @example
 * ```ts ignore
 * import { assemble } from "./assemble.ts";
 * const code = await assemble(new URL("./echo.S", import.meta.url), { base: 0x10_0000, elf: 64 });
 * ```
 */
export async function assemble(source: string | URL, options: AssembleOptions = {}): Promise<Uint8Array> {
  const base = options.base ?? GUEST_LOAD_ADDRESS;
  const elf64 = options.elf === 64;
  const path = source instanceof URL ? decodeURIComponent(source.pathname) : source;
  const dir = await Deno.makeTempDir({ prefix: "guest-" });
  try {
    const object = `${dir}/guest.o`;
    const binary = `${dir}/guest.bin`;
    const sourceDir = path.slice(0, path.lastIndexOf("/") + 1) || ".";
    const defines = Object.entries(options.defines ?? {}).flatMap(([name, value]) => [
      "--defsym",
      `${name}=${value}`,
    ]);
    await run("as", [elf64 ? "--64" : "--32", ...defines, "-I", sourceDir, "-o", object, path]);
    await run("ld", [
      "-m",
      elf64 ? "elf_x86_64" : "elf_i386",
      "--oformat",
      "binary",
      "--build-id=none",
      "-Ttext",
      `0x${base.toString(16)}`,
      "-e",
      "_start",
      "-o",
      binary,
      object,
    ]);
    return await Deno.readFile(binary);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
