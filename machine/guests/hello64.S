# hello64: the default guest of the main command.
#
# A Multiboot v1 image (a.out kludge, header flags bit 16) linked as a flat binary at 1 MiB. It
# starts in the Multiboot machine state (32-bit protected mode, flat segments, paging off, no stack;
# Multiboot 0.6.96 section 3.2), loads its own GDT, points CR3 at page tables that are static data,
# enters 64-bit long mode, and then, printing one line over COM1 for each step:
#   1. a banner;
#   2. the IOAPIC version register, read through MMIO at 0xfec00000 (IOREGSEL = 1, read IOWIN);
#   3. a UART interrupt: PIC remapped to vectors 0x20-0x2f, only IRQ 4 unmasked, THR-empty
#      interrupt enabled (IER = 0x02, MCR.OUT2), `sti; hlt` until the vector 0x24 handler ran;
#   4. a ring-3 loop of 50,000,000 iterations entered with `sysretq` and left with `syscall`
#      (ring 3 runs natively on a nested kvm_pvm host; ring 0 is emulated, so ring 0 stays short).
#      The syscall entry checks CS: on the kvm_pvm development host `syscall` reaches LSTAR but
#      leaves CS/SS at the user selectors (CPL 3). The guest then returns to ring 0 through
#      `int $0x80` (a DPL-3 gate), or, where that raises #UD (kvm_pvm again), through that #UD
#      (exceptions from ring 3 do reach ring 0 there, on the TSS's RSP0), and prints an extra
#      "note" line naming the path;
#   5. a goodbye line, then a reset through the PIIX3 reset control register (0xcf9 <- 0x06), which
#      ends the run with status 0 under `qemu-system-x86_64 -no-reboot` and on the kvm-ts board.
# An unexpected CPU exception prints its vector and exits through isa-debug-exit (status 3).#
# Shared pieces (each file says what it provides): _multiboot.inc (the Multiboot header),
# _uart.inc (COM1 constants, putc/puts) and _long_mode.inc (the long-mode entry, steps 1-3 and 5,
# the handlers, the print routines, GDT/IDT/TSS and page tables). This file sets the ring-3 RFLAGS
# and supplies step 4's loop.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts (as --64; ld --oformat binary -Ttext 0x100000).

	.set LOAD_ADDR, 0x100000          # link and load address (Multiboot load_addr)
	.include "_multiboot.inc"
	.include "_uart.inc"
	.include "_long_mode.inc"

	.set RING3_ITERATIONS, 50000000
	.set RING3_RFLAGS, RFLAGS_RESERVED  # ring 3 runs with IOPL 0: no port access

	long_mode_entry                   # steps 1-3, then sysretq to ring3_loop

# Ring 3: count in RAX, hand the count back in RDI.
ring3_loop:
	xor %eax, %eax
1:	inc %rax
	cmp $RING3_ITERATIONS, %rax
	jne 1b
	mov %rax, %rdi
	syscall
	ud2

	long_mode_kernel                  # back in ring 0: step 5, handlers, print routines
	long_mode_messages hello64
	long_mode_data hello64
