/**
 * Which kernel modules the nested VM loads, and in what order, from the kernel's own `modules.dep`
 * (depmod's output: one line per module, `path: dependency paths…`, each path relative to
 * `/lib/modules/VERSION`). Pure: text in, paths out.
 *
 * @module
 */

/**
 * The modules the nested VM's init needs: the virtio PCI transport and 9p over it (the host's root
 * file system), overlayfs (a writable layer over it), `kvm_amd` (QEMU's emulated AMD SVM), and `tun`
 * (`/dev/net/tun`, for the tap tests and virtio-net guests).
 */
export const NESTED_MODULES: readonly string[] = [
  "virtio_pci",
  "9pnet_virtio",
  "9p",
  "overlay",
  "kvm_amd",
  "tun",
];

/** A module's name as the kernel compares it: its file name without `.ko[.xz|.zst|.gz]`, `-` read as `_`. */
export function moduleName(path: string): string {
  const file = path.slice(path.lastIndexOf("/") + 1);
  return file.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

/**
 * The parsed `modules.dep`: each module's name → its path and the paths it depends on.
 *
 * @throws {SyntaxError} naming the line when a non-empty line has no `:`.
 */
export function parseModulesDep(text: string): Map<string, { path: string; deps: string[] }> {
  const modules = new Map<string, { path: string; deps: string[] }>();
  text.split("\n").forEach((line, index) => {
    if (line.trim() === "") return;
    const colon = line.indexOf(":");
    if (colon < 0) throw new SyntaxError(`modules.dep line ${index + 1}: no ':' in "${line}"`);
    const path = line.slice(0, colon).trim();
    const deps = line.slice(colon + 1).trim().split(/\s+/).filter((dep) => dep !== "");
    modules.set(moduleName(path), { path, deps });
  });
  return modules;
}

/**
 * The paths to load, dependencies before the modules that need them, each once, for `wanted`.
 *
 * @throws {Error} naming the module when one of `wanted` (or a dependency) is not in `modules.dep`
 *   (built into the kernel, or a kernel without it).
 */
export function loadOrder(
  modules: ReadonlyMap<string, { path: string; deps: readonly string[] }>,
  wanted: readonly string[],
): string[] {
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string, neededBy: string | undefined) => {
    if (done.has(name)) return;
    const module = modules.get(name);
    if (module === undefined) {
      throw new Error(
        `kernel module ${name}${neededBy ? ` (needed by ${neededBy})` : ""} is not in modules.dep`,
      );
    }
    if (visiting.has(name)) throw new Error(`kernel module ${name} depends on itself in modules.dep`);
    visiting.add(name);
    for (const dep of module.deps) visit(moduleName(dep), name);
    visiting.delete(name);
    done.add(name);
    order.push(module.path);
  };
  for (const name of wanted) visit(moduleName(name), undefined);
  return order;
}
