/// <reference lib="dom" />
/**
 * The `--web` page in a real browser (Debian's chromium, headless, driven by playwright-core).
 *
 * On any host: a board without KVM served for its map (`serveMapOnly`): every region `info mtree`
 * prints is on the page, at its addresses, in the listing and in the drawing; a PAM change redraws
 * the map and lands in the timeline; a read-only flip under a KVM listener (on a recording backend)
 * shows the zero-size delete before the new slot; without the token the server answers 403 and the
 * WebSocket is refused. With KVM (the nested VM where the host has none): `main.ts --web` running
 * guests — a PAM change made by the guest with its memslot calls, the dirty-pages heatmap, and pause
 * as `query-status` over QMP sees it. Screenshots of each state are kept (the path is printed).
 */
import assert from "node:assert/strict";
import { AddressSpace, KvmMemoryListener, MemoryRegion, transaction } from "../mod.ts";
import { PcBoard } from "../machine/pc/pc_board.ts";
import { assemble } from "../machine/guests/assemble.ts";
import { WebServer } from "../cli/web_server.ts";
import { parseWebOption } from "../cli/web_options.ts";
import { serveMapOnly } from "../cli/web_machine.ts";
import { WebSession } from "../cli/web_session.ts";
import { QmpClient } from "../examples/qmp_client.ts";
import { assertDirtyPages, KVM } from "../kvm/_testing.ts";
import { browserSkipReason, loadPage, openPage, screenshot, startMain } from "./_web_browser.ts";
import type { Page } from "playwright-core";

const NO_BROWSER = browserSkipReason();
if (NO_BROWSER) console.log(`tests/web_page_test.ts: skipped: ${NO_BROWSER}`);
if (!KVM.available) console.log(`tests/web_page_test.ts: guest runs skipped: ${KVM.reason}`);
const GUEST_TEST = {
  ignore: NO_BROWSER !== undefined || !KVM.available,
  sanitizeResources: false,
  sanitizeOps: false,
};
const HOST_TEST = { ignore: NO_BROWSER !== undefined, sanitizeResources: false, sanitizeOps: false };

/** Serves `spaces` map-only for the length of `fn`. */
async function withMapServer(
  spaces: AddressSpace[],
  fn: (url: string, server: WebServer) => Promise<void>,
): Promise<void> {
  const server = await WebServer.start(parseWebOption("0"));
  let stop!: () => void;
  const until = new Promise<void>((resolve) => stop = resolve);
  const serving = serveMapOnly(server, spaces, until);
  try {
    await fn(server.url, server);
  } finally {
    stop();
    await serving;
    await server.close();
  }
}

/** The rows of the page's listing of `selector` as text, one per line as `info mtree` prints them. */
function rowsText(page: Page, selector: string): Promise<string[]> {
  return page.$$eval(selector, (rows) => rows.map((r) => (r as HTMLElement).innerText.trimEnd()));
}

Deno.test(
  "web page: a board without KVM shows every region of info mtree at its addresses",
  HOST_TEST,
  async () => {
    using board = await PcBoard.create({ ramSize: 128n << 20n });
    await withMapServer([board.memory, board.cpuMemory, board.io], async (url) => {
      const { browser, page } = await openPage();
      try {
        await loadPage(page, url);
        // The listing: the enabled regions, line for line what info mtree prints (it leaves disabled ones out).
        const expected = board.mtree().split("\n").filter((l) => /^\s+[0-9a-f]{16}-/.test(l));
        const rows = await rowsText(page, '#tree .row[data-enabled="true"]');
        assert.deepEqual(rows.map((r) => r.trim()), expected.map((l) => l.trim()));
        const flatExpected = board.mtree({ flat: true }).split("\n").filter((l) =>
          /^\s+[0-9a-f]{16}-/.test(l)
        );
        assert.deepEqual(
          (await rowsText(page, "#flat .row")).map((r) => r.trim()),
          flatExpected.map((l) => l.trim()),
        );
        // The drawing: every enabled region below the root of each address space's tree, at its addresses.
        const lines = board.mtree().split("\n");
        const drawn = await page.$$eval(
          'svg.bar rect[data-lane="tree"]',
          (rects) =>
            rects.map((r) =>
              `${(r as SVGElement).dataset.start}-${(r as SVGElement).dataset.end} ${
                (r as SVGElement).dataset.name
              }`
            ),
        );
        for (const line of lines) {
          const m = /^ {4,}([0-9a-f]{16})-([0-9a-f]{16}) \(prio -?\d+, [^)]+\): (?:alias )?(\S+)/.exec(line);
          if (!m || line.includes("[disabled]")) continue;
          assert.ok(drawn.includes(`${m[1]}-${m[2]} ${m[3]}`), `${m[3]} at ${m[1]}-${m[2]} is not drawn`);
        }
        // The flat view lane holds the ranges of info mtree -f.
        const flatDrawn = await page.$$eval(
          'svg.bar rect[data-lane="flat"]',
          (rects) => rects.map((r) => `${(r as SVGElement).dataset.start} ${(r as SVGElement).dataset.name}`),
        );
        assert.ok(flatDrawn.includes("00000000fffc0000 pc.bios"), "pc.bios in the flat view lane");
        await screenshot(page, "1-board-map");
      } finally {
        await browser.close();
      }
    });
  },
);

Deno.test("web page: a PAM change redraws the map and is listed in the timeline", HOST_TEST, async () => {
  using board = await PcBoard.create({ ramSize: 128n << 20n });
  await withMapServer([board.memory, board.cpuMemory, board.io], async (url) => {
    const { browser, page } = await openPage();
    try {
      await loadPage(page, url);
      const before = await page.$$eval(
        "#flat .row",
        (rows) => rows.map((r) => (r as HTMLElement).innerText.trim()),
      );
      assert.ok(
        !before.some((l) => l.startsWith("00000000000f0000-00000000000fffff") && l.includes("pc.ram")),
      );
      board.map.pam.writeConfig(0x59, 0x30); // segment 0xf0000-0xfffff: RAM, read and write
      await page.waitForSelector('#flat .row[data-start="00000000000f0000"][data-name="pc.ram"]');
      await page.waitForSelector(
        '#timeline .tl[data-kind="regionAdd"][data-region="pc.ram"][data-start="00000000000f0000"]',
      );
      await page.waitForSelector('#timeline .tl[data-kind="regionDel"][data-region="pc.bios"]');
      await screenshot(page, "2-board-pam-change");
    } finally {
      await browser.close();
    }
  });
});

Deno.test(
  "web page: a read-only flip shows the zero-size delete before the new memslot",
  HOST_TEST,
  async () => {
    // A KVM listener on a recording backend: the calls it makes are those it would make to KVM.
    let host = 0x7f00_0000_0000n;
    const backing = (size: bigint) => ({ size, hostAddress: host += 0x100_0000n, read() {}, write() {} });
    const system = MemoryRegion.container("system", 1n << 64n);
    const scratch = MemoryRegion.ram("scratch", 0x1000, { backing: backing(0x1000n) });
    transaction(() => {
      system.addSubregion(0, MemoryRegion.ram("ram", 0x8000, { backing: backing(0x8000n) }));
      system.addSubregion(0x8000, scratch);
    });
    using memory = new AddressSpace(system, "memory");
    const server = await WebServer.start(parseWebOption("0"));
    const calls: number[] = [];
    const listener = new KvmMemoryListener(
      {
        setUserMemoryRegion: (r) => void calls.push(Number(r.memorySize)),
        getDirtyLog: () => new Uint8Array(8),
      },
      { maxSlots: 32, readonlyMem: true, trace: (call) => session.memslot(call) },
    );
    const session = new WebSession(server, { spaces: [memory], cpus: 0, memslots: () => listener.slots });
    memory.registerListener(listener);
    server.attach({});
    let done = false;
    const serving = (async () => {
      while (!done) {
        await server.waitAsync(100);
        while (session.pump()) { /* all */ }
      }
    })();
    const { browser, page } = await openPage();
    try {
      await loadPage(page, server.url);
      scratch.setReadonly(true);
      const del = '#timeline .tl[data-kind="memslot"][data-gpa="0000000000008000"][data-size="0x0"]';
      await page.waitForSelector(del);
      await page.waitForSelector(
        '#timeline .tl[data-kind="memslot"][data-gpa="0000000000008000"][data-flags="2"]',
      );
      assert.match(await page.innerText(del), /delete before read-only change/);
      await page.waitForSelector(
        'svg.bar rect[data-kind="memslot"][data-start="0000000000008000"][data-flags="2"]',
      );
      await screenshot(page, "3-readonly-flip");
    } finally {
      await browser.close();
      done = true;
      await serving;
      session.close();
      memory.unregisterListener(listener);
      await server.close();
    }
  },
);

Deno.test(
  "web page: without the token the server answers 403 and refuses the WebSocket",
  HOST_TEST,
  async () => {
    using board = await PcBoard.create({ ramSize: 16n << 20n });
    await withMapServer([board.memory], async (url) => {
      const base = new URL(url);
      const token = base.searchParams.get("token")!;
      assert.match(token, /^[0-9a-f]{32}$/);
      for (const path of ["/", "/app.js", "/ws", `/?token=${token.slice(0, -1)}0`, "/?token="]) {
        const response = await fetch(new URL(path, base.origin));
        await response.body?.cancel();
        assert.equal(
          response.status,
          path.includes(token.slice(0, -1)) && path.endsWith(token) ? 200 : 403,
          path,
        );
      }
      const ok = await fetch(url);
      await ok.body?.cancel();
      assert.equal(ok.status, 200);
      // A WebSocket without the token (no cookie, no query) never opens.
      const refused = await new Promise<string>((resolve) => {
        const ws = new WebSocket(`ws://${base.host}/ws`);
        ws.onopen = () => {
          ws.close();
          resolve("open");
        };
        ws.onerror = () => resolve("refused");
      });
      assert.equal(refused, "refused");
      // With it, it opens and answers.
      const answer = await new Promise<string>((resolve, reject) => {
        const ws = new WebSocket(`ws://${base.host}/ws?token=${token}`);
        ws.onopen = () => ws.send(JSON.stringify({ id: 7, execute: "x-query-machine" }));
        ws.onmessage = (e) => {
          ws.close();
          resolve(e.data);
        };
        ws.onerror = () => reject(new Error("the WebSocket with the token was refused"));
      });
      assert.deepEqual(JSON.parse(answer).id, 7);
      assert.equal(JSON.parse(answer).return.cpus, 0);
      // The browser sees the same 403.
      const { browser, page } = await openPage();
      try {
        const response = await page.goto(base.origin);
        assert.equal(response?.status(), 403);
        await screenshot(page, "4-no-token", false);
      } finally {
        await browser.close();
      }
    });
  },
);

Deno.test(
  "web page: --dump-mtree --web serves the board's map until SIGTERM; a public host is warned of",
  HOST_TEST,
  async () => {
    const main = await startMain(["-m", "64M", "--dump-mtree", "--web", "127.0.0.1:0"]);
    try {
      assert.match(main.url, /^http:\/\/127\.0\.0\.1:\d+\/\?token=[0-9a-f]{32}$/);
      assert.doesNotMatch(main.stderr(), /warning/);
      const { browser, page } = await openPage();
      try {
        await loadPage(page, main.url);
        await page.waitForSelector('#status[data-status="map-only"]');
        await page.waitForSelector('#tree .row[data-name="pc.bios"][data-start="00000000fffc0000"]');
      } finally {
        await browser.close();
      }
    } finally {
      await main.stop();
    }
    assert.equal((await main.child.status).code, 0);
    const open = await startMain(["--dump-mtree", "--web", "0.0.0.0:0"]);
    try {
      assert.match(open.stderr(), /^warning: --web 0\.0\.0\.0: the page is reachable from other machines/m);
    } finally {
      await open.stop();
    }
  },
);

/** Assembles `tests/guests/<name>` for `-device loader` at 0x1000, prefixed with `prefix`. */
async function guestFile(name: string, prefix = new Uint8Array(0), base = 0x1000): Promise<string> {
  const code = await assemble(new URL(`./guests/${name}`, import.meta.url), {
    base: base + prefix.length,
    elf: 32,
  });
  const path = await Deno.makeTempFile({ suffix: ".bin" });
  await Deno.writeFile(path, new Uint8Array([...prefix, ...code]));
  return path;
}

Deno.test("web page: a PAM change made by the guest appears with its memslot calls", GUEST_TEST, async () => {
  const guest = await guestFile("web_pam.S");
  const main = await startMain([
    "-m",
    "16M",
    "-serial",
    "null",
    "-S",
    "--web",
    "127.0.0.1:0",
    "-device",
    `loader,file=${guest},addr=0x1000,mode=real`,
  ]);
  const { browser, page } = await openPage();
  try {
    await loadPage(page, main.url);
    await page.waitForSelector('#status[data-status="prelaunch"]');
    await screenshot(page, "5-guest-before-pam");
    await page.click("#btn-cont");
    await page.waitForSelector('#flat .row[data-start="00000000000f0000"][data-name="pc.ram"]');
    await page.waitForSelector(
      '#timeline .tl[data-kind="regionAdd"][data-region="pc.ram"][data-start="00000000000f0000"]',
    );
    await page.waitForSelector('#timeline .tl[data-kind="memslot"][data-gpa="00000000000f0000"]');
    await page.waitForSelector('#timeline .tl[data-kind="memslot"][data-size="0x0"]');
    await page.waitForSelector('svg.bar rect[data-kind="memslot"][data-start="00000000000f0000"]');
    // The guest loops on port 0x80: its I/O exits are counted.
    await page.waitForSelector('.vcpu[data-cpu="0"] [data-reason="io"]');
    await screenshot(page, "6-guest-after-pam");
  } finally {
    await browser.close();
    await main.stop();
    await Deno.remove(guest);
  }
});

/** The pages the dirty-pages example's guest writes (examples/dirty_pages.ts' ROUNDS). */
const DIRTY_PAGES = [3, 5, 7, 20, 40, 63];

Deno.test("web page: the heatmap marks the pages the dirty-pages guest writes", GUEST_TEST, async () => {
  // examples/guests/dirty_writer.S, entered with EDX:EAX = its page mask (mov eax/edx, imm32).
  const mask = DIRTY_PAGES.reduce((bits, page) => bits | (1n << BigInt(page)), 0n);
  const imm = (v: bigint) => [0, 8, 16, 24].map((s) => Number((v >> BigInt(s)) & 0xffn));
  const prefix = new Uint8Array([0x66, 0xb8, ...imm(mask & 0xffff_ffffn), 0x66, 0xba, ...imm(mask >> 32n)]);
  const code = await assemble(new URL("../examples/guests/dirty_writer.S", import.meta.url), {
    base: 0x1000 + prefix.length,
    elf: 32,
  });
  const guest = await Deno.makeTempFile({ suffix: ".bin" });
  await Deno.writeFile(guest, new Uint8Array([...prefix, ...code]));
  const main = await startMain([
    "-m",
    "16M",
    "-serial",
    "null",
    "-S",
    "--web",
    "127.0.0.1:0",
    "-device",
    `loader,file=${guest},addr=0x1000,mode=real`,
  ]);
  const { browser, page } = await openPage();
  try {
    await loadPage(page, main.url);
    await page.check("#dirty-toggle");
    await page.waitForSelector('#timeline .tl[data-kind="logStart"][data-region="pc.ram"]');
    await page.waitForSelector('svg.bar rect[data-kind="memslot"][data-flags="1"]');
    await page.waitForSelector('.heat[data-region="pc.ram"]');
    await page.click("#btn-cont");
    await page.waitForFunction(
      (pages) => {
        const seen = (document.querySelector('.heat[data-region="pc.ram"]') as HTMLElement | null)?.dataset
          .seen;
        const set = new Set((seen ?? "").split(",").filter((s) => s).map(Number));
        return pages.every((p) => set.has(p));
      },
      DIRTY_PAGES,
    );
    const seen = (await page.getAttribute('.heat[data-region="pc.ram"]', "data-seen"))!.split(",").map(
      Number,
    );
    // KVM may also count the page the guest runs from (0x1000: page 1) as written.
    assertDirtyPages(seen, DIRTY_PAGES, [1], "the heatmap");
    await screenshot(page, "7-dirty-heatmap");
  } finally {
    await browser.close();
    await main.stop();
    await Deno.remove(guest);
  }
});

Deno.test("web page: pause pauses the guest, as query-status over QMP confirms", GUEST_TEST, async () => {
  const guest = await guestFile("web_pam.S");
  const dir = await Deno.makeTempDir();
  const path = `${dir}/qmp.sock`;
  const main = await startMain([
    "-m",
    "16M",
    "-serial",
    "null",
    "--web",
    "127.0.0.1:0",
    "-qmp",
    `unix:${path},server=on,wait=off`,
    "-device",
    `loader,file=${guest},addr=0x1000,mode=real`,
  ]);
  const { browser, page } = await openPage();
  using qmp = await QmpClient.connect({ path });
  try {
    await loadPage(page, main.url);
    await page.waitForSelector('#status[data-status="running"]');
    assert.deepEqual(await qmp.execute("query-status"), {
      status: "running",
      singlestep: false,
      running: true,
    });
    // The page's commands are QMP's too while --web is on.
    const slots = await qmp.execute("x-query-memslots") as { start: string; region: string }[];
    assert.ok(
      slots.some((s) => s.start === "0000000000000000" && s.region === "pc.ram"),
      JSON.stringify(slots),
    );
    await page.click("#btn-stop");
    await page.waitForSelector('#status[data-status="paused"]');
    assert.deepEqual(await qmp.execute("query-status"), {
      status: "paused",
      singlestep: false,
      running: false,
    });
    await qmp.waitEvent("STOP");
    await page.waitForSelector('.vcpu[data-cpu="0"][data-state="paused"]');
    // The guest's exit count stands still while paused.
    const exits = () =>
      page.$eval('.vcpu[data-cpu="0"] [data-reason="io"] + .meter + .n', (n) => n.getAttribute("title"));
    const first = await exits();
    await page.waitForTimeout(1500);
    assert.equal(await exits(), first);
    await page.click('.vcpu[data-cpu="0"] .regs-btn');
    await page.waitForFunction(() => /RIP=/.test(document.querySelector(".regs")?.textContent ?? ""));
    await screenshot(page, "8-paused-registers");
    await page.click("#btn-cont");
    await page.waitForSelector('#status[data-status="running"]');
    assert.deepEqual(await qmp.execute("query-status"), {
      status: "running",
      singlestep: false,
      running: true,
    });
  } finally {
    await browser.close();
    await main.stop();
    await Deno.remove(guest);
    await Deno.remove(dir, { recursive: true });
  }
});
