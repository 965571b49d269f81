/**
 * The live page over the front-end's machines: a running {@link PcMachine} ({@link pcWebMachine}),
 * or a board without KVM served for its map only ({@link serveMapOnly}, `--dump-mtree --web`).
 *
 * @module
 */

import type { AddressSpace } from "../memory/mod.ts";
import type { PcMachine } from "../machine/pc/pc_machine.ts";
import type { SlotLike } from "./web_map.ts";
import { type WebMachine, WebSession } from "./web_session.ts";
import type { WebServer } from "./web_server.ts";

/** How often the map-only loop looks for the end when no page asks anything. */
const MAP_ONLY_POLL_MS = 200;

/** What the page sees of a running PC: its address spaces, memslots, vCPUs and their exits. */
export function pcWebMachine(pc: PcMachine): WebMachine {
  return {
    spaces: [pc.memory, pc.cpuMemory, pc.io],
    cpus: pc.cpus,
    memslots: () => pc.kvmListener.slots,
    exitCounts: () => pc.exitCounts,
    mpStates: () =>
      pc.whilePaused(() => Array.from({ length: pc.cpus }, (_, i) => pc.vcpuAt(i).getMpState())),
    registers: (cpu) => pc.registers(cpu),
  };
}

/**
 * Serves the map of `spaces` (with `memslots`, when a KVM listener holds some) until `until`
 * settles: the board runs nothing, so this thread only answers the pages.
 *
 * @example
 * ```ts ignore
 * using board = await PcBoard.create({ ramSize: 128n << 20n });
 * const web = await WebServer.start(parseWebOption("0"));
 * await serveMapOnly(web, [board.memory, board.cpuMemory, board.io], interrupted);
 * await web.close();
 * ```
 */
export async function serveMapOnly(
  server: WebServer,
  spaces: readonly AddressSpace[],
  until: Promise<unknown>,
  memslots?: () => readonly SlotLike[],
): Promise<void> {
  const session = new WebSession(server, { spaces, cpus: 0, ...(memslots ? { memslots } : {}) });
  server.attach({}); // nothing to kick: this thread waits on the channel itself
  let done = false;
  until.finally(() => done = true).catch(() => {});
  try {
    while (!done) {
      await server.waitAsync(MAP_ONLY_POLL_MS);
      while (session.pump()) { /* every waiting command */ }
    }
  } finally {
    session.close();
  }
}
