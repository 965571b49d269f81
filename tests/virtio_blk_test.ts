/**
 * virtio-blk and virtio-rng under a real Linux, end to end, through the front-end as a user runs it:
 * Debian's kernel with a busybox initramfs that loads virtio_pci, virtio_blk, ext4 and virtio-rng,
 * three PCI devices given on the command line in QEMU's syntax —
 *
 * ```
 * main.ts -m 256M -kernel … -initrd … -append "console=ttyS0 quiet panic=-1" \
 *   -device virtio-rng-pci \
 *   -drive id=ro,file=RO.img,format=raw,if=none,readonly=on -device virtio-blk-pci,drive=ro,serial=ro-disk \
 *   -drive file=RW.img,format=raw,if=virtio
 * ```
 *
 * — and a shell on the console. An ext4 image made on the host with `mke2fs -d` holds a 1 MiB file
 * of random bytes: the guest's sha256sum of it must match the host's; the guest writes a file,
 * syncs, powers off through ACPI S5, and `debugfs` reads the file back from the image on the host.
 * The read-only drive shows `ro` = 1 and refuses writes, its image unchanged; `/dev/hwrng` gives
 * 4096 bytes; the BARs Linux sees are the ones the board assigned, with no complaint in dmesg.
 *
 * Needs a hardware-style KVM (vmx or svm): elsewhere it skips, saying why, and `deno task test` runs
 * it inside the nested KVM VM.
 *
 * @module
 */

import assert from "node:assert/strict";
import { SHELL_PROMPT } from "../examples/build_initramfs.ts";
import { hostKvm } from "../kvm/mod.ts";
import { commandMissing } from "../kvm/_testing.ts";
import { PcBoard } from "../machine/pc/pc_board.ts";
import { escape, GuestConsole, retryNestedStalls, tag, tagged } from "./_guest_console.ts";
import {
  linuxArgs,
  linuxKvmSkip,
  missingLinuxGuest,
  newestKernel,
  powerOff,
  randomBytes,
  reachShell,
  readBusybox,
  sha256,
  writeInitramfs,
} from "./_linux_guest.ts";

const KERNEL = newestKernel();
const busybox = readBusybox();
const KVM = hostKvm();
/** The modules the guest loads (dependencies resolved from the kernel's modules.dep). */
const WANTED = ["virtio_pci", "virtio_blk", "virtio_rng", "crc32c_generic", "ext4"];

const skip = missingLinuxGuest(KERNEL, busybox) ??
  commandMissing("mke2fs", "apt-get install e2fsprogs", ["-V"]) ??
  commandMissing("debugfs", "apt-get install e2fsprogs", ["-V"]) ??
  linuxKvmSkip(KVM);
if (skip) console.log(`tests/virtio_blk_test.ts: virtio Linux boots skipped: ${skip}`);

function run(cmd: string, args: string[]): string {
  const out = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).outputSync();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, `${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

/** What the guest writes, and the test expects back from the image. */
const GUEST_LINES = 5000;
function guestFileText(): string {
  return Array.from({ length: GUEST_LINES }, (_, i) => `${i + 1}`).join("\n") + "\n";
}

Deno.test({
  name:
    "Linux: virtio-blk reads a host-made ext4 image, writes back through fdatasync, honours readonly=on; virtio-rng feeds /dev/hwrng",
  ignore: skip !== undefined,
  sanitizeResources: false,
  fn: retryNestedStalls(async () => {
    const dir = await Deno.makeTempDir({ prefix: "kvm-ts-virtio-" });
    try {
      // The disks: a 1 MiB random file in an ext4 image, and a copy of it for the read-only drive.
      const random = randomBytes(1 << 20);
      await Deno.mkdir(`${dir}/content`);
      await Deno.writeFile(`${dir}/content/random.bin`, random);
      const rw = `${dir}/rw.img`;
      const ro = `${dir}/ro.img`;
      Deno.writeFileSync(rw, new Uint8Array());
      Deno.truncateSync(rw, 16 << 20);
      run("mke2fs", ["-q", "-F", "-t", "ext4", "-d", `${dir}/content`, rw]);
      Deno.copyFileSync(rw, ro);
      const roBefore = await sha256(Deno.readFileSync(ro));
      const expected = await sha256(random);
      // Uncompressed, as in linux_shell_test.ts: gzip ones stalled more often inside the nested VM.
      const initrd = `${dir}/initramfs.cpio`;
      await writeInitramfs(initrd, busybox!, KERNEL!, WANTED);
      const devices = [
        // Both notify paths in one machine: an eventfd (the vCPU on a thread of its own) for the
        // read-only disk, an MMIO exit for the entropy device; the other disk takes the default.
        // Both io_uring ways: the read-only disk's data copied inside the submission, the other's
        // by io_uring's kernel workers (the inline default is the other tests').
        "-device",
        "virtio-rng-pci,ioeventfd=off",
        "-drive",
        `id=ro,file=${ro},format=raw,if=none,readonly=on,aio=io_uring`,
        "-device",
        "virtio-blk-pci,drive=ro,serial=ro-disk,ioeventfd=on",
        "-drive",
        `file=${rw},format=raw,if=virtio,aio=threads`,
      ];
      // The BARs the board assigns (the same board, without KVM, from the same devices).
      using board = await PcBoard.create({
        ramSize: 256n << 20n,
        pciDevices: [
          { type: "virtio-rng-pci", entropy: () => {} },
          {
            type: "virtio-blk-pci",
            backing: { size: 512n, readOnly: true, read() {}, write() {}, flush() {} },
          },
          {
            type: "virtio-blk-pci",
            backing: { size: 512n, readOnly: false, read() {}, write() {}, flush() {} },
          },
        ],
      });
      const bar4 = board.pciDevices.map((d) => `0x${d.fn.barAddress(4)!.toString(16).padStart(16, "0")}`);

      const cmdline = "console=ttyS0 quiet panic=-1";
      const started = performance.now();
      await using guest = new GuestConsole(linuxArgs(KERNEL!, initrd, cmdline, devices));
      let at = await reachShell(guest);
      const booted = performance.now();

      const facts = await guest.command(
        [
          "mkdir -p /rw /ro",
          tagged("disks", "$(for d in /sys/block/vd*; do echo ${d##*/}:$(cat $d/serial):$(cat $d/ro); done)"),
          tagged(
            "bars",
            "$(for s in 02 03 04; do sed -n 5p /sys/bus/pci/devices/0000:00:$s.0/resource; done)",
          ),
          tagged(
            "complaints",
            "$(dmesg | grep -i -e 'no space' -e 'failed to assign' -e 'BAR.*reassign' -e 'virtio.*error')",
          ),
          tagged("msix", "$(grep -c 'PCI-MSI' /proc/interrupts)"),
          tagged("hwrng", "$(head -c 4096 /dev/hwrng | wc -c)"),
          tagged("rngcurrent", "$(cat /sys/class/misc/hw_random/rng_current)"),
        ].join("; "),
        at,
      );
      at = facts.end;
      const out = facts.output;
      // -device first, then -drive if=virtio: the read-only disk probes first.
      assert.deepEqual(tag(out, "disks").trim().split(/\s+/), ["vda:ro-disk:1", "vdb::0"], out);
      const bars = tag(out, "bars").trim().split("\n").map((l) => l.trim().split(/\s+/)[0]);
      assert.deepEqual(bars, bar4, `Linux moved a BAR:\n${out}`);
      assert.equal(tag(out, "complaints"), "", `dmesg complains:\n${guest.text}`);
      assert.ok(Number(tag(out, "msix")) >= 3, `no MSI-X interrupts:\n${out}`);
      assert.equal(tag(out, "hwrng").trim(), "4096", out);
      assert.match(tag(out, "rngcurrent"), /virtio_rng/, out);

      // The read-only drive: mounts read-only, reads right, refuses writes.
      const roCheck = await guest.command(
        [
          "mount -t ext4 -o ro /dev/vda /ro",
          tagged("rosum", "$(sha256sum /ro/random.bin)"),
          tagged("rowrite", "$(dd if=/dev/zero of=/dev/vda bs=512 count=1 2>&1 && echo WROTE)"),
          tagged("rofile", "$(echo x 2>&1 > /ro/new && echo WROTE)"),
          "umount /ro",
        ].join("; "),
        at,
      );
      at = roCheck.end;
      assert.equal(tag(roCheck.output, "rosum").split(/\s+/)[0], expected, roCheck.output);
      assert.doesNotMatch(tag(roCheck.output, "rowrite"), /WROTE/, roCheck.output);
      assert.doesNotMatch(roCheck.output, /@rofile=WROTE@/, roCheck.output);

      // The writable drive: reads the host's file, writes one back, syncs, powers off.
      const rwCheck = await guest.command(
        [
          "mount -t ext4 /dev/vdb /rw",
          tagged("sum", "$(sha256sum /rw/random.bin)"),
          tagged("speed", "$(time dd if=/dev/vdb of=/dev/null bs=1M 2>&1 | tail -3 | tr '\\n' ' ')"),
          `seq 1 ${GUEST_LINES} > /rw/newfile`,
          "sync",
          "umount /rw",
          tagged("done", "ok"),
        ].join("; "),
        at,
      );
      at = rwCheck.end;
      assert.equal(tag(rwCheck.output, "sum").split(/\s+/)[0], expected, rwCheck.output);
      assert.equal(tag(rwCheck.output, "done"), "ok", rwCheck.output);
      console.log(
        `  boot to shell ${((booted - started) / 1000).toFixed(1)} s; dd of vdb: ${
          tag(rwCheck.output, "speed")
        }`,
      );
      await powerOff(guest, at);

      // Back on the host: the guest's file is in the image; the read-only image did not change.
      assert.equal(run("debugfs", ["-R", "cat /newfile", rw]), guestFileText());
      assert.equal(await sha256(Deno.readFileSync(ro)), roBefore);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }),
});

/**
 * The INTx path, without MSI-X (`pci=nomsi`): the virtio interrupts come through INTA# on the
 * shared level lines, routed by the DSDT's `_PRT` under ACPI and by the MP table with `acpi=off`.
 */
for (const acpi of [true, false]) {
  Deno.test({
    name: `Linux: virtio-blk and virtio-rng over INTx (pci=nomsi${
      acpi ? "" : ", acpi=off: the MP table's routing"
    })`,
    ignore: skip !== undefined,
    sanitizeResources: false,
    fn: retryNestedStalls(async () => {
      const dir = await Deno.makeTempDir({ prefix: "kvm-ts-virtio-intx-" });
      try {
        const random = randomBytes(256 << 10);
        await Deno.mkdir(`${dir}/content`);
        await Deno.writeFile(`${dir}/content/random.bin`, random);
        const img = `${dir}/disk.img`;
        Deno.writeFileSync(img, new Uint8Array());
        Deno.truncateSync(img, 8 << 20);
        run("mke2fs", ["-q", "-F", "-t", "ext4", "-d", `${dir}/content`, img]);
        const initrd = `${dir}/initramfs.cpio`;
        await writeInitramfs(initrd, busybox!, KERNEL!, WANTED);
        const cmdline = `console=ttyS0 quiet panic=-1 pci=nomsi${acpi ? "" : " acpi=off"}`;
        await using guest = new GuestConsole(
          linuxArgs(KERNEL!, initrd, cmdline, [
            "-device",
            "virtio-rng-pci",
            "-drive",
            `file=${img},format=raw,if=virtio,readonly=on`,
          ]),
        );
        let at = (await guest.waitFor(new RegExp(escape(SHELL_PROMPT)), 0, "the shell prompt")).end;
        const facts = await guest.command(
          [
            "mkdir -p /d",
            "mount -t ext4 -o ro /dev/vda /d",
            tagged("sum", "$(sha256sum /d/random.bin)"),
            tagged("hwrng", "$(head -c 4096 /dev/hwrng | wc -c)"),
            tagged("irqs", "$(grep virtio /proc/interrupts)"),
            tagged("msix", "$(grep -c PCI-MSI /proc/interrupts)"),
            tagged("mproute", "$(dmesg | grep -c 'PCI->APIC IRQ transform: INT A')"),
          ].join("; "),
          at,
        );
        at = facts.end;
        const out = facts.output;
        assert.equal(tag(out, "sum").split(/\s+/)[0], await sha256(random), out);
        assert.equal(tag(out, "hwrng").trim(), "4096", out);
        assert.equal(tag(out, "msix"), "0", out);
        // Slot 2 (rng) INTA# → IRQ 10, slot 3 (blk) → IRQ 11, level-triggered on the IOAPIC.
        assert.match(tag(out, "irqs"), /^\s*10:.*IO-APIC\s+10-fasteoi\s+virtio0/m, out);
        assert.match(tag(out, "irqs"), /^\s*11:.*IO-APIC\s+11-fasteoi\s+virtio1/m, out);
        // With acpi=off the MP table routed both INTA# (Linux says so per device).
        if (!acpi) assert.equal(tag(out, "mproute"), "2", out);
        // Without ACPI there is no S5 to power off through: reboot, which ends the run (-no-reboot).
        await guest.type(acpi ? "poweroff -f\r" : "reboot -f\r");
        await guest.waitFor(
          acpi ? /reboot: Power down/ : /reboot: Restarting system|machine restart/,
          at,
          "the end of the run",
        );
        assert.equal(await guest.status(), 0, guest.text.slice(at));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }),
  });
}
