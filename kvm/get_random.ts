/**
 * The host's `getrandom(2)`, for virtio-rng: fills any buffer, guest memory included, from the
 * kernel's CSPRNG.
 *
 * @module
 */

import { libc } from "./_libc.ts";
import { retryOnEintr } from "./_syscalls.ts";
import { KvmError } from "./kvm_error.ts";

/** `GRND_NONBLOCK`: fail with EAGAIN instead of waiting for the pool's first seeding at boot. */
export const GRND_NONBLOCK = 0x1;

/**
 * Most bytes asked for per call: the kernel returns at most 32 MiB − 1 per call anyway, and
 * a request of up to 256 bytes is never cut short once the pool is seeded.
 */
const CHUNK = 1 << 24;

/**
 * Fills `into` with random bytes from the host kernel (`getrandom(buf, len, 0)`), looping over
 * short returns and retrying calls a signal interrupted; returns `into`. Give it a view of guest
 * RAM (`ram.bytes.subarray(gpa, gpa + n)`) and the kernel writes into the guest directly. Unlike
 * `crypto.getRandomValues` it has no 64 KiB limit. Waits only at early boot, until the kernel's
 * pool is first seeded.
 *
 * @throws {KvmError} with op `"getrandom"` (ENOSYS on kernels before 3.17).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getRandom } from "./mod.ts";
 * const bytes = getRandom(new Uint8Array(100_000));
 * assert.ok(bytes.some((byte: number) => byte !== 0));
 * ```
 */
export function getRandom(into: Uint8Array): Uint8Array {
  let done = 0;
  while (done < into.length) {
    const chunk = into.subarray(done, Math.min(into.length, done + CHUNK));
    const result = retryOnEintr(() => libc().getrandom(chunk, BigInt(chunk.length), 0));
    if (result < 0) throw new KvmError("getrandom", -result, { detail: `${chunk.length} bytes` });
    done += result;
  }
  return into;
}
