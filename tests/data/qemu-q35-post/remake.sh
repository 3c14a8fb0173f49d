#!/bin/sh
# Remakes capture.json.gz: a SeaBIOS POST of QEMU's q35 machine, captured with kvmmu (root,
# /dev/kvm, strace, qemu-system-x86: `apt-get install qemu-system-x86 strace`). The POST ends by
# itself (-no-reboot, reboot-timeout=0) in a few seconds; the memslot sequence is the same every run.
set -eu
cd "$(dirname "$0")"
out=$(mktemp -d)
kvmmu capture --out "$out/post" -- qemu-system-x86_64 -machine q35 -enable-kvm -m 512 \
    -nic none -display none -no-reboot -boot reboot-timeout=0
cp "$out/post/capture.json.gz" capture.json.gz
rm -rf "$out"
