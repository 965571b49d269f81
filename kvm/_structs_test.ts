import assert from "node:assert/strict";
import {
  decodeFromBytes,
  decodeStruct,
  defineStruct,
  encodeStruct,
  encodeToBytes,
  type Field,
  FLOCK_LAYOUT,
  IFREQ_LAYOUT,
  KVM_CLEAR_DIRTY_LOG_LAYOUT,
  KVM_COALESCED_MMIO_LAYOUT,
  KVM_COALESCED_MMIO_ZONE_LAYOUT,
  KVM_CPUID2_LAYOUT,
  KVM_CPUID_ENTRY2_LAYOUT,
  KVM_DIRTY_LOG_LAYOUT,
  KVM_DTABLE_LAYOUT,
  KVM_ENABLE_CAP_LAYOUT,
  KVM_FPU_LAYOUT,
  KVM_GUEST_DEBUG_LAYOUT,
  KVM_IOEVENTFD_LAYOUT,
  KVM_IRQ_LEVEL_LAYOUT,
  KVM_IRQ_ROUTING_ENTRY_LAYOUT,
  KVM_IRQ_ROUTING_ENTRY_UNION_START,
  KVM_IRQ_ROUTING_IRQCHIP_LAYOUT,
  KVM_IRQ_ROUTING_LAYOUT,
  KVM_IRQ_ROUTING_MSI_LAYOUT,
  KVM_IRQCHIP_LAYOUT,
  KVM_IRQFD_LAYOUT,
  KVM_LAPIC_STATE_LAYOUT,
  KVM_MP_STATE_LAYOUT,
  KVM_MSI_LAYOUT,
  KVM_MSR_ENTRY_LAYOUT,
  KVM_MSR_LIST_LAYOUT,
  KVM_MSRS_LAYOUT,
  KVM_PIT_CONFIG_LAYOUT,
  KVM_REGS_LAYOUT,
  KVM_RUN_DEBUG_LAYOUT,
  KVM_RUN_EX_LAYOUT,
  KVM_RUN_EXIT_UNION_SIZE,
  KVM_RUN_EXIT_UNION_START,
  KVM_RUN_FAIL_ENTRY_LAYOUT,
  KVM_RUN_HW_LAYOUT,
  KVM_RUN_INTERNAL_LAYOUT,
  KVM_RUN_IO_LAYOUT,
  KVM_RUN_LAYOUT,
  KVM_RUN_MMIO_LAYOUT,
  KVM_RUN_SIZE,
  KVM_RUN_SYNC_REGS_SIZE,
  KVM_RUN_SYNC_REGS_START,
  KVM_RUN_SYSTEM_EVENT_LAYOUT,
  KVM_SEGMENT_LAYOUT,
  KVM_SREGS_LAYOUT,
  KVM_TRANSLATION_LAYOUT,
  KVM_USERSPACE_MEMORY_REGION_LAYOUT,
  KVM_VCPU_EVENTS_LAYOUT,
  offsetsOf,
  type StructLayout,
} from "./_structs.ts";

/** Kernel field name → offset, as printed from the uapi headers with a C compiler (x86-64). */
function offsets(layout: StructLayout): Record<string, number> {
  return Object.fromEntries(layout.fields.map(([name, offset]) => [name, offset]));
}

Deno.test("struct sizes match sizeof in the x86-64 uapi headers", () => {
  const sizes: [StructLayout, number][] = [
    [KVM_USERSPACE_MEMORY_REGION_LAYOUT, 32],
    [KVM_REGS_LAYOUT, 144],
    [KVM_SEGMENT_LAYOUT, 24],
    [KVM_DTABLE_LAYOUT, 16],
    [KVM_SREGS_LAYOUT, 312],
    [KVM_FPU_LAYOUT, 416],
    [KVM_MSRS_LAYOUT, 8],
    [KVM_MSR_ENTRY_LAYOUT, 16],
    [KVM_MSR_LIST_LAYOUT, 4],
    [KVM_CPUID2_LAYOUT, 8],
    [KVM_CPUID_ENTRY2_LAYOUT, 40],
    [KVM_IRQ_LEVEL_LAYOUT, 8],
    [KVM_PIT_CONFIG_LAYOUT, 64],
    [KVM_DIRTY_LOG_LAYOUT, 16],
    [KVM_CLEAR_DIRTY_LOG_LAYOUT, 24],
    [KVM_ENABLE_CAP_LAYOUT, 104],
    [KVM_LAPIC_STATE_LAYOUT, 1024],
    [KVM_VCPU_EVENTS_LAYOUT, 64],
    [KVM_GUEST_DEBUG_LAYOUT, 72],
    [KVM_TRANSLATION_LAYOUT, 24],
    [KVM_MP_STATE_LAYOUT, 4],
    [KVM_RUN_LAYOUT, 2352],
    [KVM_IRQFD_LAYOUT, 32],
    [KVM_IOEVENTFD_LAYOUT, 64],
    [KVM_COALESCED_MMIO_ZONE_LAYOUT, 16],
    [KVM_COALESCED_MMIO_LAYOUT, 24],
    [KVM_MSI_LAYOUT, 32],
    [KVM_IRQ_ROUTING_LAYOUT, 8],
    [KVM_IRQ_ROUTING_ENTRY_LAYOUT, 48],
    [KVM_IRQCHIP_LAYOUT, 520],
    [FLOCK_LAYOUT, 32],
    [IFREQ_LAYOUT, 40],
  ];
  for (const [layout, size] of sizes) assert.equal(layout.size, size, layout.name);
  assert.equal(KVM_RUN_SIZE, 2352);
});

Deno.test("kvm_userspace_memory_region offsets", () => {
  assert.deepEqual(offsets(KVM_USERSPACE_MEMORY_REGION_LAYOUT), {
    slot: 0,
    flags: 4,
    guest_phys_addr: 8,
    memory_size: 16,
    userspace_addr: 24,
  });
});

// Printed with offsetof() from Debian 12's uapi headers (linux/kvm.h, linux/if.h) and glibc's
// <fcntl.h>, x86-64; docs/kvm-abi.md §9.
Deno.test("I/O structs: kvm_irqfd, kvm_ioeventfd, kvm_msi, routing entries, kvm_irqchip, flock, ifreq", () => {
  assert.deepEqual(offsets(KVM_IRQFD_LAYOUT), { fd: 0, gsi: 4, flags: 8, resamplefd: 12 });
  assert.deepEqual(offsets(KVM_IOEVENTFD_LAYOUT), { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24 });
  assert.deepEqual(offsets(KVM_COALESCED_MMIO_ZONE_LAYOUT), { addr: 0, size: 8, pio: 12 });
  assert.deepEqual(offsets(KVM_COALESCED_MMIO_LAYOUT), { phys_addr: 0, len: 8, pio: 12 });
  assert.deepEqual(offsets(KVM_MSI_LAYOUT), { address_lo: 0, address_hi: 4, data: 8, flags: 12, devid: 16 });
  assert.deepEqual(offsets(KVM_IRQ_ROUTING_LAYOUT), { nr: 0, flags: 4 });
  // The entries array starts right after the 8-byte header; an entry's union `u` at 16.
  assert.deepEqual(offsets(KVM_IRQ_ROUTING_ENTRY_LAYOUT), { gsi: 0, type: 4, flags: 8 });
  assert.equal(KVM_IRQ_ROUTING_ENTRY_UNION_START, 16);
  const inEntry = (layout: StructLayout) =>
    Object.fromEntries(
      Object.entries(offsets(layout)).map(([n, o]) => [n, o + KVM_IRQ_ROUTING_ENTRY_UNION_START]),
    );
  assert.deepEqual(inEntry(KVM_IRQ_ROUTING_IRQCHIP_LAYOUT), { irqchip: 16, pin: 20 });
  assert.deepEqual(inEntry(KVM_IRQ_ROUTING_MSI_LAYOUT), {
    address_lo: 16,
    address_hi: 20,
    data: 24,
    devid: 28,
  });
  assert.deepEqual(offsets(KVM_IRQCHIP_LAYOUT), { chip_id: 0, chip: 8 });
  assert.deepEqual(offsets(FLOCK_LAYOUT), { l_type: 0, l_whence: 2, l_start: 8, l_len: 16, l_pid: 24 });
  assert.deepEqual(offsets(IFREQ_LAYOUT), { ifr_name: 0, ifr_flags: 16 });
});

Deno.test("kvm_regs: 18 u64 in kernel order, rip @128, rflags @136", () => {
  const names = [
    "rax",
    "rbx",
    "rcx",
    "rdx",
    "rsi",
    "rdi",
    "rsp",
    "rbp",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
    "rflags",
  ];
  assert.deepEqual(offsets(KVM_REGS_LAYOUT), Object.fromEntries(names.map((name, i) => [name, i * 8])));
});

Deno.test("kvm_segment, kvm_dtable and kvm_sregs offsets", () => {
  assert.deepEqual(offsets(KVM_SEGMENT_LAYOUT), {
    base: 0,
    limit: 8,
    selector: 12,
    type: 14,
    present: 15,
    dpl: 16,
    db: 17,
    s: 18,
    l: 19,
    g: 20,
    avl: 21,
    unusable: 22,
  });
  assert.deepEqual(offsets(KVM_DTABLE_LAYOUT), { base: 0, limit: 8 });
  assert.deepEqual(offsets(KVM_SREGS_LAYOUT), {
    cs: 0,
    ds: 24,
    es: 48,
    fs: 72,
    gs: 96,
    ss: 120,
    tr: 144,
    ldt: 168,
    gdt: 192,
    idt: 208,
    cr0: 224,
    cr2: 232,
    cr3: 240,
    cr4: 248,
    cr8: 256,
    efer: 264,
    apic_base: 272,
    interrupt_bitmap: 280,
  });
});

Deno.test("kvm_guest_debug and kvm_translation offsets", () => {
  // offsetof() printed from linux/kvm.h: control 0, pad 4, arch.debugreg 8; kvm_translation's
  // valid/writeable/usermode bytes follow the two addresses, then __u8 pad[5].
  assert.deepEqual(offsets(KVM_GUEST_DEBUG_LAYOUT), { control: 0, debugreg: 8 });
  assert.deepEqual(offsets(KVM_TRANSLATION_LAYOUT), {
    linear_address: 0,
    physical_address: 8,
    valid: 16,
    writeable: 17,
    usermode: 18,
  });
  const bytes = encodeToBytes(KVM_GUEST_DEBUG_LAYOUT, {
    control: 0x2_0003,
    debugreg: [0x1000n, 0n, 0n, 0n, 0n, 0n, 0n, 0x602n],
  });
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint32(0, true), 0x2_0003);
  assert.equal(view.getBigUint64(8, true), 0x1000n); // DR0
  assert.equal(view.getBigUint64(64, true), 0x602n); // DR7 = debugreg[7]
});

Deno.test("kvm_fpu offsets", () => {
  assert.deepEqual(offsets(KVM_FPU_LAYOUT), {
    fpr: 0,
    fcw: 128,
    fsw: 130,
    ftwx: 132,
    last_opcode: 134,
    last_ip: 136,
    last_dp: 144,
    xmm: 152,
    mxcsr: 408,
  });
});

Deno.test("msr, cpuid, irq, pit, dirty log, enable_cap, mp_state offsets", () => {
  assert.deepEqual(offsets(KVM_MSRS_LAYOUT), { nmsrs: 0 });
  assert.deepEqual(offsets(KVM_MSR_ENTRY_LAYOUT), { index: 0, data: 8 });
  assert.deepEqual(offsets(KVM_MSR_LIST_LAYOUT), { nmsrs: 0 });
  assert.deepEqual(offsets(KVM_CPUID2_LAYOUT), { nent: 0 });
  assert.deepEqual(offsets(KVM_CPUID_ENTRY2_LAYOUT), {
    function: 0,
    index: 4,
    flags: 8,
    eax: 12,
    ebx: 16,
    ecx: 20,
    edx: 24,
  });
  assert.deepEqual(offsets(KVM_IRQ_LEVEL_LAYOUT), { irq: 0, level: 4 });
  assert.deepEqual(offsets(KVM_PIT_CONFIG_LAYOUT), { flags: 0 });
  assert.deepEqual(offsets(KVM_DIRTY_LOG_LAYOUT), { slot: 0, dirty_bitmap: 8 });
  assert.deepEqual(offsets(KVM_CLEAR_DIRTY_LOG_LAYOUT), {
    slot: 0,
    num_pages: 4,
    first_page: 8,
    dirty_bitmap: 16,
  });
  assert.deepEqual(offsets(KVM_ENABLE_CAP_LAYOUT), { cap: 0, flags: 4, args: 8 });
  assert.deepEqual(offsets(KVM_MP_STATE_LAYOUT), { mp_state: 0 });
  assert.deepEqual(offsets(KVM_LAPIC_STATE_LAYOUT), { regs: 0 });
});

Deno.test("kvm_vcpu_events layout (Linux 6.x uapi: triple_fault @28, payload @55/@56)", () => {
  assert.deepEqual(offsets(KVM_VCPU_EVENTS_LAYOUT), {
    exception: 0,
    interrupt: 8,
    nmi: 12,
    sipi_vector: 16,
    flags: 20,
    smi: 24,
    triple_fault: 28,
    exception_has_payload: 55,
    exception_payload: 56,
  });
  const exception = KVM_VCPU_EVENTS_LAYOUT.fields[0][2] as { struct: StructLayout };
  assert.deepEqual(offsets(exception.struct), {
    injected: 0,
    nr: 1,
    has_error_code: 2,
    pending: 3,
    error_code: 4,
  });
});

Deno.test("kvm_run header and exit union offsets", () => {
  assert.deepEqual(offsets(KVM_RUN_LAYOUT), {
    request_interrupt_window: 0,
    immediate_exit: 1,
    exit_reason: 8,
    ready_for_interrupt_injection: 12,
    if_flag: 13,
    flags: 14,
    cr8: 16,
    apic_base: 24,
    kvm_valid_regs: 288,
    kvm_dirty_regs: 296,
  });
  assert.equal(KVM_RUN_EXIT_UNION_START, 32);
  assert.equal(KVM_RUN_EXIT_UNION_START + KVM_RUN_EXIT_UNION_SIZE, 288);
  assert.equal(KVM_RUN_SYNC_REGS_START, 304);
  assert.equal(KVM_RUN_SYNC_REGS_START + KVM_RUN_SYNC_REGS_SIZE, KVM_RUN_SIZE);
  const absolute = (layout: StructLayout) =>
    Object.fromEntries(layout.fields.map(([name, offset]) => [name, KVM_RUN_EXIT_UNION_START + offset]));
  assert.deepEqual(absolute(KVM_RUN_IO_LAYOUT), {
    direction: 32,
    size: 33,
    port: 34,
    count: 36,
    data_offset: 40,
  });
  assert.deepEqual(absolute(KVM_RUN_MMIO_LAYOUT), { phys_addr: 32, data: 40, len: 48, is_write: 52 });
  assert.deepEqual(absolute(KVM_RUN_EX_LAYOUT), { exception: 32, error_code: 36 });
  assert.deepEqual(absolute(KVM_RUN_HW_LAYOUT), { hardware_exit_reason: 32 });
  assert.deepEqual(absolute(KVM_RUN_FAIL_ENTRY_LAYOUT), { hardware_entry_failure_reason: 32, cpu: 40 });
  assert.deepEqual(absolute(KVM_RUN_INTERNAL_LAYOUT), { suberror: 32, ndata: 36, data: 40 });
  assert.deepEqual(absolute(KVM_RUN_SYSTEM_EVENT_LAYOUT), { type: 32, ndata: 36, data: 40 });
  assert.deepEqual(absolute(KVM_RUN_DEBUG_LAYOUT), { exception: 32, pc: 40, dr6: 48, dr7: 56 });
  for (
    const member of [KVM_RUN_IO_LAYOUT, KVM_RUN_MMIO_LAYOUT, KVM_RUN_INTERNAL_LAYOUT, KVM_RUN_DEBUG_LAYOUT]
  ) {
    assert.ok(member.size <= KVM_RUN_EXIT_UNION_SIZE, member.name);
  }
});

Deno.test("offsetsOf uses camelCase names", () => {
  assert.deepEqual(offsetsOf(KVM_USERSPACE_MEMORY_REGION_LAYOUT), {
    slot: 0,
    flags: 4,
    guestPhysAddr: 8,
    memorySize: 16,
    userspaceAddr: 24,
  });
});

Deno.test("encode writes little-endian fields at the kernel offsets", () => {
  const bytes = encodeToBytes(KVM_USERSPACE_MEMORY_REGION_LAYOUT, {
    slot: (1 << 16) | 3,
    flags: 2,
    guestPhysAddr: 0x1122_3344_5566_7788n,
    memorySize: 0x20_0000n,
    userspaceAddr: 0x7f00_0000_1000n,
  });
  assert.equal(bytes.length, 32);
  assert.deepEqual([...bytes.subarray(0, 16)], [
    3,
    0,
    1,
    0,
    2,
    0,
    0,
    0,
    0x88,
    0x77,
    0x66,
    0x55,
    0x44,
    0x33,
    0x22,
    0x11,
  ]);
  assert.deepEqual([...bytes.subarray(16, 24)], [0, 0, 0x20, 0, 0, 0, 0, 0]);
  assert.deepEqual([...bytes.subarray(24, 32)], [0, 0x10, 0, 0, 0, 0x7f, 0, 0]);
});

Deno.test("sregs round-trip through encode/decode, nested segments and arrays included", () => {
  const segment = (base: bigint, selector: number) => ({
    base,
    limit: 0xffff_ffff,
    selector,
    type: 11,
    present: 1,
    dpl: 3,
    db: 1,
    s: 1,
    l: 0,
    g: 1,
    avl: 0,
    unusable: 0,
  });
  const sregs = {
    cs: segment(0xffff_0000n, 0xf000),
    ds: segment(1n, 2),
    es: segment(3n, 4),
    fs: segment(5n, 6),
    gs: segment(7n, 8),
    ss: segment(9n, 10),
    tr: segment(11n, 12),
    ldt: segment(13n, 14),
    gdt: { base: 0x500n, limit: 0x1f },
    idt: { base: 0x520n, limit: 0x7ff },
    cr0: 0x8000_0011n,
    cr2: 0n,
    cr3: 0x9000n,
    cr4: 0x20n,
    cr8: 0n,
    efer: 0x500n,
    apicBase: 0xfee0_0900n,
    interruptBitmap: [1n, 2n, 0xffff_ffff_ffff_ffffn, 0n],
  };
  const bytes = encodeToBytes(KVM_SREGS_LAYOUT, sregs);
  assert.equal(new DataView(bytes.buffer).getUint16(12, true), 0xf000); // cs.selector
  assert.equal(new DataView(bytes.buffer).getBigUint64(240, true), 0x9000n); // cr3
  assert.deepEqual(decodeFromBytes(KVM_SREGS_LAYOUT, bytes), sregs);
});

Deno.test("fpu bytes fields are copied, not views of the source buffer", () => {
  const bytes = new Uint8Array(KVM_FPU_LAYOUT.size);
  bytes[152] = 7; // xmm0[0]
  const fpu = decodeFromBytes(KVM_FPU_LAYOUT, bytes);
  bytes[152] = 9;
  assert.equal(fpu.xmm[0], 7);
  assert.equal(fpu.xmm.length, 256);
  assert.equal(fpu.fpr.length, 128);
});

Deno.test("encode rejects out-of-range values, naming struct and field", () => {
  const regs = Object.fromEntries(KVM_REGS_LAYOUT.jsNames.map((n) => [n, 0n])) as Record<string, bigint>;
  assert.throws(
    () => encodeToBytes(KVM_REGS_LAYOUT, { ...regs, rip: -1n } as never),
    (e: Error) => e instanceof RangeError && e.message.includes("kvm_regs.rip"),
  );
  assert.throws(
    () => encodeToBytes(KVM_REGS_LAYOUT, { ...regs, rax: 1n << 64n } as never),
    RangeError,
  );
  assert.throws(
    () => encodeToBytes(KVM_MP_STATE_LAYOUT, { mpState: 1.5 }),
    (e: Error) => e instanceof RangeError && e.message.includes("kvm_mp_state.mpState"),
  );
  assert.throws(() => encodeToBytes(KVM_LAPIC_STATE_LAYOUT, { regs: new Uint8Array(10) }), RangeError);
});

Deno.test("defineStruct refuses overlapping or oversized fields", () => {
  assert.throws(() => defineStruct("bad", 8, [["a", 0, "u64"], ["b", 4, "u32"]] as const), /overlaps/);
  assert.throws(() => defineStruct("bad", 4, [["a", 0, "u64"]] as const), /beyond sizeof/);
});

Deno.test("decodeStruct and encodeStruct honour a base offset", () => {
  const entry = defineStruct(
    "pair",
    8,
    [["lo", 0, "u32"], ["hi", 4, "i32"]] as const satisfies readonly Field[],
  );
  const view = new DataView(new ArrayBuffer(24));
  encodeStruct(entry, { lo: 0xdead_beef, hi: -2 }, view, 16);
  assert.equal(view.getUint32(16, true), 0xdead_beef);
  assert.deepEqual(decodeStruct(entry, view, 16), { lo: 0xdead_beef, hi: -2 });
});
