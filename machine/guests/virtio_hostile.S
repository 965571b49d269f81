# virtio_hostile: a hostile virtio driver. It drives the first virtio-rng-pci function (modern,
# vendor 0x1af4, device 0x1044) as a real driver would, then posts broken requests one after
# another, resetting the device between them, and checks that each one leaves the device in
# DEVICE_NEEDS_RESET (virtio 1.2 section 2.1.2) without completing:
#
#   a: a valid request (one 16-byte device-writable buffer): used.idx moves to 1, 16 bytes written
#   b: a descriptor outside guest RAM (0x2000 bytes at 0xffff_f000_0000)
#   c: a descriptor loop (0 -> 1 -> 0)
#   d: a chain whose lengths add up to 4 GiB (8 x 512 MiB, all in RAM, overlapping at 16 MiB)
#   e: a used ring that runs past the end of guest RAM (8 bytes below it)
#   f: an indirect table of 24 bytes (not a multiple of 16)
#   g: a valid request again, after the reset
#
# one line each ("b: descriptor outside guest RAM: needs reset"), then
# "virtio_hostile: all 7 scenarios passed" and 0x10 to isa-debug-exit (port 0x501): status 33.
# A scenario that did not behave prints what happened instead ("NOT reset: request completed",
# "NOT reset: timeout") and the guest ends with 0x40 | (one bit per failed scenario, b = bit 0 ...
# g = bit 5): status (v << 1) | 1, 129-255. No device found, no VERSION_1, FEATURES_OK refused, a
# queue too small or a failed scenario a (nothing to test then): 0x20 (status 65) after a line
# saying which.
#
# Like a driver (virtio 1.2 section 4.1.4, Linux's virtio_pci_modern): PCI configuration mechanism
# #1 (0xcf8/0xcfc) finds the function on bus 0; the vendor-specific capabilities give the BAR and
# offset of the common, notify and ISR structures, and the notify offset multiplier; the BAR's
# address is read from configuration space (the kvm-ts board assigns BARs before a -kernel guest
# runs, SeaBIOS does under QEMU), so nothing is hard-coded. Memory decode and bus mastering are
# turned on. Each scenario starts with a reset (device_status = 0, read back until 0), then
# ACKNOWLEDGE, DRIVER, features (VERSION_1, and INDIRECT_DESC when offered), FEATURES_OK (read
# back), queue 0 of size 8 in guest RAM, queue_enable, DRIVER_OK. Status bits are added by
# read-modify-write as Linux's virtio_add_status does, so a NEEDS_RESET raised while the queue was
# enabled (scenario e) survives the DRIVER_OK write under QEMU too (QEMU's status write replaces
# the byte).
#
# Where RAM ends: CMOS bytes 0x34/0x35 (RAM above 16 MiB below 4 GiB, in 64 KiB units), which
# QEMU's pc_cmos_init and the kvm-ts board both set. Scenario d needs at least 528 MiB of RAM.
#
# Completion and errors are polled (interrupts stay off), because QEMU's virtio-rng answers from a
# bottom half, after the notify returns: used.idx up to POLL_LIMIT times, device_status (an MMIO
# read, so a VM exit) once every STATUS_EVERY of them; kvm-ts answers within the notify.
#
# A Multiboot v1 image (a.out kludge, header flags bit 16) linked as a flat binary at 1 MiB; it runs
# in the 32-bit protected mode the loader enters it in (flat segments) on a stack in its bss, with
# PAE paging so that it can reach a BAR above 4 GiB (SeaBIOS puts 64-bit BARs there, the kvm-ts
# board below 4 GiB): the first 3 GiB are identity-mapped with 2 MiB pages, and each virtio
# structure is seen through a 2 MiB window in the last GiB mapped onto its physical page.
#
# Build: node_modules/deno/deno run -A machine/guests/build.ts (as --64; ld --oformat binary -Ttext 0x100000).

	.set LOAD_ADDR, 0x100000          # link and load address (Multiboot load_addr)
	.set BSS_SIZE, 0x6000             # page tables (0x5000, first) and the stack
	.include "_multiboot.inc"         # MB_MAGIC, MB_FLAGS, the multiboot_start macro
	.include "_uart.inc"              # COM1 registers, uart_send_al

	.set CMOS_INDEX, 0x70
	.set CMOS_DATA, 0x71
	.set CMOS_ABOVE_16M_LO, 0x34      # RAM above 16 MiB, 64 KiB units (QEMU's pc_cmos_init)
	.set CMOS_ABOVE_16M_HI, 0x35
	.set DEBUG_EXIT_PORT, 0x501
	.set EXIT_ALL_PASSED, 0x10        # status 33
	.set EXIT_NO_DEVICE, 0x20         # status 65: no device, or scenario a failed
	.set EXIT_FAILED_BASE, 0x40       # | failed-scenario bits (b = bit 0 ... g = bit 5)

	.set PCI_CONFIG_ADDRESS, 0xcf8
	.set PCI_CONFIG_DATA, 0xcfc
	.set PCI_ENABLE, 0x80000000
	.set PCI_ID, 0x00
	.set PCI_COMMAND, 0x04            # command (low 16 bits) and status (high 16 bits)
	.set PCI_STATUS_CAP_LIST, 0x10 << 16
	.set PCI_COMMAND_MEMORY_MASTER, 0x6
	.set PCI_BAR0, 0x10
	.set PCI_CAP_PTR, 0x34
	.set PCI_CAP_ID_VNDR, 0x09
	.set VIRTIO_RNG_ID, 0x10441af4    # device 0x1040 + 4 (entropy), vendor 0x1af4

	.set CAP_COMMON, 1                # virtio_pci_cap.cfg_type
	.set CAP_NOTIFY, 2
	.set CAP_ISR, 3

	# virtio_pci_common_cfg (virtio 1.2 section 4.1.4.3)
	.set DEVICE_FEATURE_SELECT, 0x00
	.set DEVICE_FEATURE, 0x04
	.set DRIVER_FEATURE_SELECT, 0x08
	.set DRIVER_FEATURE, 0x0c
	.set DEVICE_STATUS, 0x14
	.set QUEUE_SELECT, 0x16
	.set QUEUE_SIZE_REG, 0x18
	.set QUEUE_ENABLE, 0x1c
	.set QUEUE_NOTIFY_OFF, 0x1e
	.set QUEUE_DESC, 0x20
	.set QUEUE_DRIVER, 0x28
	.set QUEUE_DEVICE, 0x30

	.set STATUS_ACKNOWLEDGE, 0x01
	.set STATUS_DRIVER, 0x02
	.set STATUS_DRIVER_OK, 0x04
	.set STATUS_FEATURES_OK, 0x08
	.set STATUS_NEEDS_RESET, 0x40
	.set FEATURE_INDIRECT_DESC, 1 << 28   # low word
	.set FEATURE_VERSION_1, 1 << 0        # high word (bit 32)

	.set DESC_F_NEXT, 1
	.set DESC_F_WRITE, 2
	.set DESC_F_INDIRECT, 4

	# Queue 0 in guest RAM, clear of the image (1 MiB) and of the Multiboot information.
	.set QUEUE_SIZE, 8
	.set DESC_TABLE, 0x200000         # 16 x 8 bytes
	.set AVAIL_RING, 0x201000         # flags, idx, ring[8]
	.set USED_RING, 0x202000          # flags, idx, ring[8] of {id, len}
	.set DATA_BUF, 0x203000           # the 16 bytes a valid request fills
	.set INDIRECT_TABLE, 0x204000
	.set ENTROPY_BYTES, 16

	.set FAR_ADDR_LO, 0xf0000000      # 0xffff_f000_0000: no RAM there on any PC
	.set FAR_ADDR_HI, 0x0000ffff
	.set FAR_LEN, 0x2000
	.set BIG_ADDR, 0x1000000          # scenario d: 8 buffers of 512 MiB at 16 MiB
	.set BIG_LEN, 0x20000000
	.set BIG_RAM_END, BIG_ADDR + BIG_LEN
	.set BAD_INDIRECT_LEN, 24

	.set PAGE_2M, 0x200000
	.set PTE_P, 1 << 0
	.set PTE_RW, 1 << 1
	.set PTE_PWT, 1 << 3
	.set PTE_PCD, 1 << 4
	.set PTE_PS, 1 << 7
	.set CR0_PG, 1 << 31
	.set CR4_PAE, 1 << 5
	.set WINDOWS, 0xc0000000          # linear 3 GiB + n x 2 MiB: window n

	.set POLL_LIMIT, 1 << 22          # polls of used.idx before giving up
	.set STATUS_EVERY, 1 << 12        # of which one in this many also reads device_status
	.set RESULT_USED, 0               # wait_result: used.idx reached the expected value
	.set RESULT_NEEDS_RESET, 1        #   device_status has NEEDS_RESET
	.set RESULT_TIMEOUT, 2            #   neither within POLL_LIMIT polls

	multiboot_start bss_end           # .text, .code32, _start: the Multiboot header

entry32:
	cli
	cld
	mov $stack_top, %esp
	call setup_paging
	call find_device
	call read_ram_end

	# a: a valid request proves the path works.
	mov $USED_RING, %eax
	call init_device
	call post_valid
	mov $label_a, %esi
	mov $1, %ebx
	call expect_completed
	cmpl $0, failed
	mov $msg_path_broken, %esi
	jne fatal

	# b: a buffer where there is no RAM.
	mov $USED_RING, %eax
	call init_device
	xor %ebx, %ebx
	mov $FAR_ADDR_LO, %eax
	mov $FAR_ADDR_HI, %edx
	mov $FAR_LEN, %ecx
	mov $DESC_F_WRITE, %esi
	call set_desc
	xor %eax, %eax
	call submit
	mov $label_b, %esi
	mov $1 << 0, %ebx
	call expect_reset

	# c: 0 -> 1 -> 0 -> ...
	mov $USED_RING, %eax
	call init_device
	xor %ebx, %ebx
	mov $DATA_BUF, %eax
	xor %edx, %edx
	mov $ENTROPY_BYTES, %ecx
	mov $(DESC_F_WRITE | DESC_F_NEXT | (1 << 16)), %esi
	call set_desc
	mov $1, %ebx
	mov $DATA_BUF, %eax
	xor %edx, %edx
	mov $ENTROPY_BYTES, %ecx
	mov $(DESC_F_WRITE | DESC_F_NEXT | (0 << 16)), %esi
	call set_desc
	xor %eax, %eax
	call submit
	mov $label_c, %esi
	mov $1 << 1, %ebx
	call expect_reset

	# d: every descriptor of the table, 512 MiB each, the same RAM: 4 GiB in all.
	mov $USED_RING, %eax
	call init_device
	cmpl $BIG_RAM_END, ram_end
	jae 1f
	mov $label_d, %esi
	call puts
	mov $msg_d_skipped, %esi
	call puts
	orl $1 << 2, failed
	jmp 3f
1:	xor %ebx, %ebx
2:	push %ebx
	mov $BIG_ADDR, %eax
	xor %edx, %edx
	mov $BIG_LEN, %ecx
	lea 1(%ebx), %esi
	shl $16, %esi
	or $(DESC_F_WRITE | DESC_F_NEXT), %esi
	cmp $QUEUE_SIZE - 1, %ebx
	jne 4f
	mov $DESC_F_WRITE, %esi           # the last one ends the chain
4:	call set_desc
	pop %ebx
	inc %ebx
	cmp $QUEUE_SIZE, %ebx
	jb 2b
	xor %eax, %eax
	call submit
	mov $label_d, %esi
	mov $1 << 2, %ebx
	call expect_reset
3:

	# e: the used ring's 70 bytes start 8 bytes below the end of RAM.
	mov ram_end, %eax
	sub $8, %eax
	call init_device
	call post_valid
	mov $label_e, %esi
	mov $1 << 3, %ebx
	call expect_reset

	# f: an indirect table of one and a half descriptors (its first one valid).
	mov $USED_RING, %eax
	call init_device
	mov $DATA_BUF, %eax
	mov %eax, INDIRECT_TABLE
	movl $0, INDIRECT_TABLE + 4
	movl $ENTROPY_BYTES, INDIRECT_TABLE + 8
	movl $DESC_F_WRITE, INDIRECT_TABLE + 12
	xor %ebx, %ebx
	mov $INDIRECT_TABLE, %eax
	xor %edx, %edx
	mov $BAD_INDIRECT_LEN, %ecx
	mov $DESC_F_INDIRECT, %esi
	call set_desc
	xor %eax, %eax
	call submit
	mov $label_f, %esi
	mov $1 << 4, %ebx
	call expect_reset

	# g: after all that, the device still works.
	mov $USED_RING, %eax
	call init_device
	call post_valid
	mov $label_g, %esi
	mov $1 << 5, %ebx
	call expect_completed

	mov failed, %eax
	test %eax, %eax
	jnz 1f
	mov $msg_all_passed, %esi
	call puts
	mov $EXIT_ALL_PASSED, %al
	jmp exit
1:	mov $msg_failed, %esi
	call puts
	mov failed, %eax
	call put_hex32
	call put_newline
	mov failed, %eax
	or $EXIT_FAILED_BASE, %eax
	jmp exit

# ------------------------------------------------------------------ PCI

# Finds the virtio-rng function on bus 0, turns on memory decode and bus mastering, and reads the
# common, notify and ISR structures' addresses from its vendor capabilities. Exits if any is missing.
find_device:
	xor %ebx, %ebx                    # device number
1:	mov %ebx, %eax
	shl $11, %eax
	or $PCI_ENABLE, %eax
	mov %eax, pci_function
	mov $PCI_ID, %eax
	call pci_read32
	cmp $VIRTIO_RNG_ID, %eax
	je 2f
	inc %ebx
	cmp $32, %ebx
	jb 1b
	mov $msg_no_device, %esi
	jmp fatal
2:	mov %ebx, %eax
	mov %al, found_slot
	mov $PCI_COMMAND, %eax
	call pci_read32
	mov %eax, %edx
	or $PCI_COMMAND_MEMORY_MASTER, %dx
	mov $PCI_COMMAND, %eax
	call pci_write16
	mov $PCI_COMMAND, %eax
	call pci_read32
	test $PCI_STATUS_CAP_LIST, %eax
	jz 9f
	mov $PCI_CAP_PTR, %eax
	call pci_read32
	movzbl %al, %edi
3:	and $0xfc, %edi
	jz 5f
	mov %edi, %eax
	call pci_read32                   # vndr, next, len, cfg_type
	mov %eax, %ecx
	cmp $PCI_CAP_ID_VNDR, %cl
	jne 4f
	shr $24, %ecx                     # cfg_type
	jz 4f
	cmp $CAP_ISR, %ecx                # common, notify and ISR; the first of each counts
	ja 4f
	cmpl $0, structures(,%ecx,4)
	jne 4f
	lea 4(%edi), %eax
	call pci_read32
	movzbl %al, %eax                  # bar
	call bar_address                  # EDX:EAX
	mov %eax, %ebx
	lea 8(%edi), %eax
	call pci_read32                   # offset
	add %ebx, %eax
	adc $0, %edx
	call map_window
	mov %eax, structures(,%ecx,4)
	cmp $CAP_NOTIFY, %ecx
	jne 4f
	lea 16(%edi), %eax
	call pci_read32
	mov %eax, notify_multiplier
4:	mov %edi, %eax
	call pci_read32
	movzbl %ah, %edi                  # cap_next
	jmp 3b
5:	cmpl $0, common_cfg
	je 9f
	cmpl $0, notify_base
	je 9f
	mov $msg_found, %esi
	call puts
	movzbl found_slot, %eax
	call put_hex8
	mov $msg_found_end, %esi
	jmp puts
9:	mov $msg_no_caps, %esi
	jmp fatal

# EAX = BAR number -> EDX:EAX = its memory address (exits for an I/O or unassigned BAR).
bar_address:
	push %ebx
	lea PCI_BAR0(,%eax,4), %ebx
	mov %ebx, %eax
	call pci_read32
	xor %edx, %edx
	test $1, %al
	jnz 8f                            # I/O space
	push %eax
	and $6, %eax
	cmp $4, %eax                      # a 64-bit BAR: the next one holds the high half
	jne 1f
	lea 4(%ebx), %eax
	call pci_read32
	mov %eax, %edx
1:	pop %eax
	and $~0xf, %eax
	jnz 2f
	test %edx, %edx
	jz 8f                             # not assigned
2:	pop %ebx
	ret
8:	mov $msg_bad_bar, %esi
	jmp fatal

# ECX = window (1-3), EDX:EAX = physical address -> EAX = where it is seen: window ECX is the
# 2 MiB page at WINDOWS + ECX x 2 MiB, mapped (uncached) onto the 2 MiB page holding the address.
map_window:
	push %ebx
	mov %eax, %ebx
	and $(PAGE_2M - 1), %ebx
	and $~(PAGE_2M - 1), %eax
	or $(PTE_P | PTE_RW | PTE_PWT | PTE_PCD | PTE_PS), %eax
	mov %eax, page_dirs + 3 * 0x1000 + 8 * (WINDOWS >> 21 & 511)(,%ecx,8)
	mov %edx, page_dirs + 3 * 0x1000 + 8 * (WINDOWS >> 21 & 511) + 4(,%ecx,8)
	mov %cr3, %eax                    # flush the TLB
	mov %eax, %cr3
	mov %ecx, %eax
	shl $21, %eax
	add $WINDOWS, %eax
	add %ebx, %eax
	pop %ebx
	ret

# PAE paging: the first 3 GiB identity-mapped with 2 MiB pages; the last GiB holds only the
# windows onto the virtio structures, which may lie above 4 GiB (SeaBIOS puts 64-bit BARs there).
setup_paging:
	xor %eax, %eax
	mov $page_dirs, %edi
	mov $(4 * 0x1000 / 4), %ecx
	rep stosl
	mov $page_dirs, %edi
	mov $(PTE_P | PTE_RW | PTE_PS), %eax
	mov $(3 * 512), %ecx
1:	mov %eax, (%edi)
	add $PAGE_2M, %eax
	add $8, %edi
	loop 1b
	xor %ecx, %ecx
2:	mov %ecx, %eax
	shl $12, %eax
	add $(page_dirs + PTE_P), %eax
	mov %eax, pdpt(,%ecx,8)
	movl $0, pdpt + 4(,%ecx,8)
	inc %ecx
	cmp $4, %ecx
	jb 2b
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pdpt, %eax
	mov %eax, %cr3
	mov %cr0, %eax
	or $CR0_PG, %eax
	mov %eax, %cr0
	ret

# EAX = register -> EAX = the dword of pci_function at (register & ~3).
pci_read32:
	push %edx
	and $0xfc, %eax
	or pci_function, %eax
	mov $PCI_CONFIG_ADDRESS, %dx
	out %eax, %dx
	mov $PCI_CONFIG_DATA, %dx
	in %dx, %eax
	pop %edx
	ret

# EAX = register (word-aligned), DX = value: writes 16 bits of pci_function's configuration.
# Clobbers EAX and EDX.
pci_write16:
	push %ecx
	push %edx
	mov %eax, %ecx
	and $0xfc, %eax
	or pci_function, %eax
	mov $PCI_CONFIG_ADDRESS, %dx
	out %eax, %dx
	and $2, %ecx
	lea PCI_CONFIG_DATA(%ecx), %edx
	pop %eax                          # the value
	out %ax, %dx
	pop %ecx
	ret

# ------------------------------------------------------------------ virtio

# EAX = used ring address. Resets the device, negotiates, places queue 0 (descriptors and driver
# area at their fixed places), enables it and sets DRIVER_OK. The used ring is cleared only where
# it is ours.
init_device:
	mov %eax, used_ring
	mov common_cfg, %edi
	movb $0, DEVICE_STATUS(%edi)
1:	movb DEVICE_STATUS(%edi), %al     # virtio 1.2 4.1.4.3.2: wait for the reset to finish
	test %al, %al
	jnz 1b
	mov $STATUS_ACKNOWLEDGE, %al
	call add_status
	mov $STATUS_DRIVER, %al
	call add_status
	movl $1, DEVICE_FEATURE_SELECT(%edi)
	mov DEVICE_FEATURE(%edi), %eax
	test $FEATURE_VERSION_1, %eax
	jz 8f
	movl $0, DEVICE_FEATURE_SELECT(%edi)
	mov DEVICE_FEATURE(%edi), %ebx
	and $FEATURE_INDIRECT_DESC, %ebx
	movl $0, DRIVER_FEATURE_SELECT(%edi)
	mov %ebx, DRIVER_FEATURE(%edi)
	movl $1, DRIVER_FEATURE_SELECT(%edi)
	movl $FEATURE_VERSION_1, DRIVER_FEATURE(%edi)
	mov $STATUS_FEATURES_OK, %al
	call add_status
	movb DEVICE_STATUS(%edi), %al
	test $STATUS_FEATURES_OK, %al
	jz 8f
	movw $0, QUEUE_SELECT(%edi)
	movzwl QUEUE_SIZE_REG(%edi), %eax
	cmp $QUEUE_SIZE, %eax
	jb 8f
	movw $QUEUE_SIZE, QUEUE_SIZE_REG(%edi)
	push %edi                         # clear our rings and the data buffer
	xor %eax, %eax
	mov $DESC_TABLE, %edi
	mov $(4 * 0x1000 / 4), %ecx       # descriptors, driver area, used ring, data
	rep stosl
	pop %edi
	movw $0, avail_idx
	movl $DESC_TABLE, QUEUE_DESC(%edi)
	movl $0, QUEUE_DESC + 4(%edi)
	movl $AVAIL_RING, QUEUE_DRIVER(%edi)
	movl $0, QUEUE_DRIVER + 4(%edi)
	mov used_ring, %eax
	mov %eax, QUEUE_DEVICE(%edi)
	movl $0, QUEUE_DEVICE + 4(%edi)
	movzwl QUEUE_NOTIFY_OFF(%edi), %eax
	imul notify_multiplier, %eax
	add notify_base, %eax
	mov %eax, notify_addr
	movw $1, QUEUE_ENABLE(%edi)
	mov $STATUS_DRIVER_OK, %al
	call add_status
	ret
8:	mov $msg_negotiation, %esi
	jmp fatal

# AL = status bits: device_status |= AL, read-modify-write (EDI = common configuration).
add_status:
	or DEVICE_STATUS(%edi), %al
	mov %al, DEVICE_STATUS(%edi)
	ret

# Descriptor EBX := {addr EDX:EAX, len ECX, flags and next ESI (next in the high half)}.
set_desc:
	shl $4, %ebx
	add $DESC_TABLE, %ebx
	mov %eax, (%ebx)
	mov %edx, 4(%ebx)
	mov %ecx, 8(%ebx)
	mov %esi, 12(%ebx)
	ret

# Posts head EAX in the available ring, publishes the index and notifies queue 0.
submit:
	movzwl avail_idx, %ecx
	mov %ecx, %edx
	and $(QUEUE_SIZE - 1), %edx
	mov %ax, AVAIL_RING + 4(,%edx,2)
	inc %ecx
	mov %cx, avail_idx
	mov %cx, AVAIL_RING + 2           # x86 keeps stores in order: the entry is visible first
	mfence                            # the index before the notify
	mov notify_addr, %edx
	movw $0, (%edx)
	ret

# The valid request: descriptor 0 = 16 device-writable bytes at DATA_BUF, posted.
post_valid:
	xor %ebx, %ebx
	mov $DATA_BUF, %eax
	xor %edx, %edx
	mov $ENTROPY_BYTES, %ecx
	mov $DESC_F_WRITE, %esi
	call set_desc
	xor %eax, %eax
	jmp submit

# -> EAX = RESULT_NEEDS_RESET, RESULT_USED (used.idx reached avail_idx) or RESULT_TIMEOUT.
# used.idx is RAM and costs nothing to poll; device_status is MMIO, a VM exit under KVM, so it is
# read only every STATUS_EVERY polls (first at once).
wait_result:
	xor %ecx, %ecx
	mov common_cfg, %edi
1:	test $(STATUS_EVERY - 1), %ecx
	jnz 4f
	movb DEVICE_STATUS(%edi), %al
	test $STATUS_NEEDS_RESET, %al
	jnz 2f
4:	mov used_ring, %edx
	movzwl 2(%edx), %eax
	cmp avail_idx, %ax
	je 3f
	pause
	inc %ecx
	cmp $POLL_LIMIT, %ecx
	jb 1b
	mov $RESULT_TIMEOUT, %eax
	ret
2:	mov $RESULT_NEEDS_RESET, %eax
	ret
3:	mov $RESULT_USED, %eax
	ret

# ESI = label, EBX = the scenario's bit: expects the valid request to complete with 16 bytes, not
# all zero, written (id 0), and no NEEDS_RESET.
expect_completed:
	push %ebx
	call puts
	call wait_result
	pop %ebx
	cmp $RESULT_USED, %eax
	jne expect_failed
	mov used_ring, %edx
	cmpl $0, 4(%edx)                  # used.ring[0].id
	jne 1f
	cmpl $ENTROPY_BYTES, 8(%edx)      # used.ring[0].len
	jne 1f
	mov DATA_BUF, %eax
	or DATA_BUF + 4, %eax
	or DATA_BUF + 8, %eax
	or DATA_BUF + 12, %eax
	jz 1f
	mov $msg_completed, %esi
	jmp puts
1:	or %ebx, failed
	mov $msg_bad_used, %esi
	jmp puts

# ESI = label, EBX = the scenario's bit: expects NEEDS_RESET and the request not completed.
expect_reset:
	push %ebx
	call puts
	call wait_result
	pop %ebx
	cmp $RESULT_NEEDS_RESET, %eax
	jne expect_failed
	mov used_ring, %edx
	cmp $USED_RING, %edx              # a used ring past RAM's end is not read back
	jne 1f
	cmpw $0, 2(%edx)
	jne expect_failed_used
1:	mov $msg_needs_reset, %esi
	jmp puts

# EAX = the wait's result, EBX = the scenario's bit: records and prints the failure.
expect_failed:
	or %ebx, failed
	mov $msg_unexpected_reset, %esi
	cmp $RESULT_NEEDS_RESET, %eax
	je puts
	mov $msg_timeout, %esi
	cmp $RESULT_TIMEOUT, %eax
	je puts
expect_failed_used:
	or %ebx, failed
	mov $msg_not_reset_used, %esi
	jmp puts

# ram_end := 16 MiB + CMOS[0x35:0x34] x 64 KiB (RAM below 4 GiB).
read_ram_end:
	mov $CMOS_ABOVE_16M_HI, %al
	out %al, $CMOS_INDEX
	in $CMOS_DATA, %al
	movzbl %al, %ecx
	shl $8, %ecx
	mov $CMOS_ABOVE_16M_LO, %al
	out %al, $CMOS_INDEX
	in $CMOS_DATA, %al
	mov %al, %cl
	shl $16, %ecx
	add $0x1000000, %ecx
	mov %ecx, ram_end
	ret

# ------------------------------------------------------------------ output and exit

# ESI = message: prints it, exits with EXIT_NO_DEVICE.
fatal:
	call puts
	mov $EXIT_NO_DEVICE, %al
exit:
	mov $DEBUG_EXIT_PORT, %dx
	out %al, %dx
1:	hlt                               # without an isa-debug-exit device: stop here
	jmp 1b

# ESI = NUL-terminated string.
puts:
	push %eax
1:	lodsb
	test %al, %al
	jz 2f
	call putc
	jmp 1b
2:	pop %eax
	ret

# AL = byte.
putc:
	push %edx
	uart_send_al stack
	pop %edx
	ret

put_newline:
	mov $'\n', %al
	jmp putc

# EAX = value: "0x" and 8 hex digits.
put_hex32:
	push %ecx
	push %eax
	mov $'0', %al
	call putc
	mov $'x', %al
	call putc
	pop %eax
	mov $8, %ecx
	jmp put_hex_digits

# AL = value: 2 hex digits.
put_hex8:
	push %ecx
	shl $24, %eax
	mov $2, %ecx
put_hex_digits:
1:	rol $4, %eax
	push %eax
	and $0xf, %eax
	movb hex_digits(%eax), %al
	call putc
	pop %eax
	loop 1b
	pop %ecx
	ret

hex_digits:
	.ascii "0123456789abcdef"
msg_found:
	.asciz "virtio_hostile: virtio-rng-pci at 00:"
msg_found_end:
	.asciz ".0\n"
msg_no_device:
	.asciz "virtio_hostile: no virtio-rng-pci (1af4:1044) on bus 0\n"
msg_no_caps:
	.asciz "virtio_hostile: the virtio capabilities are missing\n"
msg_bad_bar:
	.asciz "virtio_hostile: a virtio structure is in an I/O, unassigned or 64-bit-high BAR\n"
msg_negotiation:
	.asciz "virtio_hostile: feature negotiation failed (VERSION_1, FEATURES_OK or queue size)\n"
label_a:
	.asciz "a: valid request"
label_b:
	.asciz "b: descriptor outside guest RAM"
label_c:
	.asciz "c: descriptor loop"
label_d:
	.asciz "d: chain of 4 GiB"
label_e:
	.asciz "e: used ring past the end of guest RAM"
label_f:
	.asciz "f: indirect table of 24 bytes"
label_g:
	.asciz "g: valid request after the resets"
msg_completed:
	.asciz ": 16 bytes of entropy\n"
msg_bad_used:
	.asciz ": FAILED: wrong used element or no data\n"
msg_needs_reset:
	.asciz ": needs reset\n"
msg_unexpected_reset:
	.asciz ": FAILED: needs reset\n"
msg_timeout:
	.asciz ": NOT reset: timeout\n"
msg_not_reset_used:
	.asciz ": NOT reset: request completed\n"
msg_d_skipped:
	.asciz ": FAILED: needs 528 MiB of RAM\n"
msg_path_broken:
	.asciz "virtio_hostile: the valid request failed: nothing to test\n"
msg_all_passed:
	.asciz "virtio_hostile: all 7 scenarios passed\n"
msg_failed:
	.asciz "virtio_hostile: failed scenarios (bit 0 = b): "

	.balign 4
pci_function: .long 0
structures:                           # by cfg_type: where each virtio structure is seen
	.long 0
common_cfg: .long 0
notify_base: .long 0
isr_cfg: .long 0
notify_multiplier: .long 0
notify_addr: .long 0
used_ring: .long 0
ram_end: .long 0
failed: .long 0
avail_idx: .word 0
found_slot: .byte 0
	.balign 0x1000
image_end:
	# bss, not in the file: the loader zeroes it up to bss_end_addr.
	.set page_dirs, image_end         # 4 page directories
	.set pdpt, image_end + 0x4000     # 4 entries, 32-byte aligned
	.set stack_top, image_end + BSS_SIZE
	.set bss_end, image_end + BSS_SIZE
