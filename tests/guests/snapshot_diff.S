# Real-mode guest for the diff-snapshot test (issue 11). Ends the run through isa-debug-exit
# (port 0x501) twice: first before writing anything, then after writing one word into each of the
# ten pages 0x30000, 0x31000, ... 0x39000 (the word is the page's number) — and nowhere else: no
# stack use. After the second exit it halts for good.
	.code16
	.globl _start
_start:
	mov $0x501, %dx
	xor %al, %al
	out %al, %dx                  # run 1 ends here: the full snapshot
	mov $0x3000, %ax              # segment of page 0x30
	mov $10, %cx
1:	mov %ax, %ds
	mov %ax, (0)                  # the segment value marks the page
	add $0x100, %ax               # next 4 KiB page
	loop 1b
	xor %al, %al
	out %al, %dx                  # run 2 ends here: the diff snapshot
2:	hlt
	jmp 2b
