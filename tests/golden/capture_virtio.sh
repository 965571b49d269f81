#!/bin/sh
# Regenerates tests/golden/qemu/virtio-*.txt: QEMU 7.2's view of virtio-rng-pci and virtio-blk-pci on
# the i440fx PC, the reference for devices/virtio/. Needs qemu-system-x86_64 on PATH; TCG, no KVM.
#
# Two device sets: "legacy" is QEMU's default for the pc machine (transitional devices, device IDs
# 0x1000+, an I/O BAR 0); "modern" adds disable-legacy=on (virtio 1.x only, device IDs 0x1040+), which is
# what devices/virtio/ implements. Two moments: "-S" (stopped before the firmware ran: BARs unassigned,
# `info pci` shows their size masks) and "run" (SeaBIOS ran for 4 s, then `stop`: BARs assigned and
# decoding, so `info mtree` shows the BAR regions and their subregions).
#
# -nographic of the issue's command line conflicts with -monitor stdio (both want stdio for the serial
# port), so -display none is used instead. Each file starts with `#` + the command line + `|` + the
# monitor command, then `# QEMU <version>`; the rest is QEMU's output with `\r` and the echo stripped.
set -eu
out=$(dirname "$0")/qemu
img=$(mktemp /tmp/virtio-golden.XXXXXX.img)
trap 'rm -f "$img"' EXIT
truncate -s 1M "$img"
version=$(qemu-system-x86_64 --version | head -1)

capture() { # name, S or run, QEMU device arguments...
  name=$1; shift
  start=$1; shift
  script=""
  if [ "$start" = run ]; then script="sleep 4; echo stop; sleep 0.5;"; else script="sleep 2;"; fi
  for cmd in "info pci" "info mtree" "info qtree"; do script="$script echo '$cmd'; sleep 1;"; done
  script="$script echo quit"
  s=""; [ "$start" = S ] && s="-S"
  raw=$(sh -c "$script" | qemu-system-x86_64 -machine pc -accel tcg -display none $s -monitor stdio "$@" \
    | tr -d '\r' | sed 's/\x1b\[[0-9]*[A-Z]//g')
  for cmd in "info pci" "info mtree" "info qtree"; do
    file="$out/virtio-$name-$start.$(echo "$cmd" | sed 's/info //').txt"
    {
      echo "# qemu-system-x86_64 -machine pc -accel tcg -display none $s -monitor stdio $* | $cmd" |
        sed "s#$img#/tmp/x.img#g; s/  */ /g"
      echo "# $version"
      # The block of output after the "(qemu) <cmd>" prompt line, up to the next prompt.
      printf '%s\n' "$raw" | awk -v c="$cmd" '
        /^\(qemu\) / { on = (index($0, c) > 0 && substr($0, length($0) - length(c) + 1) == c); next }
        on { print }'
    } > "$file"
  done
}

for start in S run; do
  capture legacy "$start" -device virtio-rng-pci -drive "file=$img,format=raw,if=virtio"
  capture modern "$start" -device virtio-rng-pci,disable-legacy=on \
    -drive "file=$img,format=raw,if=none,id=d0" -device virtio-blk-pci,drive=d0,disable-legacy=on
done
