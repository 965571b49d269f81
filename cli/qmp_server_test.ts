/**
 * The QMP sockets end to end without KVM: the real Worker and sockets, a fake machine behind the
 * shared commands, and the VM side served from this thread's event loop.
 */
import assert from "node:assert/strict";
import { QmpClient, QmpClientError } from "../examples/qmp_client.ts";
import { fakeMachine } from "./_monitor_fakes.ts";
import { MonitorCommands } from "./monitor_commands.ts";
import { runQmpCommand } from "./qmp_commands.ts";
import { parseQmpOption } from "./qmp_options.ts";
import { QmpListenError, QmpServer } from "./qmp_server.ts";
import { main } from "./main.ts";

/** A server on a fresh unix socket, its VM side served until the returned stop() is called. */
async function started() {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/qmp.sock`;
  const server = await QmpServer.start([parseQmpOption(`unix:${path},server=on,wait=off`)]);
  server.attach({});
  const events: string[] = [];
  const ends: string[] = [];
  const commands = new MonitorCommands(fakeMachine(), {
    event: (name, data) => {
      events.push(name);
      server.event(name, data);
    },
    end: (kind) => void ends.push(kind),
  });
  let running = true;
  const loop = (async () => {
    while (running) {
      await server.waitAsync(20);
      server.serve((name, args) => runQmpCommand(commands, name, args));
    }
  })();
  return {
    path,
    server,
    commands,
    events,
    ends,
    async stop() {
      running = false;
      await loop;
      await server.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** A raw connection: send bytes, read whole lines. */
async function raw(path: string) {
  const conn = await Deno.connect({ transport: "unix", path });
  const decoder = new TextDecoder();
  let pending = "";
  const buffer = new Uint8Array(1 << 16);
  return {
    conn,
    async send(text: string | Uint8Array) {
      const bytes = typeof text === "string" ? new TextEncoder().encode(text) : text;
      for (let n = 0; n < bytes.length;) n += await conn.write(bytes.subarray(n));
    },
    async line(): Promise<string> {
      for (;;) {
        const nl = pending.indexOf("\r\n");
        if (nl >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 2);
          return line;
        }
        const n = await conn.read(buffer);
        if (n === null) return "<EOF>";
        pending += decoder.decode(buffer.subarray(0, n), { stream: true });
      }
    },
  };
}

Deno.test("qmp socket: greeting, negotiation, errors in QEMU's shapes; bad JSON leaves the connection usable", async () => {
  const s = await started();
  try {
    const c = await raw(s.path);
    assert.match(
      await c.line(),
      /^\{"QMP": \{"version": \{"qemu": \{"micro": 0, "minor": 2, "major": 7\}, "package": "kvm-ts /,
    );
    await c.send('{"execute": "query-status"}\n');
    assert.equal(
      await c.line(),
      `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`,
    );
    await c.send('{"execute": "qmp_capabilities", "id": "n"}\nfoo\n');
    assert.equal(await c.line(), '{"return": {}, "id": "n"}');
    assert.equal(
      await c.line(),
      `{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'foo'"}}`,
    );
    await c.send('{"execute": "query-status", "id": {"x": [1]}}');
    assert.equal(
      await c.line(),
      '{"return": {"status": "running", "singlestep": false, "running": true}, "id": {"x": [1]}}',
    );
    await c.send('{"execute": "nope", "id": 2}{"execute": "memsave", "arguments": {"val": 1}}');
    assert.equal(
      await c.line(),
      '{"id": 2, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}',
    );
    assert.equal(
      await c.line(),
      `{"error": {"class": "GenericError", "desc": "Parameter 'size' is missing"}}`,
    );
    await c.send('{"execute": "stop"}\n');
    assert.match(
      await c.line(),
      /^\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "STOP"\}$/,
    );
    assert.equal(await c.line(), '{"return": {}}');
    await c.send('{"execute": "human-monitor-command", "arguments": {"command-line": "info status"}}');
    assert.equal(await c.line(), '{"return": "VM status: paused\\r\\n"}');
    c.conn.close();
  } finally {
    await s.stop();
  }
});

Deno.test("qmp socket: several clients; events reach the negotiated ones; one that disconnects mid-command harms nobody", async () => {
  const s = await started();
  try {
    using a = await QmpClient.connect({ path: s.path });
    using b = await QmpClient.connect({ path: s.path });
    const shy = await raw(s.path); // never negotiates: no events for it
    assert.match(await shy.line(), /"QMP"/);
    const gone = await raw(s.path);
    await gone.send('{"execute": "qmp_capabilities"}{"execute": "query-status"}{"execute": "stop"');
    gone.conn.close();
    await a.execute("stop");
    await b.waitEvent("STOP");
    await b.execute("cont");
    await a.waitEvent("RESUME");
    assert.deepEqual(a.events.map((e) => e.event), ["STOP", "RESUME"]);
    assert.deepEqual(await a.execute("query-status"), {
      status: "running",
      singlestep: false,
      running: true,
    });
    await shy.send('{"execute": "qmp_capabilities"}\n');
    assert.equal(await shy.line(), '{"return": {}}'); // nothing queued for it before negotiation
    await assert.rejects(
      () => a.execute("memsave", { val: "x", size: 1, filename: "/tmp/x" }),
      (e: QmpClientError) => {
        assert.equal(e.message, "Invalid parameter type for 'val', expected: integer");
        return true;
      },
    );
    shy.conn.close();
  } finally {
    await s.stop();
  }
});

Deno.test("qmp socket: a 100 MB line and a flood do not starve another client", async () => {
  const s = await started();
  try {
    using quiet = await QmpClient.connect({ path: s.path });
    const big = await raw(s.path);
    await big.line();
    await big.send('{"execute": "qmp_capabilities"}\n');
    await big.line();
    const sending = (async () => {
      await big.send('{"execute": "query-status", "id": "');
      const chunk = new Uint8Array(1 << 20).fill(0x61);
      for (let i = 0; i < 100; i++) await big.send(chunk);
      await big.send('"}\n{"execute": "query-version", "id": 9}\n');
    })();
    const flood = await raw(s.path);
    await flood.line();
    const flooding = flood.send(
      '{"execute": "qmp_capabilities"}' + '{"execute": "query-status"}'.repeat(20_000),
    );
    // Meanwhile the quiet client is answered.
    for (let i = 0; i < 5; i++) {
      assert.equal(
        (await quiet.execute("query-version") as { package: string }).package.slice(0, 6),
        "kvm-ts",
      );
    }
    await sending;
    assert.equal(
      await big.line(),
      '{"error": {"class": "GenericError", "desc": "JSON token size limit exceeded"}}',
    );
    assert.equal(
      await big.line(),
      '{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}',
    );
    assert.match(await big.line(), /^\{"return": \{"qemu": .*"id": 9\}$/);
    // The flood never reads its replies: the server stopped reading it (backpressure), and it is
    // stuck in its own write, not the server. Closing it frees it.
    big.conn.close();
    flood.conn.close();
    await flooding.catch(() => {});
    assert.deepEqual(await quiet.execute("query-status"), {
      status: "running",
      singlestep: false,
      running: true,
    });
  } finally {
    await s.stop();
  }
});

Deno.test("qmp socket: a path that cannot be bound and a port in use: one line naming it; nothing left behind", async () => {
  await assert.rejects(
    () => QmpServer.start([parseQmpOption("unix:/nonexistent/dir/q.sock,server=on,wait=off")]),
    (e: Error) => {
      assert.ok(e instanceof QmpListenError);
      assert.equal(
        e.message,
        "-qmp unix:/nonexistent/dir/q.sock,server=on,wait=off: Failed to bind socket to /nonexistent/dir/q.sock: No such file or directory",
      );
      return true;
    },
  );
  const dir = Deno.makeTempDirSync();
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const first = `unix:${dir}/first.sock,server=on,wait=off`;
  await assert.rejects(
    () =>
      QmpServer.start([parseQmpOption(first), parseQmpOption(`tcp:127.0.0.1:${port},server=on,wait=off`)]),
    new RegExp(
      `^Error: -qmp tcp:127.0.0.1:${port},server=on,wait=off: Failed to find an available port: Address already in use$`,
    ),
  );
  assert.deepEqual([...Deno.readDirSync(dir)], []); // the first socket, bound, was removed again
  // Through the front-end: status 1 and one line, before any KVM is needed.
  const err: string[] = [];
  const status = await main(["-qmp", `tcp:127.0.0.1:${port},server=on,wait=off`], {
    out: () => {},
    err: (t) => void err.push(t),
    console: () => {},
  });
  // Without KVM the front-end may refuse -qmp for the nested fallback instead; both are one line, status 1.
  assert.equal(status, 1);
  assert.equal(err.length, 1);
  assert.match(err[0], /-qmp/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("qmp options: QEMU's forms, and its words for bad ones", () => {
  assert.deepEqual(parseQmpOption("tcp:[::1]:4444,server=on,wait=off"), {
    text: "tcp:[::1]:4444,server=on,wait=off",
    kind: "tcp",
    host: "::1",
    port: 4444,
    wait: false,
  });
  assert.equal(
    parseQmpOption("unix:/tmp/a,,b.sock,server=on").kind === "unix" &&
      parseQmpOption("unix:/tmp/a,,b.sock,server=on").wait,
    true,
  );
  assert.throws(() => parseQmpOption("bogus:1"), /^Error: 'bogus:1' is not a valid char driver$/);
  assert.throws(
    () => parseQmpOption("tcp:127.0.0.1,server=on"),
    /^Error: parse error: tcp:127.0.0.1,server=on$/,
  );
  assert.throws(() => parseQmpOption("unix:/tmp/y.sock,server=on,foo=1"), /^Error: Invalid parameter 'foo'$/);
  assert.throws(() => parseQmpOption("unix:/tmp/y.sock"), /server=on/);
});
