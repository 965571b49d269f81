# Real-mode guest for the dirty-log test: writes one byte or word into each of the guest pages
# 0x4, 0x7, 0x20 and 0x9f (and nowhere else: no stack use), then hlt.
	.code16
	.globl _start
_start:
	xor %ax, %ax
	mov %ax, %ds
	movb $1, (0x4000)
	movb $1, (0x7ff0)
	mov $0x2000, %ax
	mov %ax, %es
	movb $1, %es:(0x0)
	mov $0x9000, %ax
	mov %ax, %es
	movw $1, %es:(0xfffe)
	hlt
