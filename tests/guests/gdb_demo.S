# gdb_demo: a guest for the gdb stub's test. It loads 0x10 into EBX, calls compute, which adds
# 0x32 to it, stores the sum in `counter` and leaves through isa-debug-exit (port 0x501): with
# 0x21 (status 67) when the sum is 0x42, with 0x10 (status 33) when a debugger changed it.
#
# A Multiboot v1 image (a.out kludge) linked at 1 MiB that stays in the 32-bit protected mode the
# loader enters it in. Assembled with `as --64` (so gdb reads an x86-64 ELF with its symbols) and
# `ld -Ttext 0x100000`; the flat binary booted is that ELF's `objcopy -O binary`.

	.set LOAD_ADDR, 0x100000
	.set MB_MAGIC, 0x1badb002
	.set MB_FLAGS, 0x00010000
	.set DEBUG_EXIT_PORT, 0x501

	.text
	.code32
	.globl _start, compute, counter, good, other
_start:
multiboot_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long LOAD_ADDR + (multiboot_header - _start)   # header_addr
	.long LOAD_ADDR                                 # load_addr
	.long LOAD_ADDR + (image_end - _start)          # load_end_addr
	.long 0                                         # bss_end_addr
	.long LOAD_ADDR + (entry32 - _start)            # entry_addr

entry32:
	cli
	mov $0x90000, %esp
	mov $0x10, %ebx
	call compute
	hlt

compute:
	mov %ebx, %eax
	add $0x32, %eax
	mov %eax, counter
	cmp $0x42, %eax
	jne other
good:
	mov $0x21, %al
	jmp leave
other:
	mov $0x10, %al
leave:
	mov $DEBUG_EXIT_PORT, %dx
	out %al, %dx
1:	hlt
	jmp 1b

	.balign 4
counter:
	.long 0
image_end:
