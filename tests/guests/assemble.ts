/**
 * The test guests of this folder, built at test time with the project's assembler driver.
 *
 * @module
 */

export { assemble, type AssembleOptions, GUEST_LOAD_ADDRESS } from "../../machine/guests/assemble.ts";

/** The URL of a guest source in this folder, e.g. `guestSource("port_io.S")`. */
export function guestSource(name: string): URL {
  return new URL(`./${name}`, import.meta.url);
}
