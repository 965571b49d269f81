/**
 * The engine of the gdb stub (`-s`, `-gdb tcp::PORT`): GDB's remote serial protocol for an x86-64
 * guest, one thread per vCPU. Pure — bytes from the client go in through {@link GdbStub.receive},
 * bytes for the client come out through the `send` callback, and the machine is reached only
 * through the {@link GdbTarget} interface — so every packet is tested against a fake target and a
 * real `gdb` without KVM or sockets in the engine.
 *
 * Behaviour follows QEMU 7.2's gdbstub with KVM where the protocol leaves a choice (which packets
 * exist, error numbers, thread ids, `T05` on attach, `T02` after Ctrl-C, `W` when the guest ends);
 * it adds `QStartNoAckMode` and the `swbreak`/`hwbreak` stop reasons, which QEMU 7.2 lacks.
 *
 * @module
 */

import type { GuestDebug } from "../kvm/vcpu.ts";
import {
  BreakpointTable,
  type DebugStopReason,
  type DebugTrap,
  type HwBreakpoint,
  type HwBreakpointKind,
  INT3_OPCODE,
} from "./gdb_breakpoints.ts";
import {
  escapeBinary,
  framePacket,
  fromHex,
  hex8,
  latin1Bytes,
  NACK,
  PacketReader,
  toHex,
  unescapeBinary,
} from "./gdb_packet.ts";
import {
  decodeRegisters,
  encodeRegister,
  encodeRegisters,
  X86_64_TARGET_XML,
  X86_REGISTERS,
  type X86Registers,
} from "./gdb_x86.ts";

/** One vCPU's part of a resume: it single-steps, or runs. vCPUs not listed stay paused. */
export interface ResumeAction {
  /** The vCPU index (gdb thread id − 1). */
  readonly vcpu: number;
  /** True to execute one instruction and stop; false to run. */
  readonly step: boolean;
}

/** What the target reports through {@link GdbStub.stopped}, once every vCPU is paused again. */
export type TargetStop =
  | {
    /** A `KVM_EXIT_DEBUG` the stub should explain (see {@link GdbStub.classifyDebugExit}). */
    readonly kind: "debug";
    /** The vCPU that took it. */
    readonly vcpu: number;
    /** exception, pc and DR6 from the exit. */
    readonly trap: DebugTrap;
  }
  | {
    /** The vCPUs stopped because {@link GdbTarget.interrupt} asked them to. */
    readonly kind: "interrupted";
    /** The vCPU to report (the one gdb was looking at, or 0). */
    readonly vcpu: number;
  }
  | {
    /** The guest ended (isa-debug-exit, power-off): gdb sees the process exit with `status`. */
    readonly kind: "exited";
    /** The exit status (its low 8 bits go on the wire). */
    readonly status: number;
  };

/**
 * The machine as the stub sees it. Every method but {@link resume} and {@link interrupt} is only
 * called while all vCPUs are paused; addresses are guest-virtual (linear), translated by the
 * target through the vCPU's page tables (`KVM_TRANSLATE`).
 */
export interface GdbTarget {
  /** The number of vCPUs: gdb threads 1…n. */
  readonly vcpuCount: number;
  /** The registers of one vCPU, in the stub's x86-64 register file. */
  readRegisters(vcpu: number): X86Registers;
  /** Writes back a register file (all of it; the stub read it first). */
  writeRegisters(vcpu: number, regs: X86Registers): void;
  /** Up to `length` bytes at a guest-virtual address; fewer when an unmapped page cuts it short. */
  readMemory(vcpu: number, address: bigint, length: number): Uint8Array;
  /** Writes bytes at a guest-virtual address; returns how many were written before a fault. */
  writeMemory(vcpu: number, address: bigint, data: Uint8Array): number;
  /** `KVM_SET_GUEST_DEBUG` for one vCPU (the stub sets every vCPU before each resume). */
  setGuestDebug(vcpu: number, debug: GuestDebug): void;
  /** Lets the listed vCPUs run or step; returns at once. A {@link GdbStub.stopped} call follows. */
  resume(actions: readonly ResumeAction[]): void;
  /** Ctrl-C: pause every vCPU, then report `{ kind: "interrupted" }`. */
  interrupt(): void;
  /** gdb's `k`: end the VM. */
  kill(): void;
  /** `monitor CMD` (qRcmd): the text to print; absent when the target has no monitor. */
  monitor?(command: string): string;
  /** Text for `info threads` (qThreadExtraInfo); "CPU#n" when absent. */
  threadName?(vcpu: number): string;
}

/** Options of {@link GdbStub}. */
export interface GdbStubOptions {
  /** The machine. */
  readonly target: GdbTarget;
  /** Writes bytes to the client. */
  readonly send: (bytes: Uint8Array) => void;
  /** The packet size announced in qSupported (QEMU's: 4096). */
  readonly packetSize?: number;
}

/** QEMU's PacketSize (0x1000). */
const DEFAULT_PACKET_SIZE = 0x1000;
/** gdb signal numbers of the stop replies (gdb's own numbering, not the host's). */
const GDB_SIGNAL_INT = 2;
const GDB_SIGNAL_TRAP = 5;
/** The pid every thread belongs to (QEMU: one process). */
const PID = 1;
/** Error replies, with QEMU's numbers: EINVAL for a bad request, EFAULT for memory, EBUSY. */
const E_INVAL = "E22";
const E_FAULT = "E14";
const E_BUSY = "E16";
const OK = "OK";
/** The features gdb may ask for; QEMU 7.2 offers the first four. */
const VCONT_ACTIONS = "vCont;c;C;s;S";

/** A parsed thread id: a vCPU index, every thread (-1), or any thread (0 → "any"). */
type ThreadSel = number | "all" | "any";

/**
 * One client's session. Construct it when a client connects, with every vCPU paused (QEMU stops
 * the VM on connection); feed it the client's bytes; report stops with {@link stopped}; call
 * {@link disconnect} if the connection drops without a `D`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GdbStub, type GdbTarget } from "./gdb_stub.ts";
 * const sent: string[] = [];
 * const target = { vcpuCount: 1 } as GdbTarget; // only '?' is asked here
 * const stub = new GdbStub({ target, send: (b) => sent.push(new TextDecoder().decode(b)) });
 * stub.receive(new TextEncoder().encode("$?#3f"));
 * assert.deepEqual(sent, ["+", "$T05thread:01;#07"]);
 * ```
 */
export class GdbStub {
  readonly #target: GdbTarget;
  readonly #send: (bytes: Uint8Array) => void;
  readonly #packetSize: number;
  readonly #reader: PacketReader;
  readonly #breakpoints = new BreakpointTable();
  #noAck = false;
  #multiprocess = false;
  #swbreak = false;
  #hwbreak = false;
  #lastSent: Uint8Array | undefined;
  #running = false;
  #ended = false;
  #interruptRequested = false;
  #stepping = new Set<number>();
  #stepOver: { vcpu: number; address: bigint; then: readonly ResumeAction[] | "report" } | undefined;
  #gVcpu = 0;
  #cVcpu = 0;
  /** The last stop reply, kept apart from its thread id (whose format qSupported can change). */
  #lastStop: { prefix: string; vcpu?: number };

  /** A session over a paused machine. */
  constructor(options: GdbStubOptions) {
    this.#target = options.target;
    this.#send = options.send;
    this.#packetSize = options.packetSize ?? DEFAULT_PACKET_SIZE;
    this.#reader = new PacketReader(Math.max(this.#packetSize * 2, 0x1_0000));
    this.#lastStop = { prefix: `T${hex8(GDB_SIGNAL_TRAP)}`, vcpu: 0 };
  }

  /** Whether the vCPUs are running (resumed and no stop reported yet). */
  get running(): boolean {
    return this.#running;
  }

  /** The breakpoints in place (for the wiring's monitor and for tests). */
  get breakpoints(): BreakpointTable {
    return this.#breakpoints;
  }

  /** Whether single-step was requested for `vcpu` in the current resume. */
  isStepping(vcpu: number): boolean {
    return this.#stepping.has(vcpu);
  }

  /**
   * For the runner, at a `KVM_EXIT_DEBUG` on `vcpu`: the stop it means to gdb, or `"guest"` when
   * it is the guest's own trap (re-inject the exception with KVM_SET_VCPU_EVENTS and run on).
   */
  classifyDebugExit(vcpu: number, trap: DebugTrap): DebugStopReason | "guest" {
    return this.#breakpoints.classify(trap, this.#stepping.has(vcpu));
  }

  /** Bytes from the client. */
  receive(bytes: Uint8Array): void {
    for (const event of this.#reader.push(bytes)) {
      switch (event.kind) {
        case "ack":
          this.#lastSent = undefined;
          break;
        case "nack":
          if (!this.#noAck && this.#lastSent) this.#send(this.#lastSent);
          break;
        case "interrupt":
          this.#interrupt();
          break;
        case "overflow":
          if (!this.#noAck) this.#send(Uint8Array.of(NACK));
          break;
        case "packet":
          if (!event.ok) {
            if (!this.#noAck) this.#send(Uint8Array.of(NACK));
            break;
          }
          if (!this.#noAck) this.#send(latin1Bytes("+"));
          this.#dispatch(event.payload);
      }
    }
  }

  /**
   * The target's report that every vCPU is paused after a resume or an interrupt. Sends the stop
   * reply (`T05…`, `T02…`, `W…`), unless the stop was the stub's own step over a breakpoint, in
   * which case the resume gdb asked for goes on.
   */
  stopped(event: TargetStop): void {
    if (!this.#running || this.#ended) return;
    this.#running = false;
    const stepOver = this.#stepOver;
    this.#stepOver = undefined;
    if (stepOver) {
      if (this.#breakpoints.hasSoftware(stepOver.address)) {
        this.#target.writeMemory(stepOver.vcpu, stepOver.address, Uint8Array.of(INT3_OPCODE));
      }
      const stepDone = event.kind === "debug" && event.vcpu === stepOver.vcpu &&
        this.classifyDebugExit(event.vcpu, event.trap) !== "guest";
      if (stepDone && stepOver.then !== "report" && !this.#interruptRequested) {
        this.#startResume(stepOver.then);
        return;
      }
      if (stepDone && this.#interruptRequested && stepOver.then !== "report") {
        this.#interruptRequested = false;
        this.#reportStop(`T${hex8(GDB_SIGNAL_INT)}`, stepOver.vcpu);
        return;
      }
    }
    this.#interruptRequested = false;
    switch (event.kind) {
      case "exited":
        this.#ended = true;
        this.#stepping.clear();
        this.#lastStop = { prefix: `W${hex8(event.status & 0xff)}` };
        this.#reply(this.#stopReply());
        return;
      case "interrupted":
        this.#reportStop(`T${hex8(GDB_SIGNAL_INT)}`, event.vcpu);
        return;
      case "debug": {
        const reason = this.classifyDebugExit(event.vcpu, event.trap);
        this.#reportStop(`T${hex8(GDB_SIGNAL_TRAP)}${this.#reasonText(reason)}`, event.vcpu);
      }
    }
  }

  /**
   * The client went away without `D`: remove every breakpoint, hand the debug registers back to
   * the guest and let it run, as after a detach.
   */
  disconnect(): void {
    if (this.#ended) return;
    this.#detach(false);
  }

  #reasonText(reason: DebugStopReason | "guest"): string {
    if (reason === "guest") return "";
    switch (reason.kind) {
      case "step":
        return "";
      case "swbreak":
        return this.#swbreak ? "swbreak:;" : "";
      case "hwbreak":
        return this.#hwbreak ? "hwbreak:;" : "";
      case "watch":
        return `${reason.access === "write" ? "watch" : "awatch"}:${reason.address.toString(16)};`;
    }
  }

  #reportStop(prefix: string, vcpu: number): void {
    this.#stepping.clear();
    this.#gVcpu = this.#cVcpu = vcpu;
    this.#lastStop = { prefix, vcpu };
    this.#reply(this.#stopReply());
  }

  #stopReply(): string {
    const { prefix, vcpu } = this.#lastStop;
    return vcpu === undefined ? prefix : `${prefix}thread:${this.#threadId(vcpu)};`;
  }

  #interrupt(): void {
    if (!this.#running || this.#interruptRequested) return;
    this.#interruptRequested = true;
    this.#target.interrupt();
  }

  #reply(payload: string | Uint8Array): void {
    const bytes = framePacket(payload);
    if (!this.#noAck) this.#lastSent = bytes;
    this.#send(bytes);
  }

  #threadId(vcpu: number): string {
    const tid = (vcpu + 1).toString(16).padStart(2, "0");
    return this.#multiprocess ? `p${PID.toString(16).padStart(2, "0")}.${tid}` : tid;
  }

  /** `p1.2`, `p1.-1`, `2`, `-1`, `0` → a vCPU, all, or any; undefined when malformed or absent. */
  #parseThread(text: string): ThreadSel | undefined {
    const m = /^(?:p(-1|[0-9a-fA-F]+)\.)?(-1|[0-9a-fA-F]+)$/.exec(text) ?? /^p(-1|[0-9a-fA-F]+)$/.exec(text);
    if (!m) return undefined;
    const tidText = m.length === 3 ? m[2] : "-1";
    if (tidText === "-1") return "all";
    const tid = parseInt(tidText, 16);
    if (tid === 0) return "any";
    return tid <= this.#target.vcpuCount ? tid - 1 : undefined;
  }

  #dispatch(packet: string): void {
    if (this.#running) {
      // All-stop: while the guest runs, gdb only sends Ctrl-C. Anything else is refused, not queued.
      this.#reply(E_BUSY);
      return;
    }
    const reply = this.#handle(packet);
    if (reply !== undefined) this.#reply(reply);
  }

  /** The reply to one packet; undefined when there is none now (resume, kill). */
  #handle(packet: string): string | Uint8Array | undefined {
    if (packet === "QStartNoAckMode") {
      this.#reply(OK);
      this.#noAck = true;
      this.#lastSent = undefined;
      return undefined;
    }
    if (this.#ended && !/^(\?|q|D|k|vKill)/.test(packet)) {
      return E_INVAL; // the guest has exited or was detached: nothing to read, write or run
    }
    const head = packet[0];
    const body = packet.slice(1);
    switch (head) {
      case "?":
        return this.#stopReply();
      case "g":
        return toHex(encodeRegisters(this.#target.readRegisters(this.#gVcpu)));
      case "G":
        return this.#writeAll(body);
      case "p":
        return this.#readOne(body);
      case "P":
        return this.#writeOne(body);
      case "m":
        return this.#readMemory(body);
      case "M":
        return this.#writeMemory(body, false);
      case "X":
        return this.#writeMemory(body, true);
      case "c":
      case "C":
        return this.#legacyResume(head, body, false);
      case "s":
      case "S":
        return this.#legacyResume(head, body, true);
      case "H":
        return this.#setThread(body);
      case "T":
        return this.#parseThread(body) === undefined || this.#parseThread(body) === "all" ? E_INVAL : OK;
      case "Z":
      case "z":
        return this.#breakpoint(head === "Z", body);
      case "D":
        if (this.#ended) return OK;
        this.#detach(true);
        return undefined;
      case "k":
        if (!this.#ended) this.#target.kill();
        this.#ended = true;
        return undefined;
      case "v":
        return this.#vPacket(packet);
      case "q":
        return this.#query(packet);
      default:
        return "";
    }
  }

  #readOne(body: string): string {
    const n = parseInt(body, 16);
    if (!/^[0-9a-fA-F]+$/.test(body) || n >= X86_REGISTERS.length) return E_FAULT;
    return toHex(encodeRegister(this.#target.readRegisters(this.#gVcpu), n));
  }

  #writeOne(body: string): string {
    const m = /^([0-9a-fA-F]+)=([0-9a-fA-F]*)$/.exec(body);
    if (!m) return E_INVAL;
    const n = parseInt(m[1], 16);
    if (n >= X86_REGISTERS.length) return E_FAULT;
    const info = X86_REGISTERS[n];
    let bytes: Uint8Array;
    try {
      bytes = fromHex(m[2]);
    } catch {
      return E_INVAL;
    }
    if (bytes.length !== info.bits / 8) return E_INVAL;
    const regs = this.#target.readRegisters(this.#gVcpu);
    let value = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
    this.#target.writeRegisters(this.#gVcpu, { ...regs, [info.name]: value });
    return OK;
  }

  #writeAll(body: string): string {
    let bytes: Uint8Array;
    try {
      bytes = fromHex(body);
    } catch {
      return E_INVAL;
    }
    const regs = this.#target.readRegisters(this.#gVcpu);
    this.#target.writeRegisters(this.#gVcpu, decodeRegisters(bytes, regs));
    return OK;
  }

  #readMemory(body: string): string {
    const m = /^([0-9a-fA-F]+),([0-9a-fA-F]+)$/.exec(body);
    if (!m) return E_INVAL;
    const address = BigInt(`0x${m[1]}`);
    // Two hex digits a byte must fit the packet size gdb was told.
    const length = Math.min(parseInt(m[2], 16), Math.floor((this.#packetSize - 4) / 2));
    if (length === 0) return "";
    const data = this.#target.readMemory(this.#gVcpu, address, length);
    return data.length === 0 ? E_FAULT : toHex(data);
  }

  #writeMemory(body: string, binary: boolean): string {
    const colon = body.indexOf(":");
    const m = /^([0-9a-fA-F]+),([0-9a-fA-F]+)$/.exec(colon < 0 ? "" : body.slice(0, colon));
    if (!m) return E_INVAL;
    const address = BigInt(`0x${m[1]}`);
    const length = parseInt(m[2], 16);
    let data: Uint8Array;
    try {
      data = binary ? unescapeBinary(body.slice(colon + 1)) : fromHex(body.slice(colon + 1));
    } catch {
      return E_INVAL;
    }
    if (data.length !== length) return E_INVAL;
    if (length === 0) return OK; // gdb's probe for X
    return this.#target.writeMemory(this.#gVcpu, address, data) === length ? OK : E_FAULT;
  }

  #setThread(body: string): string {
    const op = body[0];
    const sel = this.#parseThread(body.slice(1));
    if ((op !== "g" && op !== "c") || sel === undefined) return E_INVAL;
    if (sel === "all") return OK; // every thread: keep the current one (registers need one)
    const vcpu = sel === "any" ? 0 : sel;
    if (op === "g") this.#gVcpu = vcpu;
    else this.#cVcpu = vcpu;
    return OK;
  }

  /** `c [addr]`, `s [addr]`, `C sig[;addr]`, `S sig[;addr]`: the signal is ignored, as in QEMU. */
  #legacyResume(head: string, body: string, step: boolean): string | undefined {
    const addrText = head === "c" || head === "s" ? body : body.split(";")[1] ?? "";
    if (addrText !== "") {
      if (!/^[0-9a-fA-F]+$/.test(addrText)) return E_INVAL;
      const regs = this.#target.readRegisters(this.#cVcpu);
      this.#target.writeRegisters(this.#cVcpu, { ...regs, rip: BigInt(`0x${addrText}`) });
    }
    // As QEMU: the other vCPUs run while one steps.
    const actions: ResumeAction[] = [];
    for (let vcpu = 0; vcpu < this.#target.vcpuCount; vcpu++) {
      actions.push({ vcpu, step: step && vcpu === this.#cVcpu });
    }
    this.#startResume(actions);
    return undefined;
  }

  #vPacket(packet: string): string | undefined {
    if (packet === "vCont?") return VCONT_ACTIONS;
    if (packet.startsWith("vCont;")) return this.#vCont(packet.slice("vCont;".length));
    if (packet.startsWith("vKill")) {
      if (!this.#ended) this.#target.kill();
      this.#ended = true;
      return OK;
    }
    return "";
  }

  /** `vCont;a[:tid];a[:tid]…`: each vCPU takes the leftmost action that names it (or all). */
  #vCont(list: string): string | undefined {
    const parsed: { step: boolean | undefined; sel: ThreadSel }[] = [];
    for (const item of list.split(";")) {
      const [action, thread] = item.split(":");
      const op = action[0];
      let step: boolean | undefined;
      if (op === "c" || op === "C") step = false;
      else if (op === "s" || op === "S") step = true;
      else if (op === "t") step = undefined; // stop: already stopped in all-stop mode
      else return E_INVAL;
      if ((op === "C" || op === "S") && !/^[0-9a-fA-F]{2}$/.test(action.slice(1))) return E_INVAL;
      const sel = thread === undefined ? "all" : this.#parseThread(thread);
      if (sel === undefined) return E_INVAL;
      parsed.push({ step, sel: sel === "any" ? 0 : sel });
    }
    const actions: ResumeAction[] = [];
    for (let vcpu = 0; vcpu < this.#target.vcpuCount; vcpu++) {
      const match = parsed.find((p) => p.sel === "all" || p.sel === vcpu);
      if (match && match.step !== undefined) actions.push({ vcpu, step: match.step });
    }
    if (actions.length === 0) return E_INVAL;
    this.#startResume(actions);
    return undefined;
  }

  /**
   * Resumes: every vCPU gets its guest-debug state (hardware slots everywhere, single-step where
   * asked), then the target runs them. A vCPU about to run from one of our `int3`s first steps
   * over it with the original byte back in place (gdb normally removes its breakpoints before it
   * resumes, but a client with breakpoints always inserted does not).
   */
  #startResume(actions: readonly ResumeAction[]): void {
    this.#stepping = new Set(actions.filter((a) => a.step).map((a) => a.vcpu));
    let run = actions;
    for (const action of actions) {
      const rip = this.#target.readRegisters(action.vcpu).rip;
      const saved = this.#breakpoints.savedByte(rip);
      if (saved === undefined) continue;
      this.#target.writeMemory(action.vcpu, rip, Uint8Array.of(saved));
      this.#stepOver = { vcpu: action.vcpu, address: rip, then: action.step ? "report" : actions };
      this.#stepping = new Set([action.vcpu]);
      run = [{ vcpu: action.vcpu, step: true }];
      break;
    }
    for (let vcpu = 0; vcpu < this.#target.vcpuCount; vcpu++) {
      this.#target.setGuestDebug(vcpu, this.#breakpoints.guestDebug(this.#stepping.has(vcpu)));
    }
    this.#running = true;
    this.#target.resume(run);
  }

  /** `Z`/`z` type,addr,kind[;cond…]: conditions are not offered, so they are ignored. */
  #breakpoint(insert: boolean, body: string): string {
    const m = /^([0-4]),([0-9a-fA-F]+),([0-9a-fA-F]+)(?:;.*)?$/.exec(body);
    if (!m) return E_INVAL;
    const type = Number(m[1]);
    const address = BigInt(`0x${m[2]}`);
    const kind = parseInt(m[3], 16);
    if (type === 0) return insert ? this.#insertSoftware(address) : this.#removeSoftware(address);
    if (type === 3) return ""; // read-only watchpoints: x86 has none (R/W 10 is I/O); QEMU says so too
    const hwKind: HwBreakpointKind = type === 1 ? "exec" : type === 2 ? "write" : "access";
    const bp: HwBreakpoint = {
      address,
      kind: hwKind,
      length: (type === 1 ? 1 : kind) as HwBreakpoint["length"],
    };
    const error = insert ? this.#breakpoints.addHardware(bp) : this.#breakpoints.removeHardware(bp);
    return error === undefined ? OK : E_INVAL;
  }

  #insertSoftware(address: bigint): string {
    if (this.#breakpoints.hasSoftware(address)) {
      this.#breakpoints.addSoftware(address, 0); // only counts another reference
      return OK;
    }
    const original = this.#target.readMemory(this.#gVcpu, address, 1);
    if (original.length !== 1) return E_INVAL;
    if (this.#target.writeMemory(this.#gVcpu, address, Uint8Array.of(INT3_OPCODE)) !== 1) return E_INVAL;
    this.#breakpoints.addSoftware(address, original[0]);
    return OK;
  }

  #removeSoftware(address: bigint): string {
    const result = this.#breakpoints.removeSoftware(address);
    if (result === "absent") return E_INVAL;
    if (result.restore !== undefined) this.#restoreByte(address, result.restore);
    return OK;
  }

  /** Puts the original byte back, unless the guest has since overwritten our `int3`. */
  #restoreByte(address: bigint, byte: number): void {
    const now = this.#target.readMemory(this.#gVcpu, address, 1);
    if (now.length === 1 && now[0] === INT3_OPCODE) {
      this.#target.writeMemory(this.#gVcpu, address, Uint8Array.of(byte));
    }
  }

  #detach(reply: boolean): void {
    for (const [address, byte] of this.#breakpoints.clearSoftware()) this.#restoreByte(address, byte);
    this.#breakpoints.clearHardware();
    this.#stepping.clear();
    const off: GuestDebug = { control: 0, debugreg: [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n] };
    for (let vcpu = 0; vcpu < this.#target.vcpuCount; vcpu++) this.#target.setGuestDebug(vcpu, off);
    if (reply) this.#reply(OK);
    this.#ended = true;
    if (!this.#running) {
      const all: ResumeAction[] = [];
      for (let vcpu = 0; vcpu < this.#target.vcpuCount; vcpu++) all.push({ vcpu, step: false });
      this.#target.resume(all);
    }
  }

  #query(packet: string): string | Uint8Array {
    if (packet.startsWith("qSupported")) {
      const offered = packet.slice("qSupported:".length).split(";");
      this.#multiprocess = offered.includes("multiprocess+");
      this.#swbreak = offered.includes("swbreak+");
      this.#hwbreak = offered.includes("hwbreak+");
      return [
        `PacketSize=${this.#packetSize.toString(16)}`,
        "qXfer:features:read+",
        "vContSupported+",
        "QStartNoAckMode+",
        ...(this.#multiprocess ? ["multiprocess+"] : []),
        ...(this.#swbreak ? ["swbreak+"] : []),
        ...(this.#hwbreak ? ["hwbreak+"] : []),
      ].join(";");
    }
    if (packet.startsWith("qXfer:features:read:")) return this.#features(packet);
    if (packet === "qfThreadInfo") {
      const ids = [];
      for (let vcpu = 0; vcpu < this.#target.vcpuCount; vcpu++) ids.push(this.#threadId(vcpu));
      return `m${ids.join(",")}`;
    }
    if (packet === "qsThreadInfo") return "l";
    if (packet === "qC") return `QC${this.#threadId(this.#gVcpu)}`;
    if (packet === "qAttached" || packet.startsWith("qAttached:")) return "1";
    if (packet.startsWith("qThreadExtraInfo,")) {
      const sel = this.#parseThread(packet.slice("qThreadExtraInfo,".length));
      if (typeof sel !== "number") return E_INVAL;
      const name = this.#target.threadName?.(sel) ?? `CPU#${sel}`;
      return toHex(new TextEncoder().encode(name));
    }
    if (packet.startsWith("qRcmd,")) {
      if (!this.#target.monitor) return "";
      let command: string;
      try {
        command = new TextDecoder().decode(fromHex(packet.slice("qRcmd,".length)));
      } catch {
        return E_INVAL;
      }
      const output = this.#target.monitor(command);
      return output === "" ? OK : toHex(new TextEncoder().encode(output));
    }
    return "";
  }

  /** `qXfer:features:read:ANNEX:OFFSET,LENGTH` → `m`/`l` and the escaped slice. */
  #features(packet: string): string | Uint8Array {
    const m = /^qXfer:features:read:([^:]*):([0-9a-fA-F]+),([0-9a-fA-F]+)$/.exec(packet);
    if (!m) return E_INVAL;
    if (m[1] !== "target.xml") return "E00";
    const document = new TextEncoder().encode(X86_64_TARGET_XML);
    const offset = parseInt(m[2], 16);
    // The reply is one marker byte and escaped data: keep the slice within the packet size.
    const length = Math.min(parseInt(m[3], 16), Math.floor((this.#packetSize - 5) / 2));
    if (offset > document.length) return E_INVAL;
    const slice = document.subarray(offset, offset + length);
    const marker = offset + slice.length >= document.length ? "l" : "m";
    const escaped = escapeBinary(slice);
    const out = new Uint8Array(escaped.length + 1);
    out[0] = marker.charCodeAt(0);
    out.set(escaped, 1);
    return out;
  }
}
