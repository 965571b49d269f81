# exit_status: prints one line over COM1 and ends the run through QEMU's isa-debug-exit device
# (port 0x501): writing 0x10 ends the run with status (0x10 << 1) | 1 = 0x21 = 33.
#
# A Multiboot v1 image (a.out kludge, header flags bit 16) linked as a flat binary at 1 MiB; it
# runs entirely in the 32-bit protected mode the Multiboot loader enters it in (flat segments,
# paging off), and needs no stack.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts (as --64; ld --oformat binary -Ttext 0x100000).

	.set LOAD_ADDR, 0x100000          # link and load address (Multiboot load_addr)
	.include "_multiboot.inc"         # MB_MAGIC, MB_FLAGS, the multiboot_start macro
	.include "_uart.inc"              # COM1 registers, uart_send_al

	.set DEBUG_EXIT_PORT, 0x501
	.set EXIT_VALUE, 0x10             # status (0x10 << 1) | 1 = 33

	multiboot_start                   # .text, .code32, _start: the Multiboot header (no bss)

entry32:
	cli
	cld
	mov $message, %esi
next_char:
	lodsb
	test %al, %al
	jz done
	uart_send_al ah
	jmp next_char
done:
	mov $DEBUG_EXIT_PORT, %dx
	mov $EXIT_VALUE, %al
	out %al, %dx
halt_forever:                         # without an isa-debug-exit device: stop here
	hlt
	jmp halt_forever

message:
	.asciz "exit_status: leaving through isa-debug-exit with 0x10 (status 33)\n"
	.balign 4
image_end:
