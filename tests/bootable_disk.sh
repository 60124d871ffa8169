#!/usr/bin/env bash
# A small bootable disk from this machine's Debian packages, and a boot of a
# disk under QEMU until its marker line appears on the serial console.
#
#   bootable_disk.sh make IMG gpt|dos   makes IMG (200 MiB): GPT with a BIOS
#       boot partition, an EFI system partition and an ext4 root, GRUB for
#       BIOS and UEFI; or MBR with GRUB's core.img in the post-MBR gap and an
#       ext4 root. Prints the root filesystem's UUID.
#   bootable_disk.sh boot IMG bios|uefi [SECONDS]   boots IMG (on a throw-away
#       overlay: IMG is never written) and prints the marker line,
#       "GNOMON-BOOTED root=<UUID>"; exit 1 if it does not appear in time.
#
# The root holds the Debian kernel, a minimal initramfs (busybox and the
# virtio and ext4 modules) that mounts root=UUID=..., and busybox as
# /sbin/init, which prints the marker with the UUID of the filesystem it
# runs from and powers off. Needs no root and no loop device: the
# filesystems are made inside the image with mke2fs -d, mkfs.vfat --offset
# and mtools, and GRUB's images are put in place by hand (what
# grub-bios-setup does for a disk it can see).
# Packages: grub-pc-bin grub-efi-amd64-bin linux-image-amd64 busybox-static
# qemu-system-x86 ovmf cpio fdisk dosfstools mtools e2fsprogs.
set -euo pipefail

die() { echo "bootable_disk: $*" >&2; exit 2; }

kernel() { ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1; }

# The initramfs: busybox, the modules that reach a virtio disk and ext4, and
# an /init that mounts the root by UUID and switches to it.
make_initrd() {
  local out=$1 work=$2 ver
  ver=$(basename "$(kernel)" | sed 's/^vmlinuz-//')
  mkdir -p "$work"/{bin,dev,proc,sys,newroot,lib/modules}
  cp /usr/bin/busybox "$work/bin/busybox"
  local mods=""
  for m in virtio_pci virtio_blk ext4; do
    mods+=" $(modprobe -S "$ver" --show-depends "$m" | awk '$1 == "insmod" {print $2}')"
  done
  local order=""
  for ko in $mods; do
    case " $order " in *" $(basename "$ko") "*) continue ;; esac
    cp "$ko" "$work/lib/modules/"
    order+=" $(basename "$ko")"
  done
  cat > "$work/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in$order; do /bin/busybox insmod /lib/modules/\$m 2>/dev/null; done
root=\$(/bin/busybox sed -n 's/.*root=UUID=\([^ ]*\).*/\1/p' /proc/cmdline)
for i in \$(/bin/busybox seq 1 100); do
  dev=\$(/bin/busybox findfs UUID=\$root 2>/dev/null) && break
  /bin/busybox sleep 0.2
done
[ -n "\$dev" ] || { echo "GNOMON-BOOT-FAILED no root \$root"; /bin/busybox poweroff -f; }
/bin/busybox mount -t ext4 -o ro "\$dev" /newroot || { echo "GNOMON-BOOT-FAILED mount \$dev"; /bin/busybox poweroff -f; }
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
EOF
  chmod +x "$work/init"
  (cd "$work" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out"
}

# The root filesystem's files: kernel, initramfs, busybox as init.
make_root() {
  local dir=$1
  mkdir -p "$dir"/{bin,sbin,boot,proc,sys,dev,etc}
  cp /usr/bin/busybox "$dir/bin/busybox"
  cp "$(kernel)" "$dir/boot/vmlinuz"
  make_initrd "$dir/boot/initrd" "$dir/../initrd-work"
  cat > "$dir/sbin/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
# The filesystem / is mounted from (mountinfo's source field) and its UUID.
dev=$(/bin/busybox awk '$5 == "/" {for (i = 7; i <= NF; i++) if ($i == "-") {print $(i + 2); exit}}' /proc/self/mountinfo)
# The ext4 superblock's s_uuid: 16 bytes at 1024 + 0x68.
hex=$(/bin/busybox dd if="$dev" bs=1 skip=1128 count=16 2>/dev/null | /bin/busybox od -An -tx1 | /bin/busybox tr -d ' \n')
uuid=$(echo "$hex" | /bin/busybox sed 's/\(.\{8\}\)\(.\{4\}\)\(.\{4\}\)\(.\{4\}\)/\1-\2-\3-\4-/')
echo "GNOMON-BOOTED root=$uuid"
/bin/busybox sync
/bin/busybox poweroff -f
EOF
  chmod +x "$dir/sbin/init"
}

# GRUB's configuration, built into its images: find the root by UUID, boot.
grub_cfg() {
  local uuid=$1
  cat <<EOF
set timeout=0
search --no-floppy --fs-uuid --set=root $uuid
linux /boot/vmlinuz root=UUID=$uuid console=ttyS0 quiet panic=-1
initrd /boot/initrd
boot
EOF
}

# What grub-bios-setup does: boot.img's code in LBA 0 (the partition table
# bytes kept), pointing at core.img's first sector; core.img's first sector
# (diskboot.img) listing the sectors of the rest.
install_bios_grub() {
  local img=$1 core=$2 sector=$3
  local sectors=$(( ($(stat -c %s "$core") + 511) / 512 ))
  dd if=/usr/lib/grub/i386-pc/boot.img of="$img" bs=440 count=1 conv=notrunc status=none
  # GRUB_BOOT_MACHINE_KERNEL_SECTOR (0x5c, 8 bytes): where core.img starts.
  printf "$(printf '%016x' "$sector" | sed 's/../&\n/g' | tac | tr -d '\n' | sed 's/../\\x&/g')" |
    dd of="$img" bs=1 seek=$((0x5c)) conv=notrunc status=none
  # The blocklist at the end of diskboot.img: start (8 bytes), length (2).
  local patched=$core.patched
  cp "$core" "$patched"
  printf "$(printf '%016x' $((sector + 1)) | sed 's/../&\n/g' | tac | tr -d '\n' | sed 's/../\\x&/g')" |
    dd of="$patched" bs=1 seek=$((0x200 - 12)) conv=notrunc status=none
  printf "$(printf '%04x' $((sectors - 1)) | sed 's/../&\n/g' | tac | tr -d '\n' | sed 's/../\\x&/g')" |
    dd of="$patched" bs=1 seek=$((0x200 - 4)) conv=notrunc status=none
  dd if="$patched" of="$img" bs=512 seek="$sector" conv=notrunc status=none
}

make_disk() {
  local img=$1 label=$2 work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  make_root "$work/root"
  local uuid
  uuid=$(cat /proc/sys/kernel/random/uuid)
  rm -f "$img"
  truncate -s 200M "$img"
  local root_start
  if [ "$label" = gpt ]; then
    printf 'label: gpt\nsize=1M, type=21686148-6449-6E6F-744E-656564454649, name="bios"\nsize=32M, type=U, name="esp"\ntype=L, name="root"\n' |
      sfdisk -q "$img"
    root_start=$((34 * 1024 * 1024))
  else
    printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$img"
    root_start=$((1024 * 1024))
  fi
  local root_size=$(( (200 << 20) - root_start - (1 << 20) ))
  mke2fs -q -F -t ext4 -U "$uuid" -L root -d "$work/root" -E offset=$root_start "$img" \
    $((root_size / 1024))k
  grub_cfg "$uuid" > "$work/grub.cfg"
  local mods="search search_fs_uuid linux normal ext2 part_gpt part_msdos echo test"
  grub-mkimage -O i386-pc -o "$work/core.img" -c "$work/grub.cfg" -p /boot/grub biosdisk $mods
  if [ "$label" = gpt ]; then
    install_bios_grub "$img" "$work/core.img" 2048  # the BIOS boot partition
    grub-mkimage -O x86_64-efi -o "$work/bootx64.efi" -c "$work/grub.cfg" -p /boot/grub fat $mods
    mkfs.vfat --offset $((2 * 2048)) "$img" $((32 * 1024)) > /dev/null 2>&1
    export MTOOLS_SKIP_CHECK=1
    mmd -i "$img@@2M" ::/EFI ::/EFI/BOOT
    mcopy -i "$img@@2M" "$work/bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
  else
    install_bios_grub "$img" "$work/core.img" 1  # the post-MBR gap
  fi
  echo "$uuid"
}

boot_disk() {
  local img=$1 fw=$2 seconds=${3:-300} work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local fwargs=()
  if [ "$fw" = uefi ]; then
    cp /usr/share/OVMF/OVMF_VARS.fd "$work/vars.fd"
    fwargs=(-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd
            -drive "if=pflash,format=raw,file=$work/vars.fd")
  fi
  # The disk is read through a throw-away overlay: the image stays as it is.
  qemu-img create -q -f qcow2 -F raw -b "$(realpath "$img")" "$work/overlay.qcow2"
  timeout "$seconds" qemu-system-x86_64 -machine q35 -cpu max -m 512 -no-reboot \
    -serial "file:$work/serial.log" -monitor none -display none "${fwargs[@]}" \
    -drive "file=$work/overlay.qcow2,format=qcow2,if=virtio" > "$work/qemu.log" 2>&1 || true
  if ! grep -a -m1 'GNOMON-BOOTED' "$work/serial.log" | tr -d '\r'; then
    echo "bootable_disk: no marker within ${seconds} s; the console said:" >&2
    tail -c 3000 "$work/serial.log" >&2 || true
    cat "$work/qemu.log" >&2 || true
    return 1
  fi
}

case "${1:-}" in
  make) [ $# -eq 3 ] || die "usage: $0 make IMG gpt|dos"; make_disk "$2" "$3" ;;
  boot) [ $# -ge 3 ] || die "usage: $0 boot IMG bios|uefi [SECONDS]"; boot_disk "$2" "$3" "${4:-300}" ;;
  *) die "usage: $0 make IMG gpt|dos | boot IMG bios|uefi [SECONDS]" ;;
esac
