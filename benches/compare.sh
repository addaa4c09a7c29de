#!/usr/bin/env bash
# Load comparison: cutover against nginx and HAProxy as reverse proxies, on
# the same core, in the same run. See docs/benchmarks.md.
#
# Two nginx backends answer a 96-byte body (and a 1 MiB one at /big). Each
# proxy gets one worker (thread or process), keep-alive to the backends,
# and is pinned with the backends to PROXY_CPU; the load tool (wrk, h2load)
# runs alone on LOAD_CPU. Every row shows the proxy's CPU per request:
# user + kernel time of all its processes (from /proc) over the measured
# window, divided by the requests done in it. Scenarios:
#   h1     HTTP/1.1 keep-alive (wrk)
#   h2c    HTTP/2 cleartext, prior knowledge, 10 streams per connection (h2load)
#   h2tls  HTTP/2 over TLS (ALPN), 10 streams per connection (h2load)
#   h2c-m1, h2tls-m1
#          the same with one stream at a time per connection (h2load -m1)
#   tls    HTTPS/1.1 keep-alive, ECDSA P-256 certificate (wrk)
#   tls-new-ecdsa, tls-new-rsa
#          full TLS handshakes, no request (openssl s_time -new, C clients
#          each handshaking one at a time): CPU per handshake, with an
#          ECDSA P-256 / RSA-2048 certificate
#   big    1 MiB responses (wrk): CPU per MiB
# Targets are interleaved over ROUNDS rounds (the order rotates each round)
# and the table (benches/compare_report.py) shows medians, then one line
# per target of the performance issue: cutover, the best peer, the ratio.
# cutover runs twice: plain, and as cutover-full with a sticky route and
# active health checks (wrk sends the sticky cookie; h1 rows only).
# Loopback only; every run is bounded by DURATION.
#
#   benches/compare.sh                       # 3 rounds x every scenario x 10s
#   ROUNDS=1 DURATION=3s benches/compare.sh  # a quick look
#   SCENARIOS="h1:50 h1:200" benches/compare.sh   # some rows only
#   PEER_HEADERS=1 benches/compare.sh        # nginx and HAProxy add the forwarding
#                                            # headers and request id cutover adds
#                                            # (benches/common.sh): the same work
#
# Then, for each proxy, the resident memory of IDLE_CONNECTIONS idle
# keep-alive client connections, per 10,000 (benches/idle_memory.py;
# IDLE_CONNECTIONS=0 skips it), and of IDLE_TLS_CONNECTIONS idle ones over
# TLS (IDLE_TLS_CONNECTIONS=0 skips it).
#
# Needs root (or the packages already installed) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
# SCENARIO:CONNECTIONS pairs (see above).
SCENARIOS=${SCENARIOS:-"h1:50 h1:200 h2c:50 h2c:200 h2c-m1:50 h2c-m1:200 h2tls:50 h2tls:200 h2tls-m1:50 h2tls-m1:200 tls:50 tls-new-ecdsa:4 tls-new-rsa:4 big:10"}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# CUTOVER_PROXY_EXTRA adds lines to cutover's [proxy] section, to compare
# settings: CUTOVER_PROXY_EXTRA="direct_http1 = false" measures cutover
# with everything through hyper.
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
  openssl=openssl curl=curl h2load=nghttp2-client

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

# Self-signed certificates for every proxy's TLS listeners: RSA-2048
# (cert.pem) and ECDSA P-256 (ec-cert.pem).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench -keyout "$work/ec-key.pem" -out "$work/ec-cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/bundle.pem"
cat "$work/ec-cert.pem" "$work/ec-key.pem" >"$work/ec-bundle.pem"
# Ports besides port_of (plain HTTP/1.1): h2c, TLS with the RSA
# certificate, TLS with the ECDSA one. cutover's plain port takes h2c too.
declare -A tls_port_of h2c_port_of ec_port_of
head -c 1048576 /dev/urandom >"$work/big.bin"
# nginx's workers run as nobody: let them read it.
chmod 755 "$work" && chmod 644 "$work/big.bin"

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
    location = /big { default_type application/octet-stream; alias $work/big.bin; }
  }
}"
  wait_port "$port"
done

declare -A port_of pid_of

if [[ " $TARGETS " == *" nginx "* ]]; then
  port_of[nginx]=$(free_port)
  tls_port_of[nginx]=$(free_port)
  h2c_port_of[nginx]=$(free_port)
  ec_port_of[nginx]=$(free_port)
  to_backends="location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
$(nginx_peer_headers)
    }"
  start_nginx proxy-nginx "${nginx_common//PIDNAME/proxy-nginx}
http {
  access_log off;
  client_body_temp_path $work/proxy-nginx;
  proxy_temp_path $work/proxy-nginx;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  upstream backends {
    server 127.0.0.1:${backend_ports[0]};
    server 127.0.0.1:${backend_ports[1]};
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port_of[nginx]} backlog=4096;
    $to_backends
  }
  server {
    listen 127.0.0.1:${h2c_port_of[nginx]} http2 backlog=4096;
    $to_backends
  }
  server {
    listen 127.0.0.1:${tls_port_of[nginx]} ssl http2 backlog=4096;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    $to_backends
  }
  server {
    listen 127.0.0.1:${ec_port_of[nginx]} ssl http2 backlog=4096;
    ssl_certificate $work/ec-cert.pem;
    ssl_certificate_key $work/ec-key.pem;
    $to_backends
  }
}"
  wait_port "${port_of[nginx]}"
  # The worker holds the connections; the master only supervises.
  pid_of[nginx]=$(pgrep -P "$(cat "$work/proxy-nginx.pid")" | head -n 1)
fi

if [[ " $TARGETS " == *" haproxy "* ]]; then
  port_of[haproxy]=$(free_port)
  tls_port_of[haproxy]=$(free_port)
  h2c_port_of[haproxy]=$(free_port)
  ec_port_of[haproxy]=$(free_port)
  {
    haproxy_common "$HAPROXY_MAXCONN" "${backend_ports[0]}" "${backend_ports[1]}"
    cat <<EOF
frontend fe
  bind 127.0.0.1:${port_of[haproxy]}
  default_backend be
frontend fe_h2c
  bind 127.0.0.1:${h2c_port_of[haproxy]} proto h2
  default_backend be
frontend fe_tls
  bind 127.0.0.1:${tls_port_of[haproxy]} ssl crt $work/bundle.pem alpn h2,http/1.1
  default_backend be
frontend fe_ec
  bind 127.0.0.1:${ec_port_of[haproxy]} ssl crt $work/ec-bundle.pem alpn h2,http/1.1
  default_backend be
EOF
  } >"$work/haproxy.cfg"
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
${CUTOVER_PROXY_EXTRA:-}
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
  h2c_port_of[cutover]=${port_of[cutover]}
  ec_port_of[cutover]=$(free_port)
  start_cutover cutover "[[listener]]
bind = \"127.0.0.1:${port_of[cutover]}\"
[[listener]]
bind = \"127.0.0.1:${tls_port_of[cutover]}\"
tls = { cert = \"$work/cert.pem\", key = \"$work/key.pem\" }
[[listener]]
bind = \"127.0.0.1:${ec_port_of[cutover]}\"
tls = { cert = \"$work/ec-cert.pem\", key = \"$work/ec-key.pem\" }" "" ""
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

# User and kernel CPU ticks of TARGET's process (all its threads).
cpu_ticks() {
  local -a f
  # Fields 14 and 15 of /proc/PID/stat; the name (field 2) has no spaces.
  read -r -a f <"/proc/${pid_of[$1]}/stat"
  echo "${f[13]} ${f[14]}"
}

# Full TLS handshakes against ADDR from C `openssl s_time -new` clients
# (each one handshake at a time, never resuming a session: wrk would
# resume) for SECONDS; prints their outputs.
new_tls() {
  local addr=$1 clients=$2 seconds=$3 i
  local -a running=()
  for i in $(seq 1 "$clients"); do
    taskset -c "$LOAD_CPU" openssl s_time -connect "$addr" -new -time "$seconds" \
      >"$work/s_time.$i" 2>&1 &
    running+=($!)
  done
  wait "${running[@]}" || true
  cat "$work"/s_time.*
  rm -f "$work"/s_time.*
}

# Runs SCENARIO with C connections against TARGET for DURATION and prints
# the load tool's output.
drive() {
  local target=$1 scenario=$2 c=$3 duration=$4
  local -a extra
  read -r -a extra <<<"${wrk_args_of[$target]:-}"
  local wrk=(taskset -c "$LOAD_CPU" wrk -t1 -c"$c" -d"$duration" --latency)
  local streams=10
  [[ $scenario == *-m1 ]] && streams=1
  # h2load -D sometimes never returns at c200 (seen 2 runs in 6 against
  # hyper's server and cutover's alike, traffic still flowing): bounded.
  local h2load=(timeout "$((${duration%s} + 30))" taskset -c "$LOAD_CPU"
    h2load -t1 -c"$c" -m"$streams" -D"${duration%s}")
  case $scenario in
    h1) "${wrk[@]}" "${extra[@]}" "http://127.0.0.1:${port_of[$target]}/" ;;
    big) "${wrk[@]}" "http://127.0.0.1:${port_of[$target]}/big" ;;
    h2c | h2c-m1) "${h2load[@]}" "http://127.0.0.1:${h2c_port_of[$target]}/" ;;
    h2tls | h2tls-m1) "${h2load[@]}" "https://127.0.0.1:${ec_port_of[$target]}/" ;;
    tls) "${wrk[@]}" "https://127.0.0.1:${ec_port_of[$target]}/" ;;
    tls-new-ecdsa) new_tls "127.0.0.1:${ec_port_of[$target]}" "$c" "${duration%s}" ;;
    tls-new-rsa) new_tls "127.0.0.1:${tls_port_of[$target]}" "$c" "${duration%s}" ;;
    *) echo "unknown scenario: $scenario" >&2; exit 1 ;;
  esac
}

results="$work/results.tsv"
: >"$results"
read -r -a targets <<<"$TARGETS"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order so no target always runs first (or last).
  shift_by=$(((round - 1) % ${#targets[@]}))
  order=("${targets[@]:shift_by}" "${targets[@]:0:shift_by}")
  for target in "${order[@]}"; do
    for pair in $SCENARIOS; do
      scenario=${pair%%:*} c=${pair#*:}
      # cutover-full differs from cutover in routing only: h1 rows.
      [[ $target == cutover-full && $scenario != h1 ]] && continue
      # Warm up connections and caches; not measured.
      drive "$target" "$scenario" "$c" 1s >/dev/null 2>&1 || true
      read -r user_before kernel_before <<<"$(cpu_ticks "$target")"
      out=$(drive "$target" "$scenario" "$c" "$DURATION" 2>&1 || true)
      read -r user_after kernel_after <<<"$(cpu_ticks "$target")"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$scenario" "$c" \
        "$((user_after - user_before))" "$((kernel_after - kernel_before))" \
        "$(printf '%s' "$out" | base64 -w0)" >>"$results"
      echo "round $round: $target $scenario c$c done" >&2
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

peer_headers_line
python3 benches/compare_report.py "$results" "$memory" "$(getconf CLK_TCK)"
