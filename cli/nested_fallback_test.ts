import assert from "node:assert/strict";
import { hostKvm, kvmDeviceOpens } from "../kvm/mod.ts";
import { nestedReason } from "./nested_fallback.ts";

Deno.test("nestedReason: no /dev/kvm sends every guest to the nested VM, kvm_pvm only a Linux one", () => {
  if (Deno.env.get("KVM_TS_NESTED") === "1") return; // inside the nested VM nothing nests again
  assert.equal(nestedReason(false, "none"), "no /dev/kvm here");
  assert.equal(nestedReason(true, "none"), "no /dev/kvm here");
  assert.match(nestedReason(true, "software")!, /kvm_pvm/);
  assert.equal(nestedReason(false, "software"), undefined);
  assert.equal(nestedReason(true, "hardware"), undefined);
  // Without an answer given, this host's: for a guest that is not Linux, /dev/kvm alone decides.
  assert.equal(nestedReason(false), kvmDeviceOpens() ? undefined : "no /dev/kvm here");
  assert.equal(nestedReason(true), nestedReason(true, hostKvm()));
});
