# Shared by the benchmark scripts (compare.sh, instructions.sh): sourced,
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
