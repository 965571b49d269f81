/**
 * Argument checks shared by the memory API's public functions, so that misuse gets one message
 * that names the value (never an engine error from deeper down).
 *
 * @module
 */

/** A value as a message shows it: strings quoted, arrays and objects by kind, the rest as text. */
export function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "function") return "a function";
  if (typeof value === "symbol") return value.toString();
  if (value !== null && typeof value === "object") {
    return `an object (${value.constructor?.name ?? "no prototype"})`;
  }
  return String(value);
}

/**
 * Checks `value` is a boolean.
 *
 * @throws {TypeError} naming `what` and the value otherwise.
 */
export function checkBoolean(value: unknown, what: string): boolean {
  if (typeof value !== "boolean") throw new TypeError(`${what}: expected true or false, got ${show(value)}`);
  return value;
}

/**
 * Checks `data` is a Uint8Array.
 *
 * @throws {TypeError} naming `what` and the value otherwise.
 */
export function checkBytes(data: unknown, what: string): Uint8Array {
  if (!(data instanceof Uint8Array)) throw new TypeError(`${what}: expected a Uint8Array, got ${show(data)}`);
  return data;
}
