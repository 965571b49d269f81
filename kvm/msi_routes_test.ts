import assert from "node:assert/strict";
import fc from "fast-check";
import { KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE } from "./ioctls.ts";
import { KvmError } from "./kvm_error.ts";
import { swizzleMsiExtDestId } from "./vm.ts";
import {
  defaultGsiRoutes,
  type GsiRoute,
  type IrqchipRoute,
  isIrqchipRoute,
  MsiRoutes,
} from "./msi_routes.ts";

/** A router that records each committed table, as a Vm would send it. */
function recorder(): { tables: GsiRoute[][]; setGsiRouting(routes: readonly GsiRoute[]): void } {
  const tables: GsiRoute[][] = [];
  return { tables, setGsiRouting: (routes) => void tables.push([...routes]) };
}

const MESSAGE = { addressLo: 0xfee0_0000, addressHi: 0, data: 0x4041 };

Deno.test("defaultGsiRoutes is KVM_CREATE_IRQCHIP's table: 0-15 on the IOAPIC and a PIC, 16-23 on the IOAPIC", () => {
  const routes = defaultGsiRoutes();
  assert.equal(routes.length, 40);
  for (let gsi = 0; gsi < 24; gsi++) {
    const expected: IrqchipRoute[] = [{ gsi, irqchip: KVM_IRQCHIP_IOAPIC, pin: gsi }];
    if (gsi < 8) expected.push({ gsi, irqchip: KVM_IRQCHIP_PIC_MASTER, pin: gsi });
    else if (gsi < 16) expected.push({ gsi, irqchip: KVM_IRQCHIP_PIC_SLAVE, pin: gsi - 8 });
    assert.deepEqual(routes.filter((r) => r.gsi === gsi), expected, `GSI ${gsi}`);
  }
  // The kernel's order: per GSI, the IOAPIC entry first (kvm_setup_default_irq_routing).
  assert.deepEqual(routes.slice(0, 4).map((r) => [r.gsi, r.irqchip]), [[0, 2], [0, 0], [1, 2], [1, 0]]);
});

Deno.test("MsiRoutes: GSIs from 24 up, the lowest free first; commits carry the base routes", () => {
  const router = recorder();
  const routes = new MsiRoutes(router);
  assert.equal(routes.dirty, true);
  const a = routes.add(MESSAGE);
  const b = routes.add({ ...MESSAGE, data: 0x42 });
  const c = routes.add({ ...MESSAGE, data: 0x43 });
  assert.deepEqual([a, b, c], [24, 25, 26]);
  routes.commit();
  assert.equal(router.tables.length, 1);
  const [table] = router.tables;
  assert.deepEqual(table.filter(isIrqchipRoute), defaultGsiRoutes());
  assert.deepEqual(table.filter((r) => !isIrqchipRoute(r)), [
    { gsi: 24, ...MESSAGE },
    { gsi: 25, ...MESSAGE, data: 0x42 },
    { gsi: 26, ...MESSAGE, data: 0x43 },
  ]);

  routes.remove(b);
  assert.equal(routes.add({ ...MESSAGE, data: 0x44 }), 25, "a freed GSI is reused");
  routes.update(c, { ...MESSAGE, data: 0x45 });
  routes.commit();
  assert.equal(router.tables.length, 2);
  assert.deepEqual(routes.msiRoutes.map((r) => [r.gsi, r.data]), [[24, 0x4041], [25, 0x44], [26, 0x45]]);

  routes.update(a, MESSAGE); // unchanged: no commit needed
  routes.commit();
  assert.equal(router.tables.length, 2);
  assert.throws(() => routes.update(3, MESSAGE), RangeError);
  assert.throws(() => routes.remove(99), RangeError);
  assert.throws(() => routes.add({ ...MESSAGE, data: -1 }), RangeError);
});

Deno.test("MsiRoutes: a board's own base routes (QEMU's GSI 0 -> pin 2) and GSIs they use are skipped", () => {
  const base = [
    { gsi: 0, irqchip: KVM_IRQCHIP_IOAPIC, pin: 2 },
    { gsi: 24, irqchip: KVM_IRQCHIP_IOAPIC, pin: 23 },
  ];
  const router = recorder();
  const routes = new MsiRoutes(router, { base });
  assert.equal(routes.add(MESSAGE), 25);
  routes.commit();
  assert.deepEqual(router.tables[0].slice(0, 2), base);
});

Deno.test("MsiRoutes: when every GSI is taken, add is ENOSPC (fall back to KVM_SIGNAL_MSI)", () => {
  const routes = new MsiRoutes(recorder(), { gsiCount: 26 });
  routes.add(MESSAGE);
  routes.add(MESSAGE);
  assert.throws(() => routes.add(MESSAGE), (error: unknown) => {
    assert.ok(error instanceof KvmError && error.code === "ENOSPC");
    assert.match(error.message, /GSIs 24-25 are all routed/);
    return true;
  });
  assert.throws(() => new MsiRoutes(recorder(), { firstGsi: 30, gsiCount: 26 }), RangeError);
  assert.throws(() => new MsiRoutes(recorder(), { gsiCount: 5000 }), RangeError);
});

Deno.test("MsiRoutes: a failed commit stays dirty and is retried", () => {
  let fail = true;
  let sent = 0;
  const routes = new MsiRoutes({
    setGsiRouting() {
      if (fail) throw new KvmError("KVM_SET_GSI_ROUTING", 22);
      sent++;
    },
  });
  routes.add(MESSAGE);
  assert.throws(() => routes.commit(), KvmError);
  assert.equal(routes.dirty, true);
  fail = false;
  routes.commit();
  assert.equal(sent, 1);
  assert.equal(routes.dirty, false);
});

Deno.test("MsiRoutes property: any add/remove sequence keeps GSIs unique, >= 24, off the base, lowest first", () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constant(-1), fc.nat(40)), { maxLength: 80 }), (ops) => {
      const routes = new MsiRoutes(recorder(), { gsiCount: 60 });
      const live = new Set<number>();
      for (const op of ops) {
        if (op === -1 || live.size === 0 || op % 3 !== 0) {
          if (live.size === 60 - 24) continue;
          const gsi = routes.add(MESSAGE);
          let lowest = 24;
          while (live.has(lowest)) lowest++;
          assert.equal(gsi, lowest);
          live.add(gsi);
        } else {
          const victim = [...live][op % live.size];
          routes.remove(victim);
          live.delete(victim);
        }
      }
      const gsis = routes.msiRoutes.map((r) => r.gsi);
      assert.deepEqual(gsis, [...live].sort((x, y) => x - y));
      assert.equal(routes.table.length, 40 + live.size);
    }),
  );
});

Deno.test("swizzleMsiExtDestId: KVM's 32-bit destination is the 15-bit one the guest wrote; the rest kept", () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 0x7fff }),
    fc.boolean(),
    fc.boolean(),
    (dest, logical, hint) => {
      const lo =
        (0xfee0_0000 | (dest & 0xff) << 12 | (dest >> 8) << 5 | (hint ? 8 : 0) | (logical ? 4 : 0)) >>> 0;
      const [newLo, newHi] = swizzleMsiExtDestId(lo, 0);
      // KVM with USE_32BIT_IDS: destination = address_lo bits 19:12 | address_hi bits 31:8.
      assert.equal(((newLo >>> 12) & 0xff) | (newHi & 0xffff_ff00), dest);
      assert.equal(newHi & 0xff, 0, "address_hi bits 7:0 stay zero");
      assert.equal(newLo & 0xfff0_001f, lo & 0xfff0_001f, "base, mode and hint bits kept");
      assert.equal(newLo & 0xfe0, 0);
    },
  ));
  // The remappable format (bit 4) and a message that already uses address_hi pass unchanged.
  assert.deepEqual(swizzleMsiExtDestId(0xfee0_0030, 0), [0xfee0_0030, 0]);
  assert.deepEqual(swizzleMsiExtDestId(0xfee0_0020, 0x100), [0xfee0_0020, 0x100]);
});
