/**
 * The SMP runner without KVM: Workers that fail to load, and both sides of the doorbell protocol
 * against hand-built `kvm_run` pages.
 */
import assert from "node:assert/strict";
import { fakeRunPage, writeIoExit } from "../kvm/mod.ts";
import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import {
  DONE,
  DOORBELL,
  EXIT_PENDING,
  EXTINT,
  EXTINT_VECTOR,
  FAILED,
  INTA_PENDING,
  PAUSE,
  PAUSED,
  RUNNING,
  smpBuffer,
  stateCell,
  STOPPED,
} from "./_smp_protocol.ts";
import { exitOutcome } from "./runner.ts";
import { servePendingExits, startVcpuWorkers, type ThreadedIrqchip } from "./smp_runner.ts";
import { KVM_EXIT_IOAPIC_EOI } from "../kvm/ioctls.ts";
import type { ScriptedVcpuInit, ScriptStep } from "./testdata/scripted_vcpu_worker.ts";

Deno.test("a vCPU Worker that fails to load settles ready and done, and its failure is reported", async () => {
  const started = startVcpuWorkers(new URL("./testdata/unloadable_worker.ts", import.meta.url), [{}, {}]);
  await started.ready;
  await started.done;
  for (const worker of started.workers) worker.terminate();
  assert.equal(started.failures.length, 2);
  for (const failure of started.failures) assert.match(failure, /cannot load/);
});

/** A PC-like I/O space with a logging port 0x10 and port 0x11 reading 0x40 + the reader's count. */
function ports() {
  const writes: number[] = [];
  let reads = 0;
  const root = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  root.addSubregion(0x10, MemoryRegion.io("log", 1, { write: (_o, v) => void writes.push(Number(v)) }));
  root.addSubregion(0x11, MemoryRegion.io("counter", 1, { read: () => 0x40 + reads++ }));
  const io = new AddressSpace(root, "I/O");
  const memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
  return {
    writes,
    spaces: { io, memory },
    [Symbol.dispose]() {
      memory.close();
      io.close();
    },
  };
}

Deno.test("doorbell protocol: vCPU threads' exits are served one at a time from their run pages", async () => {
  using t = ports();
  const cpus = 2;
  const buffer = smpBuffer(cpus);
  const cells = new Int32Array(buffer);
  const runs = [fakeRunPage({ shared: true }), fakeRunPage({ shared: true })];
  const scripts: ScriptStep[][] = [
    [{ out: 0x01, port: 0x10 }, "kick", { in: 0x11 }, { out: 0x02, port: 0x10 }, { in: 0x11 }, "shutdown"],
    [{ out: 0x81, port: 0x10 }, { in: 0x11 }, { out: 0x82, port: 0x10 }, "shutdown"],
  ];
  const inits: ScriptedVcpuInit[] = runs.map((run, index) => ({
    cells: buffer,
    index,
    page: run.page.buffer as SharedArrayBuffer,
    script: scripts[index],
  }));
  const started = startVcpuWorkers(new URL("./testdata/scripted_vcpu_worker.ts", import.meta.url), inits);
  const reports = started.workers.map((worker) =>
    new Promise<{ failure?: string; inputs: number[]; kicksCleared: number }>((resolve) =>
      worker.addEventListener("message", (e) => e.data.done && resolve(e.data))
    )
  );
  await started.ready;
  assert.deepEqual(started.failures, []);

  // This thread is the VM thread: the runner's pass, woken by the doorbell, until both stopped.
  const stopped = new Map<number, number>();
  let served = 0;
  while (stopped.size < cpus) {
    const seen = Atomics.load(cells, DOORBELL);
    served += servePendingExits(cells, runs.map((r) => r.page), runs.map((r) => r.view), t.spaces, (i, s) => {
      stopped.set(i, s);
    });
    if (stopped.size < cpus) Atomics.wait(cells, DOORBELL, seen, 1000);
  }
  const [zero, one] = await Promise.all(reports);
  await started.done;

  assert.equal(served, 7, "every I/O exit of both scripts, none twice");
  assert.deepEqual([...stopped.entries()].sort(), [[0, STOPPED], [1, STOPPED]]);
  // Each vCPU's writes arrive in its own order; the reads are numbered in the order they were served.
  assert.deepEqual(t.writes.filter((v) => v < 0x80), [0x01, 0x02]);
  assert.deepEqual(t.writes.filter((v) => v >= 0x80), [0x81, 0x82]);
  assert.deepEqual([...zero.inputs, ...one.inputs].sort(), [0x40, 0x41, 0x42]);
  assert.equal(zero.inputs.length, 2);
  assert.equal(zero.kicksCleared, 1, "a kick clears immediate_exit and runs on");
  assert.equal(zero.failure, undefined);
  // What the VM thread reads from a STOPPED vCPU's page: why the run ends.
  assert.deepEqual(exitOutcome(runs[1].page, 1, () => "regs"), {
    kind: "error",
    reason: "vCPU 1: triple fault (KVM_EXIT_SHUTDOWN)",
    registers: "regs",
  });
});

Deno.test("a run that starts held: no vCPU thread enters KVM_RUN before PAUSE is cleared (-S)", async () => {
  using t = ports();
  const cpus = 2;
  const buffer = smpBuffer(cpus);
  const cells = new Int32Array(buffer);
  Atomics.store(cells, PAUSE, 1); // as SmpRunner.run does with startHeld, before the Workers exist
  const runs = [fakeRunPage({ shared: true }), fakeRunPage({ shared: true })];
  const inits: ScriptedVcpuInit[] = runs.map((run, index) => ({
    cells: buffer,
    index,
    page: run.page.buffer as SharedArrayBuffer,
    script: [{ out: 0x10 + index, port: 0x10 }, "shutdown"],
  }));
  const started = startVcpuWorkers(new URL("./testdata/scripted_vcpu_worker.ts", import.meta.url), inits);
  await started.ready;
  // Each thread reports in (PAUSED, doorbell) instead of running: a first KVM_RUN would have been
  // an I/O exit, EXIT_PENDING.
  const states = () => [0, 1].map((i) => Atomics.load(cells, stateCell(i)));
  for (let tries = 0; !states().every((s) => s === PAUSED) && tries < 100; tries++) {
    assert.ok(!states().includes(EXIT_PENDING), "a vCPU ran while held");
    Atomics.wait(cells, DOORBELL, Atomics.load(cells, DOORBELL), 100);
  }
  assert.deepEqual(states(), [PAUSED, PAUSED]);
  assert.deepEqual(t.writes, []);
  Atomics.store(cells, PAUSE, 0);
  Atomics.notify(cells, PAUSE);
  const stopped = new Set<number>();
  while (stopped.size < cpus) {
    const seen = Atomics.load(cells, DOORBELL);
    servePendingExits(cells, runs.map((r) => r.page), runs.map((r) => r.view), t.spaces, (i) => {
      stopped.add(i);
    });
    if (stopped.size < cpus) Atomics.wait(cells, DOORBELL, seen, 1000);
  }
  await started.done;
  assert.deepEqual(t.writes.sort(), [0x10, 0x11]);
});

Deno.test("servePendingExits serves only EXIT_PENDING vCPUs and reports the ended ones", () => {
  using t = ports();
  const cells = new Int32Array(smpBuffer(4));
  const runs = [fakeRunPage(), fakeRunPage(), fakeRunPage(), fakeRunPage()];
  for (const run of runs) writeIoExit(run, { direction: "out", port: 0x10, size: 1, data: [0x33] });
  const states = [RUNNING, EXIT_PENDING, FAILED, DONE];
  states.forEach((state, i) => cells[stateCell(i)] = state);
  const ended: [number, number][] = [];
  const served = servePendingExits(
    cells,
    runs.map((r) => r.page),
    runs.map((r) => r.view),
    t.spaces,
    (i, s) => void ended.push([i, s]),
  );
  assert.equal(served, 1);
  assert.deepEqual(t.writes, [0x33]);
  assert.deepEqual(
    states.map((_, i) => cells[stateCell(i)]),
    [RUNNING, RUNNING, FAILED, DONE],
    "the served vCPU is RUNNING again",
  );
  assert.deepEqual(ended, [[2, FAILED], [3, DONE]]);
});

Deno.test("servePendingExits with a split irqchip: vCPU 0's INTA gets the PIC's vector, any vCPU's EOI reaches the IOAPIC", () => {
  using t = ports();
  const cells = new Int32Array(smpBuffer(2));
  const runs = [fakeRunPage(), fakeRunPage()];
  const log: string[] = [];
  let intHigh = true;
  const irqchip: ThreadedIrqchip = {
    get extIntPending() {
      return intHigh;
    },
    extInt: () => (log.push("inta"), intHigh = false, 0x20),
    eoi: (vector) => void log.push(`eoi ${vector.toString(16)}`),
    tick: () => void log.push("tick"),
  };
  runs[1].view.setUint32(8, KVM_EXIT_IOAPIC_EOI, true); // kvm_run.exit_reason
  runs[1].page[32] = 0x41; // eoi.vector, the first byte of the exit union
  cells[EXTINT] = 1; // as the VM thread published it
  cells[stateCell(0)] = INTA_PENDING;
  cells[stateCell(1)] = EXIT_PENDING;
  const pass = () =>
    servePendingExits(
      cells,
      runs.map((r) => r.page),
      runs.map((r) => r.view),
      t.spaces,
      (i) => {
        throw new Error(`vCPU ${i} stopped`);
      },
      undefined,
      irqchip,
    );
  assert.equal(pass(), 1, "the EOI is an exit served; the INTA is not an exit");
  assert.deepEqual(log, ["inta", "eoi 41"]);
  assert.equal(cells[EXTINT_VECTOR], 0x20);
  assert.equal(cells[EXTINT], 0, "INT fell with the INTA: vCPU 0 asks for no window");
  assert.deepEqual([cells[stateCell(0)], cells[stateCell(1)]], [RUNNING, RUNNING]);
  // INT fell between vCPU 0's look and the INTA (the guest masked the line): no vector, no INTA.
  cells[stateCell(0)] = INTA_PENDING;
  assert.equal(pass(), 0);
  assert.equal(cells[EXTINT_VECTOR], -1);
  assert.deepEqual(log, ["inta", "eoi 41"]);
  // Without an irqchip an EOI exit is one the VM thread cannot serve: the run ends.
  cells[stateCell(1)] = EXIT_PENDING;
  const ended: number[] = [];
  servePendingExits(
    cells,
    runs.map((r) => r.page),
    runs.map((r) => r.view),
    t.spaces,
    (i) => void ended.push(i),
  );
  assert.deepEqual(ended, [1]);
});
