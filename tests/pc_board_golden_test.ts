/**
 * The PC board against QEMU 7.2's own `info mtree` of `-machine pc -accel kvm`: the memory address
 * space line for line, and every I/O line of the devices the board has, both ways. The same board
 * is checked twice: as `PcBoard` on any machine (the ` KVM` marks from the KVM listener on a
 * backend that accepts every memslot), and inside a running `PcMachine` with real memslots where
 * /dev/kvm exists. The golden files record the QEMU command that printed them
 * (tests/golden/capture_qemu.ts).
 */
import assert from "node:assert/strict";
import { kvmAvailability, PcBoard, PcMachine } from "../mod.ts";
import { blocks, fakeHostMemory, kvmListenerWithoutKvm, readGolden } from "./_golden.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`tests/pc_board_golden_test.ts: real-KVM variants skipped: ${KVM.reason}`);

/** `info mtree` text of a board, tree and flat, from either kind of board. */
interface Printed {
  mtree(options?: { flat?: boolean }): string;
}

/** The board without KVM, with the KVM listener's marks from a backend that accepts every slot. */
async function boardWithoutKvm(ramSize: bigint): Promise<Printed & Disposable> {
  const board = await PcBoard.create({
    ramSize,
    backings: { ram: fakeHostMemory(ramSize), bios: fakeHostMemory(0x40000n), rom: fakeHostMemory(0x20000n) },
  });
  board.memory.registerListener(kvmListenerWithoutKvm());
  return board;
}

/** The two ways to get the board, each a test variant. */
const VARIANTS = [
  { label: "PcBoard, no KVM", ignore: false, make: boardWithoutKvm },
  {
    label: "PcMachine, real memslots",
    ignore: !KVM.available,
    make: async (ramSize: bigint) => await PcMachine.create({ ramSize }),
  },
] as const;

/** Regions of QEMU's pc machine this board does not model (listed in the README). */
const NOT_MODELED = [/\): hpet$/];

function block(text: string, header: RegExp): string {
  const found = blocks(text, NOT_MODELED).find((b) => header.test(b));
  assert.ok(found, `no block matching ${header}`);
  return found;
}

for (
  const [label, size] of [["128M", 128n << 20n], ["256M", 256n << 20n], ["3584M", 3584n << 20n], [
    "8G",
    8n << 30n,
  ]] as const
) {
  for (const variant of VARIANTS) {
    Deno.test({
      name:
        `-m ${label} (${variant.label}): the memory address space equals QEMU's, tree and flat, KVM marks included`,
      ignore: variant.ignore,
      async fn() {
        using pc = await variant.make(size);
        const tree = pc.mtree();
        const flat = pc.mtree({ flat: true });
        const qemuTree = readGolden(`pc-${label}.mtree.txt`);
        const qemuFlat = readGolden(`pc-${label}.mtree-f.txt`);
        assert.equal(
          block(tree, /^address-space: cpu-memory-0\naddress-space: memory\n/),
          block(qemuTree, /^address-space: cpu-memory-0\naddress-space: memory\n/),
        );
        assert.equal(
          block(flat, /^FlatView #N\n AS "memory"/),
          block(qemuFlat, /^FlatView #N\n AS "memory"/),
        );
        for (const name of ["pc.ram", "pc.bios", "pci"]) {
          const header = new RegExp(`^memory-region: ${name.replace(".", "\\.")}\n`);
          assert.equal(block(tree, header), block(qemuTree, header));
        }
      },
    });
  }
}

for (const variant of VARIANTS) {
  Deno.test({
    name:
      `the I/O address space (${variant.label}): every line of the board's devices is QEMU's, and QEMU has none of theirs that we lack`,
    ignore: variant.ignore,
    async fn() {
      using pc = await variant.make(256n << 20n);
      for (
        // QEMU after SeaBIOS ran: the PIIX4 PM function is then at its PM base, as the board has it for
        // a -kernel guest (under -S it is still disabled at 0).
        const [ours, golden] of [[pc.mtree(), "pc-256M-devices-booted.mtree.txt"], [
          pc.mtree({ flat: true }),
          "pc-256M-devices-booted.mtree-f.txt",
        ]]
      ) {
        const io = block(ours, /(^address-space: I\/O\n|\n AS "I\/O")/).split("\n");
        const qemu = block(readGolden(golden), /(^address-space: I\/O\n|\n AS "I\/O")/).split("\n");
        // Device lines: everything but the headers and the `io` root's own filler ranges.
        const isDevice = (line: string) => /\): (?!io( @|$))/.test(line);
        const ourDevices = io.filter(isDevice);
        assert.ok(ourDevices.length >= 10, "the board maps its devices");
        assert.ok(ourDevices.some((l) => l.endsWith("): acpi-cnt")), "the ACPI PM block is mapped");
        for (const line of ourDevices) assert.ok(qemu.includes(line), `${golden}: QEMU has no line\n${line}`);
        const names = new Set(ourDevices.map((l) => l.replace(/.*\): (\S+).*/, "$1")));
        for (const line of qemu.filter(isDevice)) {
          const name = line.replace(/.*\): (\S+).*/, "$1");
          if (names.has(name)) assert.ok(io.includes(line), `${golden}: we lack QEMU's line\n${line}`);
        }
      }
    },
  });
}
