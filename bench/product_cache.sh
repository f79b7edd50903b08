#!/bin/bash
# bench/product_cache.sh — GET /v1/products/{sku} through the gateway: product cache on
# (default) vs off (D11_GW_PRODUCT_TTL_MS=0), alternating pairs; CPU ticks of the center and
# the gateway during each run (bench/RESULTS.md §12). Run from the repository root after make.
set -u
cd "$(dirname "$0")/.."
B=bin/d11
run() { # $1 = label, $2 = ttl env ("" = default)
  d=$(mktemp -d /tmp/d11-pcbench.XXXX)
  port=$((20000 + RANDOM % 20000))
  if [ -n "$2" ]; then export D11_GW_PRODUCT_TTL_MS=$2; else unset D11_GW_PRODUCT_TTL_MS; fi
  $B up --data $d --listen 127.0.0.1:$port --cells 2 --threads 2 --log-level warn > $d/up.log 2>&1 &
  pid=$!
  for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.1; done
  sleep 1
  $B bench --url http://127.0.0.1:$port --token-file $d/admin.token --setup-only --skus 100 > /dev/null 2>&1
  cpu() { awk '{print $14+$15}' /proc/$(cat $d/pids/$1.pid)/stat; }
  c0=$(cpu center); g0=$(cpu gateway)
  out=$($B bench --url http://127.0.0.1:$port --token-file $d/admin.token --mix read=1 --skus 100 \
        --hot-sku-share 0.9 --connections 32 --threads 1 --duration 8 --quiet --json 2>/dev/null)
  c1=$(cpu center); g1=$(cpu gateway)
  hits=$(curl -s -H "Authorization: Bearer $(cat $d/admin.token)" http://127.0.0.1:$port/metrics | grep 'd11_gateway_product_cache_total{result="hit"}' | awk '{print $2}')
  echo "$1 $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["result"]; print("rps=%.0f p50_us=%d p99_us=%d ok=%d errors=%d" % (r["throughput"]["ok_per_s"], r["latency_us"]["p50"], r["latency_us"]["p99"], r["requests"]["ok"], r["requests"]["errors"]))' 2>/dev/null || echo "$out" | head -c 600) hits=$hits center_cpu_ticks=$((c1-c0)) gateway_cpu_ticks=$((g1-g0))"
  echo "   load: $(cat /proc/loadavg)"
  kill $pid; wait $pid 2>/dev/null
  rm -rf $d
}
for r in 1 2; do run cached ""; run uncached 0; done
