/**
 * virtio-blk's DISCARD and WRITE_ZEROES against QEMU 7.2: Debian's kernel boots under kvm-ts and
 * under QEMU (`-accel kvm`) with the same fully allocated 64 MiB raw image as
 * `-drive file=…,format=raw,if=virtio,discard=unmap`, and runs the same commands on its shell: it
 * prints the block layer's limits for the disk (from the device's configuration), discards 4 MiB
 * (busybox `blkdiscard`), zeroes 4 MiB in place and 4 MiB that may be unmapped (`fallocate` on the
 * device, tests/guest/falloc.c: Linux turns both into WRITE_ZEROES, without and with UNMAP), and
 * hashes the first 24 MiB. Both peers must print the same limits and the same hash — the one the
 * host expects — and leave the image with the same blocks allocated: 8 MiB fewer than before (the
 * discard and the unmapping zeroes free theirs, the in-place zeroes keep them).
 *
 * Needs gcc (the static falloc), QEMU and a hardware-style KVM; `deno task test` runs it in the
 * nested KVM VM where the host has none.
 *
 * @module
 */

import assert from "node:assert/strict";
import { hostKvm } from "../kvm/mod.ts";
import { commandMissing } from "../kvm/_testing.ts";
import { GuestConsole, retryNestedStalls, tag, tagged } from "./_guest_console.ts";
import { probeQemu, QEMU, QEMU_LINUX_CONSOLE } from "./_qemu.ts";
import {
  addStaticProgram,
  linuxArgs,
  linuxKvmSkip,
  missingLinuxGuest,
  newestKernel,
  powerOff,
  reachShell,
  readBusybox,
  sha256,
  writeInitramfs,
} from "./_linux_guest.ts";

const KERNEL = newestKernel();
const busybox = readBusybox();
const MIB = 1 << 20;
const IMAGE_MIB = 64;
const FILL = 0x5a;

const skip = missingLinuxGuest(KERNEL, busybox) ??
  commandMissing("gcc", "it builds the guest's static falloc") ?? linuxKvmSkip(hostKvm()) ??
  probeQemu().reason;
if (skip) console.log(`tests/linux_discard_vs_qemu_test.ts: skipped: ${skip}`);

/** The ranges the guest clears, in MiB: discarded, zeroed in place, zeroed and unmapped. */
const DISCARDED = [1, 5];
const ZEROED = [8, 12];
const PUNCHED = [16, 20];

/** The guest's commands: the disk's limits, the three operations, a hash of the first 24 MiB. */
const STEPS = [
  tagged(
    "limits",
    "$(cd /sys/block/vda/queue && cat discard_granularity discard_max_hw_bytes max_discard_segments " +
      "write_zeroes_max_bytes logical_block_size | tr '\\n' ' ')",
  ),
  `blkdiscard -o ${DISCARDED[0] * MIB} -l ${(DISCARDED[1] - DISCARDED[0]) * MIB} /dev/vda && echo discarded`,
  `/bin/falloc zero ${ZEROED[0] * MIB} ${(ZEROED[1] - ZEROED[0]) * MIB} /dev/vda && echo zeroed`,
  `/bin/falloc punch ${PUNCHED[0] * MIB} ${(PUNCHED[1] - PUNCHED[0]) * MIB} /dev/vda && echo punched`,
  tagged("sum", "$(dd if=/dev/vda bs=1M count=24 2>/dev/null | sha256sum | cut -d' ' -f1)"),
];

/** Boots the guest on a fresh copy of the image (QEMU's when `program` is given); what it printed and the image's blocks. */
async function runPeer(
  dir: string,
  initrd: string,
  program?: string,
): Promise<{ outputs: string[]; blocks: number; before: number }> {
  const image = `${dir}/disk-${program ? "qemu" : "ours"}.raw`;
  Deno.writeFileSync(image, new Uint8Array(IMAGE_MIB * MIB).fill(FILL));
  const before = Deno.statSync(image).blocks!;
  try {
    const drive = ["-drive", `file=${image},format=raw,if=virtio,discard=unmap`];
    const args = linuxArgs(KERNEL!, initrd, "console=ttyS0 quiet panic=-1", drive);
    const outputs: string[] = [];
    {
      await using guest = new GuestConsole(program ? [...QEMU_LINUX_CONSOLE, ...args] : args, { program });
      let at = await reachShell(guest);
      for (const step of STEPS) {
        const done = await guest.command(step, at);
        outputs.push(done.output);
        at = done.end;
      }
      await powerOff(guest, at);
    }
    return { outputs, blocks: Deno.statSync(image).blocks!, before };
  } finally {
    Deno.removeSync(image);
  }
}

Deno.test({
  name:
    "Linux discards and zeroes ranges of a virtio disk (discard=unmap) as under QEMU: limits, data, freed blocks",
  ignore: skip !== undefined,
  sanitizeResources: false,
  fn: retryNestedStalls(async () => {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-discard-" });
    try {
      const initrd = `${dir}/initramfs.cpio`;
      await writeInitramfs(initrd, busybox!, KERNEL!, ["virtio_pci", "virtio_blk"]);
      addStaticProgram(initrd, new URL("./guest/falloc.c", import.meta.url).pathname, "falloc", dir);

      const expected = new Uint8Array(24 * MIB).fill(FILL);
      for (const [from, to] of [DISCARDED, ZEROED, PUNCHED]) expected.fill(0, from * MIB, to * MIB);
      const expectedSum = await sha256(expected);

      const ours = await runPeer(dir, initrd);
      const theirs = await runPeer(dir, initrd, QEMU);
      const limits = (o: string[]) => tag(o[0], "limits").trim();
      console.log(
        `  limits (granularity, discard max, segments, write-zeroes max, block): ${limits(ours.outputs)}`,
      );
      assert.equal(limits(ours.outputs), limits(theirs.outputs), "the block layer's limits");
      for (const [i, word] of ["discarded", "zeroed", "punched"].entries()) {
        assert.match(ours.outputs[i + 1], new RegExp(word), ours.outputs[i + 1]);
        assert.match(theirs.outputs[i + 1], new RegExp(word), theirs.outputs[i + 1]);
      }
      assert.equal(tag(theirs.outputs[4], "sum"), expectedSum, "QEMU's guest read the expected bytes");
      assert.equal(tag(ours.outputs[4], "sum"), expectedSum, "our guest read the expected bytes");
      console.log(
        `  512-byte blocks: ${ours.before} → ${ours.blocks} (ours), ${theirs.before} → ${theirs.blocks} (QEMU)`,
      );
      assert.equal(ours.blocks, theirs.blocks, "the same blocks freed");
      assert.equal(
        ours.before - ours.blocks,
        8 * MIB / 512,
        "the discard and the unmapping zeroes freed 8 MiB",
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
});
