#!/usr/bin/env bash
# What shadow traffic costs the client: one cutover, one route to an nginx
# backend, its mirror switched between rows through the admin API — off,
# to a shadow that answers at once (nginx), one that answers after
# SLOW_DELAY (a small asyncio server), and one that is dead (nothing
# listens). wrk (PROTOCOL=h1, HTTP/1.1) or h2load (PROTOCOL=h2c: HTTP/2,
# prior knowledge, 10 streams per connection; percentiles from its
# per-request log) loads the route for DURATION per row; rows alternate over
# ROUNDS rounds, so each mode's figures come from several moments of the
# same run. See "Shadow traffic" in docs/benchmarks.md.
#
# Per row: the client's p50, p99 and requests/s (wrk), cutover's CPU per
# request (user + kernel time from /proc over the row, divided by the
# requests), and the copies the mirror sent and skipped in the row.
#
#   benches/mirror.sh                                 # 20 % and 100 %, c20 and c200
#   ROUNDS=1 DURATION=3s PERCENTS=20 CONNECTIONS=20 benches/mirror.sh
#   PROTOCOL=h2c CONNECTIONS=20 benches/mirror.sh        # an HTTP/2 client
#
# Needs root (or the packages already installed) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
PERCENTS=${PERCENTS:-"20 100"}
CONNECTIONS=${CONNECTIONS:-"20 200"}
MODES=${MODES:-"off fast slow dead"}
SLOW_DELAY=${SLOW_DELAY:-3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PROTOCOL=${PROTOCOL:-h1}

source benches/common.sh
install_missing nginx=nginx-light wrk=wrk curl=curl taskset=util-linux python3=python3 \
  h2load=nghttp2-client


BODY=$(printf 'x%.0s' $(seq 1 95))
backend=$(free_port)
fast=$(free_port)
slow=$(free_port)
dead=$(free_port)
cat >"$work/backends.conf" <<EOF
worker_processes 1; pid $work/backends.pid; error_log stderr error; daemon off;
events { worker_connections 30000; }
http {
  access_log off;
  client_body_temp_path $work;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$backend;
    listen 127.0.0.1:$fast;
    location / { default_type text/plain; return 200 "$BODY
"; }
  }
}
EOF
taskset -c "$PROXY_CPU" nginx -p "$work" -c "$work/backends.conf" 2>"$work/backends.stderr" &
pids+=($!)

# The slow shadow: answers every request after SLOW_DELAY seconds,
# keep-alive, as many at once as come.
cat >"$work/slow.py" <<'EOF'
import asyncio, sys
port, delay = int(sys.argv[1]), float(sys.argv[2])
body = b"x" * 95 + b"\n"
answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay)
            writer.write(answer)
            await writer.drain()
    except Exception:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
EOF
taskset -c "$PROXY_CPU" python3 "$work/slow.py" "$slow" "$SLOW_DELAY" 2>"$work/slow.stderr" &
pids+=($!)

port=$(free_port)
admin=$(free_port)
cat >"$work/cutover.toml" <<EOF
[[listener]]
bind = "127.0.0.1:$port"
[admin]
bind = "127.0.0.1:$admin"
[state]
dir = "$work/cutover-state"
[proxy]
workers = ${WORKERS:-1}
[[route]]
name = "app"
split = { app = 1 }
[pool.app]
upstreams = [ { addr = "127.0.0.1:$backend" } ]
[pool.fast]
upstreams = [ { addr = "127.0.0.1:$fast" } ]
[pool.slow]
upstreams = [ { addr = "127.0.0.1:$slow" } ]
[pool.dead]
upstreams = [ { addr = "127.0.0.1:$dead" } ]
EOF
CUTOVER_LOG=error taskset -c "$PROXY_CPU" "$CUTOVER" run -c "$work/cutover.toml" \
  >/dev/null 2>"$work/cutover.stderr" &
cutover_pid=$!
pids+=("$cutover_pid")
wait_http "$backend"
wait_http "$port"

# Sets the route's mirror: MODE's pool at PERCENT, or none.
mirror() {
  local pool=$1 percent=$2
  [[ $pool == off ]] && pool=fast percent=0
  curl -sf -X PUT -H 'content-type: application/json' \
    -d "{\"pool\": \"$pool\", \"percent\": $percent}" \
    "http://127.0.0.1:$admin/api/v1/routes/app/mirror" >/dev/null
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$cutover_pid/stat"; }

# Copies counted so far, by outcome: "sent skipped" (sent = same +
# differs + failed).
copies() {
  curl -sf "http://127.0.0.1:$admin/api/v1/status" | python3 -c '
import json, sys
status = json.load(sys.stdin)
counts = {}
for route in status["routes"]:
    for k, v in ((route.get("mirror") or {}).get("counts") or {}).items():
        counts[k] = counts.get(k, 0) + v
print(counts.get("same", 0) + counts.get("differs", 0) + counts.get("failed", 0), counts.get("skipped", 0))'
}

# One row's load: prints "requests req/s p50_ms p99_ms".
load_row() {
  local conns=$1 out
  if [[ $PROTOCOL == h2c ]]; then
    rm -f "$work/h2load.log"
    taskset -c "$LOAD_CPU" h2load -c"$conns" -m10 -D"$DURATION" --log-file="$work/h2load.log" \
      "http://127.0.0.1:$port/" >/dev/null
    python3 - "$work/h2load.log" "$DURATION" <<'EOF'
import sys
times = sorted(int(line.split()[2]) for line in open(sys.argv[1]) if line.strip())
seconds = float(sys.argv[2].rstrip("s"))
q = lambda p: times[min(len(times) - 1, int(p * len(times)))] / 1000
print(len(times), f"{len(times) / seconds:.0f}", f"{q(0.5):.2f}", f"{q(0.99):.2f}")
EOF
  else
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"$DURATION" --latency "http://127.0.0.1:$port/")
    echo "$(awk '/requests in/ {print $1}' <<<"$out") $(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out") $(ms 50% <<<"$out") $(ms 99% <<<"$out")"
  fi
}

hz=$(getconf CLK_TCK)
results="$work/rows"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for percent in $PERCENTS; do
    for conns in $CONNECTIONS; do
      for mode in $MODES; do
        mirror "$mode" "$percent"
        # A copy still in flight from the row before belongs to it: let
        # a slow shadow's finish first.
        [[ $mode == slow || $mode == dead ]] || sleep "$SLOW_DELAY"
        read -r sent0 skipped0 < <(copies)
        ticks0=$(cpu_ticks)
        read -r requests rps p50 p99 < <(load_row "$conns")
        ticks1=$(cpu_ticks)
        read -r sent1 skipped1 < <(copies)
        us=$(python3 -c "print(f'{($ticks1 - $ticks0) / $hz * 1e6 / max($requests, 1):.1f}')")
        echo "$percent $conns $mode $p50 $p99 $rps $us $((sent1 - sent0)) $((skipped1 - skipped0))" >>"$results"
        echo "round $round: $percent % c$conns $mode: p50 $p50 ms, p99 $p99 ms, $rps req/s, $us µs CPU/req" >&2
      done
    done
  done
done
mirror off 0

# Medians per (percent, connections, mode).
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    percent, conns, mode, *figures = line.split()
    rows.setdefault((int(percent), int(conns), mode), []).append([float(f) for f in figures])
print("| mirror | conns | mode | client p50 ms | client p99 ms | req/s | cutover CPU µs/req | copies sent | skipped | p99 / fast p99 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (percent, conns, mode), samples in rows.items():
    med = [statistics.median(col) for col in zip(*samples)]
    fast = rows.get((percent, conns, "fast"))
    ratio = f"{med[1] / statistics.median(s[1] for s in fast):.2f}x" if fast else "–"
    print(f"| {percent} % | {conns} | {mode} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.0f} | {med[3]:.1f} | {med[4]:.0f} | {med[5]:.0f} | {ratio} |")
EOF
