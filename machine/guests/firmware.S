# firmware: the default `pc.bios` image of the kvm-ts PC board, used when no kernel is given.
#
# 256 KiB, mapped at 4 GiB - 256 KiB, so its last 16 bytes hold the reset vector at 0xfffffff0.
# The PC reset state is CS selector 0xf000 with base 0xffff0000 and IP 0xfff0; the far jump there
# reloads CS = 0xf000 (base 0xf0000), where the top 128 KiB of the image are also visible through
# `isa-bios` (0xe0000-0xfffff), so the real-mode code below runs from the image's last 64 KiB.
# It prints one line over COM1 (polling LSR.THRE before each THR write) and resets the machine
# through the PIIX3 reset control register (0xcf9 <- 0x06); under `-no-reboot`, and on the kvm-ts
# board, the run then ends with status 0.
#
# Every address used by the 16-bit code is a difference of labels in this one section, relative to
# `f_segment` (the image offset seen at 0xf0000), so the link address does not matter.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts (as --64; ld --oformat binary -Ttext 0xfffc0000).

	.set IMAGE_SIZE, 0x40000          # 256 KiB
	.set F_SEGMENT_OFFSET, 0x30000    # image offset of linear 0xf0000 (last 64 KiB)
	.set RESET_VECTOR_OFFSET, IMAGE_SIZE - 16
	.include "_uart.inc"              # COM1 registers, uart_send_al
	.set RESET_CONTROL_PORT, 0xcf9
	.set RESET_HARD, 0x06             # bit 1 hard reset, bit 2 reset now

	.text
	.code16
	.globl _start
_start:
	.org F_SEGMENT_OFFSET, 0          # unused: zero, as a fresh ROM is, so the board writes only the code

f_segment:
real_mode_start:
	cli
	cld
	mov %cs, %ax                      # DS = CS = 0xf000
	mov %ax, %ds
	mov $(message - f_segment), %si
next_char:
	lodsb
	test %al, %al
	jz reset
	uart_send_al ah
	jmp next_char
reset:
	mov $RESET_CONTROL_PORT, %dx
	mov $RESET_HARD, %al
	out %al, %dx
halt_forever:
	hlt
	jmp halt_forever

message:
	.asciz "kvm-ts firmware: no kernel given (use -kernel FILE)\n"

	.org RESET_VECTOR_OFFSET, 0
reset_vector:                         # 0xfffffff0 (and 0xffff0 through isa-bios)
	ljmp $0xf000, $(real_mode_start - f_segment)
	.org IMAGE_SIZE, 0
image_end:
