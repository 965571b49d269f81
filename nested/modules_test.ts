import assert from "node:assert/strict";
import { loadOrder, moduleName, parseModulesDep } from "./modules.ts";

// The shape of Debian 6.1's modules.dep for the modules the nested VM loads (abridged).
const DEP = `
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-amd.ko.xz: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/virt/lib/irqbypass.ko:
kernel/drivers/crypto/ccp/ccp.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
`;

Deno.test("module names drop the directory and the (compressed) .ko suffix and read - as _", () => {
  assert.equal(moduleName("kernel/arch/x86/kvm/kvm-amd.ko.xz"), "kvm_amd");
  assert.equal(moduleName("kernel/fs/9p/9p.ko"), "9p");
  assert.equal(moduleName("kernel/fs/overlayfs/overlay.ko.zst"), "overlay");
});

Deno.test("dependencies load first, each once, in a stable order", () => {
  const order = loadOrder(parseModulesDep(DEP), ["kvm_amd", "9p", "kvm"]);
  assert.deepEqual(order, [
    "kernel/drivers/crypto/ccp/ccp.ko",
    "kernel/virt/lib/irqbypass.ko",
    "kernel/arch/x86/kvm/kvm.ko",
    "kernel/arch/x86/kvm/kvm-amd.ko.xz",
    "kernel/net/9p/9pnet.ko",
    "kernel/fs/netfs/netfs.ko",
    "kernel/fs/fscache/fscache.ko",
    "kernel/fs/9p/9p.ko",
  ]);
  // Whatever is asked for, every module comes after all of its dependencies.
  const modules = parseModulesDep(DEP);
  for (const path of order) {
    for (const dep of modules.get(moduleName(path))!.deps) {
      assert.ok(order.indexOf(dep) < order.indexOf(path));
    }
  }
});

Deno.test("a module missing from modules.dep is named, with the module that needs it", () => {
  assert.throws(
    () => loadOrder(parseModulesDep(DEP), ["overlay"]),
    /kernel module overlay is not in modules.dep/,
  );
  const broken = parseModulesDep("kernel/a.ko: kernel/b.ko\n");
  assert.throws(() => loadOrder(broken, ["a"]), /kernel module b \(needed by a\) is not in modules.dep/);
  assert.throws(() => parseModulesDep("kernel/a.ko kernel/b.ko\n"), /line 1: no ':'/);
  assert.throws(() => loadOrder(parseModulesDep("a.ko: b.ko\nb.ko: a.ko\n"), ["a"]), /depends on itself/);
});
