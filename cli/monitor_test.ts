import assert from "node:assert/strict";
import { runMonitorCommand } from "./monitor.ts";

function target(listening: boolean) {
  const presses: number[] = [];
  return {
    presses,
    mtree: () => "tree\n",
    registers: () => "RAX=0",
    powerButton: () => {
      presses.push(1);
      return listening;
    },
  };
}

Deno.test("system_powerdown presses the power button once; silent when the guest listens, as QEMU", () => {
  const listening = target(true);
  assert.deepEqual(runMonitorCommand(listening, "system_powerdown"), { output: "", quit: false });
  assert.equal(listening.presses.length, 1);
  const deaf = target(false);
  const result = runMonitorCommand(deaf, "  system_powerdown ");
  assert.equal(result.quit, false);
  assert.match(result.output, /^system_powerdown: the guest has not enabled the ACPI power button; .*\n$/);
  assert.equal(deaf.presses.length, 1);
});

Deno.test("help lists system_powerdown", () => {
  assert.match(runMonitorCommand(target(true), "help").output, /^system_powerdown /m);
});

Deno.test("monitor: info pci prints the machine's functions; a machine without PCI devices says so through the list", () => {
  const target = {
    mtree: () => "",
    registers: () => "",
    powerButton: () => true,
    infoPci: () => "  Bus  0, device   0, function 0:\n",
  };
  assert.equal(runMonitorCommand(target, "info pci").output, "  Bus  0, device   0, function 0:\n");
  assert.match(runMonitorCommand(target, "info bogus").output, /info pci/);
  assert.match(runMonitorCommand(target, "help").output, /info pci/);
});
