/**
 * kvm-ts: QEMU's memory API, a KVM layer over Deno FFI, device models and an x86 PC board.
 *
 * @example
 * ```ts ignore
 * import { HELLO64, PcMachine } from "./mod.ts";
 * using pc = await PcMachine.create({ ramSize: 128n << 20n, kernel: { image: HELLO64 }, serial: (b) => out.push(b) });
 * console.log(pc.run()); // { kind: "reset" }
 * ```
 *
 * @module
 */

export * from "./memory/mod.ts";
export * from "./kvm/mod.ts";
export * from "./devices/mod.ts";
export * from "./machine/mod.ts";
