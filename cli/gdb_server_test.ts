import assert from "node:assert/strict";
import { GdbServer } from "./gdb_server.ts";

Deno.test("gdb server: a VM thread slow to take loses nothing: the connection, then every byte in order", async () => {
  const server = await GdbServer.start("127.0.0.1", 0);
  try {
    const doorbell = new SharedArrayBuffer(8);
    // Nobody polls: the WAITING cell stays 0, so a ring never writes the (absent) eventfd.
    server.attach({ doorbell: { buffer: doorbell, index: 0, waitingIndex: 1, eventfd: -1 } });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      const sent = ["+$qSupported:xmlRegisters=i386#6a", "$vMustReplyEmpty#3a", "$?#3f"];
      for (const packet of sent) {
        await conn.write(new TextEncoder().encode(packet));
        // Longer than the Worker's wait for an empty slot (1 s), as a VM thread still creating the
        // VM under the nested VM's emulator was: the piece waiting must not be overwritten.
        await new Promise((r) => setTimeout(r, 1200));
      }
      const news: string[] = [];
      let bytes = "";
      for (let tries = 0; bytes.length < sent.join("").length && tries < 200; tries++) {
        const item = server.take();
        if (item === null) await new Promise((r) => setTimeout(r, 50));
        else if (item.kind === "bytes") bytes += new TextDecoder().decode(item.bytes);
        else news.push(item.kind);
        if (item?.kind === "bytes" && news.length === 0) news.push("bytes first");
      }
      assert.deepEqual(news, ["connected"]);
      assert.equal(bytes, sent.join(""));
    } finally {
      conn.close();
    }
  } finally {
    await server.close();
  }
});
