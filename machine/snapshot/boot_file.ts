/**
 * A full snapshot's `boot` file: the bytes of its boot plan that are too big for the state file
 * (a kernel and an initrd kept in their files, any write of {@link BOOT_INLINE_LIMIT} bytes or
 * more), one after another. The state file names ranges of it ({@link SnapshotBoot}), so that a
 * restore reads only the small state file: the boot file is read when the restored guest resets
 * (a system reset loads the boot plan again), and checked against its recorded CRC-32 the first
 * time.
 *
 * @module
 */

import type { BootPlan, BootWrite } from "../loader/boot_plan.ts";
import { copyBootWrites, type ImageSource, readFileAt, ZERO_SOURCE } from "../loader/image_source.ts";
import { LoaderError } from "../loader/loader_error.ts";
import { SnapshotMismatchError } from "./errors.ts";
import { crc32 } from "./format.ts";
import { BOOT_INLINE_LIMIT, type SnapshotBoot, type SnapshotBootWrite } from "./snapshot_state.ts";

/** The boot file's name in a full snapshot's directory. */
export const BOOT_FILE = "boot";
/** What {@link BootFileSource} reads at once to check the whole file's CRC-32: 1 MiB. */
const CHECK_CHUNK_SIZE = 0x10_0000;

/**
 * Writes `dir`'s boot file for `plan` (creating `dir` if needed) and returns the plan as the state
 * file stores it. The bytes are streamed: a source range is read a chunk at a time
 * (`copyBootWrites`), never whole. The file is written as `boot.tmp` and renamed; on any failure
 * (a source file that changed: LoaderError CHANGED) nothing is left: neither `boot.tmp` nor `dir`
 * if this call created it and it is empty.
 *
 * @throws what a source's `readInto` throws, and file-system errors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BOOT_FILE, writeBootFile } from "./boot_file.ts";
 * const dir = Deno.makeTempDirSync();
 * const stored = writeBootFile(dir, {
 *   writes: [{ addr: 0x7c00n, data: new Uint8Array([0xf4]) }, { addr: 0x10_0000n, data: new Uint8Array(8192) }],
 *   cpu: { mode: "real", rip: 0n, cs: { selector: 0x7c0, base: 0x7c00n } },
 *   description: "",
 * });
 * assert.deepEqual(stored.writes[1], { addr: 0x10_0000n, offset: 0, length: 8192 });
 * assert.equal(Deno.statSync(`${dir}/${BOOT_FILE}`).size, 8192);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function writeBootFile(dir: string, plan: BootPlan): SnapshotBoot {
  let created = false;
  try {
    Deno.statSync(dir);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    Deno.mkdirSync(dir, { recursive: true });
    created = true;
  }
  const temporary = `${dir}/${BOOT_FILE}.tmp`;
  let size = 0;
  let crc = 0;
  try {
    const writes: SnapshotBootWrite[] = [];
    {
      using file = Deno.openSync(temporary, { write: true, create: true, truncate: true });
      const append = (bytes: Uint8Array) => {
        crc = crc32(bytes, crc);
        for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
        size += bytes.length;
      };
      for (const w of plan.writes) writes.push(storeWrite(w, size, append));
    }
    Deno.renameSync(temporary, `${dir}/${BOOT_FILE}`);
    return { writes, cpu: plan.cpu, description: plan.description, file: { size, crc } };
  } catch (error) {
    removeQuietly(temporary);
    if (created) removeQuietly(dir); // only if empty: non-recursive
    throw error;
  }
}

/** `w` as stored: inline, zeros, or appended to the boot file at `offset` through `append`. */
function storeWrite(w: BootWrite, offset: number, append: (bytes: Uint8Array) => void): SnapshotBootWrite {
  if ("data" in w && w.data.length < BOOT_INLINE_LIMIT) return { addr: w.addr, data: w.data };
  if ("source" in w && w.source === ZERO_SOURCE) return { addr: w.addr, zeros: w.length };
  let length = 0;
  copyBootWrites([w], (_, bytes) => {
    append(bytes);
    length += bytes.length;
  });
  return { addr: w.addr, offset, length };
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // already gone, or (a directory) not empty: nothing of ours to remove
  }
}

/**
 * The boot plan a restore of the chain whose full snapshot is in `dir` loads at a reset: `boot`'s
 * ranges become source writes on a {@link BootFileSource} over `dir`'s boot file. Only the file's
 * size is checked here; its bytes are read (and their CRC-32 checked) at the first reset.
 *
 * @throws {SnapshotMismatchError} for a boot file that is missing or not the recorded size.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { restoredBootPlan, writeBootFile } from "./boot_file.ts";
 * const dir = Deno.makeTempDirSync();
 * const cpu = { mode: "real" as const, rip: 0n, cs: { selector: 0x7c0, base: 0x7c00n } };
 * const stored = writeBootFile(dir, { writes: [{ addr: 0n, data: new Uint8Array(5000) }], cpu, description: "" });
 * const plan = restoredBootPlan(dir, stored);
 * assert.ok("source" in plan.writes[0] && plan.writes[0].length === 5000);
 * Deno.removeSync(`${dir}/boot`);
 * assert.throws(() => restoredBootPlan(dir, stored), /boot file .* cannot be used/);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function restoredBootPlan(dir: string, boot: SnapshotBoot): BootPlan {
  const path = `${dir}/${BOOT_FILE}`;
  let size: number;
  try {
    size = Deno.statSync(path).size;
  } catch (error) {
    throw new SnapshotMismatchError(
      `snapshot ${dir}: its boot file ${path} cannot be used: ${(error as Error).message}`,
    );
  }
  if (size !== boot.file.size) {
    throw new SnapshotMismatchError(
      `snapshot ${dir}: its boot file ${path} cannot be used: ${size} bytes, the snapshot recorded ${boot.file.size}`,
    );
  }
  const source = new BootFileSource(path, boot.file.size, boot.file.crc);
  return {
    writes: boot.writes.map((w): BootWrite =>
      "data" in w
        ? { addr: w.addr, data: w.data }
        : "zeros" in w
        ? { addr: w.addr, source: ZERO_SOURCE, offset: 0, length: w.zeros }
        : { addr: w.addr, source, offset: w.offset, length: w.length }
    ),
    cpu: boot.cpu,
    description: boot.description,
  };
}

/**
 * A snapshot's boot file as an image source. Each read opens the file (no descriptor is kept
 * between reads) and checks its size; the first read, and any read after the file's modification
 * time or inode changed, first reads the whole file and checks its CRC-32 against the recorded one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BootFileSource } from "./boot_file.ts";
 * import { crc32 } from "./format.ts";
 * const path = Deno.makeTempFileSync();
 * Deno.writeFileSync(path, new Uint8Array([1, 2, 3]));
 * const source = new BootFileSource(path, 3, crc32(new Uint8Array([1, 2, 3])));
 * const target = new Uint8Array(2);
 * source.readInto(1, target);
 * assert.deepEqual(target, new Uint8Array([2, 3]));
 * Deno.removeSync(path);
 * ```
 */
export class BootFileSource implements ImageSource {
  /** The boot file. */
  readonly path: string;
  /** Its recorded size. */
  readonly size: number;
  /** Its recorded CRC-32. */
  readonly crc: number;
  /** Modification time and inode of the file when its CRC-32 was last found right. */
  #checked: string | null = null;

  /** A source over the boot file at `path`, recorded as `size` bytes with CRC-32 `crc`. */
  constructor(path: string, size: number, crc: number) {
    this.path = path;
    this.size = size;
    this.crc = crc;
  }

  /**
   * Fills `target` with the file's bytes from `offset`.
   *
   * @throws {RangeError} for a range outside the recorded size.
   * @throws {LoaderError} (CHANGED) for a file that is gone, has another size, or whose bytes are
   *   not the ones recorded (its CRC-32 differs).
   */
  readInto(offset: number, target: Uint8Array): void {
    if (
      !Number.isSafeInteger(offset) || offset < 0 || offset + target.length > this.size
    ) {
      throw new RangeError(
        `${this.path}: read [${offset}, +${target.length}) outside its ${this.size} bytes`,
      );
    }
    let file: Deno.FsFile;
    try {
      file = Deno.openSync(this.path);
    } catch (error) {
      throw this.#changed(`it cannot be opened: ${(error as Error).message}`);
    }
    using _file = file;
    const info = file.statSync();
    if (info.size !== this.size) {
      throw this.#changed(`${info.size} bytes, the snapshot recorded ${this.size}`);
    }
    const key = `${info.mtime?.getTime()}:${info.dev}:${info.ino}`;
    if (this.#checked !== key) {
      this.#checked = null;
      const crc = fileCrc(file, this.size, (at) => this.#changed(`it ended at byte ${at}`));
      if (crc !== this.crc) {
        throw this.#changed(`CRC-32 ${hex(crc)}, the snapshot recorded ${hex(this.crc)}`);
      }
      this.#checked = key;
    }
    readFileAt(file, offset, target, (at) => this.#changed(`it ended at byte ${at}`));
  }

  #changed(why: string): LoaderError {
    return new LoaderError(
      "CHANGED",
      `snapshot boot file ${this.path} changed since it was written (${why})`,
    );
  }
}

function hex(crc: number): string {
  return `0x${crc.toString(16).padStart(8, "0")}`;
}

/** CRC-32 of the first `size` bytes of `file`, read a chunk at a time. */
function fileCrc(file: Deno.FsFile, size: number, short: (at: number) => Error): number {
  const buffer = new Uint8Array(Math.min(CHECK_CHUNK_SIZE, size));
  let crc = 0;
  for (let done = 0; done < size;) {
    const chunk = buffer.subarray(0, Math.min(buffer.length, size - done));
    readFileAt(file, done, chunk, short);
    crc = crc32(chunk, crc);
    done += chunk.length;
  }
  return crc;
}
