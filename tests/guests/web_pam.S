# Guest of tests/web_page_test.ts: real mode, loaded at 0x1000 by -device loader. Programs the
# i440FX's PAM registers through PCI configuration space (bus 0, device 0, function 0, bytes
# 0x59-0x5a), as firmware does when it shadows its ROM, then writes port 0x80 forever so that its
# exits keep counting.
	.code16
	.set CONFIG_ADDRESS, 0xcf8
	.set PAM_DWORD, 0x80000058         # enable, bus 0, device 0, function 0, dword at 0x58
	.set PAM0, 0xcfd                   # byte 0x59: high nibble = segment 0xf0000-0xfffff
	.set PAM1, 0xcfe                   # byte 0x5a: low nibble = segment 0xc0000-0xc3fff
	.set POST_PORT, 0x80

	.globl _start
_start:
	mov $PAM_DWORD, %eax
	mov $CONFIG_ADDRESS, %dx
	out %eax, %dx
	mov $PAM0, %dx
	mov $0x30, %al                     # 3: reads and writes go to RAM
	out %al, %dx
	mov $PAM1, %dx
	mov $0x01, %al                     # 1: reads from RAM, writes to PCI
	out %al, %dx
1:
	out %al, $POST_PORT
	jmp 1b
