#!/bin/sh
# Lays out the final image's filesystem under OUT/rootfs (the gateway
# binary, a passwd/group naming the non-root user, the CA bundle, the config
# directory) and its data directory as OUT/data, which the Dockerfile copies
# on its own with --chown (copied into an existing directory, the owner
# would stay root). The Dockerfile's build stage runs it, and so does
# scripts/check-deploy.sh for its offline image build, so both images hold
# the same files. Usage: rootfs.sh BINARY CA_BUNDLE OUT
set -eu
binary=$1 ca_bundle=$2 out=$3
uid=65532
mkdir -p "$out/data"
out=$out/rootfs
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/etc/switchyard" "$out/var/lib" "$out/tmp"
# Debug line tables off (symbols stay, so backtraces still name functions):
# 100 MB -> about a fifth of that.
strip --strip-debug -o "$out/usr/local/bin/switchyard" "$binary"
cp "$ca_bundle" "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0::/:/sbin/nologin\nswitchyard:x:%s:%s::/var/lib/switchyard:/sbin/nologin\n' "$uid" "$uid" >"$out/etc/passwd"
printf 'root:x:0:\nswitchyard:x:%s:\n' "$uid" >"$out/etc/group"
chmod 0755 "$out/usr/local/bin/switchyard"
chmod 1777 "$out/tmp"
