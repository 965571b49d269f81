/**
 * Kernel structs of the KVM ABI, each declared once as data (field name, offset, type) and
 * encoded/decoded with `DataView`, little-endian (x86-64).
 *
 * Field names are the kernel's (`guest_phys_addr`), so a table can be read side by side with
 * `include/uapi/linux/kvm.h` and `arch/x86/include/uapi/asm/kvm.h`; the decoded JS objects use
 * camelCase (`guestPhysAddr`), derived from the same table at the type level and at run time.
 * Padding and reserved fields are left out of the tables: encoding starts from a zero-filled buffer,
 * which is what the kernel expects of them. Sizes and offsets are pinned to the kernel's numbers in
 * `_structs_test.ts`.
 *
 * @module
 */

/** A little-endian integer field. `u64` decodes to `bigint`, the others to `number`. */
export type ScalarType = "u8" | "u16" | "u32" | "i32" | "u64";

/** The type of one field: a scalar, raw bytes, an array of u64, or a nested struct. */
export type FieldType =
  | ScalarType
  | { readonly bytes: number }
  | { readonly u64s: number }
  | { readonly struct: StructLayout };

/** One field: kernel name, byte offset from the start of the struct, type. */
export type Field = readonly [name: string, offset: number, type: FieldType];

/** A struct declared as data. `size` is the kernel's `sizeof`. */
export interface StructLayout<F extends readonly Field[] = readonly Field[]> {
  /** The kernel's struct name, for messages. */
  readonly name: string;
  /** `sizeof(struct name)` on x86-64. */
  readonly size: number;
  /** Fields in offset order. */
  readonly fields: F;
  /** JS (camelCase) name of each field, same order as `fields`. */
  readonly jsNames: readonly string[];
}

/** `guest_phys_addr` → `guestPhysAddr`. */
export type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;

/** The JS value of a field of type `T`. */
export type FieldValue<T> = T extends "u64" ? bigint
  : T extends ScalarType ? number
  : T extends { readonly bytes: number } ? Uint8Array
  : T extends { readonly u64s: number } ? bigint[]
  : T extends { readonly struct: StructLayout<infer F> } ? StructValue<F>
  : never;

/** The plain object a struct decodes to: one camelCase property per field. */
export type StructValue<F extends readonly Field[]> = {
  -readonly [K in F[number] as CamelCase<K[0]>]: FieldValue<K[2]>;
};

/** The plain object type of a layout. */
export type ValueOf<L> = L extends StructLayout<infer F> ? StructValue<F> : never;

/**
 * `true` when `A` and `B` are the same type (same properties, same modifiers), else `false`. The
 * public struct interfaces of `vcpu.ts` and `vm.ts` are written out for their documentation and
 * checked against their layouts with it: `type _Check = AssertTrue<SameType<KvmRegs, ValueOf<…>>>`
 * fails `deno check` as soon as a table and its interface disagree.
 */
export type SameType<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;

/** Accepts only `true`: the compile-time assertion used with {@link SameType}. */
export type AssertTrue<T extends true> = T;

function camelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function fieldSize(type: FieldType): number {
  switch (type) {
    case "u8":
      return 1;
    case "u16":
      return 2;
    case "u32":
    case "i32":
      return 4;
    case "u64":
      return 8;
  }
  if ("bytes" in type) return type.bytes;
  if ("u64s" in type) return type.u64s * 8;
  return type.struct.size;
}

/**
 * Declares a struct. Checks at load time that every field lies inside `size` and that fields do
 * not overlap, so a typo in a table fails loudly at import rather than corrupting an ioctl.
 */
export function defineStruct<const F extends readonly Field[]>(
  name: string,
  size: number,
  fields: F,
): StructLayout<F> {
  let end = 0;
  for (const [field, offset, type] of fields) {
    if (offset < end) throw new Error(`${name}.${field} @${offset} overlaps the previous field`);
    end = offset + fieldSize(type);
    if (end > size) throw new Error(`${name}.${field} ends at ${end}, beyond sizeof ${size}`);
  }
  return { name, size, fields, jsNames: fields.map(([field]) => camelCase(field)) };
}

/** Byte offset of each field, keyed by camelCase name (relative to the struct start). */
export function offsetsOf<F extends readonly Field[]>(
  layout: StructLayout<F>,
): { readonly [K in F[number] as CamelCase<K[0]>]: number } {
  const out: Record<string, number> = {};
  layout.fields.forEach(([, offset], i) => out[layout.jsNames[i]] = offset);
  return out as { readonly [K in F[number] as CamelCase<K[0]>]: number };
}

const U8_MAX = 0xff;
const U16_MAX = 0xffff;
const U32_MAX = 0xffff_ffff;
const I32_MIN = -0x8000_0000;
const I32_MAX = 0x7fff_ffff;
const U64_MAX = (1n << 64n) - 1n;

/** Reads one struct at `base` of `view`. Byte fields are copied, never views into `view`. */
export function decodeStruct<F extends readonly Field[]>(
  layout: StructLayout<F>,
  view: DataView,
  base = 0,
): StructValue<F> {
  const out: Record<string, unknown> = {};
  const { fields, jsNames } = layout;
  for (let i = 0; i < fields.length; i++) {
    const [, offset, type] = fields[i];
    const at = base + offset;
    let value: unknown;
    switch (type) {
      case "u8":
        value = view.getUint8(at);
        break;
      case "u16":
        value = view.getUint16(at, true);
        break;
      case "u32":
        value = view.getUint32(at, true);
        break;
      case "i32":
        value = view.getInt32(at, true);
        break;
      case "u64":
        value = view.getBigUint64(at, true);
        break;
      default:
        if ("bytes" in type) {
          value = new Uint8Array(view.buffer.slice(view.byteOffset + at, view.byteOffset + at + type.bytes));
        } else if ("u64s" in type) {
          const words: bigint[] = [];
          for (let w = 0; w < type.u64s; w++) words.push(view.getBigUint64(at + w * 8, true));
          value = words;
        } else {
          value = decodeStruct(type.struct, view, at);
        }
    }
    out[jsNames[i]] = value;
  }
  return out as StructValue<F>;
}

function checkInteger(where: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${where} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

function checkU64(where: string, value: unknown): bigint {
  if (typeof value !== "bigint" || value < 0n || value > U64_MAX) {
    throw new RangeError(`${where} must be a bigint in [0, 2^64), got ${String(value)}`);
  }
  return value;
}

/**
 * Writes `value` as a struct at `base` of `view`. Every field must be present; integers are range
 * checked (`RangeError` naming `struct.field`). Bytes not covered by a field are left as they are,
 * so encode into a zero-filled buffer.
 */
export function encodeStruct<F extends readonly Field[]>(
  layout: StructLayout<F>,
  value: StructValue<F>,
  view: DataView,
  base = 0,
): void {
  const { fields, jsNames } = layout;
  const record = value as Record<string, unknown>;
  for (let i = 0; i < fields.length; i++) {
    const [, offset, type] = fields[i];
    const where = `${layout.name}.${jsNames[i]}`;
    const v = record[jsNames[i]];
    const at = base + offset;
    switch (type) {
      case "u8":
        view.setUint8(at, checkInteger(where, v, 0, U8_MAX));
        break;
      case "u16":
        view.setUint16(at, checkInteger(where, v, 0, U16_MAX), true);
        break;
      case "u32":
        view.setUint32(at, checkInteger(where, v, 0, U32_MAX), true);
        break;
      case "i32":
        view.setInt32(at, checkInteger(where, v, I32_MIN, I32_MAX), true);
        break;
      case "u64":
        view.setBigUint64(at, checkU64(where, v), true);
        break;
      default:
        if ("bytes" in type) {
          if (!(v instanceof Uint8Array) || v.length !== type.bytes) {
            throw new RangeError(`${where} must be a Uint8Array of ${type.bytes} bytes`);
          }
          new Uint8Array(view.buffer, view.byteOffset + at, type.bytes).set(v);
        } else if ("u64s" in type) {
          if (!Array.isArray(v) || v.length !== type.u64s) {
            throw new RangeError(`${where} must be an array of ${type.u64s} bigints`);
          }
          v.forEach((word, w) => view.setBigUint64(at + w * 8, checkU64(`${where}[${w}]`, word), true));
        } else {
          if (typeof v !== "object" || v === null) throw new TypeError(`${where} must be an object`);
          encodeStruct(type.struct, v as StructValue<readonly Field[]>, view, at);
        }
    }
  }
}

/** A zero-filled buffer of `size` bytes with its DataView. */
export function structBuffer(size: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(size);
  return { bytes, view: new DataView(bytes.buffer) };
}

/** Encodes one struct into a fresh zero-filled buffer of its size. */
export function encodeToBytes<F extends readonly Field[]>(
  layout: StructLayout<F>,
  value: StructValue<F>,
): Uint8Array {
  const { bytes, view } = structBuffer(layout.size);
  encodeStruct(layout, value, view);
  return bytes;
}

/** Decodes one struct from the start of `bytes`. */
export function decodeFromBytes<F extends readonly Field[]>(
  layout: StructLayout<F>,
  bytes: Uint8Array,
): StructValue<F> {
  return decodeStruct(layout, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

// ---------------------------------------------------------------------------------------------
// Memslots and dirty logging (include/uapi/linux/kvm.h)

/** `struct kvm_userspace_memory_region` (api.rst KVM_SET_USER_MEMORY_REGION). */
export const KVM_USERSPACE_MEMORY_REGION_LAYOUT = defineStruct("kvm_userspace_memory_region", 32, [
  ["slot", 0, "u32"], // as_id << 16 | slot index
  ["flags", 4, "u32"], // KVM_MEM_LOG_DIRTY_PAGES 1, KVM_MEM_READONLY 2
  ["guest_phys_addr", 8, "u64"],
  ["memory_size", 16, "u64"], // 0 deletes the slot
  ["userspace_addr", 24, "u64"],
]);

/** `struct kvm_dirty_log` (api.rst KVM_GET_DIRTY_LOG); the bitmap is a pointer. */
export const KVM_DIRTY_LOG_LAYOUT = defineStruct("kvm_dirty_log", 16, [
  ["slot", 0, "u32"],
  ["dirty_bitmap", 8, "u64"], // void __user * (union with a u64 for padding)
]);

/** `struct kvm_clear_dirty_log` (api.rst KVM_CLEAR_DIRTY_LOG). */
export const KVM_CLEAR_DIRTY_LOG_LAYOUT = defineStruct("kvm_clear_dirty_log", 24, [
  ["slot", 0, "u32"],
  ["num_pages", 4, "u32"],
  ["first_page", 8, "u64"],
  ["dirty_bitmap", 16, "u64"], // void __user *
]);

// ---------------------------------------------------------------------------------------------
// VM-level structs

/** `struct kvm_irq_routing` header (api.rst KVM_SET_GSI_ROUTING); entries follow at 8. */
export const KVM_IRQ_ROUTING_LAYOUT = defineStruct("kvm_irq_routing", 8, [
  ["nr", 0, "u32"],
  ["flags", 4, "u32"],
]);

/**
 * `struct kvm_irq_routing_entry` without its union: 48 bytes, the union `u` (`__u32 pad[8]`, 32
 * bytes) starting at {@link KVM_IRQ_ROUTING_ENTRY_UNION_START}. Its members are declared apart, as
 * the `kvm_run` exit union's are, with offsets relative to the union.
 */
export const KVM_IRQ_ROUTING_ENTRY_LAYOUT = defineStruct("kvm_irq_routing_entry", 48, [
  ["gsi", 0, "u32"],
  ["type", 4, "u32"], // KVM_IRQ_ROUTING_IRQCHIP 1, KVM_IRQ_ROUTING_MSI 2
  ["flags", 8, "u32"], // KVM_MSI_VALID_DEVID for an MSI entry with a device id, else 0
  // __u32 pad @12
]);

/** Offset of the union `u` in `struct kvm_irq_routing_entry`. */
export const KVM_IRQ_ROUTING_ENTRY_UNION_START = 16;

/** `u.irqchip` of a routing entry: an input pin of an in-kernel interrupt controller. */
export const KVM_IRQ_ROUTING_IRQCHIP_LAYOUT = defineStruct("kvm_irq_routing_irqchip", 8, [
  ["irqchip", 0, "u32"], // KVM_IRQCHIP_PIC_MASTER 0, PIC_SLAVE 1, IOAPIC 2
  ["pin", 4, "u32"],
]);

/** `u.msi` of a routing entry: the message a PCI function would write (x86: to 0xfeexxxxx). */
export const KVM_IRQ_ROUTING_MSI_LAYOUT = defineStruct("kvm_irq_routing_msi", 16, [
  ["address_lo", 0, "u32"],
  ["address_hi", 4, "u32"],
  ["data", 8, "u32"],
  ["devid", 12, "u32"], // union with __u32 pad; only read with KVM_MSI_VALID_DEVID
]);

/** `struct kvm_irqfd` (api.rst KVM_IRQFD): then `__u8 pad[16]`. */
export const KVM_IRQFD_LAYOUT = defineStruct("kvm_irqfd", 32, [
  ["fd", 0, "u32"],
  ["gsi", 4, "u32"],
  ["flags", 8, "u32"], // KVM_IRQFD_FLAG_DEASSIGN 1, KVM_IRQFD_FLAG_RESAMPLE 2
  ["resamplefd", 12, "u32"],
]);

/** `struct kvm_ioeventfd` (api.rst KVM_IOEVENTFD): then `__u8 pad[36]`. */
export const KVM_IOEVENTFD_LAYOUT = defineStruct("kvm_ioeventfd", 64, [
  ["datamatch", 0, "u64"],
  ["addr", 8, "u64"], // a port with KVM_IOEVENTFD_FLAG_PIO, else a guest-physical address
  ["len", 16, "u32"], // 0 (any length), 1, 2, 4 or 8
  ["fd", 20, "i32"],
  ["flags", 24, "u32"], // DATAMATCH 1, PIO 2, DEASSIGN 4
]);

/** `struct kvm_coalesced_mmio_zone` (api.rst KVM_REGISTER_COALESCED_MMIO). */
export const KVM_COALESCED_MMIO_ZONE_LAYOUT = defineStruct("kvm_coalesced_mmio_zone", 16, [
  ["addr", 0, "u64"], // a port when pio is 1, else a guest-physical address
  ["size", 8, "u32"],
  ["pio", 12, "u32"],
]);

/**
 * One entry of the coalesced-MMIO ring (`struct kvm_coalesced_mmio`): then `__u8 data[8]` at 16.
 * The ring (`struct kvm_coalesced_mmio_ring`) is `__u32 first, last` and the entries from byte 8.
 */
export const KVM_COALESCED_MMIO_LAYOUT = defineStruct("kvm_coalesced_mmio", 24, [
  ["phys_addr", 0, "u64"],
  ["len", 8, "u32"],
  ["pio", 12, "u32"],
]);

/** `struct kvm_msi` (api.rst KVM_SIGNAL_MSI): then `__u8 pad[12]`. */
export const KVM_MSI_LAYOUT = defineStruct("kvm_msi", 32, [
  ["address_lo", 0, "u32"],
  ["address_hi", 4, "u32"],
  ["data", 8, "u32"],
  ["flags", 12, "u32"], // KVM_MSI_VALID_DEVID 1
  ["devid", 16, "u32"],
]);

/**
 * `struct kvm_irqchip` (api.rst KVM_GET_IRQCHIP): `chip_id` then, at 8, the chip's state as 512
 * raw bytes (`struct kvm_pic_state` or `struct kvm_ioapic_state`, whose `irr` u32 sits at 16).
 */
export const KVM_IRQCHIP_LAYOUT = defineStruct("kvm_irqchip", 520, [
  ["chip_id", 0, "u32"], // KVM_IRQCHIP_PIC_MASTER 0, PIC_SLAVE 1, IOAPIC 2
  // __u32 pad @4
  ["chip", 8, { bytes: 512 }],
]);

/** `struct kvm_irq_level` (api.rst KVM_IRQ_LINE). `irq` is a union with `status`. */
export const KVM_IRQ_LEVEL_LAYOUT = defineStruct("kvm_irq_level", 8, [
  ["irq", 0, "u32"],
  ["level", 4, "u32"],
]);

/** `struct kvm_pit_config` (api.rst KVM_CREATE_PIT2): flags then `__u32 pad[15]`. */
export const KVM_PIT_CONFIG_LAYOUT = defineStruct("kvm_pit_config", 64, [
  ["flags", 0, "u32"], // KVM_PIT_SPEAKER_DUMMY 1
]);

/** `struct kvm_enable_cap` (api.rst KVM_ENABLE_CAP). */
export const KVM_ENABLE_CAP_LAYOUT = defineStruct("kvm_enable_cap", 104, [
  ["cap", 0, "u32"],
  ["flags", 4, "u32"],
  ["args", 8, { u64s: 4 }], // then __u8 pad[64]
]);

// ---------------------------------------------------------------------------------------------
// Host structs of the I/O primitives (glibc x86-64 and include/uapi/linux/if.h)

/**
 * `struct flock` of `fcntl(2)` on x86-64 (the same as `struct flock64` there). OFD locks
 * (F_OFD_SETLK / F_OFD_GETLK) require `l_pid` 0.
 */
export const FLOCK_LAYOUT = defineStruct("flock", 32, [
  ["l_type", 0, "u16"], // short: F_RDLCK 0, F_WRLCK 1, F_UNLCK 2
  ["l_whence", 2, "u16"], // short: SEEK_SET 0
  ["l_start", 8, "u64"], // off_t; only non-negative offsets are used
  ["l_len", 16, "u64"], // off_t; 0 means "to the end of the file"
  ["l_pid", 24, "i32"],
]);

/**
 * The part of `struct ifreq` (40 bytes on x86-64) that TUNSETIFF reads and writes back: the
 * interface name (`IFNAMSIZ` 16 bytes, NUL-terminated) and, in the union at 16, `ifr_flags`.
 */
export const IFREQ_LAYOUT = defineStruct("ifreq", 40, [
  ["ifr_name", 0, { bytes: 16 }],
  ["ifr_flags", 16, "u16"], // short: IFF_TAP 0x2, IFF_NO_PI 0x1000, IFF_VNET_HDR 0x4000
]);

// ---------------------------------------------------------------------------------------------
// vCPU registers (arch/x86/include/uapi/asm/kvm.h)

/** `struct kvm_regs` (api.rst KVM_GET_REGS): 18 general registers. */
export const KVM_REGS_LAYOUT = defineStruct("kvm_regs", 144, [
  ["rax", 0, "u64"],
  ["rbx", 8, "u64"],
  ["rcx", 16, "u64"],
  ["rdx", 24, "u64"],
  ["rsi", 32, "u64"],
  ["rdi", 40, "u64"],
  ["rsp", 48, "u64"],
  ["rbp", 56, "u64"],
  ["r8", 64, "u64"],
  ["r9", 72, "u64"],
  ["r10", 80, "u64"],
  ["r11", 88, "u64"],
  ["r12", 96, "u64"],
  ["r13", 104, "u64"],
  ["r14", 112, "u64"],
  ["r15", 120, "u64"],
  ["rip", 128, "u64"],
  ["rflags", 136, "u64"],
]);

/** `struct kvm_segment`: a segment register with its hidden descriptor cache. */
export const KVM_SEGMENT_LAYOUT = defineStruct("kvm_segment", 24, [
  ["base", 0, "u64"],
  ["limit", 8, "u32"],
  ["selector", 12, "u16"],
  ["type", 14, "u8"],
  ["present", 15, "u8"],
  ["dpl", 16, "u8"],
  ["db", 17, "u8"],
  ["s", 18, "u8"],
  ["l", 19, "u8"],
  ["g", 20, "u8"],
  ["avl", 21, "u8"],
  ["unusable", 22, "u8"],
  // __u8 padding @23
]);

/** `struct kvm_dtable`: GDTR / IDTR. */
export const KVM_DTABLE_LAYOUT = defineStruct("kvm_dtable", 16, [
  ["base", 0, "u64"],
  ["limit", 8, "u16"],
  // __u16 padding[3] @10
]);

/** `struct kvm_sregs` (api.rst KVM_GET_SREGS). */
export const KVM_SREGS_LAYOUT = defineStruct("kvm_sregs", 312, [
  ["cs", 0, { struct: KVM_SEGMENT_LAYOUT }],
  ["ds", 24, { struct: KVM_SEGMENT_LAYOUT }],
  ["es", 48, { struct: KVM_SEGMENT_LAYOUT }],
  ["fs", 72, { struct: KVM_SEGMENT_LAYOUT }],
  ["gs", 96, { struct: KVM_SEGMENT_LAYOUT }],
  ["ss", 120, { struct: KVM_SEGMENT_LAYOUT }],
  ["tr", 144, { struct: KVM_SEGMENT_LAYOUT }],
  ["ldt", 168, { struct: KVM_SEGMENT_LAYOUT }],
  ["gdt", 192, { struct: KVM_DTABLE_LAYOUT }],
  ["idt", 208, { struct: KVM_DTABLE_LAYOUT }],
  ["cr0", 224, "u64"],
  ["cr2", 232, "u64"],
  ["cr3", 240, "u64"],
  ["cr4", 248, "u64"],
  ["cr8", 256, "u64"],
  ["efer", 264, "u64"],
  ["apic_base", 272, "u64"],
  ["interrupt_bitmap", 280, { u64s: 4 }], // (KVM_NR_INTERRUPTS + 63) / 64
]);

/** `struct kvm_fpu` (api.rst KVM_GET_FPU): x87 and SSE state in FXSAVE-like form. */
export const KVM_FPU_LAYOUT = defineStruct("kvm_fpu", 416, [
  ["fpr", 0, { bytes: 128 }], // __u8 fpr[8][16]
  ["fcw", 128, "u16"],
  ["fsw", 130, "u16"],
  ["ftwx", 132, "u8"], // abridged tag word; __u8 pad1 @133
  ["last_opcode", 134, "u16"],
  ["last_ip", 136, "u64"],
  ["last_dp", 144, "u64"],
  ["xmm", 152, { bytes: 256 }], // __u8 xmm[16][16]
  ["mxcsr", 408, "u32"], // __u32 pad2 @412
]);

/**
 * `struct kvm_guest_debug` (api.rst KVM_SET_GUEST_DEBUG), with x86's `struct kvm_guest_debug_arch`
 * (`__u64 debugreg[8]`) at 8: DR0–DR3 are the breakpoint addresses, DR7 the control word; DR4–DR6
 * are not read.
 */
export const KVM_GUEST_DEBUG_LAYOUT = defineStruct("kvm_guest_debug", 72, [
  ["control", 0, "u32"], // KVM_GUESTDBG_ENABLE 1, SINGLESTEP 2, USE_SW_BP 0x10000, USE_HW_BP 0x20000
  // __u32 pad @4
  ["debugreg", 8, { u64s: 8 }],
]);

/**
 * `struct kvm_translation` (api.rst KVM_TRANSLATE): a guest-virtual address in, the guest-physical
 * address and its page's attributes out, through the vCPU's current page tables.
 */
export const KVM_TRANSLATION_LAYOUT = defineStruct("kvm_translation", 24, [
  ["linear_address", 0, "u64"], // in
  ["physical_address", 8, "u64"], // out
  ["valid", 16, "u8"],
  ["writeable", 17, "u8"],
  ["usermode", 18, "u8"],
  // __u8 pad[5] @19
]);

/** Header of `struct kvm_msrs` (api.rst KVM_GET_MSRS); entries follow at {@link KVM_MSRS_LAYOUT}`.size`. */
export const KVM_MSRS_LAYOUT = defineStruct("kvm_msrs", 8, [
  ["nmsrs", 0, "u32"],
]);

/** `struct kvm_msr_entry`. */
export const KVM_MSR_ENTRY_LAYOUT = defineStruct("kvm_msr_entry", 16, [
  ["index", 0, "u32"],
  // __u32 reserved @4
  ["data", 8, "u64"],
]);

/** Header of `struct kvm_msr_list` (api.rst KVM_GET_MSR_INDEX_LIST); `__u32 indices[]` follow. */
export const KVM_MSR_LIST_LAYOUT = defineStruct("kvm_msr_list", 4, [
  ["nmsrs", 0, "u32"],
]);

/** Header of `struct kvm_cpuid2` (api.rst KVM_GET_SUPPORTED_CPUID); entries follow. */
export const KVM_CPUID2_LAYOUT = defineStruct("kvm_cpuid2", 8, [
  ["nent", 0, "u32"],
]);

/** `struct kvm_cpuid_entry2`. */
export const KVM_CPUID_ENTRY2_LAYOUT = defineStruct("kvm_cpuid_entry2", 40, [
  ["function", 0, "u32"],
  ["index", 4, "u32"],
  ["flags", 8, "u32"], // KVM_CPUID_FLAG_SIGNIFCANT_INDEX 1
  ["eax", 12, "u32"],
  ["ebx", 16, "u32"],
  ["ecx", 20, "u32"],
  ["edx", 24, "u32"],
  // __u32 padding[3] @28
]);

/** `struct kvm_lapic_state` (api.rst KVM_GET_LAPIC): the raw 1 KiB APIC register page. */
export const KVM_LAPIC_STATE_LAYOUT = defineStruct("kvm_lapic_state", 1024, [
  ["regs", 0, { bytes: 1024 }],
]);

/** `struct kvm_mp_state` (api.rst KVM_GET_MP_STATE). */
export const KVM_MP_STATE_LAYOUT = defineStruct("kvm_mp_state", 4, [
  ["mp_state", 0, "u32"],
]);

/** `exception` member of `struct kvm_vcpu_events`. */
export const KVM_VCPU_EVENTS_EXCEPTION_LAYOUT = defineStruct("kvm_vcpu_events.exception", 8, [
  ["injected", 0, "u8"],
  ["nr", 1, "u8"],
  ["has_error_code", 2, "u8"],
  ["pending", 3, "u8"], // needs KVM_CAP_EXCEPTION_PAYLOAD; was "pad" before
  ["error_code", 4, "u32"],
]);

/** `interrupt` member of `struct kvm_vcpu_events`. */
export const KVM_VCPU_EVENTS_INTERRUPT_LAYOUT = defineStruct("kvm_vcpu_events.interrupt", 4, [
  ["injected", 0, "u8"],
  ["nr", 1, "u8"],
  ["soft", 2, "u8"],
  ["shadow", 3, "u8"],
]);

/** `nmi` member of `struct kvm_vcpu_events`. */
export const KVM_VCPU_EVENTS_NMI_LAYOUT = defineStruct("kvm_vcpu_events.nmi", 4, [
  ["injected", 0, "u8"],
  ["pending", 1, "u8"],
  ["masked", 2, "u8"],
  // __u8 pad @3
]);

/** `smi` member of `struct kvm_vcpu_events`. */
export const KVM_VCPU_EVENTS_SMI_LAYOUT = defineStruct("kvm_vcpu_events.smi", 4, [
  ["smm", 0, "u8"],
  ["pending", 1, "u8"],
  ["smm_inside_nmi", 2, "u8"],
  ["latched_init", 3, "u8"],
]);

/** `triple_fault` member of `struct kvm_vcpu_events` (Linux 5.19+, KVM_CAP_X86_TRIPLE_FAULT_EVENT). */
export const KVM_VCPU_EVENTS_TRIPLE_FAULT_LAYOUT = defineStruct("kvm_vcpu_events.triple_fault", 1, [
  ["pending", 0, "u8"],
]);

/**
 * `struct kvm_vcpu_events` (api.rst KVM_GET_VCPU_EVENTS), 64 bytes, as in
 * `arch/x86/include/uapi/asm/kvm.h` of Linux 6.x (triple_fault since 5.19).
 */
export const KVM_VCPU_EVENTS_LAYOUT = defineStruct("kvm_vcpu_events", 64, [
  ["exception", 0, { struct: KVM_VCPU_EVENTS_EXCEPTION_LAYOUT }],
  ["interrupt", 8, { struct: KVM_VCPU_EVENTS_INTERRUPT_LAYOUT }],
  ["nmi", 12, { struct: KVM_VCPU_EVENTS_NMI_LAYOUT }],
  ["sipi_vector", 16, "u32"],
  ["flags", 20, "u32"], // KVM_VCPUEVENT_VALID_* (which members SET applies)
  ["smi", 24, { struct: KVM_VCPU_EVENTS_SMI_LAYOUT }],
  ["triple_fault", 28, { struct: KVM_VCPU_EVENTS_TRIPLE_FAULT_LAYOUT }],
  // __u8 reserved[26] @29
  ["exception_has_payload", 55, "u8"],
  ["exception_payload", 56, "u64"],
]);

// ---------------------------------------------------------------------------------------------
// struct kvm_run: the page mmap'd from the vCPU fd (api.rst, "The kvm_run structure")

/** `sizeof(struct kvm_run)`; the mapping itself is `KVM_GET_VCPU_MMAP_SIZE` bytes (PIO data and rings follow). */
export const KVM_RUN_SIZE = 2352;
/** Offset of the exit-specific union in `struct kvm_run`. */
export const KVM_RUN_EXIT_UNION_START = 32;
/** Size of the exit union (`char padding[256]`). */
export const KVM_RUN_EXIT_UNION_SIZE = 256;
/** Offset of the synchronized-registers area `s` (`char padding[2048]`). */
export const KVM_RUN_SYNC_REGS_START = 304;
/** Size of the synchronized-registers area. */
export const KVM_RUN_SYNC_REGS_SIZE = 2048;

/** The fixed part of `struct kvm_run`, before and after the exit union. */
export const KVM_RUN_LAYOUT = defineStruct("kvm_run", KVM_RUN_SIZE, [
  ["request_interrupt_window", 0, "u8"], // in
  ["immediate_exit", 1, "u8"], // in (KVM_CAP_IMMEDIATE_EXIT)
  ["exit_reason", 8, "u32"], // out
  ["ready_for_interrupt_injection", 12, "u8"],
  ["if_flag", 13, "u8"],
  ["flags", 14, "u16"],
  ["cr8", 16, "u64"],
  ["apic_base", 24, "u64"],
  ["kvm_valid_regs", 288, "u64"],
  ["kvm_dirty_regs", 296, "u64"],
]);

// Exit union members; offsets are relative to KVM_RUN_EXIT_UNION_START.

/** `hw` member (KVM_EXIT_UNKNOWN). */
export const KVM_RUN_HW_LAYOUT = defineStruct("kvm_run.hw", 8, [
  ["hardware_exit_reason", 0, "u64"],
]);

/** `fail_entry` member (KVM_EXIT_FAIL_ENTRY). */
export const KVM_RUN_FAIL_ENTRY_LAYOUT = defineStruct("kvm_run.fail_entry", 16, [
  ["hardware_entry_failure_reason", 0, "u64"],
  ["cpu", 8, "u32"],
]);

/** `ex` member (KVM_EXIT_EXCEPTION). */
export const KVM_RUN_EX_LAYOUT = defineStruct("kvm_run.ex", 8, [
  ["exception", 0, "u32"],
  ["error_code", 4, "u32"],
]);

/** `io` member (KVM_EXIT_IO): data is `count * size` bytes at `data_offset` from the start of kvm_run. */
export const KVM_RUN_IO_LAYOUT = defineStruct("kvm_run.io", 16, [
  ["direction", 0, "u8"], // KVM_EXIT_IO_IN 0, KVM_EXIT_IO_OUT 1
  ["size", 1, "u8"],
  ["port", 2, "u16"],
  ["count", 4, "u32"],
  ["data_offset", 8, "u64"],
]);

/** `kvm_run.eoi` (KVM_EXIT_IOAPIC_EOI, split irqchip): the vector the guest's LAPIC EOI'd. */
export const KVM_RUN_EOI_LAYOUT = defineStruct("kvm_run.eoi", 1, [
  ["vector", 0, "u8"],
]);

/** `debug` member (KVM_EXIT_DEBUG): `struct kvm_debug_exit_arch` on x86. */
export const KVM_RUN_DEBUG_LAYOUT = defineStruct("kvm_run.debug", 32, [
  ["exception", 0, "u32"],
  ["pc", 8, "u64"],
  ["dr6", 16, "u64"],
  ["dr7", 24, "u64"],
]);

/** `mmio` member (KVM_EXIT_MMIO). */
export const KVM_RUN_MMIO_LAYOUT = defineStruct("kvm_run.mmio", 24, [
  ["phys_addr", 0, "u64"],
  ["data", 8, { bytes: 8 }],
  ["len", 16, "u32"],
  ["is_write", 20, "u8"],
]);

/** `internal` member (KVM_EXIT_INTERNAL_ERROR). */
export const KVM_RUN_INTERNAL_LAYOUT = defineStruct("kvm_run.internal", 136, [
  ["suberror", 0, "u32"],
  ["ndata", 4, "u32"],
  ["data", 8, { u64s: 16 }],
]);

/** `system_event` member (KVM_EXIT_SYSTEM_EVENT); `ndata` was padding before Linux 5.18. */
export const KVM_RUN_SYSTEM_EVENT_LAYOUT = defineStruct("kvm_run.system_event", 136, [
  ["type", 0, "u32"],
  ["ndata", 4, "u32"],
  ["data", 8, { u64s: 16 }],
]);

// ---------------------------------------------------------------------------------------------
// State for snapshots (arch/x86/include/uapi/asm/kvm.h, include/uapi/linux/kvm.h)

/** `sizeof(struct kvm_xsave)` without KVM_CAP_XSAVE2: `__u32 region[1024]`. */
export const KVM_XSAVE_SIZE = 4096;

/**
 * `struct kvm_xsave` (api.rst KVM_GET_XSAVE): the guest's XSAVE area as the XSAVE instruction
 * lays it out. With KVM_CAP_XSAVE2 the buffer of KVM_GET_XSAVE2 is the size that capability
 * reports (`extra[]` follows the 4 KiB region), so the region is declared at its minimum.
 */
export const KVM_XSAVE_LAYOUT = defineStruct("kvm_xsave", KVM_XSAVE_SIZE, [
  ["region", 0, { bytes: KVM_XSAVE_SIZE }],
]);

/** Most extended control registers `struct kvm_xcrs` carries (`KVM_MAX_XCRS`). */
export const KVM_MAX_XCRS = 16;

/** `struct kvm_xcr`: one extended control register (XCR0 is index 0). */
export const KVM_XCR_LAYOUT = defineStruct("kvm_xcr", 16, [
  ["xcr", 0, "u32"],
  // __u32 reserved @4
  ["value", 8, "u64"],
]);

/** Header of `struct kvm_xcrs` (api.rst KVM_GET_XCRS): 16 `kvm_xcr` follow at 8, then `__u64 padding[16]`. */
export const KVM_XCRS_LAYOUT = defineStruct("kvm_xcrs", 392, [
  ["nr_xcrs", 0, "u32"],
  ["flags", 4, "u32"],
]);

/** Offset of the `xcrs[]` array in `struct kvm_xcrs`. */
export const KVM_XCRS_ENTRIES_START = 8;

/** `struct kvm_debugregs` (api.rst KVM_GET_DEBUGREGS): DR0–DR3, DR6, DR7; then `__u64 reserved[9]`. */
export const KVM_DEBUGREGS_LAYOUT = defineStruct("kvm_debugregs", 128, [
  ["db", 0, { u64s: 4 }],
  ["dr6", 32, "u64"],
  ["dr7", 40, "u64"],
  ["flags", 48, "u64"],
]);

/** `struct kvm_pit_channel_state`: one 8254 counter as the in-kernel PIT keeps it. */
export const KVM_PIT_CHANNEL_STATE_LAYOUT = defineStruct("kvm_pit_channel_state", 24, [
  ["count", 0, "u32"], // can be 65536
  ["latched_count", 4, "u16"],
  ["count_latched", 6, "u8"],
  ["status_latched", 7, "u8"],
  ["status", 8, "u8"],
  ["read_state", 9, "u8"],
  ["write_state", 10, "u8"],
  ["write_latch", 11, "u8"],
  ["rw_mode", 12, "u8"],
  ["mode", 13, "u8"],
  ["bcd", 14, "u8"],
  ["gate", 15, "u8"],
  ["count_load_time", 16, "u64"], // __s64 in host ktime nanoseconds; KVM rebases it on SET_PIT2
]);

/** `struct kvm_pit_state2` (api.rst KVM_GET_PIT2): three channels, flags, then `__u32 reserved[9]`. */
export const KVM_PIT_STATE2_LAYOUT = defineStruct("kvm_pit_state2", 112, [
  ["channels", 0, { bytes: 72 }], // struct kvm_pit_channel_state channels[3]
  ["flags", 72, "u32"], // KVM_PIT_FLAGS_HPET_LEGACY 1, KVM_PIT_FLAGS_SPEAKER_DATA_ON 2
]);

/** `struct kvm_clock_data` (api.rst KVM_GET_CLOCK): kvmclock's nanoseconds; then `__u32 pad[4]`. */
export const KVM_CLOCK_DATA_LAYOUT = defineStruct("kvm_clock_data", 48, [
  ["clock", 0, "u64"],
  ["flags", 8, "u32"], // KVM_CLOCK_TSC_STABLE 2, KVM_CLOCK_REALTIME 4, KVM_CLOCK_HOST_TSC 8
  // __u32 pad0 @12
  ["realtime", 16, "u64"],
  ["host_tsc", 24, "u64"],
]);
