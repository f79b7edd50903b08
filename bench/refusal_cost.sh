#!/usr/bin/env bash
# bench/refusal_cost.sh — the CPU of one refused request on this machine: d11's gateway
# refusing with its adaptive protection (503 overloaded) next to nginx answering the same
# requests with a fixed 503 and no logic at all — the floor of "read an HTTP request, write a
# small answer" on this kernel and VM (docs/protection.md, bench/RESULTS.md §8 run E).
#
# Both servers are pinned to CPU 0, `d11 bench` (open loop, 2,000 keep-alive connections,
# 5 s) to CPU 1. d11 runs `d11 up --cells 2 --threads 1 --protect-inflight-min 8` with the
# cells slowed by D11_FAULTS=cell.recv:delay=5ms, so nearly every request is refused at the
# gateway. CPU = utime + stime of the nginx worker / the d11 gateway process over the run.
#
# Usage: bench/refusal_cost.sh [RATE ...]      (default: 30000 60000)
# Environment: D11_BIN (default bin/d11). Starts everything on 127.0.0.1 with its own
# port and temp dir and stops it by PID.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${D11_BIN:-bin/d11}
RATES=${*:-30000 60000}
T=$(mktemp -d /tmp/d11-refusal.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT INT TERM
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_req() { python3 -c "import os,sys; print('%.2f' % ((int(sys.argv[2]) - int(sys.argv[1])) * 1e6 / os.sysconf('SC_CLK_TCK') / max(1, int(sys.argv[3]))))" "$@"; }
answered() { awk '/requests +sent/ {print $5; exit}'; }

for RATE in $RATES; do
  P=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+): the 2,000 client ports never collide
  mkdir -p "$T/ng"
  cat >"$T/ng/nginx.conf" <<EOC
worker_processes 1; daemon off; pid $T/ng/nginx.pid; error_log $T/ng/error.log warn;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $T/ng/b; proxy_temp_path $T/ng/p; fastcgi_temp_path $T/ng/f;
 uwsgi_temp_path $T/ng/u; scgi_temp_path $T/ng/s; keepalive_requests 100000000;
 server { listen 127.0.0.1:$P backlog=4096;
  location / { add_header Retry-After 1 always; return 503 '{"error":{"code":"unavailable"}}'; } } }
EOC
  taskset -c 0 nginx -c "$T/ng/nginx.conf" -p "$T/ng" >/dev/null 2>&1 &
  NG=$!; PIDS+=("$NG")
  sleep 0.5
  W=$(pgrep -P "$NG" | head -1); W=${W:-$NG}
  a=$(ticks "$W")
  OUT=$(taskset -c 1 "$BIN" bench --url "http://127.0.0.1:$P" --token x --mix order=1 --rate "$RATE" \
      --connections 2000 --duration 5 --timeout 5000 2>/dev/null)
  b=$(ticks "$W")
  N=$(echo "$OUT" | answered)
  L=$(echo "$OUT" | awk '$1 == "all" {print $5; exit}') # p99 ms: the load generator's own floor
  echo "rate $RATE/s  nginx 503:   answered ${N:-0}, $(per_req "$a" "$b" "${N:-0}") us of CPU per request, p99 ${L:-?} ms"
  kill "$NG"; wait "$NG" 2>/dev/null

  for _try in 1 2 3; do # a random port may be taken: up exits, try another
    P=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+): the 2,000 client ports never collide
    rm -rf "$T/d$RATE"
    D11_FAULTS=cell.recv:delay=5ms taskset -c 0 "$BIN" up --data "$T/d$RATE" --listen "127.0.0.1:$P" --cells 2 \
      --threads 1 --protect-inflight-min 8 >"$T/up$RATE.log" 2>&1 &
    UP=$!; PIDS+=("$UP")
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$P/readyz" >/dev/null 2>&1 && [ -f "$T/d$RATE/admin.token" ] && break
      kill -0 "$UP" 2>/dev/null || break
      sleep 0.1
    done
    [ -f "$T/d$RATE/admin.token" ] && kill -0 "$UP" 2>/dev/null && break
    echo "refusal_cost.sh: d11 up did not start ($(tail -c 300 "$T/up$RATE.log")); another port" >&2
    kill "$UP" 2>/dev/null; wait "$UP" 2>/dev/null
  done
  TOK=$(cat "$T/d$RATE/admin.token")
  "$BIN" bench --url "http://127.0.0.1:$P" --token "$TOK" --setup-only --skus 100 >/dev/null 2>&1
  GW=""
  for c in $(pgrep -P "$UP"); do grep -q gateway "/proc/$c/cmdline" 2>/dev/null && GW=$c; done
  a=$(ticks "$GW")
  OUT=$(taskset -c 1 "$BIN" bench --url "http://127.0.0.1:$P" --token "$TOK" --mix order=1 --skus 100 \
        --hot-sku-share 0 --rate "$RATE" --connections 2000 --duration 5 --timeout 5000 2>/dev/null)
  b=$(ticks "$GW")
  N=$(echo "$OUT" | answered)
  R=$(echo "$OUT" | awk '$1 == "503" {print $4; exit}')
  echo "rate $RATE/s  d11 gateway: answered ${N:-0} (${R:-0} refused 503), $(per_req "$a" "$b" "${N:-0}") us of CPU per request"
  kill "$UP"; wait "$UP" 2>/dev/null
done
