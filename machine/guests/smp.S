# smp: the SMP proof guest. The BSP wakes every other CPU with INIT-SIPI-SIPI; each AP reports its
# APIC id over COM1 under a spinlock and counts itself in; the BSP waits for all of them:
#
#   smp: BSP (APIC id 0) waking 3 APs
#   smp: AP with APIC id 2 is up            (one line per AP, in whatever order they get the lock)
#   smp: AP with APIC id 1 is up
#   smp: AP with APIC id 3 is up
#   smp: all 4 CPUs reported
#
# then resets through the PIIX3 reset control register (0xcf9 <- 0x06): run status 0 on the kvm-ts
# board and under `qemu-system-x86_64 -no-reboot`. If not every AP reports within WAIT_LOOPS polls
# it prints "smp: only M of N-1 APs reported" and writes 1 to isa-debug-exit (port 0x501): status 3.
# With one CPU it prints the first line and "smp: all 1 CPUs reported" and resets at once.
#
# With "work" anywhere in its Multiboot command line (`-append work`), every CPU then computes: each
# runs WORK_LOOPS steps of a 32-bit LCG seeded with its APIC id + 1, in registers only, and the BSP
# waits for all of them and prints "smp: cpu K result R" for K = 0 ... N-1 before the reset. Seconds
# of work on every CPU at once, with output that depends on none of the timing: a snapshot taken
# then holds every vCPU in the middle of it (tests/snapshot_test.ts).
#
# With "count" in its command line (`-append count`), the APs print nothing: each marks its x2APIC id
# in a table and counts itself in, without the lock, and halts; the BSP then checks that every id
# from 1 to N-1 was marked and prints "smp: APIC ids 1 to N-1 each reported once" (else "smp: APIC
# id K never reported" for each one missing, and status 3). Hundreds of CPUs, with no lock for them
# to queue on: the way to wake more than 255 CPUs, whose ids need x2APIC (at most MAX_COUNTED).
#
# How many CPUs: CMOS byte 0x5f holds the CPU count minus one (QEMU's pc_cmos_init sets it; so does
# the kvm-ts board's CMOS), read through ports 0x70/0x71. The MP table is not consulted.
#
# A Multiboot v1 image (a.out kludge, header flags bit 16) linked as a flat binary at 1 MiB. The
# BSP runs in the 32-bit protected mode the loader enters it in (it loads its own flat GDT; paging
# stays off). An AP starts from SIPI vector 0x10 in real mode at 1000:0000, i.e. at 0x10000, where
# the BSP copied a small trampoline: it loads the same GDT, sets CR0.PE and far-jumps straight into
# the 32-bit AP code of this image (ap_entry32). 0x10000 is clear of what the loaders write
# (0x500-0x9fff: GDT, stack, Multiboot information) and of the reserved 0x9fc00-0xfffff.
#
# Atomics: the print lock is taken with `xchg` (implicitly locked) and released with a plain store;
# the count of reported APs is bumped with `lock incl` after the AP's line is complete, so every
# AP line precedes the BSP's last line. The APs share one stack, used only while holding the lock.
#
# Written for the kvm_pvm host of our build machines (docs/kvm-abi.md section 8), where CPL0 code is
# emulated one instruction at a time (~1 us): no `iret`, no `syscall`, no `cmpxchg16b`, short
# delays (the in-kernel LAPIC needs none: KVM acts on INIT and SIPI at once).
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts (as --64; ld --oformat binary -Ttext 0x100000).

	.set LOAD_ADDR, 0x100000          # link and load address (Multiboot load_addr)
	.include "_multiboot.inc"         # MB_MAGIC, MB_FLAGS, the multiboot_start macro
	.include "_uart.inc"              # COM1 registers, the putc and puts routines

	.set CMOS_INDEX, 0x70
	.set CMOS_DATA, 0x71
	.set CMOS_CPUS_MINUS_ONE, 0x5f
	.set DEBUG_EXIT_PORT, 0x501
	.set DEBUG_EXIT_TIMEOUT, 1        # status (1 << 1) | 1 = 3
	.set RESET_PORT, 0xcf9
	.set RESET_VALUE, 0x06            # system reset, CPU reset

	.set LAPIC_ICR_LOW, 0xfee00300    # writing it sends the IPI
	.set LAPIC_ICR_HIGH, 0xfee00310   # destination field (ignored with a shorthand)
	.set ICR_DELIVERY_PENDING, 0x1000 # bit 12: delivery status
	.set TRAMPOLINE_START, 0x10000
	.set SIPI_VECTOR, TRAMPOLINE_START >> 12
	# ICR low: shorthand all-excluding-self (0xc0000), level assert (0x4000), INIT (0x500) / SIPI (0x600)
	.set ICR_INIT_ALL_BUT_SELF, 0x000c4500
	.set ICR_SIPI_ALL_BUT_SELF, 0x000c4600 | SIPI_VECTOR

	.set INIT_DELAY_LOOPS, 10000      # ~10 ms here (emulated CPL0), microseconds on hardware
	.set SIPI_DELAY_LOOPS, 2000
	.set ICR_POLL_LOOPS, 1000
	.set WAIT_LOOPS, 5000000          # polls of the AP count before giving up
	.set WORK_LOOPS, 1000000000       # LCG steps per CPU in work mode (seconds in the nested VM)
	.set LCG_MUL, 1664525             # Numerical Recipes' 32-bit LCG
	.set LCG_ADD, 1013904223
	.set MB_INFO_CMDLINE, 0x4         # Multiboot information flags bit 2: cmdline at offset 16
	.set WORK_WORD, 0x6b726f77        # "work", little-endian
	.set COUNT_WORD, 0x6e756f63       # "coun", little-endian
	.set MAX_COUNTED, 4096            # x2APIC ids the count mode's table holds

	.set CR0_PE, 0x1
	.set CODE_SEL, 0x08
	.set DATA_SEL, 0x10

# apic_id_to_ebx: ebx = this CPU's x2APIC id, CPUID.0xB:EDX, where the CPU has that leaf, else its
# initial APIC id, CPUID.1:EBX[31:24]. Clobbers eax, ecx, edx; uses no stack (the APs share one).
	.macro apic_id_to_ebx
	xor %eax, %eax
	cpuid
	cmp $0xb, %eax
	jb 1f
	mov $0xb, %eax
	xor %ecx, %ecx
	cpuid
	mov %edx, %ebx
	jmp 2f
1:	mov $1, %eax
	cpuid
	shr $24, %ebx
2:
	.endm

	multiboot_start bss_end           # .text, .code32, _start: the Multiboot header

# The BSP.
entry32:
	cli
	cld
	lgdt gdt_descriptor
	ljmp $CODE_SEL, $bsp_reload_cs
bsp_reload_cs:
	mov $DATA_SEL, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %fs
	mov %ax, %gs
	mov %ax, %ss
	mov $bsp_stack_top, %esp
	movl $0, print_lock
	movl $0, aps_reported
	movl $0, cpus_done
	movl $0, work_mode                # "work" anywhere in the command line (EBX: Multiboot info)
	movl $0, count_mode               # "count" likewise
	mov $counted, %edi                # (a reboot runs this again: no marks left from before)
	mov $MAX_COUNTED, %ecx
	xor %eax, %eax
	rep stosb
	testl $MB_INFO_CMDLINE, (%ebx)
	jz 2f
	mov 16(%ebx), %esi
1:	cmpb $0, (%esi)
	je 2f
	cmpl $WORK_WORD, (%esi)
	je 3f
	cmpl $COUNT_WORD, (%esi)
	je 5f
	inc %esi
	jmp 1b
3:	movl $1, work_mode
	jmp 2f
5:	movl $1, count_mode
2:

	mov $CMOS_CPUS_MINUS_ONE, %al
	out %al, $CMOS_INDEX
	in $CMOS_DATA, %al
	movzbl %al, %eax
	mov %eax, aps_expected
	# Past 256 CPUs the CMOS byte cannot say: CPUID leaf 0xB's core level counts the package's
	# logical processors (16 bits). The larger of the two (QEMU's -smp N makes N packages of one).
	xor %eax, %eax
	cpuid
	cmp $0xb, %eax
	jb 4f
	mov $0xb, %eax
	mov $1, %ecx
	cpuid
	movzwl %bx, %ebx
	test %ebx, %ebx
	jz 4f
	dec %ebx
	cmp aps_expected, %ebx
	jbe 4f
	mov %ebx, aps_expected
4:

	mov $msg_bsp_id, %esi             # "smp: BSP (APIC id X) waking N-1 APs"
	call puts
	call apic_id
	call putdec
	mov $msg_waking, %esi
	call puts
	mov aps_expected, %eax
	call putdec
	mov $msg_aps, %esi
	call puts

	cmpl $0, aps_expected
	je all_reported

	mov $trampoline, %esi
	mov $TRAMPOLINE_START, %edi
	mov $trampoline_end - trampoline, %ecx
	rep movsb

	# INIT, then two SIPIs (MP spec B.4 / Intel SDM "universal start-up algorithm").
	mov $ICR_INIT_ALL_BUT_SELF, %eax
	call send_ipi
	mov $INIT_DELAY_LOOPS, %ecx
	call delay
	mov $ICR_SIPI_ALL_BUT_SELF, %eax
	call send_ipi
	mov $SIPI_DELAY_LOOPS, %ecx
	call delay
	mov $ICR_SIPI_ALL_BUT_SELF, %eax
	call send_ipi

	mov $WAIT_LOOPS, %ecx
wait_for_aps:
	mov aps_reported, %eax
	cmp aps_expected, %eax
	jae all_reported
	pause
	dec %ecx
	jnz wait_for_aps

	mov $msg_only, %esi               # "smp: only M of N-1 APs reported"
	call puts
	mov aps_reported, %eax
	call putdec
	mov $msg_of, %esi
	call puts
	mov aps_expected, %eax
	call putdec
	mov $msg_aps_reported, %esi
	call puts
timed_out:
	mov $DEBUG_EXIT_PORT, %dx
	mov $DEBUG_EXIT_TIMEOUT, %al
	out %al, %dx
	jmp halt_forever

all_reported:
	mov $msg_all, %esi                # "smp: all N CPUs reported"
	call puts
	mov aps_expected, %eax
	inc %eax
	call putdec
	mov $msg_cpus_reported, %esi
	call puts
	cmpl $0, count_mode
	je 6f
	mov $1, %edi                      # count mode: every id from 1 to N-1 marked?
	xor %ebp, %ebp                    # ids missing
7:	cmp aps_expected, %edi
	ja 8f
	cmpb $0, counted(%edi)
	jne 9f
	inc %ebp
	mov $msg_id, %esi                 # "smp: APIC id K never reported"
	call puts
	mov %edi, %eax
	call putdec
	mov $msg_never, %esi
	call puts
9:	inc %edi
	jmp 7b
8:	test %ebp, %ebp
	jnz timed_out
	mov $msg_ids, %esi                # "smp: APIC ids 1 to N-1 each reported once"
	call puts
	mov aps_expected, %eax
	call putdec
	mov $msg_once, %esi
	call puts
	jmp reset
6:	cmpl $0, work_mode
	je reset
	mov $wait_for_work, %edi          # the BSP's own share, then every AP's
	jmp work
wait_for_work:
	mov cpus_done, %eax
	cmp aps_expected, %eax
	ja print_results                  # N - 1 APs and the BSP
	pause
	jmp wait_for_work
print_results:
	xor %edi, %edi
1:	mov $msg_cpu, %esi                # "smp: cpu K result R"
	call puts
	mov %edi, %eax
	call putdec
	mov $msg_result, %esi
	call puts
	mov results(,%edi,4), %eax
	call putdec
	mov $'\n', %al
	call putc
	inc %edi
	cmp aps_expected, %edi
	jbe 1b
reset:
	mov $RESET_PORT, %dx
	mov $RESET_VALUE, %al
	out %al, %dx
halt_forever:                         # without a reset or isa-debug-exit device: stop here
	cli
	hlt
	jmp halt_forever

# send_ipi: ICR low = eax (high = 0), then wait (bounded) for delivery. Clobbers ecx.
send_ipi:
	movl $0, LAPIC_ICR_HIGH
	mov %eax, LAPIC_ICR_LOW
	mov $ICR_POLL_LOOPS, %ecx
1:	testl $ICR_DELIVERY_PENDING, LAPIC_ICR_LOW
	jz 2f
	pause
	dec %ecx
	jnz 1b
2:	ret

# delay: ecx iterations of pause.
delay:
	pause
	dec %ecx
	jnz delay
	ret

# work: WORK_LOOPS LCG steps from APIC id + 1 into results[APIC id], in registers only (the APs
# share one stack, so nothing is pushed), then back to %edi. The initial APIC id (8 bits): work mode
# is for at most 256 CPUs.
work:
	mov $1, %eax
	cpuid
	shr $24, %ebx
	lea 1(%ebx), %eax
	mov $WORK_LOOPS, %ecx
1:	imul $LCG_MUL, %eax, %eax
	add $LCG_ADD, %eax
	dec %ecx
	jnz 1b
	mov %eax, results(,%ebx,4)
	lock incl cpus_done
	jmp *%edi

# apic_id: eax = this CPU's APIC id (apic_id_to_ebx's). Clobbers ebx, ecx, edx.
apic_id:
	apic_id_to_ebx
	mov %ebx, %eax
	ret

# putc: al to COM1 once the transmitter is free. Clobbers dx.
	uart_putc_routine stack

# puts: the NUL-terminated string at esi. Clobbers eax, edx, esi.
	uart_puts_routine

# putdec: eax in decimal. Clobbers eax, ecx, edx.
putdec:
	push %ebx
	mov $10, %ebx
	xor %ecx, %ecx
1:	xor %edx, %edx
	div %ebx
	push %edx                         # digits come out least significant first
	inc %ecx
	test %eax, %eax
	jnz 1b
2:	pop %eax
	add $'0', %al
	call putc
	dec %ecx
	jnz 2b
	pop %ebx
	ret

# An AP, in 32-bit protected mode from the trampoline. No stack until it holds the lock.
ap_entry32:
	mov $DATA_SEL, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %fs
	mov %ax, %gs
	mov %ax, %ss
	cmpl $0, count_mode
	je ap_lock
	apic_id_to_ebx                    # count mode: this CPU's id, no stack, no lock
	cmp $MAX_COUNTED, %ebx
	jae ap_halt_forever               # beyond the table: never counted, the BSP times out
	movb $1, counted(%ebx)
	lock incl aps_reported            # after its mark: the BSP reads the table once all are in
	jmp ap_halt_forever
ap_lock:
	mov $1, %eax
	xchg %eax, print_lock             # xchg with memory is locked
	test %eax, %eax
	jz ap_locked
1:	pause                             # spin on reads until the lock looks free
	cmpl $0, print_lock
	jne 1b
	jmp ap_lock
ap_locked:
	mov $ap_stack_top, %esp
	mov $msg_ap, %esi                 # "smp: AP with APIC id K is up"
	call puts
	call apic_id
	call putdec
	mov $msg_up, %esi
	call puts
	movl $0, print_lock               # release: a plain store is ordered after the prints
	lock incl aps_reported
	cmpl $0, work_mode
	je ap_halt_forever
	mov $ap_halt_forever, %edi
	jmp work
ap_halt_forever:
	cli
	hlt
	jmp ap_halt_forever

# The real-mode trampoline, copied to TRAMPOLINE_START and entered at 1000:0000 by SIPI.
# Position-independent within its segment: data is addressed by offset from `trampoline`.
	.code16
trampoline:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl trampoline_gdtr - trampoline    # 32-bit form: the full linear base of gdt
	mov %cr0, %eax
	or $CR0_PE, %eax
	mov %eax, %cr0
	ljmpl $CODE_SEL, $ap_entry32
	.balign 4
trampoline_gdtr:
	.word gdt_end - gdt - 1
	.long gdt
trampoline_end:
	.code32

	.balign 8
gdt:
	.quad 0
	.quad 0x00cf9b000000ffff           # 0x08: 32-bit code, flat (accessed bit preset: no GDT write)
	.quad 0x00cf93000000ffff           # 0x10: data, flat
gdt_end:
gdt_descriptor:
	.word gdt_end - gdt - 1
	.long gdt

msg_bsp_id:
	.asciz "smp: BSP (APIC id "
msg_waking:
	.asciz ") waking "
msg_aps:
	.asciz " APs\n"
msg_ap:
	.asciz "smp: AP with APIC id "
msg_up:
	.asciz " is up\n"
msg_all:
	.asciz "smp: all "
msg_cpus_reported:
	.asciz " CPUs reported\n"
msg_only:
	.asciz "smp: only "
msg_of:
	.asciz " of "
msg_aps_reported:
	.asciz " APs reported\n"
msg_id:
	.asciz "smp: APIC id "
msg_never:
	.asciz " never reported\n"
msg_ids:
	.asciz "smp: APIC ids 1 to "
msg_once:
	.asciz " each reported once\n"
msg_cpu:
	.asciz "smp: cpu "
msg_result:
	.asciz " result "
	.balign 4
image_end:

	.bss
	.balign 64
print_lock:                           # 0 free, 1 held
	.skip 64
aps_reported:                         # APs that printed their line
	.skip 4
aps_expected:                         # N - 1, from CMOS
	.skip 4
cpus_done:                            # CPUs whose work is in results (work mode)
	.skip 4
work_mode:                            # 1 with "work" in the command line
	.skip 4
count_mode:                           # 1 with "count" in the command line
	.skip 4
results:                              # each CPU's LCG result, by APIC id (at most 255 CPUs)
	.skip 4 * 256
counted:                              # count mode: 1 at each x2APIC id that reported
	.skip MAX_COUNTED
	.balign 16
bsp_stack:
	.skip 1024
bsp_stack_top:
ap_stack:
	.skip 1024
ap_stack_top:
bss_end:
