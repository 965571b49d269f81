import assert from "node:assert/strict";
import { PciConfig, PciConfigSpace } from "./pci_device.ts";

const identity = { vendorId: 0x8086, deviceId: 0x7000, classCode: 0x060100, headerType: 0x80 };

Deno.test("PciConfigSpace: identity bytes; multi-function header keeps no subsystem IDs by default", () => {
  const cfg = new PciConfigSpace(identity);
  assert.equal(cfg.read(PciConfig.VENDOR_ID, 4), 0x7000_8086);
  assert.equal(cfg.read(PciConfig.CLASS_PROG, 1), 0x00);
  assert.equal(cfg.read(PciConfig.CLASS_DEVICE, 2), 0x0601);
  assert.equal(cfg.read(PciConfig.HEADER_TYPE, 1), 0x80);
  assert.equal(
    cfg.read(PciConfig.SUBSYSTEM_VENDOR_ID, 4),
    0x1100_1af4,
    "header type 0 (multi-function bit aside)",
  );
  const bridge = new PciConfigSpace({ ...identity, headerType: 0x01 });
  assert.equal(bridge.read(PciConfig.SUBSYSTEM_VENDOR_ID, 4), 0);
});

Deno.test("PciConfigSpace: status error bits are write-1-to-clear; reset clears the header's writable bits", () => {
  const cfg = new PciConfigSpace(identity);
  cfg.bytes[PciConfig.STATUS + 1] = 0xf9; // error bits set by the device
  cfg.write(PciConfig.STATUS, 0x0800, 2); // clear "signalled target abort" only
  assert.equal(cfg.read(PciConfig.STATUS, 2), 0xf100);
  cfg.write(PciConfig.STATUS, 0x0000, 2);
  assert.equal(cfg.read(PciConfig.STATUS, 2), 0xf100, "writing 0 changes nothing");
  cfg.write(PciConfig.COMMAND, 0x0107, 2);
  cfg.write(PciConfig.INTERRUPT_LINE, 0x0b, 1);
  cfg.write(PciConfig.CACHE_LINE_SIZE, 0x10, 1);
  cfg.write(0x40, 0xaa, 1);
  cfg.resetHeader();
  assert.equal(cfg.read(PciConfig.COMMAND, 4), 0);
  assert.equal(cfg.read(PciConfig.INTERRUPT_LINE, 1), 0);
  assert.equal(cfg.read(PciConfig.CACHE_LINE_SIZE, 1), 0);
  assert.equal(cfg.read(0x40, 1), 0xaa);
  assert.throws(() => cfg.read(0xfe, 4), RangeError);
  assert.throws(() => cfg.write(0, 0, 3), RangeError);
});
