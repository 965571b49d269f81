/**
 * Test helpers for the `--web` page: Debian's chromium driven headless by playwright-core (no
 * browser download), the screenshots kept as artifacts, and `main.ts --web` started as a child.
 */
import { type Browser, chromium, type Page } from "playwright-core";

/** Debian's chromium (tools/ensure_packages.sh installs it for the tests). */
export const CHROMIUM = "/usr/bin/chromium";
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const DENO = Deno.execPath();

/** Why the browser tests cannot run here, or undefined. */
export function browserSkipReason(): string | undefined {
  try {
    Deno.statSync(CHROMIUM);
    return undefined;
  } catch {
    return `${CHROMIUM} is missing (apt-get install chromium)`;
  }
}

/** How long any one step on the page may take before the test fails. */
const PAGE_TIMEOUT_MS = 240_000;

let artifacts: string | undefined;

/** Where screenshots go: $WEB_ARTIFACTS, else a temporary directory (printed once). */
export function artifactDir(): string {
  if (artifacts) return artifacts;
  artifacts = Deno.env.get("WEB_ARTIFACTS") ?? Deno.makeTempDirSync({ prefix: "kvm-ts-web-" });
  Deno.mkdirSync(artifacts, { recursive: true });
  console.log(`web page screenshots: ${artifacts}`);
  return artifacts;
}

/** A headless chromium with one large page; close the browser at the end. */
export async function openPage(): Promise<{ browser: Browser; page: Page }> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: PAGE_TIMEOUT_MS,
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1200 } });
  // A hang guard, not a speed check: inside the nested VM chromium runs under QEMU's emulation.
  page.setDefaultTimeout(PAGE_TIMEOUT_MS);
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  return { browser, page };
}

/** Saves a screenshot of `page` as `<name>.png` among the artifacts; its path. */
export async function screenshot(page: Page, name: string, fullPage = true): Promise<string> {
  const path = `${artifactDir()}/${name}.png`;
  await page.screenshot({ path, fullPage });
  console.log(`  screenshot ${path}`);
  return path;
}

/** Loads the page at `url` and waits until it has drawn its first map. */
export async function loadPage(page: Page, url: string): Promise<void> {
  const response = await page.goto(url);
  if (response?.status() !== 200) throw new Error(`GET ${url}: ${response?.status()}`);
  await page.waitForSelector("body[data-ready]", { state: "attached" });
}

/** A running `main.ts` with `--web`, its URL read from stderr. */
export interface WebChild {
  url: string;
  child: Deno.ChildProcess;
  /** Everything it wrote on stderr so far. */
  stderr(): string;
  /** Ends it (SIGTERM) and waits. */
  stop(): Promise<void>;
}

/** Starts `main.ts` with `args` (which include `--web`) and waits for the URL it prints. */
export async function startMain(args: string[]): Promise<WebChild> {
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", "--no-check", MAIN, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let url: string | undefined;
  const pumped = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += value;
    }
  })();
  for (let i = 0; i < 1200 && url === undefined; i++) {
    url = /web: (http:\/\/\S+)/.exec(text)?.[1];
    if (url) break;
    const exited = await Promise.race([
      child.status.then(() => true),
      new Promise((r) => setTimeout(r, 100)),
    ]);
    if (exited === true) break;
  }
  if (url === undefined) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await pumped;
    throw new Error(`main.ts ${args.join(" ")} printed no URL:\n${text}`);
  }
  return {
    url,
    child,
    stderr: () => text,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await pumped;
    },
  };
}
