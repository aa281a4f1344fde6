#!/usr/bin/env bash
# Boots a built disk under QEMU (TCG: no KVM needed) without a network and
# prints how long it took from QEMU's start to the login prompt on the
# serial console. A measurement, not the boot test: it checks only that the
# firmware, GRUB, the kernel and systemd come up.
#
# usage: boot-smoke.sh DISK.raw uefi|bios [DEADLINE_SECONDS]
# Needs qemu-system-x86 and (uefi) ovmf. The disk is opened read-only
# (snapshot=on): nothing is written to it.
set -euo pipefail

disk=${1:?usage: boot-smoke.sh DISK.raw uefi|bios [DEADLINE_SECONDS]}
firmware=${2:?usage: boot-smoke.sh DISK.raw uefi|bios [DEADLINE_SECONDS]}
deadline=${3:-600}
[ -f "$disk" ] || { echo "boot-smoke.sh: $disk: no such file" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "boot-smoke.sh: qemu-system-x86_64 not found: run .ci/install-deps" >&2; exit 1; }

work=$(mktemp -d)
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

fw=()
case "$firmware" in
  uefi)
    code=/usr/share/OVMF/OVMF_CODE_4M.fd vars=/usr/share/OVMF/OVMF_VARS_4M.fd
    [ -f "$code" ] || { echo "boot-smoke.sh: $code not found: install ovmf" >&2; exit 1; }
    cp "$vars" "$work/vars.fd"
    fw=(-drive "if=pflash,format=raw,readonly=on,file=$code" -drive "if=pflash,format=raw,file=$work/vars.fd")
    ;;
  bios) ;;
  *) echo "boot-smoke.sh: firmware $firmware: expected uefi or bios" >&2; exit 1 ;;
esac

start=$(date +%s.%N)
qemu-system-x86_64 -machine q35 -accel tcg -m 1024 -smp 2 -display none -monitor none \
  -serial "file:$work/serial.log" "${fw[@]}" \
  -drive "file=$disk,format=raw,if=virtio,snapshot=on" -nic none &
qemu_pid=$!
while :; do
  if grep -q "login: *$" "$work/serial.log" 2>/dev/null || grep -q "causeway login:" "$work/serial.log" 2>/dev/null; then
    end=$(date +%s.%N)
    awk -v f="$firmware" -v s="$start" -v e="$end" 'BEGIN { printf "boot-smoke: %s to the login prompt: %.1f s\n", f, e - s }'
    exit 0
  fi
  if ! kill -0 "$qemu_pid" 2>/dev/null; then
    echo "boot-smoke.sh: QEMU exited before the login prompt; serial console:" >&2
    tail -n 40 "$work/serial.log" >&2
    exit 1
  fi
  if (($(date +%s) - ${start%.*} > deadline)); then
    echo "boot-smoke.sh: no login prompt within $deadline s; serial console:" >&2
    tail -n 40 "$work/serial.log" >&2
    exit 1
  fi
  sleep 1
done
