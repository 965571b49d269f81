/**
 * The gdb stub against a running guest, driven by Debian's own `gdb` in batch mode: the guest
 * `tests/guests/gdb_demo.S` started held (`-S -gdb tcp::PORT`); single steps to one of its ELF
 * symbols, registers and memory read, a register written, and the exit status the changed path
 * produces; a breakpoint on that symbol and a hardware watchpoint (a real KVM only); and `info
 * threads` with `-smp 2`. Needs KVM (the runner takes it into the nested VM where the host has none)
 * and gdb; the same gdb scripts were checked against QEMU 7.2's stub (the values asserted are QEMU's).
 */
import assert from "node:assert/strict";
import { kvmAvailability, SMP } from "../mod.ts";
import { hostKvm } from "../kvm/host_kvm.ts";

const KVM = kvmAvailability();
const GDB = await new Deno.Command("gdb", { args: ["--version"], stdout: "null", stderr: "null" }).output()
  .then((o) => o.success, () => false);
const INSIDE = Deno.env.get("KVM_TS_NESTED") === "1";
const skip = !KVM.available ? KVM.reason : !GDB ? "gdb is not installed (apt-get install gdb)" : undefined;
// Inside the nested KVM VM, QEMU 7.2's emulated SVM delivers single-steps but no breakpoint: an
// intercepted int3 reaches the guest and a DR0/DR7 breakpoint or watchpoint never fires (measured:
// the guest ran to its end past `hbreak compute`). Those two need a real KVM (docs/gdb-stub.md).
// kvm_pvm fires none either (measured: gdb's breakpoint on compute was run past to the exit).
const skipTraps = skip ??
  (INSIDE
    ? "inside the nested VM, whose emulated SVM fires no breakpoint or watchpoint"
    : hostKvm() === "software"
    ? "this host's KVM is kvm_pvm, which fires no guest breakpoint"
    : undefined);
if (skipTraps) console.log(`tests/gdb_guest_test.ts: breakpoint test skipped: ${skipTraps}`);
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const DEMO = new URL("./guests/gdb_demo.S", import.meta.url).pathname;

async function run(command: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

/** Assembles the demo guest in `dir`: its ELF (for gdb's symbols) and `demo.bin` (booted). */
async function buildDemo(dir: string): Promise<string> {
  await run("as", ["--64", "-o", `${dir}/demo.o`, DEMO]);
  await run("ld", ["-m", "elf_x86_64", "-Ttext", "0x100000", "-o", `${dir}/demo.elf`, `${dir}/demo.o`]);
  await run("objcopy", ["-O", "binary", `${dir}/demo.elf`, `${dir}/demo.bin`]);
  return `${dir}/demo.elf`;
}

/** A free TCP port on the loopback address. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Whether a socket listens on `port` (from /proc/net/tcp: local address, state 0A). */
async function listening(port: number): Promise<boolean> {
  const table = await Deno.readTextFile("/proc/net/tcp");
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  return table.split("\n").some((line) =>
    new RegExp(`^\\s*\\d+: [0-9A-F]{8}:${hex} [0-9A-F:]+ 0A `).test(line)
  );
}

/** Starts the product with `args`, then gdb with `commands` once the port answers; both outputs. */
async function debug(args: string[], elf: string | undefined, commands: string[]) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN, ...args, "-S", "-gdb", `tcp:127.0.0.1:${port}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const product = child.output();
  try {
    // Wait for the port to listen without connecting: a client that comes and goes is a debugger
    // that detached, and the guest would run.
    for (let i = 0; !(await listening(port)); i++) {
      if (i > 600) throw new Error(`the gdb port ${port} never opened`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const debuggerRun = new Deno.Command("gdb", {
      args: [
        "-batch",
        "-nx",
        ...["-ex", "set pagination off", "-ex", "set confirm off"],
        // Under the nested VM's emulator a reply can take seconds (gdb's default wait is 2 s).
        ...["-ex", "set remotetimeout 60", "-ex", `target remote 127.0.0.1:${port}`],
        ...commands.flatMap((c) => ["-ex", c]),
        ...(elf ? [elf] : []),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // A hang guard: gdb in batch mode may sit out a plain SIGTERM.
    const guard = setTimeout(() => {
      try {
        debuggerRun.kill("SIGKILL");
      } catch { /* ended */ }
    }, 90_000);
    const gdb = await debuggerRun.output().finally(() => clearTimeout(guard));
    // The guest should end once gdb has: give it a little while, then stop waiting.
    const late = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
    }, 30_000);
    const out = await product.finally(() => clearTimeout(late));
    const text = (b: Uint8Array) => new TextDecoder().decode(b);
    return { gdb: text(gdb.stdout) + text(gdb.stderr), status: out.code, stderr: text(out.stderr) };
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* ended */ }
    await product.catch(() => {});
  }
}

Deno.test({
  name:
    "gdb: a breakpoint on a symbol, registers read and written, a step, a hardware watchpoint, the changed exit",
  ignore: skipTraps !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-gdb-" });
    try {
      const elf = await buildDemo(dir);
      const { gdb, status, stderr } = await debug(["-kernel", `${dir}/demo.bin`], elf, [
        "break compute",
        "continue",
        "print/x $rip",
        "print/x $ebx",
        "stepi",
        "print/x $eax",
        "set $eax = 0x11",
        "watch *(int *)&counter",
        "continue",
        "print/x *(int *)&counter",
        "delete",
        "continue",
      ]);
      assert.match(gdb, /Breakpoint 1 at 0x100031/, gdb);
      assert.match(gdb, /Breakpoint 1, 0x0+100031 in compute \(\)/, gdb);
      assert.match(gdb, /\$1 = 0x100031\n/, gdb);
      assert.match(gdb, /\$2 = 0x10\n/, gdb); // the register the guest set before the call
      assert.match(gdb, /0x0+100033 in compute \(\)/, gdb); // one instruction on: mov %ebx,%eax
      assert.match(gdb, /\$3 = 0x10\n/, gdb);
      assert.match(gdb, /Hardware watchpoint 2: \*\(int \*\)&counter/, gdb);
      assert.match(gdb, /Old value = 0\nNew value = 67\n/, gdb); // 0x11 + 0x32: the path we changed
      assert.match(gdb, /\$4 = 0x43\n/, gdb);
      // The changed path writes 0x10 to isa-debug-exit: status 33 (67 untouched).
      assert.equal(status, 33, `${gdb}\n${stderr}`);
      assert.match(gdb, /exited with code 041|Remote connection closed/, gdb);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gdb: single steps to a symbol, registers and memory read, a register written, the changed exit",
  ignore: skip !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-gdb-" });
    try {
      const elf = await buildDemo(dir);
      const { gdb, status, stderr } = await debug(["-kernel", `${dir}/demo.bin`], elf, [
        "print/x $rip",
        ...["stepi", "stepi", "stepi", "stepi"], // cli; mov $0x90000,%esp; mov $0x10,%ebx; call compute
        "print/x $rip",
        "print/x $esp",
        "x/wx $esp",
        "print/x $ebx",
        "stepi",
        "print/x $eax",
        "set $eax = 0x11",
        "x/wx &counter",
        "continue",
      ]);
      assert.match(gdb, /\$1 = 0x100020\n/, gdb); // held at the Multiboot entry (-S)
      assert.match(gdb, /0x0+100031 in compute \(\)\n\$2 = 0x100031\n/, gdb);
      assert.match(gdb, /\$3 = 0x8fffc\n/, gdb); // the call pushed its return address…
      assert.match(gdb, /0x8fffc:\s+0x00100030\n/, gdb); // …the hlt after it
      assert.match(gdb, /\$4 = 0x10\n/, gdb);
      assert.match(gdb, /0x0+100033 in compute \(\)\n\$5 = 0x10\n/, gdb);
      assert.match(gdb, /0x100050 <counter>:\s+0x00000000\n/, gdb);
      assert.equal(status, 33, `${gdb}\n${stderr}`); // 0x11 + 0x32 is not 0x42: the other path
      assert.match(gdb, /exited with code 041/, gdb);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gdb: with -smp 2 each vCPU is a thread; the guest runs to its end once gdb continues",
  ignore: skip !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-gdb-" });
    try {
      await Deno.writeFile(`${dir}/smp.bin`, SMP);
      const { gdb, status, stderr } = await debug(["-smp", "2", "-kernel", `${dir}/smp.bin`], undefined, [
        "info threads",
        "continue",
      ]);
      assert.match(gdb, /\n\* 1 +Thread 1\.1 \(CPU#0 \[[a-z]+\]\)/, gdb);
      assert.match(gdb, /\n {2}2 +Thread 1\.2 \(CPU#1 \[[a-z]+\]\)/, gdb);
      assert.doesNotMatch(gdb, /\n {2}3 +Thread/, gdb);
      assert.equal(status, 0, `${gdb}\n${stderr}`); // the guest resets once both CPUs reported
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
