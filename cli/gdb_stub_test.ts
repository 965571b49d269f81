import assert from "node:assert/strict";
import { FakeMachine, OP_EXIT, OP_INC_MEM, OP_LOAD } from "../tests/_gdb_fake_machine.ts";
import { KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_SW_BP } from "../kvm/ioctls.ts";
import {
  escapeBinary,
  framePacket,
  fromHex,
  latin1,
  latin1Bytes,
  PacketReader,
  toHex,
} from "./gdb_packet.ts";
import { GdbStub } from "./gdb_stub.ts";
import { X86_64_TARGET_XML } from "./gdb_x86.ts";

/** A client speaking to a stub over a fake machine; `ask` returns the reply payloads. */
function session(vcpus = 1) {
  const machine = new FakeMachine(vcpus);
  const wire: string[] = [];
  const reader = new PacketReader();
  const replies: string[] = [];
  const stub = new GdbStub({
    target: machine,
    send: (bytes) => {
      wire.push(latin1(bytes));
      for (const e of reader.push(bytes)) if (e.kind === "packet") replies.push(e.payload);
    },
  });
  machine.stub = stub;
  const ask = (payload: string): string[] => {
    replies.length = 0;
    stub.receive(framePacket(payload));
    return [...replies];
  };
  const one = (payload: string): string => {
    const r = ask(payload);
    assert.equal(r.length, 1, `${payload} → ${JSON.stringify(r)}`);
    return r[0];
  };
  return { machine, stub, wire, replies, ask, one };
}

Deno.test("acks: + for a good packet, - for a bad checksum, a resend on -", () => {
  const { stub, wire } = session();
  stub.receive(latin1Bytes("$?#00"));
  assert.deepEqual(wire, ["-"]);
  stub.receive(framePacket("?"));
  assert.deepEqual(wire.slice(1), ["+", "$T05thread:01;#07"]);
  stub.receive(latin1Bytes("-"));
  assert.equal(wire[3], "$T05thread:01;#07");
  stub.receive(latin1Bytes("+-")); // acked: nothing left to resend
  assert.equal(wire.length, 4);
});

Deno.test("QStartNoAckMode: acked and answered, then neither acks nor expects them", () => {
  const { stub, wire, one } = session();
  assert.match(one("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+"), /QStartNoAckMode\+/);
  wire.length = 0;
  stub.receive(framePacket("QStartNoAckMode"));
  assert.deepEqual(wire, ["+", "$OK#9a"]);
  wire.length = 0;
  stub.receive(framePacket("?"));
  assert.deepEqual(wire, ["$T05thread:p01.01;#06"]);
  stub.receive(latin1Bytes("$?#00")); // a bad checksum: no '-' any more, and no reply
  assert.equal(wire.length, 1);
});

Deno.test("qSupported: QEMU's features, plus what gdb offered of multiprocess/swbreak/hwbreak", () => {
  const { one } = session();
  assert.equal(one("qSupported"), "PacketSize=1000;qXfer:features:read+;vContSupported+;QStartNoAckMode+");
  assert.equal(
    one("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386"),
    "PacketSize=1000;qXfer:features:read+;vContSupported+;QStartNoAckMode+;multiprocess+;swbreak+;hwbreak+",
  );
});

Deno.test("qXfer:features:read:target.xml in chunks, escaped, m then l", () => {
  const { one } = session();
  let offset = 0;
  let document = "";
  for (;;) {
    const reply = one(`qXfer:features:read:target.xml:${offset.toString(16)},200`);
    assert.ok(reply[0] === "m" || reply[0] === "l");
    const data = reply.slice(1);
    document += data;
    offset += data.length;
    if (reply[0] === "l") break;
  }
  assert.equal(document, X86_64_TARGET_XML);
  assert.equal(one("qXfer:features:read:nope.xml:0,100"), "E00");
  assert.equal(
    one(`qXfer:features:read:target.xml:${(X86_64_TARGET_XML.length + 1).toString(16)},10`),
    "E22",
  );
  assert.equal(escapeBinary(latin1Bytes(X86_64_TARGET_XML)).length, X86_64_TARGET_XML.length); // nothing to escape
});

Deno.test("threads: qfThreadInfo, qsThreadInfo, qC, T, H, qThreadExtraInfo, qAttached", () => {
  const { one } = session(2);
  assert.equal(one("qfThreadInfo"), "m01,02");
  assert.equal(one("qsThreadInfo"), "l");
  assert.equal(one("qC"), "QC01");
  assert.equal(one("T2"), "OK");
  assert.equal(one("T3"), "E22");
  assert.equal(one("Hg2"), "OK");
  assert.equal(one("qC"), "QC02");
  assert.equal(one("Hg0"), "OK");
  assert.equal(one("Hc-1"), "OK");
  assert.equal(one("Hg7"), "E22");
  assert.equal(one("Hx1"), "E22");
  assert.equal(new TextDecoder().decode(fromHex(one("qThreadExtraInfo,2"))), "CPU#1");
  assert.equal(one("qAttached"), "1");
  one("qSupported:multiprocess+");
  assert.equal(one("qfThreadInfo"), "mp01.01,p01.02");
  assert.equal(one("Hgp1.2"), "OK");
  assert.equal(one("qC"), "QCp01.02");
  assert.equal(one("Hgp1.-1"), "OK");
});

Deno.test("registers: g, G, p, P on the selected thread; bad numbers get QEMU's E14", () => {
  const { machine, one } = session(2);
  machine.regs[1].rax = 0x1122_3344_5566_7788n;
  machine.regs[1].rip = 0x1000n;
  one("Hg2");
  const g = one("g");
  assert.equal(g.length, 1216);
  assert.equal(g.slice(0, 16), "8877665544332211");
  assert.equal(one("p10"), "0010000000000000"); // rip, register 16
  assert.equal(one("p42"), "E14");
  assert.equal(one("P0=efbeadde00000000"), "OK");
  assert.equal(machine.regs[1].rax, 0xdead_beefn);
  assert.equal(one("P11=46020000"), "OK"); // eflags, 4 bytes
  assert.equal(machine.regs[1].eflags, 0x246n);
  assert.equal(one("P11=4602"), "E22"); // wrong width
  assert.equal(one("P99=00"), "E14");
  const bytes = fromHex(g);
  bytes[8] = 0x42; // rbx
  assert.equal(one(`G${toHex(bytes)}`), "OK");
  assert.equal(machine.regs[1].rbx, 0x42n);
  assert.equal(machine.regs[1].rax, 0x1122_3344_5566_7788n); // G wrote back the whole file
  assert.equal(machine.regs[0].rbx, 0n);
  assert.equal(one("Gxyz"), "E22");
});

Deno.test("memory: m, M, X (with escapes), errors outside RAM, zero-length X probe", () => {
  const { machine, one } = session();
  machine.memory.set([1, 2, 3, 4], 0x2000);
  assert.equal(one("m2000,4"), "01020304");
  assert.equal(one("mfffe,4"), "0000"); // cut short at the end of RAM
  assert.equal(one("m10000,4"), "E14");
  assert.equal(one("M2000,2:abcd"), "OK");
  assert.deepEqual([...machine.memory.subarray(0x2000, 0x2004)], [0xab, 0xcd, 3, 4]);
  assert.equal(one("M2000,2:ab"), "E22");
  assert.equal(one("M10000,1:00"), "E14");
  const special = new Uint8Array([0x24, 0x23, 0x7d, 0x2a]);
  assert.equal(one(`X2000,4:${latin1(escapeBinary(special))}`), "OK");
  assert.deepEqual(machine.memory.subarray(0x2000, 0x2004), special);
  assert.equal(one("X2000,0:"), "OK");
  assert.equal(one("m2000"), "E22");
});

Deno.test("Z0/z0: int3 patched in and restored, counted, KVM_GUESTDBG_USE_SW_BP set on resume", () => {
  const { machine, one, ask } = session();
  machine.memory.fill(0x90, 0x1000, 0x1100);
  machine.regs[0].rip = 0x1000n;
  assert.equal(one("Z0,1010,1"), "OK");
  assert.equal(machine.memory[0x1010], 0xcc);
  assert.equal(one("Z0,1010,1"), "OK");
  assert.equal(one("Z0,10000,1"), "E22"); // unmapped
  assert.deepEqual(ask("c"), ["T05thread:01;"]);
  assert.equal(machine.regs[0].rip, 0x1010n); // pc at the int3, as KVM reports it
  assert.equal(machine.debug[0].control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP);
  assert.equal(one("z0,1010,1"), "OK");
  assert.equal(machine.memory[0x1010], 0xcc); // one reference left
  assert.equal(one("z0,1010,1"), "OK");
  assert.equal(machine.memory[0x1010], 0x90);
  assert.equal(one("z0,1010,1"), "E22");
});

Deno.test("swbreak/hwbreak in stop replies only when gdb offered them", () => {
  const { machine, one, ask } = session();
  one("qSupported:swbreak+;hwbreak+");
  machine.memory.fill(0x90, 0x1000, 0x1100);
  machine.regs[0].rip = 0x1000n;
  one("Z0,1004,1");
  assert.deepEqual(ask("vCont;c"), ["T05swbreak:;thread:01;"]);
  one("z0,1004,1");
  one("Z1,1008,1");
  assert.deepEqual(ask("vCont;c"), ["T05hwbreak:;thread:01;"]);
  assert.equal(machine.regs[0].rip, 0x1008n);
  assert.equal(machine.debug[0].debugreg[0], 0x1008n);
  assert.equal(machine.debug[0].debugreg[7], 0x602n);
});

Deno.test("continuing from one of our int3s steps over it first, with the original byte back", () => {
  const { machine, one, ask } = session();
  machine.memory.fill(0x90, 0x1000, 0x1100);
  machine.regs[0].rip = 0x1000n;
  one("Z0,1000,1");
  one("Z0,1003,1");
  assert.deepEqual(ask("c"), ["T05thread:01;"]);
  assert.equal(machine.regs[0].rip, 0x1003n);
  assert.equal(machine.memory[0x1000], 0xcc); // put back after the step
  assert.ok(machine.calls.includes("resume 0s"));
  // A step from a breakpoint is one instruction, reported as such.
  assert.deepEqual(ask("vCont;s:1"), ["T05thread:01;"]);
  assert.equal(machine.regs[0].rip, 0x1004n);
  assert.equal(machine.memory[0x1003], 0xcc);
});

Deno.test("Z2/Z4 watchpoints: write and access, reported with the watched address; Z3 unsupported", () => {
  const { machine, one, ask } = session();
  machine.memory.fill(0x90, 0x1000, 0x1100);
  machine.memory[0x1005] = OP_LOAD;
  machine.memory[0x1009] = OP_INC_MEM;
  machine.regs[0].rip = 0x1000n;
  machine.regs[0].rdi = 0x2000n;
  assert.equal(one("Z3,2000,4"), "");
  assert.equal(one("Z2,2002,4"), "E22"); // unaligned
  assert.equal(one("Z2,2000,4"), "OK");
  assert.equal(one("Z4,2000,4"), "OK");
  assert.deepEqual(ask("c"), ["T05awatch:2000;thread:01;"]);
  assert.equal(machine.regs[0].rip, 0x1006n); // data breakpoints trap after the access
  assert.equal(one("z4,2000,4"), "OK");
  assert.deepEqual(ask("c"), ["T05watch:2000;thread:01;"]);
  assert.equal(machine.regs[0].rip, 0x100an);
  assert.equal(one("z2,2000,4"), "OK");
  assert.equal(one("z2,2000,4"), "E22");
});

Deno.test("at most four hardware breakpoints and watchpoints together", () => {
  const { one } = session();
  assert.equal(one("Z1,1000,1"), "OK");
  assert.equal(one("Z1,1001,1"), "OK");
  assert.equal(one("Z2,2000,8"), "OK");
  assert.equal(one("Z4,3000,1"), "OK");
  assert.equal(one("Z1,1002,1"), "E22");
  assert.equal(one("Z1,1000,1"), "E22"); // and never twice the same
  assert.equal(one("Zx,1,1"), "E22");
});

Deno.test("s, vCont s: single-step sets KVM_GUESTDBG_SINGLESTEP on that vCPU only", () => {
  const { machine, ask } = session(2);
  machine.memory.fill(0x90, 0x1000, 0x1100);
  machine.regs[0].rip = 0x1000n;
  machine.regs[1].rip = 0x1080n;
  assert.deepEqual(ask("vCont;s:2"), ["T05thread:02;"]);
  assert.equal(machine.regs[1].rip, 0x1081n);
  assert.equal(machine.regs[0].rip, 0x1000n); // no action: stayed paused
  assert.equal(machine.debug[1].control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP);
  assert.equal(machine.debug[0].control, KVM_GUESTDBG_ENABLE);
  assert.deepEqual(ask("s"), ["T05thread:02;"]); // 's' steps the thread that stopped last
  assert.equal(machine.regs[1].rip, 0x1082n);
  assert.deepEqual(ask("s1000"), ["T05thread:02;"]); // with an address: from there
  assert.equal(machine.regs[1].rip, 0x1001n);
  assert.deepEqual(ask("vCont;s:1;c"), ["T05thread:01;"]);
  assert.ok(machine.calls.includes("resume 0s,1c"));
  assert.deepEqual(ask("vCont;x"), ["E22"]);
  assert.equal(ask("vCont?")[0], "vCont;c;C;s;S");
});

Deno.test("Ctrl-C while running: interrupt, then T02; packets while running get E16", async () => {
  const { machine, stub, replies, ask } = session();
  machine.memory.fill(0x90, 0, 0x10000); // runs forever (rip wraps past RAM into 0-opcodes)
  machine.regs[0].rip = 0x1000n;
  assert.deepEqual(ask("c"), []);
  assert.ok(stub.running);
  assert.deepEqual(ask("g"), ["E16"]);
  replies.length = 0;
  stub.receive(Uint8Array.of(0x03));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(machine.calls.includes("interrupt"));
  assert.deepEqual(replies, ["T02thread:01;"]);
  assert.ok(!stub.running);
  assert.equal(ask("?")[0], "T02thread:01;");
});

Deno.test("the guest ending is W with its status; then only queries, D and k", () => {
  const { machine, ask, one } = session();
  machine.memory[0x1000] = OP_EXIT;
  machine.regs[0].rip = 0x1000n;
  machine.regs[0].rax = 7n;
  assert.deepEqual(ask("c"), ["W07"]);
  assert.equal(one("?"), "W07");
  assert.equal(one("g"), "E22");
  assert.deepEqual(ask("k"), []);
  assert.ok(!machine.killed); // already gone: nothing to kill
});

Deno.test("D: breakpoints removed, guest debug off, everything resumed, OK", () => {
  const { machine, one, ask } = session(2);
  machine.memory.fill(0x90, 0x1000, 0x1100);
  machine.memory[0x1050] = OP_EXIT;
  machine.regs[0].rip = 0x1000n;
  machine.regs[1].rip = 0x1040n;
  one("Z0,1010,1");
  one("Z1,1020,1");
  assert.deepEqual(ask("D;1"), ["OK"]);
  assert.equal(machine.memory[0x1010], 0x90);
  assert.deepEqual(machine.debug.map((d) => d.control), [0, 0]);
  assert.ok(machine.calls.includes("resume 0c,1c"));
});

Deno.test("k kills; unknown packets get the empty reply; qRcmd goes to the monitor", () => {
  const { machine, one, ask } = session();
  assert.equal(one("qTStatus"), "");
  assert.equal(one("vMustReplyEmpty"), "");
  assert.equal(one("!"), "");
  assert.equal(
    new TextDecoder().decode(fromHex(one(`qRcmd,${toHex(new TextEncoder().encode("info version"))}`))),
    "kvm-ts fake\n",
  );
  assert.equal(one(`qRcmd,${toHex(new TextEncoder().encode("nothing"))}`), "OK");
  assert.deepEqual(ask("k"), []);
  assert.ok(machine.killed);
});

Deno.test("hostile input: garbage, huge packets and bad numbers never throw", () => {
  const { stub, one } = session();
  stub.receive(crypto.getRandomValues(new Uint8Array(4096)));
  stub.receive(framePacket("Z0,1"));
  stub.receive(latin1Bytes(`$${"A".repeat(200_000)}#00`));
  assert.equal(one("m,"), "E22");
  assert.equal(one("Pzz=00"), "E22");
  assert.equal(one("X1000,2:}"), "E22");
  assert.equal(one("?"), "T05thread:01;");
});
