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
# Shared pieces (each file says what it provides): _multiboot.inc (the Multiboot header),
# _uart.inc (COM1 constants, putc/puts) and _long_mode.inc (hello64's long-mode entry, steps 1-3
# and 5, the handlers, the print routines, GDT/IDT/TSS and page tables). This file sets the ring-3
# RFLAGS (IOPL 3) and supplies the ring-3 rounds and their messages.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts.

	.set LOAD_ADDR, 0x100000          # link and load address (Multiboot load_addr)
	.include "_multiboot.inc"
	.include "_uart.inc"
	.include "_long_mode.inc"

	.set RING3_ROUNDS, 16
	.set RING3_ROUND_ITERATIONS, 20000000
	.set RFLAGS_IOPL3, 3 << 12         # ring 3 may use in/out (the UART)
	.set RING3_RFLAGS, RFLAGS_RESERVED | RFLAGS_IOPL3
	.set LCG_MULTIPLIER, 6364136223846793005

	long_mode_entry                   # steps 1-3, then sysretq to ring3_loop

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

	long_mode_kernel                  # back in ring 0: step 5, handlers, print routines
	long_mode_messages ring3_loop
msg_round:
	.asciz "ring3_loop: round "
msg_state:
	.asciz " (ring 3), LCG state "
	long_mode_data ring3_loop
