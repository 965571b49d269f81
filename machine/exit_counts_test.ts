import assert from "node:assert/strict";
import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import { fakeRunPage, writeIoExit, writeSystemEventExit } from "../kvm/fake_exit.ts";
import {
  KVM_EXIT_HLT,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_SYSTEM_EVENT_RESET,
} from "../kvm/ioctls.ts";
import type { Vcpu } from "../kvm/mod.ts";
import { exitCountCell, runVcpuThread, smpBuffer, stateCell, STOPPED } from "./_smp_protocol.ts";
import { VcpuRunner } from "./vcpu_runner.ts";

Deno.test("an SMP vCPU thread counts each KVM_RUN return by reason in its own cells", () => {
  const cells = new Int32Array(smpBuffer(2));
  const script = [KVM_EXIT_INTR, KVM_EXIT_INTR, KVM_EXIT_HLT];
  const failure = runVcpuThread(cells, 1, () => ({ run: () => script.shift()!, setImmediateExit: () => {} }));
  assert.equal(failure, undefined);
  assert.equal(cells[stateCell(1)], STOPPED);
  const counts = cells.subarray(exitCountCell(1), exitCountCell(1) + 64);
  assert.equal(counts[KVM_EXIT_INTR], 2);
  assert.equal(counts[KVM_EXIT_HLT], 1);
  assert.equal(counts.reduce((a, b) => a + b, 0), 3);
  // vCPU 0's cells are untouched.
  assert.ok(cells.subarray(exitCountCell(0), exitCountCell(0) + 64).every((n) => n === 0));
});

Deno.test("VcpuRunner counts its vCPU's exits by reason", () => {
  const run = fakeRunPage();
  let left = 3;
  const ioRoot = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
  using io = new AddressSpace(ioRoot, "I/O");
  using memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
  const vcpu = {
    id: 0,
    runPage: run.page,
    runView: run.view,
    run: () => {
      if (left-- > 0) {
        writeIoExit(run, { direction: "out", port: 0x80, size: 1, data: [1] });
        return KVM_EXIT_IO;
      }
      writeSystemEventExit(run, KVM_SYSTEM_EVENT_RESET); // the run ends with a reset
      return KVM_EXIT_SYSTEM_EVENT;
    },
    setImmediateExit: () => {},
  } as unknown as Vcpu;
  const runner = new VcpuRunner(vcpu, { memory, io });
  assert.equal(runner.run().kind, "reset");
  const [counts] = runner.exitCounts;
  assert.equal(counts[KVM_EXIT_IO], 3);
  assert.equal(counts[KVM_EXIT_SYSTEM_EVENT], 1);
});
