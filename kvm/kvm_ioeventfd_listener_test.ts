/**
 * The KVM ioeventfd listener without KVM: a real `AddressSpace` drives it, a recording fake stands
 * for the VM.
 */
import assert from "node:assert/strict";
import { AddressSpace, MemoryRegion } from "../memory/mod.ts";
import { type IoeventfdBackend, KvmIoeventfdListener } from "./kvm_ioeventfd_listener.ts";
import type { FdLike, IoeventfdMatch } from "./vm.ts";

function recordingVm() {
  const log: string[] = [];
  const describe = (fd: FdLike, m: IoeventfdMatch) =>
    `fd=${typeof fd === "number" ? fd : fd.fd} ${m.space} 0x${m.address.toString(16)}/${m.length}`;
  const vm: IoeventfdBackend & { closed: boolean } = {
    closed: false,
    registerIoeventfd: (fd, match) => void log.push(`add ${describe(fd, match)}`),
    unregisterIoeventfd: (fd, match) => void log.push(`del ${describe(fd, match)}`),
  };
  return { vm, log };
}

function notifyBoard() {
  const root = MemoryRegion.container("system", 1n << 64n);
  const notify = MemoryRegion.io("notify", 0x1000, { read: () => 0, write() {} });
  root.addSubregion(0xfe00_0000n, notify);
  return { notify, as: new AddressSpace(root, "memory") };
}

Deno.test("an eventfd's arrival and departure are KVM_IOEVENTFD assign and deassign at its address", () => {
  const { notify, as } = notifyBoard();
  using _ = as;
  const { vm, log } = recordingVm();
  as.registerListener(new KvmIoeventfdListener(vm, "mmio"));
  const eventfd = { fd: 7 };
  notify.addEventfd(4, 2, false, 0n, eventfd);
  notify.delEventfd(4, 2, false, 0n, eventfd);
  assert.deepEqual(log, ["add fd=7 mmio 0xfe000004/2", "del fd=7 mmio 0xfe000004/2"]);
});

Deno.test("on a closed VM an eventfd that goes makes no call: KVM dropped it with the VM", () => {
  const { notify, as } = notifyBoard();
  const { vm, log } = recordingVm();
  as.registerListener(new KvmIoeventfdListener(vm, "mmio"));
  notify.addEventfd(4, 2, false, 0n, { fd: 7 });
  log.length = 0;
  vm.closed = true;
  as.close();
  assert.deepEqual(log, []);
});
