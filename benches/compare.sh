#!/usr/bin/env bash
# Load comparison: cutover against nginx and HAProxy as reverse proxies, on
# the same core, in the same run. See docs/benchmarks.md.
#
# Two nginx backends answer a 96-byte body. Each proxy gets one worker
# (thread or process), keep-alive to the backends, and is pinned with the
# backends to PROXY_CPU; wrk runs alone on LOAD_CPU. Targets are
# interleaved over ROUNDS rounds (the order rotates each round) and the
# table shows medians. Loopback only; every run is bounded by DURATION.
# cutover runs twice: plain, and as cutover-full with a sticky route and
# active health checks (wrk sends the sticky cookie on every request).
#
#   benches/compare.sh                       # 3 rounds x c50,c200 x 10s
#   ROUNDS=1 DURATION=3s benches/compare.sh  # a quick look
#
# Then, for each proxy, the resident memory of IDLE_CONNECTIONS idle
# keep-alive client connections, per 10,000 (benches/idle_memory.py;
# IDLE_CONNECTIONS=0 skips it), and of IDLE_TLS_CONNECTIONS idle ones over
# TLS (a self-signed certificate; IDLE_TLS_CONNECTIONS=0 skips it).
#
# Needs root (or the packages already installed) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"50 200"}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# cutover-full: cutover with a sticky route (every request carries a
# cookie to check) and active health checks, to see what they cost.
TARGETS=${TARGETS:-"cutover cutover-full nginx haproxy"}
# 9,000 fit every proxy under a 20,000-descriptor limit; figures are
# scaled to 10,000.
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-9000}
# Fewer over TLS: each costs a handshake to open.
IDLE_TLS_CONNECTIONS=${IDLE_TLS_CONNECTIONS:-3000}

# The work directory, process cleanup, free_port and the cutover build.
source benches/common.sh
install_missing nginx=nginx-light haproxy=haproxy wrk=wrk taskset=util-linux \
  openssl=openssl curl=curl

# Room for the idle connections: as many descriptors as we may have.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# HAProxy wants two descriptors per connection it may hold.
HAPROXY_MAXCONN=$(( ($(ulimit -n) - 100) / 2 ))

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1; what the servers said:" >&2
  tail -n 5 "$work"/*/stderr "$work"/*.stderr >&2 2>/dev/null || true
  exit 1
}

# One self-signed certificate for every proxy's TLS listener.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/bundle.pem"
declare -A tls_port_of

# 96 bytes of body.
BODY=$(printf 'x%.0s' $(seq 1 95))

start_nginx() { # name, config text
  mkdir -p "$work/$1"
  printf '%s\n' "$2" >"$work/$1/nginx.conf"
  taskset -c "$PROXY_CPU" nginx -p "$work/$1" -c "$work/$1/nginx.conf" -g 'daemon off;' \
    2>"$work/$1/stderr" &
  pids+=($!)
}

nginx_common="worker_processes 1; pid $work/PIDNAME.pid; error_log stderr error;
events { worker_connections 30000; }"

backend_ports=()
for i in 1 2; do
  port=$(free_port)
  backend_ports+=("$port")
  start_nginx "backend$i" "${nginx_common//PIDNAME/backend$i}
http {
  access_log off;
  client_body_temp_path $work/backend$i;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port reuseport backlog=4096;
    location / { default_type text/plain; return 200 \"$BODY
\"; }
  }
}"
  wait_port "$port"
done

declare -A port_of pid_of

if [[ " $TARGETS " == *" nginx "* ]]; then
  port_of[nginx]=$(free_port)
  tls_port_of[nginx]=$(free_port)
  start_nginx proxy-nginx "${nginx_common//PIDNAME/proxy-nginx}
http {
  access_log off;
  client_body_temp_path $work/proxy-nginx;
  proxy_temp_path $work/proxy-nginx;
  keepalive_requests 1000000;
  upstream backends {
    server 127.0.0.1:${backend_ports[0]};
    server 127.0.0.1:${backend_ports[1]};
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port_of[nginx]} backlog=4096;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }
  server {
    listen 127.0.0.1:${tls_port_of[nginx]} ssl backlog=4096;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }
}"
  wait_port "${port_of[nginx]}"
  # The worker holds the connections; the master only supervises.
  pid_of[nginx]=$(pgrep -P "$(cat "$work/proxy-nginx.pid")" | head -n 1)
fi

if [[ " $TARGETS " == *" haproxy "* ]]; then
  port_of[haproxy]=$(free_port)
  tls_port_of[haproxy]=$(free_port)
  cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $HAPROXY_MAXCONN
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:${port_of[haproxy]}
  default_backend be
frontend fe_tls
  bind 127.0.0.1:${tls_port_of[haproxy]} ssl crt $work/bundle.pem
  default_backend be
backend be
  balance roundrobin
  server b1 127.0.0.1:${backend_ports[0]}
  server b2 127.0.0.1:${backend_ports[1]}
EOF
  taskset -c "$PROXY_CPU" haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.stderr" &
  pids+=($!)
  pid_of[haproxy]=$!
  wait_port "${port_of[haproxy]}"
fi

# Starts cutover as target NAME: its listeners (TOML), then lines added
# to the route and to the pool; the rest is the same for every variant.
start_cutover() {
  local name=$1 listeners=$2 route_extra=$3 pool_extra=$4
  cat >"$work/$name.toml" <<EOF
$listeners
[admin]
bind = "127.0.0.1:$(free_port)"
[state]
dir = "$work/$name-state"
[proxy]
workers = 1
max_connections = 30000
[[route]]
name = "app"
split = { backends = 1 }
$route_extra
[pool.backends]
$pool_extra
upstreams = [ { addr = "127.0.0.1:${backend_ports[0]}" }, { addr = "127.0.0.1:${backend_ports[1]}" } ]
EOF
  CUTOVER_LOG=warn taskset -c "$PROXY_CPU" "$CUTOVER" run -c "$work/$name.toml" \
    2>"$work/$name.stderr" &
  pids+=($!)
  pid_of[$name]=$!
  wait_port "${port_of[$name]}"
}

if [[ " $TARGETS " == *" cutover "* ]]; then
  port_of[cutover]=$(free_port)
  tls_port_of[cutover]=$(free_port)
  start_cutover cutover "[[listener]]
bind = \"127.0.0.1:${port_of[cutover]}\"
[[listener]]
bind = \"127.0.0.1:${tls_port_of[cutover]}\"
tls = { cert = \"$work/cert.pem\", key = \"$work/key.pem\" }" "" ""
fi

# Extra wrk arguments per target (cutover-full's sticky cookie).
declare -A wrk_args_of
if [[ " $TARGETS " == *" cutover-full "* ]]; then
  port_of[cutover-full]=$(free_port)
  start_cutover cutover-full "[[listener]]
bind = \"127.0.0.1:${port_of[cutover-full]}\"" \
    'sticky = { cookie = "cutover_app", max_age = "1h" }' \
    'health = { path = "/", interval = "1s", timeout = "1s", rise = 2, fall = 3 }'
  # A sticky cookie for every request of the run, from a first answer.
  cookie=
  for _ in $(seq 1 100); do
    cookie=$(curl -s -D - -o /dev/null "http://127.0.0.1:${port_of[cutover-full]}/" |
      sed -n 's/^[Ss]et-[Cc]ookie: \(cutover_app=[^;]*\).*/\1/p' | tr -d '\r')
    [[ -n "$cookie" ]] && break
    sleep 0.1
  done
  if [[ -z "$cookie" ]]; then
    echo "cutover-full set no sticky cookie; what it said:" >&2
    tail -n 5 "$work/cutover-full.stderr" >&2
    exit 1
  fi
  wrk_args_of[cutover-full]="-H Cookie:$cookie"
fi

results="$work/results.tsv"
: >"$results"
read -r -a targets <<<"$TARGETS"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order so no target always runs first (or last).
  shift_by=$(((round - 1) % ${#targets[@]}))
  order=("${targets[@]:shift_by}" "${targets[@]:0:shift_by}")
  for target in "${order[@]}"; do
    for c in $CONNECTIONS; do
      url="http://127.0.0.1:${port_of[$target]}/"
      # Warm up connections and caches; not measured.
      read -r -a extra <<<"${wrk_args_of[$target]:-}"
      taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d1s "${extra[@]}" "$url" >/dev/null
      out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"$DURATION" --latency "${extra[@]}" "$url")
      printf '%s\t%s\t%s\t%s\n' "$round" "$target" "$c" "$(printf '%s' "$out" | base64 -w0)" >>"$results"
      echo "round $round: $target c$c done" >&2
    done
  done
done

memory="$work/memory.txt"
: >"$memory"
# One idle-memory measurement per target: a label for the table, the name
# of the array of ports to use, how many connections, then extra
# idle_memory.py flags.
idle_round() {
  local label=$1 count=$3
  local -n ports=$2
  shift 3
  ((count > 0)) || return 0
  for target in "${targets[@]}"; do
    # Same connection handling as cutover's: not measured twice.
    [[ $target == cutover-full ]] && continue
    echo "idle memory: $target$label" >&2
    printf '%s\t%s\n' "$target$label" \
      "$(python3 benches/idle_memory.py "${ports[$target]}" "${pid_of[$target]}" "$count" "$@")" \
      >>"$memory"
  done
}
idle_round "" port_of "$IDLE_CONNECTIONS"
idle_round " (TLS)" tls_port_of "$IDLE_TLS_CONNECTIONS" --tls

python3 - "$results" "$memory" <<'EOF'
import base64, re, statistics, sys

def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

runs = {}
for line in open(sys.argv[1]):
    _, target, c, out = line.rstrip("\n").split("\t")
    out = base64.b64decode(out).decode()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    runs.setdefault((target, int(c)), []).append((rps, p50, p99, errors))

targets = []
for target, _ in runs:
    if target not in targets:
        targets.append(target)
conns = sorted({c for _, c in runs})
print()
print("| proxy (1 core) | conns | rps (median) | p50 ms | p99 ms | errors | cutover rps / this |")
print("|---|---|---|---|---|---|---|")
for c in conns:
    med = {}
    for t in targets:
        r = runs.get((t, c))
        if not r:
            continue
        med[t] = (
            statistics.median(x[0] for x in r),
            statistics.median(x[1] for x in r),
            statistics.median(x[2] for x in r),
            sum(x[3] for x in r),
        )
    base = med.get("cutover")
    for t, (rps, p50, p99, errors) in med.items():
        ratio = f"{base[0] / rps:.2f}x" if base else "-"
        print(f"| {t} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} | {ratio} |")
print()
print(f"rounds: {max(len(v) for v in runs.values())}; medians per target and concurrency")

lines = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[2]) if l.strip()]
if lines:
    print()
    print("| proxy | idle keep-alive connections | failed | RSS before | RSS after | MiB per 10k |")
    print("|---|---|---|---|---|---|")
    for target, fields in lines:
        f = dict(kv.split("=") for kv in fields.split())
        print(f"| {target} | {f['connections']} | {f['failed']} | {int(f['rss_before_kib']) / 1024:.1f} MiB "
              f"| {int(f['rss_after_kib']) / 1024:.1f} MiB | {f['mib_per_10k']} |")
EOF
