#!/usr/bin/env bash
# bench/pg_profile.sh — where the time goes for d11 on PostgreSQL (issue 10; bench/RESULTS.md
# §7). Starts one private PostgreSQL 15 (fsync on, synchronous_commit on, pg_stat_statements,
# track_wal_io_timing) and `d11 up --store` on it, loads one hot SKU with wrk (the
# compare.sh script) for --duration s, and prints per order and per batch: server CPU split
# d11 / PostgreSQL, WAL records/bytes/fsyncs and fsync time (pg_stat_wal), the statements'
# execution time (pg_stat_statements), batch size and commit latency (d11's /metrics).
# With --perf: also `perf record` of the PostgreSQL processes during the run (top symbols).
# Every process is started here on 127.0.0.1 and stopped by its PID at the end.
#
# Usage: bench/pg_profile.sh [--duration S] [--connections C] [--d11-args "ARGS"]
#                            [--pg-set NAME=VALUE]... [--perf]
set -uo pipefail
DURATION=10 CONNS=128 D11ARGS="" PERF=0
PG_SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --d11-args) D11ARGS=$2; shift 2 ;;
    --pg-set) PG_SETS+=(-c "$2"); shift 2 ;;
    --perf) PERF=1; shift ;;
    *) echo "pg_profile.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D11="${D11_BIN:-$ROOT/bin/d11}"
PGBIN=/usr/lib/postgresql/15/bin
TMP=$(mktemp -d /tmp/d11-pgprof.XXXXXX); chmod 755 "$TMP"
PG_PID="" D11_PID=""
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]; }
cleanup() {
  [ -n "$D11_PID" ] && alive "$D11_PID" && { kill -TERM "$D11_PID"; for _ in $(seq 100); do alive "$D11_PID" || break; sleep 0.1; done; }
  [ -n "$PG_PID" ] && alive "$PG_PID" && { kill -INT "$PG_PID"; for _ in $(seq 100); do alive "$PG_PID" || break; sleep 0.1; done; }
  rm -rf "$TMP"
}
trap cleanup EXIT
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
P=29400; while ! port_free $P; do P=$((P + 1)); done
H=$((P + 1)); while ! port_free $H; do H=$((H + 1)); done
mkdir -p "$TMP/pg" "$TMP/sock"; [ "$(id -u)" = 0 ] && chown postgres: "$TMP/pg" "$TMP/sock"
as_pg "$PGBIN/initdb" -D "$TMP/pg/data" -U postgres --auth=trust -E UTF8 >/dev/null 2>&1 || { echo "initdb failed"; exit 1; }
args=(-D "$TMP/pg/data" -p "$P" -k "$TMP/sock" -c listen_addresses=127.0.0.1 -c synchronous_commit=on
      -c fsync=on -c full_page_writes=on -c shared_buffers=256MB -c max_connections=200
      -c shared_preload_libraries=pg_stat_statements -c track_wal_io_timing=on "${PG_SETS[@]}")
if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/postgres" "${args[@]}" >"$TMP/pg.log" 2>&1 &
else "$PGBIN/postgres" "${args[@]}" >"$TMP/pg.log" 2>&1 & fi
PG_PID=$!
for _ in $(seq 150); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$P" -U postgres && break; sleep 0.1; done
psql() { "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$P" -U postgres "$@"; }
psql -c "CREATE DATABASE d11" postgres
psql -c "CREATE EXTENSION pg_stat_statements" d11
# shellcheck disable=SC2086
"$D11" up --data "$TMP/d11" --listen "127.0.0.1:$H" $D11ARGS --store "postgresql://postgres@127.0.0.1:$P/d11" >"$TMP/d11.log" 2>&1 &
D11_PID=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$H/readyz" -o /dev/null -H "Authorization: Bearer $(cat "$TMP/d11/admin.token" 2>/dev/null)" && break; sleep 0.1; done
TOKEN=$(tr -d ' \n' <"$TMP/d11/admin.token")
"$D11" bench --url "http://127.0.0.1:$H" --token-file "$TMP/d11/admin.token" --setup-only --skus 1 \
  --sku-prefix CMP- --stock 1000000000000 --quiet >/dev/null 2>&1 || { echo "setup failed"; tail "$TMP/d11.log"; exit 1; }
# warm-up, then reset every counter
D11_TOKEN=$TOKEN D11_SKU=CMP-0 wrk -t1 -c"$CONNS" -d2s -s "$ROOT/bench/wrk-order.lua" "http://127.0.0.1:$H/" >/dev/null 2>&1
metric() { curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$H/metrics" | awk -v m="$1" '$1 ~ "^"m"(\\{|$)" {s += $2} END {printf "%.6f", s}'; }
ticks() { local t=0 k; for k in $(pgrep -P "$1") "$1"; do
            t=$((t + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$k/stat" 2>/dev/null || echo 0))); done; echo $t; }
tree() { local t; t=$(ticks "$1"); for k in $(pgrep -P "$1"); do t=$((t + $(ticks "$k") - $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$k/stat" 2>/dev/null || echo 0))); done; echo $t; }
psql -c "SELECT pg_stat_reset_shared('wal'); SELECT pg_stat_statements_reset()" d11 >/dev/null
b0=$(metric d11_cell_batch_ops_count); o0=$(metric d11_cell_batch_ops_sum); c0=$(metric d11_cell_commit_duration_seconds_sum)
d0=$(tree "$D11_PID"); p0=$(tree "$PG_PID")
if [ "$PERF" = 1 ]; then perf record -F 499 -g -o "$TMP/perf.data" -p "$(pgrep -d, -P "$PG_PID")" -- sleep "$DURATION" >/dev/null 2>&1 & PERF_PID=$!; fi
D11_TOKEN=$TOKEN D11_SKU=CMP-0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$ROOT/bench/wrk-order.lua" "http://127.0.0.1:$H/" >"$TMP/wrk.txt" 2>&1
d1=$(tree "$D11_PID"); p1=$(tree "$PG_PID")
b1=$(metric d11_cell_batch_ops_count); o1=$(metric d11_cell_batch_ops_sum); c1=$(metric d11_cell_commit_duration_seconds_sum)
[ "$PERF" = 1 ] && wait "$PERF_PID"
reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt"); non=$(awk -F': *' '/Non-2xx/ {print $2}' "$TMP/wrk.txt")
ok=$((reqs - ${non:-0}))
HZ=$(getconf CLK_TCK)
echo "== d11 on PostgreSQL, wrk -c$CONNS ${DURATION}s, d11 args '${D11ARGS}', pg sets '${PG_SETS[*]}', load $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v ok="$ok" -v d="$DURATION" -v dd=$((d1 - d0)) -v pp=$((p1 - p0)) -v hz="$HZ" -v b="$(awk -v a="$b0" -v c="$b1" 'BEGIN{print c-a}')" \
    -v o="$(awk -v a="$o0" -v c="$o1" 'BEGIN{print c-a}')" -v cs="$(awk -v a="$c0" -v c="$c1" 'BEGIN{print c-a}')" 'BEGIN{
  printf "orders/s %.0f   batches/s %.0f   ops/batch %.1f   commit latency %.2f ms (mean)\n", ok/d, b/d, (b ? o/b : 0), (b ? cs*1000/b : 0)
  printf "CPU per order: d11 %.1f us, PostgreSQL %.1f us (total %.1f us); CPU use d11 %.0f%%, PostgreSQL %.0f%% of one core\n",
         dd*1e6/hz/ok, pp*1e6/hz/ok, (dd+pp)*1e6/hz/ok, dd*100/hz/d, pp*100/hz/d }'
psql -F' ' -c "SELECT 'wal: records/order', round(wal_records::numeric / $ok, 2), 'bytes/order', round(wal_bytes / $ok, 0),
  'fpi', wal_fpi, 'writes', wal_write, 'fsyncs', wal_sync, 'fsyncs/s', round(wal_sync::numeric / $DURATION, 0),
  'ms/fsync', round((wal_sync_time / greatest(wal_sync, 1))::numeric, 2), 'fsync busy %', round((wal_sync_time / ($DURATION * 10))::numeric, 0)
  FROM pg_stat_wal" d11
echo "statements (top by total time): calls, ms total, us/call, rows/call"
psql -F' | ' -c "SELECT calls, round(total_exec_time::numeric, 0), round((total_exec_time * 1000 / calls)::numeric, 1),
  round(rows::numeric / calls, 1), left(regexp_replace(query, '\s+', ' ', 'g'), 90)
  FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12" d11
grep -E "Latency|50%|99%" "$TMP/wrk.txt"
if [ "$PERF" = 1 ]; then
  echo "perf: top symbols in PostgreSQL (self)"
  perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -25
fi
