import assert from "node:assert/strict";
import { ioctlBuf, ioctlNone } from "./_syscalls.ts";
import { EventFd } from "./event_fd.ts";
import { KVM_SIGNAL_MSI } from "./ioctls.ts";
import { KvmError } from "./kvm_error.ts";

/** FIOCLEX: close-on-exec, which every fd takes (the VFS answers it, not the file). */
const FIOCLEX = 0x5451;

Deno.test("an ioctl's detail function is called only when the call fails, and its text is in the error", () => {
  let made = 0;
  const detail = () => {
    made++;
    return "address 0xfee00000";
  };
  assert.throws(
    () => ioctlBuf(-1, KVM_SIGNAL_MSI, new Uint8Array(32), "KVM_SIGNAL_MSI", detail),
    (e: unknown) => e instanceof KvmError && /EBADF/.test(e.message) && /address 0xfee00000/.test(e.message),
  );
  assert.equal(made, 1);
  using event = new EventFd();
  assert.equal(ioctlNone(event.fd, FIOCLEX, "FIOCLEX", detail), 0);
  assert.equal(made, 1, "not made for a call that succeeded");
});
