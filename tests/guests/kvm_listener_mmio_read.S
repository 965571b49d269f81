# Real-mode guest for tests/kvm_listener_integration_test.ts (MMIO register read).
# Loads the 4-byte register at 0xe0010 and writes it to port 0x10 (out32); loads the 2-byte
# register at 0xe0020 and writes it to port 0x12 (out16); hlt. Both loads exit as MMIO reads.
	.code16
	.globl _start
_start:
	mov $0xe000, %ax
	mov %ax, %ds
	mov (0x10), %eax
	out %eax, $0x10
	mov (0x20), %ax
	out %ax, $0x12
	hlt
