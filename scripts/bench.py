#!/usr/bin/env python3
"""The benchmark behind scripts/bench: one run, one table, one JSON file.

Usage: bench.py PATH/TO/notifications PATH/TO/bare-server

Every HTTP row runs wrk (-t2, CONNECTIONS, DURATION) against the service and, right before,
against a bare Hummingbird 2 server (Benchmarks/Sources/BareServer) returning a fixed body of
the size of that row's response; the ratio of the two is the row's figure (machines here are
noisy: only figures of one run are compared). Servers are the project's own (redis-server,
the MongoDB-wire dev server on tmpfs), started here. Writes bench/results/<date>.json.
"""
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (servers, service and HTTP helpers shared with the end-to-end checks)

DURATION = os.environ.get("DURATION", "10s")
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
OPERATION_TIMEOUT_MS = 200
rows = []


def wrk(url, key, connections=CONNECTIONS, threads=2, script=None):
    """req/s, p50 and p99 (seconds) of one wrk run."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{DURATION}", "--latency", "-H", f"Authorization: Bearer {key}"]
    if script:
        command += ["-s", script]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(name):
        value, unit = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)", output, re.M).groups()
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": rps, "p50": percentile("50"), "p99": percentile("99"), "non2xx": int(errors.group(1)) if errors else 0}


def record(name, result, bare=None, note=""):
    row = {"row": name, **result, "note": note}
    if bare:
        row["bare_rps"] = bare["rps"]
        row["ratio"] = result["rps"] / bare["rps"]
    rows.append(row)
    print(f"  {name}: {result['rps']:.0f} req/s" + (f", ratio {row['ratio']:.2f}" if bare else ""), file=sys.stderr, flush=True)
    return row


def read_row(name, service, bare_port, path, key, note=""):
    status, _, body = e2e.call(service.port, "GET", path, headers=e2e.auth(key))
    size = len(json.dumps(body, separators=(",", ":")).encode()) if isinstance(body, (dict, list)) else len(body.encode())
    bare = wrk(f"http://127.0.0.1:{bare_port}/bytes/{max(size, 2)}", key)
    return record(name, wrk(f"http://127.0.0.1:{service.port}{path}", key), bare, note or f"{size} B body, first answer {status}")


def main():
    binary, bare_binary = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    e2e.BINARY = binary
    servers = e2e.Servers()
    bare_port = e2e.free_port()
    bare = subprocess.Popen([bare_binary, str(bare_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=e2e.die_with_parent)
    work = tempfile.mkdtemp(prefix="notifications-bench-")
    try:
        e2e.wait_port(bare_port)
        service = e2e.Service(servers, API_KEYS="bench:bench-secret,limited:limited-secret",
                              RATE_LIMIT_POLICIES="bench:unlimited,limited:1000000/1s", LOG_LEVEL="warning",
                              ADMIN_TOKEN="bench-admin", EVENT_SYNC_FANOUT_LIMIT="1000",
                              REDIS_OPERATION_TIMEOUT_MS=str(OPERATION_TIMEOUT_MS))
        while e2e.call(service.port, "GET", "/health/ready")[0] != 200:
            time.sleep(0.5)
        print("seeding 200 notifications for bench-user", file=sys.stderr, flush=True)
        for i in range(200):
            e2e.call(service.port, "POST", "/v1/notifications", {"recipientId": "bench-user", "type": "bench", "title": f"n{i}",
                                                                  "data": {"i": i}}, headers=e2e.auth("bench-secret"))
        feed = "/v1/users/bench-user/notifications?limit=20"
        count = "/v1/users/bench-user/notifications/unread-count"
        read_row("cached feed, unlimited key (Redis hit)", service, bare_port, feed, "bench-secret")
        limited = read_row("cached feed, rate-limited key", service, bare_port, feed, "limited-secret")
        rows.append({"row": "cached feed, near-cache hit", "note": "not built yet (FEED_NEAR_CACHE)"})
        read_row("unread count, rate-limited key", service, bare_port, count, "limited-secret")
        # Misses: every request is the first for its user (an empty feed), so it queries MongoDB.
        miss_script = os.path.join(work, "miss.lua")
        with open(miss_script, "w") as handle:
            handle.write('local n = 0\nrequest = function()\n  n = n + 1\n'
                         '  return wrk.format("GET", "/v1/users/miss-" .. math.random(1, 1e9) .. "-" .. n .. "/notifications?limit=20")\nend\n')
        bare_empty = wrk(f"http://127.0.0.1:{bare_port}/bytes/47", "bench-secret")
        record("feed miss (empty feed, MongoDB query)", wrk(f"http://127.0.0.1:{service.port}/", "limited-secret", script=miss_script),
               bare_empty, "a new user per request")

        post_script = os.path.join(work, "post.lua")
        with open(post_script, "w") as handle:
            handle.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal n = 0\n'
                         'request = function()\n  n = n + 1\n'
                         '  return wrk.format(nil, nil, nil, \'{"recipientId":"post-user-\' .. (n % 50) .. \'","type":"bench"}\')\nend\n')
        one = record("POST /v1/notifications, 1 connection", wrk(f"http://127.0.0.1:{service.port}/v1/notifications", "bench-secret",
                                                                  connections=1, threads=1, script=post_script))
        many = record("POST /v1/notifications, 64 connections", wrk(f"http://127.0.0.1:{service.port}/v1/notifications", "bench-secret",
                                                                     connections=64, script=post_script))
        many["vs_one_connection"] = many["rps"] / one["rps"]

        fanout = subprocess.run([os.path.join(e2e.ROOT, ".venv/bin/python"), os.path.join(e2e.ROOT, "scripts/bench_fanout.py"),
                                 str(service.port), str(servers.mongo_port), "bench-secret"], capture_output=True, text=True, check=True)
        print(fanout.stdout, file=sys.stderr, end="", flush=True)
        figures = json.loads(fanout.stdout.strip().splitlines()[-1])
        rows.append({"row": "event fan-out to 1000 recipients", **figures})

        admin = {"Authorization": "Bearer bench-admin"}
        e2e.call(service.port, "POST", "/admin/circuit-breaker/redis/open", headers=admin)
        forced = record("cached feed, breaker forced open (fail-open: MongoDB)", wrk(f"http://127.0.0.1:{service.port}{feed}", "limited-secret"))
        forced["vs_redis_up"] = forced["rps"] / limited["rps"]
        e2e.call(service.port, "POST", "/admin/circuit-breaker/redis/reset", headers=admin)

        # Redis frozen: until the breaker opens (5 failures), each read waits for the operation
        # deadline; a burst of CONNECTIONS reads sent at the moment of the freeze shows that wait.
        # Then wrk measures the fail-open throughput, against the Redis-up row of this run.
        e2e.call(service.port, "GET", feed, headers=e2e.auth("limited-secret"))
        request = f"GET {feed} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer limited-secret\r\n\r\n".encode()
        servers.redis.send_signal(signal.SIGSTOP)
        try:
            burst = sorted(seconds for seconds, _ in e2e.timed_burst(service.port, CONNECTIONS, request))
            rows.append({"row": "Redis SIGSTOP'd: burst at the freeze, before the breaker opens", "requests": len(burst),
                         "p50_ms": burst[len(burst) // 2] * 1000, "max_ms": burst[-1] * 1000,
                         "bound_ms": OPERATION_TIMEOUT_MS + 50})
            after = record("cached feed, Redis SIGSTOP'd, breaker open (fail-open: MongoDB)",
                           wrk(f"http://127.0.0.1:{service.port}{feed}", "limited-secret"))
            after["vs_redis_up"] = after["rps"] / limited["rps"]
        finally:
            servers.redis.send_signal(signal.SIGCONT)
        service.stop()
    finally:
        bare.kill()
        servers.stop()
    print_table()
    os.makedirs(os.path.join(e2e.ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(e2e.ROOT, "bench/results", datetime.date.today().isoformat() + ".json")
    with open(path, "w") as handle:
        json.dump({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "duration": DURATION,
                   "connections": CONNECTIONS, "cpus": os.cpu_count(), "rows": rows}, handle, indent=2)
    print(f"written to {os.path.relpath(path, e2e.ROOT)}")


def print_table():
    print(f"\n{'row':<62} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'bare req/s':>10} {'ratio':>6}")
    for row in rows:
        if "rps" not in row:
            extra = row.get("note") or ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "row")
            print(f"{row['row']:<62} {extra}")
            continue
        bare = f"{row['bare_rps']:>10.0f} {row['ratio']:>6.2f}" if "ratio" in row else f"{'':>10} {'':>6}"
        print(f"{row['row']:<62} {row['rps']:>8.0f} {row['p50'] * 1000:>8.1f} {row['p99'] * 1000:>8.1f} {bare}"
              + (f"  ({row['vs_one_connection']:.1f}x one connection)" if "vs_one_connection" in row else "")
              + (f"  ({row['vs_redis_up']:.3f} of Redis up)" if "vs_redis_up" in row else "")
              + (f"  [{row['non2xx']} non-2xx]" if row.get("non2xx") else ""))


if __name__ == "__main__":
    main()
