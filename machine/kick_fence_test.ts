import assert from "node:assert/strict";
import { KickFence } from "./kick_fence.ts";

Deno.test("an open fence runs every kick and stays open, also after a kick that throws", () => {
  const cells = new Int32Array(new SharedArrayBuffer(16));
  const fence = new KickFence(cells, 2);
  let kicks = 0;
  fence.kickUnlessClosed(() => kicks++);
  assert.throws(() =>
    fence.kickUnlessClosed(() => {
      throw new Error("tgkill failed");
    }), /tgkill failed/);
  fence.kickUnlessClosed(() => kicks++);
  assert.equal(kicks, 2);
  assert.deepEqual([...cells], [0, 0, 0, 0], "only its own cell is used, and it is open");
});

Deno.test("after close no kick runs, on either side's view of the buffer; closing twice is harmless", () => {
  const cells = new Int32Array(new SharedArrayBuffer(8));
  const worker = new KickFence(cells, 0);
  const vm = new KickFence(new Int32Array(cells.buffer), 0);
  vm.close();
  vm.close();
  let kicks = 0;
  worker.kickUnlessClosed(() => kicks++);
  assert.equal(kicks, 0);
  assert.equal(cells[1], 0, "the neighbouring cell is untouched");
});

Deno.test("close waits for a kick in progress in another thread", async () => {
  const cells = new Int32Array(new SharedArrayBuffer(12));
  // A Worker enters a kick, says so in cell 1, dawdles, and marks the kick finished in cell 2.
  const source = `
    import { KickFence } from ${JSON.stringify(new URL("./kick_fence.ts", import.meta.url).href)};
    self.onmessage = (e) => {
      const cells = new Int32Array(e.data);
      new KickFence(cells, 0).kickUnlessClosed(() => {
        Atomics.store(cells, 1, 1);
        Atomics.notify(cells, 1);
        Atomics.wait(cells, 2, 0, 50);
        Atomics.store(cells, 2, 1);
      });
      self.postMessage("kick done");
    };`;
  const worker = new Worker(`data:application/javascript,${encodeURIComponent(source)}`, { type: "module" });
  try {
    const done = new Promise((resolve) => worker.onmessage = resolve);
    worker.postMessage(cells.buffer);
    const started = Atomics.waitAsync(cells, 1, 0);
    if (started.async) await started.value;
    new KickFence(cells, 0).close();
    assert.equal(Atomics.load(cells, 2), 1, "close returned only after the kick had finished");
    assert.equal(Atomics.load(cells, 0), 2, "and left the fence closed");
    await done;
  } finally {
    worker.terminate();
  }
});
