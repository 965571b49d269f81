import assert from "node:assert/strict";
import { buildGuests, guestModuleUrl, GUESTS } from "./build.ts";
import { decodeImage, encodeImage, mostFrequentByte } from "./_image.ts";
import { ECHO, EXIT_STATUS, FIRMWARE, HELLO64, RING3_LOOP, SMP, VIRTIO_HOSTILE } from "./mod.ts";

/** Why the rebuild test cannot run here, or undefined when binutils is installed. */
function missingToolchain(): string | undefined {
  for (const tool of ["as", "ld"]) {
    try {
      new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return `${tool} not found (install binutils)`;
      throw error;
    }
  }
  return undefined;
}

const missing = missingToolchain();
if (missing !== undefined) console.log(`machine/guests/build_test.ts: rebuild test skipped: ${missing}`);

const EXPORTS: Record<string, Uint8Array> = {
  HELLO64,
  RING3_LOOP,
  EXIT_STATUS,
  ECHO,
  SMP,
  VIRTIO_HOSTILE,
  FIRMWARE,
};

Deno.test({
  name: "the committed guest modules are byte-identical to a fresh build of their sources",
  ignore: missing !== undefined,
  async fn() {
    const built = await buildGuests();
    assert.deepEqual(built.map((b) => b.guest.name), GUESTS.map((g) => g.name));
    for (const { guest, image, module } of built) {
      assert.deepEqual(EXPORTS[guest.exportName], image, `${guest.name}: decoded export vs fresh build`);
      const committed = await Deno.readTextFile(guestModuleUrl(guest));
      assert.equal(
        committed,
        module,
        `${guest.name}.ts is stale: run node_modules/deno/deno run -A machine/guests/build.ts`,
      );
    }
  },
});

Deno.test("the firmware is 256 KiB with a far jump to F000:0000 in its last 16 bytes", () => {
  assert.equal(FIRMWARE.length, 0x4_0000);
  const reset = FIRMWARE.subarray(FIRMWARE.length - 16);
  assert.deepEqual([...reset.subarray(0, 5)], [0xea, 0x00, 0x00, 0x00, 0xf0], "ljmp $0xf000, $0x0000");
  const text = new TextDecoder().decode(FIRMWARE.subarray(0x3_0000, 0x3_0100));
  assert.match(text, /kvm-ts firmware: no kernel given \(use -kernel FILE\)\n/);
});

Deno.test("the Multiboot guests start with a header whose checksum is right", () => {
  for (const image of [HELLO64, EXIT_STATUS, ECHO, SMP, VIRTIO_HOSTILE]) {
    const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
    const [magic, flags, checksum] = [0, 4, 8].map((offset) => view.getUint32(offset, true));
    assert.equal(magic, 0x1bad_b002);
    assert.equal(flags & 0x1_0000, 0x1_0000, "a.out kludge");
    assert.equal((magic + flags + checksum) >>> 0, 0);
  }
});

Deno.test("the smp guest's trampoline is real-mode code whose GDT and far jump point into the image", () => {
  const LOAD_ADDR = 0x10_0000;
  const view = new DataView(SMP.buffer, SMP.byteOffset, SMP.byteLength);
  // cli; mov %cs,%ax; mov %ax,%ds; lgdtl disp16 (the trampoline runs at 1000:0000, copied there by the BSP)
  const prologue = [0xfa, 0x8c, 0xc8, 0x8e, 0xd8, 0x66, 0x0f, 0x01, 0x16];
  const start = SMP.findIndex((_, i) => prologue.every((byte, j) => SMP[i + j] === byte));
  assert.ok(start > 0, "trampoline prologue found");
  const gdtr = start + view.getUint16(start + prologue.length, true);
  const [limit, gdtBase] = [view.getUint16(gdtr, true), view.getUint32(gdtr + 2, true)];
  assert.equal(limit, 3 * 8 - 1, "null, code 0x08, data 0x10");
  assert.ok(gdtBase >= LOAD_ADDR && gdtBase + limit < LOAD_ADDR + SMP.length, "GDT inside the image");
  assert.equal(view.getBigUint64(gdtBase - LOAD_ADDR + 8, true), 0x00cf_9b00_0000_ffffn);
  const jump = SMP.findIndex((byte, i) => i > start && byte === 0x66 && SMP[i + 1] === 0xea); // ljmpl
  assert.ok(jump > start && jump < gdtr, "far jump inside the trampoline");
  assert.equal(view.getUint16(jump + 6, true), 0x08, "to the 32-bit code selector");
  const target = view.getUint32(jump + 2, true);
  assert.ok(target > LOAD_ADDR && target < LOAD_ADDR + SMP.length, "into the 1 MiB image");
  assert.ok(gdtr + 6 - start < 0x1000, "the trampoline fits in its page at 0x10000");
  const text = new TextDecoder().decode(SMP);
  for (const part of ["smp: AP with APIC id ", " is up\n", "smp: all ", " CPUs reported\n"]) {
    assert.ok(text.includes(part), part);
  }
});

Deno.test("image encoding round-trips sparse and dense images", () => {
  const sparse = new Uint8Array(5000).fill(0xff);
  sparse.set([1, 2, 3], 10);
  sparse.set([4], 4999);
  const dense = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
  for (const image of [sparse, dense, new Uint8Array(0), new Uint8Array(64)]) {
    const fill = mostFrequentByte(image);
    assert.deepEqual(decodeImage(image.length, fill, encodeImage(image, fill)), image);
  }
  assert.equal(encodeImage(sparse, 0xff).split("\n").length - 1, 2, "one line per distant span");
});

Deno.test("image decoding rejects malformed lines and lines past the end", () => {
  assert.throws(() => decodeImage(4, 0, "zz AAAA\n"), RangeError);
  assert.throws(() => decodeImage(4, 0, "000002 AAAA\n"), /reaches past the image size 4/);
});
