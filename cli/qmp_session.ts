/**
 * One QMP client's side of the protocol, as QEMU 7.2's monitor runs it: the greeting, capabilities
 * negotiation, the checks of a command object (`execute`/`exec-oob`, `arguments`, `id`) and the
 * shape of replies and events. Pure: the socket and the commands are elsewhere (`qmp_worker.ts`,
 * `qmp_commands.ts`).
 *
 * @module
 */

import type { Json } from "./qmp_json.ts";

/** A QMP error: QEMU's error class and its description. */
export class QmpError extends Error {
  /** `GenericError`, `CommandNotFound`, `DeviceNotActive`, … */
  readonly errorClass: string;

  constructor(errorClass: string, desc: string) {
    super(desc);
    this.errorClass = errorClass;
  }
}

/** The version QMP reports, in the greeting and `query-version`. */
export interface QmpVersion {
  qemu: { micro: number; minor: number; major: number };
  package: string;
}

/**
 * The version this product reports: the QMP dialect it speaks, QEMU 7.2.0, so that clients which
 * gate features on the version (libvirt, qemu.qmp) take the 7.2 paths; and its own name and version
 * in `package`, which QEMU fills with its distribution's build name.
 */
export const QMP_VERSION: QmpVersion = {
  qemu: { micro: 0, minor: 2, major: 7 },
  package: "kvm-ts 0.1.0",
};

/** A command for the machine: its name, checked arguments object, and the client's id. */
export interface QmpExecute {
  name: string;
  args: { [key: string]: Json };
  id?: Json;
}

/** What the session makes of one input: a reply to send now, or a command to run. */
export type QmpStep = { kind: "reply"; reply: Json } | { kind: "execute"; execute: QmpExecute };

/** The greeting QEMU 7.2 sends a QMP client on connection. */
export function qmpGreeting(version: QmpVersion = QMP_VERSION): Json {
  return { QMP: { version: { ...version }, capabilities: ["oob"] } };
}

/** `{"return": value, "id": id}`, QEMU's member order (the id only when the client gave one). */
export function qmpReturn(value: Json, id?: Json): Json {
  return id === undefined ? { return: value } : { return: value, id };
}

/** `{"id": id, "error": {"class", "desc"}}`, QEMU's member order for an error. */
export function qmpErrorReply(error: QmpError, id?: Json): Json {
  const body = { error: { class: error.errorClass, desc: error.message } };
  return id === undefined ? body : { id, ...body };
}

/** An event as QEMU sends it, timestamped `now` (milliseconds since the epoch, fractional). */
export function qmpEvent(event: string, data: Json | undefined, now: number): Json {
  const micros = Math.floor(now * 1000);
  const timestamp = { seconds: Math.floor(micros / 1_000_000), microseconds: micros % 1_000_000 };
  return data === undefined ? { timestamp, event } : { timestamp, event, data };
}

/**
 * A client's protocol state: before `qmp_capabilities` only that command is accepted, with QEMU's
 * "Expecting capabilities negotiation" for any other; afterwards it is refused and every other
 * command goes to the machine. Events are for negotiated clients only, as in QEMU.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QmpSession } from "./qmp_session.ts";
 * const s = new QmpSession();
 * assert.deepEqual(s.handle({ execute: "stop" }), {
 *   kind: "reply",
 *   reply: { error: { class: "CommandNotFound", desc: "Expecting capabilities negotiation with 'qmp_capabilities'" } },
 * });
 * assert.deepEqual(s.handle({ execute: "qmp_capabilities", id: 1 }), { kind: "reply", reply: { return: {}, id: 1 } });
 * assert.deepEqual(s.handle({ execute: "stop", id: "x" }), { kind: "execute", execute: { name: "stop", args: {}, id: "x" } });
 * ```
 */
export class QmpSession {
  #negotiated = false;
  #oob = false;

  /** Whether `qmp_capabilities` has succeeded: the client gets events. */
  get negotiated(): boolean {
    return this.#negotiated;
  }

  /** What to do with one top-level JSON value from the client. */
  handle(input: Json): QmpStep {
    let id: Json | undefined;
    try {
      if (input === null || typeof input !== "object" || Array.isArray(input)) {
        throw new QmpError("GenericError", "QMP input must be a JSON object");
      }
      id = input.id;
      let name: string | undefined;
      let oob = false;
      for (const [key, value] of Object.entries(input)) {
        if (key === "execute" || (key === "exec-oob" && this.#oob)) {
          if (name !== undefined) {
            throw new QmpError("GenericError", "QMP input must not have both 'execute' and 'exec-oob'");
          }
          if (typeof value !== "string") {
            throw new QmpError("GenericError", `QMP input member '${key}' must be a string`);
          }
          name = value;
          oob = key === "exec-oob";
        } else if (key === "arguments") {
          if (value === null || typeof value !== "object" || Array.isArray(value)) {
            throw new QmpError("GenericError", "QMP input member 'arguments' must be an object");
          }
        } else if (key !== "id") {
          throw new QmpError("GenericError", `QMP input member '${key}' is unexpected`);
        }
      }
      if (name === undefined) throw new QmpError("GenericError", "QMP input lacks member 'execute'");
      const args = (input.arguments ?? {}) as { [key: string]: Json };
      if (oob) throw new QmpError("GenericError", `The command ${name} does not support OOB`);
      if (name === "qmp_capabilities") return { kind: "reply", reply: this.#capabilities(args, id) };
      if (!this.#negotiated) {
        throw new QmpError("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'");
      }
      return { kind: "execute", execute: id === undefined ? { name, args } : { name, args, id } };
    } catch (e) {
      if (e instanceof QmpError) return { kind: "reply", reply: qmpErrorReply(e, id) };
      throw e;
    }
  }

  #capabilities(args: { [key: string]: Json }, id: Json | undefined): Json {
    if (this.#negotiated) {
      throw new QmpError("CommandNotFound", "Capabilities negotiation is already complete, command ignored");
    }
    for (const key of Object.keys(args)) {
      if (key !== "enable") throw new QmpError("GenericError", `Parameter '${key}' is unexpected`);
    }
    const enable = args.enable;
    let oob = false;
    if (enable !== undefined) {
      if (!Array.isArray(enable)) {
        throw new QmpError("GenericError", "Invalid parameter type for 'enable', expected: array");
      }
      for (const cap of enable) {
        if (cap !== "oob") {
          throw new QmpError(
            "GenericError",
            typeof cap === "string"
              ? `Parameter 'null' does not accept value '${cap}'` // QEMU 7.2's words, 'null' and all
              : `Invalid parameter type for 'enable[${enable.indexOf(cap)}]', expected: string`,
          );
        }
        oob = true;
      }
    }
    this.#negotiated = true;
    this.#oob = oob;
    return qmpReturn({}, id);
  }
}
