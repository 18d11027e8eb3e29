#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 machine: Debian packages, then a venv made from
# Debian's python3 (it must see Debian's `ovs` and `mininet` modules) with pinned Python deps.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMP=$VENV/.ananta-setup-stamp

APT_PACKAGES=(
  openvswitch-switch openvswitch-common python3-openvswitch
  mininet frr haproxy iperf3 ethtool tcpdump curl iputils-ping iputils-arping iproute2 hping3 procps psmisc
  python3 python3-venv python3-dev
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (it installs Debian packages and builds network namespaces)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The packaged services are not used: every lab node runs its own daemons.
for svc in openvswitch-switch frr haproxy; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

want="$(cat setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/ananta" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade "pip>=23" "setuptools>=68" wheel
"$VENV/bin/python" -m pip install -q -e ".[test]"
echo "$want" > "$STAMP"
echo "setup: ready ($VENV)"
