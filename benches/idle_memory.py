#!/usr/bin/env python3
"""Resident memory of a proxy holding idle client keep-alive connections.

    idle_memory.py PORT PID [CONNECTIONS] [SETTLE_SECONDS] [--tls]

Opens CONNECTIONS (default 10,000) connections to 127.0.0.1:PORT, sends one
HTTP/1.1 request on each and reads the answer, so each is a used keep-alive
connection, then leaves them all idle and reads PID's RSS (all of its
processes' threads share it) from /proc. Prints the RSS before, after, and
the difference per 10,000 connections. Both readings come SETTLE_SECONDS
(default 15) after the proxy's last activity — the previous load, or the
last connection going idle: long enough for cutover to park them (2 s) and
for its allocator to hand the freed buffers back (~10 s). With --tls the
connections are TLS (the certificate is not checked). Loopback only;
bounded by CONNECTIONS. Used by benches/compare.sh; see docs/benchmarks.md.
"""

import resource
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def read_response(sock):
    """Reads one response with a Content-Length body; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        body += chunk
    return int(head.split(b" ")[1])


def main():
    args = [a for a in sys.argv[1:] if a != "--tls"]
    tls = None
    if "--tls" in sys.argv[1:]:
        # Memory, not trust, is measured: any certificate will do.
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    port, pid = int(args[0]), int(args[1])
    count = int(args[2]) if len(args) > 2 else 10_000
    settle = float(args[3]) if len(args) > 3 else 15.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, count + 100)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # The same settling before the first reading as before the second: a
    # proxy that just served load is still handing freed memory back, and
    # that would be counted against the idle connections.
    time.sleep(settle)
    before = rss_kib(pid)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    sockets = []
    failed = 0
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            if tls:
                s = tls.wrap_socket(s, server_hostname="bench")
            s.sendall(request)
            if read_response(s) != 200:
                failed += 1
        except (OSError, ConnectionError):
            failed += 1
        sockets.append(s)
    time.sleep(settle)  # idle connections parked, freed memory returned
    after = rss_kib(pid)
    per_10k = (after - before) * 10_000 / count / 1024
    print(
        f"connections={count} failed={failed} rss_before_kib={before} "
        f"rss_after_kib={after} mib_per_10k={per_10k:.1f}"
    )
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
