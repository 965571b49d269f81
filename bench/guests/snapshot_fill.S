# The snapshot benchmark's guest: a Multiboot v1 image (a.out kludge) loaded at 1 MiB, run in the
# 32-bit protected mode Multiboot enters it in, the same on kvm-ts and on QEMU.
#   1. writes one word into every 4 KiB page from 2 MiB to RAM_END (every page then holds data),
#      prints "filled" on COM1 and writes port 0x501 (kvm-ts: the run ends there; the bench takes a
#      full snapshot; QEMU without isa-debug-exit ignores it);
#   2. prints "resumed" (the bench times a restore of the full snapshot to this line), then
#      increments a word in every 100th of those pages (1 % of RAM dirty), prints "dirtied" and
#      writes port 0x501 again (the bench takes a diff snapshot);
#   3. halts for good.
# RAM_END is defined by the bench (`.set RAM_END, ...` prepended to this source).
	.set MB_MAGIC, 0x1badb002
	.set MB_FLAGS, 0x00010000
	.set LOAD_ADDR, 0x100000
	.set FILL_START, 0x200000
	.set STACK_TOP, 0x1ff000          # below FILL_START, above the image
	.set PAGE, 0x1000
	.set DIRTY_STRIDE, 100 * PAGE
	.set COM1, 0x3f8
	.set DEBUG_EXIT_PORT, 0x501

	.text
	.code32
	.globl _start
_start:
multiboot_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long LOAD_ADDR + (multiboot_header - _start)
	.long LOAD_ADDR
	.long LOAD_ADDR + (image_end - _start)
	.long LOAD_ADDR + (image_end - _start)
	.long LOAD_ADDR + (entry - _start)
entry:
	cli
	mov $STACK_TOP, %esp              # Multiboot leaves ESP undefined
	mov $FILL_START, %edi
1:	mov %edi, (%edi)
	add $PAGE, %edi
	cmp $RAM_END, %edi
	jb 1b
	mov $msg_filled, %esi
	call puts
	mov $DEBUG_EXIT_PORT, %dx
	xor %al, %al
	out %al, %dx
	mov $msg_resumed, %esi
	call puts
	mov $FILL_START, %edi
2:	incl 4(%edi)
	add $DIRTY_STRIDE, %edi
	cmp $RAM_END, %edi
	jb 2b
	mov $msg_dirtied, %esi
	call puts
	mov $DEBUG_EXIT_PORT, %dx
	xor %al, %al
	out %al, %dx
3:	hlt
	jmp 3b

puts:
	mov $COM1, %dx
1:	lodsb
	test %al, %al
	jz 2f
	out %al, %dx
	jmp 1b
2:	ret

msg_filled:
	.asciz "filled\n"
msg_resumed:
	.asciz "resumed\n"
msg_dirtied:
	.asciz "dirtied\n"
	.balign 4
image_end:
