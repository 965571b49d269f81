/**
 * The interrupt output of a device: one wire whose level the device drives.
 *
 * Devices call {@link IrqLine.set} only when their output level changes, so a board can forward
 * each call to `KVM_IRQ_LINE` as it is. An edge-triggered input (the i8259 in ISA mode) sees a new
 * interrupt on every low → high change.
 *
 * @module
 */

/**
 * One interrupt wire, driven by a device (QEMU's `qemu_irq`).
 *
 * @example
 * ```ts
 * import type { IrqLine } from "./irq_line.ts";
 * const irq4: IrqLine = { set: (level) => void level }; // a board forwards this to KVM_IRQ_LINE
 * irq4.set(true);
 * ```
 */
export interface IrqLine {
  /** Drives the wire high (`true`) or low (`false`). */
  set(level: boolean): void;
}

/**
 * An {@link IrqLine} that remembers every call, for tests and debugging.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RecordingIrqLine } from "./irq_line.ts";
 * const irq = new RecordingIrqLine();
 * irq.set(true);
 * irq.set(false);
 * irq.set(true);
 * assert.ok(irq.level && irq.risingEdges === 2 && irq.history.join() === "true,false,true");
 * ```
 */
export class RecordingIrqLine implements IrqLine {
  /** Every level passed to {@link set}, oldest first. */
  readonly history: boolean[] = [];
  #level = false;
  #rising = 0;
  #redundant = 0;

  /** Records `level`; a call that repeats the current level counts as {@link redundantCalls}. */
  set(level: boolean): void {
    level = Boolean(level);
    this.history.push(level);
    if (level === this.#level) this.#redundant++;
    else if (level) this.#rising++;
    this.#level = level;
  }

  /** The current level (low before the first call). */
  get level(): boolean {
    return this.#level;
  }

  /** Number of low → high changes: the interrupts an edge-triggered controller would see. */
  get risingEdges(): number {
    return this.#rising;
  }

  /** Number of calls that did not change the level (a device driving its line correctly makes none). */
  get redundantCalls(): number {
    return this.#redundant;
  }

  /** Forgets the history and the counters; the level is kept. */
  clear(): void {
    this.history.length = 0;
    this.#rising = 0;
    this.#redundant = 0;
  }
}

/**
 * Drives an optional {@link IrqLine} from a level the device computes, calling the line only on
 * changes. Devices keep one per output.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { IrqOutput, RecordingIrqLine } from "./irq_line.ts";
 * const line = new RecordingIrqLine();
 * const out = new IrqOutput(line);
 * out.update(true);
 * out.update(true); // no call: the level did not change
 * assert.ok(line.history.length === 1 && out.level);
 * ```
 */
export class IrqOutput {
  readonly #line: IrqLine | undefined;
  #level = false;

  /** An output driving `line` (or nothing), starting low. */
  constructor(line?: IrqLine) {
    if (line !== undefined && (typeof line !== "object" || typeof line.set !== "function")) {
      throw new TypeError("IrqOutput: the line must have a set(level) method");
    }
    this.#line = line;
  }

  /** The level last driven. */
  get level(): boolean {
    return this.#level;
  }

  /** Drives `level`, calling the line only if it differs from the current one. */
  update(level: boolean): void {
    if (level === this.#level) return;
    this.#level = level;
    this.#line?.set(level);
  }
}
