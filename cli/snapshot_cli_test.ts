import assert from "node:assert/strict";
import { main } from "./main.ts";
import { nestedSnapshotRefusal, parseDuration, parseSnapshotFlags } from "./snapshot_cli.ts";

const given = { ramSize: 128n << 20n, cpus: 1 };

Deno.test("durations", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("2s"), 2000);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("3"), 3000);
  assert.equal(parseDuration("1m"), 60_000);
  for (const bad of ["", "soon", "-1s", "2h", "1e3ms"]) {
    assert.throws(() => parseDuration(bad), RangeError, bad);
  }
});

Deno.test("snapshot flags: pairs, restore with the -m and -smp given, no guest beside a restore", () => {
  assert.deepEqual(parseSnapshotFlags({ "snapshot-to": "d", "snapshot-after": "2s" }, given), {
    to: { dir: "d", afterMs: 2000 },
  });
  assert.deepEqual(parseSnapshotFlags({ restore: "d" }, given), { restore: { dir: "d" } });
  assert.deepEqual(parseSnapshotFlags({ restore: "d", m: "128M", smp: "1" }, given), {
    restore: { dir: "d", ramSize: 128n << 20n, cpus: 1 },
  });
  assert.throws(() => parseSnapshotFlags({ "snapshot-to": "d" }, given), /go together/);
  assert.throws(() => parseSnapshotFlags({ "snapshot-after": "1s" }, given), /go together/);
  assert.throws(() => parseSnapshotFlags({ restore: "d", kernel: "k" }, given), /drop -kernel/);
  assert.throws(
    () => parseSnapshotFlags({ restore: "d", device: ["loader,file=x,addr=0"] }, given),
    /loader/,
  );
  assert.throws(
    () => parseSnapshotFlags({ "snapshot-to": "d", "snapshot-after": "later" }, given),
    /--snapshot-after: "later"/,
  );
  assert.equal(nestedSnapshotRefusal({ restore: { dir: "d" } }, "no /dev/kvm"), undefined);
  assert.match(nestedSnapshotRefusal({ to: { dir: "d", afterMs: 1 } }, "no /dev/kvm")!, /not written back/);
});

Deno.test("the command line refuses bad snapshot flags in one line, status 2", async () => {
  const lines: string[] = [];
  const io = { out: (t: string) => lines.push(t), err: (t: string) => lines.push(t), console: () => {} };
  assert.equal(await main(["--snapshot-to", "/nonexistent/x"], io), 2);
  assert.equal(await main(["--restore", "/nonexistent/x", "-kernel", "k"], io), 2);
  assert.equal(await main(["--snapshot-to", "x", "--snapshot-after", "soon"], io), 2);
  assert.equal(lines.length, 3);
  assert.ok(lines.every((l) => l.startsWith("error: ") && !l.includes("\n")), lines.join("\n"));
});
