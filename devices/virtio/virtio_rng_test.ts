import assert from "node:assert/strict";
import { ByteRam, DriverQueue } from "./_test_util.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./virtqueue.ts";
import { VirtioDevice, type VirtioDeviceModel, VirtioFeature, VirtioStatus } from "./virtio_device.ts";
import { VIRTIO_RNG_MAX_CHUNK, VirtioRng } from "./virtio_rng.ts";

function setup() {
  const ram = new ByteRam(0x4_0000);
  let counter = 0;
  const rng = new VirtioRng({ entropy: (b) => b.forEach((_, i) => b[i] = (counter++ * 13) & 0xff) });
  const dev = new VirtioDevice(rng, { memory: ram });
  dev.setDriverFeatures(VirtioFeature.VERSION_1);
  dev.setStatus(VirtioStatus.FEATURES_OK);
  const q = dev.queues[0];
  q.descAddr = 0x1000n;
  q.driverAddr = 0x2000n;
  q.deviceAddr = 0x3000n;
  dev.enableQueue(0);
  return { ram, dev, driver: new DriverQueue(ram, 8, 0x1000n, 0x2000n, 0x3000n) };
}

Deno.test("VirtioRng: fills the writable buffers from the entropy source", () => {
  const { ram, dev, driver } = setup();
  driver.setDesc(0x1000n, 0, {
    addr: 0x8000n,
    len: 3,
    flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
    next: 1,
  });
  driver.setDesc(0x1000n, 1, { addr: 0x9000n, len: 2, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  driver.offer(0);
  dev.notifyQueue(0);
  assert.deepEqual(driver.usedElem(0), { id: 0, len: 5 });
  assert.deepEqual([...ram.bytes.subarray(0x8000, 0x8003), ...ram.bytes.subarray(0x9000, 0x9002)], [
    0,
    13,
    26,
    39,
    52,
  ]);
});

Deno.test("VirtioRng: a readable-only chain gets 0 bytes; a huge request gets one chunk", () => {
  const { dev, driver } = setup();
  driver.setDesc(0x1000n, 0, { addr: 0x8000n, len: 16, flags: 0, next: 0 });
  driver.setDesc(0x1000n, 1, { addr: 0x1_0000n, len: 0x3_0000, flags: VIRTQ_DESC_F_WRITE, next: 0 });
  driver.offer(0);
  driver.offer(1);
  dev.notifyQueue(0);
  assert.deepEqual(driver.usedElem(0), { id: 0, len: 0 });
  assert.deepEqual(driver.usedElem(1), { id: 1, len: VIRTIO_RNG_MAX_CHUNK });
  assert.throws(() => new VirtioRng({ entropy: 5 as unknown as () => void }), TypeError);
});

Deno.test("VirtioRng state: no model state; the device's queue state carries it across a load", () => {
  const rng: VirtioDeviceModel = new VirtioRng({ entropy: (b) => b.fill(7) });
  assert.equal(rng.saveState, undefined, "nothing of its own: the entropy source is the host's");
  const dev = new VirtioDevice(rng, { memory: new ByteRam(16) });
  assert.deepEqual(dev.saveState().model, {});
});
