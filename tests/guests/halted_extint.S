# Real-mode guest for tests/snapshot_extint_test.ts: it points IVT entry 0x24 (IRQ 4 once the PIC's
# vectors start at 0x20) at a handler, initialises both 8259s with only IRQ 4 unmasked, turns on
# COM1's receive interrupt (IER = 0x01, MCR.OUT2), stops the PIT's periodic output, and ends the
# run through isa-debug-exit with 0x11 so that the test can put the vCPU to sleep by hand. `wait` is where it then sleeps (IF = 1). The
# handler reads the byte COM1 received and writes it to isa-debug-exit.
	.include "_pic.inc"
	.code16
	.globl _start
_start:
	real_mode_start 0x24, handler

	pic_init 0xef		# only IRQ 4 (COM1)

	mov $0x30, %al		# PIT channel 0: mode 0, count 1: its output rises once and then stays,
	out %al, $0x43		# so no timer wakes the VM thread after the restore (the default
	mov $1, %al		# mode 3 would, every 55 ms, and hide a vCPU that sleeps for good)
	out %al, $0x40
	xor %al, %al
	out %al, $0x40

	mov $0x3fc, %dx		# MCR: OUT2 lets COM1's interrupt out
	mov $0x08, %al
	out %al, %dx
	mov $0x3f9, %dx		# IER: received data available
	mov $0x01, %al
	out %al, %dx

	mov $0x11, %al		# set up: the run ends here (status 0x23)
	mov $0x501, %dx
	out %al, %dx
	.globl wait
wait:
	hlt
	jmp wait

handler:
	mov $0x3f8, %dx		# RBR: the byte received
	in %dx, %al
	mov $0x501, %dx
	out %al, %dx
1:	hlt
	jmp 1b
