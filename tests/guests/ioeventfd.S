# Real-mode guest for the ioeventfd test (kvm/vm_io_test.ts). Linked at 0x1000, run with CS = DS = 0.
# The test registers: port 0x510 (1 byte, any value), port 0x520 (1 byte, value 0x42 only),
# MMIO 0xd0010 (2 bytes, any value) and, when KVM has KVM_CAP_IOEVENTFD_NO_LENGTH, MMIO 0xd0030
# (any length). Nothing is mapped at 0xd0000.
# Exits, in order: out8 0x41 to 0x520 (no datamatch); out16 to 0x510 (wrong width); MMIO write of
# 1 byte 0x99 to 0xd0020 (not registered); out8 to 0x10 (done); hlt.
# Every other write below completes in the kernel and signals its eventfd once.
	.code16
	.globl _start
_start:
	mov $0x510, %dx
	mov $0x41, %al
	out %al, %dx		# eventfd A
	mov $0x520, %dx
	out %al, %dx		# 0x41 != datamatch 0x42: KVM_EXIT_IO
	mov $0x42, %al
	out %al, %dx		# eventfd B
	mov $0x510, %dx
	mov $0x4142, %ax
	out %ax, %dx		# 2 bytes to a 1-byte ioeventfd: KVM_EXIT_IO
	mov $0xd000, %bx
	mov %bx, %ds
	movw $0x1234, (0x10)	# eventfd C
	movb $0x99, (0x20)	# KVM_EXIT_MMIO
	movl $0xdeadbeef, (0x30)	# eventfd D (or KVM_EXIT_MMIO when not registered: the test skips it)
	out %al, $0x10
	hlt
