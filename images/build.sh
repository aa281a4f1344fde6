#!/usr/bin/env bash
# Builds the Causeway appliance image: a minimal Debian 12 root file system
# (mmdebstrap), GRUB for UEFI and BIOS, one GPT disk, written as a raw disk
# (AWS) and a fixed-size VHD (Azure). Run by `provisioner image build`, which
# checks the arguments, then writes the manifest from what this leaves in
# OUT. Needs root (mmdebstrap's root mode, chroot).
#
# usage: build.sh --arch x86_64|arm64 --appliance-bin PATH --out DIR
#                 [--work DIR] [--cache DIR] [--size-mib N] [--epoch SECONDS]
#
# OUT receives: disk.raw, disk.vhd, packages.tsv (package, version,
# architecture), appliance.version, exposure.txt (systemd-analyze security).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
all_args=("$@")
arch="" appliance="" out="" work="" cache="" size_mib=2048
epoch=${SOURCE_DATE_EPOCH:-}

die() { echo "images/build.sh: $*" >&2; exit 1; }
while (($#)); do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --appliance-bin) appliance=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --epoch) epoch=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -n "$out" ] || die "--out DIR is required"
[ -f "$appliance" ] || die "--appliance-bin $appliance: no such file"
[[ "$size_mib" =~ ^[0-9]+$ ]] && ((size_mib >= 512)) || die "--size-mib $size_mib: expected a whole number of MiB, at least 512"
case "$arch" in
  x86_64) debarch=amd64 kernel=linux-image-cloud-amd64 grub_pkgs=grub-efi-amd64-bin,grub-pc-bin efi_target=x86_64-efi efi_name=BOOTX64.EFI serial=ttyS0 ;;
  arm64) debarch=arm64 kernel=linux-image-cloud-arm64 grub_pkgs=grub-efi-arm64-bin efi_target=arm64-efi efi_name=BOOTAA64.EFI serial=ttyAMA0 ;;
  *) die "--arch $arch: expected x86_64 or arm64" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap root mode, chroot)"
# arm64 on another machine: the packages' maintainer scripts run under
# qemu-user. Where the host has no binfmt_misc handler for aarch64, the
# build runs again inside namespaces with a binfmt_misc of their own
# (foreign-arch.py), so that nothing on the host changes.
if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ] && [ -z "${CAUSEWAY_IMAGE_FOREIGN:-}" ] \
   && ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  echo "image: no binfmt_misc handler for aarch64 on this host; building inside a user namespace with its own (qemu-aarch64-static)"
  exec env CAUSEWAY_IMAGE_FOREIGN=1 python3 "$here/foreign-arch.py" aarch64 "$here/build.sh" "${all_args[@]}"
fi
for tool in mmdebstrap mke2fs mkfs.vfat mmd mcopy sfdisk grub-mkimage qemu-img systemd-analyze python3; do
  command -v "$tool" >/dev/null || die "$tool not found: run .ci/install-deps"
done

# The Debian mirrors: the ones this host's apt uses (deb822 or one-line
# sources), unless CAUSEWAY_DEBIAN_MIRROR / CAUSEWAY_DEBIAN_SECURITY_MIRROR say.
host_uri() { # $1: the suite to look for (bookworm or bookworm-security)
  python3 - "$1" <<'PY'
import glob, re, sys
suite = sys.argv[1]
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
for f in files:
    try:
        text = open(f).read()
    except OSError:
        continue
    if f.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split():
                print(fields["URIs"].split()[0]); sys.exit(0)
    else:
        for line in text.splitlines():
            p = line.split("#")[0].split()
            p = [x for x in p if not x.startswith("[")]
            if len(p) >= 3 and p[0] == "deb" and p[2] == suite:
                print(p[1]); sys.exit(0)
sys.exit(1)
PY
}
mirror=${CAUSEWAY_DEBIAN_MIRROR:-$(host_uri bookworm)} || die "no bookworm source in /etc/apt; set CAUSEWAY_DEBIAN_MIRROR"
security=${CAUSEWAY_DEBIAN_SECURITY_MIRROR:-$(host_uri bookworm-security)} || die "no bookworm-security source in /etc/apt; set CAUSEWAY_DEBIAN_SECURITY_MIRROR"

# Everything that would otherwise differ between two builds is fixed here:
# timestamps (SOURCE_DATE_EPOCH), the file system UUIDs and hash seed, the
# disk and partition GUIDs, the FAT volume id.
if [ -z "$epoch" ]; then epoch=$(date -u -d 'today 00:00' +%s); fi
export SOURCE_DATE_EPOCH=$epoch E2FSPROGS_FAKE_TIME=$epoch
root_uuid=8f3c1f7e-7a4b-4c55-9b0e-c0ffee000003
disk_guid=8f3c1f7e-7a4b-4c55-9b0e-c0ffee000000
esp_volid=CA5E0E5B
if [ "$arch" = arm64 ]; then root_type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE; else root_type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709; fi

mkdir -p "$out"
if [ -z "$work" ]; then work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
rm -rf "$work/rootfs"; mkdir -p "$work"
rootfs=$work/rootfs

# The overlay and the (stripped) appliance, with the build's timestamp.
rm -rf "$work/overlay"; cp -a "$here/rootfs" "$work/overlay"
strip_tool=strip
if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then strip_tool=aarch64-linux-gnu-strip; fi
if ! "$strip_tool" -o "$work/appliance" "$appliance" 2>/dev/null; then
  echo "image: $strip_tool cannot read $appliance (for arm64 on another machine: install binutils-aarch64-linux-gnu); copying it unstripped"
  cp "$appliance" "$work/appliance"
fi
find "$work/overlay" "$work/appliance" -exec touch -h -d "@$epoch" {} +

packages=(
  systemd-sysv systemd-resolved dbus udev "$kernel" initramfs-tools
  ${grub_pkgs//,/ } chrony nftables unattended-upgrades ca-certificates iproute2
  e2fsprogs mount
)
cache_opts=()
if [ -n "$cache" ]; then
  mkdir -p "$cache"
  cache_opts=(--skip=download/empty --skip=essential/unlink
    --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives/"
    --setup-hook="sync-in $cache /var/cache/apt/archives/"
    --customize-hook="sync-out /var/cache/apt/archives $cache")
fi
echo "image: debootstrapping Debian 12 ($debarch) from $mirror"
mmdebstrap --mode=root --variant=apt --arch="$debarch" --format=directory \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  "${cache_opts[@]}" \
  --customize-hook="copy-in $work/overlay/etc $work/overlay/usr /" \
  --customize-hook="upload $work/appliance /usr/bin/appliance" \
  --customize-hook='chmod 0755 "$1"/usr/bin/appliance' \
  --customize-hook='systemctl --root="$1" enable systemd-networkd.service systemd-resolved.service chrony.service causeway-appliance.service' \
  --customize-hook='chroot "$1" passwd --lock root' \
  --customize-hook='chroot "$1" sh -c "appliance --version" > "$1"/../appliance.version || echo unknown > "$1"/../appliance.version' \
  bookworm "$rootfs" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
mv "$work/appliance.version" "$out/appliance.version"

# Settings that are files of their own.
echo causeway > "$rootfs/etc/hostname"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$rootfs/etc/resolv.conf"
printf 'UUID=%s / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1\n' "$root_uuid" > "$rootfs/etc/fstab"
: > "$rootfs/etc/machine-id"   # first boot makes one
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
  "$rootfs"/var/cache/ldconfig/aux-cache "$rootfs"/etc/ssh/ssh_host_*
# No account can log in: every password field is locked or empty-of-hash.
if awk -F: '$2 !~ /^[*!]/ { print $1; bad = 1 } END { exit !bad }' "$rootfs/etc/shadow"; then
  die "an account in the image has a usable password (above)"
fi
if [ -e "$rootfs/usr/sbin/sshd" ]; then die "sshd is in the image"; fi

dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f='${Package}\t${Version}\t${Architecture}\n' | LC_ALL=C sort > "$out/packages.tsv"

echo "image: systemd-analyze security causeway-appliance.service"
systemd-analyze security --offline=yes --root="$rootfs" --threshold=20 causeway-appliance.service | tee "$out/exposure.txt" \
  || die "causeway-appliance.service's exposure is above 2.0 (see above)"

# GRUB: one early config finds the root file system by UUID and reads
# /boot/grub/grub.cfg there, which boots the /vmlinuz and /initrd.img
# symlinks Debian keeps pointing at the newest kernel, so kernel upgrades
# need no GRUB reinstall.
mkdir -p "$rootfs/boot/grub"
cmdline="root=UUID=$root_uuid ro console=tty0 console=$serial,115200n8 nvme_core.io_timeout=4294967295 net.ifnames=0"
cat > "$rootfs/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
menuentry "Causeway appliance" {
  linux /vmlinuz $cmdline
  initrd /initrd.img
}
EOF
touch -d "@$epoch" "$rootfs/boot/grub/grub.cfg" "$rootfs/boot/grub" "$rootfs/etc/hostname" "$rootfs/etc/fstab" "$rootfs/etc/machine-id" "$rootfs/etc"
cat > "$work/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
configfile (\$root)/boot/grub/grub.cfg
EOF
grub_mods="part_gpt ext2 search search_fs_uuid configfile normal linux echo test serial terminal gzio"
grub-mkimage -O "$efi_target" -d "$rootfs/usr/lib/grub/$efi_target" -o "$work/$efi_name" -p /boot/grub -c "$work/early.cfg" $grub_mods fat efi_gop
if [ "$arch" = x86_64 ]; then
  grub-mkimage -O i386-pc -d "$rootfs/usr/lib/grub/i386-pc" -o "$work/core.img" -p /boot/grub -c "$work/early.cfg" biosdisk $grub_mods
fi

# The disk: GPT, 1 MiB BIOS boot partition (GRUB's core.img), 63 MiB EFI
# system partition, the rest root. Every partition and the whole disk are
# 1 MiB-aligned; the VHD's virtual size is the raw size.
esp_mib=63
root_mib=$((size_mib - 1 - 1 - esp_mib - 1))  # 1 MiB lead, BIOS boot, ESP, 1 MiB for the backup GPT
rm -f "$work/esp.img" "$work/root.img"
mkfs.vfat -C -F 16 -n ESP -i "$esp_volid" --invariant "$work/esp.img" $((esp_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
touch -d "@$epoch" "$work/$efi_name"
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -m -i "$work/esp.img" "$work/$efi_name" "::/EFI/BOOT/$efi_name"
# Maintainer scripts leave files stamped with the build's clock: clamp every
# mtime to the epoch (package files keep their older ones).
find "$rootfs" -xdev -newermt "@$epoch" -exec touch -h -d "@$epoch" {} +
mke2fs -q -t ext4 -L root -U "$root_uuid" -E "hash_seed=$root_uuid,root_owner=0:0" -d "$rootfs" "$work/root.img" "${root_mib}M"

disk=$out/disk.raw
rm -f "$disk"; truncate -s "${size_mib}M" "$disk"
sfdisk -q --no-reread "$disk" <<EOF
label: gpt
label-id: $disk_guid
first-lba: 2048
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, uuid=8f3c1f7e-7a4b-4c55-9b0e-c0ffee000001, name=bios
start=4096, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=8f3c1f7e-7a4b-4c55-9b0e-c0ffee000002, name=esp
start=$(((esp_mib + 2) * 2048)), size=$((root_mib * 2048)), type=$root_type, uuid=$root_uuid, name=root
EOF
dd if="$work/esp.img" of="$disk" bs=1M seek=2 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=1M seek=$((esp_mib + 2)) conv=notrunc,sparse status=none
if [ "$arch" = x86_64 ]; then
  # What grub-bios-setup does for a GPT disk with a BIOS boot partition
  # (it cannot run on an image file): boot.img in the MBR, keeping the
  # protective partition table, pointed at core.img in sector 2048; core.img's
  # first sector lists where the rest of core.img is.
  python3 - "$disk" "$rootfs/usr/lib/grub/i386-pc/boot.img" "$work/core.img" <<'PY'
import struct, sys
disk, boot_path, core_path = sys.argv[1:]
boot = bytearray(open(boot_path, "rb").read())
core = bytearray(open(core_path, "rb").read())
assert len(boot) == 512, "boot.img is not one sector"
start = 2048
sectors = (len(core) + 511) // 512
assert sectors <= 2048, "core.img does not fit the 1 MiB BIOS boot partition"
with open(disk, "r+b") as f:
    mbr = f.read(512)
    boot[0x1B8:0x1FE] = mbr[0x1B8:0x1FE]          # disk signature + partition table
    struct.pack_into("<Q", boot, 0x5C, start)     # GRUB_BOOT_MACHINE_KERNEL_SECTOR
    boot[0x66:0x68] = b"\x90\x90"                 # hard disk: no floppy probe
    struct.pack_into("<QHH", core, 0x200 - 12, start + 1, sectors - 1, 0x820)  # diskboot blocklist
    core += bytes(sectors * 512 - len(core))
    f.seek(0); f.write(boot)
    f.seek(start * 512); f.write(core)
PY
fi

qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on "$disk" "$out/disk.vhd"
echo "image: wrote $disk ($(du -m --apparent-size "$disk" | cut -f1) MiB, $(du -m "$disk" | cut -f1) MiB allocated) and $out/disk.vhd"
{
  sha256sum "$disk" "$out/disk.vhd"
  echo "$(sha256sum < "$appliance" | cut -d' ' -f1)  appliance.source"
  echo "$(sha256sum < "$work/appliance" | cut -d' ' -f1)  appliance.installed"
} > "$out/checksums.txt"
echo "$epoch" > "$out/epoch"
