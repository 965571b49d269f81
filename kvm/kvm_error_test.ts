import assert from "node:assert/strict";
import { ERRNO_NAMES, errnoName, KVM_ERROR_PARTIAL, KvmError, kvmOpenError } from "./kvm_error.ts";

Deno.test("errno names of the common KVM and mmap failures", () => {
  const expected: Record<number, string> = {
    1: "EPERM",
    2: "ENOENT",
    4: "EINTR",
    7: "E2BIG",
    9: "EBADF",
    11: "EAGAIN",
    12: "ENOMEM",
    13: "EACCES",
    14: "EFAULT",
    16: "EBUSY",
    17: "EEXIST",
    19: "ENODEV",
    22: "EINVAL",
    24: "EMFILE",
    25: "ENOTTY",
    38: "ENOSYS",
  };
  for (const [errno, code] of Object.entries(expected)) assert.equal(errnoName(Number(errno)), code);
  assert.equal(errnoName(4095), "E#4095");
  assert.equal(ERRNO_NAMES[22][1], "Invalid argument");
});

Deno.test("KvmError carries errno, code, op; message has the detail and the hint", () => {
  const error = new KvmError("KVM_SET_USER_MEMORY_REGION", 22, { detail: "slot 1" });
  assert.ok(error instanceof Error);
  assert.equal(error.name, "KvmError");
  assert.equal(error.errno, 22);
  assert.equal(error.code, "EINVAL");
  assert.equal(error.op, "KVM_SET_USER_MEMORY_REGION");
  assert.match(
    error.message,
    /^KVM_SET_USER_MEMORY_REGION failed \(slot 1\): EINVAL \(errno 22, Invalid argument\)/,
  );
  assert.match(error.message, /4 KiB aligned/);
  assert.match(error.message, /READONLY/);
});

Deno.test("overlapping memslot and missing dirty logging get actionable hints", () => {
  assert.match(new KvmError("KVM_SET_USER_MEMORY_REGION", 17).message, /overlaps another memslot/);
  assert.match(new KvmError("KVM_GET_DIRTY_LOG", 2).message, /KVM_MEM_LOG_DIRTY_PAGES/);
  assert.match(new KvmError("KVM_RUN", 9).message, /closed/);
});

Deno.test("a pseudo-code has errno 0 and no errno text", () => {
  const error = new KvmError("KVM_SET_MSRS", 0, { code: KVM_ERROR_PARTIAL, detail: "1 of 2" });
  assert.equal(error.errno, 0);
  assert.equal(error.code, "PARTIAL");
  assert.match(error.message, /^KVM_SET_MSRS failed \(1 of 2\): PARTIAL: /);
});

Deno.test("open errors say what to do: load the module, or fix permissions", () => {
  const missing = kvmOpenError("/dev/kvm", 2);
  assert.equal(missing.code, "ENOENT");
  assert.equal(missing.op, "open /dev/kvm");
  assert.match(missing.message, /does not exist/);
  assert.match(missing.message, /modprobe kvm_intel/);

  for (const errno of [13, 1]) {
    const denied = kvmOpenError("/dev/kvm", errno);
    assert.match(denied.message, /group kvm/);
    assert.match(denied.message, /usermod -aG kvm/);
    assert.match(denied.message, /run as root/);
  }
});

Deno.test("each errno constant is named in ERRNO_NAMES by its own name, and every name has a constant", async () => {
  const constants = Object.entries(await import("./_errno.ts")).filter(([key]) => /^E[A-Z0-9]+$/.test(key));
  assert.ok(constants.length >= 20);
  for (const [name, value] of constants) assert.equal(ERRNO_NAMES[value as number]?.[0], name, name);
  assert.equal(Object.keys(ERRNO_NAMES).length, constants.length);
});
