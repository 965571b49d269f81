/**
 * An input file (`-kernel`, `-initrd`, `-device loader`) kept open for the run and read by
 * position, so that the loaders read only its headers and the guest's memory gets its bytes a
 * chunk at a time: the file is never held whole in the JavaScript heap. A reset reads it again,
 * as Cloud Hypervisor re-reads its kernel on reboot; a file whose size changed meanwhile is refused
 * in one line.
 *
 * @module
 */

import { type ImageSource, readFileAt } from "../machine/loader/image_source.ts";
import { LoaderError } from "../machine/loader/loader_error.ts";

/**
 * An open file as an image source. Deno has no `pread`: a read is a seek and reads on the one
 * handle, which only the VM thread uses.
 */
export class FileImage implements ImageSource, Disposable {
  /** How messages name the file: `-kernel PATH`. */
  readonly label: string;
  /** Bytes in the file when it was opened. */
  readonly size: number;
  #file: Deno.FsFile | null;

  /** Takes ownership of `file`, whose size is `size`. */
  constructor(file: Deno.FsFile, size: number, label: string) {
    this.#file = file;
    this.size = size;
    this.label = label;
  }

  /**
   * Fills `target` from `offset`.
   *
   * @throws {LoaderError} CHANGED when the file's size is no longer the one it had when opened (or
   *   it ends early).
   * @throws {RangeError} for a range outside the file, or a closed file.
   */
  readInto(offset: number, target: Uint8Array): void {
    const file = this.#file;
    if (file === null) throw new RangeError(`${this.label}: the file is closed`);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + target.length > this.size) {
      throw new RangeError(
        `${this.label}: read [${offset}, +${target.length}) outside its ${this.size} bytes`,
      );
    }
    const now = file.statSync().size;
    if (now !== this.size) throw this.#changed(`${this.size} bytes when it was opened, ${now} now`);
    readFileAt(file, offset, target, (at) => this.#changed(`it ended at byte ${at} of ${this.size}`));
  }

  #changed(why: string): LoaderError {
    return new LoaderError("CHANGED", `${this.label}: the file changed since it was opened (${why})`);
  }

  /** Closes the file; later reads throw. Idempotent. */
  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  /** {@link FileImage.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
