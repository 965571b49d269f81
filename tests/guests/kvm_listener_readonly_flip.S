# Real-mode guest for tests/kvm_listener_integration_test.ts (read-only flip of guest RAM).
# Linked at 0x1000, run with CS = DS = 0. No stack use. Exits, in order: out8 to port 0x10 after
# storing 0x11 at 0x8000 (the host then makes the RAM read-only); an MMIO write of 0x22 to 0x8000
# (the read-only slot refuses it); out8 to 0x10 (the host makes the RAM writable again); hlt after
# storing 0x33 at 0x8000.
	.code16
	.globl _start
_start:
	xor %ax, %ax
	mov %ax, %ds
	movb $0x11, (0x8000)
	out %al, $0x10
	movb $0x22, (0x8000)
	out %al, $0x10
	movb $0x33, (0x8000)
	hlt
