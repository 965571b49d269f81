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
