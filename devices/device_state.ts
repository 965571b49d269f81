/**
 * Saving and loading a device's guest-visible state (issue 11, snapshots): the {@link StateValue}
 * data a state is made of, the {@link Snapshottable} interface every stateful device implements, and
 * the {@link StateReader} with which every `loadState` validates its input the same way.
 *
 * The rule: `loadState` reads and checks every field into locals first, and only then changes the
 * device, so a refused state (one {@link DeviceStateError} line naming the device and the field)
 * leaves the device exactly as it was.
 *
 * @module
 */

/** A JSON-like value a device's state is made of; the snapshot codec stores bigint and bytes exactly. */
export type StateValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | Uint8Array
  | readonly StateValue[]
  | { readonly [key: string]: StateValue };

/** A device's whole state: an object of {@link StateValue}s. */
export type StateObject = { readonly [key: string]: StateValue };

/**
 * A device whose guest-visible state can be saved and loaded (issue 11, snapshots).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Snapshottable, type StateObject, StateReader } from "./device_state.ts";
 * class Latch implements Snapshottable {
 *   value = 0;
 *   saveState(): StateObject {
 *     return { value: this.value };
 *   }
 *   loadState(state: StateObject): void {
 *     this.value = new StateReader("latch", state).u8("value");
 *   }
 * }
 * const a = new Latch();
 * a.value = 7;
 * const b = new Latch();
 * b.loadState(a.saveState());
 * assert.equal(b.value, 7);
 * ```
 */
export interface Snapshottable {
  /** Everything the guest can observe, as plain data (no functions, no host handles). */
  saveState(): { readonly [key: string]: StateValue };
  /** Puts `state` back. Checks every field first and throws DeviceStateError naming the device and the field
   *  (one line) if anything is missing, of the wrong type or out of range; then the device is unchanged. */
  loadState(state: { readonly [key: string]: StateValue }): void;
}

/**
 * A device state that `loadState` refused: one line, `<device>: state field "<field>" <problem>`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DeviceStateError } from "./device_state.ts";
 * const e = new DeviceStateError("uart@0x3f8", "lcr", "is 300, not in 0..255");
 * assert.equal(e.message, 'uart@0x3f8: state field "lcr" is 300, not in 0..255');
 * assert.ok(e.device === "uart@0x3f8" && e.field === "lcr" && e.name === "DeviceStateError");
 * ```
 */
export class DeviceStateError extends Error {
  /** The device whose state was refused. */
  readonly device: string;
  /** The field (a path such as `queues[1].size`) that was wrong. */
  readonly field: string;
  /** What was wrong with it. */
  readonly problem: string;

  /** `device` refused `field` because of `problem`. */
  constructor(device: string, field: string, problem: string) {
    super(oneLine(`${device}: state field "${field}" ${problem}`));
    this.name = "DeviceStateError";
    this.device = device;
    this.field = field;
    this.problem = problem;
  }
}

/** Length limits of {@link StateReader.bytes} and {@link StateReader.array}. */
export interface LengthLimit {
  /** The exact length required. */
  length?: number;
  /** The largest length accepted. */
  maxLength?: number;
  /** The smallest length accepted (default 0). */
  minLength?: number;
}

/** Keeps an error message on one line, and short, whatever a hostile state put in it. */
function oneLine(text: string): string {
  const flat = text.replace(/[\r\n\u2028\u2029]+/g, " ");
  return flat.length > 300 ? `${flat.slice(0, 297)}...` : flat;
}

/** A short description of a value's type, for messages. */
function describe(value: unknown): string {
  if (value === undefined) return "missing";
  if (value === null) return "null";
  if (value instanceof Uint8Array) return `bytes (length ${value.length})`;
  if (Array.isArray(value)) return `an array (length ${value.length})`;
  switch (typeof value) {
    case "number":
      return `the number ${value}`;
    case "bigint":
      return `the bigint ${value}n`;
    case "boolean":
      return `the boolean ${value}`;
    case "string":
      return `a string (length ${value.length})`;
    case "object":
      return "an object";
    default:
      return `a ${typeof value}`;
  }
}

/** Whether `value` is a plain state object (not an array, not bytes, not a class instance). */
function isStateObject(value: unknown): value is StateObject {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Typed, checked access to a saved state for `loadState`: each reader returns the field's value or
 * throws a {@link DeviceStateError} naming the device and the field's full path. Nested objects and
 * arrays are read through sub-readers that extend the path (`queues[2].size`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DeviceStateError, StateReader } from "./device_state.ts";
 * const state = { lcr: 3, fifo: new Uint8Array([1, 2]), queues: [{ size: 256 }], base: 0x1000n };
 * const r = new StateReader("uart@0x3f8", state);
 * assert.equal(r.u8("lcr"), 3);
 * assert.deepEqual(r.bytes("fifo", { maxLength: 16 }), new Uint8Array([1, 2]));
 * assert.deepEqual(r.array("queues").map((q) => q.object().u16("size")), [256]);
 * assert.equal(r.bigint("base", { max: 0xffff_ffffn }), 0x1000n);
 * assert.throws(() => r.bool("lcr"), DeviceStateError);
 * assert.throws(() => r.u8("missing"), /uart@0x3f8: state field "missing" is missing/);
 * ```
 */
export class StateReader {
  readonly #device: string;
  readonly #value: unknown;
  readonly #path: string;

  /**
   * A reader of `state` for `device` (a name such as `"uart@0x3f8"`). `path` is the field path of
   * `state` itself inside the device's state (empty at the top).
   *
   * @throws {DeviceStateError} if `state` at the top is not a plain object.
   */
  constructor(device: string, state: unknown, path = "") {
    this.#device = device;
    this.#value = state;
    this.#path = path;
    if (path === "" && !isStateObject(state)) this.fail("", `is ${describe(state)}, not an object`);
  }

  /** The device name messages carry. */
  get device(): string {
    return this.#device;
  }

  /** The path of this reader's value inside the device's state ("" at the top). */
  get path(): string {
    return this.#path;
  }

  /** The number of elements when this reader is over an array (from {@link array}), else 0. */
  get length(): number {
    return Array.isArray(this.#value) ? this.#value.length : 0;
  }

  /** Throws a {@link DeviceStateError} for `field` (relative to this reader) with `problem`. */
  fail(field: string | number, problem: string): never {
    throw new DeviceStateError(this.#device, this.#fieldPath(field) || "(state)", problem);
  }

  /** An integer field in `[min, max]`. */
  int(field: string | number, min: number, max: number): number {
    const value = this.#get(field);
    if (typeof value !== "number" || !Number.isInteger(value)) {
      this.fail(field, `is ${describe(value)}, not an integer`);
    }
    if (value < min || value > max) this.fail(field, `is ${value}, not in ${min}..${max}`);
    return value;
  }

  /** A finite number field in `[min, max]` (fractions allowed: times in milliseconds). */
  number(field: string | number, min: number, max: number): number {
    const value = this.#get(field);
    if (typeof value !== "number" || !Number.isFinite(value)) {
      this.fail(field, `is ${describe(value)}, not a finite number`);
    }
    if (value < min || value > max) this.fail(field, `is ${value}, not in ${min}..${max}`);
    return value;
  }

  /** An unsigned 8-bit field. */
  u8(field: string | number): number {
    return this.int(field, 0, 0xff);
  }

  /** An unsigned 16-bit field. */
  u16(field: string | number): number {
    return this.int(field, 0, 0xffff);
  }

  /** An unsigned 32-bit field. */
  u32(field: string | number): number {
    return this.int(field, 0, 0xffff_ffff);
  }

  /** An integer field with no bits set outside `mask` (a register whose other bits read as 0). */
  bits(field: string | number, mask: number): number {
    const value = this.int(field, 0, 0xffff_ffff);
    if ((value & ~mask) >>> 0 !== 0) {
      this.fail(field, `is 0x${value.toString(16)}, has bits outside 0x${mask.toString(16)}`);
    }
    return value;
  }

  /** A bigint field in `[min, max]` (defaults: 0 and 2^64 − 1). */
  bigint(field: string | number, range: { min?: bigint; max?: bigint } = {}): bigint {
    const { min = 0n, max = 0xffff_ffff_ffff_ffffn } = range;
    const value = this.#get(field);
    if (typeof value !== "bigint") this.fail(field, `is ${describe(value)}, not a bigint`);
    if (value < min || value > max) this.fail(field, `is ${value}n, not in ${min}n..${max}n`);
    return value;
  }

  /** A boolean field. */
  bool(field: string | number): boolean {
    const value = this.#get(field);
    if (typeof value !== "boolean") this.fail(field, `is ${describe(value)}, not a boolean`);
    return value;
  }

  /** A string field, optionally one of `oneOf` and at most `maxLength` long. */
  string<T extends string = string>(
    field: string | number,
    options: { oneOf?: readonly T[]; maxLength?: number } = {},
  ): T {
    const value = this.#get(field);
    if (typeof value !== "string") this.fail(field, `is ${describe(value)}, not a string`);
    if (options.maxLength !== undefined && value.length > options.maxLength) {
      this.fail(field, `is a string of length ${value.length}, longer than ${options.maxLength}`);
    }
    if (options.oneOf !== undefined && !(options.oneOf as readonly string[]).includes(value)) {
      this.fail(field, `is ${JSON.stringify(value.slice(0, 40))}, not one of ${options.oneOf.join(", ")}`);
    }
    return value as T;
  }

  /** A byte-string field (a copy), with its length checked against `limit`. */
  bytes(field: string | number, limit: LengthLimit = {}): Uint8Array {
    const value = this.#get(field);
    if (!(value instanceof Uint8Array)) this.fail(field, `is ${describe(value)}, not bytes`);
    this.#checkLength(field, value.length, limit, "bytes");
    return value.slice();
  }

  /**
   * A byte-string field that must equal `expected` (configuration fixed by how the device was built:
   * a saved state from a device built otherwise is refused, `hint` saying what probably differs).
   */
  sameBytes(field: string | number, expected: Uint8Array, hint: string): Uint8Array {
    const value = this.bytes(field, { length: expected.length });
    const at = value.findIndex((b, i) => b !== expected[i]);
    if (at >= 0) this.fail(field, `differs from this device's at byte ${at} (${hint})`);
    return value;
  }

  /** An object field, as a sub-reader; with no `field`, this reader's own value (an array element). */
  object(field?: string | number): StateReader {
    const value = field === undefined ? this.#value : this.#get(field);
    const path = field === undefined ? this.#path : this.#fieldPath(field);
    if (!isStateObject(value)) {
      throw new DeviceStateError(this.#device, path || "(state)", `is ${describe(value)}, not an object`);
    }
    return new StateReader(this.#device, value, path);
  }

  /** An array field, as one sub-reader per element (read each with `object()`, `u8(i)`… on the array's reader). */
  array(field: string | number, limit: LengthLimit = {}): StateReader[] {
    const value = this.#get(field);
    if (!Array.isArray(value)) this.fail(field, `is ${describe(value)}, not an array`);
    this.#checkLength(field, value.length, limit, "elements");
    const path = this.#fieldPath(field);
    return value.map((element, i) => new StateReader(this.#device, element, `${path}[${i}]`));
  }

  /** An array of integers in `[min, max]`, its length checked against `limit`. */
  ints(field: string | number, min: number, max: number, limit: LengthLimit = {}): number[] {
    const value = this.#get(field);
    if (!Array.isArray(value)) this.fail(field, `is ${describe(value)}, not an array`);
    this.#checkLength(field, value.length, limit, "elements");
    const items = new StateReader(this.#device, value, this.#fieldPath(field));
    return value.map((_, i) => items.int(i, min, max));
  }

  /** The value of `field` in this reader's object (undefined when absent). */
  #get(field: string | number): unknown {
    const value = this.#value;
    if (typeof field === "number") return Array.isArray(value) ? value[field] : undefined;
    if (!isStateObject(value) || !Object.hasOwn(value, field)) return undefined;
    return value[field];
  }

  #fieldPath(field: string | number): string {
    if (typeof field === "number") return `${this.#path}[${field}]`;
    return this.#path === "" ? field : `${this.#path}.${field}`;
  }

  #checkLength(field: string | number, length: number, limit: LengthLimit, unit: string): void {
    if (limit.length !== undefined && length !== limit.length) {
      this.fail(field, `has ${length} ${unit}, not ${limit.length}`);
    }
    if (limit.maxLength !== undefined && length > limit.maxLength) {
      this.fail(field, `has ${length} ${unit}, more than ${limit.maxLength}`);
    }
    if (limit.minLength !== undefined && length < limit.minLength) {
      this.fail(field, `has ${length} ${unit}, fewer than ${limit.minLength}`);
    }
  }
}

/**
 * Whether `value` is plain {@link StateValue} data: numbers (finite), bigints, strings, booleans,
 * null, `Uint8Array`s, arrays and plain objects of these — no functions, no other class instances,
 * no `undefined`. A snapshot writer can check a device's `saveState()` with it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isPlainState } from "./device_state.ts";
 * assert.ok(isPlainState({ a: [1, 2n, "x", true, null, new Uint8Array(2)], b: { c: 0 } }));
 * assert.ok(!isPlainState({ f: () => 0 }));
 * assert.ok(!isPlainState({ m: new Map() }));
 * ```
 */
export function isPlainState(value: unknown): value is StateValue {
  switch (typeof value) {
    case "number":
      return Number.isFinite(value);
    case "bigint":
    case "string":
    case "boolean":
      return true;
    case "object":
      if (value === null) return true;
      if (value instanceof Uint8Array) return Object.getPrototypeOf(value) === Uint8Array.prototype;
      if (Array.isArray(value)) return value.every(isPlainState);
      return isStateObject(value) && Object.values(value).every(isPlainState);
    default:
      return false;
  }
}
