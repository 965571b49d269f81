/**
 * Debian's real `gdb`, in batch mode, against the stub engine served over TCP with a fake
 * machine (tests/_gdb_fake_machine.ts): it must read the target description, the registers and
 * memory, set software and hardware breakpoints and a watchpoint, continue, step, write a register,
 * list the threads and detach. This proves protocol compatibility without KVM.
 */
import assert from "node:assert/strict";
import { GdbStub } from "../cli/gdb_stub.ts";
import { commandMissing } from "../kvm/_testing.ts";
import { FakeMachine, OP_EXIT, OP_INC_MEM } from "./_gdb_fake_machine.ts";

const skip = commandMissing("gdb", "Debian: apt-get install gdb");
if (skip) console.log(`tests/gdb_client_test.ts: skipped, ${skip}`);

/** Serves one connection on a free port; resolves when the client has gone. */
function serve(machine: FakeMachine): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    let writing = Promise.resolve();
    const stub = new GdbStub({
      target: machine,
      send: (bytes) => {
        const copy = bytes.slice();
        writing = writing.then(async () => {
          for (let off = 0; off < copy.length;) off += await conn.write(copy.subarray(off));
        }).catch(() => {});
      },
    });
    machine.stub = stub;
    const buffer = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        stub.receive(buffer.subarray(0, n));
      }
    } catch {
      // connection reset: treated like a close
    }
    stub.disconnect();
    await writing;
    try {
      conn.close();
    } catch { /* already closed */ }
  })();
  return { port, done };
}

async function runGdb(port: number, commands: string[]): Promise<string> {
  const args = ["-nx", "-batch", "-ex", "set confirm off", "-ex", `target remote 127.0.0.1:${port}`];
  for (const c of commands) args.push("-ex", c);
  const out = await new Deno.Command("gdb", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  if (Deno.env.get("GDB_TEST_LOG")) Deno.writeTextFileSync(Deno.env.get("GDB_TEST_LOG")!, text);
  return text;
}

/** A guest of one-byte instructions: nops, one that increments the u32 at [rdi], an exit. */
function machineWithProgram(vcpus = 1): FakeMachine {
  const m = new FakeMachine(vcpus);
  m.memory.fill(0x90, 0x1000, 0x1100);
  m.memory[0x1030] = OP_INC_MEM;
  m.memory[0x1040] = OP_EXIT;
  m.memory.set([0xde, 0xad, 0xbe, 0xef], 0x2000);
  for (const regs of m.regs) {
    regs.rip = 0x1000n;
    regs.rdi = 0x2000n;
    regs.rax = 3n;
  }
  return m;
}

Deno.test({
  name: "gdb: target description, registers, memory, breakpoints, continue, step, watchpoint, detach",
  ignore: skip !== undefined,
  async fn() {
    const machine = machineWithProgram();
    const { port, done } = serve(machine);
    const out = await runGdb(port, [
      "show architecture",
      "p/x $rip",
      "p $eflags",
      "info registers fs_base",
      "p/x $xmm0.uint128",
      "maint print remote-registers",
      "x/4xb 0x2000",
      "break *0x1010",
      "continue",
      "p/x $rip",
      "stepi",
      "p/x $rip",
      "set $rax = 0x1234",
      "p/x $rax",
      "delete",
      "hbreak *0x1020",
      "continue",
      "p/x $pc",
      "delete",
      "watch *(int *)0x2000",
      "continue",
      "p/x $pc",
      "x/wx 0x2000",
      "delete",
      "set *(char *)0x2001 = 0x42",
      "x/2xb 0x2000",
      "info threads",
      "detach",
    ]);
    await done;
    assert.match(out, /The target architecture is set to "auto" \(currently "i386:x86-64"\)/);
    assert.match(out, /\$1 = 0x1000\n/);
    assert.match(out, /\$2 = \[ \]/); // eflags 0x2: no named flag set
    assert.match(out, /fs_base +0x0 +0\n/);
    assert.match(out, /\$3 = 0x0\n/);
    // gdb's own layout of the g packet: rip at byte 128, st0 at 236, xmm0 at 348, mxcsr at 604.
    // (maint print remote-registers: the last two columns are the remote number and g offset.)
    assert.match(out, /^ rip .* 16 +128$/m);
    assert.match(out, /^ fs_base .* 24 +164$/m);
    assert.match(out, /^ k_gs_base .* 26 +180$/m);
    assert.match(out, /^ st0 .* 33 +236$/m);
    assert.match(out, /^ xmm0 .* 49 +348$/m);
    assert.match(out, /^ mxcsr .* 65 +604$/m);
    assert.match(out, /0x2000:\t0xde\t0xad\t0xbe\t0xef/);
    assert.match(out, /Breakpoint 1 at 0x1010/);
    assert.match(out, /Breakpoint 1, 0x0000000000001010 in \?\? \(\)/);
    assert.match(out, /\$4 = 0x1010\n/);
    assert.match(out, /\$5 = 0x1011\n/);
    assert.match(out, /\$6 = 0x1234\n/);
    assert.match(out, /Hardware assisted breakpoint 2 at 0x1020/);
    assert.match(out, /\$7 = 0x1020\n/);
    assert.match(out, /Hardware watchpoint 3: \*\(int \*\)0x2000/);
    assert.match(out, /Old value = -272716322\nNew value = -272716321/);
    assert.match(out, /\$8 = 0x1031\n/);
    assert.match(out, /0x2000:\t0xefbeaddf/);
    assert.match(out, /0x2000:\t0xdf\t0x42/);
    assert.match(out, /\* 1 +Thread 1\.1 \(CPU#0\)/);
    assert.match(out, /\[Inferior 1 \(process 1\) detached\]/);
    assert.equal(machine.regs[0].rax, 0x1234n);
    assert.equal(machine.memory[0x1010], 0x90); // no int3 left behind
    assert.deepEqual(machine.debug[0], { control: 0, debugreg: [0n, 0n, 0n, 0n, 0n, 0n, 0n, 0n] });
  },
});

Deno.test({
  name: "gdb: two vCPUs are two threads; the guest's exit is the inferior's exit status",
  ignore: skip !== undefined,
  async fn() {
    const machine = machineWithProgram(2);
    machine.regs[1].rip = 0x1038n;
    const { port, done } = serve(machine);
    const out = await runGdb(port, ["info threads", "thread 2", "p/x $rip", "set $rax = 9", "continue"]);
    await done;
    assert.match(out, /Thread 1\.1 \(CPU#0\)/);
    assert.match(out, /Thread 1\.2 \(CPU#1\)/);
    assert.match(out, /\$1 = 0x1038\n/);
    assert.match(out, /exited with code 011/); // 9, printed in octal by gdb
  },
});
