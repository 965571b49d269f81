import assert from "node:assert/strict";
import { kvmAvailability } from "../kvm/mod.ts";
import { type CliIo, main, parseCommandLine } from "./main.ts";
import { formatSize, parseSize } from "./size.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`cli/main_test.ts: guest runs skipped: ${KVM.reason}`);

/** Captures what the front-end prints. */
function capture(): CliIo & {
  stdout: string[];
  stderr: string[];
  console: (b: Uint8Array) => void;
  text(): string;
} {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const bytes: number[] = [];
  return {
    stdout,
    stderr,
    out: (t) => void stdout.push(t),
    err: (t) => void stderr.push(t),
    console: (b) => void bytes.push(...b),
    text: () => new TextDecoder().decode(Uint8Array.from(bytes)),
  };
}

Deno.test("sizes: QEMU's -m syntax and readable figures", () => {
  assert.equal(parseSize("256M"), 256n << 20n);
  assert.equal(parseSize("8G"), 8n << 30n);
  assert.equal(parseSize("512"), 512n << 20n);
  assert.equal(parseSize("1.5G"), 3n << 29n);
  assert.throws(() => parseSize("12X"), /not a size/);
  assert.equal(formatSize(3584n << 20n), "3584 MiB");
  assert.equal(formatSize(25_275_990_016n), "23.5 GiB");
});

Deno.test("every bad command line gets one line naming the problem and status 2", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /Unknown option '--bogus'/],
    [["-m", "12X"], /-m: "12X" is not a size/],
    [["-m", "1M"], /at least 2 MiB/],
    [["-kernel", "/nonexistent/kernel"], /-kernel: cannot read '\/nonexistent\/kernel': no such file/],
    [["-kernel", "/"], /-kernel: cannot read '\/': it is a directory/],
    [["-serial", "tcp:1"], /-serial: "tcp:1" is not stdio, null or file:PATH/],
    [["-append", "quiet"], /-append needs -kernel/],
    [["-initrd", "/etc/hostname"], /-initrd needs -kernel/],
    [["--dump-mtree=x"], /--dump-mtree: expected nothing or =-f/],
    [["-reboot", "-no-reboot"], /contradict/],
    [["-device", "virtio-net"], /-device: only "loader,file=FILE,addr=ADDR\[,mode=…\]" is supported/],
    [["-device", "loader,file=/etc/hostname,addr=x"], /-device loader: addr "x" is not a number/],
    [
      ["-device", "loader,file=/etc/hostname,addr=0,mode=v86"],
      /mode "v86" is not real, protected32 or long64/,
    ],
    [["-m", "1T"], /more than this host's .* of memory/],
  ];
  for (const [args, message] of cases) {
    const io = capture();
    assert.equal(await main(args, io), 2, args.join(" "));
    assert.equal(io.stderr.length, 1, args.join(" "));
    assert.match(io.stderr[0], message);
    assert.match(io.stderr[0], /^error: .*\(try --help\)$/);
  }
});

Deno.test("a file in no supported format is refused in one line with status 1", async () => {
  const io = capture();
  const path = Deno.makeTempFileSync();
  try {
    Deno.writeTextFileSync(path, "not a kernel\n");
    assert.equal(await main(["-kernel", path], io), KVM.available ? 1 : 1);
    assert.equal(io.stderr.length, 1);
    assert.match(io.stderr[0], /unknown format|KVM|kvm/);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("QEMU's single-dash long options parse", () => {
  const options = parseCommandLine(["-m", "256M", "-serial", "null", "-nographic", "-no-reboot"]);
  assert.notEqual(options, "help");
  if (options === "help") return;
  assert.equal(options.ramSize, 256n << 20n);
  assert.deepEqual(options.serial, { kind: "null" });
  assert.equal(parseCommandLine(["--help"]), "help");
});

Deno.test("--help lists the flags", async () => {
  const io = capture();
  assert.equal(await main(["--help"], io), 0);
  for (
    const flag of [
      "-m SIZE",
      "-kernel FILE",
      "-append",
      "-initrd",
      "-bios",
      "-serial",
      "--dump-mtree",
      "--trace-memslots",
    ]
  ) {
    assert.ok(io.stdout[0].includes(flag), flag);
  }
});

Deno.test({
  name: "the main command runs the built-in guest to its reset and returns 0",
  ignore: !KVM.available,
  async fn() {
    const io = capture();
    assert.equal(await main([], io), 0);
    const text = io.text();
    assert.match(text, /hello64: 64-bit long mode/);
    assert.match(text, /IOAPIC version register = 0x[0-9a-f]{8}/);
    assert.match(text, /UART interrupt taken on vector 0x24/);
    assert.match(text, /after 50000000 loop iterations/);
    assert.match(text, /goodbye/);
    assert.deepEqual(io.stderr, []);
  },
});

Deno.test({
  name: "--trace-memslots prints each memslot call; --dump-mtree=-f marks KVM-mapped ranges",
  ignore: !KVM.available,
  async fn() {
    const io = capture();
    assert.equal(await main(["--dump-mtree=-f", "--trace-memslots", "-m", "256M"], io), 0);
    assert.ok(
      io.stderr.some((l) =>
        /^KVM_SET_USER_MEMORY_REGION slot=0:0 flags=0 gpa=0x0 size=0xc0000 host=0x[0-9a-f]+ -> 0$/.test(l)
      ),
      io.stderr.join("\n"),
    );
    assert.ok(
      io.stderr.some((l) => / flags=2 gpa=0xfffc0000 size=0x40000 /.test(l)),
      "pc.bios is a read-only slot",
    );
    assert.match(io.stdout[0], /00000000000c0000-00000000000dffff \(prio 1, rom\): pc\.rom KVM\n/);
  },
});

Deno.test({
  name: "-device loader: a flat binary at an address in real mode, as QEMU's generic loader",
  ignore: !KVM.available,
  async fn() {
    // mov al,'H'; mov dx,0x3f8; out dx,al; mov al,'i'; out dx,al; mov al,10; out dx,al;
    // mov al,7; mov dx,0x501; out dx,al  — isa-debug-exit: status (7 << 1) | 1
    const code = [
      0xb0,
      0x48,
      0xba,
      0xf8,
      0x03,
      0xee,
      0xb0,
      0x69,
      0xee,
      0xb0,
      0x0a,
      0xee,
      0xb0,
      0x07,
      0xba,
      0x01,
      0x05,
      0xee,
    ];
    const path = await Deno.makeTempFile({ suffix: ".bin" });
    try {
      await Deno.writeFile(path, Uint8Array.from(code));
      const io = capture();
      assert.equal(await main(["-device", `loader,file=${path},addr=0x7c00`], io), 15);
      assert.equal(io.text(), "Hi\n");
    } finally {
      await Deno.remove(path);
    }
  },
});

Deno.test({
  name: "a triple fault ends the run with the reason, a register dump and status 1",
  ignore: !KVM.available,
  async fn() {
    // 32-bit flat code at 0x8000: lidt [0x8010] (an empty IDT); ud2 — #UD, then #DF, then shutdown.
    const code = [
      0x0f,
      0x01,
      0x1d,
      0x10,
      0x80,
      0x00,
      0x00,
      0x0f,
      0x0b,
      0xf4,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
    ];
    const path = await Deno.makeTempFile({ suffix: ".bin" });
    try {
      await Deno.writeFile(path, Uint8Array.from(code));
      const io = capture();
      assert.equal(await main(["-device", `loader,file=${path},addr=0x8000,mode=protected32`], io), 1);
      assert.equal(io.stderr.length, 1);
      assert.match(io.stderr[0], /^error: triple fault \(KVM_EXIT_SHUTDOWN\)\nRAX=/);
      assert.match(io.stderr[0], /\nRIP=0000000000008007 /); // the ud2
      assert.match(io.stderr[0], /\nIDT= {5}0000000000000000 00000000\n/);
    } finally {
      await Deno.remove(path);
    }
  },
});
