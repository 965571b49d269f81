# Real-mode guest for the read-only memslot test. The test maps one read-only page at 0xd0000
# (pre-filled by the host) and leaves 0xd1000 unmapped.
# Exits, in order: out8 to 0x10 of the ROM byte at 0xd0010 (read in-kernel); MMIO write of 0x5a
# to 0xd0010 (is_write); out8 to 0x10 of the ROM byte again (unchanged); MMIO read of 2 bytes at
# 0xd1008 (a hole); out16 to 0x12 of the value the host supplied; hlt.
	.code16
	.globl _start
_start:
	mov $0xd000, %ax
	mov %ax, %ds
	movb (0x10), %al
	out %al, $0x10
	movb $0x5a, (0x10)
	movb (0x10), %al
	out %al, $0x10
	movw (0x1008), %ax
	out %ax, $0x12
	hlt
