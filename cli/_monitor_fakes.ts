/** Fakes for the monitor tests: a machine without KVM, and commands that record what they ask. */

import { MonitorCommands, type MonitorMachine } from "./monitor_commands.ts";

/** A fake machine whose power button the guest listens to, or not; it counts the presses. */
export function fakeMachine(listening = true, extra: Partial<MonitorMachine> = {}) {
  const presses: number[] = [];
  const machine: MonitorMachine & { presses: number[] } = {
    presses,
    mtree: () => "tree\n",
    registers: () => "RAX=0",
    powerButton: () => {
      presses.push(1);
      return listening;
    },
    cpus: 1,
    threadIds: () => [1234],
    readPhysical: (addr, length) => Uint8Array.from({ length }, (_, i) => Number((addr + BigInt(i)) & 0xffn)),
    translate: (_cpu, vaddr) => vaddr < 0x10000n ? vaddr + 0x10_0000n : null,
    ...extra,
  };
  return machine;
}

/** Commands over `machine`, recording events and how the run was asked to end. */
export function commandsOver(machine: MonitorMachine) {
  const events: { name: string; data?: unknown }[] = [];
  const ends: string[] = [];
  const commands = new MonitorCommands(machine, {
    event: (name, data) => void events.push(data === undefined ? { name } : { name, data }),
    end: (kind) => void ends.push(kind),
  });
  return { commands, events, ends };
}
