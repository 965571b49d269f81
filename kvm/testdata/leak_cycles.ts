/**
 * Child process of `kvm/leak_test.ts`: creates and destroys a VM with RAM and a vCPU `cycles`
 * times (and fails to open a non-KVM device as often), then prints as JSON the process's open fds
 * and mappings before and after.
 *
 * It runs in a process of its own because `deno test --parallel` runs test modules as threads of
 * one process, whose fds and mappings would blur the counts; and with `--allow-all` because Deno
 * 2.9 reads `/proc/self/fd` and `/proc/self/maps` only with all permissions.
 *
 * Usage: deno run --allow-all --v8-flags=--expose-gc kvm/testdata/leak_cycles.ts [cycles]
 *
 * @module
 */

import { enterRealMode, fdCount, mappingCount } from "../_testing.ts";
import { GuestMemory } from "../guest_memory.ts";
import { KVM_EXIT_HLT } from "../ioctls.ts";
import { Kvm } from "../kvm.ts";

const cycles = Number(Deno.args[0] ?? 1000);
const WARM_UP_CYCLES = 50;
const RAM_SIZE = 2n << 20n;
const ENTRY = 0x1000;
const HLT = 0xf4;

/** Counts of what a leak would grow. */
function snapshot() {
  // With --v8-flags=--expose-gc: settle V8's heap so that its own mappings do not blur the count.
  (globalThis as { gc?: () => void }).gc?.();
  const status = Deno.readTextFileSync("/proc/self/status");
  const maps = Deno.readTextFileSync("/proc/self/maps");
  return {
    fds: fdCount(),
    kvmFds: [...Deno.readDirSync("/proc/self/fd")]
      .filter((entry) => {
        try {
          return /kvm/.test(Deno.readLinkSync(`/proc/self/fd/${entry.name}`));
        } catch {
          return false; // the directory's own fd, closed by now
        }
      }).length,
    mappings: mappingCount(),
    kvmMappings: maps.split("\n").filter((line) => line.includes("anon_inode:kvm")).length,
    // A leaked guest RAM mapping may merge with its neighbours into one maps line: VmSize still grows.
    vmSizeKiB: Number(/VmSize:\s+(\d+) kB/.exec(status)?.[1]),
  };
}

using kvm = Kvm.open();

function cycle(): void {
  using vm = kvm.createVm();
  using ram = new GuestMemory(RAM_SIZE);
  vm.setUserMemoryRegion({
    slot: 0,
    flags: 0,
    guestPhysAddr: 0n,
    memorySize: ram.size,
    userspaceAddr: ram.hostAddress,
  });
  ram.bytes[ENTRY] = HLT;
  using vcpu = vm.createVcpu(0);
  enterRealMode(vcpu, ENTRY);
  if (vcpu.run() !== KVM_EXIT_HLT) throw new Error("the guest did not halt");
  // Disposal runs in reverse order: vCPU (mapping, fd), RAM, VM. Unmapping RAM while its slot
  // still exists is legal (nothing runs any more), and the VM is destroyed right after.
  try {
    Kvm.open("/dev/null").close(); // fails after open(): the fd must be closed on that path too
  } catch {
    // expected: ENOTTY from KVM_GET_API_VERSION
  }
}

for (let i = 0; i < WARM_UP_CYCLES; i++) cycle();
const before = snapshot();
const start = performance.now();
for (let i = 0; i < cycles; i++) cycle();
const milliseconds = performance.now() - start;
const after = snapshot();
console.log(JSON.stringify({ cycles, ramSizeKiB: Number(RAM_SIZE >> 10n), before, after, milliseconds }));
