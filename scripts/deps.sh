#!/usr/bin/env bash
# deps.sh — install the Debian packages d11's build and tests need, only those missing.
# Usage: scripts/deps.sh [--bench]   (--bench adds the peers of bench/compare.sh)
set -euo pipefail
pkgs=(build-essential pkg-config libsqlite3-dev sqlite3 libhttp-parser-dev libjsmn-dev
      libssl-dev python3 wrk clang libclang-rt-14-dev)
pkgs+=(prometheus)  # promtool + a real server for test_metrics.py (metrics, alert rules)
pkgs+=(libsystemd-dev python3-yaml)  # sd_notify readiness (deploy/systemd); YAML checks of deploy/
pkgs+=(chromium fonts-dejavu-core)   # test_dashboard.py: headless screenshot of the sale dashboard
pkgs+=(libpq-dev postgresql-15)  # the PostgreSQL store (docs/postgresql.md) and its tests
pkgs+=(libnats-dev nats-server)  # the NATS JetStream relay (docs/events.md) and its tests
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(postgresql postgresql-contrib redis-server redis-tools nginx-light)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
