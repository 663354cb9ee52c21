#!/usr/bin/env bash
# Install everything pyruntime and its tests need on a fresh Debian 12 machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="python3 busybox-static libseccomp2 runc crun iproute2 procps psmisc strace util-linux systemd dbus uidmap"
missing=$(for p in $PKGS; do dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq $missing >/dev/null
fi
python3 -m pip install -q -e '.[test]'
bash tests/criu-setup.sh  # checkpoint/restore: a CRIU that passes `criu check` (built if need be)
# The CLI starts once per call: compile its bytecode now, and install the fast launcher
# (no `site`) as /usr/local/bin/pyruntime, the path Docker and containerd are given.
PYTHONDONTWRITEBYTECODE= python3 -m compileall -q pyruntime >/dev/null
python3 -m pyruntime.cli.launcher /usr/local/bin/pyruntime  # on the distribution's python3 if it can
# Every Python pyproject.toml lists gets the project and a launcher of its own,
# /usr/local/bin/pyruntime-3.X: .ci/run runs the lifecycle tests through each.
python3 tests/pythons.py install
# tests/test_rootless.py runs containers as this unprivileged user, whose subordinate id
# ranges newuidmap/newgidmap (package uidmap) check.
id pyrt-rootless >/dev/null 2>&1 || useradd --create-home --shell /bin/sh pyrt-rootless
for f in /etc/subuid /etc/subgid; do
  grep -q '^pyrt-rootless:' "$f" 2>/dev/null || echo 'pyrt-rootless:100000:65536' >> "$f"
done
