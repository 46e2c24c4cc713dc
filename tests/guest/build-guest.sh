#!/usr/bin/env bash
# Builds the test guest from Debian packages only: the Debian kernel (fetched with apt-get download and unpacked,
# never installed on the host), its virtio-net modules, busybox-static, and iperf3 and socat with their shared libraries,
# and the benchmark's connection server (connserver.c, compiled statically with the host's gcc), packed into an
# uncompressed initramfs. Output: build/guest/{vmlinuz,initramfs.cpio}; reused while up to date.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/build/guest"
mkdir -p "$out"

kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kpkg" ]; then echo "build-guest: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; fi
stamp="$kpkg $(dpkg-query -W -f='${Version}' busybox-static) $(dpkg-query -W -f='${Version}' iperf3) $(dpkg-query -W -f='${Version}' socat) $(sha256sum "$here/build-guest.sh" "$here/connserver.c" "$here"/rootfs/* | sha256sum | cut -c1-16)"
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && apt-get download "$kpkg" >/dev/null 2>&1 ) || { echo "build-guest: apt-get download $kpkg failed" >&2; exit 1; }
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
kver=${kpkg#linux-image-}

r="$work/root"
mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules,usr/bin,root}
cp /bin/busybox "$r/bin/busybox"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover \
         drivers/net/net_failover drivers/net/virtio_net; do
  f="$work/k/lib/modules/$kver/kernel/$m.ko"
  [ -f "$f" ] || f="$f.xz"
  [ -f "$f" ] || { echo "build-guest: module $m missing in $kpkg" >&2; exit 1; }
  cp "$f" "$r/lib/modules/"
done
for bin in /usr/bin/iperf3 /usr/bin/socat; do
  cp "$bin" "$r/usr/bin/"
  ldd "$bin" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
done
command -v gcc >/dev/null || { echo "build-guest: gcc missing (scripts/setup.sh installs gcc and libc6-dev)" >&2; exit 1; }
gcc -static -O2 -Wall -Werror -o "$r/usr/bin/connserver" "$here/connserver.c"
install -m 0755 "$here/rootfs/init" "$r/init"
install -m 0755 "$here/rootfs/udhcpc.script" "$r/etc/udhcpc.script"
echo "root:x:0:0:root:/root:/bin/sh" > "$r/etc/passwd"
echo "root:x:0:" > "$r/etc/group"
printf '127.0.0.1 localhost\n' > "$r/etc/hosts"
cp "$work"/k/boot/vmlinuz-* "$out/vmlinuz.tmp"
( cd "$r" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet ) > "$out/initramfs.cpio.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
echo "$stamp" > "$out/stamp"
echo "build-guest: $out (kernel $kver)"
