/**
 * Linux at its shell prompt with a virtio disk, snapshotted through the monitor, the first run
 * quit, and the snapshot restored in a new process with the same disk (issue 11): a command typed
 * afterwards runs, the file written before the snapshot reads back, a file written after it reaches
 * the disk, and the file system on the image is clean (e2fsck). Needs a hardware-style KVM (the
 * nested VM where there is none), the newest kernel in /boot, busybox and e2fsprogs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { commandMissing } from "../kvm/_testing.ts";
import { hostKvm } from "../kvm/mod.ts";
import { SHELL_PROMPT } from "../examples/build_initramfs.ts";
import { escape, GuestConsole, retryNestedStalls, tag, tagged } from "./_guest_console.ts";
import {
  linuxArgs,
  linuxKvmSkip,
  missingLinuxGuest,
  newestKernel,
  powerOff,
  reachShell,
  readBusybox,
  writeInitramfs,
} from "./_linux_guest.ts";

const KERNEL = newestKernel();
const busybox = readBusybox();
const WANTED = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

const skip = missingLinuxGuest(KERNEL, busybox) ??
  commandMissing("mke2fs", "apt-get install e2fsprogs", ["-V"]) ??
  commandMissing("e2fsck", "apt-get install e2fsprogs", ["-V"]) ??
  linuxKvmSkip(hostKvm());
if (skip) console.log(`tests/snapshot_linux_test.ts: skipped: ${skip}`);

function run(cmd: string, args: string[]): { ok: boolean; text: string } {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  const d = new TextDecoder();
  return { ok: out.success, text: d.decode(out.stdout) + d.decode(out.stderr) };
}

Deno.test({
  name:
    "Linux with a virtio disk, snapshotted at its shell and restored in a new process, runs on with its disk consistent",
  ignore: skip !== undefined,
  sanitizeResources: false,
  fn: retryNestedStalls(async () => {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-snap-linux-" });
    try {
      const disk = `${dir}/disk.img`;
      Deno.writeFileSync(disk, new Uint8Array());
      Deno.truncateSync(disk, 16 << 20);
      assert.ok(run("mke2fs", ["-q", "-F", "-t", "ext4", disk]).ok);
      const initrd = `${dir}/initramfs.cpio`;
      await writeInitramfs(initrd, busybox!, KERNEL!, WANTED);
      // Its transfers through io_uring's workers: the snapshot must wait for the ones in flight.
      const drive = ["-drive", `file=${disk},format=raw,if=virtio,aio=threads`];
      const snap = `${dir}/snap`;
      {
        await using guest = new GuestConsole(
          linuxArgs(KERNEL!, initrd, "console=ttyS0 quiet panic=-1", drive),
        );
        let at = await reachShell(guest);
        const before = await guest.command(
          "mkdir -p /rw; mount -t ext4 /dev/vda /rw; echo before-snapshot > /rw/a; sync; " +
            tagged("a", "$(cat /rw/a)"),
          at,
        );
        at = before.end;
        assert.equal(tag(before.output, "a"), "before-snapshot", before.output);
        await guest.type("\x01c");
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await guest.type(`snapshot save ${snap}\r`);
        await guest.waitFor(/snapshot: full snapshot in /, at, "the snapshot");
        await guest.type("\x01x"); // quit: the disk stays as it was at the snapshot
        assert.equal(await guest.status(), 0);
      }
      await using restored = new GuestConsole(["--restore", snap, ...drive]);
      await restored.type("\r");
      let at =
        (await restored.waitFor(new RegExp(escape(SHELL_PROMPT)), 0, "the shell prompt after the restore"))
          .end;
      const after = await restored.command(
        [
          tagged("a", "$(cat /rw/a)"),
          tagged("sum", "$((6*7))"),
          "echo after-restore > /rw/b",
          "sync",
          "umount /rw",
          tagged("done", "ok"),
        ].join("; "),
        at,
      );
      at = after.end;
      assert.equal(tag(after.output, "a"), "before-snapshot", after.output);
      assert.equal(tag(after.output, "sum"), "42", after.output);
      assert.equal(tag(after.output, "done"), "ok", after.output);
      await powerOff(restored, at);
      const fsck = run("e2fsck", ["-f", "-n", disk]);
      assert.ok(fsck.ok, `e2fsck:\n${fsck.text}`);
      const b = run("debugfs", ["-R", "cat /b", disk]);
      assert.match(b.text, /after-restore/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
});
