#!/usr/bin/env bash
# bench/protect.sh — goodput and admitted p99 under overload, with and without the
# gateway's adaptive protection (docs/protection.md).
#
# d11 (`d11 up`, 2 cells, 1 gateway thread, durable orders) is pinned to CPU 0 and the load
# generator (`d11 bench`) to CPU 1 with taskset, so that several times the capacity is
# reachable on a 2-core machine. Steps:
#   1. capacity C: `d11 bench --find-capacity --slo-p99 SLO` (protection on);
#   2. unloaded p99: open loop at 10% of C;
#   3. for protection on and off, each on a fresh data directory: open loop at 1x, 2x, 3x,
#      5x C for --duration seconds with --connections connections: goodput (2xx/s),
#      admitted p99 (2xx only, from the intended send time), 503s, other 5xx, timeouts
#      (no answer within the bench's timeout, unfinished, never sent).
# Prints a Markdown table (and appends it to --markdown FILE when given), with the load
# average at the start and the end (the machine may be shared: say so next to figures).
# --up-args "..." adds flags to every `d11 up` (e.g. "--gateway-nice 0" to compare with
# the default CPU priority, docs/protection.md).
#
# Usage: bench/protect.sh [--duration S] [--connections C] [--factors "1 2 3 5"]
#                         [--slo-p99 MS] [--capacity R] [--markdown FILE] [--up-args "..."]
# Every process started here is stopped by its PID at the end (also on Ctrl-C).
set -uo pipefail

DURATION=10
CONNS=2000
FACTORS="1 2 3 5"
SLO=20
CAP=""
MARKDOWN=""
UP_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --factors) FACTORS=$2; shift 2 ;;
    --slo-p99) SLO=$2; shift 2 ;;
    --capacity) CAP=$2; shift 2 ;;
    --markdown) MARKDOWN=$2; shift 2 ;;
    --up-args) UP_ARGS=$2; shift 2 ;;
    *) echo "protect.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
BIN=${D11_BIN:-bin/d11}
TMP=$(mktemp -d /tmp/d11-protect.XXXXXX)
PORT=$((20000 + RANDOM % 12000))
UP_PID=""

stop_up() {
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID"
    for _ in $(seq 50); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$UP_PID" 2>/dev/null && kill -KILL "$UP_PID"
  fi
  UP_PID=""
}
trap 'stop_up; exit 130' INT TERM
trap 'stop_up' EXIT

start_up() { # $1 = on|off, $2 = data dir
  mkdir -p "$2"
  for _try in 1 2 3; do # a random port may be taken by someone else: up exits 1, try another
    taskset -c 0 "$BIN" up --data "$2" --listen 127.0.0.1:$PORT --cells 2 --threads 1 \
      --durability sync --protect "$1" $UP_ARGS >"$2/up.log" 2>&1 &
    UP_PID=$!
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
      kill -0 "$UP_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$UP_PID" 2>/dev/null && break
    echo "protect.sh: d11 up exited ($(tail -c 200 "$2/up.log")); another port" >&2
    PORT=$((20000 + RANDOM % 12000))
  done
  "$BIN" bench --token-file "$2/admin.token" --url "http://127.0.0.1:$PORT" --setup-only \
    --skus 100 >/dev/null 2>&1
}

bench() { # $1 = data dir, rest = flags; JSON on stdout
  local d=$1; shift
  taskset -c 1 "$BIN" bench --token-file "$d/admin.token" --url "http://127.0.0.1:$PORT" \
    --skus 100 --quiet --json "$@" 2>/dev/null
}

# one result line: rate goodput p99_ok_ms n503 n5xx_other timeouts
summarise() {
  python3 -c '
import json, sys
d = json.load(sys.stdin); r = d["result"]; q = r["requests"]
n503 = sum(o["count"] for o in r["outcomes"] if o["status"] == 503)
other = sum(o["count"] for o in r["outcomes"] if o["status"] >= 500 and o["status"] != 503)
tmo = sum(o["count"] for o in r["outcomes"] if o["status"] == 0 or o["status"] == 504)
tmo += q["unfinished"] + q["unsent"]
print("%.0f %.0f %.2f %d %d %d" % (r["rate_target"], r["throughput"]["ok_per_s"],
      r["ok_latency_us"]["p99"] / 1000.0, n503, other, tmo))'
}

LOAD0="$(date -u +%H:%MZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
D=$TMP/cap
start_up on "$D"
if [ -z "$CAP" ]; then
  CAP=$(bench "$D" --find-capacity --slo-p99 "$SLO" --cap-start 2000 --cap-factor 1.4 \
        --cap-step 3 --connections 512 | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["sustainable_rate"]))')
fi
[ "${CAP:-0}" -gt 0 ] || { echo "protect.sh: no capacity found" >&2; exit 1; }
UNLOADED=$(bench "$D" --rate $((CAP / 10)) --duration 5 --connections 64 | summarise | awk '{print $3}')
stop_up
echo "capacity $CAP/s (find-capacity, p99 <= $SLO ms); unloaded p99 (10% of C) $UNLOADED ms" >&2

OUT=$TMP/table.md
{
  echo "| protection | load | offered/s | goodput/s | goodput / C | admitted p99 ms | p99 / unloaded | 503 | other 5xx | timeouts |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
} >"$OUT"
for mode in on off; do
  D=$TMP/$mode
  start_up "$mode" "$D"
  for f in $FACTORS; do
    line=$(bench "$D" --rate $((CAP * f)) --duration "$DURATION" --connections "$CONNS" --timeout 5000 | summarise)
    read -r rate good p99 n503 other tmo <<<"$line"
    echo "| $mode | ${f}x | $rate | $good | $(python3 -c "print('%.2f' % ($good / $CAP))") | $p99 | $(python3 -c "print('%.1f' % ($p99 / max($UNLOADED, 0.001)))") | $n503 | $other | $tmo |" >>"$OUT"
    echo "$mode ${f}x: $line" >&2
    sleep 2
  done
  stop_up
done
HEAD="C = $CAP orders/s; unloaded p99 = $UNLOADED ms; $DURATION s per step, $CONNS connections; up args '${UP_ARGS}'; start $LOAD0, end $(date -u +%H:%MZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$HEAD"
cat "$OUT"
[ -n "$MARKDOWN" ] && { echo; echo "$HEAD"; cat "$OUT"; } >>"$MARKDOWN"
rm -rf "$TMP"
exit 0
