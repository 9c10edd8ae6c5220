#!/usr/bin/env bash
# Put promtool (Prometheus rule and config checks, rule unit tests) and amtool (Alertmanager config
# check) into DIR (default .venv/bin), for `make tools`.
#
# Both are static Go binaries inside Debian's `prometheus` and `prometheus-alertmanager` packages.
# The packages are downloaded and unpacked, not installed: installing them would start a Prometheus
# and an Alertmanager service on the machine. Neither is on PyPI; Debian's mirror is reachable
# wherever CI runs, and ~30 MB takes a few seconds.
set -euo pipefail
dest=$(realpath "${1:-.venv/bin}")
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# A fresh machine may have no package lists yet (or stale ones naming removed versions).
apt-get download prometheus prometheus-alertmanager >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get download -q prometheus prometheus-alertmanager; }
for deb in ./*.deb; do dpkg-deb -x "$deb" unpacked; done
install -m 0755 unpacked/usr/bin/promtool unpacked/usr/bin/amtool "$dest/"
"$dest/promtool" --version 2>&1 | head -1
"$dest/amtool" --version 2>&1 | head -1
