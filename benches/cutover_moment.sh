#!/usr/bin/env bash
# The cutover moment under load, side by side with HAProxy and nginx on the
# same origins in the same run. See "The cutover moment" in
# docs/benchmarks.md. Two scenarios:
#
#   slow  a pool of two origins, one ten times slower than the other
#         (FAST_MS, 10 x FAST_MS): cutover with balance = "p2c" and
#         "random", HAProxy leastconn and roundrobin, nginx least_conn.
#         Per row: req/s, p50, p99, and the slow origin's share.
#   cold  all traffic lands at once on a fresh green pool: two origins
#         that answer 503 beyond LIMIT requests at once and are slow for
#         their first WARM seconds (COLD_MS, then FAST_MS), started anew
#         for every row. cutover without and with max_in_flight = LIMIT
#         (queue, p2c), HAProxy without and with maxconn LIMIT / maxqueue,
#         nginx without and with max_conns LIMIT (nginx has no queue).
#         Per row: non-2xx answers, req/s, p50, p99, and the time to
#         steady state: from the first request to the start of the first
#         250 ms window after which every window's p99 is within 1.5x the
#         last 2 s's and no answer fails (h2load --h1, per-request log).
#
# The origins are small asyncio servers (python3), one process each. wrk
# runs CONNECTIONS connections for DURATION per row; rows alternate over
# ROUNDS rounds and the table shows medians. Loopback only, bounded.
#
#   benches/cutover_moment.sh
#   ROUNDS=1 DURATION=5s SCENARIOS=slow benches/cutover_moment.sh
#   SCENARIOS=cold COLD_TARGETS="cutover-queue haproxy-maxconn" ROUNDS=5 benches/cutover_moment.sh
#
# Needs root (or the packages already installed) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-32}
SCENARIOS=${SCENARIOS:-"slow cold"}
FAST_MS=${FAST_MS:-2}
COLD_MS=${COLD_MS:-20}
WARM=${WARM:-3}
LIMIT=${LIMIT:-8}
SLOW_TARGETS=${SLOW_TARGETS:-"cutover-p2c cutover-random haproxy-leastconn haproxy-roundrobin nginx-least-conn"}
COLD_TARGETS=${COLD_TARGETS:-"cutover-p2c cutover-queue haproxy-leastconn haproxy-maxconn nginx-least-conn nginx-max-conns"}

source benches/common.sh
install_missing nginx=nginx-light haproxy=haproxy wrk=wrk curl=curl python3=python3 \
  h2load=nghttp2-client


# An origin: answers after DELAY ms (COLD ms for its first WARM s), at
# most LIMIT requests at once (0: any; beyond, 503 at once), and says how
# many it answered at /__hits.
cat >"$work/origin.py" <<'EOF'
import asyncio, sys, time
port, delay, cold, warm, limit = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
started = time.monotonic()
body = b"x" * 95 + b"\n"
ok = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
busy = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nbusy\n"
state = {"hits": 0, "active": 0}
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /__hits"):
                text = b"%d\n" % state["hits"]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(text), text))
                await writer.drain()
                continue
            if limit and state["active"] >= limit:
                writer.write(busy)
                await writer.drain()
                continue
            state["active"] += 1
            state["hits"] += 1
            cold_now = time.monotonic() - started < warm
            await asyncio.sleep((cold if cold_now else delay) / 1000)
            state["active"] -= 1
            writer.write(ok)
            await writer.drain()
    except Exception:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
EOF

# Starts an origin on port $origin_port. Arguments: delay, cold, warm,
# limit. (Not in a command substitution: the process must be this
# shell's child.)
origin_pids=()
origin_port=""
start_origin() {
  origin_port=$(free_port)
  python3 "$work/origin.py" "$origin_port" "$@" >/dev/null 2>>"$work/origin.stderr" &
  origin_pids+=($!)
  pids+=($!)
  wait_http "$origin_port"
}
stop_origins() {
  for p in "${origin_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${origin_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  origin_pids=()
}
hits() { curl -s "http://127.0.0.1:$1/__hits"; }

# Starts TARGET (cutover-p2c, cutover-random, cutover-queue, haproxy-*,
# nginx-*) in front of origins $2 and $3 on port $port.
proxy_pid=""
port=""
start_proxy() {
  local target=$1 a=$2 b=$3 admin
  port=$(free_port)
  admin=$(free_port)
  case $target in
    cutover-*)
      local pool_extra=""
      case $target in
        cutover-p2c) pool_extra='balance = "p2c"' ;;
        cutover-random) pool_extra='balance = "random"' ;;
        cutover-queue) pool_extra="max_in_flight = $LIMIT
max_queue = 1000
queue_timeout = \"5s\"" ;;
      esac
      cat >"$work/cutover.toml" <<EOF
[[listener]]
bind = "127.0.0.1:$port"
[admin]
bind = "127.0.0.1:$admin"
[state]
dir = "$work/cutover-state-$port"
[proxy]
workers = 1
[[route]]
name = "app"
split = { green = 1 }
[pool.green]
upstreams = [ { addr = "127.0.0.1:$a" }, { addr = "127.0.0.1:$b" } ]
outlier = { consecutive_failures = 0 }
$pool_extra
EOF
      CUTOVER_LOG=error "$CUTOVER" run -c "$work/cutover.toml" >/dev/null 2>"$work/cutover.stderr" &
      ;;
    haproxy-*)
      local balance=leastconn server_extra=""
      case $target in
        haproxy-roundrobin) balance=roundrobin ;;
        haproxy-maxconn) server_extra="maxconn $LIMIT maxqueue 1000" ;;
      esac
      cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout queue 5s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$port
  default_backend green
backend green
  balance $balance
  http-reuse always
  server a 127.0.0.1:$a $server_extra
  server b 127.0.0.1:$b $server_extra
EOF
      haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>"$work/haproxy.stderr" &
      ;;
    nginx-*)
      local server_extra=""
      [[ $target == nginx-max-conns ]] && server_extra="max_conns=$LIMIT"
      cat >"$work/nginx.conf" <<EOF
worker_processes 1; pid $work/nginx-$port.pid; error_log stderr error; daemon off;
events { worker_connections 10000; }
http {
  access_log off;
  upstream green {
    least_conn;
    server 127.0.0.1:$a $server_extra;
    server 127.0.0.1:$b $server_extra;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://green;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream off;
    }
  }
}
EOF
      nginx -p "$work" -c "$work/nginx.conf" >/dev/null 2>"$work/nginx.stderr" &
      ;;
  esac
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_http "$port"
}
stop_proxy() {
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
}

results="$work/rows"
: >"$results"
# One row: the proxy's answers under wrk. Prints "rps p50 p99 non2xx".
measure() {
  local port=$1 out
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
  local rps p50 p99 bad
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(ms 50% <<<"$out")
  p99=$(ms 99% <<<"$out")
  bad=$(awk '/Non-2xx or 3xx responses/ {print $NF}' <<<"$out")
  # Socket errors (connect, read, write, timeout) count as failed too.
  local errors
  errors=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' <<<"$out")
  echo "$rps $p50 $p99 $(( ${bad:-0} + ${errors:-0} ))"
}

# One cold row: the proxy's answers under h2load --h1 (the same load as
# wrk's, one request at a time per connection), from its per-request
# log. Prints "rps p50 p99 failed steady_s".
measure_cold() {
  local port=$1 out failed
  rm -f "$work/cold.log"
  out=$(h2load --h1 -c"$CONNECTIONS" -D"$DURATION" --log-file="$work/cold.log" "http://127.0.0.1:$port/")
  failed=$(awk '/^requests:/ {print $10 + $12 + $14}' <<<"$out")
  python3 - "$work/cold.log" "${failed:-0}" <<'EOF'
import sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
rows = [(int(start), int(status), int(micros)) for start, status, micros, *_ in rows]
first = min(r[0] for r in rows)
last = max(r[0] + r[2] for r in rows)
seconds = (last - first) / 1e6
times = sorted(r[2] for r in rows)
q = lambda ts, p: ts[min(len(ts) - 1, int(p * len(ts)))] / 1000
bad = sum(1 for r in rows if not 200 <= r[1] < 300) + int(sys.argv[2])
windows = {}
for start, status, micros in rows:
    windows.setdefault((start - first) // 250_000, []).append((micros, 200 <= status < 300))
keys = sorted(windows)
tail = sorted(m for k in keys if k >= keys[-1] - 7 for m, _ in windows[k])
steady_p99 = q(tail, 0.99)
ok = lambda k: all(good for _, good in windows[k]) and q(sorted(m for m, _ in windows[k]), 0.99) <= 1.5 * steady_p99
# "never": some answer failed or was slow up to the end.
steady = next((f"{k * 0.25:.2f}" for i, k in enumerate(keys) if all(ok(later) for later in keys[i:])), "never")
print(f"{len(rows) / seconds:.0f} {q(times, 0.5):.2f} {q(times, 0.99):.2f} {bad} {steady}")
EOF
}

for round in $(seq 1 "$ROUNDS"); do
  if [[ " $SCENARIOS " == *" slow "* ]]; then
    start_origin "$FAST_MS" "$FAST_MS" 0 0
    fast=$origin_port
    start_origin $((FAST_MS * 10)) $((FAST_MS * 10)) 0 0
    slow=$origin_port
    for target in $SLOW_TARGETS; do
      start_proxy "$target" "$fast" "$slow"
      f0=$(hits "$fast") s0=$(hits "$slow")
      read -r rps p50 p99 bad < <(measure "$port")
      f1=$(hits "$fast") s1=$(hits "$slow")
      stop_proxy
      share=$(python3 -c "d = ($f1 - $f0) + ($s1 - $s0); print(f'{100 * ($s1 - $s0) / max(d, 1):.1f}')")
      echo "slow $target $rps $p50 $p99 $bad $share -" >>"$results"
      echo "round $round: slow $target: $rps req/s, p50 $p50 ms, p99 $p99 ms, slow share $share %" >&2
    done
    stop_origins
  fi
  if [[ " $SCENARIOS " == *" cold "* ]]; then
    for target in $COLD_TARGETS; do
      # Fresh, cold origins for every row: the move lands on them at once.
      start_origin "$FAST_MS" "$COLD_MS" "$WARM" "$LIMIT"
      a=$origin_port
      start_origin "$FAST_MS" "$COLD_MS" "$WARM" "$LIMIT"
      b=$origin_port
      start_proxy "$target" "$a" "$b"
      read -r rps p50 p99 bad steady < <(measure_cold "$port")
      stop_proxy
      stop_origins
      echo "cold $target $rps $p50 $p99 $bad - $steady" >>"$results"
      echo "round $round: cold $target: $rps req/s, p50 $p50 ms, p99 $p99 ms, $bad failed, steady after $steady s" >&2
    done
  fi
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    scenario, target, *figures = line.split()
    rows.setdefault((scenario, target), []).append(figures)
print("| scenario | proxy | req/s | p50 ms | p99 ms | non-2xx / errors | slow origin's share % | steady after s |")
print("|---|---|---|---|---|---|---|---|")
def median(col):
    if col[0] == "-":
        return "–"
    if "never" in col:
        return "never"
    return statistics.median(float(v) for v in col)
for (scenario, target), samples in rows.items():
    cols = list(zip(*samples))
    med = [statistics.median(float(v) for v in col) for col in cols[:4]]
    share, steady = median(cols[4]), median(cols[5])
    share = share if share == "–" else f"{share:.1f}"
    steady = steady if isinstance(steady, str) else f"{steady:.2f}"
    print(f"| {scenario} | {target} | {med[0]:.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.0f} | {share} | {steady} |")
EOF
