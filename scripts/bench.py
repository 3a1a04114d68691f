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
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return {"rps": rps, "requests": requests, "p50": percentile("50"), "p99": percentile("99"),
            "non2xx": int(errors.group(1)) if errors else 0}


def record(name, result, bare=None, note=""):
    row = {"row": name, **result, "note": note}
    if bare:
        row["bare_rps"] = bare["rps"]
        row["ratio"] = result["rps"] / bare["rps"]
    rows.append(row)
    print(f"  {name}: {result['rps']:.0f} req/s" + (f", ratio {row['ratio']:.2f}" if bare else ""), file=sys.stderr, flush=True)
    return row


def body_size(service, path, key):
    """The first answer's status and its body's size in bytes (the bare server's body for the row)."""
    status, _, body = e2e.call(service.port, "GET", path, headers=e2e.auth(key))
    size = len(json.dumps(body, separators=(",", ":")).encode()) if isinstance(body, (dict, list)) else len(body.encode())
    return status, max(size, 2)


def read_row(name, service, bare_port, path, key, note=""):
    status, size = body_size(service, path, key)
    bare = wrk(f"http://127.0.0.1:{bare_port}/bytes/{size}", key)
    return record(name, wrk(f"http://127.0.0.1:{service.port}{path}", key), bare, note or f"{size} B body, first answer {status}")


def seed_feed(service, count, user="bench-user"):
    """Creates `count` notifications for `user`, waiting out the 503s a fresh dev database
    answers while it builds its indexes."""
    for i in range(count):
        for _ in range(120):
            status = e2e.call(service.port, "POST", "/v1/notifications", {"recipientId": user, "type": "bench", "title": f"n{i}",
                                                                           "data": {"i": i}}, headers=e2e.auth("bench-secret"))[0]
            if status == 201:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"creates are refused: {status}")


def wait_for_near_cache(service, path, key):
    """Reads `path` until the instance serves it from its near cache (X-Cache-Tier: local)."""
    wait_for_header(service, path, key, "x-cache-tier", "local", pause=0.01)


def wait_for_redis_cache(service, path, key):
    """Reads `path` until Redis has it cached (X-Cache: hit)."""
    wait_for_header(service, path, key, "x-cache", "hit", pause=0.05)


def wait_for_header(service, path, key, header, wanted, pause, tries=200):
    got = None
    for _ in range(tries):
        got = e2e.call(service.port, "GET", path, headers=e2e.auth(key))[1].get(header)
        if got == wanted:
            return
        time.sleep(pause)
    raise SystemExit(f"{path} never answered {header}: {wanted} (last {got})")


def invalidation_delay(writer, reader, rounds=200):
    """Time from a create's answer on `writer` to the sending of the first read on `reader`
    (near cache on, the count cached locally before the write) not served locally any more
    (`dropped`: the invalidation's delivery, to within one poll), and to the answer of the first
    read that shows the write (`fresh`: plus one reload from MongoDB). Polls go on fresh
    connections, one at a time: the resolution is one request's time (`one_poll_p50_ms`)."""
    path = "/v1/users/inv-user/notifications/unread-count"
    headers = e2e.auth("bench-secret")
    delays, fresh = [], []
    for _ in range(rounds):
        for _ in range(100):
            status, got, body = e2e.call(reader.port, "GET", path, headers=headers)
            if got.get("x-cache-tier") == "local":
                break
        before = body["unreadCount"]
        e2e.call(writer.port, "POST", "/v1/notifications", {"recipientId": "inv-user", "type": "bench"}, headers=headers)
        written = time.perf_counter()
        dropped = None
        while True:
            sent = time.perf_counter()
            _, got, body = e2e.call(reader.port, "GET", path, headers=headers)
            if dropped is None and got.get("x-cache-tier") != "local":
                # The invalidation had arrived when this poll was sent (at most one poll earlier).
                dropped = sent - written
            if body["unreadCount"] != before:
                break
            if time.perf_counter() - written > 5:
                raise SystemExit("an invalidation never arrived")
        delays.append(dropped)
        fresh.append(time.perf_counter() - written)
    delays.sort()
    fresh.sort()
    # The cost of one poll, the resolution of the figure: a read served locally.
    poll = []
    for _ in range(50):
        start = time.perf_counter()
        e2e.call(reader.port, "GET", path, headers=headers)
        poll.append(time.perf_counter() - start)
    poll.sort()
    return {"rounds": rounds, "dropped_p50_ms": delays[rounds // 2] * 1000, "dropped_p99_ms": delays[int(rounds * 0.99) - 1] * 1000,
            "dropped_max_ms": delays[-1] * 1000, "fresh_p99_ms": fresh[int(rounds * 0.99) - 1] * 1000,
            "one_poll_p50_ms": poll[len(poll) // 2] * 1000}


def cpu_seconds(pid):
    """User plus system CPU time of a process so far (/proc/PID/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def token_cpu(service, path, token, key, rounds=3):
    """The service's CPU per request with a user token and with an API key, alternated over a few
    rounds (the same cached read): the difference is what verifying the token costs."""
    spent = {"token": [0.0, 0], "key": [0.0, 0]}
    for _ in range(rounds):
        for name, credential in (("token", token), ("key", key)):
            before = cpu_seconds(service.process.pid)
            result = wrk(f"http://127.0.0.1:{service.port}{path}", credential, connections=16)
            spent[name][0] += cpu_seconds(service.process.pid) - before
            spent[name][1] += result["requests"]
    token_us, key_us = (spent[name][0] / spent[name][1] * 1e6 for name in ("token", "key"))
    print(f"  CPU per request: user token {token_us:.1f} us, API key {key_us:.1f} us", file=sys.stderr, flush=True)
    return {"token_us": token_us, "key_us": key_us, "extra_us": token_us - key_us}


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
                              RATE_LIMIT_POLICIES="bench:unlimited,limited:1000000/1s,user:1000000/1s", LOG_LEVEL="warning",
                              USER_TOKEN_KEYS="bench:bench-user-token-key-of-at-least-32-bytes",
                              ADMIN_TOKEN="bench-admin", EVENT_SYNC_FANOUT_LIMIT="1000",
                              REDIS_OPERATION_TIMEOUT_MS=str(OPERATION_TIMEOUT_MS),
                              # The dev server can take more than the default 5 s for a batch
                              # of 1000 right after the POST rows: measure it, not a 503.
                              MONGODB_OPERATION_TIMEOUT_MS="20000")
        while e2e.call(service.port, "GET", "/health/ready")[0] != 200:
            time.sleep(0.5)
        print("seeding 200 notifications for bench-user", file=sys.stderr, flush=True)
        seed_feed(service, 200)
        feed = "/v1/users/bench-user/notifications?limit=20"
        count = "/v1/users/bench-user/notifications/unread-count"
        # The service's own floor: a route with no work behind the outer middleware (request
        # id, metrics, errors, Redis scope), against the bare server with the same body.
        read_row("floor: GET /health/live (outer middleware, no work)", service, bare_port, "/health/live", "bench-secret")
        read_row("cached feed, unlimited key (Redis hit)", service, bare_port, feed, "bench-secret")
        read_row("cached feed, status=unseen (Redis hit)", service, bare_port, feed + "&status=unseen", "bench-secret",
                 "a filtered page: same path through the cache")
        limited = read_row("cached feed, rate-limited key", service, bare_port, feed, "limited-secret")
        # A browser's request: a user token instead of the API key (both rate limited, per user
        # for the token), then the CPU each costs per request, measured alike (/proc).
        _, _, minted = e2e.call(service.port, "POST", "/v1/users/bench-user/tokens", {"ttlSeconds": 3600}, e2e.auth("bench-secret"))
        token = minted["token"]
        read_row("cached feed, user token", service, bare_port, feed, token, "a user token, rate limited per user")
        rows.append({"row": "CPU per request: user token over API key", **token_cpu(service, feed, token, "limited-secret")})
        # A second instance with the near cache on, on the same Redis and MongoDB.
        near = e2e.Service(servers, API_KEYS="bench:bench-secret,limited:limited-secret",
                           RATE_LIMIT_POLICIES="bench:unlimited,limited:1000000/1s", LOG_LEVEL="warning", FEED_NEAR_CACHE="true")
        while e2e.call(near.port, "GET", "/health/ready")[0] != 200:
            time.sleep(0.5)
        for key in ("bench-secret", "limited-secret"):
            wait_for_near_cache(near, feed, key)
        read_row("cached feed, near-cache hit (unlimited key)", near, bare_port, feed, "bench-secret", "no Redis round trip")
        read_row("cached feed, near-cache hit, rate-limited key", near, bare_port, feed, "limited-secret", "the rate-limit check alone")
        rows.append({"row": "near cache: a write on another instance seen after", **invalidation_delay(service, near)})
        near.stop()
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

        time.sleep(5)  # the POST rows' last writes and counter updates drain first
        fanout = subprocess.run([os.path.join(e2e.ROOT, ".venv/bin/python"), os.path.join(e2e.ROOT, "scripts/bench_fanout.py"),
                                 str(service.port), str(servers.mongo_port), "bench-secret"], capture_output=True, text=True)
        print(fanout.stdout + fanout.stderr, file=sys.stderr, end="", flush=True)
        if fanout.returncode != 0:
            raise SystemExit(f"bench_fanout.py failed ({fanout.returncode})")
        figures = json.loads(fanout.stdout.strip().splitlines()[-1])
        rows.append({"row": "event fan-out to 1000 recipients", **figures})

        inbox = subprocess.run([os.path.join(e2e.ROOT, ".venv/bin/python"), os.path.join(e2e.ROOT, "scripts/bench_inbox.py"),
                                str(service.port), str(servers.mongo_port), "bench-secret"], capture_output=True, text=True)
        print(inbox.stdout + inbox.stderr, file=sys.stderr, end="", flush=True)
        if inbox.returncode != 0:
            raise SystemExit(f"bench_inbox.py failed ({inbox.returncode})")
        rows.append({"row": "inbox states: one item, batch of 1000, seen-all over 1000", **json.loads(inbox.stdout.strip().splitlines()[-1])})

        admin = {"Authorization": "Bearer bench-admin"}
        e2e.call(service.port, "POST", "/admin/circuit-breaker/redis/open", headers=admin)
        forced = record("cached feed, breaker forced open (fail-open: MongoDB)", wrk(f"http://127.0.0.1:{service.port}{feed}", "limited-secret"))
        forced["vs_redis_up"] = forced["rps"] / limited["rps"]
        e2e.call(service.port, "POST", "/admin/circuit-breaker/redis/reset", headers=admin)

        # Redis frozen, the Redis part alone: until the breaker opens (5 failures) a call waits for
        # the operation deadline. A burst of CONNECTIONS rate-limited requests that need nothing
        # but Redis (a POST whose body is refused after the rate-limit check: 400, no MongoDB),
        # sent the moment Redis freezes, shows that wait and the in-memory limiter's answer.
        bad = b'{"recipientId": ""}'
        refused = (f"POST /v1/notifications HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer limited-secret\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(bad)}\r\n\r\n").encode() + bad
        e2e.call(service.port, "POST", "/v1/notifications", bad, headers=e2e.auth("limited-secret"))
        servers.redis.send_signal(signal.SIGSTOP)
        try:
            answers = e2e.timed_burst(service.port, CONNECTIONS, refused)
        finally:
            servers.redis.send_signal(signal.SIGCONT)
        burst = sorted(seconds for seconds, _ in answers)
        statuses = sorted({head.split(" ", 2)[1] for _, head in answers if head})
        rows.append({"row": "Redis SIGSTOP'd: burst at the freeze, Redis only (refused POSTs)", "requests": len(burst),
                     "p50_ms": burst[len(burst) // 2] * 1000, "p99_ms": burst[int(len(burst) * 0.99) - 1] * 1000,
                     "max_ms": burst[-1] * 1000, "bound_ms": OPERATION_TIMEOUT_MS + 50, "statuses": ",".join(statuses)})
        e2e.call(service.port, "POST", "/admin/circuit-breaker/redis/reset", headers=admin)

        # Redis frozen again, now for reads: the same wait, then the fallback to MongoDB (a feed
        # query per request on the dev server). Then wrk measures the fail-open throughput,
        # against the Redis-up row of this run.
        for _ in range(100):
            if e2e.call(service.port, "GET", feed, headers=e2e.auth("limited-secret"))[1].get("x-cache") == "hit":
                break
            time.sleep(0.05)
        request = f"GET {feed} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer limited-secret\r\n\r\n".encode()
        servers.redis.send_signal(signal.SIGSTOP)
        try:
            burst = sorted(seconds for seconds, _ in e2e.timed_burst(service.port, CONNECTIONS, request))
            rows.append({"row": "Redis SIGSTOP'd: burst of feed reads at the freeze (then MongoDB)", "requests": len(burst),
                         "p50_ms": burst[len(burst) // 2] * 1000, "max_ms": burst[-1] * 1000})
            after = record("cached feed, Redis SIGSTOP'd, breaker open (fail-open: MongoDB)",
                           wrk(f"http://127.0.0.1:{service.port}{feed}", "limited-secret"))
            after["vs_redis_up"] = after["rps"] / limited["rps"]
        finally:
            servers.redis.send_signal(signal.SIGCONT)
        service.stop()
        # Redis Cluster against one Redis, in turns (scripts/bench_cluster.py).
        import bench_cluster
        rows.extend(bench_cluster.cluster_rows(servers))
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
