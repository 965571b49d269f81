/**
 * The memory file of a snapshot: writing it (full or diff) and mapping a chain of them back as
 * guest memory.
 *
 * - **Full:** every block at its offset ({@link layoutBlocks}); pages that are all zero are left
 *   as holes (the file is sparse), so its size on disk is what the guest used.
 * - **Diff:** the same layout and length, but only the RAM pages the dirty log named are written;
 *   everything else is a hole. Which pages it holds is in the state file (a bitmap), so a page the
 *   guest zeroed is restored as zero rather than mistaken for a hole.
 * - **Restore:** the base's blocks are mapped `MAP_PRIVATE` from its file ({@link GuestMemory.fromFile}:
 *   nothing read up front); each diff of the chain then copies its pages over the private mapping.
 *
 * @module
 */

import { GuestMemory } from "../../kvm/guest_memory.ts";
import type { MemoryBlock, SnapshotMemory } from "./snapshot_state.ts";

/** The page size of memory files and dirty bitmaps. */
export const SNAPSHOT_PAGE_SIZE = 4096;
const PAGE = BigInt(SNAPSHOT_PAGE_SIZE);

/** The blocks `sizes` laid out one after the other, each from a page boundary. */
export function layoutBlocks(sizes: readonly { name: string; size: bigint }[]): MemoryBlock[] {
  let offset = 0n;
  return sizes.map(({ name, size }) => {
    const block = { name, offset, size };
    offset += (size + PAGE - 1n) / PAGE * PAGE;
    return block;
  });
}

/** The length of a memory file with `blocks`. */
export function memoryFileLength(blocks: readonly MemoryBlock[]): bigint {
  const last = blocks[blocks.length - 1];
  return last === undefined ? 0n : last.offset + (last.size + PAGE - 1n) / PAGE * PAGE;
}

function isZeroPage(words: Uint32Array, first: number): boolean {
  const end = first + SNAPSHOT_PAGE_SIZE / 4;
  for (let i = first; i < end; i++) if (words[i] !== 0) return false;
  return true;
}

function writeAll(file: Deno.FsFile, at: bigint, bytes: Uint8Array): void {
  file.seekSync(at, Deno.SeekMode.Start);
  let done = 0;
  while (done < bytes.length) done += file.writeSync(bytes.subarray(done));
}

/** Writes runs of consecutive selected pages of `bytes` at `base` in the file. */
function writeRuns(
  file: Deno.FsFile,
  base: bigint,
  bytes: Uint8Array,
  selected: (page: number) => boolean,
): number {
  const pages = Math.ceil(bytes.length / SNAPSHOT_PAGE_SIZE);
  let written = 0;
  for (let page = 0; page < pages;) {
    if (!selected(page)) {
      page++;
      continue;
    }
    let end = page + 1;
    while (end < pages && selected(end)) end++;
    const from = page * SNAPSHOT_PAGE_SIZE;
    writeAll(
      file,
      base + BigInt(from),
      bytes.subarray(from, Math.min(end * SNAPSHOT_PAGE_SIZE, bytes.length)),
    );
    written += end - page;
    page = end;
  }
  return written;
}

/**
 * Writes a full memory file: every non-zero page of every block, at its offset. Returns the number
 * of pages written.
 */
export function writeFullMemory(
  path: string,
  blocks: readonly MemoryBlock[],
  memories: readonly GuestMemory[],
): number {
  using file = Deno.openSync(path, { write: true, create: true, truncate: true });
  let written = 0;
  blocks.forEach((block, i) => {
    const bytes = memories[i].bytes;
    // Whole pages only: a mapping is page-sized, so the last page's tail reads as zero.
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.length / 4));
    const full = Math.floor(bytes.length / SNAPSHOT_PAGE_SIZE);
    written += writeRuns(
      file,
      block.offset,
      bytes,
      (page) => page >= full || !isZeroPage(words, page * 1024),
    );
  });
  file.truncateSync(Number(memoryFileLength(blocks)));
  return written;
}

/**
 * Writes a diff memory file: the pages of block 0 (RAM) whose bit is set in `pages`, at their
 * offsets, in a file as long as a full one. Returns the number of pages written.
 */
export function writeDiffMemory(
  path: string,
  blocks: readonly MemoryBlock[],
  ram: GuestMemory,
  pages: Uint8Array,
): number {
  using file = Deno.openSync(path, { write: true, create: true, truncate: true });
  const written = writeRuns(
    file,
    blocks[0].offset,
    ram.bytes,
    (page) => (pages[page >> 3] & (1 << (page & 7))) !== 0,
  );
  file.truncateSync(Number(memoryFileLength(blocks)));
  return written;
}

/** One link of a restore chain: a snapshot's memory description and the directory it is in. */
export interface MemoryLink {
  /** The snapshot directory. */
  readonly dir: string;
  /** Its memory section. */
  readonly memory: SnapshotMemory;
}

/**
 * The guest memory of a chain (base first, then each diff on top): the base's blocks mapped
 * privately from its file, each diff's pages read over them. On failure every mapping made is
 * released.
 *
 * @throws {KvmError} when a file cannot be opened or mapped.
 * @throws {RangeError} when a file is shorter than its description.
 */
export function mapMemoryChain(chain: readonly MemoryLink[]): GuestMemory[] {
  const [base, ...diffs] = chain;
  const memories: GuestMemory[] = [];
  try {
    const path = `${base.dir}/${base.memory.file}`;
    for (const block of base.memory.blocks) {
      memories.push(GuestMemory.fromFile(path, block.offset, block.size));
    }
    for (const diff of diffs) applyDiff(`${diff.dir}/${diff.memory.file}`, diff.memory, memories[0]);
    return memories;
  } catch (error) {
    for (const memory of memories) memory.close();
    throw error;
  }
}

function applyDiff(path: string, memory: SnapshotMemory, ram: GuestMemory): void {
  const pages = memory.pages!;
  using file = Deno.openSync(path, { read: true });
  const length = file.statSync().size;
  const need = Number(memoryFileLength(memory.blocks));
  if (length < need) {
    throw new RangeError(`${path} is ${length} bytes, shorter than the ${need} it should hold`);
  }
  const bytes = ram.bytes;
  const count = Math.ceil(bytes.length / SNAPSHOT_PAGE_SIZE);
  const base = memory.blocks[0].offset;
  for (let page = 0; page < count;) {
    if (!(pages[page >> 3] & (1 << (page & 7)))) {
      page++;
      continue;
    }
    let end = page + 1;
    while (end < count && pages[end >> 3] & (1 << (end & 7))) end++;
    const from = page * SNAPSHOT_PAGE_SIZE;
    const target = bytes.subarray(from, Math.min(end * SNAPSHOT_PAGE_SIZE, bytes.length));
    file.seekSync(base + BigInt(from), Deno.SeekMode.Start);
    let done = 0;
    while (done < target.length) {
      const n = file.readSync(target.subarray(done));
      if (n === null || n === 0) throw new RangeError(`${path} ends inside page ${page}`);
      done += n;
    }
    page = end;
  }
}
