/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Test support for doorbell_test.ts: rings a doorbell once per entry of `pauses`, spinning that
 * many iterations before each ring, then says how many it rang.
 *
 * @module
 */

import { type Doorbell, doorbellRinger } from "./doorbell.ts";

/** The message that starts the Worker. */
export interface RingerInit {
  /** Where to ring. */
  doorbell: Doorbell;
  /** Spin iterations before each ring. */
  pauses: number[];
}

self.onmessage = (event: MessageEvent<RingerInit>) => {
  const ring = doorbellRinger(event.data.doorbell);
  let sink = 0;
  for (const pause of event.data.pauses) {
    for (let i = 0; i < pause; i++) sink += i & 1;
    ring();
  }
  self.postMessage({ rang: event.data.pauses.length, sink });
  self.close();
};
