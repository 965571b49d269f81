/**
 * QMP against a running guest: the built-in echo guest (it sleeps in `hlt` until COM1 input) under
 * this product, driven by one script; and the same script against QEMU 7.2 with the same guest,
 * the replies compared for shape and for every value that is deterministic. Needs KVM for our
 * side (the runner takes these into the nested VM where the host has none); QEMU uses KVM when it
 * can and TCG otherwise.
 */
import assert from "node:assert/strict";
import { ECHO, kvmAvailability, SMP } from "../mod.ts";
import { QmpClient } from "../examples/qmp_client.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`tests/qmp_guest_test.ts: guest runs skipped: ${KVM.reason}`);
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Starts `command` with `args`, waits for its QMP socket `path`, and connects. */
async function launch(command: string, args: string[], path: string) {
  const child = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  const output = child.output();
  let exited = false;
  child.status.then(() => exited = true);
  for (let i = 0;; i++) {
    try {
      return { child, output, client: await QmpClient.connect({ path }) };
    } catch (e) {
      if (exited || i > 600) {
        if (!exited) child.kill();
        const out = await output;
        throw new Error(
          `no QMP socket at ${path} (${command} exited ${out.code}): ${e}\n${
            new TextDecoder().decode(out.stderr)
          }`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

type Step = { execute: string; arguments?: Record<string, unknown>; events?: string[] };

/** The script: what it runs, and which events each command must produce before its reply. */
function script(dir: string): Step[] {
  return [
    { execute: "query-status" },
    { execute: "stop", events: ["STOP"] },
    { execute: "query-status" },
    { execute: "stop" },
    { execute: "pmemsave", arguments: { val: 0x10_0000, size: 64, filename: `${dir}/pmem` } },
    { execute: "memsave", arguments: { val: 0x10_0000, size: 64, filename: `${dir}/vmem` } },
    { execute: "memsave", arguments: { val: 0, size: 1, filename: `${dir}/x`, "cpu-index": 9 } },
    { execute: "pmemsave", arguments: { val: 0, size: 1, filename: "/nonexistent/dir/x" } },
    { execute: "query-cpus-fast" },
    { execute: "cont", events: ["RESUME"] },
    { execute: "query-status" },
    { execute: "system_powerdown", events: ["POWERDOWN"] },
    { execute: "human-monitor-command", arguments: { "command-line": "info status" } },
    { execute: "human-monitor-command", arguments: { "command-line": "bogus" } },
    { execute: "query-version" },
    { execute: "nope" },
    { execute: "query-status", arguments: { x: 1 } },
    { execute: "system_reset", events: ["RESET"] },
    { execute: "quit", events: ["SHUTDOWN"] },
  ];
}

/** Runs the script; every reply and every event (without timestamps), in order. */
async function run(client: QmpClient, steps: Step[]): Promise<unknown[]> {
  const log: unknown[] = [];
  for (const step of steps) {
    let reply: unknown;
    try {
      reply = { return: await client.execute(step.execute, step.arguments) };
    } catch (e) {
      reply = { error: { class: (e as { errorClass?: string }).errorClass, desc: (e as Error).message } };
    }
    for (const name of step.events ?? []) await client.waitEvent(name);
    for (const event of client.events.splice(0)) {
      assert.ok(Number.isInteger(event.timestamp.seconds) && Number.isInteger(event.timestamp.microseconds));
      log.push({ event: event.event, ...(event.data === undefined ? {} : { data: event.data }) });
    }
    log.push({ step: step.execute, reply });
  }
  return log;
}

/** `value` with what legitimately differs between two runs and two products replaced by its type. */
function deterministic(value: unknown, key = ""): unknown {
  if (key === "thread-id" && typeof value === "number" && value > 1) return "<tid>";
  if (key === "package" || key === "micro") return `<${typeof value}>`;
  if (Array.isArray(value)) return value.map((v) => deterministic(v));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, deterministic(v, k)]));
  }
  return value;
}

async function withEchoGuest<T>(fn: (dir: string, kernel: string) => Promise<T>): Promise<T> {
  const dir = Deno.makeTempDirSync();
  try {
    const kernel = `${dir}/echo.elf`;
    Deno.writeFileSync(kernel, ECHO);
    return await fn(dir, kernel);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

async function runOurs(dir: string, kernel: string, extra: string[] = []) {
  const path = `${dir}/ours.sock`;
  const { client, output } = await launch(Deno.execPath(), [
    ...[
      "run",
      "--allow-ffi",
      "--allow-read",
      "--allow-write",
      "--allow-sys",
      "--allow-run",
      "--allow-env",
      "--allow-net",
    ],
    ...[MAIN, "-m", "32M", "-kernel", kernel, "-serial", "null", "-reboot", ...extra],
    ...["-qmp", `unix:${path},server=on,wait=off`],
  ], path);
  const log = await run(client, script(dir));
  client.close();
  const out = await output;
  const pmem = Deno.readFileSync(`${dir}/pmem`);
  const vmem = Deno.readFileSync(`${dir}/vmem`);
  return { log, code: out.code, stderr: new TextDecoder().decode(out.stderr), pmem, vmem, path };
}

Deno.test({
  name:
    "qmp guest: the script against this product with the echo guest; status, stop/cont, memory, events, quit",
  ignore: !KVM.available,
  async fn() {
    await withEchoGuest(async (dir, kernel) => {
      const ours = await runOurs(dir, kernel);
      assert.equal(ours.code, 0, ours.stderr);
      assert.deepEqual(ours.pmem, ECHO.subarray(0, 64)); // the image is loaded at 1 MiB
      assert.deepEqual(ours.vmem, ECHO.subarray(0, 64)); // no paging: virtual is physical
      assert.throws(() => Deno.statSync(ours.path), Deno.errors.NotFound); // the socket file is gone
      const log = deterministic(ours.log) as {
        step?: string;
        reply?: unknown;
        event?: string;
        data?: unknown;
      }[];
      assert.deepEqual(log.find((l) => l.step === "query-cpus-fast")?.reply, {
        return: [{
          "thread-id": "<tid>",
          props: { "core-id": 0, "thread-id": 0, "socket-id": 0 },
          "qom-path": "/machine/unattached/device[0]",
          "cpu-index": 0,
          target: "x86_64",
        }],
      });
      assert.deepEqual(log.at(-2), { event: "SHUTDOWN", data: { guest: false, reason: "host-qmp-quit" } });
    });
  },
});

Deno.test({
  name: "qmp guest: -smp 2 stops and resumes both vCPUs and lists two CPUs",
  ignore: !KVM.available,
  async fn() {
    await withEchoGuest(async (dir, kernel) => {
      const ours = await runOurs(dir, kernel, ["-smp", "2"]);
      assert.equal(ours.code, 0, ours.stderr);
      const cpus = (ours.log.find((l) => (l as { step?: string }).step === "query-cpus-fast") as {
        reply: { return: { "cpu-index": number; "thread-id": number }[] };
      }).reply.return;
      assert.deepEqual(cpus.map((c) => c["cpu-index"]), [0, 1]);
      assert.ok(cpus.every((c) => c["thread-id"] > 0));
    });
  },
});

const QEMU = "qemu-system-x86_64";
function qemuAvailable(): boolean {
  try {
    return new Deno.Command(QEMU, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "qmp guest: the same script against QEMU 7.2 and this product: same shapes, same deterministic values",
  ignore: !KVM.available || !qemuAvailable(),
  async fn() {
    await withEchoGuest(async (dir, kernel) => {
      const path = `${dir}/qemu.sock`;
      const accel = KVM.available ? "kvm" : "tcg";
      const { client, output } = await launch(QEMU, [
        ...["-accel", accel, "-machine", "pc", "-nodefaults", "-display", "none", "-m", "32M"],
        ...["-kernel", kernel, "-serial", "null", "-qmp", `unix:${path},server=on,wait=off`],
      ], path);
      const theirs = await run(client, script(dir));
      client.close();
      await output;
      const ours = await runOurs(dir, kernel);
      assert.deepEqual(deterministic(ours.log), deterministic(theirs));
    });
  },
});

Deno.test({
  name: "qmp guest: SIGTERM and SIGHUP end the run with SHUTDOWN host-signal, status 0 and one line, as QEMU",
  ignore: !KVM.available || !qemuAvailable(),
  async fn() {
    await withEchoGuest(async (dir, kernel) => {
      const ending = async (command: string, args: string[], path: string, signal: Deno.Signal) => {
        const { child, client, output } = await launch(command, [
          ...args,
          ...["-kernel", kernel, "-serial", "null", "-qmp", `unix:${path},server=on,wait=off`],
        ], path);
        await client.execute("query-status"); // the run is up and answering
        child.kill(signal);
        const event = await client.waitEvent("SHUTDOWN");
        client.close();
        const out = await output;
        const lines = new TextDecoder().decode(out.stderr).trimEnd().split("\n");
        return { data: event.data, code: out.code, lines };
      };
      const accel = KVM.available ? "kvm" : "tcg";
      const qemuArgs = ["-accel", accel, "-machine", "pc", "-nodefaults", "-display", "none", "-m", "32M"];
      const ourArgs = ["run", "--allow-all", MAIN, "-m", "32M"];
      for (const [signal, number] of [["SIGTERM", 15], ["SIGHUP", 1]] as const) {
        const theirs = await ending(QEMU, qemuArgs, `${dir}/qemu.sock`, signal);
        const ours = await ending(Deno.execPath(), ourArgs, `${dir}/ours.sock`, signal);
        assert.deepEqual(theirs.data, { guest: false, reason: "host-signal" });
        assert.deepEqual(ours.data, theirs.data);
        assert.equal(ours.code, theirs.code);
        // QEMU: "qemu-system-x86_64: terminating on signal 15 from pid …"; ours cannot know the sender.
        assert.match(theirs.lines.at(-1)!, new RegExp(`terminating on signal ${number} from pid`));
        assert.deepEqual(ours.lines, [`kvm-ts: terminating on signal ${number}`]);
      }
    });
  },
});

Deno.test({
  name: "qmp guest: -S holds every vCPU before its first instruction (-smp 1 and 2) until cont",
  ignore: !KVM.available,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "kvmts-qmp-S-" });
    try {
      Deno.writeFileSync(`${dir}/smp.bin`, SMP); // it prints on its first steps, then the APs report
      for (const cpus of ["1", "2"]) {
        const path = `${dir}/q${cpus}.sock`;
        const serial = `${dir}/serial${cpus}.txt`;
        const { client, output } = await launch(Deno.execPath(), [
          ...["run", "--allow-all", MAIN, "-smp", cpus, "-kernel", `${dir}/smp.bin`, "-S"],
          ...["-serial", `file:${serial}`, "-qmp", `unix:${path},server=on,wait=off`],
        ], path);
        assert.deepEqual(await client.execute("query-status"), {
          status: "prelaunch",
          singlestep: false,
          running: false,
        });
        // Held: however long we look, the guest has not printed (every vCPU thread is up by now).
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(Deno.readTextFileSync(serial), "", `-smp ${cpus}`);
        await client.execute("cont");
        const out = await output;
        client.close();
        assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
        assert.match(Deno.readTextFileSync(serial), new RegExp(`smp: all ${cpus} CPUs reported`));
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
