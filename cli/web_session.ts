/**
 * The live page's commands and pushes, on the VM thread. {@link WebCommands} are the commands the
 * page adds to the shared command layer (QMP may offer them too): the map as data, the memslots,
 * the timeline, dirty logging and its pages, the vCPUs' states and exit counts. {@link WebSession}
 * ties them to a {@link WebServer}: it records the timeline, pushes every map change as it commits
 * (so a page redraws within one round trip of a PAM or BAR write), mirrors the serial console, and
 * answers the pages' commands, the run controls going to the shared `MonitorCommands`.
 *
 * @module
 */

import { type AddressSpace, DirtyLogClient, type MemoryRegion } from "../memory/mod.ts";
import type { MonitorCommands } from "./monitor_commands.ts";
import { runQmpCommand } from "./qmp_commands.ts";
import type { Json } from "./qmp_json.ts";
import { QmpError } from "./qmp_session.ts";
import { type MapMemslot, type MapSnapshot, mapSnapshot, memslotData, type SlotLike } from "./web_map.ts";
import { type MemslotCallLike, Timeline, type TimelineEntry } from "./web_trace.ts";
import type { WebServer } from "./web_server.ts";

/** What the page needs of a machine; a board without KVM has only the address spaces. */
export interface WebMachine {
  /** The address spaces, "memory" first (its dirty log is the one synced). */
  readonly spaces: readonly AddressSpace[];
  /** Number of vCPUs (0: a board without KVM). */
  readonly cpus: number;
  /** The KVM listener's memslots. */
  memslots?(): readonly SlotLike[];
  /** Per vCPU, its exits by `KVM_EXIT_*` reason (live). */
  exitCounts?(): readonly Uint32Array[];
  /** Per vCPU, `KVM_GET_MP_STATE` (asked only while the vCPUs are out of `KVM_RUN`). */
  mpStates?(): number[];
  /** `info registers` text of vCPU `cpu`. */
  registers?(cpu: number): string;
}

/** `KVM_EXIT_*` names of the reasons a run returns to userspace. */
const EXIT_NAMES: Record<number, string> = {
  0: "unknown",
  1: "exception",
  2: "io",
  4: "debug",
  5: "hlt",
  6: "mmio",
  8: "shutdown",
  9: "fail_entry",
  10: "intr",
  17: "internal_error",
  24: "system_event",
};
const MP_STATES = ["runnable", "uninitialized", "init_received", "halted", "sipi_received"];
/** The QMP commands a page may run: the run controls and queries, nothing that writes files or quits. */
const SHARED_COMMANDS = new Set([
  "query-status",
  "stop",
  "cont",
  "system_reset",
  "query-cpus-fast",
  "query-version",
]);
/** Serial bytes are sent at least this often while output flows (and with every command). */
const SERIAL_FLUSH_MS = 50;
const SERIAL_FLUSH_BYTES = 4096;
const SERIAL_KEEP = 64 << 10;

/** The commands the page adds (`x-query-mtree`, …), over one machine. VM thread only. */
export class WebCommands {
  readonly #machine: WebMachine;
  readonly #logged = new Set<MemoryRegion>();
  readonly timeline: Timeline;

  /** Commands over `machine`; starts recording its timeline. */
  constructor(machine: WebMachine) {
    this.#machine = machine;
    this.timeline = new Timeline(machine.spaces);
  }

  /** `x-query-mtree`: region trees and flat views as data. */
  mtree(): MapSnapshot {
    return mapSnapshot(this.#machine.spaces);
  }

  /** `x-query-memslots`: the KVM memslots (none without KVM). */
  memslots(): MapMemslot[] {
    return memslotData(this.#machine.memslots?.() ?? []);
  }

  /** `x-query-timeline`: the entries kept. */
  timelineEntries(): readonly TimelineEntry[] {
    return this.timeline.entries;
  }

  /** The RAM regions of "memory"'s flat view (what dirty logging can cover). */
  ramRegions(): MemoryRegion[] {
    const seen = new Set<MemoryRegion>();
    for (const r of this.#machine.spaces[0]?.view.ranges ?? []) {
      if (r.region.isRam && r.region.hasRamBacking && !r.region.readonly) seen.add(r.region);
    }
    return [...seen];
  }

  /** `x-dirty-log`: starts (or stops) dirty logging of every RAM region, as a migration client. */
  setDirtyLog(on: boolean): { regions: string[] } {
    if (on) {
      for (const region of this.ramRegions()) {
        if (this.#logged.has(region)) continue;
        region.setLog(true, DirtyLogClient.MIGRATION);
        this.#logged.add(region);
      }
    } else {
      for (const region of this.#logged) region.setLog(false, DirtyLogClient.MIGRATION);
      this.#logged.clear();
    }
    return { regions: [...this.#logged].map((r) => r.name) };
  }

  /**
   * `x-query-dirty`: for each logged region, the pages written since the last call (KVM's dirty
   * log synced first), as a bitmap in base64, page n at bit n & 7 of byte n >> 3.
   */
  dirty(): { regions: { name: string; pages: number; bitmap: string; count: number }[] } {
    const memory = this.#machine.spaces[0];
    const out = [];
    for (const region of this.#logged) {
      memory?.syncDirtyLog(region);
      const pages = Number((region.size + 4095n) / 4096n);
      const bits = new Uint8Array((pages + 7) >> 3);
      const dirty = region.takeDirtyPages();
      for (const offset of dirty) {
        const page = Number(offset / 4096n);
        bits[page >> 3] |= 1 << (page & 7);
      }
      out.push({ name: region.name, pages, bitmap: toBase64(bits), count: dirty.length });
    }
    return { regions: out };
  }

  /** `x-query-vcpus`: each vCPU's state and exits by reason; `paused` from the run state. */
  vcpus(paused: boolean): Json {
    const counts = this.#machine.exitCounts?.() ?? [];
    let mp: number[] | undefined;
    // Only a vCPU out of KVM_RUN answers: the one run on this thread is (this is a hook), the SMP
    // threads only when held.
    if (this.#machine.mpStates && (paused || this.#machine.cpus === 1)) {
      try {
        mp = this.#machine.mpStates();
      } catch {
        mp = undefined;
      }
    }
    return {
      time: performance.now(),
      vcpus: Array.from({ length: this.#machine.cpus }, (_, cpu) => {
        const exits: Record<string, number> = {};
        counts[cpu]?.forEach((n, reason) => {
          if (n > 0) exits[EXIT_NAMES[reason] ?? `reason_${reason}`] = n;
        });
        const mpState = mp?.[cpu];
        const state = paused ? "paused" : mpState === 3 ? "halted" : "running";
        return {
          cpu,
          state,
          mpState: mpState === undefined ? null : MP_STATES[mpState] ?? String(mpState),
          exits,
        };
      }),
    };
  }

  /** `x-query-registers`: `info registers` of `cpu`. */
  registers(cpu: number): string {
    if (!this.#machine.registers) throw new QmpError("GenericError", "this machine has no vCPUs");
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.#machine.cpus) {
      throw new QmpError(
        "GenericError",
        `Parameter 'cpu' expects a CPU number from 0 to ${this.#machine.cpus - 1}`,
      );
    }
    return this.#machine.registers(cpu);
  }

  /** Stops logging and recording. */
  close(): void {
    try {
      this.setDirtyLog(false);
    } catch {
      // the board is going away
    }
    this.timeline.close();
  }
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

/**
 * One page server's session on the VM thread.
 *
 * @example
 * ```ts ignore
 * const session = new WebSession(server, webMachine, commands);
 * // await PcMachine.create({ serial: (b) => session.serialByte(b), traceMemslots: (c) => session.memslot(c) })
 * // in the run hook: session.pump();
 * ```
 */
export class WebSession {
  readonly #server: WebServer;
  readonly #commands: MonitorCommands | undefined;
  readonly #machine: WebMachine;
  /** The page's own commands. */
  readonly web: WebCommands;
  #serial: number[] = [];
  readonly #serialLog: number[] = [];
  #serialSent = 0;

  /** A session over `machine`, its run controls (if it runs) by `commands`. */
  constructor(server: WebServer, machine: WebMachine, commands?: MonitorCommands) {
    this.#server = server;
    this.#commands = commands;
    this.#machine = machine;
    this.web = new WebCommands(machine);
    this.web.timeline.onCommit = () => this.#pushChanges();
  }

  /** Records a `KVM_SET_USER_MEMORY_REGION` (give it the KVM listener's trace calls). */
  memslot(call: MemslotCallLike): void {
    this.web.timeline.memslot(call);
  }

  /** Mirrors one byte of the serial console to the pages (sent in batches). */
  serialByte(byte: number): void {
    this.#serial.push(byte);
    if (this.#serial.length >= SERIAL_FLUSH_BYTES) this.#flushSerial();
    else if (byte === 0x0a && performance.now() - this.#serialSent > SERIAL_FLUSH_MS) this.#flushSerial();
  }

  /** Sends a QMP-style event (STOP, RESUME, RESET, SHUTDOWN) to the pages. */
  event(name: string, data?: Json): void {
    this.#server.push("event", {
      event: name,
      data: data ?? {},
      status: this.#commands?.queryStatus() ?? null,
    });
  }

  /** VM thread: answers a page's command if one waits, and sends pending serial output. */
  pump(): boolean {
    this.#flushSerial();
    return this.#server.serve((name, args) => this.run(name, args));
  }

  /** Runs one command of the page's (or QMP's) by name. */
  run(name: string, args: Record<string, unknown>): unknown {
    switch (name) {
      case "x-query-mtree":
        return this.web.mtree();
      case "x-query-memslots":
        return this.web.memslots();
      case "x-query-timeline":
        return this.web.timelineEntries();
      case "x-query-serial":
        return { text: new TextDecoder().decode(new Uint8Array(this.#serialLog)) };
      case "x-query-vcpus":
        return this.web.vcpus(this.#commands?.paused ?? false);
      case "x-query-registers":
        return { text: this.web.registers(Number(args.cpu ?? 0)) };
      case "x-dirty-log":
        if (typeof args.on !== "boolean") {
          throw new QmpError("GenericError", "Parameter 'on' expects a boolean");
        }
        return this.web.setDirtyLog(args.on);
      case "x-query-dirty":
        return this.web.dirty();
      case "x-query-machine":
        return {
          cpus: this.#machine.cpus,
          status: this.#commands?.queryStatus() ?? null,
          kvm: this.#machine.memslots !== undefined,
          dirtyLog: this.web.ramRegions().some((r) => r.dirtyLogMask !== 0),
        };
    }
    if (!SHARED_COMMANDS.has(name)) {
      throw new QmpError("CommandNotFound", `The command ${name} has not been found`);
    }
    if (!this.#commands) throw new QmpError("GenericError", "this board has no vCPUs to run");
    return runQmpCommand(this.#commands, name, args as { [key: string]: Json });
  }

  /** Stops recording and dirty logging (call before the board closes). */
  close(): void {
    this.#flushSerial();
    this.web.close();
  }

  #pushChanges(): void {
    const timeline = this.web.timeline.take();
    if (timeline.length === 0) return;
    const committed = Date.now();
    this.#server.push("changes", {
      timeline,
      map: this.web.mtree(),
      memslots: this.web.memslots(),
      committed,
    });
  }

  #flushSerial(): void {
    if (this.#serial.length === 0) return;
    const bytes = this.#serial;
    this.#serial = [];
    this.#serialSent = performance.now();
    for (const b of bytes) this.#serialLog.push(b);
    if (this.#serialLog.length > SERIAL_KEEP) this.#serialLog.splice(0, this.#serialLog.length - SERIAL_KEEP);
    this.#server.push("serial", { text: new TextDecoder().decode(new Uint8Array(bytes)) });
  }
}
