import assert from "node:assert/strict";
import fc from "fast-check";
import type { StateObject } from "../device_state.ts";
import { checkBadStates, checkRoundTrip, type StateHarness } from "../_state_test_util.ts";
import { ByteRam, DriverQueue } from "./_test_util.ts";
import { VIRTIO_NO_VECTOR, VirtioProtocolError, VIRTQ_DESC_F_NEXT, type Virtqueue } from "./virtqueue.ts";
import { VirtioDevice, type VirtioDeviceModel, VirtioFeature, VirtioStatus } from "./virtio_device.ts";

const S = VirtioStatus;

function setup(handle: (q: Virtqueue) => void = () => {}) {
  const ram = new ByteRam(0x2_0000);
  const log: string[] = [];
  let resets = 0;
  const model: VirtioDeviceModel = {
    name: "virtio-test",
    deviceId: 42,
    pciClassCode: 0xff0000,
    features: 1n << 3n,
    queueSizes: [8, 4],
    configSize: 0,
    readConfig: () => 0,
    handleQueue: (q) => handle(q),
    reset: () => void resets++,
  };
  const dev = new VirtioDevice(model, { memory: ram, log: (l) => log.push(l) });
  const interrupts: number[] = [];
  dev.interrupt = (v) => void interrupts.push(v);
  const q = dev.queues[0];
  q.descAddr = 0x1000n;
  q.driverAddr = 0x2000n;
  q.deviceAddr = 0x3000n;
  return {
    ram,
    dev,
    log,
    interrupts,
    resets: () => resets,
    driver: new DriverQueue(ram, 8, 0x1000n, 0x2000n, 0x3000n),
  };
}

function negotiate(dev: VirtioDevice, features = VirtioFeature.VERSION_1) {
  dev.setStatus(S.ACKNOWLEDGE | S.DRIVER);
  dev.setDriverFeatures(features);
  dev.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
}

Deno.test("VirtioDevice: features offered and negotiated; FEATURES_OK needs VERSION_1 and freezes them", () => {
  const { dev, log } = setup();
  assert.equal(dev.hostFeatures, (1n << 3n) | (1n << 28n) | (1n << 29n) | (1n << 32n));
  dev.setDriverFeatures((1n << 3n) | (1n << 40n));
  assert.equal(dev.driverFeatures, 1n << 3n, "unoffered bits dropped");
  dev.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.equal(dev.status, S.ACKNOWLEDGE | S.DRIVER, "FEATURES_OK refused without VERSION_1");
  assert.match(log[0], /VERSION_1/);
  dev.setDriverFeatures(VirtioFeature.VERSION_1 | VirtioFeature.EVENT_IDX);
  dev.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.equal(dev.status & S.FEATURES_OK, S.FEATURES_OK);
  assert.equal(dev.setDriverFeatures(VirtioFeature.VERSION_1), false);
  assert.equal(dev.driverFeatures, VirtioFeature.VERSION_1 | VirtioFeature.EVENT_IDX);
});

Deno.test("VirtioDevice: a protocol error in a handler sets NEEDS_RESET, logs once, interrupts, and stops the device", () => {
  let calls = 0;
  const { dev, log, interrupts, driver } = setup((q) => {
    calls++;
    q.pop();
  });
  negotiate(dev);
  dev.configVector = 1;
  dev.enableQueue(0);
  dev.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
  driver.setDesc(0x1000n, 0, { addr: 0x8000n, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 0 }); // a loop
  driver.offer(0);
  dev.notifyQueue(0);
  assert.equal(calls, 1);
  assert.equal(dev.status & S.DEVICE_NEEDS_RESET, S.DEVICE_NEEDS_RESET);
  assert.ok(dev.broken);
  assert.deepEqual(interrupts, [1], "the configuration vector");
  assert.equal(dev.isr, 3);
  assert.equal(dev.configGeneration, 1);
  assert.equal(log.length, 1);
  assert.match(log[0], /^virtio-test: queue 0: descriptor loop .*needs a reset$/);
  dev.notifyQueue(0);
  assert.equal(calls, 1, "a broken device ignores notifications");
  dev.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
  assert.ok(dev.status & S.DEVICE_NEEDS_RESET, "the driver cannot clear NEEDS_RESET");
  dev.reset();
  assert.equal(dev.broken, false);
  assert.equal(dev.status, 0);
  assert.equal(dev.queues[0].enabled, false);
});

Deno.test("VirtioDevice: any exception from a handler is contained", () => {
  const { dev, log } = setup(() => {
    throw new TypeError("bug");
  });
  negotiate(dev);
  dev.enableQueue(0);
  dev.notifyQueue(0);
  assert.match(log[0], /internal error: bug/);
  assert.ok(dev.status & S.DEVICE_NEEDS_RESET);
  const { dev: dev2 } = setup(() => {
    throw new VirtioProtocolError("bad request");
  });
  dev2.enableQueue(0);
  dev2.notifyQueue(0);
  assert.equal(dev2.status & S.DEVICE_NEEDS_RESET, 0, "without VERSION_1 negotiated there is no status bit");
  assert.ok(dev2.broken);
});

Deno.test("VirtioDevice: a ring outside RAM at enable needs a reset; the queue stays off", () => {
  const { dev, log } = setup();
  negotiate(dev);
  dev.queues[0].deviceAddr = 0x1_fffcn;
  dev.enableQueue(0);
  assert.equal(dev.queues[0].enabled, false);
  assert.ok(dev.status & S.DEVICE_NEEDS_RESET);
  assert.match(log[0], /device area at 0x1fffc/);
});

Deno.test("VirtioDevice: used buffers raise the queue's vector; reset restores vectors and calls the model", () => {
  const { dev, interrupts, driver, resets } = setup((q) => {
    for (let c = q.pop(); c; c = q.pop()) q.push(c, 0);
  });
  negotiate(dev);
  dev.queues[0].msixVector = 0;
  dev.enableQueue(0);
  dev.notifyQueue(0);
  assert.deepEqual(interrupts, [], "nothing used, no interrupt");
  driver.setDesc(0x1000n, 0, { addr: 0x8000n, len: 4, flags: 0, next: 0 });
  driver.offer(0);
  dev.notifyQueue(0);
  assert.deepEqual(interrupts, [0]);
  assert.equal(dev.takeIsr(), 1);
  assert.equal(dev.isr, 0);
  dev.configChanged();
  assert.equal(interrupts.length, 1, "no config interrupt before DRIVER_OK");
  dev.reset();
  assert.equal(dev.queues[0].msixVector, VIRTIO_NO_VECTOR);
  assert.equal(dev.configVector, VIRTIO_NO_VECTOR);
  assert.equal(resets(), 1);
});

Deno.test("VirtioDevice: serviceQueue runs backend work under the same guard, interrupting when it used buffers", () => {
  const { dev, interrupts, driver, log } = setup();
  assert.equal(dev.serviceQueue(0, () => 1), undefined, "queue not enabled");
  negotiate(dev);
  dev.queues[0].msixVector = 3;
  dev.enableQueue(0);
  assert.equal(dev.serviceQueue(0, (q) => q.pop()), null, "nothing available");
  assert.deepEqual(interrupts, []);
  driver.setDesc(0x1000n, 0, { addr: 0x8000n, len: 4, flags: 0, next: 0 });
  driver.offer(0);
  assert.equal(
    dev.serviceQueue(0, (q) => {
      q.push(q.pop()!, 0);
      return "done";
    }),
    "done",
  );
  assert.deepEqual(interrupts, [3]);
  assert.equal(
    dev.serviceQueue(0, () => {
      throw new VirtioProtocolError("bad frame");
    }),
    undefined,
  );
  assert.ok(dev.status & S.DEVICE_NEEDS_RESET);
  assert.match(log.at(-1)!, /virtio-test: bad frame; the device needs a reset/);
  assert.equal(dev.serviceQueue(0, () => 1), undefined, "broken until reset");
});

Deno.test("VirtioDevice: the model's attach hook gets its device once", () => {
  const seen: VirtioDevice[] = [];
  const model: VirtioDeviceModel = {
    name: "virtio-attach",
    deviceId: 43,
    pciClassCode: 0,
    features: 0n,
    queueSizes: [4],
    configSize: 0,
    readConfig: () => 0,
    handleQueue: () => {},
    attach: (d) => void seen.push(d),
  };
  const dev = new VirtioDevice(model, { memory: new ByteRam(16) });
  assert.deepEqual(seen, [dev]);
});

// ---- Device state (issue 11) ----

type DevOp =
  | { features: bigint }
  | { status: number }
  | { enable: number }
  | { offer: number }
  | { notify: number }
  | { takeIsr: true }
  | { configChanged: true }
  | { needsReset: true }
  | { reset: true }
  | { disabled: boolean };

const devOp: fc.Arbitrary<DevOp> = fc.oneof(
  fc.record({
    features: fc.constantFrom(
      VirtioFeature.VERSION_1,
      VirtioFeature.VERSION_1 | VirtioFeature.EVENT_IDX,
      0n,
      (1n << 64n) - 1n,
    ),
  }),
  fc.record({ status: fc.oneof(fc.constantFrom(0x03, 0x0b, 0x0f, 0x8f), fc.integer({ min: 0, max: 0xff })) }),
  fc.record({ enable: fc.constantFrom(0, 1) }),
  fc.record({ offer: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ notify: fc.constantFrom(0, 0, 1) }),
  fc.constant({ takeIsr: true as const }),
  fc.constant({ configChanged: true as const }),
  fc.constant({ needsReset: true as const }),
  fc.constant({ reset: true as const }),
  fc.record({ disabled: fc.boolean() }),
);

function devHarness(): StateHarness<DevOp> {
  // The model fills each chain's first byte and pushes it, as virtio-rng does.
  const s = setup((q) => {
    for (let chain = q.pop(); chain; chain = q.pop()) {
      chain.write(0, new Uint8Array([0x5a]));
      q.push(chain, 1);
    }
  });
  for (let i = 0; i < 8; i++) {
    s.driver.setDesc(0x1000n, i, { addr: 0x8000n + 0x100n * BigInt(i), len: 16, flags: 2, next: 0 });
  }
  const rings = () => s.ram.bytes.slice(0, 0x9000);
  return {
    device: {
      saveState: () => ({ device: s.dev.saveState(), ram: rings() }),
      loadState: (state) => {
        s.dev.loadState(state.device as StateObject);
        s.ram.bytes.set(state.ram as Uint8Array);
        s.driver.availIdx = s.ram.view.getUint16(0x2002, true);
      },
    },
    step(op) {
      const dev = s.dev;
      if ("features" in op) return dev.setDriverFeatures(op.features);
      if ("status" in op) dev.setStatus(op.status);
      else if ("enable" in op) dev.enableQueue(op.enable);
      else if ("offer" in op) s.driver.offer(op.offer);
      else if ("notify" in op) dev.notifyQueue(op.notify);
      else if ("takeIsr" in op) return dev.takeIsr();
      else if ("configChanged" in op) dev.configChanged();
      else if ("needsReset" in op) dev.needsReset("test");
      else if ("reset" in op) dev.reset();
      else dev.disabled = op.disabled;
      return [dev.status, dev.driverFeatures, dev.isr, dev.configGeneration, dev.broken];
    },
    observe: () => [s.interrupts.splice(0), s.log.splice(0), s.ram.bytes.slice(0x3000, 0x3050)],
  };
}

Deno.test("VirtioDevice state: a loaded device negotiates, serves queues and interrupts as the saved one", () => {
  checkRoundTrip(devHarness, devOp, { numRuns: 200 });
});

Deno.test("VirtioDevice state: bad states are refused by field; the device is unchanged", () => {
  const h = devHarness();
  for (const op of [{ features: VirtioFeature.VERSION_1 }, { status: 0x0b }, { enable: 0 }] as DevOp[]) {
    h.step(op);
  }
  const dev: StateHarness<never> = {
    device: { saveState: () => (h.device.saveState().device as StateObject), loadState: (st) => void st },
    step: () => undefined,
    observe: () => undefined,
  };
  const state = dev.device.saveState();
  const real = setup().dev;
  real.loadState(state); // a fresh device of the same model takes it
  assert.deepEqual(real.saveState(), state);
  assert.ok(checkBadStates({ ...dev, device: real }, "virtio-test") >= 40);
  const bad: [StateObject, RegExp][] = [
    [{ ...state, driverFeatures: 1n << 4n }, /"driverFeatures" has 0x10, not offered by this device/],
    [{ ...state, isr: 4 }, /"isr" is 0x4, has bits outside 0x3/],
    [{ ...state, queues: (state.queues as StateObject[]).slice(0, 1) }, /"queues" has 1 elements, not 2/],
    [{ ...state, model: 3 }, /"model" is the number 3, not an object/],
  ];
  for (const [s, message] of bad) assert.throws(() => real.loadState(s), message);
  assert.deepEqual(real.saveState(), state);
});
