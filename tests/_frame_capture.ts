/**
 * A raw socket on an interface in a network namespace (python3's AF_PACKET: Deno has none) that
 * records every frame arriving there, for the tests that check what a card puts on the wire
 * (announcements).
 *
 * @module
 */

import { commandMissing } from "../kvm/_testing.ts";

/** Every ethertype (Linux's ETH_P_ALL), RARP's, and ARP's. */
export const ETH_P_ALL = 0x0003;
export const ETH_P_RARP = 0x8035;
export const ETH_P_ARP = 0x0806;

/** Prints each frame of ethertype argv[2] that reaches the interface argv[1], in hex, one per line. */
const CAPTURE = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(int(sys.argv[2])))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    print(s.recv(65536).hex(), flush=True)
`;

/** Why a capture cannot run here (python3 missing), or undefined. */
export function python3Missing(): string | undefined {
  return commandMissing("python3", "the test's raw socket");
}

/** The frames seen on one interface so far (hex), growing as they come; needs root. */
export class FrameCapture implements AsyncDisposable {
  /** Each frame, in hex, in arrival order. */
  readonly frames: string[] = [];
  /** Resolves once the socket is bound: frames from then on are recorded. */
  readonly ready: Promise<void>;
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<void>;

  /** Starts capturing frames of `ethertype` (default: all) on `iface` in `namespace`. */
  constructor(namespace: string, iface: string, ethertype: number = ETH_P_ALL) {
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", namespace, "python3", "-u", "-c", CAPTURE, iface, String(ethertype)],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    let ready!: () => void;
    let failed!: (error: Error) => void;
    this.ready = new Promise((resolve, reject) => {
      ready = resolve;
      failed = reject;
    });
    const stdout = this.#child.stdout;
    this.#done = (async () => {
      let rest = "";
      for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        const lines = rest.split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          if (line === "ready") ready();
          else if (line !== "") this.frames.push(line);
        }
      }
      // Ended before (or after) it was ready: a capture that never started says so.
      failed(new Error(`the capture on ${iface} in ${namespace} ended (python3's raw socket failed?)`));
    })();
  }

  /** Stops the capture. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill();
    } catch {
      // python3 had exited already
    }
    await this.#child.status;
    await this.#done;
    this.ready.catch(() => {}); // a rejection nobody waited for is not an error here
  }
}
