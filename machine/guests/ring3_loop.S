# ring3_loop: a long computation in ring 3, for snapshot tests (issue 11).
#
# hello64 (see hello64.S) with its step 4 replaced: ring 3 runs with IOPL 3 (RFLAGS bits 12-13 set
# by sysretq), so it prints from ring 3 itself. It runs RING3_ROUNDS rounds of a 64-bit LCG
# (x <- x * 6364136223846793005 + 1, in R13) of RING3_ROUND_ITERATIONS steps each, and prints the
# round number and the state after every round; then it returns to ring 0 through syscall, prints
# the goodbye line and resets (run status 0). Nearly all of its run time is in ring 3, the state of
# the computation is in registers, and its output is spread over the run: a snapshot taken at any
# time after the first lines lands in ring 3, and a restore that loses a register prints another
# hash.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts.

	.set LOAD_ADDR, 0x100000          # link and load address (Multiboot load_addr)
	.set BSS_SIZE, 0x3000             # zeroed by the loader past the file: two stacks
	.set MB_MAGIC, 0x1badb002         # Multiboot v1 header magic
	.set MB_FLAGS, 0x00010000         # bit 16: the a.out kludge address fields are valid

	.set COM1, 0x3f8                  # 16550 UART registers
	.set UART_THR, COM1 + 0
	.set UART_IER, COM1 + 1
	.set UART_IIR, COM1 + 2
	.set UART_FCR, COM1 + 2
	.set UART_MCR, COM1 + 4
	.set UART_LSR, COM1 + 5
	.set LSR_THRE, 0x20
	.set IER_THRI, 0x02
	.set MCR_OUT2, 0x08

	.set PIC1_CMD, 0x20               # 8259 master / slave
	.set PIC1_DATA, 0x21
	.set PIC2_CMD, 0xa0
	.set PIC2_DATA, 0xa1
	.set PIC_EOI, 0x20
	.set IRQ_BASE, 0x20               # vectors of IRQ 0-15 after the remap
	.set UART_VECTOR, IRQ_BASE + 4    # COM1 is IRQ 4

	.set IOAPIC_BASE, 0xfec00000
	.set IOAPIC_IOWIN, 0x10
	.set IOAPIC_VERSION_REG, 1

	.set DEBUG_EXIT_PORT, 0x501       # isa-debug-exit: status = (value << 1) | 1
	.set RESET_CONTROL_PORT, 0xcf9    # PIIX3 reset control register
	.set RESET_HARD, 0x06             # bit 1 hard reset, bit 2 reset now

	.set KERNEL_CS, 0x08
	.set KERNEL_DS, 0x10
	.set USER_SYSRET_BASE, 0x18       # STAR[63:48]
	.set USER_DS, 0x20 | 3
	.set USER_CS, 0x28 | 3
	.set TSS_SEL, 0x30
	.set TSS_SIZE, 0x68               # 64-bit TSS without an I/O bitmap
	.set SYSCALL_FALLBACK_VECTOR, 0x80
	.set FALLBACK_INT80, 1            # used_fallback: back in ring 0 through int 0x80
	.set FALLBACK_UD, 2               #   ... through the #UD raised by that int 0x80
	.set VECTOR_UD, 6

	.set MSR_EFER, 0xc0000080
	.set MSR_STAR, 0xc0000081
	.set MSR_LSTAR, 0xc0000082
	.set MSR_SFMASK, 0xc0000084
	.set EFER_SCE, 1 << 0
	.set EFER_LME, 1 << 8
	.set CR0_PG, 1 << 31
	.set CR4_PAE, 1 << 5
	.set RFLAGS_RESERVED, 1 << 1      # bit 1 always set; IF stays clear in ring 3 (no TSS here)
	.set SFMASK_BITS, 0x47700         # AC, NT, DF, IF, TF cleared on syscall

	.set PTE_P, 1 << 0
	.set PTE_RW, 1 << 1
	.set PTE_US, 1 << 2
	.set PTE_PWT, 1 << 3
	.set PTE_PCD, 1 << 4
	.set PTE_PS, 1 << 7
	.set PAGE_2M, 0x200000

	.set RING3_ROUNDS, 16
	.set RING3_ROUND_ITERATIONS, 20000000
	.set RFLAGS_IOPL3, 3 << 12         # ring 3 may use in/out (the UART)
	.set LCG_MULTIPLIER, 6364136223846793005

	.text
	.code32
	.globl _start
_start:
multiboot_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long LOAD_ADDR + (multiboot_header - _start)   # header_addr
	.long LOAD_ADDR                                 # load_addr
	.long LOAD_ADDR + (image_end - _start)          # load_end_addr
	.long LOAD_ADDR + (bss_end - _start)            # bss_end_addr
	.long LOAD_ADDR + (entry32 - _start)            # entry_addr

# Multiboot entry: EAX = 0x2badb002, EBX = info; CS/DS flat 32-bit; GDTR may be invalid.
entry32:
	cli
	cld                               # EFLAGS other than VM and IF are undefined at entry
	lgdt gdt_pointer
	mov $KERNEL_DS, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %ax, %fs
	mov %ax, %gs
	mov $pml4, %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov $MSR_EFER, %ecx
	rdmsr
	or $(EFER_LME | EFER_SCE), %eax
	wrmsr
	mov %cr0, %eax
	or $CR0_PG, %eax
	mov %eax, %cr0
	ljmp $KERNEL_CS, $entry64

	.code64
entry64:
	mov $kernel_stack_top, %rsp
	lea msg_banner(%rip), %rsi
	call puts

	# 2. IOAPIC version register through MMIO.
	mov $IOAPIC_BASE, %ebx
	movl $IOAPIC_VERSION_REG, (%rbx)
	mov IOAPIC_IOWIN(%rbx), %ebx
	lea msg_ioapic(%rip), %rsi
	call puts
	mov %ebx, %eax
	call put_hex32
	call put_newline

	# 3. One UART interrupt. Remap the PIC (ICW1-ICW4), unmask IRQ 4 only.
	mov $0x11, %al                    # ICW1: edge, cascade, ICW4 follows
	out %al, $PIC1_CMD
	out %al, $PIC2_CMD
	mov $IRQ_BASE, %al                # ICW2: vector base
	out %al, $PIC1_DATA
	mov $(IRQ_BASE + 8), %al
	out %al, $PIC2_DATA
	mov $0x04, %al                    # ICW3: slave on IRQ 2
	out %al, $PIC1_DATA
	mov $0x02, %al
	out %al, $PIC2_DATA
	mov $0x01, %al                    # ICW4: 8086 mode
	out %al, $PIC1_DATA
	out %al, $PIC2_DATA
	mov $0xef, %al                    # OCW1: everything masked but IRQ 4
	out %al, $PIC1_DATA
	mov $0xff, %al
	out %al, $PIC2_DATA
	lidt idt_pointer(%rip)
	mov $TSS_SEL, %ax
	ltr %ax
	mov $UART_FCR, %dx                # FIFOs off: IIR then reads 0x02 for THR empty
	xor %al, %al
	out %al, %dx
	mov $UART_MCR, %dx
	mov $MCR_OUT2, %al                # OUT2 gates the IRQ line to the PIC on PCs
	out %al, %dx
	mov $UART_IER, %dx
	mov $IER_THRI, %al                # THR is empty: the interrupt is pending at once
	out %al, %dx
wait_for_irq:
	sti
	hlt                               # sti's shadow: the interrupt can only wake this hlt
	cli
	cmpb $0, irq_taken(%rip)
	je wait_for_irq
	mov $UART_IER, %dx
	xor %al, %al
	out %al, %dx
	mov $0xff, %al                    # mask the PIC again
	out %al, $PIC1_DATA
	lea msg_irq(%rip), %rsi
	call puts
	movzbl uart_iir(%rip), %eax
	call put_hex8
	call put_newline

	# 4. Ring 3 through sysretq, back through syscall.
	mov $MSR_STAR, %ecx
	xor %eax, %eax
	mov $((USER_SYSRET_BASE << 16) | KERNEL_CS), %edx
	wrmsr
	mov $MSR_LSTAR, %ecx
	mov $syscall_entry, %eax
	xor %edx, %edx
	wrmsr
	mov $MSR_SFMASK, %ecx
	mov $SFMASK_BITS, %eax
	wrmsr
	mov $ring3_loop, %ecx             # RCX: user RIP
	mov $(RFLAGS_RESERVED | RFLAGS_IOPL3), %r11d # R11: user RFLAGS
	mov $user_stack_top, %rsp
	sysretq

# Ring 3: RING3_ROUNDS rounds of the LCG in R13, a line after each; the iteration count back in RDI.
ring3_loop:
	mov $1, %r12                      # round number
	mov $1, %r13                      # LCG state
	movabs $LCG_MULTIPLIER, %r14
next_round:
	mov $RING3_ROUND_ITERATIONS, %r15d
1:	imul %r14, %r13
	inc %r13
	dec %r15
	jnz 1b
	lea msg_round(%rip), %rsi
	call puts
	mov %r12, %rax
	call put_decimal
	lea msg_state(%rip), %rsi
	call puts
	mov %r13, %rax
	call put_decimal
	call put_newline
	inc %r12
	cmp $(RING3_ROUNDS + 1), %r12
	jne next_round
	mov $(RING3_ROUNDS * RING3_ROUND_ITERATIONS), %rdi
	syscall
	ud2

# Ring 0 again (RCX, R11 hold the user RIP and RFLAGS; RSP is still the user's); RDI: the count.
syscall_entry:
	mov %cs, %eax
	test $3, %al
	jnz syscall_left_ring3
	mov $kernel_stack_top, %rsp
	jmp back_in_ring0
syscall_left_ring3:                   # still CPL 3: no I/O here; enter ring 0 through the IDT
	mov %eax, syscall_cs(%rip)
fallback_int:
	int $SYSCALL_FALLBACK_VECTOR      # or #UD right here: see exception_common
	ud2
syscall_fallback_isr:                 # vector 0x80, DPL 3 gate: on the TSS's RSP0, at CPL 0
	movb $FALLBACK_INT80, used_fallback(%rip)
syscall_fallback_continue:
	mov $kernel_stack_top, %rsp
back_in_ring0:
	lea msg_ring3(%rip), %rsi
	call puts
	mov %rdi, %rax
	call put_decimal
	lea msg_iterations(%rip), %rsi
	call puts
	cmpb $0, used_fallback(%rip)
	je 1f
	lea msg_fallback(%rip), %rsi
	call puts
	mov syscall_cs(%rip), %eax
	shl $16, %eax                     # print the selector as 4 hex digits
	mov $4, %ecx
	call put_hex
	lea msg_fallback_int80(%rip), %rsi
	cmpb $FALLBACK_INT80, used_fallback(%rip)
	je 2f
	lea msg_fallback_ud(%rip), %rsi
2:	call puts
1:

	# 5. Goodbye and reset.
	lea msg_goodbye(%rip), %rsi
	call puts
	mov $RESET_CONTROL_PORT, %dx
	mov $RESET_HARD, %al
	out %al, %dx
halt_forever:
	cli
	hlt
	jmp halt_forever

# Vector 0x24: read IIR (acknowledges THR empty), EOI, set the flag.
uart_isr:
	push %rax
	push %rdx
	mov $UART_IIR, %dx
	in %dx, %al
	mov %al, uart_iir(%rip)
	movb $1, irq_taken(%rip)
	mov $PIC_EOI, %al
	out %al, $PIC1_CMD
	pop %rdx
	pop %rax
	iretq

# Vectors 0-31: each stub pushes its vector number; eight bytes per stub.
	.balign 8
exception_stubs:
	.set vector, 0
	.rept 32
	.balign 8
	push $vector
	jmp exception_common
	.set vector, vector + 1
	.endr
exception_common:
	cmpq $VECTOR_UD, (%rsp)           # #UD at fallback_int: the way back from ring 3
	jne 1f
	lea fallback_int(%rip), %rax
	cmp %rax, 8(%rsp)                 # the faulting RIP, above the pushed vector
	jne 1f
	movb $FALLBACK_UD, used_fallback(%rip)
	jmp syscall_fallback_continue
1:	mov (%rsp), %ebx                  # the vector the stub pushed
	lea msg_exception(%rip), %rsi
	call puts
	mov %ebx, %eax
	call put_hex8
	call put_newline
	mov $DEBUG_EXIT_PORT, %dx
	mov $1, %al
	out %al, %dx
	jmp halt_forever

# puts: print the NUL-terminated string at RSI. Clobbers RAX, RDX, RSI.
puts:
	lodsb
	test %al, %al
	jz 1f
	call putc
	jmp puts
1:	ret

# putc: print AL once the transmitter holding register is empty. Clobbers RDX.
putc:
	mov %al, %ah
	mov $UART_LSR, %dx
1:	in %dx, %al
	test $LSR_THRE, %al
	jz 1b
	mov %ah, %al
	mov $UART_THR, %dx
	out %al, %dx
	ret

put_newline:
	mov $'\n', %al
	jmp putc

# put_hex32 / put_hex8: "0x" and 8 or 2 hex digits of EAX. Clobbers RAX, RCX, RDX, R8.
put_hex32:
	mov $8, %ecx
	jmp put_hex
put_hex8:
	shl $24, %eax
	mov $2, %ecx
put_hex:                              # ECX digits of the top of EAX
	mov %eax, %r8d
	mov $'0', %al
	call putc
	mov $'x', %al
	call putc
1:	rol $4, %r8d
	mov %r8d, %eax
	and $0xf, %eax
	lea hex_digits(%rip), %rdx
	movb (%rdx, %rax), %al
	call putc
	dec %ecx
	jnz 1b
	ret

# put_decimal: RAX in decimal. Clobbers RAX, RCX, RDX, RSI.
put_decimal:
	lea decimal_end(%rip), %rsi
	mov $10, %ecx
1:	xor %edx, %edx
	div %rcx
	add $'0', %dl
	dec %rsi
	mov %dl, (%rsi)
	test %rax, %rax
	jnz 1b
	jmp puts

# Data: everything lives in the one .text section so that label differences are constants.
hex_digits:
	.ascii "0123456789abcdef"
msg_banner:
	.asciz "ring3_loop: 64-bit long mode, hello from the kvm-ts default guest\n"
msg_ioapic:
	.asciz "ring3_loop: IOAPIC version register = "
msg_irq:
	.asciz "ring3_loop: UART interrupt taken on vector 0x24, IIR = "
msg_ring3:
	.asciz "ring3_loop: back from ring 3 through syscall after "
msg_iterations:
	.asciz " loop iterations\n"
msg_fallback:
	.asciz "ring3_loop: note: syscall left CS = "
msg_fallback_int80:
	.asciz " (ring 3); back in ring 0 through int 0x80\n"
msg_fallback_ud:
	.asciz " (ring 3) and int 0x80 raised #UD; back in ring 0 through that #UD\n"
msg_round:
	.asciz "ring3_loop: round "
msg_state:
	.asciz " (ring 3), LCG state "
msg_goodbye:
	.asciz "ring3_loop: goodbye, resetting through port 0xcf9\n"
msg_exception:
	.asciz "ring3_loop: unexpected CPU exception, vector "

irq_taken:
	.byte 0
uart_iir:
	.byte 0
used_fallback:
	.byte 0
	.balign 4
syscall_cs:
	.long 0
decimal_buffer:
	.fill 20, 1, 0
decimal_end:
	.byte 0

	.balign 16
tss:
	.long 0                           # reserved
	.quad kernel_stack_top            # RSP0
	.quad 0, 0                        # RSP1, RSP2
	.quad 0                           # reserved
	.fill 7, 8, 0                     # IST1-7
	.quad 0                           # reserved
	.word 0                           # reserved
	.word TSS_SIZE                    # I/O map base past the limit: no I/O bitmap
	.set TSS_ADDR, LOAD_ADDR + (tss - _start)

	.balign 16
gdt:
	.quad 0                           # 0x00 null
	.quad 0x00af9a000000ffff          # 0x08 kernel code, 64-bit, DPL 0
	.quad 0x00cf92000000ffff          # 0x10 kernel data, DPL 0
	.quad 0x00cffa000000ffff          # 0x18 user code, 32-bit, DPL 3 (sysret base; unused)
	.quad 0x00cff2000000ffff          # 0x20 user data, DPL 3
	.quad 0x00affa000000ffff          # 0x28 user code, 64-bit, DPL 3
	.word TSS_SIZE - 1                # 0x30 64-bit TSS (available), 16 bytes
	.word TSS_ADDR & 0xffff
	.byte (TSS_ADDR >> 16) & 0xff
	.byte 0x89
	.byte 0
	.byte (TSS_ADDR >> 24) & 0xff
	.long 0, 0
gdt_end:
gdt_pointer:
	.word gdt_end - gdt - 1
	.quad gdt                         # 32-bit lgdt reads the low 4 bytes

	.balign 16
idt:
	.set vector, 0
	.rept 32                          # exceptions: the stubs above
	.word (LOAD_ADDR + (exception_stubs - _start) + vector * 8) & 0xffff
	.word KERNEL_CS
	.byte 0, 0x8e                     # present, DPL 0, 64-bit interrupt gate
	.word (LOAD_ADDR + (exception_stubs - _start) + vector * 8) >> 16
	.long 0, 0
	.set vector, vector + 1
	.endr
	.fill (UART_VECTOR - 32) * 2, 8, 0  # 0x20-0x23: not present
	.word (LOAD_ADDR + (uart_isr - _start)) & 0xffff
	.word KERNEL_CS
	.byte 0, 0x8e
	.word (LOAD_ADDR + (uart_isr - _start)) >> 16
	.long 0, 0
	.fill (SYSCALL_FALLBACK_VECTOR - UART_VECTOR - 1) * 2, 8, 0
	.word (LOAD_ADDR + (syscall_fallback_isr - _start)) & 0xffff
	.word KERNEL_CS
	.byte 0, 0xee                     # present, DPL 3: `int $0x80` allowed from ring 3
	.word (LOAD_ADDR + (syscall_fallback_isr - _start)) >> 16
	.long 0, 0
idt_end:
idt_pointer:
	.word idt_end - idt - 1
	.quad idt

# Static page tables (no ring-0 loops to build them).
	.balign 4096
pml4:
	.quad pdpt + (PTE_P | PTE_RW | PTE_US)
	.fill 511, 8, 0
pdpt:
	.quad pd_low + (PTE_P | PTE_RW | PTE_US)
	.quad 0, 0
	.quad pd_mmio + (PTE_P | PTE_RW)
	.fill 508, 8, 0
pd_low:                               # 0 - 1 GiB, 2-MiB pages, user accessible
	.set page, 0
	.rept 512
	.quad (page * PAGE_2M) | (PTE_P | PTE_RW | PTE_US | PTE_PS)
	.set page, page + 1
	.endr
pd_mmio:                              # 3 - 4 GiB: only the IOAPIC's 2 MiB, cache disabled
	.fill (IOAPIC_BASE - 0xc0000000) / PAGE_2M, 8, 0
	.quad IOAPIC_BASE | (PTE_P | PTE_RW | PTE_PWT | PTE_PCD | PTE_PS)
	.fill 511 - (IOAPIC_BASE - 0xc0000000) / PAGE_2M, 8, 0
image_end:

	.set kernel_stack_top, image_end + 0x1000
	.set user_stack_top, image_end + 0x3000
	.set bss_end, image_end + BSS_SIZE
