import assert from "node:assert/strict";
import * as k from "./ioctls.ts";

// Literals from `docs/kvm-abi.md` §1 (printed from the uapi headers, x86-64), plus
// KVM_GET/SET_VCPU_EVENTS and the MP_STATE pair checked the same way.
const PINNED: Record<string, number> = {
  KVM_GET_API_VERSION: 0xae00,
  KVM_CREATE_VM: 0xae01,
  KVM_GET_MSR_INDEX_LIST: 0xc004ae02,
  KVM_CHECK_EXTENSION: 0xae03,
  KVM_GET_VCPU_MMAP_SIZE: 0xae04,
  KVM_GET_SUPPORTED_CPUID: 0xc008ae05,
  KVM_CREATE_VCPU: 0xae41,
  KVM_GET_DIRTY_LOG: 0x4010ae42,
  KVM_SET_USER_MEMORY_REGION: 0x4020ae46,
  KVM_SET_TSS_ADDR: 0xae47,
  KVM_SET_IDENTITY_MAP_ADDR: 0x4008ae48,
  KVM_CREATE_IRQCHIP: 0xae60,
  KVM_IRQ_LINE: 0x4008ae61,
  KVM_IRQ_LINE_STATUS: 0xc008ae67,
  KVM_CREATE_PIT2: 0x4040ae77,
  KVM_ENABLE_CAP: 0x4068aea3,
  KVM_CLEAR_DIRTY_LOG: 0xc018aec0,
  KVM_RUN: 0xae80,
  KVM_GET_REGS: 0x8090ae81,
  KVM_SET_REGS: 0x4090ae82,
  KVM_GET_SREGS: 0x8138ae83,
  KVM_SET_SREGS: 0x4138ae84,
  KVM_GET_MSRS: 0xc008ae88,
  KVM_SET_MSRS: 0x4008ae89,
  KVM_GET_FPU: 0x81a0ae8c,
  KVM_SET_FPU: 0x41a0ae8d,
  KVM_GET_LAPIC: 0x8400ae8e,
  KVM_SET_LAPIC: 0x4400ae8f,
  KVM_SET_CPUID2: 0x4008ae90,
  KVM_GET_CPUID2: 0xc008ae91,
  KVM_GET_MP_STATE: 0x8004ae98,
  KVM_SET_MP_STATE: 0x4004ae99,
  KVM_NMI: 0xae9a,
  KVM_INTERRUPT: 0x4004ae86,
  KVM_GET_VCPU_EVENTS: 0x8040ae9f,
  KVM_SET_VCPU_EVENTS: 0x4040aea0,
  // The I/O requests of issue 9, printed from linux/kvm.h and linux/if_tun.h.
  KVM_IRQFD: 0x4020ae76,
  KVM_IOEVENTFD: 0x4040ae79,
  KVM_REGISTER_COALESCED_MMIO: 0x4010ae67,
  KVM_UNREGISTER_COALESCED_MMIO: 0x4010ae68,
  KVM_SET_GSI_ROUTING: 0x4008ae6a,
  KVM_SIGNAL_MSI: 0x4020aea5,
  KVM_GET_IRQCHIP: 0xc208ae62,
  KVM_SET_IRQCHIP: 0x8208ae63,
  // The guest-debug pair of issue 12, printed from linux/kvm.h (Debian 12's linux-libc-dev).
  KVM_TRANSLATE: 0xc018ae85,
  KVM_SET_GUEST_DEBUG: 0x4048ae9b,
  // The snapshot state requests of issue 11 (docs/kvm-abi.md §1; DEBUGREGS from linux/kvm.h).
  KVM_GET_PIT2: 0x8070ae9f,
  KVM_SET_PIT2: 0x4070aea0,
  KVM_SET_CLOCK: 0x4030ae7b,
  KVM_GET_CLOCK: 0x8030ae7c,
  KVM_SET_TSC_KHZ: 0xaea2,
  KVM_GET_TSC_KHZ: 0xaea3,
  KVM_GET_XSAVE: 0x9000aea4,
  KVM_SET_XSAVE: 0x5000aea5,
  KVM_GET_XSAVE2: 0x9000aecf,
  KVM_GET_XCRS: 0x8188aea6,
  KVM_SET_XCRS: 0x4188aea7,
  KVM_GET_DEBUGREGS: 0x8080aea1,
  KVM_SET_DEBUGREGS: 0x4080aea2,
  TUNSETIFF: 0x400454ca,
  TUNSETOFFLOAD: 0x400454d0,
  TUNGETIFF: 0x800454d2,
  TUNGETVNETHDRSZ: 0x800454d7,
  TUNSETVNETHDRSZ: 0x400454d8,
};

Deno.test("ioctl numbers computed from _IOC match the kernel's literals", () => {
  const computed = k as unknown as Record<string, number>;
  for (const [name, value] of Object.entries(PINNED)) {
    assert.equal(
      computed[name],
      value,
      `${name}: 0x${computed[name]?.toString(16)} != 0x${value.toString(16)}`,
    );
  }
});

Deno.test("ioctl numbers are unsigned 32-bit (the FFI parameter is u32)", () => {
  assert.ok(k.KVM_GET_SUPPORTED_CPUID > 0x8000_0000);
  assert.equal(k.iowr(0xae, 0x05, 8), 0xc008ae05);
  assert.throws(() => k.ioc(1, 0xae, 0, 1 << 14), RangeError);
});

Deno.test("capability numbers (include/uapi/linux/kvm.h)", () => {
  assert.deepEqual(
    [
      k.KVM_CAP_IRQCHIP,
      k.KVM_CAP_HLT,
      k.KVM_CAP_USER_MEMORY,
      k.KVM_CAP_SET_TSS_ADDR,
      k.KVM_CAP_EXT_CPUID,
      k.KVM_CAP_NR_VCPUS,
      k.KVM_CAP_NR_MEMSLOTS,
      k.KVM_CAP_COALESCED_MMIO,
      k.KVM_CAP_SYNC_MMU,
      k.KVM_CAP_IRQ_ROUTING,
      k.KVM_CAP_IRQFD,
      k.KVM_CAP_PIT2,
      k.KVM_CAP_PIT_STATE2,
      k.KVM_CAP_IOEVENTFD,
      k.KVM_CAP_SET_IDENTITY_MAP_ADDR,
      k.KVM_CAP_MAX_VCPUS,
      k.KVM_CAP_TSC_DEADLINE_TIMER,
      k.KVM_CAP_SIGNAL_MSI,
      k.KVM_CAP_READONLY_MEM,
      k.KVM_CAP_IRQFD_RESAMPLE,
      k.KVM_CAP_IOEVENTFD_NO_LENGTH,
      k.KVM_CAP_MULTI_ADDRESS_SPACE,
      k.KVM_CAP_SPLIT_IRQCHIP,
      k.KVM_CAP_IOEVENTFD_ANY_LENGTH,
      k.KVM_CAP_MAX_VCPU_ID,
      k.KVM_CAP_X2APIC_API,
      k.KVM_CAP_IMMEDIATE_EXIT,
      k.KVM_CAP_COALESCED_PIO,
      k.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
      k.KVM_CAP_DIRTY_LOG_RING,
    ],
    [
      0,
      1,
      3,
      4,
      7,
      9,
      10,
      15,
      16,
      25,
      32,
      33,
      35,
      36,
      37,
      66,
      72,
      77,
      81,
      82,
      100,
      118,
      121,
      122,
      128,
      129,
      136,
      162,
      168,
      192,
    ],
  );
});

Deno.test("exit reasons and their names", () => {
  assert.deepEqual(
    [
      k.KVM_EXIT_UNKNOWN,
      k.KVM_EXIT_EXCEPTION,
      k.KVM_EXIT_IO,
      k.KVM_EXIT_HYPERCALL,
      k.KVM_EXIT_DEBUG,
      k.KVM_EXIT_HLT,
      k.KVM_EXIT_MMIO,
      k.KVM_EXIT_IRQ_WINDOW_OPEN,
      k.KVM_EXIT_SHUTDOWN,
      k.KVM_EXIT_FAIL_ENTRY,
      k.KVM_EXIT_INTR,
      k.KVM_EXIT_SET_TPR,
      k.KVM_EXIT_TPR_ACCESS,
      k.KVM_EXIT_NMI,
      k.KVM_EXIT_INTERNAL_ERROR,
      k.KVM_EXIT_OSI,
      k.KVM_EXIT_SYSTEM_EVENT,
      k.KVM_EXIT_IOAPIC_EOI,
      k.KVM_EXIT_X86_RDMSR,
      k.KVM_EXIT_X86_WRMSR,
      k.KVM_EXIT_DIRTY_RING_FULL,
      k.KVM_EXIT_X86_BUS_LOCK,
    ],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 18, 24, 26, 29, 30, 31, 33],
  );
  assert.equal(k.exitReasonName(2), "KVM_EXIT_IO");
  assert.equal(k.exitReasonName(99), "KVM_EXIT_#99");
});

Deno.test("flag values", () => {
  assert.equal(k.KVM_MEM_LOG_DIRTY_PAGES, 1);
  assert.equal(k.KVM_MEM_READONLY, 2);
  assert.equal(k.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, 1);
  assert.equal(k.KVM_DIRTY_LOG_INITIALLY_SET, 2);
  assert.equal(k.KVM_EXIT_IO_IN, 0);
  assert.equal(k.KVM_EXIT_IO_OUT, 1);
  assert.deepEqual(
    [
      k.KVM_MP_STATE_RUNNABLE,
      k.KVM_MP_STATE_UNINITIALIZED,
      k.KVM_MP_STATE_INIT_RECEIVED,
      k.KVM_MP_STATE_HALTED,
    ],
    [0, 1, 2, 3],
  );
  assert.deepEqual([k.KVM_SYSTEM_EVENT_SHUTDOWN, k.KVM_SYSTEM_EVENT_RESET, k.KVM_SYSTEM_EVENT_CRASH], [
    1,
    2,
    3,
  ]);
  assert.equal(k.KVM_INTERNAL_ERROR_EMULATION, 1);
  assert.equal(k.KVM_API_VERSION, 12);
});

Deno.test("I/O flag values (linux/kvm.h, linux/if_tun.h)", () => {
  assert.deepEqual([k.KVM_IRQFD_FLAG_DEASSIGN, k.KVM_IRQFD_FLAG_RESAMPLE], [1, 2]);
  assert.deepEqual(
    [k.KVM_IOEVENTFD_FLAG_DATAMATCH, k.KVM_IOEVENTFD_FLAG_PIO, k.KVM_IOEVENTFD_FLAG_DEASSIGN],
    [1, 2, 4],
  );
  assert.deepEqual([k.KVM_IRQ_ROUTING_IRQCHIP, k.KVM_IRQ_ROUTING_MSI, k.KVM_MSI_VALID_DEVID], [1, 2, 1]);
  assert.deepEqual([k.KVM_IRQCHIP_PIC_MASTER, k.KVM_IRQCHIP_PIC_SLAVE, k.KVM_IRQCHIP_IOAPIC], [0, 1, 2]);
  assert.deepEqual(
    [k.IFF_TUN, k.IFF_TAP, k.IFF_MULTI_QUEUE, k.IFF_NO_PI, k.IFF_VNET_HDR],
    [0x1, 0x2, 0x100, 0x1000, 0x4000],
  );
});

Deno.test("guest-debug control bits and capabilities (linux/kvm.h, asm/kvm.h)", () => {
  assert.deepEqual(
    [
      k.KVM_GUESTDBG_ENABLE,
      k.KVM_GUESTDBG_SINGLESTEP,
      k.KVM_GUESTDBG_USE_SW_BP,
      k.KVM_GUESTDBG_USE_HW_BP,
      k.KVM_GUESTDBG_INJECT_DB,
      k.KVM_GUESTDBG_INJECT_BP,
      k.KVM_GUESTDBG_BLOCKIRQ,
    ],
    [0x1, 0x2, 0x1_0000, 0x2_0000, 0x4_0000, 0x8_0000, 0x10_0000],
  );
  assert.deepEqual(
    [
      k.KVM_CAP_SET_GUEST_DEBUG,
      k.KVM_CAP_GUEST_DEBUG_HW_BPS,
      k.KVM_CAP_GUEST_DEBUG_HW_WPS,
      k.KVM_CAP_SET_GUEST_DEBUG2,
    ],
    [23, 119, 120, 195],
  );
});
