import assert from "node:assert/strict";
import { EventFd, EVENTFD_MAX } from "./event_fd.ts";
import { KvmError } from "./kvm_error.ts";
import { fdCount } from "./_testing.ts";

Deno.test("EventFd: writes add up, a read takes the counter, an empty non-blocking read is 0n", () => {
  using event = new EventFd();
  assert.ok(event.fd >= 0);
  assert.equal(event.read(), 0n);
  event.write();
  event.write(41);
  assert.equal(event.read(), 42n);
  assert.equal(event.read(), 0n);
});

Deno.test("EventFd: an initial value, and semaphore mode takes one at a time", () => {
  using event = new EventFd({ initial: 2, semaphore: true });
  assert.equal(event.read(), 1n);
  assert.equal(event.read(), 1n);
  assert.equal(event.read(), 0n);
});

Deno.test("EventFd: the counter saturates at 2^64 - 2; one more is EAGAIN, not a wrap", () => {
  using event = new EventFd();
  event.write(EVENTFD_MAX);
  assert.throws(() => event.write(1), (error: unknown) => {
    assert.ok(error instanceof KvmError);
    assert.equal(error.code, "EAGAIN");
    assert.equal(error.op, "write eventfd");
    return true;
  });
  assert.equal(event.read(), EVENTFD_MAX);
  assert.throws(() => event.write(0), RangeError);
  assert.throws(() => event.write(EVENTFD_MAX + 1n), RangeError);
  assert.throws(() => new EventFd({ initial: -1 }), RangeError);
});

Deno.test("EventFd: close is idempotent, releases the fd, and later use is BadResource", () => {
  const before = fdCount();
  const event = new EventFd();
  assert.equal(fdCount(), before + 1);
  event.close();
  event.close();
  assert.equal(fdCount(), before);
  assert.equal(event.closed, true);
  assert.equal(event.fd, -1);
  assert.throws(() => event.read(), Deno.errors.BadResource);
  assert.throws(() => event.write(), Deno.errors.BadResource);
});

Deno.test("EventFd: the fd is close-on-exec", () => {
  using event = new EventFd();
  const flags = Deno.readTextFileSync(`/proc/self/fdinfo/${event.fd}`).match(/^flags:\s+(\d+)/m)?.[1];
  assert.ok(flags !== undefined);
  assert.ok((parseInt(flags, 8) & 0o2_000_000) !== 0, `flags ${flags}`);
  assert.ok((parseInt(flags, 8) & 0o4_000) !== 0, "O_NONBLOCK");
});

Deno.test("EventFd: a blocking eventfd with a non-zero counter reads without sleeping", () => {
  using event = new EventFd({ nonBlocking: false, initial: 7 });
  assert.equal(event.read(), 7n);
});
