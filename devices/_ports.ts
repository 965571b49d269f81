/**
 * Argument checks shared by the port-I/O devices.
 *
 * @module
 */

/** Size of the x86 port-I/O space. */
export const PORT_SPACE_SIZE = 0x1_0000;

/** Checks that `[base, base + size)` lies in the 64 KiB port space; returns `base`. */
export function checkPortRange(base: number, size: number, what: string): number {
  if (!Number.isInteger(base) || base < 0) {
    throw new RangeError(`${what}: port ${base} is not a non-negative integer`);
  }
  if (!Number.isInteger(size) || size < 1) {
    throw new RangeError(`${what}: size ${size} is not a positive integer`);
  }
  if (base + size > PORT_SPACE_SIZE) {
    throw new RangeError(
      `${what}: ports 0x${base.toString(16)}+0x${size.toString(16)} end past 0x${
        PORT_SPACE_SIZE.toString(16)
      }`,
    );
  }
  return base;
}

/** Checks that `fn`, if given, is a function. */
export function checkCallback(fn: unknown, what: string): void {
  if (fn !== undefined && typeof fn !== "function") throw new TypeError(`${what} must be a function`);
}
