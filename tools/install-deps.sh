#!/usr/bin/env bash
# Installs the Debian packages gnomon builds, tests and benchmarks with.
# Idempotent: installs only what is missing, so a second run costs a dpkg query.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      libzstd-dev libxxhash-dev libtbb-dev libgtest-dev libbenchmark-dev
      nlohmann-json3-dev libcli11-dev libext2fs-dev libfdisk-dev libblkid-dev fdisk dosfstools mtools libsqlite3-dev sqlite3 python3 libpq-dev
      postgresql postgresql-contrib
      e2fsprogs xfsprogs btrfs-progs util-linux zstd time libfmt-dev
      debootstrap wget   # debootstrap: tests/package_test.sh installs the .deb in a fresh root
      systemd            # systemd-analyze: tests/systemd_units_test.sh verifies the units
      clang libclang-rt-14-dev   # libFuzzer: tools/fuzz.sh
      # tests/bootable_disk.sh: a bootable disk, booted under QEMU
      grub-pc-bin grub-efi-amd64-bin linux-image-amd64 busybox-static cpio kmod
      qemu-system-x86 qemu-utils ovmf
      # gnomon mount (FUSE) and gnomon serve (NBD through nbdkit)
      libfuse3-dev fuse3 nbdkit nbdkit-plugin-dev libnbd-bin
      # encrypted repositories: AES-256-GCM, HKDF (OpenSSL), Argon2id (libsodium), and
      # keyed chunk ids: BLAKE3's C implementation, which Debian 12 ships only in the
      # Rust crate's sources (source files only; format/CMakeLists.txt builds them)
      libssl-dev libsodium-dev librust-blake3-dev
      # S3 repositories: HTTP (libcurl); tools/rgw.sh installs the Ceph gateway for tests
      libcurl4-openssl-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
