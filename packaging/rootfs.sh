#!/usr/bin/env bash
# Lays out a minimal root filesystem for a container image of rearguard: the binary, the
# shared libraries `ldd` lists for it, and a writable /tmp. No registry is needed: the
# Containerfile starts FROM scratch and copies this tree in.
#   packaging/rootfs.sh BINARY DIR    (DIR/rootfs is created)
set -euo pipefail
binary=${1:?usage: packaging/rootfs.sh BINARY DIR}
root=${2:?usage: packaging/rootfs.sh BINARY DIR}/rootfs
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/var/lib/rearguard" "$root/etc/rearguard"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/rearguard"
# Every library the dynamic linker will load, at the path it will look for it.
ldd "$binary" | awk '/=> \// {print $3} /^[[:space:]]*\/.*ld-linux/ {print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# Who runs it, for the record of releases and rollbacks.
printf 'root:x:0:0:root:/root:/sbin/nologin\nrearguard:x:1000:1000:rearguard:/var/lib/rearguard:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nrearguard:x:1000:\n' > "$root/etc/group"
chown -R 1000:1000 "$root/var/lib/rearguard" 2>/dev/null || true
