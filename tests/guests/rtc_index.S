# Real-mode guest for the deferred coalesced zones. With RTC=1 it writes the RTC's index port (0x70)
# 64 times, selects register A and reads it back through the data port (0x71); register A's value
# after reset (0x26) resets the machine through the PIIX3 reset control register (0xcf9 <- 0x06),
# any other value halts with interrupts off for good. With RTC=0 it writes 64 POST codes to port
# 0x80 (unassigned, nothing coalesced) instead and resets: it never touches a coalesced device.
# Linked at 0x1000; run with CS = DS = ES = 0.
	.code16
	.globl _start
_start:
	cli
	mov $64, %cx
writes:
	mov %cl, %al
.if RTC
	out %al, $0x70                  # the first exits; KVM queues the rest
.else
	out %al, $0x80
.endif
	loop writes
.if RTC
	mov $0x0a, %al                  # register A: KVM may hold this write in its ring,
	out %al, $0x70
	in $0x71, %al                   # which this read plays back first
	cmp $0x26, %al
	jne halt
.endif
	mov $0x06, %al
	mov $0xcf9, %dx
	out %al, %dx
halt:
	hlt
	jmp halt
