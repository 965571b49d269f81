/**
 * The nested KVM VM as its users see it: a command's output, status, directory and environment come
 * back; a writable share works; and on a timeout, an abort or a missing QEMU, the error is one line
 * and no QEMU process or temporary directory is left behind. These boot QEMU's emulator (≈10 s each)
 * and need no KVM on the host.
 */
import assert from "node:assert/strict";
import { findNestedKernel, NestedError, nestedMonitorCommand, QEMU_BINARY, runNested } from "./nested_vm.ts";
import { initScript, jobScript, shellQuote } from "./init_script.ts";

function missingPrerequisite(): string | undefined {
  try {
    new Deno.Command(QEMU_BINARY, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
  } catch {
    return `${QEMU_BINARY} not found (apt-get install qemu-system-x86)`;
  }
  try {
    findNestedKernel();
    Deno.statSync("/bin/busybox");
  } catch (error) {
    return (error as Error).message;
  }
  return undefined;
}
const missing = missingPrerequisite();
if (missing) console.log(`nested/nested_vm_test.ts: nested VM tests skipped: ${missing}`);
const ifNested = { ignore: missing !== undefined };

/** A run's QEMU process and share directory, as `onStart` reported them. */
type Started = { pid: number; share: string; log: string };

/**
 * What of `run` is still there: its QEMU process (unless only a zombie) and its share directory.
 * Processes are read through `ps`: Deno reads /proc only with every permission, which the test
 * runner does not grant.
 */
function leftovers(run: Started | undefined): string[] {
  assert.ok(run, "QEMU was started");
  const left: string[] = [];
  const state = ps(["-o", "stat=", "-p", String(run.pid)]).trim();
  if (state !== "" && !state.startsWith("Z")) left.push(`QEMU process ${run.pid}`);
  try {
    Deno.statSync(run.share);
    left.push(`share ${run.share}`);
  } catch { /* removed */ }
  return left;
}

/** The output of `ps ARGS…` (empty when no process matched). */
function ps(args: string[]): string {
  return new TextDecoder().decode(
    new Deno.Command("ps", { args, stdout: "piped", stderr: "null" }).outputSync().stdout,
  );
}

const decode = (bytes?: Uint8Array) => new TextDecoder().decode(bytes);

Deno.test("shellQuote: the shell reads back every word exactly", () => {
  const words = ["plain", "", "two words", "it's", `"$HOME" \`x\` \\n`, "ünï\tcode", "-n", "*", "a'b'c"];
  const out = new Deno.Command("sh", { args: ["-c", `printf '%s\\0' ${words.map(shellQuote).join(" ")}`] })
    .outputSync();
  assert.deepEqual(decode(out.stdout).split("\0").slice(0, -1), words);
});

Deno.test("the init loads the modules in order and holds nothing run-specific; the job runs where it was started", () => {
  const init = initScript(["modules/00-a.ko", "modules/01-b.ko"]);
  assert.ok(init.indexOf("modules/00-a.ko") < init.indexOf("modules/01-b.ko"));
  assert.ok(init.startsWith("#!/bin/busybox sh\n"));
  const job = jobScript({
    argv: ["deno", "test", "a b"],
    cwd: "/work/x y",
    env: { A: "1 2" },
    sharePath: "/tmp/s",
  });
  assert.match(job, /^cd '\/work\/x y' \|\| exit 126$/m);
  assert.match(job, /^export A='1 2'$/m);
  assert.match(job, /^deno test 'a b'$/m);
  assert.match(job, /^echo \$\? > \/tmp\/s\/status$/m);
  assert.match(job, /^stty raw -echo/m, "piped output passes unchanged");
});

Deno.test({
  name:
    "a command in the nested VM: its output, status, directory, environment, /dev/kvm and a writable share",
  ...ifNested,
  async fn() {
    let started: Started | undefined;
    const out = await Deno.makeTempDir({ prefix: "kvm-ts-nested-test-out-" });
    try {
      const result = await runNested({
        argv: [
          "sh",
          "-c",
          'echo "cwd=$(pwd) x=$X kvm=$(test -c /dev/kvm && echo yes)"; echo done > "$1"/f; exit 7',
          "-",
          out,
        ],
        cwd: "/usr",
        env: { X: "it's" },
        writable: [out],
        stdio: "piped",
        timeoutSeconds: 300,
        onStart: (run) => started = run,
      });
      assert.equal(result.status, 7);
      assert.equal(decode(result.output), "cwd=/usr x=it's kvm=yes\n");
      assert.equal(Deno.readTextFileSync(`${out}/f`), "done\n");
    } finally {
      Deno.removeSync(out, { recursive: true });
    }
    assert.deepEqual(leftovers(started), []);
  },
});

Deno.test({
  name: "a command that outlives its timeout: one line with the log's path; no QEMU, no share left",
  ...ifNested,
  async fn() {
    let started: Started | undefined;
    const error = await runNested({
      argv: ["sleep", "600"],
      stdio: "piped",
      timeoutSeconds: 25,
      onStart: (run) => started = run,
    }).catch((e) => e);
    assert.ok(error instanceof NestedError, String(error));
    assert.match(
      error.message,
      /^nested VM: the (command|VM) did not finish within 25 s \(console log: .*\.log\)$/,
    );
    assert.ok(!error.message.includes("\n"));
    assert.equal(error.log, started?.log);
    assert.ok(Deno.statSync(error.log!).isFile);
    assert.deepEqual(leftovers(started), []);
  },
});

Deno.test({
  name: "an aborted run kills QEMU and removes its share",
  ...ifNested,
  async fn() {
    let started: Started | undefined;
    const abort = new AbortController();
    const run = runNested({
      argv: ["sleep", "600"],
      stdio: "piped",
      signal: abort.signal,
      onStart: (run) => started = run,
    }).catch((e) => e);
    while (started === undefined) await new Promise((resolve) => setTimeout(resolve, 100));
    await new Promise((resolve) => setTimeout(resolve, 2000));
    assert.deepEqual(
      leftovers(started),
      [`QEMU process ${started.pid}`, `share ${started.share}`],
      "running",
    );
    abort.abort();
    const error = await run;
    assert.ok(error instanceof NestedError && /aborted/.test(error.message), String(error));
    assert.deepEqual(leftovers(started), []);
  },
});

Deno.test({
  name: "a VM that freezes (QEMU's `stop`) is killed once its kernel is quiet: one line, nothing left",
  ...ifNested,
  async fn() {
    let started: Started | undefined;
    const monitor = `${await Deno.makeTempDir()}/monitor.sock`;
    const run = runNested({
      argv: ["sleep", "600"],
      stdio: "piped",
      freezeSeconds: 12,
      monitorSocket: monitor,
      onStart: (run) => started = run,
    }).catch((e) => e);
    // Until the job runs: the kernel's sign of life is there, and it goes on while the job sleeps.
    while (!(started && Deno.readTextFileSync(started.log).includes("kvm-ts-nested: ready"))) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await new Promise((resolve) => setTimeout(resolve, 15_000));
    assert.deepEqual(leftovers(started), [`QEMU process ${started.pid}`, `share ${started.share}`], "alive");
    await nestedMonitorCommand(monitor, "stop", 200);
    const error = await run;
    assert.ok(error instanceof NestedError && error.frozen, String(error));
    const quiet =
      /^nested VM: froze: no sign of life from its kernel for (\d+) s, nor after a keyboard interrupt and an NMI, killed \(console log: .*\.log\)$/
        .exec(error.message);
    assert.ok(quiet, error.message);
    assert.ok(Number(quiet[1]) >= 12, `killed after ${quiet[1]} s of quiet, under the 12 s asked for`);
    assert.deepEqual(leftovers(started), []);
    Deno.removeSync(monitor.replace(/\/monitor.sock$/, ""), { recursive: true });
  },
});

Deno.test({
  name: "a quiet VM gets a keyboard interrupt before it counts as frozen; a sign of life after it goes on",
  ...ifNested,
  async fn() {
    // The job stops the init's sign of life (its `sleep 5`), waits for IRQ 1 (the i8042) to count
    // one more interrupt, which only the guard's wake-up sends, then lets the sign of life go on.
    const job = [
      "irq() { awk '$1 == \"1:\" { print $2 }' /proc/interrupts; }",
      "p=''; for d in /proc/[0-9]*; do",
      "  case \"$(tr '\\0' ' ' < $d/cmdline 2>/dev/null)\" in *'sleep 5 ') p=${d#/proc/};; esac",
      "done",
      '[ -n "$p" ] || { echo "no sign-of-life loop"; exit 3; }',
      "before=$(irq); kill -STOP $p",
      'i=0; while [ "$(irq)" = "$before" ]; do sleep 1; i=$((i + 1)); [ $i -lt 200 ] || exit 4; done',
      "kill -CONT $p; echo woken; sleep 15",
    ].join("\n");
    const quiets: number[] = [];
    const result = await runNested({
      argv: ["sh", "-c", job],
      stdio: "piped",
      freezeSeconds: 12,
      onWake: (quiet) => quiets.push(quiet),
    });
    const output = new TextDecoder().decode(result.output);
    assert.equal(result.status, 0, output);
    assert.match(output, /woken/);
    assert.equal(result.wakes, 1);
    assert.equal(quiets.length, 1);
    assert.ok(quiets[0] >= 12, `woken after ${quiets[0]} s of quiet, under the 12 s asked for`);
  },
});

Deno.test({
  name: "no QEMU: one line naming the packages to install, nothing left behind",
  ...ifNested,
  async fn() {
    const parent = await Deno.makeTempDir();
    const error = await runNested({
      argv: ["true"],
      qemu: "/nonexistent/qemu-system-x86_64",
      stdio: "piped",
      tempDir: parent,
    }).catch((e) => e);
    assert.ok(error instanceof NestedError, String(error));
    assert.equal(
      error.message,
      "/nonexistent/qemu-system-x86_64 not found: apt-get install qemu-system-x86 linux-image-amd64 busybox-static",
    );
    assert.deepEqual([...Deno.readDirSync(parent)], [], "the share directory is removed");
    Deno.removeSync(parent);
  },
});

Deno.test({
  name: "deno task nested stopped by SIGINT (Ctrl-C) or SIGTERM: QEMU killed, share removed, status 128+n",
  ...ifNested,
  async fn() {
    for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
      const tmp = await Deno.makeTempDir(); // TMPDIR of the tool: where its share goes
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-all",
          new URL("../cli/nested.ts", import.meta.url).pathname,
          "--",
          "sleep",
          "600",
        ],
        env: { TMPDIR: tmp },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let exited = false;
      const ended = child.output().finally(() => exited = true);
      let qemu: number | undefined;
      while (qemu === undefined && !exited) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        qemu = qemuChildrenOf(child.pid)[0];
      }
      if (qemu === undefined) {
        assert.fail(`the tool ended before starting QEMU: ${decode((await ended).stderr)}`);
      }
      Deno.kill(child.pid, signal); // (child.kill refuses once output() is pending)
      const out = await ended;
      assert.equal(out.code, status, decode(out.stderr));
      assert.match(decode(out.stderr), new RegExp(`^nested VM: interrupted by ${signal} \\(console log: `));
      assert.deepEqual(qemuChildrenOf(child.pid), [], "QEMU is gone");
      assert.equal(ps(["-o", "stat=", "-p", String(qemu)]).trim(), "", "QEMU is reaped");
      assert.deepEqual([...Deno.readDirSync(tmp)], [], "the share directory is removed");
      Deno.removeSync(tmp);
    }
  },
});

/** Live (not zombie) QEMU processes whose parent is `parent`. */
function qemuChildrenOf(parent: number): number[] {
  return ps(["--ppid", String(parent), "-o", "pid=,stat=,comm="]).split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([pid, stat, comm]) => pid && !stat.startsWith("Z") && QEMU_BINARY.startsWith(comm))
    .map(([pid]) => Number(pid));
}
