# Guest of examples/custom_board.ts. Real mode, CS = DS = 0, linked and loaded at 0x1000. No stack.
#   1. prints the NUL-terminated message the script put in board.rom (0xf0000) on the console
#      port, one `out` per byte (the ROM is a read-only memslot: reading it does not exit);
#   2. reads the counter register (0xd0000, MMIO: every read exits to the script's device) three
#      times, printing each value as " <digit>" and storing it in RAM at 0x2000 (a memslot: no exit);
#   3. prints a newline and writes 0 to the power-off port, whose device ends the run.
	.code16
	.set ROM_SEGMENT, 0xf000          # board.rom at 0xf0000
	.set COUNTER_SEGMENT, 0xd000      # the counter register at 0xd0000
	.set RESULTS, 0x2000              # where the counter values go in RAM
	.set READS, 3
	.set CONSOLE_PORT, 0xe9
	.set POWER_PORT, 0xf4
	.set ASCII_SPACE, 0x20
	.set ASCII_ZERO, 0x30
	.set ASCII_NEWLINE, 0x0a

	.globl _start
_start:
	mov $ROM_SEGMENT, %ax
	mov %ax, %es
	mov $COUNTER_SEGMENT, %ax
	mov %ax, %fs
	mov $CONSOLE_PORT, %dx
	xor %si, %si
print:
	mov %es:(%si), %al
	test %al, %al
	jz count
	out %al, %dx
	inc %si
	jmp print
count:
	mov $RESULTS, %di
	mov $READS, %cx
1:
	movl %fs:0, %eax                  # MMIO read: exits to the counter device
	mov %eax, (%di)                   # RAM: no exit
	add $4, %di
	mov %al, %bl
	mov $ASCII_SPACE, %al
	out %al, %dx
	mov %bl, %al
	add $ASCII_ZERO, %al
	out %al, %dx
	loop 1b
	mov $ASCII_NEWLINE, %al
	out %al, %dx
	xor %al, %al
	out %al, $POWER_PORT
halt:
	hlt
	jmp halt
