/**
 * Boot loaders: pure functions from image bytes to a {@link BootPlan} (bytes to place in guest
 * memory, and the initial CPU state). Flat binaries in any CPU mode, Multiboot v1 kernels as
 * QEMU's `-kernel` loads them, Linux bzImages and ELF vmlinux files through the 64-bit boot
 * protocol, a bzImage's compressed payload, format detection, and the firmware reset entry. Every
 * address they write to is in `layout.ts`. An image may also be an {@link ImageSource} (an open
 * file, read by position): the loaders then read only its headers, and the plan names ranges of
 * it, which {@link copyBootWrites} copies into guest memory a chunk at a time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadKernel } from "./mod.ts";
 * import { HELLO64 } from "../guests/mod.ts";
 * const plan = await loadKernel(HELLO64, {
 *   cmdline: "hello64",
 *   e820: [{ addr: 0n, size: 0x9fc00n, type: 1 }, { addr: 0x100000n, size: 0x7f00000n, type: 1 }],
 *   ramSize: 0x800_0000n,
 * });
 * assert.equal(plan.cpu.gpr?.rbx, 0x9500n);
 * ```
 *
 * @module
 */

export {
  BOOT_RFLAGS,
  type BootPlan,
  type BootWrite,
  type CpuMode,
  E820_RAM,
  E820_RESERVED,
  type E820Entry,
} from "./boot_plan.ts";
/** Addresses and sizes in the loaders' options: a `number` or a `bigint`, as in the memory API. */
export type { AddrInput } from "../../memory/mod.ts";
export { LoaderError, type LoaderErrorCode } from "./loader_error.ts";
export {
  BOOT_COPY_CHUNK_SIZE,
  type BootSourceWrite,
  bootWriteLength,
  BytesSource,
  copyBootWrites,
  type CopyBootWritesOptions,
  type ImageSource,
  imageSource,
  readFileAt,
  readSource,
  ZERO_SOURCE,
} from "./image_source.ts";
export {
  BOOT_CODE32_SELECTOR,
  BOOT_CODE64_SELECTOR,
  BOOT_DATA_SELECTOR,
  BOOT_GDT_DESCRIPTORS,
  BOOT_GDT_SIZE,
  BOOT_GDT_START,
  BOOT_IDENTITY_MAP_END,
  BOOT_PAGE_TABLES_END,
  BOOT_PD_COUNT,
  BOOT_PD_START,
  BOOT_PDPT_START,
  BOOT_PML4_START,
  BOOT_STACK_START,
  BOOT_STACK_TOP,
  BOOT_UNCACHED_START,
  LINUX_CMDLINE_SIZE,
  LINUX_CMDLINE_START,
  LINUX_INITRD_LOWEST,
  LINUX_KERNEL_START,
  LINUX_ZERO_PAGE_SIZE,
  LINUX_ZERO_PAGE_START,
  MULTIBOOT_AREA_SIZE,
  MULTIBOOT_AREA_START,
  MULTIBOOT_CMDLINE_SIZE,
  MULTIBOOT_CMDLINE_START,
  MULTIBOOT_INFO_SIZE,
  MULTIBOOT_INFO_START,
  MULTIBOOT_LOADER_NAME_SIZE,
  MULTIBOOT_LOADER_NAME_START,
  MULTIBOOT_MMAP_SIZE,
  MULTIBOOT_MMAP_START,
} from "./layout.ts";
export { type FlatOptions, identityPageTables, loadFlat } from "./flat.ts";
export {
  findBadMultibootChecksum,
  findMultibootHeader,
  loadMultiboot,
  MULTIBOOT_BOOTLOADER_MAGIC,
  MULTIBOOT_HEADER_MAGIC,
  MULTIBOOT_INFO_FLAGS,
  MULTIBOOT_LOADER_NAME,
  type MultibootHeader,
  type MultibootKernel,
  type MultibootOptions,
  type MultibootSegment,
  parseMultiboot,
} from "./multiboot.ts";
export {
  type BzImageHeader,
  formatProtocol,
  LINUX_64BIT_ENTRY_OFFSET,
  LINUX_MIN_PROTOCOL,
  type LinuxOptions,
  loadBzImage,
  parseBzImage,
  XLF_CAN_BE_LOADED_ABOVE_4G_BIT,
  XLF_KERNEL_64_BIT,
} from "./linux.ts";
export {
  EM_X86_64,
  loadVmlinux,
  parseVmlinux,
  type Vmlinux,
  VMLINUX_CMDLINE_SIZE,
  VMLINUX_INITRD_ADDR_MAX,
  VMLINUX_KERNEL_ALIGNMENT,
  VMLINUX_PROTOCOL,
  type VmlinuxSegment,
} from "./vmlinux.ts";
export {
  type BzImagePayload,
  bzImagePayload,
  decompressCommand,
  PAYLOAD_MIN_PROTOCOL,
  type PayloadFormat,
  payloadFormat,
} from "./bzimage_payload.ts";
export {
  detectFormat,
  KERNEL_PROBE_SIZE,
  type KernelFormat,
  type KernelOptions,
  loadKernel,
  probeKernel,
} from "./detect.ts";
export { firmwareEntry, RESET_CS_BASE, RESET_CS_SELECTOR, RESET_IP } from "./firmware.ts";
export { type CpioEntry, cpioNewc } from "./cpio.ts";
export {
  findPvhEntry,
  HVM_START_MAGIC,
  loadPvh,
  PVH_START_INFO_START,
  type PvhOptions,
  XEN_ELFNOTE_PHYS32_ENTRY,
} from "./pvh.ts";
