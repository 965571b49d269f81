# exit_status: prints one line over COM1 and ends the run through QEMU's isa-debug-exit device
# (port 0x501): writing 0x10 ends the run with status (0x10 << 1) | 1 = 0x21 = 33.
#
# A Multiboot v1 image (a.out kludge, header flags bit 16) linked as a flat binary at 1 MiB; it
# runs entirely in the 32-bit protected mode the Multiboot loader enters it in (flat segments,
# paging off), and needs no stack.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts (as --64; ld --oformat binary -Ttext 0x100000).

	.set LOAD_ADDR, 0x100000          # link and load address (Multiboot load_addr)
	.set MB_MAGIC, 0x1badb002         # Multiboot v1 header magic
	.set MB_FLAGS, 0x00010000         # bit 16: the a.out kludge address fields are valid

	.set UART_THR, 0x3f8
	.set UART_LSR, 0x3fd
	.set LSR_THRE, 0x20
	.set DEBUG_EXIT_PORT, 0x501
	.set EXIT_VALUE, 0x10             # status (0x10 << 1) | 1 = 33

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
	.long 0                                         # bss_end_addr: no bss
	.long LOAD_ADDR + (entry32 - _start)            # entry_addr

entry32:
	cli
	cld
	mov $message, %esi
next_char:
	lodsb
	test %al, %al
	jz done
	mov %al, %ah
	mov $UART_LSR, %dx
1:	in %dx, %al
	test $LSR_THRE, %al
	jz 1b
	mov %ah, %al
	mov $UART_THR, %dx
	out %al, %dx
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
