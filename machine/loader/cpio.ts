/**
 * A writer for the cpio "newc" format, the archive Linux unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst). Pure: entries in, bytes out.
 *
 * @module
 */

/** One archive member. */
export interface CpioEntry {
  /** Path inside the archive, without a leading slash (`bin/sh`). */
  name: string;
  /** Kind of file. */
  type: "file" | "directory" | "symlink";
  /** Permission bits (default 0o755 for directories and files, 0o777 for links). */
  mode?: number;
  /** File contents, or the target of a symlink. */
  data?: Uint8Array | string;
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const TRAILER = "TRAILER!!!";
const encoder = new TextEncoder();

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

function pad4(parts: Uint8Array[], length: number): number {
  const rest = (4 - (length % 4)) % 4;
  if (rest) parts.push(new Uint8Array(rest));
  return length + rest;
}

/**
 * The newc archive of `entries`, ending with the trailer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cpioNewc } from "./cpio.ts";
 * const archive = cpioNewc([{ name: "init", type: "file", data: "#!/bin/sh\n" }]);
 * assert.equal(new TextDecoder().decode(archive.subarray(0, 6)), "070701");
 * ```
 */
export function cpioNewc(entries: readonly CpioEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let length = 0;
  const member = (ino: number, entry: CpioEntry | null) => {
    const name = entry ? entry.name.replace(/^\/+/, "") : TRAILER;
    if (entry && (name === "" || name.includes("\0"))) {
      throw new RangeError(`cpio: bad member name "${entry.name}"`);
    }
    const data = entry?.data === undefined
      ? new Uint8Array(0)
      : typeof entry.data === "string"
      ? encoder.encode(entry.data)
      : entry.data;
    const type = entry?.type;
    const kind = type === "directory" ? S_IFDIR : type === "symlink" ? S_IFLNK : entry ? S_IFREG : 0;
    const mode = entry ? kind | (entry.mode ?? (type === "symlink" ? 0o777 : 0o755)) : 0;
    const nameBytes = encoder.encode(`${name}\0`);
    const header = "070701" + [
      ino, // c_ino
      mode, // c_mode
      0, // c_uid
      0, // c_gid
      type === "directory" ? 2 : 1, // c_nlink
      0, // c_mtime
      type === "directory" ? 0 : data.length, // c_filesize
      0, // c_devmajor
      0, // c_devminor
      0, // c_rdevmajor
      0, // c_rdevminor
      nameBytes.length, // c_namesize
      0, // c_check
    ].map(hex8).join("");
    parts.push(encoder.encode(header), nameBytes);
    length = pad4(parts, length + header.length + nameBytes.length);
    if (type !== "directory" && data.length) {
      parts.push(data);
      length = pad4(parts, length + data.length);
    }
  };
  entries.forEach((entry, i) => member(i + 1, entry));
  member(0, null);
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
