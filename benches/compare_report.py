#!/usr/bin/env python3
"""The table and target lines of benches/compare.sh.

    compare_report.py RESULTS.tsv MEMORY.txt CLK_TCK

RESULTS: one line per measured run (round, target, scenario, connections,
user and kernel CPU ticks of the proxy over the run, the load tool's output
in base64);
MEMORY: idle_memory.py's lines per target. Prints medians with the CPU
per request, then one line per performance target: cutover's figure, the
best of nginx and HAProxy, and the ratio. See docs/benchmarks.md.
"""

import base64, re, statistics, sys

TICK_US = 1e6 / int(sys.argv[3])
PEERS = ("nginx", "haproxy")

def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def parse_wrk(out):
    done = int(re.search(r"(\d+) requests in", out).group(1))
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
    return done, rps, p50, p99, errors

def parse_h2load(out):
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    done = int(m.group(3))
    errors = int(m.group(4)) + int(m.group(5)) + int(m.group(6))
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    # h2load gives no percentiles: the mean time for a request.
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return done, rps, ms(mean.group(1)) if mean else float("nan"), float("nan"), errors

def parse_s_time(out):
    """openssl s_time clients: handshakes (as requests) over the run."""
    found = re.findall(r"(\d+) connections in (\d+) real seconds", out)
    if not found:
        raise ValueError("no s_time figures")
    done = sum(int(n) for n, _ in found)
    seconds = max(int(s) for _, s in found) or 1
    return done, done / seconds, float("nan"), float("nan"), 0

runs = {}
for line in open(sys.argv[1]):
    _, target, scenario, c, user, kernel, out = line.rstrip("\n").split("\t")
    out = base64.b64decode(out).decode(errors="replace")
    try:
        parse = (parse_s_time if scenario.startswith("tls-new")
                 else parse_h2load if scenario.startswith("h2") else parse_wrk)
        done, rps, p50, p99, errors = parse(out)
    except (AttributeError, ValueError):
        print(f"{target} {scenario} c{c}: no figures in the tool's output:\n{out}", file=sys.stderr)
        continue
    # Per request; for `big` that is per MiB, for tls-new per handshake.
    cpu_us = (int(user) + int(kernel)) * TICK_US / max(done, 1)
    user_us = int(user) * TICK_US / max(done, 1)
    runs.setdefault((scenario, int(c), target), []).append(
        (rps, p50, p99, errors, cpu_us, user_us))

UNIT = {"big": "µs/MiB", "tls-new-ecdsa": "µs/handshake", "tls-new-rsa": "µs/handshake"}
med = {}
print()
# The user / kernel column: how the CPU splits (the kernel's share is the
# socket calls, about the same for every proxy; see docs/benchmarks.md).
print("| scenario | conns | proxy (1 core) | CPU | user / kernel | rps (median) | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for (s, c, t), r in runs.items():
    m = (statistics.median(x[0] for x in r), statistics.median(x[1] for x in r),
         statistics.median(x[2] for x in r), sum(x[3] for x in r),
         statistics.median(x[4] for x in r), statistics.median(x[5] for x in r))
    med[(s, c, t)] = m
rows = sorted(med, key=lambda k: (list(dict.fromkeys(k2[:2] for k2 in runs)).index(k[:2]),))
for s, c, t in rows:
    rps, p50, p99, errors, cpu, user = med[(s, c, t)]
    fmt = lambda v: "-" if v != v else f"{v:.2f}"
    print(f"| {s} | {c} | {t} | {cpu:.1f} {UNIT.get(s, 'µs/req')} | {user:.1f} / {cpu - user:.1f} "
          f"| {rps:,.0f} | {fmt(p50)} | {fmt(p99)} | {errors} |")
print()
print(f"rounds: {max(len(v) for v in runs.values())}; medians per target, scenario and "
      "concurrency; h2 rows: the p50 column is h2load's mean; tls-new rows: "
      "handshakes, the rps column is handshakes/s")

def target_line(label, scenario, c, index=4):
    """cutover's figure, the best peer's, the ratio (lower is better)."""
    mine = med.get((scenario, c, "cutover"))
    peers = [(med[(scenario, c, p)][index], p) for p in PEERS if (scenario, c, p) in med]
    if not mine or not peers:
        return
    best, who = min(peers)
    ratio = mine[index] / best if best else float("inf")
    mark = "met" if ratio <= 1.0 else "not met"
    print(f"{label}: cutover {mine[index]:.2f}, best peer {who} {best:.2f}, ratio {ratio:.2f}x ({mark})")

print()
print("Targets (ratio = cutover / best of nginx and HAProxy; at or below 1.00x is met):")
target_line("1. HTTP/1.1 c50 CPU µs/request", "h1", 50)
target_line("1. HTTP/1.1 c200 CPU µs/request", "h1", 200)
target_line("1. HTTP/1.1 c50 user-space CPU µs/request", "h1", 50, 5)
target_line("1. HTTP/1.1 c200 user-space CPU µs/request", "h1", 200, 5)
target_line("1. HTTP/1.1 c50 p99 ms", "h1", 50, 2)
target_line("1. HTTP/1.1 c200 p99 ms", "h1", 200, 2)
growth = {}
for t in ("cutover",) + PEERS:
    if ("h1", 50, t) in med and ("h1", 200, t) in med:
        growth[t] = med[("h1", 200, t)][4] / med[("h1", 50, t)][4] - 1
if "cutover" in growth and len(growth) > 1:
    g, who = min((g, t) for t, g in growth.items() if t != "cutover")
    print(f"1. HTTP/1.1 CPU growth c50->c200: cutover {growth['cutover']:+.0%}, "
          f"least-growing peer {who} {g:+.0%} ({'met' if growth['cutover'] <= g else 'not met'})")
target_line("2. HTTP/2 h2c c50 CPU µs/request", "h2c", 50)
target_line("2. HTTP/2 h2c c200 CPU µs/request", "h2c", 200)
target_line("2. HTTP/2 h2c -m1 c50 CPU µs/request", "h2c-m1", 50)
target_line("2. HTTP/2 h2c -m1 c200 CPU µs/request", "h2c-m1", 200)
target_line("2. HTTP/2 over TLS c50 CPU µs/request", "h2tls", 50)
target_line("2. HTTP/2 over TLS c200 CPU µs/request", "h2tls", 200)
target_line("2. HTTP/2 over TLS -m1 c50 CPU µs/request", "h2tls-m1", 50)
target_line("2. HTTP/2 over TLS -m1 c200 CPU µs/request", "h2tls-m1", 200)
target_line("3. new TLS connections, ECDSA P-256, CPU µs/handshake", "tls-new-ecdsa", 4)
target_line("3. new TLS connections, RSA-2048, CPU µs/handshake", "tls-new-rsa", 4)
target_line("3. HTTPS/1.1 keep-alive c50 CPU µs/request", "tls", 50)
target_line("4. 1 MiB responses, CPU µs/MiB", "big", 10)

lines = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[2]) if l.strip()]
if lines:
    print()
    print("| proxy | idle keep-alive connections | failed | RSS before | RSS after | MiB per 10k |")
    print("|---|---|---|---|---|---|")
    per = {}
    for target, fields in lines:
        f = dict(kv.split("=") for kv in fields.split())
        per[target] = float(f["mib_per_10k"])
        print(f"| {target} | {f['connections']} | {f['failed']} | {int(f['rss_before_kib']) / 1024:.1f} MiB "
              f"| {int(f['rss_after_kib']) / 1024:.1f} MiB | {f['mib_per_10k']} |")
    if "cutover" in per and "nginx" in per:
        ratio = per["cutover"] / per["nginx"] if per["nginx"] else float("inf")
        print()
        print(f"5. idle memory per 10k connections: cutover {per['cutover']:.1f} MiB, nginx "
              f"{per['nginx']:.1f} MiB, ratio {ratio:.2f}x ({'met' if ratio <= 1.0 else 'not met'})")
