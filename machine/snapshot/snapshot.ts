/**
 * Writing a snapshot directory and reading one back (with its chain of bases). A snapshot
 * directory holds `state` (the state file, docs/snapshot-format.md), `memory` (full) or
 * `memory.diff` (diff), and a full one `boot` (the boot plan's bulk, boot_file.ts). The state file
 * is written last, through a temporary name and a rename, so a directory with a `state` file is
 * always complete.
 *
 * @module
 */

import type { GuestMemory } from "../../kvm/guest_memory.ts";
import { KVM_CAP_XCRS, KVM_CAP_XSAVE, KVM_CAP_XSAVE2, KVM_EXIT_INTR } from "../../kvm/ioctls.ts";
import { serveExit } from "../../kvm/serve_exit.ts";
import type { Vcpu } from "../../kvm/vcpu.ts";
import { saveVcpuState } from "../../kvm/vcpu_state.ts";
import type { Vm } from "../../kvm/vm.ts";
import { DirtyLogClient } from "../../memory/mod.ts";
import type { BootPlan } from "../loader/mod.ts";
import type { PcBoard } from "../pc/pc_board.ts";
import { writeBootFile } from "./boot_file.ts";
import { saveDevices } from "./device_states.ts";
import { SnapshotMismatchError } from "./errors.ts";
import { SnapshotFormatError, type SnapValue, stateFileCrc } from "./format.ts";
import { layoutBlocks, SNAPSHOT_PAGE_SIZE, writeDiffMemory, writeFullMemory } from "./memory_file.ts";
import {
  type BaseReference,
  decodeSnapshot,
  encodeSnapshot,
  type SnapshotBoot,
  type SnapshotState,
} from "./snapshot_state.ts";

export type { BaseReference, SnapshotBoot };

/**
 * What a diff snapshot builds on: the base's reference, and its boot plan as stored (a diff stores
 * it again, verbatim: the plan never changes between a machine's snapshots, and its ranges point
 * into the boot file of the full snapshot at the head of the chain).
 */
export interface SnapshotBase {
  /** The base snapshot. */
  readonly reference: BaseReference;
  /** Its `board.boot`. */
  readonly boot: SnapshotBoot;
}

/** The state file's name in a snapshot directory. */
export const STATE_FILE = "state";
/** The memory file of a full snapshot. */
export const FULL_MEMORY_FILE = "memory";
/** The memory file of a diff snapshot. */
export const DIFF_MEMORY_FILE = "memory.diff";
/** KVM_GET_XSAVE's buffer without KVM_CAP_XSAVE2. */
const XSAVE_LEGACY_SIZE = 4096;

/** Options of `PcMachine.snapshot`. */
export interface SnapshotOptions {
  /** Only the pages written since the previous snapshot (Firecracker's diff snapshot). */
  readonly diff?: boolean;
  /**
   * The front-end's own description (drives, serial position…), stored in the board section. As a
   * function it is asked once every vCPU is held: serving the I/O exits that were pending when the
   * pause came can still print (a serial position read before that would be short by those bytes).
   */
  readonly frontEnd?: SnapValue | (() => SnapValue);
}

/** What a snapshot wrote. */
export interface SnapshotResult {
  /** The directory. */
  readonly dir: string;
  /** Full or diff. */
  readonly kind: "full" | "diff";
  /** Pages written to the memory file. */
  readonly pages: number;
  /** Bytes of the state file. */
  readonly stateBytes: number;
  /** What a later diff references. */
  readonly reference: BaseReference;
  /** The boot plan as stored (what a later diff stores again). */
  readonly boot: SnapshotBoot;
}

/** What {@link writeSnapshot} reads from a paused machine. */
export interface SnapshotSource extends SnapshotOptions {
  /** The previous snapshot of this machine, if any. */
  readonly base: SnapshotBase | null;
  /** The VM. */
  readonly vm: Vm;
  /** Every vCPU, out of `KVM_RUN`. */
  readonly vcpus: readonly Vcpu[];
  /** The saveable MSRs. */
  readonly msrIndices: readonly number[];
  /** The board. */
  readonly board: PcBoard;
  /** What was loaded at boot. */
  readonly boot: BootPlan;
  /** `pc.ram`, `pc.bios`, `pc.rom`. */
  readonly memory: readonly GuestMemory[];
}

function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

function absolute(dir: string): string {
  return dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`;
}

/**
 * Writes `dir`'s snapshot of a paused machine: a full one's boot file first (streamed from the
 * plan's sources: a source that changed is refused before anything else is written, and leaves
 * nothing behind), then the memory file, the state file last. A diff needs a base: the dirty log
 * since then is what it writes, and its boot plan is the base's.
 *
 * @throws {SnapshotMismatchError} for a diff without a base.
 */
export function writeSnapshot(dir: string, source: SnapshotSource): SnapshotResult {
  const diff = source.diff ?? false;
  const base = diff ? source.base : null;
  if (diff && base === null) {
    throw new SnapshotMismatchError(
      "a diff snapshot needs an earlier snapshot of this VM (or the one it was restored from) to build on",
    );
  }
  // Self-contained: the bytes of a kernel or initrd the plan reads from its file go to the boot
  // file (first, so that a file that changed is refused before anything else is written).
  let boot: SnapshotBoot;
  if (base !== null) {
    boot = base.boot;
    Deno.mkdirSync(dir, { recursive: true });
  } else {
    boot = writeBootFile(dir, source.boot);
  }
  const { vm, board } = source;
  const xsave = vm.checkExtension(KVM_CAP_XSAVE) > 0;
  const options = {
    msrIndices: source.msrIndices,
    xsaveSize: xsave ? Math.max(vm.checkExtension(KVM_CAP_XSAVE2), XSAVE_LEGACY_SIZE) : 0,
    xcrs: vm.checkExtension(KVM_CAP_XCRS) > 0,
  };
  for (const vcpu of source.vcpus) completePendingIo(vcpu, board);
  const vcpus = source.vcpus.map((vcpu) => saveVcpuState(vcpu, options));
  // A split irqchip's PIC, IOAPIC and PIT are devices of the board, saved with the others.
  const split = board.irqchip !== null;
  const vmState = {
    irqchips: split ? null : [0, 1, 2].map((chip) => vm.getIrqchip(chip)),
    pit: split ? null : vm.getPit2(),
    clock: vm.getClock().clock,
  };
  const devices = saveDevices(board);
  const [ram, bios, rom] = source.memory;
  const blocks = layoutBlocks([
    { name: "pc.ram", size: ram.size },
    { name: "pc.bios", size: bios.size },
    { name: "pc.rom", size: rom.size },
  ]);
  const region = board.map.ram;
  const logging = (region.dirtyLogMask & (1 << DirtyLogClient.MIGRATION)) !== 0;
  let pages: Uint8Array | null = null;
  let written: number;
  const file = diff ? DIFF_MEMORY_FILE : FULL_MEMORY_FILE;
  if (logging) board.memory.syncDirtyLog(region);
  const dirty = logging ? region.takeDirtyPages() : [];
  if (diff) {
    pages = new Uint8Array(Math.ceil(Number(ram.size) / SNAPSHOT_PAGE_SIZE / 8));
    for (const offset of dirty) {
      const page = Number(offset / BigInt(SNAPSHOT_PAGE_SIZE));
      pages[page >> 3] |= 1 << (page & 7);
    }
    written = writeDiffMemory(`${dir}/${file}`, blocks, ram, pages);
  } else {
    written = writeFullMemory(`${dir}/${file}`, blocks, source.memory);
  }
  const state: SnapshotState = {
    board: {
      ramSize: ram.size,
      cpus: source.vcpus.length,
      firmwareSize: Number(bios.size),
      irqchip: split ? "split" : "kernel",
      boot,
      pciDevices: board.pciDevices.map((d) => ({ type: d.spec.type, id: d.spec.id ?? null })),
      frontEnd: (typeof source.frontEnd === "function" ? source.frontEnd() : source.frontEnd) ?? null,
    },
    vcpus,
    vm: vmState,
    devices,
    memory: {
      id: randomId(),
      kind: diff ? "diff" : "full",
      file,
      pageSize: SNAPSHOT_PAGE_SIZE,
      blocks,
      base: base === null ? null : baseReference(base.reference),
      pages,
    },
  };
  const bytes = encodeSnapshot(state);
  const temporary = `${dir}/${STATE_FILE}.tmp`;
  Deno.writeFileSync(temporary, bytes);
  Deno.renameSync(temporary, `${dir}/${STATE_FILE}`);
  // From now on every page the guest or a device writes is logged, for the next diff.
  if (!logging) region.setLog(true, DirtyLogClient.MIGRATION);
  return {
    dir,
    kind: diff ? "diff" : "full",
    pages: written,
    stateBytes: bytes.length,
    reference: { dir: absolute(dir), id: state.memory.id, crc: stateFileCrc(bytes) },
    boot,
  };
}

/** Only the fields a state file stores of a base. */
function baseReference(r: BaseReference): BaseReference {
  return { dir: r.dir, id: r.id, crc: r.crc };
}

/** Most exits {@link completePendingIo} serves for one vCPU (a `rep outs` goes out a chunk at a time). */
const MAX_PENDING_EXITS = 1024;

/**
 * Re-enters `KVM_RUN` with `immediate_exit` set until it returns EINTR, serving any exit on the way:
 * KVM finishes an I/O or MMIO instruction only on the next `KVM_RUN` (an `out` advances RIP then,
 * an `in` writes its register then), and its state is consistent only after that (api.rst, "the
 * kvm_run structure": userspace re-enters with immediate_exit before saving state, as QEMU does).
 */
export function completePendingIo(vcpu: Vcpu, board: PcBoard): void {
  const spaces = { memory: board.memory, io: board.io };
  vcpu.setImmediateExit(true);
  try {
    for (let i = 0; i < MAX_PENDING_EXITS; i++) {
      if (vcpu.run() === KVM_EXIT_INTR) return;
      if (!serveExit(vcpu.runPage, vcpu.runView, spaces)) return;
    }
  } finally {
    vcpu.setImmediateExit(false);
  }
}

/** One snapshot of a chain: where it is, what it holds, and how a diff refers to it. */
export interface ChainLink {
  /** Its directory. */
  readonly dir: string;
  /** Its state. */
  readonly state: SnapshotState;
  /** How a diff on top of it refers to it. */
  readonly reference: BaseReference;
}

/** Most diffs on top of one full snapshot (a loop of bases is refused by this bound). */
const MAX_CHAIN = 64;

function readState(dir: string): { state: SnapshotState; crc: number } {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(`${dir}/${STATE_FILE}`);
  } catch (error) {
    throw new SnapshotMismatchError(
      `snapshot ${dir}: cannot read ${STATE_FILE}: ${(error as Error).message}`,
    );
  }
  try {
    return { state: decodeSnapshot(bytes), crc: stateFileCrc(bytes) };
  } catch (error) {
    if (error instanceof SnapshotFormatError) throw new SnapshotFormatError(`${dir}: ${error.message}`);
    throw error;
  }
}

/**
 * The snapshot in `dir` and every base it builds on, base first. Each diff's base must be there
 * and be the very snapshot it was taken on (id and state file CRC-32), with the same board and
 * boot file. No boot file is read (see `restoredBootPlan`).
 *
 * @throws {SnapshotFormatError} for a state file that cannot be read.
 * @throws {SnapshotMismatchError} for a missing or different base.
 */
export function readSnapshotChain(dir: string): ChainLink[] {
  const chain: ChainLink[] = [];
  let current = dir;
  // Each state file is read and decoded once: a base read to check a diff is the next link.
  let link = readState(current);
  for (;;) {
    const { state, crc } = link;
    chain.unshift({ dir: current, state, reference: { dir: absolute(current), id: state.memory.id, crc } });
    const base = state.memory.base;
    if (base === null) break;
    if (chain.length > MAX_CHAIN) {
      throw new SnapshotMismatchError(`snapshot ${dir}: more than ${MAX_CHAIN} diffs`);
    }
    try {
      link = readState(base.dir);
    } catch (error) {
      throw new SnapshotMismatchError(
        `snapshot ${current} is a diff on ${base.dir}, which cannot be used: ${(error as Error).message}`,
      );
    }
    if (link.state.memory.id !== base.id || link.crc !== base.crc) {
      throw new SnapshotMismatchError(
        `snapshot ${current} is a diff on ${base.dir}, but that directory now holds another snapshot`,
      );
    }
    if (link.state.board.ramSize !== state.board.ramSize) {
      throw new SnapshotMismatchError(
        `snapshot ${current} and its base ${base.dir} have different RAM sizes`,
      );
    }
    // A diff stores its base's boot plan: its ranges point into the full snapshot's boot file.
    const [ours, theirs] = [state.board.boot.file, link.state.board.boot.file];
    if (ours.size !== theirs.size || ours.crc !== theirs.crc) {
      throw new SnapshotMismatchError(
        `snapshot ${current} and its base ${base.dir} record different boot files`,
      );
    }
    current = base.dir;
  }
  return chain;
}
