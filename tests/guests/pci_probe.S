# Real-mode guest for the coalesced-port tests: probes PCI configuration space the way Linux does,
# a 4-byte write of CONFIG_ADDRESS (0xcf8) then a 4-byte read of CONFIG_DATA (0xcfc), 64 times
# (slots 0-31 of bus 0, twice), counting the slots that answer; then writes the count to port 0x80
# (a POST code, unassigned on the board), resets through the PIIX3 reset control register
# (0xcf9 <- 0x06) and halts with interrupts off: only a reset ends the run.
# Linked at 0x1000; run with CS = DS = ES = 0.
	.code16
	.globl _start
_start:
	cli
	xor %bx, %bx                    # slots that answered
	xor %si, %si                    # probes made
probe:
	mov %si, %ax
	and $31, %ax
	shl $11, %ax                    # device number in bits 15:11
	movzwl %ax, %eax
	or $0x80000000, %eax            # enable bit, bus 0, function 0, register 0 (vendor/device)
	mov $0xcf8, %dx
	out %eax, %dx
	mov $0xcfc, %dx
	in %dx, %eax
	cmp $0xffff, %ax
	je absent
	inc %bx
absent:
	inc %si
	cmp $64, %si
	jne probe
	mov %bl, %al
	out %al, $0x80
	mov $0x06, %al
	mov $0xcf9, %dx
	out %al, %dx
halt:
	hlt
	jmp halt
