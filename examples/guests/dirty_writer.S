# Guest of examples/dirty_pages.ts. Real mode, CS = DS = 0, linked and loaded at 0x1000. No stack,
# so the only RAM it writes are the pages it is asked to: for each bit n set in EDX:EAX (n = 0 .. 63)
# it stores n in the first byte of guest page n (address n * 0x1000). Then it reports the number of
# pages written on port 0x10, whose device ends the run.
	.code16
	.set PAGES, 64
	.set PARAGRAPHS_PER_PAGE_SHIFT, 8 # segment of page n = n * 0x1000 / 16
	.set DONE_PORT, 0x10

	.globl _start
_start:
	xor %bx, %bx                      # page number
	xor %cx, %cx                      # pages written
1:
	test $1, %al
	jz 2f
	mov %bx, %si
	shl $PARAGRAPHS_PER_PAGE_SHIFT, %si
	mov %si, %es
	mov %bl, %es:0
	inc %cx
2:
	shrd $1, %edx, %eax               # next bit of EDX:EAX into bit 0
	shr $1, %edx
	inc %bx
	cmp $PAGES, %bx
	jne 1b
	mov %cx, %ax
	out %ax, $DONE_PORT
halt:
	hlt
	jmp halt
