import assert from "node:assert/strict";
import {
  GuestConsole,
  GuestStall,
  nestedEmulatorFailure,
  parseRegisters,
  retryNestedStalls,
} from "./_guest_console.ts";

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

Deno.test("a stall is tried eight times in all inside the nested VM, once elsewhere; other failures never again", async () => {
  let calls = 0;
  await assert.rejects(
    retryNestedStalls(() => {
      calls++;
      return Promise.reject(new GuestStall("no prompt"));
    }),
    GuestStall,
  );
  assert.equal(calls, Deno.env.get("KVM_TS_NESTED") === "1" ? 8 : 1);
  await assert.rejects(retryNestedStalls(() => Promise.reject(new Error("wrong output"))), /wrong output/);
});

/** The console's last lines when the nested VM's emulator killed a guest (2026-12-06, bench:io). */
const DOUBLE_FAULT = `the run ended before the answer to bn:
kvm-ts# bn
[  155.605225] traps: PANIC: double fault, error_code: 0x0
[  155.606696] double fault: 0000 [#1] PREEMPT SMP NOPTI
[  155.607294] CPU: 0 PID: 167 Comm: nc Tainted: G        W          6.1.0-57-amd64 #1  Debian 6.1.192-3
[  155.607549] RIP: 0010:entry_SYSCALL_64+0x0/0x29
[  156.561265] Kernel panic - not syncing: Fatal exception in interrupt`;

Deno.test("the nested VM's known failures are told from others: a stall, the double fault at the syscall entry", () => {
  assert.match(
    nestedEmulatorFailure(new GuestStall("no prompt\n[   12.5] last line\nRIPs: ffff8100"))!,
    /stalled/,
  );
  assert.match(nestedEmulatorFailure(new Error(DOUBLE_FAULT))!, /double fault at entry_SYSCALL_64\+0x0/);
  // A double fault anywhere else, a panic of another kind, or wrong output is ours to look at.
  assert.equal(
    nestedEmulatorFailure(new Error(DOUBLE_FAULT.replace("entry_SYSCALL_64+0x0", "do_sys_poll+0x2a"))),
    undefined,
  );
  assert.equal(
    nestedEmulatorFailure(new Error("Kernel panic - not syncing: VFS: Unable to mount root fs")),
    undefined,
  );
  assert.equal(nestedEmulatorFailure(new Error("wrong output")), undefined);
  assert.equal(nestedEmulatorFailure("a string"), undefined);
});

Deno.test("a known failure is tried again up to the attempts given, then thrown; another is thrown at once", async () => {
  let calls = 0;
  await retryNestedStalls(
    () => ++calls < 3 ? Promise.reject(new Error(DOUBLE_FAULT)) : Promise.resolve(),
    8,
  )();
  assert.equal(calls, 3);
  calls = 0;
  await assert.rejects(
    retryNestedStalls(() => (calls++, Promise.reject(new GuestStall("no prompt"))), 2)(),
    GuestStall,
  );
  assert.equal(calls, 2);
  calls = 0;
  await assert.rejects(
    retryNestedStalls(() => (calls++, Promise.reject(new Error("wrong output"))), 8)(),
    /wrong/,
  );
  assert.equal(calls, 1);
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
