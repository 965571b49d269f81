/**
 * Boards, boot loaders, the built-in guests and the vCPU runner.
 *
 * @module
 */

export * from "./cpu_state.ts";
export * from "./vcpu_runner.ts";
export * from "./loader/mod.ts";
export * from "./guests/mod.ts";
export * from "./pc/layout.ts";
export * from "./pc/pam.ts";
export * from "./pc/pc_memory.ts";
export * from "./pc/pc_devices.ts";
export * from "./pc/pc_machine.ts";
export * from "./x86_cpu.ts";
export * from "./smp_runner.ts";
export * from "./pc/mptable.ts";
