import assert from "node:assert/strict";
import { bzImagePayload, decompressCommand, type PayloadFormat, payloadFormat } from "./bzimage_payload.ts";
import { parseVmlinux } from "./vmlinux.ts";
import { bzImageOf, elf64Of, elfNotes, loaderErrorLike } from "./_test_util.ts";

/** A bzImage whose protected-mode kernel holds `payload` at `payloadOffset`. */
function withPayload(payload: Uint8Array, payloadOffset = 0x40): Uint8Array {
  const kernel = new Uint8Array(payloadOffset + payload.length + 0x20).fill(0xcc);
  kernel.set(payload, payloadOffset);
  return bzImageOf({ kernel, payloadOffset, payloadLength: payload.length });
}

async function pipe(bytes: Uint8Array, stream: CompressionStream | DecompressionStream): Promise<Uint8Array> {
  return new Uint8Array(
    await new Response(new Blob([bytes.slice()]).stream().pipeThrough(stream)).arrayBuffer(),
  );
}

Deno.test("bzImagePayload: a gzip payload round-trips to the vmlinux it was made from", async () => {
  const vmlinux = elf64Of({
    entry: 0x100_0000n,
    segments: [
      { vaddr: 0xffff_ffff_8100_0000n, paddr: 0x100_0000n, data: new Uint8Array(0x1000).fill(0x90) },
      {
        type: 4,
        vaddr: 0n,
        paddr: 0n,
        data: elfNotes([{ owner: "Linux", type: 0x100, desc: new Uint8Array(4) }]),
      },
    ],
  });
  const gz = await pipe(vmlinux, new CompressionStream("gzip"));
  const image = withPayload(gz, 0x2cc);
  const payload = bzImagePayload(image);
  assert.equal(payload.format, "gzip");
  assert.equal(payload.offset, 0xa00 + 0x2cc);
  assert.deepEqual(payload.data, gz);
  assert.deepEqual(payload.stream, gz, "gzip keeps its own ISIZE trailer");
  assert.equal(payload.uncompressedSize, vmlinux.length);
  const out = await pipe(payload.stream, new DecompressionStream("gzip"));
  assert.deepEqual(out, vmlinux);
  assert.equal(parseVmlinux(out).entry, 0x100_0000n);
});

Deno.test("bzImagePayload: every format by its magic; the appended size is cut off the stream", () => {
  const magics: [PayloadFormat, number[]][] = [
    ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
    ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
    ["bzip2", [0x42, 0x5a, 0x68, 0x39]],
    ["lzma", [0x5d, 0x00, 0x00, 0x80]],
    ["lzo", [0x89, 0x4c, 0x5a, 0x4f]],
    ["lz4", [0x02, 0x21, 0x4c, 0x18]],
  ];
  for (const [format, magic] of magics) {
    const bytes = new Uint8Array([...magic, 1, 2, 3, 4, 5, 0x78, 0x56, 0x34, 0x12]);
    const payload = bzImagePayload(withPayload(bytes));
    assert.equal(payload.format, format);
    assert.equal(payloadFormat(bytes), format);
    assert.deepEqual(payload.data, bytes);
    assert.deepEqual(payload.stream, bytes.subarray(0, bytes.length - 4), format);
    assert.equal(payload.uncompressedSize, 0x1234_5678);
  }
  assert.equal(payloadFormat(new Uint8Array([0x7f, 0x45, 0x4c, 0x46])), undefined);
  assert.equal(payloadFormat(new Uint8Array([0xfd, 0x37])), undefined, "too short for the xz magic");
});

Deno.test("decompressCommand names the system tool for each format", () => {
  assert.deepEqual(
    (["gzip", "bzip2", "lzma", "xz", "lzo", "lz4", "zstd"] as const).map((f) =>
      decompressCommand(f).join(" ")
    ),
    ["gzip -dc", "bzip2 -dc", "xz --format=lzma -dc", "xz -dc", "lzop -dc", "lz4 -dc", "zstd -dc"],
  );
});

Deno.test("bzImagePayload: one clear error line for each refusal", () => {
  const xz = new Uint8Array([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0, 0, 0]);
  const cases: [string, Uint8Array, string, RegExp][] = [
    [
      "a short file",
      new Uint8Array(0x200),
      "TRUNCATED",
      /^bzImage payload: the file is 512 bytes; the setup header's payload fields end at 0x250$/,
    ],
    [
      "no HdrS",
      bzImageOf({ magic: 0 }),
      "BAD_MAGIC",
      /^bzImage payload: no "HdrS" signature at 0x202: not a bzImage$/,
    ],
    [
      "protocol 2.07",
      bzImageOf({ version: 0x0207 }),
      "PROTOCOL_TOO_OLD",
      /^bzImage payload: boot protocol 0x207 has no payload_offset\/payload_length \(needs 0x208 or later\)$/,
    ],
    [
      "an empty payload",
      bzImageOf({ payloadLength: 0 }),
      "UNKNOWN_FORMAT",
      /^bzImage payload: payload_length 0 leaves no compressed data$/,
    ],
    [
      "a payload past the end",
      bzImageOf({ payloadOffset: 0xf00, payloadLength: 0x200 }),
      "TRUNCATED",
      /^bzImage payload: the payload \[0x1900, 0x1b00\) passes the end of the file \(0x1a00\)$/,
    ],
    [
      "an unknown format",
      withPayload(new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 0, 0])),
      "UNKNOWN_FORMAT",
      /^bzImage payload: the payload at 0xa40 starts with 7f 45 4c 46 02 01: not gzip, bzip2, lzma, xz, lzo, lz4 or zstd$/,
    ],
  ];
  for (const [name, image, code, message] of cases) {
    assert.throws(() => bzImagePayload(image), loaderErrorLike(code, message), name);
  }
  assert.equal(bzImagePayload(withPayload(xz)).format, "xz");
});
