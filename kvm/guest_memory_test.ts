import assert from "node:assert/strict";
import { GuestMemory } from "./guest_memory.ts";
import { KvmError } from "./kvm_error.ts";
import type { RamBacking } from "../memory/ram_backing.ts";

// These tests need --allow-ffi (mmap through libc) but not /dev/kvm.

const MIB = 1n << 20n;
const GIB = 1n << 30n;

Deno.test("GuestMemory is a RamBacking: zero-filled, read/write by bigint offset", () => {
  using ram = new GuestMemory(2n * MIB);
  const backing: RamBacking = ram;
  assert.equal(backing.size, 2n * MIB);
  assert.equal(typeof backing.hostAddress, "bigint");
  assert.equal(ram.hostAddress % 4096n, 0n);
  const out = new Uint8Array(4);
  backing.read(0x1ffffcn, out);
  assert.deepEqual([...out], [0, 0, 0, 0]);
  backing.write(0x1000n, new Uint8Array([1, 2, 3]));
  backing.read(0xfffn, out);
  assert.deepEqual([...out], [0, 1, 2, 3]);
});

Deno.test("bytes is one zero-copy view over the mapping", () => {
  using ram = new GuestMemory(0x10000);
  assert.equal(ram.bytes, ram.bytes);
  assert.equal(ram.bytes.length, 0x10000);
  ram.bytes[0x20] = 0xaa;
  const out = new Uint8Array(1);
  ram.read(0x20n, out);
  assert.equal(out[0], 0xaa);
  ram.write(0x21n, new Uint8Array([0xbb]));
  assert.equal(ram.bytes[0x21], 0xbb);
  assert.equal(Deno.UnsafePointer.value(Deno.UnsafePointer.of(ram.bytes)), ram.hostAddress);
});

Deno.test("accesses outside the memory are RangeErrors naming the address", () => {
  using ram = new GuestMemory(0x1000);
  assert.throws(() => ram.read(0xfffn, new Uint8Array(2)), /0xfff is outside its 0x1000 bytes/);
  assert.throws(() => ram.write(-1n, new Uint8Array(1)), RangeError);
  assert.throws(() => new GuestMemory(0), RangeError);
  assert.throws(() => new GuestMemory(1.5), RangeError);
});

Deno.test("a size that is not page aligned maps whole pages but exposes exactly size bytes", () => {
  using ram = new GuestMemory(5000n);
  assert.equal(ram.bytes.length, 5000);
  ram.write(4999n, new Uint8Array([1]));
  assert.throws(() => ram.write(5000n, new Uint8Array([1])), RangeError);
});

Deno.test("64 GiB with MAP_NORESERVE: more than the host can commit is still reservable", () => {
  using ram = new GuestMemory(64n * GIB);
  assert.equal(ram.size, 64n * GIB);
  ram.write(63n * GIB, new Uint8Array([7])); // commits one page
  const out = new Uint8Array(1);
  ram.read(63n * GIB, out);
  assert.equal(out[0], 7);
});

Deno.test("a failed mmap is a KvmError with op mmap", () => {
  // 2^47 bytes is the whole x86-64 user address space: the kernel cannot place it.
  assert.throws(() => new GuestMemory(1n << 47n), (error: unknown) => {
    assert.ok(error instanceof KvmError);
    assert.equal(error.op, "mmap");
    assert.equal(error.code, "ENOMEM");
    return true;
  });
});

Deno.test("close is idempotent; use after close throws instead of touching unmapped memory", () => {
  const ram = new GuestMemory(0x2000);
  const view = ram.bytes;
  const sub = view.subarray(0x1000);
  view[0] = 1;
  ram.close();
  ram.close();
  assert.equal(ram.closed, true);
  assert.throws(() => ram.bytes, Deno.errors.BadResource);
  assert.throws(() => ram.read(0n, new Uint8Array(1)), Deno.errors.BadResource);
  assert.throws(() => ram.write(0n, new Uint8Array(1)), Deno.errors.BadResource);
  // Views taken before close are detached: reads give undefined, writes are dropped, no segfault.
  assert.equal(view.length, 0);
  assert.equal(view[0], undefined);
  assert.equal(sub.length, 0);
  sub[0] = 5;
  assert.equal(sub[0], undefined);
});

Deno.test("discard gives pages back: they read as zeros again", () => {
  using ram = new GuestMemory(0x3000);
  ram.bytes.fill(0xff);
  ram.discard(0x1000n, 0x1000n);
  assert.equal(ram.bytes[0xfff], 0xff);
  assert.equal(ram.bytes[0x1000], 0);
  assert.equal(ram.bytes[0x1fff], 0);
  assert.equal(ram.bytes[0x2000], 0xff);
  assert.throws(() => ram.discard(0x10n, 0x1000n), RangeError);
});

/** The VmFlags of the mapping that holds host address `address` (/proc/self/smaps). */
function vmFlags(address: bigint): string[] {
  let inside = false;
  for (const line of Deno.readTextFileSync("/proc/self/smaps").split("\n")) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) inside = BigInt(`0x${range[1]}`) <= address && address < BigInt(`0x${range[2]}`);
    else if (inside && line.startsWith("VmFlags:")) return line.slice(8).trim().split(/\s+/);
  }
  throw new Error(`no mapping holds 0x${address.toString(16)}`);
}

Deno.test("adviseHugePages and avoidHugePages: whole 2 MiB blocks for the one, whole pages for the other; ranges outside refused", () => {
  using memory = new GuestMemory(8n << 20n);
  assert.equal(memory.adviseHugePages(0n, 4096n), false, "no whole 2 MiB block inside");
  if (!memory.adviseHugePages(0n, 8n << 20n)) {
    console.log(
      "kvm/guest_memory_test.ts: this host has no transparent huge pages: only the range checks run",
    );
  } else {
    // The kernel records the advice on the mapping: hg (huge pages asked for), nh (refused).
    const block = 2n << 20n;
    const firstBlock = (memory.hostAddress + block - 1n) / block * block;
    assert.ok(vmFlags(firstBlock).includes("hg"));
    assert.equal(memory.avoidHugePages(0n, 4097n), true);
    assert.ok(vmFlags(memory.hostAddress).includes("nh"), "the first page");
    assert.ok(vmFlags(memory.hostAddress + 4096n).includes("nh"), "widened to the second page");
    assert.ok(!vmFlags(memory.hostAddress + 8192n).includes("nh"), "and no further");
  }
  memory.bytes[(6 << 20) + 5] = 7;
  assert.equal(memory.bytes[(6 << 20) + 5], 7);
  assert.throws(() => memory.adviseHugePages(4n << 20n, 5n << 20n), /outside 0x800000 bytes/);
  assert.throws(() => memory.adviseHugePages(-1n, 1n), RangeError);
  assert.throws(() => memory.avoidHugePages(8n << 20n, 1n), /avoidHugePages: .* is outside/);
});

Deno.test("from 2 MiB on the memory starts at a 2 MiB boundary (KVM's large pages need it); the reservation is given back", () => {
  const HUGE = 2n << 20n;
  const sizes = [HUGE, 64n << 20n, (64n << 20n) + 4096n, 3n << 30n];
  for (const size of sizes) {
    using ram = new GuestMemory(size);
    assert.equal(
      ram.hostAddress % HUGE,
      0n,
      `0x${size.toString(16)} bytes at 0x${ram.hostAddress.toString(16)}`,
    );
    ram.bytes[Number(size) - 1] = 1; // the last byte is mapped read-write
  }
  const path = Deno.makeTempFileSync({ prefix: "kvmts-guestmem-" });
  try {
    Deno.writeFileSync(path, new Uint8Array(8 << 20).fill(0x5a));
    using file = GuestMemory.fromFile(path, 4096n, 4n << 20n);
    assert.equal(file.hostAddress % HUGE, 0n, "a file's mapping too");
    assert.equal(file.bytes[0], 0x5a);
    assert.equal(file.bytes[(4 << 20) - 1], 0x5a);
  } finally {
    Deno.removeSync(path);
  }
  // What is left of the reservation before and after the aligned part is unmapped again: no
  // inaccessible mapping borders the memory (the kernel would have merged the two pieces of a kept
  // reservation into such neighbours).
  for (let i = 0; i < 20; i++) {
    using ram = new GuestMemory(64n << 20n);
    const end = ram.hostAddress + (64n << 20n);
    for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
      const match = /^([0-9a-f]+)-([0-9a-f]+) ---p /.exec(line);
      if (!match) continue;
      const [from, to] = [BigInt(`0x${match[1]}`), BigInt(`0x${match[2]}`)];
      assert.ok(from !== end && to !== ram.hostAddress, `a reservation left beside the memory: ${line}`);
    }
  }
});
