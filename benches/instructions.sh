#!/usr/bin/env bash
# User-space instructions per proxied request, cutover against nginx, by
# callgrind: a repeatable figure (±1-2 % between runs) where timings on a
# shared 2-core machine drift by ±15 %. See docs/benchmarks.md.
#
# Each proxy (cutover, nginx, HAProxy: TARGETS) runs under
# `valgrind --tool=callgrind` in front of two nginx
# backends answering a 96-byte body (as in compare.sh); wrk loads it for
# a warm-up, callgrind's counters are zeroed, wrk loads it for DURATION,
# the counters are dumped and divided by the requests wrk completed.
# Counts cover the proxy's own code and its libraries (libc, allocator),
# not the kernel: for the kernel's share see "Where the time goes" in
# docs/benchmarks.md.
#
#   benches/instructions.sh                           # cutover and nginx, c50
#   CONNECTIONS=200 benches/instructions.sh
#   TOP=30 TARGETS=cutover benches/instructions.sh    # and cutover's top functions
#   CUTOVER_BIN=/path/to/other/cutover benches/instructions.sh
#   KEEP_DUMP=/tmp TARGETS=cutover benches/instructions.sh   # keep the dump
#   PROTOCOL=h2c TARGETS="cutover haproxy" benches/instructions.sh   # HTTP/2 (h2load,
#                                          # 10 streams per connection); not nginx (its
#                                          # config here has no HTTP/2 listener)
#   STREAMS=1 PROTOCOL=h2c TARGETS=cutover benches/instructions.sh   # one stream at a
#                                          # time: every request its own wake-ups
#   PROTOCOL=tls benches/instructions.sh   # HTTPS/1.1 keep-alive (wrk), ECDSA P-256,
#                                          # handshakes in the warm-up only
#   CACHE_SIM=1 STREAMS=1 CONNECTIONS=200 PROTOCOL=h2c TARGETS="cutover haproxy" \
#     benches/instructions.sh              # and simulated cache misses per request
#   PEER_HEADERS=1 TARGETS="nginx haproxy" benches/instructions.sh   # the peers doing
#                                          # cutover's header work (benches/common.sh)
#   TRACING=0.01 TARGETS=cutover benches/instructions.sh   # [tracing] on at this
#                                          # sample_ratio, exporting to benches/support/otlp_sink.rs
#
# Under callgrind a proxy runs ~50x slower, so it is the bottleneck and
# handles many ready connections per wake-up: compare builds and proxies
# with each other in this script, not with compare.sh's figures. How
# many it finds ready depends on how busy the machine is, which moves the
# count by up to ~3 %: run the builds being compared alternately.
#
# Needs root (or the packages already installed) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
PROTOCOL=${PROTOCOL:-h1}
CONNECTIONS=${CONNECTIONS:-50}
STREAMS=${STREAMS:-10}
TARGETS=${TARGETS:-"cutover nginx"}
TOP=${TOP:-0}
# CACHE_SIM=1: callgrind simulates the caches too and the table adds
# first-level instruction and data misses and last-level misses per
# request — why two proxies with like instruction counts run at
# different speeds. Slower still.
cache_sim=""
[[ ${CACHE_SIM:-0} == 1 ]] && cache_sim=--cache-sim=yes

# The work directory, process cleanup, free_port and the cutover build.
source benches/common.sh
install_missing nginx=nginx-light wrk=wrk valgrind=valgrind curl=curl h2load=nghttp2-client \
  openssl=openssl haproxy=haproxy

# PROTOCOL=tls: the proxies' listener serves this self-signed ECDSA P-256
# certificate (as compare.sh's `tls` scenario).
scheme=http
listen_tls=""
nginx_ssl=""
if [[ $PROTOCOL == tls ]]; then
  scheme=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=bench -keyout "$work/ec-key.pem" -out "$work/ec-cert.pem" 2>/dev/null
  listen_tls="tls = { cert = \"$work/ec-cert.pem\", key = \"$work/ec-key.pem\" }"
  nginx_ssl=" ssl; ssl_certificate $work/ec-cert.pem; ssl_certificate_key $work/ec-key.pem"
fi

# Waits (bounded) until an HTTP request through the port succeeds: a
# proxy under callgrind takes seconds to start.
wait_http() {
  for _ in $(seq 1 600); do
    if curl -sfk ${curl_extra:-} -o /dev/null "$scheme://127.0.0.1:$1/"; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1; what the servers said:" >&2
  tail -n 5 "$work"/*.stderr >&2 2>/dev/null || true
  exit 1
}

BODY=$(printf 'x%.0s' $(seq 1 95))
backend_ports=("$(free_port)" "$(free_port)")
cat >"$work/backends.conf" <<EOF
worker_processes 1; pid $work/backends.pid; error_log stderr error; daemon off;
events { worker_connections 30000; }
http {
  access_log off;
  client_body_temp_path $work;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${backend_ports[0]};
    listen 127.0.0.1:${backend_ports[1]};
    location / { default_type text/plain; return 200 "$BODY
"; }
  }
}
EOF
nginx -p "$work" -c "$work/backends.conf" 2>"$work/backends.stderr" &
pids+=($!)
scheme=http wait_http "${backend_ports[0]}"

# Starts TARGET under callgrind on PORT; prints its pid. (Its output goes
# elsewhere: the caller's \$(...) would wait for it to end.)
start_target() {
  local target=$1 port=$2
  case $target in
    cutover)
      cat >"$work/cutover.toml" <<EOF
[[listener]]
bind = "127.0.0.1:$port"
$listen_tls
[admin]
bind = "127.0.0.1:$(free_port)"
[state]
dir = "$work/cutover-state"
[proxy]
workers = 1
$tracing_section
[[route]]
name = "app"
split = { backends = 1 }
[pool.backends]
upstreams = [ { addr = "127.0.0.1:${backend_ports[0]}" }, { addr = "127.0.0.1:${backend_ports[1]}" } ]
EOF
      CUTOVER_LOG=warn valgrind --tool=callgrind $cache_sim --callgrind-out-file="$work/cutover.cg" \
        "$CUTOVER" run -c "$work/cutover.toml" >/dev/null 2>"$work/cutover.stderr" &
      ;;
    nginx)
      # One process (no master), as compare.sh's one worker.
      cat >"$work/proxy.conf" <<EOF
worker_processes 1; pid $work/proxy.pid; error_log stderr error;
daemon off; master_process off;
events { worker_connections 30000; }
http {
  access_log off;
  client_body_temp_path $work;
  proxy_temp_path $work;
  keepalive_requests 1000000;
  upstream backends {
    server 127.0.0.1:${backend_ports[0]};
    server 127.0.0.1:${backend_ports[1]};
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$port$nginx_ssl;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$(nginx_peer_headers)
    }
  }
}
EOF
      valgrind --tool=callgrind $cache_sim --callgrind-out-file="$work/nginx.cg" \
        nginx -p "$work" -c "$work/proxy.conf" >/dev/null 2>"$work/nginx.stderr" &
      ;;
    haproxy)
      # One thread, configured as compare.sh's; h2c on its own `proto h2`
      # bind (HAProxy does not sniff the preface on a plain one). maxconn
      # small enough for the descriptors valgrind leaves it.
      local bind_extra=""
      if [[ $PROTOCOL == h2c ]]; then
        bind_extra=" proto h2"
      elif [[ $PROTOCOL == tls ]]; then
        cat "$work/ec-cert.pem" "$work/ec-key.pem" >"$work/ec-bundle.pem"
        bind_extra=" ssl crt $work/ec-bundle.pem alpn http/1.1"
      fi
      {
        haproxy_common 4000 "${backend_ports[0]}" "${backend_ports[1]}"
        cat <<EOF
frontend fe
  bind 127.0.0.1:$port$bind_extra
  default_backend be
EOF
      } >"$work/haproxy.cfg"
      valgrind --tool=callgrind $cache_sim --callgrind-out-file="$work/haproxy.cg" \
        haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>"$work/haproxy.stderr" &
      ;;
    *)
      echo "unknown target $target (cutover, nginx, haproxy)" >&2
      exit 2
      ;;
  esac
  echo $!
}

# TRACING=RATIO: cutover exports spans to a receiver that does the
# collector's side of the work (benches/support/otlp_sink.rs), outside callgrind.
tracing_section=""
if [[ -n "${TRACING:-}" ]]; then
  cargo build --release --quiet --example otlp_sink
  sink_port=$(free_port)
  target/release/examples/otlp_sink "127.0.0.1:$sink_port" >/dev/null 2>"$work/otlp_sink.log" &
  pids+=($!)
  tracing_section="[tracing]
otlp_endpoint = \"http://127.0.0.1:$sink_port\"
sample_ratio = $TRACING
export_interval = \"1s\""
fi

peer_headers_line
if [[ -n $cache_sim ]]; then
  printf '| proxy | protocol | conns | requests | instructions per request | L1 instruction misses | L1 data misses | last-level misses |\n|---|---|---|---|---|---|---|---|\n'
else
  printf '| proxy | protocol | conns | requests | instructions per request |\n|---|---|---|---|---|\n'
fi
for target in $TARGETS; do
  port=$(free_port)
  pid=$(start_target "$target" "$port")
  pids+=("$pid")
  curl_extra=""
  [[ $PROTOCOL == h2c && $target == haproxy ]] && curl_extra=--http2-prior-knowledge
  wait_http "$port"
  url="$scheme://127.0.0.1:$port/"
  if [[ $PROTOCOL == h2c ]]; then
    # HTTP/2 with prior knowledge (cutover's plain listener takes both
    # protocols, HAProxy's is told).
    h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D3 "$url" >/dev/null
    callgrind_control --zero "$pid" >/dev/null 2>&1
    out=$(h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D"${DURATION%s}" "$url")
    callgrind_control --dump "$pid" >/dev/null 2>&1
    requests=$(printf '%s' "$out" | sed -nE 's/^requests: .* ([0-9]+) succeeded.*/\1/p')
    failed=$(printf '%s' "$out" | sed -nE 's/^requests: .* ([0-9]+) failed, ([0-9]+) errored.*/\1\2/p')
  else
    wrk -t1 -c"$CONNECTIONS" -d3s "$url" >/dev/null
    callgrind_control --zero "$pid" >/dev/null 2>&1
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$url")
    callgrind_control --dump "$pid" >/dev/null 2>&1
    requests=$(printf '%s' "$out" | grep -o '[0-9]* requests in' | cut -d' ' -f1)
    failed=$(printf '%s' "$out" | grep -cE 'Non-2xx|Socket errors' || true)
  fi
  if [[ ${failed//0/} != "" || -z $requests ]]; then
    echo "$target: the load saw errors:" >&2
    printf '%s\n' "$out" >&2
    exit 1
  fi
  # The dump after the zeroing is the newest file of its prefix.
  dump=$(ls -t "$work/$target.cg".* | head -n 1)
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
  # KEEP_DUMP=DIR keeps the callgrind dump, for callgrind_annotate --tree.
  [[ -n "${KEEP_DUMP:-}" ]] && cp "$dump" "$KEEP_DUMP/$target.callgrind"
  if [[ -n $cache_sim ]]; then
    # Events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
    read -r i1 d1 ll < <(awk '/^(summary|totals):/ { print $5, $6 + $7, $8 + $9 + $10; exit }' "$dump")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$PROTOCOL" "$CONNECTIONS" "$requests" \
      "$((total / requests))" "$((i1 / requests))" "$((d1 / requests))" "$((ll / requests))"
  else
    printf '| %s | %s | %s | %s | %s |\n' "$target" "$PROTOCOL" "$CONNECTIONS" "$requests" "$((total / requests))"
  fi
  if ((TOP > 0)) && [[ $target == cutover ]]; then
    callgrind_annotate --inclusive=no --threshold=100 "$dump" >"$work/annotated" 2>/dev/null
    # Lines are "COUNT (PERCENT)  FILE:FUNCTION [OBJECT]"; the ones at
    # 50 % or more are main() and the runtime's loop around everything.
    printf '\ncutover, instructions per request by function (self cost):\n\n'
    sed -nE 's/^ *([0-9,]+) +\( *([0-9.]+)%\) +([^[]*).*$/\1 \2 \3/p' "$work/annotated" |
      awk -v n="$requests" -v top="$TOP" '
        $2 < 50 && shown < top { c = $1; gsub(",", "", c); $1 = ""; $2 = ""; sub(/^ +/, "")
                                 printf "%8.0f  %s\n", c / n, $0; shown++ }'
    echo
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
