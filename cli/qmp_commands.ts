/**
 * QMP's commands: each one's argument schema, checked as QEMU's QAPI input visitor checks it (in
 * schema order: missing members, then types, then members left over), and the call into
 * {@link MonitorCommands}. `human-monitor-command` runs the terminal monitor's own parser.
 *
 * @module
 */

import { type MonitorCommands, QMP_COMMANDS } from "./monitor_commands.ts";
import { runMonitorCommand } from "./monitor.ts";
import type { Json } from "./qmp_json.ts";
import { QmpError } from "./qmp_session.ts";

type ArgType = "int" | "str" | "bool" | "str-list";
type Schema = [name: string, type: ArgType, optional?: boolean][];
type Args = { [key: string]: Json };

const SCHEMAS: Record<(typeof QMP_COMMANDS)[number], Schema> = {
  "human-monitor-command": [["command-line", "str"], ["cpu-index", "int", true]],
  cont: [],
  stop: [],
  pmemsave: [["val", "int"], ["size", "int"], ["filename", "str"]],
  memsave: [["val", "int"], ["size", "int"], ["filename", "str"], ["cpu-index", "int", true]],
  system_powerdown: [],
  system_reset: [],
  "query-cpus-fast": [],
  quit: [],
  "query-commands": [],
  "query-version": [],
  qmp_capabilities: [],
  "query-status": [],
  "x-kvmts-snapshot-save": [["dir", "str"], ["diff", "bool", true]],
  "query-rx-filter": [["name", "str", true]],
  "announce-self": [
    ["initial", "int"],
    ["max", "int"],
    ["rounds", "int"],
    ["step", "int"],
    ["interfaces", "str-list", true],
    ["id", "str", true],
  ],
};

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

/** Checks `args` against `schema` as QEMU's visitor does; the checked values, ints as bigint. */
function checkArgs(
  schema: Schema,
  args: Args,
): Record<string, bigint | string | boolean | string[] | undefined> {
  const out: Record<string, bigint | string | boolean | string[] | undefined> = {};
  for (const [name, type, optional] of schema) {
    const value = Object.hasOwn(args, name) ? args[name] : undefined;
    if (value === undefined) {
      if (!optional) throw new QmpError("GenericError", `Parameter '${name}' is missing`);
      continue;
    }
    if (type === "str-list") {
      if (!Array.isArray(value)) {
        throw new QmpError("GenericError", `Invalid parameter type for '${name}', expected: array`);
      }
      value.forEach((item, i) => {
        if (typeof item !== "string") {
          throw new QmpError("GenericError", `Invalid parameter type for '${name}[${i}]', expected: string`);
        }
      });
      out[name] = value as string[];
    } else if (type === "str") {
      if (typeof value !== "string") {
        throw new QmpError("GenericError", `Invalid parameter type for '${name}', expected: string`);
      }
      out[name] = value;
    } else if (type === "bool") {
      if (typeof value !== "boolean") {
        throw new QmpError("GenericError", `Invalid parameter type for '${name}', expected: boolean`);
      }
      out[name] = value;
    } else {
      const int = typeof value === "bigint"
        ? value
        : Number.isInteger(value)
        ? BigInt(value as number)
        : null;
      if (int === null || int < INT64_MIN || int > INT64_MAX) {
        throw new QmpError("GenericError", `Invalid parameter type for '${name}', expected: integer`);
      }
      out[name] = int;
    }
  }
  for (const key of Object.keys(args)) {
    if (!schema.some(([name]) => name === key)) {
      throw new QmpError("GenericError", `Parameter '${key}' is unexpected`);
    }
  }
  return out;
}

/**
 * Runs QMP command `name` with `args` on `commands`: its return value, or a thrown {@link QmpError}
 * (`CommandNotFound` for a name QMP does not offer).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MonitorCommands } from "./monitor_commands.ts";
 * import { runQmpCommand } from "./qmp_commands.ts";
 * const machine = {
 *   mtree: () => "", registers: () => "RAX=0\n", powerButton: () => true, cpus: 1, threadIds: () => [7],
 *   readPhysical: (_a: bigint, n: number) => new Uint8Array(n), translate: (_c: number, v: bigint) => v,
 * };
 * const commands = new MonitorCommands(machine, { event: () => {}, end: () => {} });
 * assert.equal(runQmpCommand(commands, "human-monitor-command", { "command-line": "info registers" }), "RAX=0\r\n");
 * assert.throws(() => runQmpCommand(commands, "stop", { now: true }), /Parameter 'now' is unexpected/);
 * ```
 */
export function runQmpCommand(commands: MonitorCommands, name: string, args: Args): Json {
  if (!Object.hasOwn(SCHEMAS, name)) {
    throw new QmpError("CommandNotFound", `The command ${name} has not been found`);
  }
  const a = checkArgs(SCHEMAS[name as keyof typeof SCHEMAS], args);
  switch (name as (typeof QMP_COMMANDS)[number]) {
    case "query-status":
      return commands.queryStatus();
    case "stop":
      commands.stop();
      return {};
    case "cont":
      commands.cont();
      return {};
    case "system_reset":
      commands.systemReset();
      return {};
    case "system_powerdown":
      commands.systemPowerdown();
      return {};
    case "quit":
      commands.quit();
      return {};
    case "query-cpus-fast":
      return commands.queryCpusFast();
    case "query-version":
      return commands.queryVersion();
    case "query-commands":
      return commands.queryCommands();
    case "query-rx-filter":
      return commands.queryRxFilter(a.name as string | undefined);
    case "announce-self": {
      // QEMU takes any int64 here; out of this product's bounds the command is refused.
      const int = (name: string) => {
        const v = a[name] as bigint;
        return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : NaN;
      };
      commands.announceSelf(
        { initial: int("initial"), max: int("max"), rounds: int("rounds"), step: int("step") },
        {
          ...(a.interfaces !== undefined ? { interfaces: a.interfaces as string[] } : {}),
          ...(a.id !== undefined ? { id: a.id as string } : {}),
        },
      );
      return {};
    }
    case "memsave": {
      const cpu = a["cpu-index"] as bigint | undefined;
      const index = cpu === undefined
        ? 0
        : cpu < 0n || cpu >= BigInt(commands.machine.cpus)
        ? -1
        : Number(cpu);
      commands.memsave(a.val as bigint, a.size as bigint, a.filename as string, index);
      return {};
    }
    case "pmemsave":
      commands.pmemsave(a.val as bigint, a.size as bigint, a.filename as string);
      return {};
    case "human-monitor-command": {
      const cpu = a["cpu-index"] as bigint | undefined;
      if (cpu !== undefined && (cpu < 0n || cpu >= BigInt(commands.machine.cpus))) {
        throw new QmpError("GenericError", "Parameter 'cpu-index' expects a CPU number");
      }
      // QEMU's monitor ends its lines with CR LF, and QMP hands them over as they are.
      return runMonitorCommand(commands, a["command-line"] as string).output.replaceAll("\n", "\r\n");
    }
    case "x-kvmts-snapshot-save": {
      const s = commands.snapshotSave(a.dir as string, a.diff === true);
      return { kind: s.kind, dir: s.dir, pages: s.pages, "state-bytes": s.stateBytes };
    }
    case "qmp_capabilities":
      throw new QmpError("CommandNotFound", "Capabilities negotiation is already complete, command ignored");
  }
}
