/**
 * A little in-memory machine for the gdb stub's tests: guest-virtual = guest-physical over a
 * 64 KiB RAM, and vCPUs whose "instructions" are one byte each. It honours the stub's
 * `KVM_SET_GUEST_DEBUG` settings the way KVM does — single-step traps after an instruction, an
 * `int3` is intercepted before it runs (pc at the `int3`), DR0–DR3/DR7 execution breakpoints trap
 * before the instruction and data breakpoints after it — and plays the runner's part of the
 * contract: a trap the stub calls the guest's own is given back to the guest (here: ignored).
 *
 * Opcodes: 0x01 adds 1 to the u32 at [rdi] (a write), 0x02 loads the u32 at [rdi] into rax (a
 * read), 0xcc `int3`, 0xee ends the guest with status rax, anything else is a one-byte no-op.
 *
 * @module
 */

import type { GuestDebug } from "../kvm/vcpu.ts";
import { KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP } from "../kvm/ioctls.ts";
import { BP_VECTOR, DB_VECTOR, DR6_BS_BIT, INT3_OPCODE } from "../cli/gdb_breakpoints.ts";
import type { GdbStub, GdbTarget, ResumeAction, TargetStop } from "../cli/gdb_stub.ts";
import { type X86Registers, zeroRegisters } from "../cli/gdb_x86.ts";

/** RAM size; addresses at or above it are unmapped. */
export const FAKE_RAM_SIZE = 0x1_0000;
/** Opcode: add 1 to the u32 at [rdi]. */
export const OP_INC_MEM = 0x01;
/** Opcode: rax = u32 at [rdi]. */
export const OP_LOAD = 0x02;
/** Opcode: the guest ends with status rax (like isa-debug-exit). */
export const OP_EXIT = 0xee;
/** How many instructions one slice of "running" executes before yielding to the event loop. */
const SLICE = 1000;
/** The DR7 LEN field's meaning (00 → 1, 01 → 2, 11 → 4, 10 → 8), decoded independently here. */
const LEN_OF_CODE = [1, 2, 8, 4];

interface Slot {
  readonly address: bigint;
  readonly rw: number;
  readonly length: number;
}

/** Reads DR0–DR3 and DR7 as the CPU would: enabled slots (L or G), their R/W and LEN fields. */
export function decodeDebugRegisters(debugreg: readonly bigint[]): (Slot | undefined)[] {
  const dr7 = debugreg[7];
  return [0, 1, 2, 3].map((n) => {
    if (((dr7 >> BigInt(2 * n)) & 3n) === 0n) return undefined;
    const rw = Number((dr7 >> BigInt(16 + 4 * n)) & 3n);
    const len = LEN_OF_CODE[Number((dr7 >> BigInt(18 + 4 * n)) & 3n)];
    return { address: debugreg[n], rw, length: rw === 0 ? 1 : len };
  });
}

/** The fake machine. Set {@link stub} before the first resume. */
export class FakeMachine implements GdbTarget {
  readonly vcpuCount: number;
  readonly memory = new Uint8Array(FAKE_RAM_SIZE);
  readonly regs: X86Registers[];
  readonly debug: GuestDebug[];
  /** Every call the stub made, for assertions. */
  readonly calls: string[] = [];
  /** The stub to report stops to. */
  stub: GdbStub | undefined;
  /** Set by kill(). */
  killed = false;
  #actions: ResumeAction[] = [];
  #interrupt = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Where each vCPU last stopped on an execution breakpoint (the RF flag's job on real x86). */
  #resumeFlag: (bigint | undefined)[];

  constructor(vcpuCount = 1) {
    this.vcpuCount = vcpuCount;
    this.regs = Array.from({ length: vcpuCount }, () => ({ ...zeroRegisters(), eflags: 2n, cs: 0x10n }));
    this.debug = Array.from({ length: vcpuCount }, () => ({ control: 0, debugreg: new Array(8).fill(0n) }));
    this.#resumeFlag = new Array(vcpuCount).fill(undefined);
  }

  readRegisters(vcpu: number): X86Registers {
    this.calls.push(`readRegisters ${vcpu}`);
    return { ...this.regs[vcpu] };
  }

  writeRegisters(vcpu: number, regs: X86Registers): void {
    this.calls.push(`writeRegisters ${vcpu}`);
    this.regs[vcpu] = { ...regs };
  }

  readMemory(_vcpu: number, address: bigint, length: number): Uint8Array {
    if (address >= BigInt(FAKE_RAM_SIZE)) return new Uint8Array(0);
    const start = Number(address);
    return this.memory.slice(start, Math.min(start + length, FAKE_RAM_SIZE));
  }

  writeMemory(_vcpu: number, address: bigint, data: Uint8Array): number {
    if (address >= BigInt(FAKE_RAM_SIZE)) return 0;
    const start = Number(address);
    const n = Math.min(data.length, FAKE_RAM_SIZE - start);
    this.memory.set(data.subarray(0, n), start);
    return n;
  }

  setGuestDebug(vcpu: number, debug: GuestDebug): void {
    this.debug[vcpu] = { control: debug.control, debugreg: [...debug.debugreg] };
  }

  resume(actions: readonly ResumeAction[]): void {
    this.calls.push(`resume ${actions.map((a) => `${a.vcpu}${a.step ? "s" : "c"}`).join(",")}`);
    this.#actions = [...actions];
    this.#interrupt = false;
    this.#run();
  }

  interrupt(): void {
    this.calls.push("interrupt");
    this.#interrupt = true;
  }

  kill(): void {
    this.calls.push("kill");
    this.killed = true;
    this.#actions = [];
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  monitor(command: string): string {
    return command === "info version" ? "kvm-ts fake\n" : "";
  }

  /** Runs the resumed vCPUs round-robin, one instruction each, until one stops. */
  #run(): void {
    this.#timer = undefined;
    for (let i = 0; i < SLICE; i++) {
      if (this.#interrupt) return this.#stop({ kind: "interrupted", vcpu: 0 });
      for (const action of this.#actions) {
        const stop = this.#execute(action.vcpu, action.step);
        if (stop) return this.#stop(stop);
      }
      if (this.#actions.length === 0) return;
    }
    this.#timer = setTimeout(() => this.#run(), 0);
  }

  #stop(stop: TargetStop): void {
    this.#actions = [];
    this.stub?.stopped(stop);
  }

  /** One instruction of one vCPU; a stop when it trapped to the stub. */
  #execute(vcpu: number, step: boolean): TargetStop | undefined {
    const regs = this.regs[vcpu];
    const debug = this.debug[vcpu];
    const hw = (debug.control & KVM_GUESTDBG_USE_HW_BP) !== 0 ? decodeDebugRegisters(debug.debugreg) : [];
    const pc = regs.rip;
    const trap = (exception: number, dr6: bigint): TargetStop | undefined => {
      const t = { exception, pc: this.regs[vcpu].rip, dr6 };
      if (this.stub?.classifyDebugExit(vcpu, t) === "guest") return undefined; // given back to the guest
      return { kind: "debug", vcpu, trap: t };
    };
    // Execution breakpoints fault before the instruction, unless we just stopped on this one.
    if (this.#resumeFlag[vcpu] !== pc) {
      this.#resumeFlag[vcpu] = undefined;
      const n = hw.findIndex((s) => s !== undefined && s.rw === 0 && s.address === pc);
      if (n >= 0) {
        this.#resumeFlag[vcpu] = pc;
        const stop = trap(DB_VECTOR, 1n << BigInt(n));
        if (stop) return stop;
      }
    } else {
      this.#resumeFlag[vcpu] = undefined;
    }
    const opcode = pc < BigInt(FAKE_RAM_SIZE) ? this.memory[Number(pc)] : 0;
    if (opcode === INT3_OPCODE && (debug.control & KVM_GUESTDBG_USE_SW_BP) !== 0) {
      const stop = trap(BP_VECTOR, 0n);
      if (stop) return stop;
    }
    let dataHit = -1;
    const touch = (address: bigint, write: boolean) => {
      dataHit = hw.findIndex((s) =>
        s !== undefined && (s.rw === 3 || (s.rw === 1 && write)) && address < s.address + BigInt(s.length) &&
        s.address < address + 4n
      );
    };
    if (opcode === OP_INC_MEM && regs.rdi + 4n <= BigInt(FAKE_RAM_SIZE)) {
      const view = new DataView(this.memory.buffer);
      view.setUint32(Number(regs.rdi), view.getUint32(Number(regs.rdi), true) + 1, true);
      touch(regs.rdi, true);
    } else if (opcode === OP_LOAD && regs.rdi + 4n <= BigInt(FAKE_RAM_SIZE)) {
      regs.rax = BigInt(new DataView(this.memory.buffer).getUint32(Number(regs.rdi), true));
      touch(regs.rdi, false);
    } else if (opcode === OP_EXIT) {
      return { kind: "exited", status: Number(regs.rax & 0xffn) };
    }
    regs.rip = pc + 1n;
    const single = step && (debug.control & KVM_GUESTDBG_SINGLESTEP) !== 0;
    let dr6 = single ? DR6_BS_BIT : 0n;
    if (dataHit >= 0) dr6 |= 1n << BigInt(dataHit);
    return dr6 === 0n ? undefined : trap(DB_VECTOR, dr6);
  }
}
