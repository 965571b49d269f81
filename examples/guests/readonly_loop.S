# Guest of examples/readonly_toggle.ts. Real mode, CS = DS = 0, linked and loaded at 0x1000. No stack.
# For i = 1 .. CX: stores i in the scratch page (0x8000), loads it back, and reports both on port
# 0x10 as one 16-bit `out` (AH = the value written, AL = the value read back); then hlt.
# While the scratch page is a read-only memslot the store exits as MMIO and the load returns the
# previous value.
	.code16
	.set SCRATCH, 0x8000
	.set REPORT_PORT, 0x10

	.globl _start
_start:
	mov $1, %ah
1:
	mov %ah, (SCRATCH)
	mov (SCRATCH), %al
	out %ax, $REPORT_PORT
	inc %ah
	loop 1b
	hlt
