# Real-mode guest for the split-irqchip test (kvm/split_irqchip_test.ts). Linked at 0x1000, run with
# every segment at 0 but FS, whose base the test sets to the LAPIC (0xfee00000).
# It points IVT entries 0x30, 0x31 and 0x32 at handlers, turns interrupts on and halts. Each handler
# writes its vector to port 0x80; those of 0x31 and 0x32 (LAPIC interrupts) also write the LAPIC's
# EOI register. 0x30 comes from KVM_INTERRUPT (an 8259's ExtINT), which takes no LAPIC EOI. Port 0x80
# also gets 0x81 once interrupts are on and 0x33 after the EOI of 0x32, so that an exit that does not
# come shows as a wrong exit, never as a guest halted for good.
	.code16
	.globl _start
_start:
	xor %ax, %ax
	mov %ax, %ds
	mov %ax, %ss
	mov $0x8000, %sp
	movw $handler30, 0x30 * 4
	movw $0, 0x30 * 4 + 2
	movw $handler31, 0x31 * 4
	movw $0, 0x31 * 4 + 2
	movw $handler32, 0x32 * 4
	movw $0, 0x32 * 4 + 2
	sti
	nop
	nop
	mov $0x81, %al		# interrupts are on (KVM may open the window before or after this)
	out %al, $0x80
1:	hlt
	jmp 1b

handler30:
	push %ax
	mov $0x30, %al
	out %al, $0x80
	pop %ax
	iret

handler31:
	push %ax
	mov $0x31, %al
	out %al, $0x80
	movl $0, %fs:0xb0	# LAPIC EOI
	pop %ax
	iret

handler32:
	push %ax
	mov $0x32, %al
	out %al, $0x80
	movl $0, %fs:0xb0	# LAPIC EOI: a level-triggered vector of the IOAPIC's routes exits to the VMM
	mov $0x33, %al		# after the EOI (so a missing EOI exit fails the test instead of hanging it)
	out %al, $0x80
	pop %ax
	iret
