import assert from "node:assert/strict";
import { GuestConsole, GuestStall, parseRegisters, retryNestedStalls } from "./_guest_console.ts";

Deno.test("the stall probe reads each vCPU's RIP, interrupt flag and CR0.PE from info registers -a", () => {
  const text = "(qemu) info registers -a\nCPU#0\nRAX=0\nRIP=ffffffff81a5a1a9 RFL=00000002\nCS =0010\n" +
    "CR0=80050033 CR2=0000000000000000\n" +
    "CPU#1\nRIP=000000000000fff0 RFL=00000002\nCS =f000\nCR0=60000010 CR2=0\n" +
    "CPU#2\nRIP=ffffffff81000000 RFL=00000246\nCR0=80050033\n(qemu) ";
  assert.deepEqual(parseRegisters(text), [
    { rip: "ffffffff81a5a1a9", interrupts: false, protectedMode: true },
    { rip: "000000000000fff0", interrupts: false, protectedMode: false },
    { rip: "ffffffff81000000", interrupts: true, protectedMode: true },
  ]);
  assert.deepEqual(parseRegisters("info: unknown item"), []);
});

Deno.test("outside the nested VM a stall is not tried again; other failures never are", async () => {
  if (Deno.env.get("KVM_TS_NESTED") === "1") return; // inside, the retry is the point
  let calls = 0;
  await assert.rejects(
    retryNestedStalls(() => {
      calls++;
      return Promise.reject(new GuestStall("no prompt"));
    }),
    GuestStall,
  );
  assert.equal(calls, 1);
  await assert.rejects(retryNestedStalls(() => Promise.reject(new Error("wrong output"))), /wrong output/);
});

Deno.test("typing into a run that has ended names its status and output, not a broken pipe", async () => {
  await using run = new GuestConsole(["-c", "echo the guest said goodbye; exit 3"], { program: "sh" });
  assert.equal(await run.status(), 3);
  await assert.rejects(
    () => run.type("ls\r"),
    (error: Error) => {
      assert.match(
        error.message,
        /^the run ended \(status 3\) before "ls\\r" could be typed:\nthe guest said goodbye/,
      );
      return true;
    },
  );
});
