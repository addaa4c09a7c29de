#!/usr/bin/env bash
# Soak: cutover under steady load while everything that moves traffic
# happens again and again — a split change every 5 s, a reload every 30 s,
# a binary upgrade every 2 minutes, one backend killed and restarted every
# minute — then the failed requests (must be 0), and RSS and open fds at
# start and end (must not grow beyond noise). The load is HTTP/1.1 (wrk,
# CONNECTIONS connections) and HTTP/2 (H2_CLIENTS prior-knowledge
# connections of benches/support/h2_soak.rs, which resends what a GOAWAY
# says was not processed, as browsers do). Loopback only, bounded by
# DURATION. Not run in CI; figures go to docs/benchmarks.md.
#
#   benches/soak.sh                    # 10 minutes
#   DURATION=150 benches/soak.sh       # a shorter run
#
# Needs root (or the packages installed) for apt-get: nginx-light, wrk.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
CONNECTIONS=${CONNECTIONS:-8}
H2_CLIENTS=${H2_CLIENTS:-8}

source benches/common.sh
install_missing nginx=nginx-light wrk=wrk curl=curl
cargo build --release --quiet --example h2_soak

# Two backends, one nginx each, so one can die and come back. Sets
# `started` to the new nginx's pid (no command substitution: its subshell
# would run the EXIT trap).
start_backend() { # name port
  cat >"$work/$1.conf" <<CONF
worker_processes 1; pid $work/$1.pid; error_log stderr error; daemon off;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$2; location / { return 200 "$1\n"; } } }
CONF
  nginx -p "$work" -c "$work/$1.conf" 2>>"$work/$1.stderr" &
  started=$!
  pids+=("$started")
}
blue_port=$(free_port)
green_port=$(free_port)
start_backend blue "$blue_port"
start_backend green "$green_port"
green_pid=$started

port=$(free_port)
admin_port=$(free_port)
cat >"$work/cutover.toml" <<CONF
[[listener]]
bind = "127.0.0.1:$port"
[admin]
bind = "127.0.0.1:$admin_port"
[state]
dir = "$work/state"
[[route]]
name = "app"
split = { blue = 90, green = 10 }
[pool.blue]
health = { path = "/", interval = "1s", timeout = "500ms", rise = 1, fall = 1 }
upstreams = [ { addr = "127.0.0.1:$blue_port" } ]
[pool.green]
health = { path = "/", interval = "1s", timeout = "500ms", rise = 1, fall = 1 }
upstreams = [ { addr = "127.0.0.1:$green_port" } ]
CONF
"$CUTOVER" run -c "$work/cutover.toml" 2>"$work/cutover.log" &
pids+=($!)
admin="http://127.0.0.1:$admin_port"
for _ in $(seq 100); do
  curl -sf "$admin/readyz" >/dev/null && break
  sleep 0.1
done
ctl() { "$CUTOVER" ctl --admin "$admin" "$@" >/dev/null; }
serving_pid() { curl -sf "$admin/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }
usage() { # pid → "RSS_KiB FDS"
  echo "$(awk '/VmRSS/ {print $2}' "/proc/$1/status") $(ls "/proc/$1/fd" | wc -l)"
}

sleep 2
read -r rss_start fds_start <<<"$(usage "$(serving_pid)")"
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
target/release/examples/h2_soak "http://127.0.0.1:$port/" "$H2_CLIENTS" "$DURATION" \
  >"$work/h2.txt" 2>"$work/h2.stderr" &
h2_pid=$!
pids+=("$h2_pid")

start=$SECONDS
splits=0 reloads=0 upgrades=0 kills=0
while ((SECONDS - start < DURATION - 5)); do
  sleep 5
  t=$((SECONDS - start))
  if ((splits % 2)); then ctl split app blue=90 green=10; else ctl split app blue=50 green=50; fi
  splits=$((splits + 1))
  if ((t % 30 < 5)); then ctl reload && reloads=$((reloads + 1)); fi
  if ((t % 60 >= 30 && t % 60 < 35)); then
    # The green backend dies; health checks take it out; it comes back.
    kill "$green_pid"; wait "$green_pid" 2>/dev/null || true
    sleep 2
    start_backend green "$green_port"
    green_pid=$started
    kills=$((kills + 1))
  fi
  if ((t % 120 >= 115)); then ctl upgrade && upgrades=$((upgrades + 1)); fi
done
wait "$wrk_pid" || true
wait "$h2_pid" || true
serving=$(serving_pid)
read -r rss_end fds_end <<<"$(usage "$serving")"
# After an upgrade the serving process is no longer the one started here.
pids+=("$serving")

requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
socket=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$work/wrk.txt")
h2_requests=$(awk '/^requests/ {print $2}' "$work/h2.txt")
h2_failed=$(awk '/^requests/ {print $4}' "$work/h2.txt")
failed=$(( ${non2xx:-0} + ${socket:-0} + ${h2_failed:-1} ))
cat "$work/wrk.txt" "$work/h2.txt"
echo
echo "| duration | HTTP/1.1 requests | HTTP/2 requests | failed | split changes | reloads | upgrades | backend kills | RSS start → end | fds start → end |"
echo "|---|---|---|---|---|---|---|---|---|---|"
echo "| ${DURATION} s | $requests | ${h2_requests:-0} | $failed | $splits | $reloads | $upgrades | $kills | $((rss_start / 1024)) → $((rss_end / 1024)) MiB | $fds_start → $fds_end |"
if ((failed > 0)); then
  echo "FAILED REQUESTS: see $work (kept)"; trap - EXIT; exit 1
fi
