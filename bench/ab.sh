#!/usr/bin/env bash
# bench/ab.sh — two d11 binaries side by side in ONE run: the paired A/B that a shared,
# noisy machine still allows.
#
# Starts both platforms at once (each `d11 up`, durability sync, own temp data dir and
# loopback port; an idle platform costs ~nothing), creates the same hot SKU on each, then
# alternates wrk runs of --duration seconds (A, B, A, B, ...) with bench/wrk-order.lua
# (the script bench/compare.sh uses: POST /v1/orders, unique keys, 1 hot SKU). Each pair
# is two runs seconds apart, so machine noise hits both alike; the figure to read is the
# median of the per-pair ratios B/A. Both platforms are stopped by PID at the end.
#
# Usage: bench/ab.sh A_BIN B_BIN [--pairs N] [--duration S] [--connections C]
# Prints one line per run and a markdown summary (medians of orders/s and p99, the
# median pair ratio B/A, and the CPU time each platform used per order).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 2 ] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A=$1 B=$2; shift 2
PAIRS=5 DURATION=8 CONNS=32
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) PAIRS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    *) echo "ab.sh: unknown flag $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "ab.sh: wrk is not installed (scripts/deps.sh --bench)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/d11ab.XXXXXX)
declare -A PID PORT
cleanup() {
  for k in "${!PID[@]}"; do kill -TERM "${PID[$k]}" 2>/dev/null || true; done
  for k in "${!PID[@]}"; do wait "${PID[$k]}" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {  # start NAME BIN
  local name=$1 bin=$2 port
  port=$(free_port)
  mkdir -p "$TMP/$name"
  "$bin" up --data "$TMP/$name/data" --listen "127.0.0.1:$port" --durability sync >"$TMP/$name/log" 2>&1 &
  PID[$name]=$!
  PORT[$name]=$port
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "ab.sh: $name did not get ready" >&2; exit 1; }
  "$bin" bench --url "http://127.0.0.1:$port" --token-file "$TMP/$name/data/admin.token" --setup-only --skus 1 \
    --sku-prefix CMP- --stock 1000000000000 --quiet >/dev/null
}

cpu_of_tree() {  # user+sys ticks of a process and its children (d11 up + gateway + cells + center)
  local root=$1 total=0 p
  for p in $root $(pgrep -P "$root" || true); do
    [ -r /proc/$p/stat ] || continue
    total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo "$total"
}

run() {  # run NAME -> "orders/s p99ms cpu_us_per_order"
  local name=$1 port=${PORT[$1]} token out c0 c1
  token=$(tr -d ' \n\r\t' <"$TMP/$name/data/admin.token")
  out="$TMP/$name/wrk.$RANDOM"
  c0=$(cpu_of_tree "${PID[$name]}")
  D11_TOKEN=$token D11_RUN="$name$RANDOM$RANDOM" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency \
    -s "$ROOT/bench/wrk-order.lua" "http://127.0.0.1:$port/v1/orders" >"$out" 2>&1
  c1=$(cpu_of_tree "${PID[$name]}")
  local rps p99 n hz
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$out")
  n=$(awk '/requests in/ {print $1}' "$out")
  hz=$(getconf CLK_TCK)
  echo "$rps $p99 $(awk -v d=$((c1 - c0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.1f", (n > 0 ? d * 1e6 / hz / n : 0) }')"
}

start A "$A"
start B "$B"
echo "A = $A"
echo "B = $B"
declare -a RA RB PA PB CA CB RATIO
for i in $(seq 1 "$PAIRS"); do
  read -r ra pa ca <<<"$(run A)"
  read -r rb pb cb <<<"$(run B)"
  RA+=("$ra") RB+=("$rb") PA+=("$pa") PB+=("$pb") CA+=("$ca") CB+=("$cb")
  r=$(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.3f", (a > 0 ? b / a : 0) }')
  RATIO+=("$r")
  echo "pair $i: A $ra orders/s (p99 $pa ms, $ca us CPU/order)  B $rb orders/s (p99 $pb ms, $cb us CPU/order)  B/A $r"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo
echo "| | orders/s (median) | p99 ms (median) | CPU µs/order (median) |"
echo "|---|---:|---:|---:|"
echo "| A | $(median "${RA[@]}") | $(median "${PA[@]}") | $(median "${CA[@]}") |"
echo "| B | $(median "${RB[@]}") | $(median "${PB[@]}") | $(median "${CB[@]}") |"
echo
echo "median of the per-pair ratios B/A: $(median "${RATIO[@]}") ($PAIRS pairs x ${DURATION} s, wrk -t1 -c$CONNS)"
