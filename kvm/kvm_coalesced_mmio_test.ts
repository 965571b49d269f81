/**
 * Coalesced I/O: the listener against a recording fake, the ring against pages filled as KVM fills
 * them, and — where KVM is usable — a real guest whose port writes KVM queues instead of exiting.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { AddressSpace, flushCoalescedMmio, MemoryRegion, registerCoalescedFlusher } from "../memory/mod.ts";
import { enterRealMode, ifKvm, mapRam, reportKvmSkip } from "./_testing.ts";
import { type CoalescedBackend, CoalescedRing, KvmCoalescedListener } from "./kvm_coalesced_mmio.ts";
import { GuestMemory } from "./guest_memory.ts";
import { KVM_CAP_COALESCED_MMIO, KVM_CAP_COALESCED_PIO, KVM_EXIT_HLT, KVM_EXIT_IO } from "./ioctls.ts";
import { Kvm } from "./kvm.ts";
import { serveExit } from "./serve_exit.ts";
import type { CoalescedZone } from "./vm.ts";
import type { Vcpu } from "./vcpu.ts";

reportKvmSkip("kvm/kvm_coalesced_mmio_test.ts");

/** Why this KVM cannot run the real-guest test (no ring, or no port coalescing), or undefined. */
function coalescingMissing(): string | undefined {
  if (ifKvm.ignore) return undefined; // reported above
  using kvm = Kvm.open();
  using vm = kvm.createVm();
  if (vm.checkExtension(KVM_CAP_COALESCED_MMIO) <= 0) return "KVM has no coalesced-MMIO ring";
  if (vm.checkExtension(KVM_CAP_COALESCED_PIO) <= 0) return "KVM cannot coalesce port writes";
  return undefined;
}
const missing = coalescingMissing();
if (missing) console.log(`kvm/kvm_coalesced_mmio_test.ts: real-guest test skipped: ${missing}`);

function recordingVm() {
  const log: string[] = [];
  const show = (z: CoalescedZone) => `${z.space} 0x${z.address.toString(16)}+${z.size}`;
  const vm: CoalescedBackend & { closed: boolean } = {
    closed: false,
    registerCoalescedZone: (z) => void log.push(`+${show(z)}`),
    unregisterCoalescedZone: (z) => void log.push(`-${show(z)}`),
  };
  return { vm, log };
}

/** An I/O space with the PC's two coalesced ports: CONFIG_ADDRESS (0xcf8, 4 bytes) and the RTC index (0x70). */
function pciAndRtcPorts() {
  const io = MemoryRegion.container("io", 0x10000);
  const idx = MemoryRegion.io("pci-conf-idx", 4, { write: () => {} });
  io.addSubregion(0xcf8, idx);
  idx.addCoalescing(0, 4);
  const rtc = MemoryRegion.io("rtc-index", 1, { write: () => {} });
  io.addSubregion(0x70, rtc);
  rtc.addCoalescing(0, 1);
  return { io, rtc };
}

Deno.test("the listener registers each coalesced piece of the view, and follows it", () => {
  const io = MemoryRegion.container("io", 0x10000);
  const idx = MemoryRegion.io("pci-conf-idx", 4, { write: () => {} });
  io.addSubregion(0xcf8, idx);
  idx.addCoalescing(0, 4);
  using space = new AddressSpace(io, "I/O");
  const { vm, log } = recordingVm();
  space.registerListener(new KvmCoalescedListener(vm, "pio"));
  // A byte mapped over the range (the PIIX reset control at 0xcf9) splits the zone, as in QEMU.
  io.addSubregionOverlap(0xcf9, MemoryRegion.io("reset-control", 1, { write: () => {} }), 1);
  assert.deepEqual(log, ["+pio 0xcf8+4", "-pio 0xcf8+4", "+pio 0xcf8+1", "+pio 0xcfa+2"]);
  log.length = 0;
  vm.closed = true;
  space.close(); // KVM dropped the zones with the VM: no calls
  assert.deepEqual(log, []);
  assert.throws(() => new KvmCoalescedListener(vm, "dma" as "pio"), /space must be "pio" or "mmio"/);
});

Deno.test("mergeSplitZones registers a split range whole, and keeps it so as the view changes", () => {
  const { io } = pciAndRtcPorts();
  const rcr = MemoryRegion.io("reset-control", 1, { write: () => {} });
  io.addSubregionOverlap(0xcf9, rcr, 1);
  using space = new AddressSpace(io, "I/O");
  const { vm, log } = recordingVm();
  const listener = new KvmCoalescedListener(vm, "pio");
  space.registerListener(listener);
  assert.deepEqual(log, ["+pio 0x70+1", "+pio 0xcf8+1", "+pio 0xcfa+2"]); // QEMU's pieces
  log.length = 0;
  assert.equal(listener.mergeSplitZones(), 1);
  assert.deepEqual(log, ["-pio 0xcf8+1", "-pio 0xcfa+2", "+pio 0xcf8+4"]); // the RTC's is not split
  assert.equal(listener.mergeSplitZones(), 0, "already whole");
  log.length = 0;
  // The view stops splitting it: the whole zone goes with its last piece, and the range comes back
  // unsplit.
  io.removeSubregion(rcr);
  assert.deepEqual(log, ["-pio 0xcf8+4", "+pio 0xcf8+4"]);
  log.length = 0;
  // Split again after the merge: the whole range at once, none of its pieces.
  io.addSubregionOverlap(0xcf9, rcr, 1);
  assert.deepEqual(log, ["-pio 0xcf8+4", "+pio 0xcf8+4"]);
});

Deno.test("a deferred listener keeps its zones until activate, then registers the view's as they are", () => {
  const { io, rtc } = pciAndRtcPorts();
  using space = new AddressSpace(io, "I/O");
  const { vm, log } = recordingVm();
  const listener = new KvmCoalescedListener(vm, "pio", { deferred: true });
  space.registerListener(listener);
  io.addSubregionOverlap(0xcf9, MemoryRegion.io("reset-control", 1, { write: () => {} }), 1);
  rtc.setAddress(0x72);
  assert.deepEqual(log, [], "no zone while deferred");
  assert.equal(listener.active, false);
  assert.equal(listener.activate(), 3);
  assert.equal(listener.active, true);
  assert.deepEqual(log, ["+pio 0xcf8+1", "+pio 0xcfa+2", "+pio 0x72+1"]); // the view now, not its history
  assert.equal(listener.activate(), 0, "already active");
  log.length = 0;
  rtc.setAddress(0x70); // changes after activation reach KVM at once
  assert.deepEqual(log, ["-pio 0x72+1", "+pio 0x70+1"]);
});

Deno.test("a deferred listener merges before activation as an active one does", () => {
  const io = MemoryRegion.container("io", 0x10000);
  const idx = MemoryRegion.io("pci-conf-idx", 4, { write: () => {} });
  io.addSubregion(0xcf8, idx);
  idx.addCoalescing(0, 4);
  io.addSubregionOverlap(0xcf9, MemoryRegion.io("reset-control", 1, { write: () => {} }), 1);
  using space = new AddressSpace(io, "I/O");
  const { vm, log } = recordingVm();
  const listener = new KvmCoalescedListener(vm, "pio", { deferred: true });
  space.registerListener(listener);
  assert.equal(listener.mergeSplitZones(), 1);
  assert.deepEqual(log, []);
  listener.activate();
  assert.deepEqual(log, ["+pio 0xcf8+4"]);
});

/** KVM's zones as a set: unregistering a range drops every zone that contains it (KVM's rule). */
function kvmZoneModel() {
  const zones = new Set<string>();
  const vm: CoalescedBackend = {
    registerCoalescedZone: (z) => void zones.add(`${z.address}+${z.size}`),
    unregisterCoalescedZone: (z) => {
      const start = BigInt(z.address);
      for (const key of [...zones]) {
        const [zs, size] = key.split("+").map(BigInt);
        if (zs <= start && start + BigInt(z.size) <= zs + size) zones.delete(key);
      }
    },
  };
  return { vm, zones };
}

Deno.test("property: a deferred listener, activated at any point, leaves KVM the zones an active one does", () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant("move" as const), at: fc.integer({ min: 0x60, max: 0x80 }) }),
    fc.record({ kind: fc.constant("split" as const), at: fc.integer({ min: 0xcf6, max: 0xcfc }) }),
    fc.record({ kind: fc.constant("unsplit" as const) }),
    fc.record({ kind: fc.constant("merge" as const) }),
    fc.record({ kind: fc.constant("activate" as const) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
      const { io, rtc } = pciAndRtcPorts();
      const rcr = MemoryRegion.io("reset-control", 1, { write: () => {} });
      using space = new AddressSpace(io, "I/O");
      const now = kvmZoneModel();
      const later = kvmZoneModel();
      const active = new KvmCoalescedListener(now.vm, "pio");
      const deferred = new KvmCoalescedListener(later.vm, "pio", { deferred: true });
      space.registerListener(active);
      space.registerListener(deferred);
      let split = false;
      for (const o of ops) {
        if (o.kind === "move") rtc.setAddress(o.at);
        else if (o.kind === "split" && !split) {
          io.addSubregionOverlap(o.at, rcr, 1);
          split = true;
        } else if (o.kind === "unsplit" && split) {
          io.removeSubregion(rcr);
          split = false;
        } else if (o.kind === "merge") {
          active.mergeSplitZones();
          deferred.mergeSplitZones();
        } else if (o.kind === "activate") deferred.activate();
      }
      deferred.activate();
      assert.deepEqual([...later.zones].sort(), [...now.zones].sort());
    }),
  );
});

/** A ring page holding `entries` as KVM writes them, `first` and `last` set. */
function ringPage(
  first: number,
  entries: { at: number; addr: bigint; len: number; pio: boolean; data: number[] }[],
) {
  const page = new Uint8Array(4096);
  const view = new DataView(page.buffer);
  let last = first;
  for (const e of entries) {
    const at = 8 + e.at * 24;
    view.setBigUint64(at, e.addr, true);
    view.setUint32(at + 8, e.len, true);
    view.setUint32(at + 12, e.pio ? 1 : 0, true);
    page.set(e.data, at + 16);
    last = (e.at + 1) % 170;
  }
  view.setUint32(0, first, true);
  view.setUint32(4, last, true);
  return { page, view };
}

function spaces() {
  const seen: string[] = [];
  const io = MemoryRegion.container("io", 0x10000);
  io.addSubregion(
    0,
    MemoryRegion.io("ports", 0x10000, { write: (o, v, s) => void seen.push(`io ${o}=${v}/${s}`) }),
  );
  const sys = MemoryRegion.container("system", 1n << 64n);
  sys.addSubregion(
    0xfe00_0000n,
    MemoryRegion.io("mmio", 0x1000, { write: (o, v, s) => void seen.push(`mmio ${o}=${v}/${s}`) }),
  );
  const all = { io: new AddressSpace(io, "I/O"), memory: new AddressSpace(sys, "memory") };
  return { seen, ...all, [Symbol.dispose]: () => (all.io.close(), all.memory.close()) };
}

Deno.test("the ring plays entries back oldest first, across the wrap, into the right space", () => {
  using s = spaces();
  const { page, view } = ringPage(168, [
    { at: 168, addr: 0x70n, len: 1, pio: true, data: [0x0f] },
    { at: 169, addr: 0xfe00_0010n, len: 4, pio: false, data: [1, 2, 3, 4] },
    { at: 0, addr: 0xcf8n, len: 4, pio: true, data: [0, 8, 0, 0x80] },
  ]);
  assert.equal(new CoalescedRing(page, s).flush(), 3);
  assert.deepEqual(s.seen, ["io 112=15/1", `mmio 16=${0x0403_0201}/4`, `io 3320=${0x8000_0800}/4`]);
  assert.equal(view.getUint32(0, true), 1); // first = last: every slot handed back
  assert.equal(new CoalescedRing(page, s).flush(), 0);
});

Deno.test("a ring entry with a bad length is skipped; corrupt indices drop the ring, never read past it", () => {
  using s = spaces();
  const bad = ringPage(0, [
    { at: 0, addr: 0x70n, len: 9, pio: true, data: [] },
    { at: 1, addr: 0x71n, len: 1, pio: true, data: [5] },
  ]);
  assert.equal(new CoalescedRing(bad.page, s).flush(), 1);
  assert.deepEqual(s.seen, ["io 113=5/1"]);
  const corrupt = ringPage(0, []);
  corrupt.view.setUint32(4, 5000, true);
  assert.equal(new CoalescedRing(corrupt.page, s).flush(), 0);
  assert.equal(corrupt.view.getUint32(0, true), 0);
  assert.throws(() => new CoalescedRing(new Uint8Array(100), s), /4 KiB page/);
});

/**
 * Runs `vcpu` to its `hlt` with the ring (page `ringPageIndex` of its mapping) played back through
 * `spaces` on demand, and before each exit too when `eachExit` (as the runners do once a range is
 * merged); returns the port of each exit.
 */
function runPlayingBack(
  vcpu: Vcpu,
  ringPageIndex: number,
  spaces: { memory: AddressSpace; io: AddressSpace },
  eachExit: boolean,
): number[] {
  const ring = new CoalescedRing(
    vcpu.runPage.subarray(ringPageIndex * 4096, ringPageIndex * 4096 + 4096),
    spaces,
  );
  using _flusher = registerCoalescedFlusher(() => void ring.flush());
  const exits: number[] = [];
  for (;;) {
    const reason = vcpu.run();
    if (reason === KVM_EXIT_HLT) return exits;
    assert.equal(reason, KVM_EXIT_IO);
    if (eachExit) flushCoalescedMmio();
    exits.push(new DataView(vcpu.runPage.buffer, vcpu.runPage.byteOffset).getUint16(34, true));
    serveExit(vcpu.runPage, vcpu.runView, spaces);
  }
}

Deno.test({
  name:
    "a real guest's coalesced port writes do not exit, and reach the device in order before the read that needs them",
  ignore: ifKvm.ignore || missing !== undefined,
  fn() {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const ringPageIndex = vm.checkExtension(KVM_CAP_COALESCED_MMIO);
    using ram = new GuestMemory(2n << 20n);
    mapRam(vm, ram);
    // mov al,0x0f; out 0x70,al; mov al,0x0a; out 0x70,al; mov al,0x8e; out 0x70,al; in al,0x71;
    // out 0x72,al; hlt
    const code = [
      0xb0,
      0x0f,
      0xe6,
      0x70,
      0xb0,
      0x0a,
      0xe6,
      0x70,
      0xb0,
      0x8e,
      0xe6,
      0x70,
      0xe4,
      0x71,
      0xe6,
      0x72,
      0xf4,
    ];
    ram.bytes.set(code, 0x1000);
    const vcpu = vm.createVcpu(0);
    enterRealMode(vcpu, 0x1000);

    const writes: number[] = [];
    let index = 0;
    let result = -1;
    const io = MemoryRegion.container("io", 0x10000);
    const rtc = MemoryRegion.io("rtc", 2, {
      read: () => (index & 0x7f) * 2, // "CMOS" byte i holds 2i
      write: () => {},
    });
    const rtcIndex = MemoryRegion.io("rtc-index", 1, {
      write: (_o, v) => void (writes.push(Number(v)), index = Number(v)),
    });
    rtc.addSubregion(0, rtcIndex);
    rtc.setFlushCoalesced();
    rtcIndex.addCoalescing(0, 1);
    io.addSubregion(0x70, rtc);
    io.addSubregion(0x72, MemoryRegion.io("result", 1, { write: (_o, v) => void (result = Number(v)) }));
    using ports = new AddressSpace(io, "I/O");
    using memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
    ports.registerListener(new KvmCoalescedListener(vm, "pio"));
    const exits = runPlayingBack(vcpu, ringPageIndex, { memory, io: ports }, false);
    assert.deepEqual(exits, [0x71, 0x72]); // the three index writes never left KVM_RUN
    assert.deepEqual(writes, [0x0f, 0x0a, 0x8e]);
    assert.equal(result, 0x0e * 2); // the read saw the last index, played back before it
  },
});

Deno.test({
  name: "a real guest's dword write to a split CONFIG_ADDRESS exits only once the split range is merged",
  ignore: ifKvm.ignore || missing !== undefined,
  fn() {
    // mov dx,0xcf8; mov eax,0x80001234; out dx,eax; mov al,6; mov dx,0xcf9; out dx,al;
    // mov dx,0xcfc; in eax,dx; hlt
    const code = [
      ...[0xba, 0xf8, 0x0c, 0x66, 0xb8, 0x34, 0x12, 0x00, 0x80, 0x66, 0xef],
      ...[0xb0, 0x06, 0xba, 0xf9, 0x0c, 0xee],
      ...[0xba, 0xfc, 0x0c, 0x66, 0xed, 0xf4],
    ];
    const run = (merge: boolean) => {
      using kvm = Kvm.open();
      using vm = kvm.createVm();
      const ringPageIndex = vm.checkExtension(KVM_CAP_COALESCED_MMIO);
      using ram = new GuestMemory(2n << 20n);
      mapRam(vm, ram);
      ram.bytes.set(code, 0x1000);
      const vcpu = vm.createVcpu(0);
      enterRealMode(vcpu, 0x1000);
      const seen: string[] = [];
      const io = MemoryRegion.container("io", 0x10000);
      const idx = MemoryRegion.io("pci-conf-idx", 4, {
        write: (_o, v, size) => void seen.push(`address 0x${v.toString(16)}/${size}`),
      });
      const data = MemoryRegion.io("pci-conf-data", 4, {
        read: () => (seen.push("data read"), 0x5678),
        write: () => {},
      });
      data.setFlushCoalesced();
      idx.addCoalescing(0, 4);
      io.addSubregion(0xcf8, idx);
      io.addSubregion(0xcfc, data);
      io.addSubregionOverlap(
        0xcf9,
        MemoryRegion.io("reset-control", 1, { write: (_o, v) => void seen.push(`reset control ${v}`) }),
        1,
      );
      using ports = new AddressSpace(io, "I/O");
      using memory = new AddressSpace(MemoryRegion.container("system", 1n << 64n), "memory");
      const listener = new KvmCoalescedListener(vm, "pio");
      ports.registerListener(listener);
      if (merge) assert.equal(listener.mergeSplitZones(), 1);
      const exits = runPlayingBack(vcpu, ringPageIndex, { memory, io: ports }, true);
      assert.equal(vcpu.getRegs().rax & 0xffffffffn, 0x5678n);
      return { exits, seen };
    };
    const pieces = run(false);
    assert.deepEqual(pieces.exits, [0xcf8, 0xcf9, 0xcfc]); // QEMU's zones: neither write fits one
    const merged = run(true);
    assert.deepEqual(merged.exits, [0xcfc]); // both writes queued, played back before the read
    const order = ["address 0x80001234/4", "reset control 6", "data read"];
    assert.deepEqual(pieces.seen, order);
    assert.deepEqual(merged.seen, order);
  },
});
