# Real-mode guest for the split irqchip's PIC path (tests/split_irqchip_guest_test.ts), as a
# pre-APIC operating system drives a PC: it initialises both 8259s (IRQ 0-7 on vectors 0x20-0x27,
# only IRQ 0 unmasked), sets the PIT's channel 0 to a 1 kHz rate generator, and halts until the
# timer's interrupt has come TICKS times. Each interrupt reaches the CPU as the PIC's ExtINT
# through the LAPIC's LINT0. The handler counts and sends the PIC a non-specific EOI. Then the
# guest writes TICKS to isa-debug-exit (port 0x501): the run ends with status 2*TICKS+1.
	.include "_pic.inc"
	.code16
	.set TICKS, 50
	.globl _start
_start:
	real_mode_start 0x20, timer
	movw $0, count

	pic_init 0xfe		# only IRQ 0

	mov $0x34, %al		# channel 0, low then high byte, mode 2
	out %al, $0x43
	mov $1193, %ax		# 1.193182 MHz / 1193: 1 kHz
	out %al, $0x40
	mov %ah, %al
	out %al, $0x40

1:	sti			# interrupts on only while halted (STI's shadow covers the HLT)
	hlt
	cli
	cmpw $TICKS, count
	jb 1b
	mov $TICKS, %al		# at least TICKS came (one more may land between an IRET and the CLI)
	mov $0x501, %dx
	out %al, %dx
2:	hlt
	jmp 2b

timer:
	push %ax
	incw count
	mov $0x20, %al		# OCW2: non-specific EOI
	out %al, $0x20
	pop %ax
	iret

	.balign 2
count:	.word 0
