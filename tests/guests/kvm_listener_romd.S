# Real-mode guest for tests/kvm_listener_integration_test.ts (ROM device at 0xd0000).
# Exits, in order: out8 to port 0x10 of the byte at 0xd0010 (romd: read from the slot, no exit);
# an MMIO write of 0x5a to 0xd0020 (to the device's ops); out8 to port 0x11 (the host turns romd
# off); an MMIO read of 0xd0010 (now the ops answer); out8 to 0x10 of that byte; hlt.
	.code16
	.globl _start
_start:
	mov $0xd000, %ax
	mov %ax, %ds
	movb (0x10), %al
	out %al, $0x10
	movb $0x5a, (0x20)
	out %al, $0x11
	movb (0x10), %al
	out %al, $0x10
	hlt
