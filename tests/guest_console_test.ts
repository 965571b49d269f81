import assert from "node:assert/strict";
import { GuestStall, parseRegisters, retryNestedStalls } from "./_guest_console.ts";

Deno.test("the stall probe reads each vCPU's RIP and interrupt flag from info registers -a", () => {
  const text = "(qemu) info registers -a\nCPU#0\nRAX=0\nRIP=ffffffff81a5a1a9 RFL=00000002\nCS =0010\n" +
    "CPU#1\nRIP=ffffffff81000000 RFL=00000246\n(qemu) ";
  assert.deepEqual(parseRegisters(text), [
    { rip: "ffffffff81a5a1a9", interrupts: false },
    { rip: "ffffffff81000000", interrupts: true },
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
