#!/usr/bin/env bash
# Installs the Debian tools presync's tests and benchmarks talk to, when they are missing:
#   zstd   - the reference zstd CLI (codec interop tests, codec benchmark)
#   b3sum  - the reference BLAKE3 CLI (core benchmark baseline)
#   qemu-img, qemu-io, qemu-nbd (qemu-utils), nbdinfo, nbdcopy (libnbd-bin) - real NBD peers
#   rsync  - the evacuation benchmark's baseline
#   fio (with its libnbd engine) - latency percentiles through NBD servers (scripts/bench_nbd.ts)
#   openssl - test certificates for the TLS and QUIC transports
#   qemu-system-x86_64 (qemu-system-x86) - running VMs: QMP, the QEMU tracker, the test guest
#   busybox (busybox-static), mkfs.ext4 and e2fsck (e2fsprogs), cpio - the test guest's
#     initramfs and disk (fixtures/guest/; its kernel is fetched with apt-get download)
#   promtool (prometheus) - checks the /metrics exposition in the tests
#   script (bsdutils) - runs the agent and evacuate under a pseudo-terminal in the tests
#   systemd-analyze (systemd) - verifies the shipped systemd units in the tests
#   ceph-mon, ceph-osd, ceph-mgr, ceph + rbd (ceph-common, which brings librados2 and librbd1) -
#     the single-node Ceph cluster of scripts/ceph_dev.sh for the RBD tests and benchmark
# Idempotent and quiet when everything is present. Needs root (apt-get) to install; without
# it, says what is missing and carries on (the tests that need a tool then say they skip).
set -euo pipefail

declare -A package_of=([zstd]=zstd [b3sum]=b3sum [qemu-img]=qemu-utils [nbdinfo]=libnbd-bin
  [rsync]=rsync [openssl]=openssl [qemu-system-x86_64]=qemu-system-x86 [busybox]=busybox-static
  [mkfs.ext4]=e2fsprogs [cpio]=cpio [promtool]=prometheus [script]=bsdutils
  [systemd-analyze]=systemd [ceph-mon]=ceph-mon [ceph-osd]=ceph-osd [ceph-mgr]=ceph-mgr
  [rbd]=ceph-common [fio]=fio)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "presync setup: installing ${missing[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "presync setup: missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
fi
