import assert from "node:assert/strict";
import fc from "fast-check";
import { checkBadStates, checkRoundTrip, type StateHarness } from "./_state_test_util.ts";
import { I440fxHostBridge, type I440fxHostBridgeOptions } from "./i440fx_host_bridge.ts";
import { PciConfigSpace, type PciDevice } from "./pci_device.ts";
import { PciHost } from "./pci_host.ts";
import { ResetControl } from "./reset_control.ts";
import { ioSpace, portIo } from "./_test_util.ts";

const ADDR = 0xcf8;
const DATA = 0xcfc;

/** CONFIG_ADDRESS of bus/device/function/register with the enable bit. */
function cfg(bus: number, device: number, fn: number, register: number): number {
  return (0x8000_0000 | (bus << 16) | (device << 11) | (fn << 8) | (register & 0xfc)) >>> 0;
}

function setup(options: I440fxHostBridgeOptions = {}) {
  const { io, as } = ioSpace();
  const events: string[] = [];
  const host = new PciHost();
  const bridge = new I440fxHostBridge({
    onPamWrite: (o, v) => events.push(`pam ${o.toString(16)}=${v.toString(16)}`),
    onSmramWrite: (v) => events.push(`smram ${v.toString(16)}`),
    ...options,
  });
  host.attach({ bus: 0, device: 0, function: 0 }, bridge);
  host.map(io);
  const p = portIo(as);
  const readConfig = (bus: number, device: number, fn: number, register: number, size: 1 | 2 | 4) => {
    p.outl(ADDR, cfg(bus, device, fn, register));
    const port = DATA + (register & 3);
    return size === 1 ? p.inb(port) : size === 2 ? p.inw(port) : p.inl(port);
  };
  const writeConfig = (register: number, value: number, size: 1 | 2 | 4) => {
    p.outl(ADDR, cfg(0, 0, 0, register));
    const port = DATA + (register & 3);
    if (size === 1) p.outb(port, value);
    else if (size === 2) p.outw(port, value);
    else p.outl(port, value);
  };
  return { io, as, host, bridge, events, readConfig, writeConfig, ...p };
}

Deno.test("PCI: Linux's pci_check_type1 and pci_sanity_check find a type 1 host with a host bridge", () => {
  const { as, inl, outb, outl, readConfig } = setup();
  using _ = as;
  outb(0xcfb, 0x01); // ignored: only 4-byte writes at 0xcf8 set the address
  const tmp = inl(ADDR);
  assert.equal(tmp, 0);
  outl(ADDR, 0x8000_0000);
  assert.equal(inl(ADDR), 0x8000_0000);
  let found = false;
  for (let devfn = 0; devfn < 0x100; devfn++) {
    const cls = readConfig(0, devfn >> 3, devfn & 7, 0x0a, 2);
    if (cls === 0x0600 || cls === 0x0300) found = true;
    if (devfn === 0) assert.equal(cls, 0x0600);
    else assert.equal(cls, 0xffff, `devfn ${devfn}: absent functions read all-ones`);
  }
  assert.ok(found);
  outl(ADDR, tmp);
  assert.equal(inl(ADDR), 0);
});

Deno.test("PCI: the i440FX header through 1-, 2- and 4-byte data accesses", () => {
  const { as, readConfig } = setup();
  using _ = as;
  assert.equal(readConfig(0, 0, 0, 0x00, 4), 0x1237_8086);
  assert.deepEqual([0, 1, 2, 3].map((n) => readConfig(0, 0, 0, n, 1)), [0x86, 0x80, 0x37, 0x12]);
  assert.equal(readConfig(0, 0, 0, 0x00, 2), 0x8086);
  assert.equal(readConfig(0, 0, 0, 0x02, 2), 0x1237);
  assert.equal(readConfig(0, 0, 0, 0x08, 4), 0x0600_0002, "class 0x060000, revision 2");
  assert.equal(readConfig(0, 0, 0, 0x0e, 1), 0x00, "header type 0, single function");
  assert.equal(readConfig(0, 0, 0, 0x2c, 4), 0x1100_1af4, "QEMU's default subsystem IDs");
  assert.equal(readConfig(0, 0, 0, 0x72, 1), 0x02, "SMRAM at power-on");
  assert.equal(readConfig(0, 0, 0, 0x59, 1), 0x00, "PAM: everything to PCI");
});

Deno.test("PCI: read-only and writable header bytes, as QEMU's wmask", () => {
  const { as, readConfig, writeConfig } = setup();
  using _ = as;
  writeConfig(0x00, 0xffff_ffff, 4);
  assert.equal(readConfig(0, 0, 0, 0x00, 4), 0x1237_8086);
  writeConfig(0x04, 0xffff_ffff, 4); // command and status
  assert.equal(readConfig(0, 0, 0, 0x04, 4), 0x0000_0507);
  writeConfig(0x08, 0xffff_ffff, 4);
  assert.equal(readConfig(0, 0, 0, 0x08, 4), 0x0600_0002);
  writeConfig(0x0c, 0xffff_ffff, 4); // cache line size only
  assert.equal(readConfig(0, 0, 0, 0x0c, 4), 0x0000_00ff);
  writeConfig(0x3c, 0xffff, 2); // interrupt line writable, pin not
  assert.equal(readConfig(0, 0, 0, 0x3c, 2), 0x00ff);
  writeConfig(0x10, 0xffff_ffff, 4); // no BARs
  assert.equal(readConfig(0, 0, 0, 0x10, 4), 0);
  writeConfig(0x80, 0x1234_5678, 4); // device-specific area is writable
  assert.equal(readConfig(0, 0, 0, 0x80, 4), 0x1234_5678);
});

Deno.test("PCI: PAM writes call onPamWrite per byte; SMRAM writes call onSmramWrite", () => {
  const { as, events, bridge, readConfig, writeConfig } = setup();
  using _ = as;
  writeConfig(0x59, 0x30, 1); // SeaBIOS: pci_config_writeb(0, 0x59, 0x30)
  assert.deepEqual(events, ["pam 59=30"]);
  writeConfig(0x5a, 0x3333, 2);
  writeConfig(0x5c, 0x3333_3333, 4);
  assert.deepEqual(events, [
    "pam 59=30",
    "pam 5a=33",
    "pam 5b=33",
    "pam 5c=33",
    "pam 5d=33",
    "pam 5e=33",
    "pam 5f=33",
  ]);
  assert.equal(readConfig(0, 0, 0, 0x5c, 4), 0x3333_3333);
  assert.deepEqual([0, 1, 6].map((i) => bridge.pam(i)), [0x30, 0x33, 0x33]);
  events.length = 0;
  writeConfig(0x58, 0x0000_1100, 4); // covers 0x59–0x5b only
  assert.deepEqual(events, ["pam 59=11", "pam 5a=0", "pam 5b=0"]);
  events.length = 0;
  writeConfig(0x72, 0x4a, 1);
  assert.deepEqual(events, ["smram 4a"]);
  assert.equal(bridge.smram, 0x4a);
  writeConfig(0x70, 0x0000_0000, 4);
  assert.deepEqual(events, ["smram 4a", "smram 0"]);
  writeConfig(0x54, 0xffff_ffff, 4);
  assert.equal(events.length, 2, "0x54–0x57: neither PAM nor SMRAM");
});

Deno.test("PCI: enable bit clear, absent functions and other buses read all-ones; writes dropped", () => {
  const { as, inb, inw, inl, outl, readConfig, writeConfig, host } = setup();
  using _ = as;
  outl(ADDR, 0x0000_0000);
  assert.equal(inl(DATA), 0xffff_ffff);
  assert.equal(inw(DATA + 2), 0xffff);
  assert.equal(inb(DATA + 3), 0xff);
  outl(DATA, 0); // enable bit clear: dropped
  assert.equal(readConfig(0, 0, 0, 0, 4), 0x1237_8086);
  assert.equal(readConfig(0, 0, 1, 0, 4), 0xffff_ffff);
  assert.equal(readConfig(1, 0, 0, 0, 4), 0xffff_ffff);
  assert.equal(readConfig(0, 31, 7, 0xfc, 1), 0xff);
  writeConfig(0x0c, 0x10, 1);
  assert.equal(host.configAddress, 0x8000_000c);
});

Deno.test("PCI: pci-conf-idx takes only 4-byte writes at 0xcf8 and reads back whole, as QEMU", () => {
  const { as, inb, inw, inl, outw, outl } = setup();
  using _ = as;
  outl(ADDR, 0x8000_1234);
  outw(ADDR, 0xffff);
  outw(ADDR + 2, 0xffff);
  assert.equal(inl(ADDR), 0x8000_1234);
  assert.equal(inw(ADDR), 0x1234);
  assert.equal(inb(ADDR), 0x34);
  assert.equal(inb(ADDR + 2), 0x34, "QEMU returns the register unshifted at any offset");
});

Deno.test("PCI: piix3-reset-control owns 0xcf9 (prio 1) but 4-byte accesses at 0xcf8 reach the index", () => {
  const { io, as, inb, inl, outb, outl } = setup();
  using _ = as;
  let resets = 0;
  new ResetControl({ onReset: () => resets++ }).map(io);
  outl(ADDR, 0x8000_0400);
  assert.equal(inl(ADDR), 0x8000_0400);
  assert.equal(resets, 0, "byte 1 of the 4-byte write did not reach the reset control");
  outb(0xcf9, 0x02);
  assert.equal(inb(0xcf9), 0x02);
  assert.equal(inl(ADDR), 0x8000_0400, "the index register is unchanged");
  outb(0xcf9, 0x06);
  assert.equal(resets, 1);
});

Deno.test("PCI: more functions attach by bus/device/function; slots are unique; reset", () => {
  const { as, host, bridge, readConfig, writeConfig } = setup();
  using _ = as;
  class Vga implements PciDevice {
    readonly config = new PciConfigSpace({
      vendorId: 0x1234,
      deviceId: 0x1111,
      revision: 2,
      classCode: 0x030000,
    });
    resets = 0;
    readConfig(offset: number, size: number) {
      return this.config.read(offset, size);
    }
    writeConfig(offset: number, value: number, size: number) {
      this.config.write(offset, value, size);
    }
    reset() {
      this.resets++;
    }
  }
  const vga = new Vga();
  host.attach({ device: 2 }, vga);
  assert.equal(readConfig(0, 2, 0, 0, 4), 0x1111_1234);
  assert.equal(readConfig(0, 2, 0, 0x0a, 2), 0x0300);
  assert.equal(host.deviceAt({ device: 2 }), vga);
  assert.throws(() => host.attach({ device: 2 }, vga), RangeError);
  assert.throws(() => host.attach({ device: 32 }, vga), RangeError);
  writeConfig(0x04, 0x0007, 2);
  writeConfig(0x59, 0x30, 1);
  host.reset();
  assert.equal(host.configAddress, 0);
  assert.equal(vga.resets, 1);
  assert.equal(bridge.readConfig(0x04, 2), 0, "command cleared by RST#");
  assert.equal(bridge.pam(0), 0x30, "PAM survives a reset, as in QEMU");
  assert.equal(host.detach({ device: 2 }), vga);
  assert.equal(readConfig(0, 2, 0, 0, 4), 0xffff_ffff);
});

Deno.test("PCI: coreboot RAM-size byte 0x57 in 8 MiB units, capped at 255", () => {
  assert.equal(new I440fxHostBridge({ ramSize: 256 << 20 }).readConfig(0x57, 1), 32);
  assert.equal(new I440fxHostBridge({ ramSize: 8n << 30n }).readConfig(0x57, 1), 255);
  assert.equal(new I440fxHostBridge().readConfig(0x57, 1), 0);
});

Deno.test("PciHost state: CONFIG_ADDRESS round trip; bad states refused", () => {
  const harness = (): StateHarness<[number, number, 1 | 2 | 4] | number> => {
    const host = new PciHost();
    host.attach({ device: 0 }, new I440fxHostBridge());
    return {
      device: host,
      step: (op) =>
        typeof op === "number" ? host.readData(op, 4 - op as 1 | 2 | 4) : host.writeAddress(...op),
      observe: () => [],
    };
  };
  const op = fc.oneof(
    fc.integer({ min: 0, max: 3 }),
    fc.tuple(
      fc.constantFrom(0, 1),
      fc.oneof(
        fc.constantFrom(0x8000_0000, 0x8000_0008, 0x8000_0800, 0),
        fc.integer({ min: 0, max: 0xffff_ffff }),
      ),
      fc.constantFrom(1 as const, 2 as const, 4 as const),
    ),
  );
  checkRoundTrip(harness, op);
  const h = harness();
  h.step([0, 0x8000_0008, 4]);
  assert.ok(checkBadStates(h, "pci-host") >= 4);
  assert.throws(() => h.device.loadState({ configAddress: 2 ** 32 }), /"configAddress" is 4294967296/);
  assert.deepEqual(h.device.saveState(), { configAddress: 0x8000_0008 });
});
