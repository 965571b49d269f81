/**
 * The start-up bundle end to end: `tools/bundle.ts` builds it (into a temporary folder), the
 * bundle runs the same program as the source — the help text, and with KVM a boot whose vCPU
 * Workers come from the bundle — and `main.ts` runs the bundle only while it is fresh.
 */
import assert from "node:assert/strict";
import { EXIT_STATUS, kvmAvailability } from "../mod.ts";
import { bundleState, MANIFEST_NAME, stampFile } from "../cli/bundle_manifest.ts";
import { buildBundle } from "../tools/bundle.ts";

const KVM = kvmAvailability();
if (!KVM.available) console.log(`tests/bundle_test.ts: boot test skipped: ${KVM.reason}`);
const ROOT = new URL("../", import.meta.url);

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Builds the bundle into a temporary folder, writes a source entry beside it, runs `fn`, cleans up. */
async function withBundle(
  fn: (
    b: {
      dir: string;
      out: URL;
      built: Awaited<ReturnType<typeof buildBundle>>;
      bundled: string;
      source: string;
    },
  ) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "bundle-test-" });
  try {
    const out = new URL(`file://${dir}/build/`);
    const built = await buildBundle(out);
    const source = `${dir}/source_main.ts`;
    await Deno.writeTextFile(
      source,
      `import { main } from ${JSON.stringify(new URL("cli/main.ts", ROOT).href)};\n` +
        `Deno.exit(await main(Deno.args));\n`,
    );
    await fn({ dir, out, built, bundled: new URL("main.js", out).pathname, source });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the bundle holds every entry and the web assets, and prints the same help as the source", async () => {
  await withBundle(async ({ out, built, bundled, source }) => {
    assert.ok(bundleState(ROOT, out).fresh, "fresh right after the build");
    for (const worker of ["main", "vcpu_worker", "net_rx_worker", "qmp_worker", "web_worker"]) {
      assert.ok(stampFile(out, `${worker}.js`), `${worker}.js is in the bundle`);
    }
    assert.deepEqual(
      [...Deno.readDirSync(new URL("web/", out))].map((e) => e.name).sort(),
      [...Deno.readDirSync(new URL("cli/web/", ROOT))].map((e) => e.name).sort(),
      "the web Worker's assets are beside it",
    );
    assert.ok(built.manifest.inputs.some(([path]) => path === "cli/web/index.html"), "assets are inputs");
    const [a, b] = [
      await run(["run", "-A", bundled, "--help"]),
      await run(["run", "-A", source, "--help"]),
    ];
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
  });
});

// A test of its own (not a step): where the host has no KVM the test runner runs it in the nested VM.
Deno.test({
  name: "the bundle boots two vCPUs as the source does: its Workers come from the bundle",
  ignore: !KVM.available,
  async fn() {
    await withBundle(async ({ dir, bundled, source }) => {
      const kernel = `${dir}/exit_status.bin`;
      await Deno.writeFile(kernel, EXIT_STATUS);
      const args = ["-m", "64M", "-smp", "2", "-kernel", kernel, "--timings"];
      const a = await run(["run", "-A", bundled, ...args]);
      const b = await run(["run", "-A", source, ...args]);
      assert.equal(a.code, 33, a.stderr);
      assert.equal(a.stdout, b.stdout);
      assert.match(a.stderr, /module loading from the bundle/);
      assert.match(b.stderr, /module loading from source/);
    });
  },
});

Deno.test("the bundle keeps the device class names a snapshot names devices by", async () => {
  const { PcBoard } = await import("../machine/pc/pc_board.ts");
  const { boardDevices } = await import("../machine/snapshot/device_states.ts");
  const board = await PcBoard.create({
    ramSize: 16n << 20n,
    pciDevices: [{ type: "virtio-rng-pci", entropy: (b) => b.fill(4) }],
  });
  const classes = [...boardDevices(board).keys()].map((name) => name.replace(/^pci\.[0-9a-f]+\.\d:/, ""));
  assert.ok(classes.includes("Uart16550") && classes.includes("VirtioPci"), classes.join(", "));
  await withBundle(async ({ out }) => {
    const text = (await Array.fromAsync(Deno.readDir(out)))
      .filter((e) => e.name.endsWith(".js"))
      .map((e) => Deno.readTextFileSync(new URL(e.name, out)))
      .join("\n");
    for (const name of new Set(classes)) {
      assert.ok(
        text.includes(`"${name}"`) || text.includes(`class ${name} `),
        `${name} is kept in the bundle`,
      );
    }
  });
});

/** The files `file` imports statically in a bundle folder, `file` included (dynamic imports are not followed). */
function staticClosure(out: URL, file: string): string[] {
  const seen = new Set<string>();
  const todo = [file];
  while (todo.length > 0) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const text = Deno.readTextFileSync(new URL(name, out));
    for (const m of text.matchAll(/(?:from|import)\s*"\.\/([\w.-]+\.js)"/g)) todo.push(m[1]);
  }
  return [...seen];
}

Deno.test("a plain run loads no code of virtio, the Linux loaders, the SMP runner or the split irqchip: imported when needed", async () => {
  // Names kept by the bundle (--keep-names): each of these lives in code a plain run does not load.
  const lazy = [
    "VirtioBlk", // the virtio models, for a board with -device / -drive
    "VirtioNet",
    "VirtioRng",
    "VirtioPci",
    "Msix",
    "DiskImage", // the host side of -drive and -netdev
    "TapNetBackend",
    "NetRxPoller",
    "loadBzImage", // the Linux loaders, for a Linux -kernel
    "loadPvh",
    "loadVmlinux",
    "SmpRunner", // the threaded runner, for -smp 2 or more (or ioeventfd devices)
    "VirtioNotifiers",
    "I8259", // the split irqchip's own controllers, for -machine kernel-irqchip=split
    "I8254",
    "Ioapic",
  ];
  const eager = ["Uart16550", "VcpuRunner", "loadMultiboot", "PcMachine"];
  await withBundle(async ({ out }) => {
    const all = (await Array.fromAsync(Deno.readDir(out))).filter((e) => e.name.endsWith(".js")).map((e) =>
      e.name
    );
    const text = (files: string[]) => files.map((f) => Deno.readTextFileSync(new URL(f, out))).join("\n");
    const kept = (name: string, code: string) => code.includes(`"${name}"`);
    const whole = text(all);
    const plain = text(staticClosure(out, "main.js"));
    for (const name of [...lazy, ...eager]) assert.ok(kept(name, whole), `${name} is in the bundle`);
    for (const name of eager) assert.ok(kept(name, plain), `${name} is loaded by a plain run`);
    for (const name of lazy) assert.ok(!kept(name, plain), `${name} is not loaded by a plain run`);
  });
});

Deno.test("no bundle file imports a chunk by a literal specifier, which Deno would read at every start", async () => {
  await withBundle(async ({ out }) => {
    const files = (await Array.fromAsync(Deno.readDir(out))).filter((e) => e.name.endsWith(".js"));
    let computed = 0;
    for (const { name } of files) {
      const text = Deno.readTextFileSync(new URL(name, out));
      assert.doesNotMatch(text, /\bimport\(\s*["'`]\.\//, `${name} imports a chunk by a literal specifier`);
      computed += text.match(/\bimport\(new URL\("\.\/[\w.-]+\.js",import\.meta\.url\)\.href\)/g)?.length ??
        0;
    }
    assert.ok(computed >= 10, `the lazy chunks are imported through computed specifiers (${computed} found)`);
  });
});

Deno.test("the build replaces only a bundle folder", async () => {
  await assert.rejects(buildBundle(ROOT), /holds the sources/);
  await assert.rejects(buildBundle(new URL("docs/", ROOT)), /is not empty and holds no manifest.json/);
});

Deno.test("main.ts runs the bundle only while it is fresh", async () => {
  // A root of its own: this main.ts and its freshness check, a stand-in front-end and bundle.
  const root = new URL(`file://${await Deno.makeTempDir({ prefix: "bundle-main-" })}/`);
  try {
    Deno.mkdirSync(new URL("cli/", root));
    Deno.mkdirSync(new URL("build/", root));
    Deno.copyFileSync(new URL("main.ts", ROOT), new URL("main.ts", root));
    Deno.copyFileSync(new URL("cli/bundle_manifest.ts", ROOT), new URL("cli/bundle_manifest.ts", root));
    const front = (from: string) =>
      `export function main(args) { console.log("${from}", args.join(" ")); return Promise.resolve(3); }\n`;
    Deno.writeTextFileSync(
      new URL("cli/main.ts", root),
      front("source").replace("(args)", "(args: string[])"),
    );
    Deno.writeTextFileSync(new URL("build/main.js", root), front("bundle"));
    const build = new URL("build/", root);
    Deno.writeTextFileSync(
      new URL(MANIFEST_NAME, build),
      JSON.stringify({
        deno: Deno.version.deno,
        inputs: [stampFile(root, "cli/main.ts")],
        outputs: [stampFile(build, "main.js")],
      }),
    );
    const main = new URL("main.ts", root).pathname;
    const started = async (...flags: string[]) => {
      const r = await run(["run", "--no-prompt", ...flags, main, "a", "b"]);
      assert.equal(r.code, 3, r.stderr);
      return r.stdout;
    };
    assert.equal(await started("--allow-read"), "bundle a b\n");
    // Without read permission it cannot tell, nor import a module its graph does not name: it asks.
    const denied = await run(["run", "--no-prompt", main]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /--allow-read/);
    assert.equal(denied.stdout, "");
    const input = new URL("cli/main.ts", root);
    const mtime = Deno.statSync(input).mtime!;
    Deno.utimeSync(input, mtime, new Date(mtime.getTime() + 1000));
    assert.equal(await started("--allow-read"), "source a b\n", "a touched source makes the bundle stale");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
