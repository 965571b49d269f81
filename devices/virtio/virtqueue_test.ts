import assert from "node:assert/strict";
import fc from "fast-check";
import { ByteRam, DriverQueue, viewBacking, ViewRam } from "./_test_util.ts";
import {
  DescriptorChain,
  RamSpans,
  VirtioProtocolError,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  Virtqueue,
} from "./virtqueue.ts";
import type { GuestMemory } from "./guest_memory.ts";
import { DirtyLogClient, MemoryRegion } from "../../memory/mod.ts";
import type { StateObject, StateValue } from "../device_state.ts";
import { checkBadStates, checkRoundTrip, type StateHarness } from "../_state_test_util.ts";

const RAM_SIZE = 0x2_0000;
const DESC = 0x1000n;
const AVAIL = 0x2000n;
const USED = 0x3000n;
const DATA = 0x8000; // buffers go from here
const INDIRECT_AREA = 0x6000; // indirect tables from here

/** Guest RAM of the tests: a plain array (every access checked), or views of an address space's RAM (caches). */
type RamKind = "bytes" | "views";
const RAM_KINDS: RamKind[] = ["bytes", "views"];

function setup(
  size = 8,
  features = { indirect: true, eventIdx: false },
  kind: RamKind = "bytes",
  used = USED,
) {
  const ram = kind === "bytes" ? new ByteRam(RAM_SIZE) : new ViewRam(RAM_SIZE);
  const q = new Virtqueue(0, size, ram);
  q.descAddr = DESC;
  q.driverAddr = AVAIL;
  q.deviceAddr = used;
  q.enable(features);
  return {
    ram,
    q,
    driver: new DriverQueue(ram, size, DESC, AVAIL, used),
    [Symbol.dispose]: () => ram instanceof ViewRam && ram[Symbol.dispose](),
  };
}

const W = VIRTQ_DESC_F_WRITE;
const N = VIRTQ_DESC_F_NEXT;
const I = VIRTQ_DESC_F_INDIRECT;

Deno.test("Virtqueue: a chain of readable then writable buffers, pushed back to the used ring", () => {
  const { ram, q, driver } = setup();
  ram.bytes.set([1, 2, 3], DATA);
  driver.setDesc(DESC, 5, { addr: BigInt(DATA), len: 3, flags: N, next: 2 });
  driver.setDesc(DESC, 2, { addr: 0x9000n, len: 8, flags: W | N, next: 7 });
  driver.setDesc(DESC, 7, { addr: 0xa000n, len: 8, flags: W, next: 0 });
  driver.offer(5);
  const chain = q.pop()!;
  assert.equal(q.pop(), null);
  assert.equal(chain.head, 5);
  assert.deepEqual(chain.readable, [{ addr: BigInt(DATA), len: 3 }]);
  assert.deepEqual(chain.writable, [{ addr: 0x9000n, len: 8 }, { addr: 0xa000n, len: 8 }]);
  const got = new Uint8Array(5);
  assert.equal(chain.read(1, got), 2);
  assert.deepEqual([...got], [2, 3, 0, 0, 0]);
  assert.equal(chain.write(6, new Uint8Array([9, 9, 9, 9])), 4);
  assert.deepEqual([...ram.bytes.subarray(0x9006, 0x9008)], [9, 9]);
  assert.deepEqual([...ram.bytes.subarray(0xa000, 0xa002)], [9, 9]);
  assert.equal(q.inUse, 1);
  q.push(chain, 100);
  assert.equal(driver.usedIdx(), 1);
  assert.deepEqual(driver.usedElem(0), { id: 5, len: 16 }, "written clamps to the writable length");
  assert.equal(q.inUse, 0);
  assert.ok(ram.fences >= 2, "fences around the available read and the used publish");
  // The queue took the chain's buffers back for the next one: the chain reaches no memory now.
  assert.deepEqual([chain.readableLength, chain.writableLength, chain.writable.length], [0, 0, 0]);
  assert.equal(chain.write(0, new Uint8Array([1])), 0);
});

Deno.test("Virtqueue: a chain may use every descriptor of the table, not one more", () => {
  const { q, driver } = setup(8);
  for (let i = 0; i < 8; i++) {
    driver.setDesc(DESC, i, { addr: 0x8000n, len: 1, flags: i < 7 ? N : 0, next: i + 1 });
  }
  driver.offer(0);
  assert.equal(q.pop()!.readable.length, 8);
});

Deno.test("Virtqueue: indirect table", () => {
  const { q, driver } = setup();
  const table = BigInt(INDIRECT_AREA);
  driver.setDesc(table, 0, { addr: 0x8000n, len: 16, flags: N, next: 2 });
  driver.setDesc(table, 2, { addr: 0x9000n, len: 1, flags: W, next: 0 });
  driver.setDesc(DESC, 3, { addr: table, len: 48, flags: I, next: 0 });
  driver.offer(3);
  const chain = q.pop()!;
  assert.equal(chain.head, 3);
  assert.deepEqual(chain.readable, [{ addr: 0x8000n, len: 16 }]);
  assert.deepEqual(chain.writable, [{ addr: 0x9000n, len: 1 }]);
});

Deno.test("Virtqueue: ring placement is checked at enable", () => {
  const ram = new ByteRam(RAM_SIZE);
  const q = new Virtqueue(1, 256, ram);
  q.descAddr = 0x1008n;
  q.driverAddr = AVAIL;
  q.deviceAddr = USED;
  assert.throws(
    () => q.enable({ indirect: false, eventIdx: false }),
    /descriptor table at 0x1008 is not 16-byte aligned/,
  );
  q.descAddr = 0x1000n;
  q.deviceAddr = BigInt(RAM_SIZE - 0x800); // 6 + 8 * 256 bytes do not fit
  assert.throws(() => q.enable({ indirect: false, eventIdx: false }), /device area .* is not in guest RAM/);
  q.deviceAddr = 0xffff_ffff_ffff_f000n;
  assert.throws(() => q.enable({ indirect: false, eventIdx: false }), VirtioProtocolError);
  assert.equal(q.enabled, false);
  assert.equal(ram.refused, 0);
  assert.throws(() => new Virtqueue(0, 24, ram), RangeError);
});

Deno.test("Virtqueue: hostile chains are refused with a reason and no access outside RAM", () => {
  const cases: [string, (d: DriverQueue) => void, RegExp][] = [
    [
      "outside RAM",
      (d) => d.setDesc(DESC, 0, { addr: BigInt(RAM_SIZE - 4), len: 8, flags: 0, next: 0 }),
      /not guest RAM/,
    ],
    [
      "past 2^64",
      (d) => d.setDesc(DESC, 0, { addr: 0xffff_ffff_ffff_fff0n, len: 0x20, flags: 0, next: 0 }),
      /not guest RAM/,
    ],
    ["zero length", (d) => d.setDesc(DESC, 0, { addr: 0x8000n, len: 0, flags: 0, next: 0 }), /zero-length/],
    ["loop", (d) => {
      d.setDesc(DESC, 0, { addr: 0x8000n, len: 4, flags: N, next: 1 });
      d.setDesc(DESC, 1, { addr: 0x8000n, len: 4, flags: N, next: 0 });
    }, /loop/],
    [
      "next past the table",
      (d) => d.setDesc(DESC, 0, { addr: 0x8000n, len: 4, flags: N, next: 8 }),
      /next descriptor 8/,
    ],
    ["readable after writable", (d) => {
      d.setDesc(DESC, 0, { addr: 0x8000n, len: 4, flags: W | N, next: 1 });
      d.setDesc(DESC, 1, { addr: 0x8000n, len: 4, flags: 0, next: 0 });
    }, /readable buffer after/],
    [
      "indirect of 40 bytes",
      (d) => d.setDesc(DESC, 0, { addr: 0x6000n, len: 40, flags: I, next: 0 }),
      /multiple of 16/,
    ],
    [
      "indirect of 0 bytes",
      (d) => d.setDesc(DESC, 0, { addr: 0x6000n, len: 0, flags: I, next: 0 }),
      /multiple of 16/,
    ],
    [
      "indirect table outside RAM",
      (d) => d.setDesc(DESC, 0, { addr: BigInt(RAM_SIZE - 16), len: 32, flags: I, next: 0 }),
      /indirect table at/,
    ],
    ["nested indirect", (d) => {
      d.setDesc(DESC, 0, { addr: 0x6000n, len: 32, flags: I, next: 0 });
      d.setDesc(0x6000n, 0, { addr: 0x6100n, len: 16, flags: I, next: 0 });
    }, /nested indirect/],
    ["indirect in a chain", (d) => {
      d.setDesc(DESC, 0, { addr: 0x8000n, len: 4, flags: N, next: 1 });
      d.setDesc(DESC, 1, { addr: 0x6000n, len: 16, flags: I, next: 0 });
    }, /indirect descriptor inside a chain/],
    ["indirect loop", (d) => {
      d.setDesc(DESC, 0, { addr: 0x6000n, len: 32, flags: I, next: 0 });
      d.setDesc(0x6000n, 0, { addr: 0x8000n, len: 4, flags: N, next: 1 });
      d.setDesc(0x6000n, 1, { addr: 0x8000n, len: 4, flags: N, next: 0 });
    }, /loop \(chain longer than 2\)/],
  ];
  for (const [name, build, error] of cases) {
    const { ram, q, driver } = setup();
    build(driver);
    driver.offer(0);
    assert.throws(
      () => q.pop(),
      (e: unknown) => e instanceof VirtioProtocolError && error.test(e.message),
      name,
    );
    assert.equal(ram.refused, 0, name);
  }
});

Deno.test("Virtqueue: hostile ring indices", () => {
  {
    const { q, driver } = setup();
    driver.setAvailIdx(9);
    assert.throws(() => q.pop(), /moved the available index from 0 to 9/);
  }
  {
    const { q, driver } = setup();
    driver.offer(8);
    assert.throws(() => q.pop(), /available head 8/);
  }
  {
    const ram = new ByteRam(RAM_SIZE);
    const q = new Virtqueue(0, 8, ram);
    q.descAddr = DESC;
    q.driverAddr = AVAIL;
    q.deviceAddr = USED;
    q.enable({ indirect: false, eventIdx: false });
    const driver = new DriverQueue(ram, 8, DESC, AVAIL, USED);
    driver.setDesc(DESC, 0, { addr: 0x6000n, len: 16, flags: I, next: 0 });
    driver.offer(0);
    assert.throws(() => q.pop(), /without VIRTIO_F_INDIRECT_DESC/);
  }
});

Deno.test("Virtqueue: lengths adding up to 4 GiB are refused", () => {
  // Memory that calls every range RAM, so only the sum check can catch it.
  const ram = new ByteRam(RAM_SIZE);
  const vast: GuestMemory = {
    check: () => true,
    read: (a, into) => ram.read(a, into),
    write: (a, from) => ram.write(a, from),
  };
  const q = new Virtqueue(0, 8, vast);
  q.descAddr = DESC;
  q.driverAddr = AVAIL;
  q.deviceAddr = USED;
  q.enable({ indirect: false, eventIdx: false });
  const driver = new DriverQueue(ram, 8, DESC, AVAIL, USED);
  driver.setDesc(DESC, 0, { addr: 0x1_0000_0000n, len: 0x8000_0000, flags: N, next: 1 });
  driver.setDesc(DESC, 1, { addr: 0x2_0000_0000n, len: 0x8000_0000, flags: W, next: 0 });
  driver.offer(0);
  assert.throws(() => q.pop(), /4 GiB/);
});

Deno.test("Virtqueue: without EVENT_IDX the driver's NO_INTERRUPT flag decides", () => {
  const { q, driver } = setup();
  assert.equal(q.shouldNotify(), true);
  driver.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  assert.equal(q.shouldNotify(), false);
});

Deno.test("Virtqueue: with EVENT_IDX the device publishes avail_event and re-checks before calling the queue empty", () => {
  const { q, driver } = setup(8, { indirect: false, eventIdx: true });
  driver.setDesc(DESC, 0, { addr: 0x8000n, len: 4, flags: 0, next: 0 });
  driver.offer(0);
  driver.offer(0);
  q.pop();
  assert.equal(driver.availEvent(), 1);
  q.pop();
  assert.equal(q.pop(), null);
  assert.equal(driver.availEvent(), 2);
});

Deno.test("Virtqueue: the 16-bit indices wrap", () => {
  const { q, driver } = setup(4, { indirect: false, eventIdx: true });
  driver.setDesc(DESC, 1, { addr: 0x8000n, len: 4, flags: W, next: 0 });
  for (let i = 0; i < 0x1_0002; i++) {
    driver.offer(1);
    const chain = q.pop()!;
    assert.equal(chain.head, 1);
    q.push(chain, 4);
  }
  assert.equal(driver.usedIdx(), 2);
  assert.equal(q.lastAvailIdx, 2);
  assert.equal(driver.availEvent(), 2);
  assert.deepEqual(driver.usedElem(1), { id: 1, len: 4 });
});

// ------------------------------------------------------------------ property tests

interface Buf {
  len: number;
  write: boolean;
}
interface ChainSpec {
  bufs: Buf[];
  indirect: boolean;
}

const chainArb: fc.Arbitrary<ChainSpec> = fc.record({
  bufs: fc.array(fc.record({ len: fc.integer({ min: 1, max: 64 }), write: fc.boolean() }), {
    minLength: 1,
    maxLength: 4,
  })
    .map((bufs) => [...bufs.filter((b) => !b.write), ...bufs.filter((b) => b.write)]),
  indirect: fc.boolean(),
});

for (const kind of RAM_KINDS) {
  Deno.test(`Virtqueue property: random chains, direct and indirect, come out as the model says (${kind})`, () => {
    fc.assert(
      fc.property(
        fc.array(chainArb, { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.array(fc.nat(), { minLength: 16, maxLength: 16 }),
        (chains, startIdx, shuffleKeys) => {
          const size = 16;
          using t = setup(size, undefined, kind);
          const { ram, q, driver } = t;
          const slots = [...Array(size).keys()].sort((a, b) => shuffleKeys[a] - shuffleKeys[b] || a - b);
          const need = chains.reduce((n, c) => n + (c.indirect ? 1 : c.bufs.length), 0);
          fc.pre(need <= size);
          let nextData = DATA;
          let nextTable = INDIRECT_AREA;
          const expected: {
            head: number;
            readable: [bigint, number][];
            writable: [bigint, number][];
            bytes: number[];
          }[] = [];
          // Move both sides' indices first, so slots other than 0.. are used.
          driver.setDesc(DESC, 0, { addr: BigInt(DATA), len: 1, flags: 0, next: 0 });
          for (let i = 0; i < (startIdx & 0x3f); i++) {
            driver.offer(0);
            q.push(q.pop()!, 0);
          }
          for (const spec of chains) {
            const addrs = spec.bufs.map((b) => {
              const addr = BigInt(nextData);
              nextData += b.len + 3;
              return addr;
            });
            let head: number;
            if (spec.indirect) {
              head = slots.shift()!;
              const table = BigInt(nextTable);
              spec.bufs.forEach((b, i) =>
                driver.setDesc(table, i, {
                  addr: addrs[i],
                  len: b.len,
                  flags: (b.write ? W : 0) | (i + 1 < spec.bufs.length ? N : 0),
                  next: i + 1,
                })
              );
              driver.setDesc(DESC, head, { addr: table, len: 16 * spec.bufs.length, flags: I, next: 0 });
              nextTable += 16 * spec.bufs.length;
            } else {
              const mine = spec.bufs.map(() => slots.shift()!);
              head = mine[0];
              spec.bufs.forEach((b, i) =>
                driver.setDesc(DESC, mine[i], {
                  addr: addrs[i],
                  len: b.len,
                  flags: (b.write ? W : 0) | (i + 1 < mine.length ? N : 0),
                  next: mine[i + 1] ?? 0,
                })
              );
            }
            const bytes: number[] = [];
            spec.bufs.forEach((b, i) => {
              if (b.write) return;
              for (let k = 0; k < b.len; k++) {
                const v = (Number(addrs[i]) + k * 7) & 0xff;
                ram.bytes[Number(addrs[i]) + k] = v;
                bytes.push(v);
              }
            });
            expected.push({
              head,
              readable: spec.bufs.flatMap((b, i) => b.write ? [] : [[addrs[i], b.len] as [bigint, number]]),
              writable: spec.bufs.flatMap((b, i) => b.write ? [[addrs[i], b.len] as [bigint, number]] : []),
              bytes,
            });
            driver.offer(head);
          }
          const before = driver.usedIdx();
          for (const want of expected) {
            const chain = q.pop()!;
            assert.ok(chain, "a chain per offer");
            assert.equal(chain.head, want.head);
            assert.deepEqual(chain.readable.map((b) => [b.addr, b.len]), want.readable);
            assert.deepEqual(chain.writable.map((b) => [b.addr, b.len]), want.writable);
            const data = new Uint8Array(chain.readableLength);
            assert.equal(chain.read(0, data), data.length);
            assert.deepEqual([...data], want.bytes);
            // From every offset (the buffer holding it is found from the nearer end of the part).
            for (let k = 0; k < want.bytes.length; k++) {
              const two = new Uint8Array(2);
              assert.equal(chain.read(k, two), Math.min(2, want.bytes.length - k));
              assert.deepEqual([...two], [want.bytes[k], want.bytes[k + 1] ?? 0]);
            }
            const places = want.writable.flatMap(([addr, len]) =>
              Array.from({ length: len }, (_, k) => Number(addr) + k)
            );
            places.forEach((place, k) => {
              assert.equal(chain.write(k, new Uint8Array([k & 0xff])), 1);
              assert.equal(ram.bytes[place], k & 0xff, `writable byte ${k}`);
            });
            assert.equal(chain.write(places.length, new Uint8Array(1)), 0);
            const fill = new Uint8Array(chain.writableLength).fill(0xee);
            assert.equal(chain.write(0, fill), fill.length);
            for (const [addr, len] of want.writable) {
              assert.ok(ram.bytes.subarray(Number(addr), Number(addr) + len).every((b) => b === 0xee));
            }
            q.push(chain, chain.writableLength);
          }
          assert.equal(q.pop(), null);
          assert.equal((driver.usedIdx() - before) & 0xffff, expected.length);
          expected.forEach((want, i) => {
            const elem = driver.usedElem(before + i);
            assert.equal(elem.id, want.head);
            assert.equal(elem.len, want.writable.reduce((s, [, l]) => s + l, 0));
          });
          assert.equal(ram.refused, 0);
          if (ram instanceof ViewRam) assert.ok(ram.mmio === 0 && ram.guardsIntact());
        },
      ),
      { numRuns: 200 },
    );
  });
}

for (const kind of RAM_KINDS) {
  Deno.test(`Virtqueue property: EVENT_IDX interrupts exactly when the used index crosses used_event (${kind})`, () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ event: fc.integer({ min: 0, max: 40 }), pushes: fc.integer({ min: 0, max: 5 }) }),
          {
            minLength: 1,
            maxLength: 12,
          },
        ),
        (steps) => {
          using t = setup(8, { indirect: false, eventIdx: true }, kind);
          const { q, driver } = t;
          driver.setDesc(DESC, 0, { addr: 0x8000n, len: 4, flags: W, next: 0 });
          let first = true;
          let signalled = 0;
          for (const step of steps) {
            driver.setUsedEvent(step.event);
            for (let i = 0; i < step.pushes; i++) {
              driver.offer(0);
              q.push(q.pop()!, 0);
            }
            const now = q.usedIdx;
            // Model: notify on the first check, or when used_event is one of the indices the used
            // index moved through since the last check (old ≤ event < now).
            const crossed: number[] = [];
            for (let i = signalled; i < now; i++) crossed.push(i);
            const want: boolean = first || crossed.includes(step.event);
            assert.equal(q.shouldNotify(), want, JSON.stringify({ step, signalled, now }));
            first = false;
            signalled = now;
          }
        },
      ),
      { numRuns: 300 },
    );
  });
}

for (const kind of RAM_KINDS) {
  Deno.test(`Virtqueue property: a random hostile edit of a valid chain is refused, never read outside RAM (${kind})`, () => {
    type Edit =
      | { kind: "addr"; i: number; addr: bigint }
      | { kind: "len0"; i: number }
      | {
        kind: "loop";
      }
      | { kind: "next"; next: number }
      | { kind: "order" };
    const editArb: fc.Arbitrary<Edit> = fc.oneof(
      fc.record({
        kind: fc.constant("addr" as const),
        i: fc.nat(3),
        addr: fc.oneof(
          fc.bigInt({ min: BigInt(RAM_SIZE) - 3n, max: BigInt(RAM_SIZE) + 0x1000n }),
          fc.bigInt({ min: 1n << 40n, max: (1n << 64n) - 1n }),
        ),
      }),
      fc.record({ kind: fc.constant("len0" as const), i: fc.nat(3) }),
      fc.record({ kind: fc.constant("loop" as const) }),
      fc.record({ kind: fc.constant("next" as const), next: fc.integer({ min: 16, max: 0xffff }) }),
      fc.record({ kind: fc.constant("order" as const) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 4 }), fc.boolean(), editArb, (n, indirect, edit) => {
        using t = setup(16, undefined, kind);
        const { ram, q, driver } = t;
        const table = indirect ? BigInt(INDIRECT_AREA) : DESC;
        const descs = Array.from({ length: n }, (_, i) => ({
          addr: BigInt(DATA + 0x100 * i),
          len: 8,
          flags: (i === n - 1 ? W : 0) | (i + 1 < n ? N : 0),
          next: i + 1,
        }));
        const i = "i" in edit ? edit.i % n : 0;
        if (edit.kind === "addr") descs[i].addr = edit.addr;
        if (edit.kind === "len0") descs[i].len = 0;
        if (edit.kind === "loop") descs[n - 1] = { ...descs[n - 1], flags: descs[n - 1].flags | N, next: 0 };
        if (edit.kind === "next") {
          descs[n - 1] = { ...descs[n - 1], flags: descs[n - 1].flags | N, next: edit.next };
        }
        if (edit.kind === "order") {
          descs[0].flags |= W;
          descs[n - 1].flags &= ~W;
        }
        descs.forEach((d, k) => driver.setDesc(table, k, d));
        if (indirect) driver.setDesc(DESC, 15, { addr: table, len: 16 * n, flags: I, next: 0 });
        driver.offer(indirect ? 15 : 0);
        assert.throws(() => q.pop(), VirtioProtocolError);
        assert.equal(ram.refused, 0);
        if (ram instanceof ViewRam) assert.ok(ram.mmio === 0 && ram.guardsIntact());
      }),
      { numRuns: 300 },
    );
  });
}

Deno.test("Virtqueue: unpop gives the last chain back; the next pop takes it again", () => {
  const { q, driver } = setup();
  driver.setDesc(DESC, 3, { addr: BigInt(DATA), len: 16, flags: W, next: 0 });
  driver.offer(3);
  const chain = q.pop()!;
  assert.equal(q.inUse, 1);
  q.unpop(chain);
  assert.equal(q.inUse, 0);
  assert.equal(q.lastAvailIdx, 0);
  assert.throws(() => q.unpop(chain), RangeError, "only once");
  const again = q.pop()!;
  assert.equal(again.head, 3);
  q.push(again, 0);
  assert.throws(() => q.unpop(again), RangeError, "not after a push");
  assert.equal(driver.usedIdx(), 1);
});

Deno.test("Virtqueue: unpop repeated gives chains back newest first; an older one first is refused", () => {
  const { q, driver } = setup();
  for (const head of [1, 2, 3]) {
    driver.setDesc(DESC, head, { addr: BigInt(DATA + 0x100 * head), len: 16, flags: W, next: 0 });
    driver.offer(head);
  }
  const [a, b, c] = [q.pop()!, q.pop()!, q.pop()!];
  assert.throws(() => q.unpop(b), RangeError, "b is not the newest");
  q.unpop(c);
  q.unpop(b);
  assert.equal(q.inUse, 1);
  assert.equal(q.lastAvailIdx, 1);
  assert.deepEqual([q.pop()!.head, q.pop()!.head], [2, 3]);
  assert.equal(a.head, 1);
});

Deno.test("Virtqueue: fill writes used elements the driver cannot see until flush moves the index once", () => {
  const { q, driver, ram } = setup();
  for (const head of [4, 5, 6]) {
    driver.setDesc(DESC, head, { addr: BigInt(DATA + 0x100 * head), len: 64, flags: W, next: 0 });
    driver.offer(head);
  }
  const chains = [q.pop()!, q.pop()!, q.pop()!];
  chains.forEach((chain, i) => q.fill(chain, 10 * (i + 1), i));
  assert.equal(driver.usedIdx(), 0, "not published yet");
  assert.equal(q.inUse, 0);
  assert.throws(() => q.unpop(chains[2]), RangeError, "filled chains cannot be given back");
  const fencesBefore = ram.fences;
  q.flush(3);
  assert.ok(ram.fences > fencesBefore, "a fence before the index");
  assert.equal(driver.usedIdx(), 3);
  assert.deepEqual([0, 1, 2].map((i) => driver.usedElem(i)), [{ id: 4, len: 10 }, { id: 5, len: 20 }, {
    id: 6,
    len: 30,
  }]);
  assert.equal(q.usedIdx, 3);
});

/** Guest memory that throws on any read or write not wholly inside it: a careless device fails loudly. */
class StrictRam implements GuestMemory {
  readonly bytes: Uint8Array;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }
  check(addr: bigint, length: number): boolean {
    return addr >= 0n && length >= 0 && addr + BigInt(length) <= BigInt(this.bytes.length);
  }
  #at(addr: bigint, length: number): number {
    if (!this.check(addr, length)) {
      throw new Error(`access of ${length} bytes at 0x${addr.toString(16)} outside guest memory`);
    }
    return Number(addr);
  }
  read(addr: bigint, into: Uint8Array): boolean {
    const at = this.#at(addr, into.length);
    into.set(this.bytes.subarray(at, at + into.length));
    return true;
  }
  write(addr: bigint, from: Uint8Array): boolean {
    this.bytes.set(from, this.#at(addr, from.length));
    return true;
  }
  [Symbol.dispose](): void {}
}

for (const kind of RAM_KINDS) {
  Deno.test(`Virtqueue property: random rings and descriptor tables never make it touch memory outside RAM (${kind})`, () => {
    const SIZE = 0x4000;
    const near = (n: number) => fc.bigInt({ min: BigInt(n) - 64n, max: BigInt(n) + 64n });
    // Addresses a hostile driver would pick: inside, at the edges, past the end, near 2^64.
    const addrArb = fc.oneof(
      fc.bigInt({ min: 0n, max: BigInt(SIZE) }),
      near(SIZE),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      near(0).map((a) => BigInt.asUintN(64, a)),
    );
    const lenArb = fc.oneof(
      fc.integer({ min: 0, max: 64 }),
      fc.integer({ min: 0, max: SIZE + 64 }),
      fc.integer({ min: 0xffff_ff00, max: 0xffff_ffff }),
      fc.nat({ max: 0xffff_ffff }),
    );
    const descArb = fc.record({
      addr: addrArb,
      len: lenArb,
      flags: fc.nat(7),
      next: fc.oneof(fc.nat(16), fc.nat(0xffff)),
    });
    fc.assert(
      fc.property(
        fc.record({
          size: fc.constantFrom(1, 2, 4, 8, 16),
          rings: fc.tuple(addrArb, addrArb, addrArb),
          features: fc.record({ indirect: fc.boolean(), eventIdx: fc.boolean() }),
          descs: fc.array(descArb, { minLength: 16, maxLength: 16 }),
          indirect: fc.array(descArb, { minLength: 8, maxLength: 8 }),
          ring: fc.array(fc.oneof(fc.nat(16), fc.nat(0xffff)), { minLength: 18, maxLength: 18 }),
          used: fc.array(fc.nat(0xffff), { minLength: 4, maxLength: 4 }),
          writes: fc.array(fc.tuple(fc.nat(0x1_0000), fc.nat(128)), { minLength: 1, maxLength: 4 }),
        }),
        fc.boolean(),
        (t, fixedRings) => {
          using ram = kind === "bytes" ? new StrictRam(SIZE) : new ViewRam(SIZE);
          const view = new DataView(ram.bytes.buffer, ram.bytes.byteOffset, SIZE);
          const q = new Virtqueue(0, 16, ram);
          q.size = t.size;
          // Half the runs place the rings well, so the walk of the random tables is reached.
          [q.descAddr, q.driverAddr, q.deviceAddr] = fixedRings ? [0x100n, 0x200n, 0x300n] : t.rings;
          const put = (at: number, d: { addr: bigint; len: number; flags: number; next: number }) => {
            view.setBigUint64(at, d.addr, true);
            view.setUint32(at + 8, d.len, true);
            view.setUint16(at + 12, d.flags, true);
            view.setUint16(at + 14, d.next, true);
          };
          const outcome = (fn: () => void): "ok" | "refused" => {
            try {
              fn();
              return "ok";
            } catch (error) {
              if (error instanceof VirtioProtocolError) return "refused";
              throw error; // StrictRam's error: the queue reached outside RAM
            }
          };
          // The driver's tables wherever they were put, clipped to RAM (the rest is not the driver's).
          const inRam = (addr: bigint, n: number) => addr >= 0n && addr + BigInt(n) <= BigInt(SIZE);
          t.descs.forEach((d, i) =>
            inRam(q.descAddr + BigInt(16 * i), 16) && put(Number(q.descAddr) + 16 * i, d)
          );
          t.indirect.forEach((d, i) => put(0x1000 + 16 * i, d));
          t.ring.forEach((v, i) =>
            inRam(q.driverAddr + BigInt(2 * i), 2) && view.setUint16(Number(q.driverAddr) + 2 * i, v, true)
          );
          if (outcome(() => q.enable(t.features)) === "refused") return;
          for (let round = 0; round < 20; round++) {
            const taken: DescriptorChain[] = [];
            if (outcome(() => void taken.push(...[q.pop()].filter((c) => c !== null))) === "refused") return;
            const popped = taken[0];
            if (popped === undefined) return;
            for (const b of [...popped.readable, ...popped.writable]) assert.ok(inRam(b.addr, b.len));
            for (const [offset, n] of t.writes) {
              if (outcome(() => popped.write(offset, new Uint8Array(n).fill(0xa5))) === "refused") return;
              if (outcome(() => popped.read(offset, new Uint8Array(n))) === "refused") return;
            }
            if (outcome(() => q.push(popped, t.used[round % 4])) === "refused") return;
            if (outcome(() => q.shouldNotify()) === "refused") return;
          }
          if (ram instanceof ViewRam) assert.ok(ram.mmio === 0 && ram.guardsIntact());
        },
      ),
      { numRuns: 2000 },
    );
  });
}

// ---- Caches of guest RAM ----

/** A queue over {@link ViewRam}: descriptor 0 reads 4 bytes at DATA, 1 writes 8 at 0x9000, 2 writes 8 at 0xa000. */
function cachedSetup(eventIdx = true, used = USED) {
  const t = setup(8, { indirect: true, eventIdx }, "views", used);
  const ram = t.ram as ViewRam;
  t.driver.setDesc(DESC, 0, { addr: BigInt(DATA), len: 4, flags: N, next: 1 });
  t.driver.setDesc(DESC, 1, { addr: 0x9000n, len: 8, flags: W | N, next: 2 });
  t.driver.setDesc(DESC, 2, { addr: 0xa000n, len: 8, flags: W, next: 0 });
  ram.bytes.set([1, 2, 3, 4], DATA);
  /** One request: pop, read, write 16 bytes (8 through a view), push, interrupt decision. */
  const request = () => {
    t.driver.offer(0);
    const chain = t.q.pop()!;
    const got = new Uint8Array(4);
    chain.read(0, got);
    chain.write(0, new Uint8Array(8).fill(0x11));
    chain.pieces(true, 8, 8)[0].view?.fill(0x22);
    t.q.push(chain, 16);
    t.q.shouldNotify();
    return [...got];
  };
  return { ...t, ram, request };
}

Deno.test("Virtqueue with caches: a request touches rings and buffers without one checked access", () => {
  using t = cachedSetup();
  assert.deepEqual(t.request(), [1, 2, 3, 4]);
  assert.equal(t.ram.checked, 0, "everything through the caches");
  assert.equal(t.driver.usedIdx(), 1);
  assert.deepEqual(t.driver.usedElem(0), { id: 0, len: 16 });
  assert.equal(t.driver.availEvent(), 1);
  assert.deepEqual([...t.ram.bytes.subarray(0x9000, 0x9008)], Array(8).fill(0x11));
  assert.deepEqual([...t.ram.bytes.subarray(0xa000, 0xa008)], Array(8).fill(0x22));
  assert.ok(t.ram.fences >= 3, "the barriers are the same with caches");
});

Deno.test("Virtqueue with caches: a ring moved while enabled is read and written at its new place", () => {
  using t = cachedSetup(false);
  t.request();
  // A test or a load may set the addresses of an enabled queue: each ring alone moves here.
  t.driver.setDesc(0x4000n, 0, { addr: 0x9100n, len: 2, flags: W, next: 0 });
  t.q.descAddr = 0x4000n;
  t.driver.offer(0);
  const first = t.q.pop()!;
  assert.deepEqual(first.writable, [{ addr: 0x9100n, len: 2 }], "the new descriptor table");
  t.q.push(first, 2);
  const avail = new DriverQueue(t.ram, 8, 0x4000n, 0x5000n, USED);
  avail.availIdx = 2;
  avail.offer(0);
  t.q.driverAddr = 0x5000n;
  const second = t.q.pop()!;
  assert.equal(second.head, 0, "the new driver area");
  assert.equal(t.q.pop(), null);
  t.q.deviceAddr = 0x6000n;
  t.q.push(second, 2);
  const used = new DriverQueue(t.ram, 8, 0x4000n, 0x5000n, 0x6000n);
  assert.equal(used.usedIdx(), 3, "the new device area");
  assert.deepEqual(used.usedElem(2), { id: 0, len: 2 });
  assert.equal(t.driver.usedIdx(), 2, "the old one is left alone");
});

Deno.test("Virtqueue with caches: after the memory map changes the queue uses the RAM now at the rings' addresses", () => {
  using t = cachedSetup();
  t.request();
  // The RAM moves up; other RAM, with a copy of the rings and a different descriptor 0, takes its place.
  const other = new Uint8Array(RAM_SIZE);
  other.set(t.ram.bytes);
  const otherRam = MemoryRegion.ram("other", RAM_SIZE, { backing: viewBacking(other) });
  t.ram.region.setAddress(0x10_0000);
  t.ram.system.addSubregion(0, otherRam);
  const before = t.ram.bytes.slice();
  const otherDriver = new DriverQueue({ view: new DataView(other.buffer) }, 8, DESC, AVAIL, USED);
  otherDriver.availIdx = 1;
  otherDriver.setDesc(DESC, 0, { addr: 0xb000n, len: 4, flags: W, next: 0 });
  otherDriver.offer(0);
  const chain = t.q.pop()!;
  assert.deepEqual(chain.writable, [{ addr: 0xb000n, len: 4 }]);
  chain.write(0, new Uint8Array([5, 6, 7, 8]));
  t.q.push(chain, 4);
  assert.deepEqual([...other.subarray(0xb000, 0xb004)], [5, 6, 7, 8]);
  assert.equal(otherDriver.usedIdx(), 2);
  assert.deepEqual(t.ram.bytes, before, "the RAM that moved away was not touched");
  assert.ok(t.ram.mmio === 0 && t.ram.guardsIntact());
});

Deno.test("Virtqueue with caches: RAM removed under the rings or under a taken chain is refused, not touched", () => {
  {
    using t = cachedSetup();
    t.request();
    t.driver.offer(0);
    t.ram.region.setEnabled(false);
    const before = t.ram.bytes.slice();
    assert.throws(
      () => t.q.pop(),
      (e: unknown) => e instanceof VirtioProtocolError && /not in guest RAM/.test(e.message),
    );
    assert.throws(() => t.q.shouldNotify(), VirtioProtocolError);
    assert.deepEqual(t.ram.bytes, before);
  }
  {
    using t = cachedSetup();
    t.driver.offer(0);
    const chain = t.q.pop()!;
    t.ram.region.setEnabled(false);
    const before = t.ram.bytes.slice();
    assert.throws(() => chain.write(0, new Uint8Array(8)), /no longer guest RAM/);
    assert.throws(() => chain.read(0, new Uint8Array(4)), /no longer guest RAM/);
    assert.deepEqual(chain.pieces(true, 0, 16).map((p) => p.view), [null, null]);
    assert.throws(() => t.q.push(chain, 16), /used ring is not in guest RAM/);
    assert.deepEqual(t.ram.bytes, before);
    assert.equal(t.ram.mmio, 0);
  }
});

/** The bytes `spans` cover, in order. */
function spanBytes(spans: RamSpans): number[] {
  const out: number[] = [];
  for (let i = 0; i < spans.count; i++) {
    out.push(...new Uint8Array(spans.buffers[i], spans.offsets[i], spans.lengths[i]));
  }
  return out;
}

/** The bytes of `chain`'s part that `pieces` gives views of, in order (null: a piece had none). */
function pieceBytes(
  chain: DescriptorChain,
  writable: boolean,
  offset: number,
  length: number,
): number[] | null {
  const pieces = chain.pieces(writable, offset, length);
  return pieces.some((p) => p.view === null) ? null : pieces.flatMap((p) => [...p.view!]);
}

Deno.test("DescriptorChain.gather: the same bytes as pieces, as spans of RAM, adjacent buffers merged", () => {
  using t = cachedSetup();
  // A fourth buffer right after the third: one span for both.
  t.driver.setDesc(DESC, 2, { addr: 0xa000n, len: 8, flags: W | N, next: 3 });
  t.driver.setDesc(DESC, 3, { addr: 0xa008n, len: 8, flags: W, next: 0 });
  for (const at of [DATA, 0x9000, 0xa000]) for (let i = at; i < at + 0x10; i++) t.ram.bytes[i] = i * 7;
  t.driver.offer(0);
  const chain = t.q.pop()!;
  const spans = new RamSpans();
  for (
    const [writable, offset, length] of [[true, 0, 24], [true, 3, 10], [true, 8, 16], [false, 1, 3]] as const
  ) {
    assert.equal(chain.gather(writable, offset, length, spans), true, `${writable} ${offset} ${length}`);
    assert.equal(spans.lengths.slice(0, spans.count).reduce((a, b) => a + b, 0), length);
    assert.deepEqual(spanBytes(spans), pieceBytes(chain, writable, offset, length));
  }
  assert.equal(chain.gather(true, 0, 24, spans), true);
  assert.deepEqual(
    spans.lengths.slice(0, spans.count),
    [8, 16],
    "0x9000 alone, then 0xa000 and 0xa008 as one",
  );
  // Writes through the spans land in guest RAM.
  new Uint8Array(spans.buffers[1], spans.offsets[1], 16).fill(0x5a);
  assert.deepEqual([...t.ram.bytes.subarray(0xa000, 0xa010)], Array(16).fill(0x5a));
  assert.equal(t.ram.checked, 0);
});

Deno.test("DescriptorChain.gather property: the bytes pieces gives, each run of adjacent buffers one span", () => {
  fc.assert(
    fc.property(
      // Up to 7 writable buffers (a queue of 8), each 0, 8 or 16 bytes after the one before it.
      fc.array(fc.record({ len: fc.integer({ min: 1, max: 32 }), gap: fc.integer({ min: 0, max: 2 }) }), {
        minLength: 1,
        maxLength: 7,
      }),
      fc.nat(),
      fc.nat(),
      (bufs, a, b) => {
        using t = setup(8, { indirect: true, eventIdx: true }, "views");
        const ram = t.ram as ViewRam;
        let at = 0x9000;
        bufs.forEach((buf, i) => {
          at += 8 * buf.gap;
          const flags = i < bufs.length - 1 ? W | N : W;
          t.driver.setDesc(DESC, i, { addr: BigInt(at), len: buf.len, flags, next: i + 1 });
          at += buf.len;
        });
        for (let i = 0x9000; i < at; i++) ram.bytes[i] = i * 13;
        t.driver.offer(0);
        const chain = t.q.pop()!;
        const total = bufs.reduce((n, buf) => n + buf.len, 0);
        const offset = a % total;
        const length = 1 + b % (total - offset);
        const spans = new RamSpans();
        assert.equal(chain.gather(true, offset, length, spans), true);
        assert.deepEqual(spanBytes(spans), pieceBytes(chain, true, offset, length));
        // The model: the buffers the range touches; a new span wherever one does not follow the last.
        let start = 0;
        let expected = 0;
        bufs.forEach((buf) => {
          const touched = start < offset + length && start + buf.len > offset;
          const first = start <= offset && offset < start + buf.len;
          if (touched && (first || buf.gap > 0)) expected++;
          start += buf.len;
        });
        assert.equal(spans.count, expected);
      },
    ),
  );
});

Deno.test("DescriptorChain.gather: false and no spans when a buffer has no cache or its RAM went away", () => {
  {
    using t = cachedSetup();
    t.driver.offer(0);
    const chain = t.q.pop()!;
    t.ram.region.setEnabled(false);
    const spans = new RamSpans();
    spans.add(new ArrayBuffer(8), 0, 8);
    assert.equal(chain.gather(true, 0, 16, spans), false);
    assert.equal(spans.count, 0);
  }
  {
    // A chain made by hand over memory without caches.
    const ram = new ByteRam(0x1000);
    const chain = new DescriptorChain(ram, 0, [], [{ addr: 0x10n, len: 8 }]);
    assert.equal(chain.gather(true, 0, 8, new RamSpans()), false);
  }
});

Deno.test("DescriptorChain.gather: a writable span marks its pages dirty while logging; a readable one does not", () => {
  using t = cachedSetup();
  t.ram.region.setLog(true, DirtyLogClient.MIGRATION); // a new flat view: the chain's caches come after
  t.driver.offer(0);
  const chain = t.q.pop()!;
  t.ram.region.takeDirtyPages();
  const spans = new RamSpans();
  assert.equal(chain.gather(false, 0, 4, spans), true);
  assert.deepEqual(t.ram.region.takeDirtyPages(), []);
  assert.equal(chain.gather(true, 0, 16, spans), true);
  assert.deepEqual(t.ram.region.takeDirtyPages(), [0x9000n, 0xa000n]);
});

Deno.test("Virtqueue with caches: every device write through a cache marks its page dirty while logging", () => {
  // Device areas straddling a page boundary, so each kind of write is alone on a page at least once:
  // at 0x3ffc the used index is on page 0x3000 and the elements on 0x4000; at 0x3fbc (EVENT_IDX)
  // the index and elements are on page 0x3000 and avail_event alone on 0x4000.
  for (const [eventIdx, used] of [[false, 0x3ffcn], [true, 0x3fbcn]] as const) {
    using t = cachedSetup(eventIdx, used);
    t.request(); // the caches are taken before logging starts
    t.ram.region.setLog(true, DirtyLogClient.MIGRATION);
    t.ram.region.takeDirtyPages();
    t.request();
    // The device area and the two written buffers; nothing the device only read.
    assert.deepEqual(t.ram.region.takeDirtyPages(), [0x3000n, 0x4000n, 0x9000n, 0xa000n], `used at ${used}`);
    assert.equal(t.ram.checked, 0);
    t.ram.region.setLog(false, DirtyLogClient.MIGRATION);
    t.request();
    assert.deepEqual(t.ram.region.takeDirtyPages(), [], "not logging: nothing marked");
  }
});

// ---- Device state (issue 11) ----

type QueueOp =
  | { offer: number }
  | { service: number; unpopLast: boolean }
  | { notify: true }
  | { usedEvent: number }
  | { noInterrupt: boolean }
  | { availIdx: number };

const queueOp: fc.Arbitrary<QueueOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ offer: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ service: fc.integer({ min: 0, max: 4 }), unpopLast: fc.boolean() }) },
  { weight: 3, arbitrary: fc.constant({ notify: true as const }) },
  { weight: 2, arbitrary: fc.record({ usedEvent: fc.integer({ min: 0, max: 0xffff }) }) },
  { weight: 1, arbitrary: fc.record({ noInterrupt: fc.boolean() }) },
  // Now and then a hostile index: the queue must refuse it the same way before and after a load.
  { weight: 1, arbitrary: fc.record({ availIdx: fc.integer({ min: 0, max: 0xffff }) }) },
);

/** A queue with its guest RAM; the RAM travels in the saved state, as the memory file would carry it. */
function queueHarness(eventIdx: boolean): StateHarness<QueueOp> & { q: Virtqueue; ram: ByteRam } {
  const { ram, q, driver } = setup(8, { indirect: true, eventIdx });
  for (let i = 0; i < 8; i++) {
    driver.setDesc(DESC, i, { addr: BigInt(DATA + 0x100 * i), len: 0x40, flags: W, next: 0 });
  }
  const guard = <T>(fn: () => T): T | string => {
    try {
      return fn();
    } catch (e) {
      if (e instanceof VirtioProtocolError) return e.message;
      throw e;
    }
  };
  return {
    q,
    ram,
    device: {
      // Only the part of RAM the rings and buffers use (deepEqual on all of it is slow).
      saveState: () => ({ queue: q.saveState(), ram: ram.bytes.slice(0, DATA + 0x800) }),
      loadState: (state) => {
        q.loadState(state.queue as StateObject);
        ram.bytes.set(state.ram as Uint8Array);
        driver.availIdx = ram.view.getUint16(Number(AVAIL) + 2, true);
      },
    },
    step(op) {
      if ("offer" in op) driver.offer(op.offer);
      else if ("usedEvent" in op) driver.setUsedEvent(op.usedEvent);
      else if ("noInterrupt" in op) driver.setAvailFlags(op.noInterrupt ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
      else if ("availIdx" in op) driver.setAvailIdx(driver.availIdx = op.availIdx);
      else if ("notify" in op) return guard(() => q.shouldNotify());
      else {
        return guard(() => {
          const heads: number[] = [];
          for (let i = 0; i < op.service; i++) {
            const chain = q.pop();
            if (!chain) break;
            if (op.unpopLast && i === op.service - 1) {
              q.unpop(chain);
              heads.push(-chain.head);
              break;
            }
            chain.write(0, new Uint8Array([heads.length + 1]));
            q.push(chain, 3 * chain.head);
            heads.push(chain.head);
          }
          return heads;
        });
      }
      return [q.lastAvailIdx, q.usedIdx, q.inUse];
    },
    observe:
      () => [driver.usedIdx(), driver.availEvent(), ram.bytes.slice(Number(USED), Number(USED) + 0x48)],
  };
}

Deno.test("Virtqueue state: after a load the next chains, used entries and interrupt decisions are the same", () => {
  checkRoundTrip(() => queueHarness(false), queueOp, { numRuns: 200 });
  checkRoundTrip(() => queueHarness(true), queueOp, { numRuns: 200 });
});

Deno.test("Virtqueue state: EVENT_IDX bookkeeping survives: no second interrupt for the same used index", () => {
  const a = queueHarness(true);
  a.step({ offer: 1 });
  a.step({ usedEvent: 0 });
  a.step({ service: 1, unpopLast: false });
  assert.equal(a.step({ notify: true }), true, "used index passed used_event 0");
  const b = queueHarness(true);
  b.device.loadState(a.device.saveState());
  a.step({ offer: 2 });
  b.step({ offer: 2 });
  assert.deepEqual(b.step({ service: 1, unpopLast: false }), [2], "the next chain is the next available one");
  assert.equal(b.step({ notify: true }), false, "used_event still 0: suppressed, as without the snapshot");
  assert.equal(a.step({ service: 1, unpopLast: false }) + "," + a.step({ notify: true }), "2,false");
});

Deno.test("Virtqueue state: bad states are refused by field and leave the queue unchanged", () => {
  const { q, ram, driver } = setup(8, { indirect: false, eventIdx: true });
  driver.setDesc(DESC, 0, { addr: BigInt(DATA), len: 16, flags: W, next: 0 });
  driver.offer(0);
  q.push(q.pop()!, 1);
  q.shouldNotify();
  const h: StateHarness<never> = { device: q, step: () => undefined, observe: () => ram.bytes.slice() };
  assert.ok(checkBadStates(h, "virtqueue 0") >= 40);
  const state = q.saveState();
  const bad: [string, StateValue, RegExp][] = [
    ["size", 16, /"size" is 16, not in 1..8/],
    ["size", 6, /"size" is 6, not a power of two/],
    ["inUse", 9, /"inUse" is 9, not in 0..8/],
    ["descAddr", 0x1008n, /"descAddr" is 0x1008, not 16-byte aligned/],
    ["deviceAddr", 0x3002n, /"deviceAddr" is 0x3002, not 4-byte aligned/],
    ["lastAvailIdx", 0x10000, /"lastAvailIdx" is 65536/],
  ];
  for (const [field, value, message] of bad) {
    assert.throws(() => q.loadState({ ...state, [field]: value }), message);
  }
  assert.deepEqual(q.saveState(), state);
});
