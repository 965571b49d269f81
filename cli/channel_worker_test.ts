import assert from "node:assert/strict";
import { ChannelServer, ChannelWorker, type ListenFailure } from "./channel_worker.ts";
import { QmpChannel } from "./qmp_channel.ts";

type Message = { kind: "listen"; channel: SharedArrayBuffer } | { kind: "echo"; text: string };
type Report = { kind: "listening"; port: number } | { kind: "failed"; message: string } | {
  kind: "news";
  text: string;
};

/** A module Worker made of `body` (which sees `self`, `QmpChannel` and `post`). */
function workerUrl(body: string): URL {
  const channel = JSON.stringify(new URL("./qmp_channel.ts", import.meta.url).href);
  const source = `import { QmpChannel } from ${channel};\nconst post = (m) => self.postMessage(m);\n${body}`;
  return new URL(`data:application/javascript,${encodeURIComponent(source)}`);
}

class Refused extends Error {
  constructor(readonly failure: ListenFailure) {
    super(`${failure.kind}: ${failure.message}`);
  }
}
const refuse = (failure: ListenFailure) => new Refused(failure);

// Listens at once; echoes through the channel with a kick; reports and closes on "close".
const ECHO_WORKER = workerUrl(`
  let channel, wake;
  self.onmessage = ({ data }) => {
    if (data.kind === "listen") { channel = new QmpChannel(data.channel); post({ kind: "listening", port: 7 }); }
    else if (data.kind === "attach") wake = data.doorbell;
    else if (data.kind === "echo") {
      channel.post(data.text);
      channel.kickUnlessClosed(() => { if (wake) Atomics.add(new Int32Array(wake.buffer), wake.index, 1); });
      post({ kind: "news", text: data.text });
    } else if (data.kind === "close") { post({ kind: "closed" }); }
  };`);

Deno.test("start hands back the listening report; the channel, attach and later reports work; close is idempotent", async () => {
  const later: Report[] = [];
  const { worker, listening } = await ChannelWorker.start<Message, Report>(
    ECHO_WORKER,
    (channel) => ({ kind: "listen", channel }),
    refuse,
    (report) => later.push(report),
  );
  try {
    assert.deepEqual(listening, { kind: "listening", port: 7 });
    const bell = new Int32Array(new SharedArrayBuffer(12));
    // Nobody polls: the WAITING cell (2) stays 0, so a ring never writes the (absent) eventfd.
    worker.attach({
      doorbell: { buffer: bell.buffer as SharedArrayBuffer, index: 1, waitingIndex: 2, eventfd: -1 },
    });
    worker.send({ kind: "echo", text: "hello" });
    await worker.waitAsync(10_000);
    assert.equal(worker.channel.take(), "hello");
    // The Worker posts, then rings: the ring may land a moment after the post is seen.
    for (let waited = 0; Atomics.load(bell, 1) === 0 && waited < 10_000; waited += 5) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(bell[1], 1, "the Worker rang the doorbell it was attached to");
    worker.fenceKicks();
    worker.send({ kind: "echo", text: "again" });
    await worker.waitAsync(10_000);
    assert.equal(worker.channel.take(), "again");
    assert.equal(bell[1], 1, "no kick after fenceKicks");
    while (later.length < 2) await new Promise((resolve) => setTimeout(resolve, 1));
    assert.deepEqual(later.map((r) => r.kind), ["news", "news"]);
  } finally {
    const first = worker.close();
    assert.equal(worker.close(), first, "a second close settles with the first");
    await first;
  }
});

Deno.test("a failed report becomes the caller's error and the Worker is ended", async () => {
  const url = workerUrl(`self.onmessage = () => post({ kind: "failed", message: "port in use" });`);
  await assert.rejects(
    ChannelWorker.start<Message, Report>(url, (channel) => ({ kind: "listen", channel }), refuse),
    (e: unknown) =>
      e instanceof Refused && e.failure.kind === "failed" && e.failure.message === "port in use",
  );
});

Deno.test("a Worker that dies, or reports something else first, is refused as a worker error", async () => {
  const dies = workerUrl(`self.onmessage = () => { throw new Error("boom"); };`);
  await assert.rejects(
    ChannelWorker.start<Message, Report>(dies, (channel) => ({ kind: "listen", channel }), refuse),
    (e: unknown) =>
      e instanceof Refused && e.failure.kind === "worker-error" && /boom/.test(e.failure.message),
  );
  const early = workerUrl(`self.onmessage = () => post({ kind: "news", text: "hi" });`);
  await assert.rejects(
    ChannelWorker.start<Message, Report>(early, (channel) => ({ kind: "listen", channel }), refuse),
    /worker-error: it reported "news" before listening/,
  );
});

Deno.test("close ends a Worker that never reports closed", async () => {
  const url = workerUrl(
    `self.onmessage = ({ data }) => { if (data.kind === "listen") post({ kind: "listening", port: 1 }); };`,
  );
  const { worker } = await ChannelWorker.start<Message, Report>(
    url,
    (channel) => ({ kind: "listen", channel }),
    refuse,
  );
  await worker.close(); // settles after the bounded wait, the Worker ended
  assert.equal(new QmpChannel(worker.channel.buffer).take(), null, "the channel is still empty");
});

/** A server of the echo Worker: what a subclass of ChannelServer sees. */
class EchoServer extends ChannelServer<Message> {
  static async start(): Promise<EchoServer> {
    const { worker } = await ChannelWorker.start<Message, Report>(
      ECHO_WORKER,
      (channel) => ({ kind: "listen", channel }),
      refuse,
    );
    return new EchoServer(worker);
  }

  echo(text: string): void {
    this.post({ kind: "echo", text });
  }

  next(): string | null {
    return this.takePosted();
  }
}

Deno.test("a ChannelServer subclass posts to its Worker, takes what it posted back, and closes", async () => {
  const server = await EchoServer.start();
  try {
    assert.equal(server.next(), null);
    server.echo("ping");
    await server.waitAsync(10_000);
    assert.equal(server.next(), "ping");
    assert.equal(server.next(), null, "taking empties the slot");
  } finally {
    await server.close();
    await server.close();
  }
});
