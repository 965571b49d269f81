#!/usr/bin/env bash
# Installs the Debian packages a command needs, when they are missing, in one step (as root with
# apt-get), or says in one line which command would install them. Called by npm's prestart and
# pretest scripts and by .ci/run, so the README's two commands work on a fresh Debian machine.
#
#   tools/ensure_packages.sh start   # the guest runner: the nested KVM VM's packages, only without /dev/kvm
#   tools/ensure_packages.sh test    # the test suite: assembler, C compiler, QEMU, kernel, busybox, iasl, gdb…
set -u
need=()
nested_packages() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
  ls /boot/vmlinuz-* >/dev/null 2>&1 && ls /lib/modules/*/kernel/arch/x86/kvm/kvm-amd.ko* >/dev/null 2>&1 ||
    need+=(linux-image-amd64)
  # The nested VM's init runs Debian's static busybox (ldd refuses a static binary).
  { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
}
case "${1:-}" in
start)
  # With a hardware-style /dev/kvm the guest runs directly and needs nothing more.
  if [ ! -c /dev/kvm ] || ! grep -qwE 'vmx|svm' /proc/cpuinfo; then nested_packages; fi
  ;;
test)
  nested_packages
  command -v as >/dev/null 2>&1 || need+=(binutils)
  command -v cc >/dev/null 2>&1 || need+=(gcc)
  command -v xz >/dev/null 2>&1 || need+=(xz-utils)
  command -v cpio >/dev/null 2>&1 || need+=(cpio)
  command -v iasl >/dev/null 2>&1 || need+=(acpica-tools)
  # tests/virtio_blk_test.ts makes ext4 images and reads them back.
  command -v mke2fs >/dev/null 2>&1 && command -v debugfs >/dev/null 2>&1 || need+=(e2fsprogs)
  # The gdb stub's tests drive Debian's own gdb.
  command -v gdb >/dev/null 2>&1 || need+=(gdb)
  # The --web page's tests drive Debian's chromium headless (playwright-core, no browser download).
  [ -x /usr/bin/chromium ] || need+=(chromium)
  ;;
*)
  echo "usage: tools/ensure_packages.sh start|test" >&2
  exit 2
  ;;
esac
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "kvm-ts: missing Debian packages; install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "kvm-ts: installing ${need[*]} from Debian's packages (once)" >&2
if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/tmp/kvm-ts-apt.log 2>&1; then
  echo "kvm-ts: apt-get install ${need[*]} failed (log: /tmp/kvm-ts-apt.log)" >&2
  exit 1
fi
