# echo: an interactive guest for the console path. It enables COM1's received-data interrupt,
# then sleeps in `hlt`; every interrupt echoes the bytes that arrived (Enter as "\r\n") and goes back
# to sleep. Typing 'q' resets the machine through port 0xcf9 (the run ends with status 0).
# It proves that typed input reaches the UART and wakes a halted vCPU through IRQ 4.
#
# A Multiboot v1 image (a.out kludge) linked at 1 MiB, running in 32-bit protected mode with its
# own GDT and IDT; the 8259 PIC is remapped to vectors 0x20-0x2f with only IRQ 4 unmasked.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts (as --64; ld --oformat binary -Ttext 0x100000).

	.set LOAD_ADDR, 0x100000
	.include "_multiboot.inc"         # MB_MAGIC, MB_FLAGS, the multiboot_start macro
	.include "_uart.inc"              # COM1 registers, the putc and puts routines

	.set MCR_DTR_RTS_OUT2, 0x0b       # OUT2 gates the UART's interrupt onto the ISA bus on PCs
	.set PIC1_CMD, 0x20
	.set PIC1_DATA, 0x21
	.set PIC2_CMD, 0xa0
	.set PIC2_DATA, 0xa1
	.set PIC_EOI, 0x20
	.set IRQ4_VECTOR, 0x24
	.set RESET_PORT, 0xcf9
	.set RESET_VALUE, 0x06            # system reset, CPU reset
	.set CODE_SEL, 0x08
	.set DATA_SEL, 0x10

	multiboot_start bss_end           # .text, .code32, _start: the Multiboot header

entry32:
	cli
	cld
	lgdt gdt_descriptor
	ljmp $CODE_SEL, $reload_cs
reload_cs:
	mov $DATA_SEL, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $stack_top, %esp

	# IDT entry for IRQ 4: a 32-bit interrupt gate to uart_isr.
	mov $uart_isr, %eax
	mov $idt + IRQ4_VECTOR * 8, %edi
	mov %ax, (%edi)
	movw $CODE_SEL, 2(%edi)
	movw $0x8e00, 4(%edi)             # present, DPL 0, 32-bit interrupt gate
	shr $16, %eax
	mov %ax, 6(%edi)
	lidt idt_descriptor

	# 8259 PICs: ICW1 (edge, cascade, ICW4), ICW2 vectors 0x20/0x28, ICW3 wiring, ICW4 8086 mode.
	mov $0x11, %al
	out %al, $PIC1_CMD
	out %al, $PIC2_CMD
	mov $0x20, %al
	out %al, $PIC1_DATA
	mov $0x28, %al
	out %al, $PIC2_DATA
	mov $0x04, %al
	out %al, $PIC1_DATA
	mov $0x02, %al
	out %al, $PIC2_DATA
	mov $0x01, %al
	out %al, $PIC1_DATA
	out %al, $PIC2_DATA
	mov $0xef, %al                    # only IRQ 4
	out %al, $PIC1_DATA
	mov $0xff, %al
	out %al, $PIC2_DATA

	mov $banner, %esi
	call puts

	mov $UART_MCR, %dx
	mov $MCR_DTR_RTS_OUT2, %al
	out %al, %dx
	mov $UART_IER, %dx
	mov $IER_RDI, %al
	out %al, %dx

	sti
sleep:
	hlt                               # wakes only for the UART interrupt
	jmp sleep

# Echo every waiting byte; 'q' resets; Enter becomes "\r\n".
# The interrupted code is always the `hlt` loop, so the handler drops the interrupt frame and goes
# back to sleep itself instead of returning with `iret`: the CPL0 emulator of kvm_pvm (the nested KVM
# of our build machines, docs/kvm-abi.md §8) cannot execute a 32-bit `iret` (emulation failure).
uart_isr:
next_byte:
	mov $UART_LSR, %dx
	in %dx, %al
	test $LSR_DR, %al
	jz isr_done
	mov $UART_RBR, %dx
	in %dx, %al
	cmp $'q', %al
	je reset
	cmp $'\r', %al
	jne 1f
	call putc
	mov $'\n', %al
1:	call putc
	jmp next_byte
isr_done:
	mov $PIC_EOI, %al
	out %al, $PIC1_CMD
	mov $stack_top, %esp              # forget the frame of the interrupted hlt
	sti
	jmp sleep

reset:
	mov $goodbye, %esi
	call puts
	mov $RESET_PORT, %dx
	mov $RESET_VALUE, %al
	out %al, %dx
	jmp sleep

# putc: al to COM1 once the transmitter is free. Clobbers dx.
	uart_putc_routine stack

# puts: the NUL-terminated string at esi. Clobbers eax, edx, esi.
	uart_puts_routine

	.align 8
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff           # 0x08: 32-bit code, flat
	.quad 0x00cf92000000ffff           # 0x10: data, flat
gdt_end:
gdt_descriptor:
	.word gdt_end - gdt - 1
	.long gdt
idt_descriptor:
	.word (IRQ4_VECTOR + 1) * 8 - 1
	.long idt

banner:
	.asciz "echo: type; Enter starts a new line, q resets\n"
goodbye:
	.asciz "\necho: q pressed, resetting\n"
image_end:

	.bss
	.align 16
idt:
	.skip (IRQ4_VECTOR + 1) * 8
stack:
	.skip 1024
stack_top:
bss_end:
