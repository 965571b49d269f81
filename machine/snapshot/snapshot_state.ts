/**
 * What a snapshot's state file holds, as typed data, and its conversion to and from the sections
 * of {@link encodeStateFile}. Pure: no KVM, no files.
 *
 * @module
 */

import type { KvmPitState2, VcpuState } from "../../kvm/mod.ts";
import type { BootPlan } from "../loader/mod.ts";
import {
  decodeStateFile,
  encodeStateFile,
  type Section,
  SECTION_TYPES,
  SnapshotFormatError,
  type SnapValue,
} from "./format.ts";

/** The board a snapshot was taken of: what a restore builds before anything is loaded. */
export interface SnapshotBoard {
  /** Guest RAM in bytes (`-m`). */
  readonly ramSize: bigint;
  /** vCPUs (`-smp`). */
  readonly cpus: number;
  /**
   * Size of the `pc.bios` image the board was built with. Its bytes are the memory file's `pc.bios`
   * block (the guest cannot write that ROM), so the state does not hold them again.
   */
  readonly firmwareSize: number;
  /** Whose PIC, IOAPIC and PIT: KVM's (`"kernel"`; also when the field is absent) or the board's. */
  readonly irqchip: "kernel" | "split";
  /** What was loaded at boot (a system reset after the restore loads it again), as stored. */
  readonly boot: SnapshotBoot;
  /** The PCI devices in slot order: type and `-device id=`. */
  readonly pciDevices: readonly { readonly type: string; readonly id: string | null }[];
  /** The front-end's own description (its drives, say), stored as given. */
  readonly frontEnd: SnapValue;
}

/**
 * One write of a stored boot plan: bytes held inline (the small structures a loader builds), a
 * range of the chain's boot file (a kernel, an initrd, any write of {@link BOOT_INLINE_LIMIT} bytes or
 * more), or zeros (a file-backed kernel's bss).
 */
export type SnapshotBootWrite =
  | { readonly addr: bigint; readonly data: Uint8Array }
  | { readonly addr: bigint; readonly offset: number; readonly length: number }
  | { readonly addr: bigint; readonly zeros: number };

/** Smallest write of bytes that goes to the boot file rather than inline: 4 KiB. */
export const BOOT_INLINE_LIMIT = 4096;

/**
 * A boot plan as a state file stores it: the writes, the CPU state and description as the plan has
 * them, and the size and CRC-32 of the boot file its ranges point into (the one beside the state
 * file of the full snapshot at the head of the chain: a diff stores its base's value verbatim).
 */
export interface SnapshotBoot {
  /** The plan's writes, in its order. */
  readonly writes: readonly SnapshotBootWrite[];
  /** The plan's CPU state. */
  readonly cpu: BootPlan["cpu"];
  /** The plan's description. */
  readonly description: string;
  /** The boot file: its size in bytes and its CRC-32. */
  readonly file: { readonly size: number; readonly crc: number };
}

/** The VM-wide in-kernel state. */
export interface SnapshotVm {
  /**
   * `KVM_GET_IRQCHIP` of the master PIC, the slave PIC and the IOAPIC (512 bytes each); null with a
   * split irqchip, whose PIC and IOAPIC are devices (their state is in the devices section).
   */
  readonly irqchips: readonly Uint8Array[] | null;
  /** `KVM_GET_PIT2`; null with a split irqchip (the board's PIT is a device). */
  readonly pit: KvmPitState2 | null;
  /** kvmclock in nanoseconds when the snapshot was taken. */
  readonly clock: bigint;
}

/** One block of guest memory in the memory file. */
export interface MemoryBlock {
  /** The region it backs (`pc.ram`, `pc.bios`, `pc.rom`). */
  readonly name: string;
  /** Where it starts in the memory file (page aligned). */
  readonly offset: bigint;
  /** Its size in bytes. */
  readonly size: bigint;
}

/** Which snapshot a diff applies on top of. */
export interface BaseReference {
  /** The base snapshot's directory, as given when the diff was written (absolute). */
  readonly dir: string;
  /** The base's {@link SnapshotMemory.id}. */
  readonly id: string;
  /** CRC-32 of the base's state file. */
  readonly crc: number;
}

/** The memory file of a snapshot. */
export interface SnapshotMemory {
  /** A random id (hex) naming this snapshot, for the diffs that build on it. */
  readonly id: string;
  /** `full`: every block, zero pages as holes; `diff`: only the RAM pages in {@link pages}. */
  readonly kind: "full" | "diff";
  /** The memory file's name inside the snapshot directory. */
  readonly file: string;
  /** Page size of {@link pages}. */
  readonly pageSize: number;
  /** The blocks, in file order. */
  readonly blocks: readonly MemoryBlock[];
  /** The snapshot a diff builds on; null for a full one. */
  readonly base: BaseReference | null;
  /** Diff only: one bit per page of `pc.ram` (bit `i % 8` of byte `i / 8`), set for the pages it holds. */
  readonly pages: Uint8Array | null;
}

/** Everything in a state file. */
export interface SnapshotState {
  /** The board. */
  readonly board: SnapshotBoard;
  /** One per vCPU, in vCPU order. */
  readonly vcpus: readonly VcpuState[];
  /** The in-kernel irqchip, PIT and kvmclock. */
  readonly vm: SnapshotVm;
  /** Every device's state by name. */
  readonly devices: { readonly [name: string]: { readonly [key: string]: SnapValue } };
  /** The memory file. */
  readonly memory: SnapshotMemory;
}

/** `value` with every `undefined` property dropped, so a plain object of optional fields can be stored. */
export function toSnapValue(value: unknown, path = "value"): SnapValue {
  if (value === null || value instanceof Uint8Array) return value;
  switch (typeof value) {
    case "number":
    case "bigint":
    case "string":
    case "boolean":
      return value;
  }
  if (Array.isArray(value)) return value.map((v, i) => toSnapValue(v, `${path}[${i}]`));
  if (typeof value === "object") {
    const out: Record<string, SnapValue> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (v !== undefined) out[k] = toSnapValue(v, `${path}.${k}`);
    }
    return out;
  }
  throw new TypeError(`snapshot: ${path} cannot be stored (${typeof value})`);
}

/**
 * The state file's bytes for `state`.
 *
 * @example
 * ```ts ignore
 * const bytes = encodeSnapshot(state);
 * assert.deepEqual(decodeSnapshot(bytes).board.ramSize, state.board.ramSize);
 * ```
 */
export function encodeSnapshot(state: SnapshotState): Uint8Array {
  const sections: Section[] = [
    { type: SECTION_TYPES.board, value: toSnapValue(state.board) },
    ...state.vcpus.map((v) => ({ type: SECTION_TYPES.vcpu, value: toSnapValue(v) })),
    { type: SECTION_TYPES.vm, value: toSnapValue(state.vm) },
    { type: SECTION_TYPES.devices, value: toSnapValue(state.devices) },
    { type: SECTION_TYPES.memory, value: toSnapValue(state.memory) },
  ];
  return encodeStateFile(sections);
}

type Obj = { readonly [key: string]: SnapValue };

function fail(where: string, problem: string): never {
  throw new SnapshotFormatError(`snapshot state: ${where} ${problem}`);
}

function obj(v: SnapValue | undefined, where: string): Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) {
    fail(where, "is not an object");
  }
  return v as Obj;
}

function field<T>(o: Obj, key: string, where: string, check: (v: SnapValue) => boolean, what: string): T {
  const v = o[key];
  if (v === undefined || !check(v)) fail(`${where}.${key}`, `is not ${what}`);
  return v as T;
}

const isBigint = (v: SnapValue) => typeof v === "bigint" && v >= 0n;
const isCount = (v: SnapValue) => typeof v === "number" && Number.isInteger(v) && v >= 0;
const isBytes = (v: SnapValue) => v instanceof Uint8Array;
const isString = (v: SnapValue) => typeof v === "string";
const isArray = (v: SnapValue) => Array.isArray(v);
const isSafeCount = (v: SnapValue) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isCrc = (v: SnapValue) => isSafeCount(v) && (v as number) <= 0xffff_ffff;

/** The vCPU state keys a vCPU section must have (their contents are checked by the KVM encoders). */
const VCPU_KEYS = [
  "cpuid",
  "regs",
  "sregs",
  "fpu",
  "msrs",
  "lapic",
  "events",
  "mpState",
  "debugregs",
  "tscKhz",
];

/**
 * The state a state file holds: the container checked ({@link decodeStateFile}), then every
 * section present once (vCPU sections at least once) and the fields a restore relies on typed.
 *
 * @throws {SnapshotFormatError} with one line naming the first problem.
 */
export function decodeSnapshot(bytes: Uint8Array): SnapshotState {
  const sections = decodeStateFile(bytes);
  const one = (type: number, name: string) => {
    const found = sections.filter((s) => s.type === type);
    if (found.length !== 1) {
      fail(`the ${name} section`, found.length ? "appears more than once" : "is missing");
    }
    return obj(found[0].value, name);
  };
  const b = one(SECTION_TYPES.board, "board");
  const board: SnapshotBoard = {
    ramSize: field(b, "ramSize", "board", isBigint, "a size"),
    cpus: field(b, "cpus", "board", isCount, "a count"),
    firmwareSize: field(b, "firmwareSize", "board", isCount, "a size"),
    irqchip: b.irqchip === undefined
      ? "kernel"
      : field(b, "irqchip", "board", (v) => v === "kernel" || v === "split", '"kernel" or "split"'),
    boot: decodeSnapshotBoot(b.boot),
    pciDevices: field<SnapValue[]>(b, "pciDevices", "board", isArray, "a list").map((d, i) => {
      const o = obj(d, `board.pciDevices[${i}]`);
      return {
        type: field(o, "type", `board.pciDevices[${i}]`, isString, "a string"),
        id: typeof o.id === "string" ? o.id : null,
      };
    }),
    frontEnd: b.frontEnd ?? null,
  };
  const vcpus = sections.filter((s) => s.type === SECTION_TYPES.vcpu).map((s, i) => {
    const o = obj(s.value, `vcpu ${i}`);
    for (const key of VCPU_KEYS) if (!(key in o)) fail(`vcpu ${i}`, `has no ${key}`);
    return o as unknown as VcpuState;
  });
  if (vcpus.length !== board.cpus) fail("the vcpu sections", `are ${vcpus.length} for ${board.cpus} vCPUs`);
  const v = one(SECTION_TYPES.vm, "vm");
  // With a split irqchip the VM holds no PIC, IOAPIC or PIT: both are null.
  const split = board.irqchip === "split";
  if (split && (v.irqchips !== null || v.pit !== null)) {
    fail("vm", "has in-kernel irqchips with a split irqchip");
  }
  const irqchips = split ? [] : field<SnapValue[]>(v, "irqchips", "vm", isArray, "a list");
  if (
    !split && (irqchips.length !== 3 || !irqchips.every((c) => c instanceof Uint8Array && c.length === 512))
  ) {
    fail("vm.irqchips", "is not three chips of 512 bytes");
  }
  const pit = split ? {} : obj(v.pit, "vm.pit");
  const vm: SnapshotVm = {
    irqchips: split ? null : irqchips as Uint8Array[],
    pit: split ? null : {
      channels: field(
        pit,
        "channels",
        "vm.pit",
        (c) => c instanceof Uint8Array && c.length === 72,
        "72 bytes",
      ),
      flags: field(pit, "flags", "vm.pit", isCount, "a number"),
    },
    clock: field(v, "clock", "vm", isBigint, "a time"),
  };
  const d = one(SECTION_TYPES.devices, "devices");
  const devices: Record<string, Obj> = {};
  for (const [name, state] of Object.entries(d)) devices[name] = obj(state, `devices.${name}`);
  const m = one(SECTION_TYPES.memory, "memory");
  const kind = field<string>(m, "kind", "memory", (k) => k === "full" || k === "diff", '"full" or "diff"');
  const base = m.base === null ? null : obj(m.base, "memory.base");
  const memory: SnapshotMemory = {
    id: field(m, "id", "memory", isString, "a string"),
    kind: kind as "full" | "diff",
    file: field(m, "file", "memory", (f) => typeof f === "string" && /^[\w.-]+$/.test(f), "a file name"),
    pageSize: field(
      m,
      "pageSize",
      "memory",
      (p) => typeof p === "number" && p > 0 && (p & (p - 1)) === 0,
      "a power of two",
    ),
    blocks: field<SnapValue[]>(m, "blocks", "memory", isArray, "a list").map((x, i) => {
      const o = obj(x, `memory.blocks[${i}]`);
      return {
        name: field(o, "name", `memory.blocks[${i}]`, isString, "a string"),
        offset: field(o, "offset", `memory.blocks[${i}]`, isBigint, "an offset"),
        size: field(o, "size", `memory.blocks[${i}]`, isBigint, "a size"),
      };
    }),
    base: base === null ? null : {
      dir: field(base, "dir", "memory.base", isString, "a path"),
      id: field(base, "id", "memory.base", isString, "a string"),
      crc: field(base, "crc", "memory.base", isCount, "a CRC"),
    },
    pages: m.pages instanceof Uint8Array ? m.pages : null,
  };
  if ((memory.kind === "diff") !== (memory.base !== null && memory.pages !== null)) {
    fail("memory", "is a diff without a base and a page list, or a full snapshot with one");
  }
  const bios = memory.blocks.find((block) => block.name === "pc.bios");
  if (bios?.size !== BigInt(board.firmwareSize)) {
    fail("board.firmwareSize", `is ${board.firmwareSize}, not the size of the memory file's pc.bios block`);
  }
  return { board, vcpus, vm, devices, memory };
}

/**
 * A board section's `boot` value as typed data: every write inline bytes, a range inside the
 * recorded boot file, or zeros; the CPU's mode and entry typed.
 *
 * @throws {SnapshotFormatError} with one line naming the first problem.
 */
export function decodeSnapshotBoot(value: SnapValue | undefined): SnapshotBoot {
  const o = obj(value, "board.boot");
  const f = obj(o.file, "board.boot.file");
  const file = {
    size: field<number>(f, "size", "board.boot.file", isSafeCount, "a size"),
    crc: field<number>(f, "crc", "board.boot.file", isCrc, "a CRC-32"),
  };
  const writes = field<SnapValue[]>(o, "writes", "board.boot", isArray, "a list").map((w, i) => {
    const where = `board.boot.writes[${i}]`;
    const x = obj(w, where);
    const addr = field<bigint>(x, "addr", where, isBigint, "an address");
    if ("data" in x) return { addr, data: field<Uint8Array>(x, "data", where, isBytes, "bytes") };
    if ("zeros" in x) return { addr, zeros: field<number>(x, "zeros", where, isSafeCount, "a length") };
    const offset = field<number>(x, "offset", where, isSafeCount, "an offset");
    const length = field<number>(x, "length", where, isSafeCount, "a length");
    if (offset + length > file.size) fail(where, `is not inside the ${file.size}-byte boot file`);
    return { addr, offset, length };
  });
  const cpu = obj(o.cpu, "board.boot.cpu");
  field(cpu, "mode", "board.boot.cpu", isString, "a mode");
  field(cpu, "rip", "board.boot.cpu", isBigint, "an address");
  return {
    writes,
    cpu: cpu as unknown as BootPlan["cpu"],
    description: typeof o.description === "string" ? o.description : "",
    file,
  };
}
