/**
 * Helpers for the device-state tests (issue 11): a round-trip property (save mid-sequence, load into a
 * fresh device, then both must behave the same), a bad-state sweep (every field missing, of the wrong
 * type or out of range is refused by name and leaves the device unchanged), and the plain-data check.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { AddressSpace } from "../memory/mod.ts";
import {
  DeviceStateError,
  isPlainState,
  type Snapshottable,
  type StateObject,
  type StateValue,
} from "./device_state.ts";

/** A device under test, built the same way each time, with its observable outputs. */
export interface StateHarness<Op> {
  /** The device whose state is saved and loaded. */
  readonly device: Snapshottable;
  /** Applies one guest (or host) action; returns what it observed (a read's value, …). */
  step(op: Op): unknown;
  /** What is observable besides step results (IRQ levels, side effects since the last call, which it forgets). */
  observe(): unknown;
  /** Releases what the harness holds (address spaces stay registered until closed). */
  close?(): void;
}

/** JSON text of a state, with bigints and bytes tagged; throws on anything that is not plain data. */
export function stateToJson(state: StateObject): string {
  assert.ok(isPlainState(state), "saveState returned plain data only");
  return JSON.stringify(state, (_key, value: unknown) => {
    if (typeof value === "bigint") return { bigint: value.toString() };
    if (value instanceof Uint8Array) return { bytes: Array.from(value) };
    return value;
  });
}

/**
 * The round-trip property: drive a device with `prefix`, save (the state must be plain data and
 * survive a JSON round trip of its text), load into a fresh device built by `make`, then apply `suffix`
 * to both: every step result and every observation must be equal, and so must the states at the end.
 */
export function checkRoundTrip<Op>(
  make: () => StateHarness<Op>,
  op: fc.Arbitrary<Op>,
  options: { numRuns?: number; maxPrefix?: number; maxSuffix?: number } = {},
): void {
  const { numRuns = 200, maxPrefix = 60, maxSuffix = 40 } = options;
  fc.assert(
    fc.property(
      fc.array(op, { maxLength: maxPrefix }),
      fc.array(op, { maxLength: maxSuffix }),
      (prefix, suffix) => {
        const a = make();
        let b: StateHarness<Op> | undefined;
        try {
          for (const o of prefix) a.step(o);
          a.observe();
          const state = a.device.saveState();
          stateToJson(state);
          const fresh = b = make();
          fresh.observe();
          fresh.device.loadState(state);
          assert.deepEqual(fresh.device.saveState(), state, "a loaded device saves what it loaded");
          assert.deepEqual(fresh.observe(), a.observe(), "outputs right after load");
          suffix.forEach((o, i) => {
            assert.deepEqual(fresh.step(o), a.step(o), `step ${i} after load: ${fc.stringify(o)}`);
            assert.deepEqual(fresh.observe(), a.observe(), `outputs after step ${i}`);
          });
          assert.deepEqual(fresh.device.saveState(), a.device.saveState(), "states after the same steps");
        } finally {
          a.close?.();
          b?.close?.();
        }
      },
    ),
    { numRuns },
  );
}

/** Every field path of a state (objects `a.b`, arrays `a[1]`; bytes are leaves), with its value. */
export function statePaths(value: StateValue, path = ""): [string, StateValue][] {
  const out: [string, StateValue][] = [];
  if (path !== "") out.push([path, value]);
  if (value instanceof Uint8Array || value === null || typeof value !== "object") return out;
  if (Array.isArray(value)) {
    value.forEach((v: StateValue, i: number) => out.push(...statePaths(v, `${path}[${i}]`)));
  } else {
    for (const [k, v] of Object.entries(value)) out.push(...statePaths(v, path === "" ? k : `${path}.${k}`));
  }
  return out;
}

/** A copy of `state` with the value at `path` replaced by `f(old)` (or removed when `f` returns undefined). */
export function mutateState(
  state: StateObject,
  path: string,
  f: (old: StateValue) => StateValue | undefined,
): StateObject {
  const steps = path.match(/[^.[\]]+|\[\d+\]/g)!;
  const copy = (v: StateValue, i: number): StateValue | undefined => {
    if (i === steps.length) return f(v);
    const step = steps[i];
    if (step.startsWith("[")) {
      const index = Number(step.slice(1, -1));
      const arr = [...(v as readonly StateValue[])];
      const next = copy(arr[index], i + 1);
      if (next === undefined) arr.splice(index, 1);
      else arr[index] = next;
      return arr;
    }
    const obj: { [key: string]: StateValue } = { ...(v as StateObject) };
    const next = copy(obj[step], i + 1);
    if (next === undefined) delete obj[step];
    else obj[step] = next;
    return obj;
  };
  return copy(state, 0) as StateObject;
}

/** A value of another type than `v`, which no reader of `v`'s type accepts. */
function wrongType(v: StateValue): StateValue {
  if (typeof v === "string") return 7;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return "x";
  if (v instanceof Uint8Array || Array.isArray(v)) return { not: "this" };
  return [1];
}

/** Values out of range for `v`'s type, whatever the field's own range (none for booleans and strings). */
function outOfRange(v: StateValue): StateValue[] {
  if (typeof v === "number") return [-1, 2 ** 53, 0.5];
  if (typeof v === "bigint") return [-1n, 2n ** 64n];
  return [];
}

/**
 * The bad-state sweep over a device in `harness`'s current state: for every field, a state with the
 * field missing, of the wrong type and out of range must throw a DeviceStateError naming `device`
 * and that field, and leave the device's saved state and outputs as they were. `skip` lists paths whose
 * mutations are legitimately accepted (for example a field allowed to be negative).
 */
export function checkBadStates<Op>(
  harness: StateHarness<Op>,
  device: string,
  options: { skipOutOfRange?: readonly string[]; skipMissing?: readonly string[] } = {},
): number {
  const state = harness.device.saveState();
  harness.observe();
  const outputs = harness.observe();
  let checked = 0;
  const expectRefused = (bad: StateObject, path: string, what: string) => {
    assert.throws(() => harness.device.loadState(bad), (e: unknown) => {
      assert.ok(e instanceof DeviceStateError, `${what} ${path}: ${e}`);
      assert.equal(e.device, device, `${what} ${path}: ${e.message}`);
      assert.equal(e.field, path, `${what} ${path}: ${e.message}`);
      assert.ok(!e.message.includes("\n"));
      return true;
    }, `${what} ${path} was accepted`);
    assert.deepEqual(harness.device.saveState(), state, `${what} ${path} left the device changed`);
    assert.deepEqual(harness.observe(), outputs, `${what} ${path} had side effects`);
    checked++;
  };
  for (const [path, value] of statePaths(state)) {
    const isElement = path.endsWith("]");
    if (!isElement && !options.skipMissing?.includes(path)) {
      expectRefused(mutateState(state, path, () => undefined), path, "missing");
    }
    expectRefused(mutateState(state, path, () => wrongType(value)), path, "wrong type");
    if (options.skipOutOfRange?.includes(path)) continue;
    for (const bad of outOfRange(value)) {
      expectRefused(mutateState(state, path, () => bad), path, `out of range (${String(bad)})`);
    }
  }
  return checked;
}

/** An address space's flat view as plain rows (start, size, region, offset, read-only), for comparisons. */
export function flatRows(as: AddressSpace): [bigint, bigint, string, bigint, boolean][] {
  return as.flatView().map((r) => [r.start, r.size, r.region.name, r.offsetInRegion, r.readonly]);
}

/** A listener that counts the memory API's begin/commit pairs (one per rebuild) on `as`. */
export function countRebuilds(as: AddressSpace): { readonly count: number } {
  const counter = { count: 0 };
  as.registerListener({ begin: () => void counter.count++ });
  return counter;
}

/** `harness` with `[Symbol.dispose]` calling its `close`, for `using`. */
export function disposable<H extends { close?(): void }>(harness: H): H & Disposable {
  return Object.assign(harness, { [Symbol.dispose]: () => harness.close?.() });
}
