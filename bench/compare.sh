#!/usr/bin/env bash
# bench/compare.sh — d11 side by side with what a team would pick instead, on THIS machine,
# in one run. Each system places "orders" durably for one hot SKU (or, for nginx, just
# answers HTTP), measured in alternating rounds (A B C D E, A B C D E, ...) so drift of the
# machine hits every system alike; the report gives medians and ratios.
#
#   d11             bin/d11 up (durability sync), wrk + bench/wrk-order.lua: POST /v1/orders
#                   with a unique Idempotency-Key per request; counts 2xx answers only
#   nginx           nginx-light, 1 worker, `return 201 <json>` for the same requests
#                   (same wrk script): the cost of HTTP alone on this box
#   postgres        PostgreSQL 15, synchronous_commit=on, pgbench: BEGIN; UPDATE inventory
#                   SET stock=stock-1 WHERE sku=1 AND stock>=1; INSERT INTO orders ...; COMMIT;
#   redis-always    Redis 7, appendfsync always: EVALSHA of a Lua script that checks the
#                   stock, DECRBYs it and XADDs the order (redis-benchmark)
#   redis-everysec  the same with appendfsync everysec (can lose ~1 s of orders on a crash)
#   d11-pg          d11 up --store postgresql://... on the SAME PostgreSQL server as `postgres`
#                   (database d11pg; docs/postgresql.md), same wrk script as d11
# Server CPU per order (utime+stime of the server's process tree, children included, over
# the run / 2xx answers) is reported for d11, d11-pg (d11 + PostgreSQL) and postgres.
#
# Every server is started here on 127.0.0.1 on its own high port with its own data
# directory under one temp dir, and stopped by its PID (and only those PIDs) at the end,
# also on Ctrl-C. Loopback only. Bounded: each run --duration seconds (default 10), the
# whole script stops starting new runs after --budget seconds (default 540).
#
# Usage: bench/compare.sh [--rounds N] [--duration S] [--connections C] [--pg-clients N]
#                         [--redis-clients N] [--only d11,nginx,postgres,redis-always,redis-everysec]
#                         [--markdown FILE] [--no-deps] [--budget S] [--keep]
#                         [--d11pg-args "ARGS"] [--pg-set NAME=VALUE]...
#   --d11pg-args  extra `d11 up` flags for the d11-pg row only (e.g. "--cells 4")
#   --pg-set      one more setting of the bench PostgreSQL server (repeatable; it serves
#                 both the postgres and the d11-pg rows, so both get it), e.g.
#                 --pg-set commit_delay=200 --pg-set max_wal_size=4GB
# Environment: D11_BIN=path measures another d11 binary (default bin/d11).
# Exit: 0 when every selected system was measured; 1 when one could not be (reported);
#       2 usage.
set -uo pipefail

ROUNDS=3
DURATION=10
CONNS=32
PG_CLIENTS=16
REDIS_CLIENTS=32
ONLY="d11,nginx,postgres,redis-always,redis-everysec"
ONLY="$ONLY,d11-pg"
MARKDOWN=""
DEPS=1
BUDGET=540
KEEP=0
ARGS_ORIG="$*"
D11PG_ARGS=""
PG_SETS=()

die_usage() { echo "compare.sh: $*" >&2; exit 2; }
num() { [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] || die_usage "$1 needs a positive integer, got '$2'"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) num "$1" "${2:-}"; ROUNDS=$2; shift 2 ;;
    --duration) num "$1" "${2:-}"; DURATION=$2; shift 2 ;;
    --connections) num "$1" "${2:-}"; CONNS=$2; shift 2 ;;
    --pg-clients) num "$1" "${2:-}"; PG_CLIENTS=$2; shift 2 ;;
    --redis-clients) num "$1" "${2:-}"; REDIS_CLIENTS=$2; shift 2 ;;
    --budget) num "$1" "${2:-}"; BUDGET=$2; shift 2 ;;
    --only) [ -n "${2:-}" ] || die_usage "--only needs a list"; ONLY=$2; shift 2 ;;
    --markdown) [ -n "${2:-}" ] || die_usage "--markdown needs a file"; MARKDOWN=$2; shift 2 ;;
    --no-deps) DEPS=0; shift ;;
    --keep) KEEP=1; shift ;;
    --d11pg-args) D11PG_ARGS=${2:-}; shift 2 ;;
    --pg-set) [[ "${2:-}" =~ ^[a-z_]+=[^[:space:]]+$ ]] || die_usage "--pg-set needs NAME=VALUE, got '${2:-}'"
              PG_SETS+=(-c "$2"); shift 2 ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die_usage "unknown argument '$1' (see --help)" ;;
  esac
done
ALL_SYSTEMS=(d11 nginx postgres redis-always redis-everysec)
ALL_SYSTEMS+=(d11-pg)
SYSTEMS=()
IFS=',' read -r -a wanted <<<"$ONLY"
for s in "${wanted[@]}"; do
  ok=0; for a in "${ALL_SYSTEMS[@]}"; do [ "$s" = "$a" ] && ok=1; done
  [ $ok = 1 ] || die_usage "--only: unknown system '$s' (${ALL_SYSTEMS[*]})"
done
for a in "${ALL_SYSTEMS[@]}"; do
  for s in "${wanted[@]}"; do [ "$s" = "$a" ] && SYSTEMS+=("$a"); done
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
D11="${D11_BIN:-$ROOT/bin/d11}"   # D11_BIN overrides which binary is measured
LUA="$ROOT/bench/wrk-order.lua"
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log() { printf '[%4ss] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }

# ---- temp dir, PIDs we own, cleanup -------------------------------------------------
TMP=$(mktemp -d /tmp/d11-compare.XXXXXX)
chmod 755 "$TMP"
declare -A PIDS=()   # system -> pid
# alive PID: running and not a zombie (an exited child we have not reaped yet)
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_pid() {  # stop_pid NAME PID SIGNAL: signal, wait up to 20 s, then SIGKILL that PID
  local name=$1 pid=$2 sig=${3:-TERM} kids
  alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
  kids=$(pgrep -P "$pid" 2>/dev/null | tr '\n' ' ')
  kill "-$sig" "$pid" 2>/dev/null
  for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "$name (pid $pid) did not stop on SIG$sig: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  for k in $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null; done
  wait "$pid" 2>/dev/null
  return 0
}
cleanup() {
  for name in "${!PIDS[@]}"; do
    case "$name" in
      postgres) ;;  # after every d11 (d11-pg writes to it), below
      *) stop_pid "$name" "${PIDS[$name]}" TERM ;;
    esac
  done
  [ -n "${PIDS[postgres]:-}" ] && stop_pid postgres "${PIDS[postgres]}" INT  # fast shutdown
  if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---- ports ----------------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
  local p=$1
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}
P_D11=$(pick_port 28080)
P_NGINX=$(pick_port $((P_D11 + 1)))
P_PG=$(pick_port $((P_NGINX + 1)))
P_RA=$(pick_port $((P_PG + 1)))
P_RE=$(pick_port $((P_RA + 1)))
P_D11PG=$(pick_port $((P_RE + 1)))

# ---- dependencies ---------------------------------------------------------------------
if [ "$DEPS" = 1 ]; then
  log "checking packages (scripts/deps.sh --bench)"
  bash "$ROOT/scripts/deps.sh" --bench || log "deps.sh failed: measuring what is installed"
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

declare -A STATUS=()   # system -> "ok" or a reason it was not measured
have() { command -v "$1" >/dev/null 2>&1; }
http_2xx() {  # http_2xx PORT PATH: one GET over bash's /dev/tcp; true on a 2xx status
  local line
  # (the braces scope 2>/dev/null to the connect: on a bare exec it would stick to the shell)
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
  IFS= read -r -t 2 line <&3
  exec 3<&- 3>&-
  [[ "$line" =~ ^HTTP/1\.[01]\ 2[0-9][0-9] ]]
}
wait_http() {  # wait_http PORT PATH SECONDS PID
  local port=$1 path=$2 secs=$3 pid=$4
  for _ in $(seq 1 $((secs * 10))); do
    alive "$pid" || return 1
    http_2xx "$port" "$path" && return 0
    sleep 0.1
  done
  return 1
}
# as root, run PostgreSQL's tools as its own user
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }

# ---- start: d11 -------------------------------------------------------------------------
start_d11() {
  if [ ! -x "$D11" ]; then
    (cd "$ROOT" && make -s >/dev/null 2>&1) || true
  fi
  if [ ! -x "$D11" ]; then STATUS[d11]="bin/d11 is missing and make failed"; return; fi
  have wrk || { STATUS[d11]="wrk is not installed"; return; }
  mkdir -p "$TMP/d11"
  "$D11" up --data "$TMP/d11" --listen "127.0.0.1:$P_D11" >"$TMP/d11.log" 2>&1 &
  PIDS[d11]=$!
  if ! wait_http "$P_D11" /healthz 30 "${PIDS[d11]}"; then
    if alive "${PIDS[d11]}"; then
      STATUS[d11]="bin/d11 up did not answer /healthz within 30 s"
    else
      wait "${PIDS[d11]}"; STATUS[d11]="bin/d11 up exited with status $?"
    fi
    STATUS[d11]+=" (log: $(tail -c 300 "$TMP/d11.log" | tr '\n' ' '))"
    return
  fi
  for _ in $(seq 1 50); do [ -s "$TMP/d11/admin.token" ] && break; sleep 0.1; done
  if [ ! -s "$TMP/d11/admin.token" ]; then STATUS[d11]="no $TMP/d11/admin.token after start"; return; fi
  D11_TOKEN_VALUE=$(tr -d ' \n\r\t' <"$TMP/d11/admin.token")
  if ! "$D11" bench --url "http://127.0.0.1:$P_D11" --token-file "$TMP/d11/admin.token" \
        --setup-only --skus 1 --sku-prefix CMP- --stock 1000000000000 --quiet >"$TMP/d11-setup.log" 2>&1; then
    STATUS[d11]="creating product CMP-0 failed: $(tail -c 300 "$TMP/d11-setup.log" | tr '\n' ' ')"
    return
  fi
  # smoke: 20 orders must come back 2xx
  if ! timeout 30 "$D11" bench --url "http://127.0.0.1:$P_D11" --token-file "$TMP/d11/admin.token" \
        --requests 20 --connections 2 --skus 1 --sku-prefix CMP- --slo-errors 0 --quiet \
        >"$TMP/d11-smoke.log" 2>&1; then
    STATUS[d11]="smoke test (20 orders) failed: $(grep -E 'error|[0-9]{3} ' "$TMP/d11-smoke.log" | head -5 | tr '\n' ' ')"
    return
  fi
  STATUS[d11]=ok
}

# ---- start: nginx -----------------------------------------------------------------------
start_nginx() {
  have nginx || { STATUS[nginx]="nginx is not installed"; return; }
  have wrk || { STATUS[nginx]="wrk is not installed"; return; }
  mkdir -p "$TMP/nginx/logs"
  cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$P_NGINX;
    default_type application/json;
    location / {
      return 201 '{"order_id":"0000000000000001","user_id":42,"status":"pending_payment","items":[{"sku":"CMP-0","quantity":1,"price_cents":1999}],"total_cents":1999,"created_at":"2026-11-11T00:00:00.000Z","expires_at":"2026-11-11T00:15:00.000Z"}';
    }
  }
}
EOF
  nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >"$TMP/nginx.log" 2>&1 &
  PIDS[nginx]=$!
  if ! wait_http "$P_NGINX" / 10 "${PIDS[nginx]}"; then
    STATUS[nginx]="nginx did not start: $(tail -c 300 "$TMP/nginx.log" "$TMP/nginx/logs/error.log" 2>/dev/null | tr '\n' ' ')"
    return
  fi
  STATUS[nginx]=ok
}

# ---- start: PostgreSQL --------------------------------------------------------------------
start_postgres() {
  [ -n "$PGBIN" ] && [ -x "$PGBIN/postgres" ] || { STATUS[postgres]="PostgreSQL is not installed"; return; }
  mkdir -p "$TMP/pg" "$TMP/pgsock"
  [ "$(id -u)" = 0 ] && chown postgres: "$TMP/pg" "$TMP/pgsock"
  if ! as_pg "$PGBIN/initdb" -D "$TMP/pg/data" -U postgres --auth=trust -E UTF8 >"$TMP/pg-initdb.log" 2>&1; then
    STATUS[postgres]="initdb failed: $(tail -c 300 "$TMP/pg-initdb.log" | tr '\n' ' ')"; return
  fi
  # started directly (not through a shell function) so that $! is the postmaster itself
  local pgargs=(-D "$TMP/pg/data" -p "$P_PG" -k "$TMP/pgsock" -c listen_addresses=127.0.0.1
                -c synchronous_commit=on -c fsync=on -c full_page_writes=on
                -c shared_buffers=256MB -c max_connections=200 "${PG_SETS[@]}")
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/postgres" "${pgargs[@]}" >"$TMP/pg.log" 2>&1 &
  else
    "$PGBIN/postgres" "${pgargs[@]}" >"$TMP/pg.log" 2>&1 &
  fi
  PIDS[postgres]=$!
  local ok=0
  for _ in $(seq 1 150); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$P_PG" -U postgres -d postgres && { ok=1; break; }
    alive "${PIDS[postgres]}" || break
    sleep 0.1
  done
  if [ $ok = 0 ]; then STATUS[postgres]="postgres did not start: $(tail -c 300 "$TMP/pg.log" | tr '\n' ' ')"; return; fi
  local psql=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$P_PG" -U postgres)
  "${psql[@]}" -c "CREATE DATABASE bench" postgres >/dev/null 2>&1
  if ! "${psql[@]}" bench >"$TMP/pg-schema.log" 2>&1 <<'EOF'
CREATE TABLE inventory (sku int PRIMARY KEY, stock bigint NOT NULL);
INSERT INTO inventory SELECT g, 1000000000000 FROM generate_series(1, 1000) g;
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  sku int NOT NULL,
  user_id bigint NOT NULL,
  quantity int NOT NULL,
  idempotency_key text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);
EOF
  then STATUS[postgres]="schema failed: $(tail -c 300 "$TMP/pg-schema.log" | tr '\n' ' ')"; return; fi
  cat >"$TMP/pg-order.sql" <<'EOF'
\set uid random(1, 1000000)
BEGIN;
UPDATE inventory SET stock = stock - 1 WHERE sku = 1 AND stock >= 1;
INSERT INTO orders (sku, user_id, quantity, idempotency_key) VALUES (1, :uid, 1, md5(random()::text || clock_timestamp()::text || :client_id));
COMMIT;
EOF
  STATUS[postgres]=ok
}

# ---- start: d11 on PostgreSQL (the same server as `postgres`) -----------------------------
start_d11pg() {
  [ "${STATUS[postgres]:-}" = ok ] || start_postgres
  [ "${STATUS[postgres]:-}" = ok ] || { STATUS[d11-pg]="PostgreSQL: ${STATUS[postgres]:-not started}"; return; }
  [ -x "$D11" ] || { STATUS[d11-pg]="bin/d11 is missing"; return; }
  "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$P_PG" -U postgres -c "CREATE DATABASE d11pg" postgres >/dev/null 2>&1
  mkdir -p "$TMP/d11pg"
  # shellcheck disable=SC2086  # D11PG_ARGS: several flags on purpose
  "$D11" up --data "$TMP/d11pg" --listen "127.0.0.1:$P_D11PG" $D11PG_ARGS \
    --store "postgresql://postgres@127.0.0.1:$P_PG/d11pg" >"$TMP/d11pg.log" 2>&1 &
  PIDS[d11-pg]=$!
  if ! wait_http "$P_D11PG" /healthz 60 "${PIDS[d11-pg]}"; then
    STATUS[d11-pg]="d11 up --store did not answer /healthz (log: $(tail -c 300 "$TMP/d11pg.log" | tr '\n' ' '))"
    return
  fi
  for _ in $(seq 1 50); do [ -s "$TMP/d11pg/admin.token" ] && break; sleep 0.1; done
  D11PG_TOKEN=$(tr -d ' \n\r\t' <"$TMP/d11pg/admin.token")
  if ! "$D11" bench --url "http://127.0.0.1:$P_D11PG" --token-file "$TMP/d11pg/admin.token" \
        --setup-only --skus 1 --sku-prefix CMP- --stock 1000000000000 --quiet >"$TMP/d11pg-setup.log" 2>&1 ||
     ! timeout 30 "$D11" bench --url "http://127.0.0.1:$P_D11PG" --token-file "$TMP/d11pg/admin.token" \
        --requests 20 --connections 2 --skus 1 --sku-prefix CMP- --slo-errors 0 --quiet >"$TMP/d11pg-smoke.log" 2>&1; then
    STATUS[d11-pg]="setup or smoke test failed: $(tail -c 300 "$TMP/d11pg-smoke.log" "$TMP/d11pg-setup.log" 2>/dev/null | tr '\n' ' ')"
    return
  fi
  STATUS[d11-pg]=ok
}
# CPU ticks (utime+stime+cutime+cstime) of a process tree
tree_ticks() {
  local pid=$1 t=0 k
  [ -r "/proc/$pid/stat" ] || { echo 0; return; }
  t=$(awk '{sub(/.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
  for k in $(pgrep -P "$pid" 2>/dev/null); do t=$((t + $(tree_ticks "$k"))); done
  echo "$t"
}
cpu_of() {  # cpu_of SYSTEM: ticks of its server(s)
  case $1 in
    d11) tree_ticks "${PIDS[d11]}" ;;
    postgres) tree_ticks "${PIDS[postgres]}" ;;
    d11-pg) echo $(( $(tree_ticks "${PIDS[d11-pg]}") + $(tree_ticks "${PIDS[postgres]}") )) ;;
    *) echo 0 ;;
  esac
}
with_cpu() {  # with_cpu SYSTEM CMD...: run CMD, append server µs per order to $TMP/cpu.SYSTEM
  local sys=$1 t0 t1 n0 n1 okps
  shift
  n0=$(wc -l <"$TMP/res.$sys" 2>/dev/null || echo 0)
  t0=$(cpu_of "$sys")
  "$@" || return 1
  t1=$(cpu_of "$sys")
  n1=$(wc -l <"$TMP/res.$sys" 2>/dev/null || echo 0)
  [ "$n1" -gt "$n0" ] || return 0
  okps=$(tail -1 "$TMP/res.$sys" | awk '{print $1}')
  awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" -v r="$okps" -v d="$DURATION" \
    'BEGIN{ if (r > 0) printf "%.1f\n", (b - a) * 1e6 / hz / (r * d) }' >>"$TMP/cpu.$sys"
  log "$sys: server CPU $(tail -1 "$TMP/cpu.$sys") µs per order"
}

# ---- start: Redis -----------------------------------------------------------------------
REDIS_LUA='local s = tonumber(redis.call("GET", KEYS[1]) or "0")
if s < 1 then return 0 end
redis.call("DECRBY", KEYS[1], 1)
redis.call("XADD", KEYS[2], "*", "user_id", ARGV[1], "sku", "CMP-0", "quantity", "1")
return 1'
declare -A REDIS_SHA=()
start_redis() {  # start_redis NAME PORT FSYNC
  local name=$1 port=$2 fsync=$3
  have redis-server && have redis-benchmark && have redis-cli || { STATUS[$name]="redis-server/redis-tools not installed"; return; }
  mkdir -p "$TMP/$name"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$TMP/$name" --appendonly yes \
    --appendfsync "$fsync" --save '' --daemonize no --protected-mode yes \
    --logfile "$TMP/$name.log" >/dev/null 2>&1 &
  PIDS[$name]=$!
  local ok=0
  for _ in $(seq 1 100); do
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && { ok=1; break; }
    alive "${PIDS[$name]}" || break
    sleep 0.1
  done
  [ $ok = 1 ] || { STATUS[$name]="redis did not start: $(tail -c 300 "$TMP/$name.log" | tr '\n' ' ')"; return; }
  redis-cli -h 127.0.0.1 -p "$port" set stock:1 1000000000000 >/dev/null
  REDIS_SHA[$name]=$(redis-cli -h 127.0.0.1 -p "$port" script load "$REDIS_LUA")
  [[ "${REDIS_SHA[$name]}" =~ ^[0-9a-f]{40}$ ]] || { STATUS[$name]="SCRIPT LOAD failed: ${REDIS_SHA[$name]}"; return; }
  STATUS[$name]=ok
}

# ---- one measurement per system ---------------------------------------------------------
# Each appends "ok_per_s p50_ms p99_ms" (p50/p99 "-" when the tool has none) to $TMP/res.<system>.
to_ms() {  # wrk latency "560.00us" / "1.20ms" / "2.00s" -> ms
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
                        else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
                        else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 }
                        else print "-" }'
}
run_wrk() {  # run_wrk SYSTEM PORT TOKEN ROUND
  local sys=$1 port=$2 token=$3 round=$4 out="$TMP/wrk.$1.$4.txt"
  D11_TOKEN="$token" D11_SKU=CMP-0 D11_RUN="r$round-$RANDOM$RANDOM" \
    timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency \
    -s "$LUA" "http://127.0.0.1:$port/" >"$out" 2>&1
  local reqs secs non2xx p50 p99
  reqs=$(awk '/requests in/ {print $1}' "$out")
  secs=$(awk '/requests in/ {gsub(/s,?$/,"",$4); print $4}' "$out")
  non2xx=$(awk -F': *' '/Non-2xx/ {print $2}' "$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' "$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$out")")
  if [ -z "$reqs" ] || [ -z "$secs" ]; then
    log "$sys round $round: wrk failed: $(tail -c 200 "$out" | tr '\n' ' ')"; return 1
  fi
  local okps
  okps=$(awk -v r="$reqs" -v n="${non2xx:-0}" -v s="$secs" 'BEGIN{printf "%.0f", (r-n)/s}')
  echo "$okps $p50 $p99" >>"$TMP/res.$sys"
  log "$sys round $round: $okps 2xx/s (requests $reqs, non-2xx ${non2xx:-0}), p50 $p50 ms, p99 $p99 ms"
}
run_pg() {
  local round=$1 out="$TMP/pgbench.$1.txt"
  timeout $((DURATION + 60)) "$PGBIN/pgbench" -n -c "$PG_CLIENTS" -j 2 -T "$DURATION" -f "$TMP/pg-order.sql" \
    -h 127.0.0.1 -p "$P_PG" -U postgres bench >"$out" 2>&1
  local tps lat failed
  tps=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$out")
  lat=$(awk '/^latency average/ {print $4}' "$out")
  failed=$(awk '/number of failed transactions/ {print $5}' "$out")
  [ -n "$tps" ] || { log "postgres round $round: pgbench failed: $(tail -c 200 "$out" | tr '\n' ' ')"; return 1; }
  echo "$tps - -" >>"$TMP/res.postgres"
  log "postgres round $round: $tps tx/s (avg latency ${lat:-?} ms, failed ${failed:-0})"
}
run_redis() {  # run_redis NAME PORT ROUND
  local name=$1 port=$2 round=$3 out="$TMP/redis.$1.$3.csv" sha=${REDIS_SHA[$1]} n rps
  # redis-benchmark runs by count: size the run to ~DURATION s from a short probe
  n=$(cat "$TMP/redis-n.$name" 2>/dev/null)
  if [ -z "$n" ]; then
    timeout 60 redis-benchmark -h 127.0.0.1 -p "$port" -c "$REDIS_CLIENTS" -n 5000 -r 1000000 --csv \
      EVALSHA "$sha" 2 stock:1 orders __rand_int__ >"$out.probe" 2>&1
    rps=$(awk -F'","' 'NR==2 {gsub(/"/,"",$2); print $2}' "$out.probe")
    n=$(awk -v r="${rps:-1000}" -v d="$DURATION" 'BEGIN{n=int(r*d); if(n<5000)n=5000; if(n>5000000)n=5000000; print n}')
    echo "$n" >"$TMP/redis-n.$name"
  fi
  timeout $((DURATION * 4 + 30)) redis-benchmark -h 127.0.0.1 -p "$port" -c "$REDIS_CLIENTS" -n "$n" -r 1000000 --csv \
    EVALSHA "$sha" 2 stock:1 orders __rand_int__ >"$out" 2>&1
  local p50 p99
  rps=$(awk -F'","' 'NR==2 {gsub(/"/,"",$2); printf "%.0f", $2}' "$out")
  p50=$(awk -F'","' 'NR==2 {print $5}' "$out")
  p99=$(awk -F'","' 'NR==2 {print $7}' "$out")
  [ -n "$rps" ] || { log "$name round $round: redis-benchmark failed: $(tail -c 200 "$out" | tr '\n' ' ')"; return 1; }
  echo "$rps ${p50:--} ${p99:--}" >>"$TMP/res.$name"
  log "$name round $round: $rps EVALSHA/s (n=$n), p50 ${p50:-?} ms, p99 ${p99:-?} ms"
}

# ---- go -----------------------------------------------------------------------------------
for s in "${SYSTEMS[@]}"; do
  log "starting $s"
  case $s in
    d11) start_d11 ;;
    nginx) start_nginx ;;
    postgres) start_postgres ;;
    redis-always) start_redis redis-always "$P_RA" always ;;
    redis-everysec) start_redis redis-everysec "$P_RE" everysec ;;
    d11-pg) start_d11pg ;;
  esac
  [ "${STATUS[$s]:-}" = ok ] || log "$s NOT MEASURED: ${STATUS[$s]:-unknown}"
done

for round in $(seq 1 "$ROUNDS"); do
  for s in "${SYSTEMS[@]}"; do
    [ "${STATUS[$s]}" = ok ] || continue
    if [ $(( $(date +%s) - T_START + DURATION )) -gt "$BUDGET" ]; then
      log "time budget ($BUDGET s) reached: no more runs"; break 2
    fi
    if ! alive "${PIDS[$s]}"; then
      STATUS[$s]="server exited during the runs"; log "$s: ${STATUS[$s]}"; continue
    fi
    case $s in
      d11) with_cpu d11 run_wrk d11 "$P_D11" "$D11_TOKEN_VALUE" "$round" ;;
      nginx) run_wrk nginx "$P_NGINX" "" "$round" ;;
      postgres) with_cpu postgres run_pg "$round" ;;
      redis-always) run_redis redis-always "$P_RA" "$round" ;;
      redis-everysec) run_redis redis-everysec "$P_RE" "$round" ;;
      d11-pg) with_cpu d11-pg run_wrk d11-pg "$P_D11PG" "$D11PG_TOKEN" "$round" ;;
    esac
  done
done

# ---- report ---------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
col() { [ -s "$TMP/res.$1" ] && awk -v c="$2" '$c != "-" {print $c}' "$TMP/res.$1" | median || echo "-"; }
runs() { [ -s "$TMP/res.$1" ] && wc -l <"$TMP/res.$1" || echo 0; }
all_runs() { [ -s "$TMP/res.$1" ] && awk '{printf "%s%s", (NR>1?", ":""), $1}' "$TMP/res.$1" || echo "-"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="-" || b=="-" || b+0==0) print "-"; else printf "%.2fx", a/b }'; }

declare -A WHAT=(
  [d11]="d11 up (durability sync), POST /v1/orders, 1 hot SKU, wrk -t1 -c$CONNS"
  [nginx]="nginx 1 worker, static 201 JSON, same wrk script"
  [postgres]="PostgreSQL, synchronous_commit=on, 1 hot SKU, pgbench -c $PG_CLIENTS"
  [redis-always]="Redis Lua check+DECRBY+XADD, appendfsync always, -c $REDIS_CLIENTS"
  [redis-everysec]="same, appendfsync everysec (may lose ~1 s)"
  [d11-pg]="d11 up --store PostgreSQL (same server as postgres), same wrk script"
)
REPORT="$TMP/report.md"
{
  echo "| system | what | orders/s (median) | p50 ms | p99 ms | runs (orders/s each) |"
  echo "|---|---|---:|---:|---:|---|"
  for s in "${SYSTEMS[@]}"; do
    if [ "$(runs "$s")" -gt 0 ]; then
      echo "| $s | ${WHAT[$s]} | $(col "$s" 1) | $(col "$s" 2) | $(col "$s" 3) | $(all_runs "$s") |"
    else
      echo "| $s | ${WHAT[$s]} | not measured: ${STATUS[$s]:-no successful run} | | | |"
    fi
  done
  echo
  D=$(col d11 1)
  echo "| ratio | value |"
  echo "|---|---:|"
  echo "| d11 / nginx | $(ratio "$D" "$(col nginx 1)") |"
  echo "| d11 / PostgreSQL | $(ratio "$D" "$(col postgres 1)") |"
  echo "| d11 / Redis-always | $(ratio "$D" "$(col redis-always 1)") |"
  echo "| d11 / Redis-everysec | $(ratio "$D" "$(col redis-everysec 1)") |"
  echo "| d11-pg / PostgreSQL (naive hot-SKU transaction, same server) | $(ratio "$(col d11-pg 1)" "$(col postgres 1)") |"
  echo "| d11-pg / d11 (SQLite) | $(ratio "$(col d11-pg 1)" "$D") |"
  echo
  echo "| system | server CPU µs per order (median) | runs |"
  echo "|---|---:|---|"
  for s in d11 d11-pg postgres; do
    [ -s "$TMP/cpu.$s" ] || continue
    echo "| $s | $(median <"$TMP/cpu.$s") | $(paste -sd, "$TMP/cpu.$s" | sed 's/,/, /g') |"
  done
} >"$REPORT"

CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
# fsync cost of the disk under the data dirs: 500 x 4 KiB writes with O_DSYNC
FSYNC_US=$(dd if=/dev/zero of="$TMP/fsync.probe" bs=4k count=500 oflag=dsync 2>&1 |
           awk '/copied/ {for (i=1;i<=NF;i++) if ($i=="s,") printf "%.0f", $(i-1)*1e6/500}')
rm -f "$TMP/fsync.probe"
FS=$(df -T "$TMP" | awk 'NR==2 {print $2}')
{
  echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) — bench/compare.sh"
  echo
  echo "- machine: $(nproc) cores, ${CPU:-unknown CPU}, kernel $(uname -r); data dirs on $FS, one 4 KiB O_DSYNC write ≈ ${FSYNC_US:-?} µs"
  echo "- load average (1/5/15 min) at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (the runs themselves keep both cores busy, ≈ 2-3; a high value at start means other work, which rounds alternate to spread over every system)"
  echo "- command: \`bench/compare.sh${ARGS_ORIG:+ $ARGS_ORIG}\` ($ROUNDS rounds x ${DURATION} s per system, alternating)"
  echo "- versions: $(nginx -v 2>&1 | sed 's/.*version: //'), $("$PGBIN/postgres" --version 2>/dev/null), $(redis-server --version 2>/dev/null | awk '{print $3}'), $(wrk --version 2>&1 | head -1 | awk '{print $1, $2}')"
  echo
  cat "$REPORT"
  echo
  echo "p50/p99: wrk --latency (closed loop, so subject to coordinated omission) for d11 and nginx;"
  echo "redis-benchmark's own for Redis; pgbench prints only an average."
} >"$TMP/section.md"

echo
cat "$TMP/section.md"
if [ -n "$MARKDOWN" ]; then cp "$TMP/section.md" "$MARKDOWN"; log "wrote $MARKDOWN"; fi

rc=0
for s in "${SYSTEMS[@]}"; do [ "$(runs "$s")" -gt 0 ] || rc=1; done
if [[ " ${SYSTEMS[*]} " == *" d11 "* ]] && [ "$(runs d11)" -eq 0 ]; then
  echo "NOTE: d11 was not measured: ${STATUS[d11]:-no successful run}" >&2
fi
exit $rc
