#!/usr/bin/env bash
# Boots a built disk under QEMU (TCG: no KVM needed) without a network and
# prints how long it took from QEMU's start to the login prompt on the
# serial console. A measurement, not the boot test: it checks only that the
# firmware, GRUB, the kernel and systemd come up.
#
# usage: boot-smoke.sh DISK.raw uefi|bios|uefi-arm64 [DEADLINE_SECONDS]
# Needs qemu-system-x86 and (uefi) ovmf; for an arm64 disk (uefi-arm64),
# qemu-system-arm and qemu-efi-aarch64 (QEMU's `virt` machine, Cortex-A72,
# AAVMF firmware). The disk is opened read-only (snapshot=on): nothing is
# written to it.
set -euo pipefail

disk=${1:?usage: boot-smoke.sh DISK.raw uefi|bios [DEADLINE_SECONDS]}
firmware=${2:?usage: boot-smoke.sh DISK.raw uefi|bios [DEADLINE_SECONDS]}
deadline=${3:-600}
[ -f "$disk" ] || { echo "boot-smoke.sh: $disk: no such file" >&2; exit 1; }
qemu=qemu-system-x86_64 machine=(-machine q35) pkg=qemu-system-x86
if [ "$firmware" = uefi-arm64 ]; then qemu=qemu-system-aarch64 machine=(-machine virt -cpu cortex-a72) pkg=qemu-system-arm; fi
command -v "$qemu" >/dev/null || { echo "boot-smoke.sh: $qemu not found: install $pkg" >&2; exit 1; }

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
  uefi-arm64)
    code=/usr/share/AAVMF/AAVMF_CODE.fd vars=/usr/share/AAVMF/AAVMF_VARS.fd
    [ -f "$code" ] || { echo "boot-smoke.sh: $code not found: install qemu-efi-aarch64" >&2; exit 1; }
    cp "$vars" "$work/vars.fd"
    fw=(-drive "if=pflash,format=raw,readonly=on,file=$code" -drive "if=pflash,format=raw,file=$work/vars.fd")
    ;;
  bios) ;;
  *) echo "boot-smoke.sh: firmware $firmware: expected uefi, bios or uefi-arm64" >&2; exit 1 ;;
esac

start=$(date +%s.%N)
"$qemu" "${machine[@]}" -accel tcg -m 1024 -smp 2 -display none -monitor none \
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
