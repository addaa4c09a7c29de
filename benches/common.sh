# Shared by the benchmark scripts (compare.sh, instructions.sh, mirror.sh…): sourced,
# not run. Sets up a work directory that is removed, and processes in
# `pids` that are killed, when the script exits.

# Installs from Debian whatever is missing: each argument is COMMAND=PACKAGE.
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null || need+=("${pair#*=}")
  done
  if ((${#need[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  fi
}

# The cutover binary to measure: CUTOVER_BIN (e.g. an older build), or
# this checkout built in release mode.
if [[ -n "${CUTOVER_BIN:-}" ]]; then
  CUTOVER=$CUTOVER_BIN
else
  cargo build --release --quiet
  CUTOVER=$PWD/target/release/cutover
fi

work=$(mktemp -d)
pids=()
cleanup() {
  # Only the script itself: a subshell (a command substitution) that runs
  # the EXIT trap must not stop the processes or remove the work directory.
  [[ $BASHPID == "$$" ]] || return 0
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until something answers HTTP on 127.0.0.1:$1 (any status).
wait_http() {
  for _ in $(seq 1 200); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.05
  done
  echo "nothing answers on 127.0.0.1:$1" >&2
  tail -n 5 "$work"/*.stderr >&2 2>/dev/null || true
  exit 1
}

# PEER_HEADERS=1: nginx and HAProxy do the header work cutover always does
# (docs/proxying.md): X-Forwarded-For, -Proto and -Host, the client's Host
# and a Via to the upstream; an X-Request-Id made per request, sent up and
# back to the client; a Via to the client. Off (0), they forward the
# request as their configuration's minimum does, and cutover does more
# work per request than they do.
PEER_HEADERS=${PEER_HEADERS:-0}

# The line a results table starts with: which job the peers did.
peer_headers_line() {
  if [[ $PEER_HEADERS == 1 ]]; then
    echo "Peers: PEER_HEADERS=1, nginx and HAProxy add the forwarding headers and request id cutover adds."
  else
    echo "Peers: PEER_HEADERS=0, nginx and HAProxy add no forwarding header or request id; cutover does."
  fi
}

# nginx's lines for it, inside a `location` that proxies.
nginx_peer_headers() {
  [[ $PEER_HEADERS == 1 ]] || return 0
  cat <<'EOF'
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header Via "1.1 nginx";
      proxy_set_header X-Request-Id $request_id;
      add_header X-Request-Id $request_id;
      add_header Via "1.1 nginx";
EOF
}

# HAProxy's: $1 `defaults` (the id: its process id and a request counter,
# as cutover's is a per-process prefix and a counter) or `backend` (the
# rules, which an anonymous `defaults` may not hold).
haproxy_peer_headers() {
  [[ $PEER_HEADERS == 1 ]] || return 0
  if [[ $1 == defaults ]]; then
    cat <<'EOF'
  option forwardfor
  unique-id-format %{+X}o%pid-%rt
  unique-id-header X-Request-Id
EOF
  else
    cat <<'EOF'
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request add-header Via "1.1 haproxy"
  http-response set-header X-Request-Id %[unique-id]
  http-response add-header Via "1.1 haproxy"
EOF
  fi
}

# HAProxy as compare.sh and instructions.sh run it: one thread,
# keep-alive on both sides, backend connections shared (`http-reuse
# always`), backend `be` round-robin over two servers; the caller adds
# its frontends. $1: maxconn; $2, $3: the backends' ports.
haproxy_common() {
  cat <<EOF
global
  nbthread 1
  maxconn $1
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 2s
  timeout client 30s
  timeout server 30s
$(haproxy_peer_headers defaults)
backend be
  balance roundrobin
$(haproxy_peer_headers backend)
  server b1 127.0.0.1:$2
  server b2 127.0.0.1:$3
EOF
}

# wrk's latency distribution line ("     50%    1.23ms") in ms: `ms 99% <<<"$out"`.
ms() {
  awk -v p="$1" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
    printf "%.2f", v }'
}
