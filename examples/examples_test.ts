/**
 * Runs each example as a subprocess, as a user would, and checks the key lines of its output. The
 * KVM runs skip, with the reason printed once, where /dev/kvm cannot be opened; the check that an
 * example without `--allow-ffi` fails with one line runs everywhere.
 *
 * @module
 */

import assert from "node:assert/strict";
import { assertDirtyPages } from "../kvm/_testing.ts";
import { kvmAvailability } from "../mod.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`examples/examples_test.ts: KVM examples skipped: ${KVM.reason}`);
const ifKvm = { ignore: !KVM.available };

const EXAMPLES = ["custom_board.ts", "readonly_toggle.ts", "dirty_pages.ts"];
const ALL_PERMISSIONS = ["--allow-ffi", "--allow-read", "--allow-run", "--allow-write"];

/** Runs `examples/<name>` with `permissions`; returns its exit code and output. */
async function runExample(name: string, permissions: string[] = ALL_PERMISSIONS) {
  const script = decodeURIComponent(new URL(`./${name}`, import.meta.url).pathname);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

/** The stdout of a successful run of `name`, as lines. */
async function linesOf(name: string): Promise<string[]> {
  const { code, stdout, stderr } = await runExample(name);
  assert.equal(code, 0, `${name} exited ${code}:\n${stdout}\n${stderr}`);
  return stdout.split("\n");
}

Deno.test({
  name:
    "custom_board: the guest prints the ROM message and three counter reads; mtree -f marks RAM and ROM KVM",
  ...ifKvm,
  async fn() {
    const lines = await linesOf("custom_board.ts");
    assert.ok(
      lines.includes(String.raw`guest printed: "Hello from board.rom! counter: 1 2 3\n"`),
      lines.join("\n"),
    );
    assert.ok(lines.includes("counter register read 3 times"));
    assert.ok(lines.includes("guest stored the counter values in RAM at 0x2000: 1, 2, 3"));
    // info mtree -f: " KVM" after the ranges that are memslots (RAM and ROM), not after MMIO.
    const flat = lines.filter((l) => / \(prio 0, (ram|rom|i\/o)\): (board|counter)/.test(l));
    assert.deepEqual(flat, [
      "  0000000000000000-000000000000ffff (prio 0, ram): board.ram KVM",
      "  00000000000d0000-00000000000d0fff (prio 0, i/o): counter",
      "  00000000000f0000-00000000000f0fff (prio 0, rom): board.rom KVM",
    ]);
    assert.deepEqual(lines.filter((l) => l.startsWith("memslot:")), [
      "memslot: slot 0 flags 0 gpa 0x0 size 0x10000 -> ok",
      "memslot: slot 1 flags READONLY gpa 0xf0000 size 0x1000 -> ok",
      "memslot: slot 0 flags 0 gpa 0x0 size 0x0 (delete) -> ok",
      "memslot: slot 1 flags READONLY gpa 0xf0000 size 0x0 (delete) -> ok",
    ]);
  },
});

Deno.test({
  name:
    "readonly_toggle: each flip is a size-0 delete and a re-create; stores to the read-only page are dropped",
  ...ifKvm,
  async fn() {
    const lines = await linesOf("readonly_toggle.ts");
    assert.deepEqual(lines.filter((l) => l.startsWith("memslot:")), [
      "memslot: slot 0 flags 0 gpa 0x0 size 0x8000 -> ok",
      "memslot: slot 1 flags 0 gpa 0x8000 size 0x1000 -> ok",
      "memslot: slot 1 flags 0 gpa 0x8000 size 0x0 (delete) -> ok",
      "memslot: slot 1 flags READONLY gpa 0x8000 size 0x1000 -> ok",
      "memslot: slot 1 flags READONLY gpa 0x8000 size 0x0 (delete) -> ok",
      "memslot: slot 1 flags 0 gpa 0x8000 size 0x1000 -> ok",
      "memslot: slot 0 flags 0 gpa 0x0 size 0x0 (delete) -> ok",
      "memslot: slot 1 flags 0 gpa 0x8000 size 0x0 (delete) -> ok",
    ]);
    assert.deepEqual(lines.filter((l) => l.startsWith("guest:")), [
      "guest: wrote 1, read back 1: landed",
      "guest: wrote 2, read back 2: landed",
      "guest: wrote 3, read back 2: dropped",
      "guest: wrote 4, read back 2: dropped",
      "guest: wrote 5, read back 5: landed",
      "guest: wrote 6, read back 6: landed",
    ]);
    assert.deepEqual(lines.filter((l) => l.startsWith("exit:")), [
      "exit: MMIO write 0x8000/1 = 3 (read-only slot); scratch still holds 2",
      "exit: MMIO write 0x8000/1 = 4 (read-only slot); scratch still holds 2",
    ]);
    assert.ok(lines.includes("guest halted; scratch holds 6"));
  },
});

Deno.test({
  name: "dirty_pages: the dirty pages are those the guest wrote (and no page it did not run), round by round",
  ...ifKvm,
  async fn() {
    const lines = await linesOf("dirty_pages.ts");
    assert.ok(lines.includes("memslot: slot 0 flags LOG_DIRTY_PAGES gpa 0x0 size 0x40000 -> ok"));
    const rounds = lines.filter((l) => l.includes("dirty pages:"))
      .map((l) => l.replace(/^.*dirty pages: /, "").split(", ").map(Number));
    assert.equal(rounds.length, 2, lines.join("\n"));
    const codePage = 1; // the guest's code at 0x1000
    assertDirtyPages(rounds[0], [3, 5, 40], [codePage], "round 1");
    assertDirtyPages(rounds[1], [7, 20, 63], [codePage], "round 2");
    assert.deepEqual(lines.filter((l) => l.includes("before the sync")), [
      "  before the sync, takeDirtyPages(): []",
      "  before the sync, takeDirtyPages(): []",
    ]);
    // The written pages hold the page numbers the guest wrote (the code page, if listed, its code).
    assert.ok(
      lines.some((l) =>
        /^ {2}at (0x1000, )?0x3000, 0x5000, 0x28000; their first bytes: (\d+,)?3,5,40$/.test(l)
      ),
      lines.join("\n"),
    );
  },
});

for (const name of EXAMPLES) {
  Deno.test(`${name} without --allow-ffi exits 1 with one line saying so`, async () => {
    const { code, stdout, stderr } = await runExample(name, ["--allow-read"]);
    assert.equal(code, 1, `${stdout}\n${stderr}`);
    const errorLines = stderr.trimEnd().split("\n");
    assert.equal(errorLines.length, 1, stderr);
    assert.match(errorLines[0], new RegExp(`^${name.replace(".ts", "")}: .*--allow-ffi`));
  });
}
