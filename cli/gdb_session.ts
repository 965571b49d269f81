/**
 * The gdb stub on the VM thread: what the `-gdb` client sends ({@link GdbServer}) goes to the
 * protocol engine ({@link GdbStub}), and the engine's target is the machine — its vCPUs' registers
 * through KVM's register sets, guest-virtual memory through `KVM_TRANSLATE` and the memory address
 * space, breakpoints through `KVM_SET_GUEST_DEBUG`. Stopping and resuming go through the monitors'
 * run state, so `query-status` says `debug` while gdb holds the machine, as QEMU's does.
 *
 * Every call here runs on the thread that serves exits: {@link pump} from the run's kick hook,
 * {@link onDebug} from its debug hook. The front-end holds every vCPU out of `KVM_RUN` while
 * {@link GdbSession.holding} (as for `stop`).
 *
 * @module
 */

import { decodeExit } from "../kvm/exit.ts";
import type { Vcpu } from "../kvm/vcpu.ts";
import type { AddressSpace } from "../memory/mod.ts";
import { fromGdbRegisters, MSR_KERNEL_GS_BASE, toGdbRegisters } from "./gdb_registers.ts";
import type { GdbClientNews, GdbServer } from "./gdb_server.ts";
import { GdbStub, type GdbTarget, type ResumeAction } from "./gdb_stub.ts";
import type { X86Registers } from "./gdb_x86.ts";
import type { MonitorCommands } from "./monitor_commands.ts";

/** What the session needs of the machine. */
export interface GdbSessionMachine {
  /** The number of vCPUs. */
  readonly cpus: number;
  /** vCPU `cpu` (its state ioctls are called only while it is out of `KVM_RUN`). */
  vcpuAt(cpu: number): Vcpu;
  /** The guest-physical memory address space (debug accesses go through it, MMIO too). */
  readonly memory: AddressSpace;
}

const PAGE = 0x1000n;

/** One `-gdb` listener's session (at most one client at a time). */
export class GdbSession {
  readonly #server: GdbServer;
  readonly #machine: GdbSessionMachine;
  readonly #commands: MonitorCommands;
  #stub: GdbStub | undefined;
  /** The machine as the engine sees it (made once; each client gets a new engine over it). */
  readonly #target: GdbTarget;

  constructor(server: GdbServer, machine: GdbSessionMachine, commands: MonitorCommands) {
    this.#server = server;
    this.#machine = machine;
    this.#commands = commands;
    this.#target = this.#makeTarget();
  }

  /** Whether a debugger is connected. */
  get connected(): boolean {
    return this.#stub !== undefined;
  }

  /**
   * Takes what the client did since the last call and acts on it, inside `hold` (which keeps every
   * vCPU out of `KVM_RUN`: the stub reads registers and sets debug state) when there is anything.
   */
  pump(hold: (fn: () => void) => void): void {
    let news = this.#server.take();
    if (news === null) return;
    hold(() => {
      while (news !== null) {
        this.#act(news);
        news = this.#server.take();
      }
    });
  }

  #act(news: GdbClientNews): void {
    switch (news.kind) {
      case "connected":
        // QEMU stops the machine when gdb connects; the stub answers `?` with the stop.
        this.#commands.debugStop();
        this.#stub = new GdbStub({ target: this.#target, send: (bytes) => this.#server.send(bytes) });
        break;
      case "bytes":
        this.#stub?.receive(news.bytes);
        break;
      case "disconnected":
        this.#stub?.disconnect(); // breakpoints out, debug registers back to the guest, running
        this.#stub = undefined;
        break;
    }
  }

  /** Sleeps until the client sends something (or `timeoutMs`). */
  wait(timeoutMs: number): void {
    this.#server.wait(timeoutMs);
  }

  /**
   * vCPU `cpu` left `KVM_RUN` with `KVM_EXIT_DEBUG`. The guest's own `int3` or debug trap goes back
   * to it (re-injected, as QEMU's `kvm_handle_debug` does); a debugger's stop holds the machine and
   * tells gdb.
   */
  onDebug(cpu: number): void {
    const vcpu = this.#machine.vcpuAt(cpu);
    const exit = decodeExit(vcpu.runPage);
    if (exit.kind !== "debug") return;
    const trap = { exception: exit.exception, pc: exit.pc, dr6: exit.dr6 };
    const stub = this.#stub;
    if (stub === undefined || stub.classifyDebugExit(cpu, trap) === "guest") {
      const events = vcpu.getVcpuEvents();
      events.exception = { injected: 1, nr: exit.exception, hasErrorCode: 0, pending: 0, errorCode: 0 };
      vcpu.setVcpuEvents(events);
      return;
    }
    this.#commands.debugStop();
    stub.stopped({ kind: "debug", vcpu: cpu, trap });
  }

  /** The run ended with `status`: gdb sees the process exit (`W`). */
  exited(status: number): void {
    this.#stub?.stopped({ kind: "exited", status });
  }

  #makeTarget(): GdbTarget {
    const machine = this.#machine;
    const commands = this.#commands;
    const readRegisters = (cpu: number): X86Registers => {
      const vcpu = machine.vcpuAt(cpu);
      return toGdbRegisters({
        regs: vcpu.getRegs(),
        sregs: vcpu.getSregs(),
        fpu: vcpu.getFpu(),
        kernelGsBase: vcpu.getMsrs([MSR_KERNEL_GS_BASE])[0]?.data ?? 0n,
      });
    };
    /** Guest-physical pieces of [address, address + length), page by page, up to the first hole. */
    const pieces = (cpu: number, address: bigint, length: number) => {
      const out: { physical: bigint; at: number; size: number }[] = [];
      const vcpu = machine.vcpuAt(cpu);
      let at = 0;
      while (at < length) {
        const linear = address + BigInt(at);
        const t = vcpu.translate(linear);
        if (!t.valid) break;
        const size = Math.min(length - at, Number(PAGE - (linear % PAGE)));
        out.push({ physical: t.physicalAddress, at, size });
        at += size;
      }
      return out;
    };
    return {
      vcpuCount: machine.cpus,
      readRegisters,
      writeRegisters: (cpu, regs) => {
        const vcpu = machine.vcpuAt(cpu);
        const before = {
          regs: vcpu.getRegs(),
          sregs: vcpu.getSregs(),
          fpu: vcpu.getFpu(),
          kernelGsBase: vcpu.getMsrs([MSR_KERNEL_GS_BASE])[0]?.data ?? 0n,
        };
        const after = fromGdbRegisters(before, regs);
        vcpu.setRegs(after.regs);
        vcpu.setSregs(after.sregs);
        vcpu.setFpu(after.fpu);
        if (after.kernelGsBase !== before.kernelGsBase) {
          vcpu.setMsrs([{ index: MSR_KERNEL_GS_BASE, data: after.kernelGsBase }]);
        }
      },
      readMemory: (cpu, address, length) => {
        const parts = pieces(cpu, address, length);
        const got = parts.reduce((n, p) => n + p.size, 0);
        const out = new Uint8Array(got);
        for (const p of parts) out.set(machine.memory.readBytes(p.physical, p.size).data, p.at);
        return out;
      },
      writeMemory: (cpu, address, data) => {
        let written = 0;
        for (const p of pieces(cpu, address, data.length)) {
          // As QEMU's debug writes (address_space_write_rom): RAM and ROM alike, MMIO skipped.
          machine.memory.writeRom(p.physical, data.subarray(p.at, p.at + p.size));
          written += p.size;
        }
        return written;
      },
      setGuestDebug: (cpu, debug) => machine.vcpuAt(cpu).setGuestDebug(debug),
      resume: (_actions: readonly ResumeAction[]) => {
        // Every vCPU runs; the one gdb steps has KVM's single-step set by the stub. (QEMU can keep
        // the others stopped during a step; here they run with it.)
        commands.cont();
      },
      interrupt: () => {
        commands.debugStop();
        this.#stub?.stopped({ kind: "interrupted", vcpu: 0 });
      },
      kill: () => commands.quit(),
      threadName: (cpu) => `CPU#${cpu} [${commands.state === "running" ? "running" : "halted"}]`,
    };
  }
}
