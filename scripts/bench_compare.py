#!/usr/bin/env python3
"""Two builds of the service side by side, in one run: did a change make the read paths faster?

Usage: bench_compare.py PATH/TO/old-notifications PATH/TO/new-notifications PATH/TO/bare-server

A single bench run cannot tell a 5% change from the machine's noise between runs. Here both
builds run at once, on the same Redis and MongoDB-wire servers, and each round measures the
bare server, then the old build, then the new one, row by row (wrk -t2, CONNECTIONS, DURATION).
The table gives, over ROUNDS rounds: each build's median ratio to the bare server; the median
of each round's new/old quotient; the CPU time each request cost the service and Redis (from
/proc: the figure least moved by other work on the machine); and how many commands Redis found
per read of a client socket. Rows: the floor (`/health/live`), the cached feed (Redis hit,
unlimited and rate-limited keys) and the near-cache hit (unlimited and rate-limited keys);
with `ROWS=writes`, the floor and creates (`POST /v1/notifications`, 50 recipients, over 1 and
over 64 connections) instead.
"""
import os
import socket
import tempfile
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (wrk, the seeding and the cache warm-ups)
import e2e  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
WRITES = os.environ.get("ROWS", "reads") == "writes"
KEYS = dict(API_KEYS="bench:bench-secret,limited:limited-secret", RATE_LIMIT_POLICIES="bench:unlimited,limited:1000000/1s",
            LOG_LEVEL="warning")


def main():
    old_binary, new_binary, bare_binary = (os.path.abspath(path) for path in sys.argv[1:4])
    servers = e2e.Servers()
    bare_port = e2e.free_port()
    bare = subprocess.Popen([bare_binary, str(bare_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=e2e.die_with_parent)
    instances = {}
    try:
        e2e.wait_port(bare_port)
        # Four instances on a dev server that takes at most 8 connections: one pooled connection
        # each, plus libmongoc's monitoring one (the rows are cached reads).
        uri = f"mongodb://127.0.0.1:{servers.mongo_port}/notifications?maxPoolSize=1"
        for name, binary in (("old", old_binary), ("new", new_binary)):
            e2e.BINARY = binary
            instances[name] = (e2e.Service(servers, MONGODB_URI=uri, **KEYS),
                               e2e.Service(servers, MONGODB_URI=uri, FEED_NEAR_CACHE="true", **KEYS))
        plain, _ = instances["old"]
        bench.seed_feed(plain, 20)
        feed = "/v1/users/bench-user/notifications?limit=20"
        post = os.path.join(tempfile.mkdtemp(), "post.lua")
        with open(post, "w") as handle:
            handle.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal n = 0\n'
                         'request = function()\n  n = n + 1\n'
                         '  return wrk.format(nil, nil, nil, \'{"recipientId":"post-user-\' .. (n % 50) .. \'","type":"bench"}\')\nend\n')
        # (title, plain or near-cache instance, path, key, wrk script, connections)
        floor = ("floor: GET /health/live", 0, "/health/live", "bench-secret", None, bench.CONNECTIONS)
        rows = [floor,
                ("POST create, 1 connection", 0, "/v1/notifications", "bench-secret", post, 1),
                ("POST create, 64 connections", 0, "/v1/notifications", "bench-secret", post, 64)] if WRITES else [
                floor,
                ("cached feed, Redis hit, unlimited", 0, feed, "bench-secret", None, bench.CONNECTIONS),
                ("cached feed, Redis hit, rate-limited", 0, feed, "limited-secret", None, bench.CONNECTIONS),
                ("near-cache hit, unlimited", 1, feed, "bench-secret", None, bench.CONNECTIONS),
                ("near-cache hit, rate-limited", 1, feed, "limited-secret", None, bench.CONNECTIONS)]
        ratios = {(row[0], name): [] for row in rows for name in instances}
        costs = {(row[0], name): [] for row in rows for name in instances}
        batching = {(row[0], name): [] for row in rows for name in instances}
        for round_number in range(ROUNDS):
            for title, which, path, key, script, connections in rows:
                size = 300 if script else bench.body_size(plain, path, key)[1]
                threads = min(2, connections)
                figures = {"bare": bench.wrk(f"http://127.0.0.1:{bare_port}/bytes/{size}", key, connections=connections, threads=threads)["rps"]}
                for name, pair in instances.items():
                    service = pair[which]
                    if which == 1:
                        bench.wait_for_near_cache(service, path, key)
                    elif path == feed:
                        bench.wait_for_redis_cache(service, path, key)
                    before = cpu_seconds(service.process.pid), cpu_seconds(servers.redis.pid), redis_stats(servers.redis_port)
                    result = bench.wrk(f"http://127.0.0.1:{service.port}{path}", key, connections=connections, threads=threads, script=script)
                    if script and result["non2xx"]:
                        raise SystemExit(f"{title}: {result['non2xx']} creates refused by the {name} build")
                    spent = cpu_seconds(service.process.pid) - before[0], cpu_seconds(servers.redis.pid) - before[1]
                    stats = redis_stats(servers.redis_port)
                    reads = stats["total_reads_processed"] - before[2]["total_reads_processed"]
                    commands = stats["total_commands_processed"] - before[2]["total_commands_processed"]
                    batching[(title, name)].append(commands / reads if reads > 100 else 0)
                    figures[name] = result["rps"]
                    ratios[(title, name)].append(figures[name] / figures["bare"])
                    costs[(title, name)].append((spent[0] / result["requests"] * 1e6, spent[1] / result["requests"] * 1e6))
                print(f"round {round_number + 1}: {title}: " + ", ".join(f"{k} {v:.0f} req/s" for k, v in figures.items())
                      + "; CPU µs per request (service, Redis): "
                      + ", ".join(f"{name} {costs[(title, name)][-1][0]:.1f}, {costs[(title, name)][-1][1]:.1f}" for name in instances)
                      + "; Redis commands per read: " + ", ".join(f"{name} {batching[(title, name)][-1]:.2f}" for name in instances),
                      file=sys.stderr, flush=True)
    finally:
        for pair in instances.values():
            for service in pair:
                service.stop()
        bare.kill()
        servers.stop()
    print(f"\n{'median of ' + str(ROUNDS) + ' rounds':<40} {'ratio to bare':>15} {'':>7} {'service CPU µs/req':>20} {'Redis CPU µs/req':>18}")
    print(f"{'':<40} {'old':>7} {'new':>7} {'new/old':>7} {'old':>6} {'new':>6} {'new/old':>7} {'old':>5} {'new':>5} {'new/old':>7}")
    for title, *_ in rows:
        old, new = ratios[(title, "old")], ratios[(title, "new")]
        # Per round, old and new ran seconds apart: their quotient is steadier than the bare figure.
        gain = statistics.median(n / o for o, n in zip(old, new))
        service = [statistics.median(cost[0] for cost in costs[(title, name)]) for name in ("old", "new")]
        redis = [statistics.median(cost[1] for cost in costs[(title, name)]) for name in ("old", "new")]
        print(f"{title:<40} {statistics.median(old):>7.2f} {statistics.median(new):>7.2f} {gain:>7.2f} "
              f"{service[0]:>6.1f} {service[1]:>6.1f} {service[1] / service[0]:>7.2f} "
              # A row that makes no Redis call has no Redis cost to compare.
              f"{redis[0]:>5.1f} {redis[1]:>5.1f} " + (f"{redis[1] / redis[0]:>7.2f}" if redis[0] >= 1 else f"{'-':>7}"))


def redis_stats(port):
    """Redis's INFO stats counters (commands per read shows how many commands a client's
    flushes carry together)."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"INFO stats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += connection.recv(65536)
        header, body = data.split(b"\r\n", 1)
        while len(body) < int(header[1:]):  # a bulk string: $<length>, then the text
            body += connection.recv(65536)
    return {name: int(value) for name, value in (line.split(":", 1) for line in body.decode().splitlines() if ":" in line)
            if value.isdigit()}


def cpu_seconds(pid):
    """User plus system CPU time of a process so far (/proc/PID/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
