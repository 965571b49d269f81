/**
 * Port-write exit round trip, TypeScript against C, in one run.
 *
 * Both sides run the same real-mode guest, `out dx, al; jmp $-1`, and the same loop:
 * `KVM_RUN` → `KVM_EXIT_IO` → check reason, direction and port → `KVM_RUN`. The C side
 * (`bench/exit_roundtrip.c`) is built with the system's `cc -O2` into a temporary directory.
 * Rounds alternate C and TypeScript so that drift of the (nested, noisy) host hits both alike.
 *
 * Usage:
 *   deno run --allow-ffi --allow-read --allow-write --allow-run bench/exit_roundtrip.ts \
 *     [--iterations 100000] [--warmup 10000] [--rounds 5] [--decode]
 *
 * `--decode` adds a third column: the TypeScript loop calling `decodeExit` on every exit.
 *
 * @module
 */

import { benchArgs } from "./_args.ts";
import {
  decodeExit,
  GuestMemory,
  Kvm,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  serveExit,
  type Vcpu,
} from "../kvm/mod.ts";
import { AddressSpace, MemoryRegion, UNASSIGNED_IO_OPS } from "../memory/mod.ts";
import { VcpuRunner } from "../machine/vcpu_runner.ts";

const { values } = benchArgs(
  "bench:exit",
  "usage: deno task bench:exit [--iterations 100000] [--warmup 10000] [--rounds 5] [--decode]",
  {
    iterations: { type: "string", default: "100000", number: true },
    warmup: { type: "string", default: "10000", number: true },
    rounds: { type: "string", default: "5", number: true },
    decode: { type: "boolean", default: false },
  },
);
const ITERATIONS = Number(values.iterations);
const WARMUP = Number(values.warmup);
const ROUNDS = Number(values.rounds);

const RAM_SIZE = 2n << 20n;
const ENTRY = 0x1000;
const PORT = 0x10;
/** `out dx, al; jmp short -3`. */
const GUEST_CODE = [0xee, 0xeb, 0xfd];
/** `kvm_run.io.direction` and `kvm_run.io.port` (kvm/_structs.ts, KVM_RUN_IO_LAYOUT at 32). */
const IO_DIRECTION_OFFSET = 32;
const IO_PORT_OFFSET = 34;

/** A VM running the guest loop, ready for KVM_RUN. */
function machine() {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const ram = new GuestMemory(RAM_SIZE);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0n,
    memorySize: ram.size,
    userspaceAddr: ram.hostAddress,
  });
  ram.bytes.set(GUEST_CODE, ENTRY);
  const vcpu = vm.createVcpu(0);
  const sregs = vcpu.getSregs();
  vcpu.setSregs({ ...sregs, cs: { ...sregs.cs, base: 0n, selector: 0 } });
  vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(ENTRY), rflags: 0x2n, rdx: BigInt(PORT) });
  return {
    vcpu,
    [Symbol.dispose]() {
      kvm.close();
      ram.close();
    },
  };
}

/** The hot loop: what a device dispatcher does before it looks at the data. */
function loop(vcpu: Vcpu, iterations: number): void {
  const run = vcpu.runView;
  for (let i = 0; i < iterations; i++) {
    if (
      vcpu.run() !== KVM_EXIT_IO || run.getUint16(IO_PORT_OFFSET, true) !== PORT ||
      run.getUint8(IO_DIRECTION_OFFSET) !== KVM_EXIT_IO_OUT
    ) {
      throw new Error(
        `unexpected exit: ${JSON.stringify(decodeExit(run), (_, v) => typeof v === "bigint" ? `${v}` : v)}`,
      );
    }
  }
}

/**
 * The product's path: `serveExit` reads the exit from the run page and dispatches it through the
 * "I/O" address space (flat-view lookup, access-size checks) to a device's ops.
 */
let received = 0;
const ioRoot = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
ioRoot.addSubregion(
  PORT,
  MemoryRegion.io("bench-port", 1, { write: (_offset, value) => void (received = Number(value)) }),
);
const spaces = {
  io: new AddressSpace(ioRoot, "I/O"),
  memory: new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory"),
};
function loopMemoryApi(vcpu: Vcpu, iterations: number): void {
  const page = vcpu.runPage;
  const view = vcpu.runView;
  for (let i = 0; i < iterations; i++) {
    vcpu.run();
    if (!serveExit(page, view, spaces)) throw new Error("unexpected exit");
  }
  if (received !== 0) throw new Error(`the device saw ${received}, not the guest's al = 0`);
}

/**
 * The whole runner of a one-vCPU machine (`VcpuRunner.run`: exit counting, `serveExit`, the hook
 * checks); the device stops it after `iterations` exits.
 */
let runnerLeft = 0;
let currentRunner: VcpuRunner | undefined;
const runnerIo = MemoryRegion.io("io", 0x10000, UNASSIGNED_IO_OPS);
runnerIo.addSubregion(
  PORT,
  MemoryRegion.io("bench-port", 1, {
    write: () => {
      if (--runnerLeft === 0) currentRunner!.stop({ kind: "exit", status: 0 });
    },
  }),
);
const runnerSpaces = { io: new AddressSpace(runnerIo, "I/O"), memory: spaces.memory };
function loopRunner(vcpu: Vcpu, iterations: number): void {
  runnerLeft = iterations;
  currentRunner = new VcpuRunner(vcpu, runnerSpaces);
  const outcome = currentRunner.run();
  if (outcome.kind !== "exit") throw new Error(`unexpected outcome ${JSON.stringify(outcome)}`);
}

/** The same with a full `decodeExit` per exit (allocates one object per exit). */
function loopDecoding(vcpu: Vcpu, iterations: number): void {
  const page = vcpu.runPage;
  for (let i = 0; i < iterations; i++) {
    vcpu.run();
    const exit = decodeExit(page);
    if (exit.kind !== "io" || exit.port !== PORT || exit.direction !== "out") {
      throw new Error("unexpected exit");
    }
  }
}

function timeTs(body: (vcpu: Vcpu, n: number) => void): number {
  using m = machine();
  body(m.vcpu, WARMUP);
  const start = performance.now();
  body(m.vcpu, ITERATIONS);
  return (performance.now() - start) * 1e6 / ITERATIONS;
}

async function buildC(dir: string): Promise<string> {
  const source = new URL("./exit_roundtrip.c", import.meta.url).pathname;
  const binary = `${dir}/exit_roundtrip`;
  const built = await new Deno.Command("cc", { args: ["-O2", "-o", binary, source], stderr: "piped" })
    .output();
  if (!built.success) throw new Error(`cc failed:\n${new TextDecoder().decode(built.stderr)}`);
  return binary;
}

async function timeC(binary: string): Promise<number> {
  const out = await new Deno.Command(binary, { args: [String(ITERATIONS), String(WARMUP)], stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`C benchmark failed:\n${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)).nsPerExit;
}

const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

const dir = await Deno.makeTempDir({ prefix: "exit-roundtrip-" });
try {
  const binary = await buildC(dir);
  console.log(
    `exit round trip: ${ITERATIONS} exits per measurement after ${WARMUP} warm-up exits, ${ROUNDS} rounds`,
  );
  console.log(
    `round      C ns/exit   TS ns/exit   TS/C   TS+memory API ns/exit   TS+API/C   VcpuRunner ns/exit${
      values.decode ? "   TS+decodeExit ns/exit" : ""
    }`,
  );
  const c: number[] = [];
  const ts: number[] = [];
  const api: number[] = [];
  const decoded: number[] = [];
  const runner: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    c.push(await timeC(binary));
    ts.push(timeTs(loop));
    api.push(timeTs(loopMemoryApi));
    runner.push(timeTs(loopRunner));
    if (values.decode) decoded.push(timeTs(loopDecoding));
    const extra = values.decode ? `   ${decoded.at(-1)!.toFixed(0).padStart(22)}` : "";
    console.log(
      `${String(round).padStart(5)}   ${c.at(-1)!.toFixed(0).padStart(12)}   ${
        ts.at(-1)!.toFixed(0).padStart(10)
      }   ${(ts.at(-1)! / c.at(-1)!).toFixed(3)}   ${api.at(-1)!.toFixed(0).padStart(21)}   ${
        (api.at(-1)! / c.at(-1)!).toFixed(3).padStart(8)
      }   ${runner.at(-1)!.toFixed(0).padStart(18)}${extra}`,
    );
  }
  const extra = values.decode ? `   ${median(decoded).toFixed(0).padStart(22)}` : "";
  console.log(
    `median   ${median(c).toFixed(0).padStart(12)}   ${median(ts).toFixed(0).padStart(10)}   ${
      (median(ts) / median(c)).toFixed(3)
    }   ${median(api).toFixed(0).padStart(21)}   ${(median(api) / median(c)).toFixed(3).padStart(8)}   ${
      median(runner).toFixed(0).padStart(18)
    }${extra}`,
  );
  // Issue 10's goal: the TypeScript loop at most 1.10 times C's, bare and through the device path.
  const GOAL = 1.10;
  const worst = Math.max(median(ts), median(api)) / median(c);
  console.log(
    `goal: TS/C <= ${GOAL.toFixed(2)}, with and without the memory API (${
      worst <= GOAL ? "met" : "NOT met"
    })`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
