# Real-mode guest for the KVM tests: port I/O of every size and both directions, then hlt.
# Linked at 0x1000; the test runs it with CS = DS = ES = 0 (flat real mode, see kvm/_testing.ts).
# Exits, in order: out8, out16, out32 to port 0x10; in8 from 0x10; out8 of that value to 0x11;
# `rep outsb` of "hello" to 0x10; hlt.
	.code16
	.globl _start
_start:
	mov $0x10, %dx
	mov $0x41, %al
	out %al, %dx
	mov $0x4342, %ax
	out %ax, %dx
	mov $0x47464544, %eax
	out %eax, %dx
	in %dx, %al
	out %al, $0x11
	mov $message, %si
	mov $(message_end - message), %cx
	cld
	rep outsb
	hlt
message:
	.ascii "hello"
message_end:
