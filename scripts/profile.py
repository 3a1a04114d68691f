#!/usr/bin/env python3
"""The profile behind scripts/profile. Usage: [ROW=near|redis|limited] profile.py PATH/TO/notifications

ROW picks the bench row profiled: `near` (default) a near-cache hit with an unlimited key, no
Redis round trip; `redis` a Redis hit with an unlimited key (one round trip, the cache lookup);
`limited` a Redis hit with a rate-limited key (one round trip, the GCRA script reading ahead)."""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the bench's seeding and cache warm-ups)
import e2e  # noqa: E402  (servers, service and HTTP helpers shared with the end-to-end checks)

# Stages of a request, as frames of the call graph (a sample counts for every stage on its stack).
STAGES = [
    ("NIO HTTP/1 decoding", "HTTPDecoder.decode("),
    ("NIO HTTP/1 response encoding", "HTTPResponseEncoder.write"),
    ("socket reads (readv) and writes (writev)", ("readv", "writev")),
    ("Hummingbird: the request's logger metadata (hb.request.id)", "Logger.subscript.setter"),
    ("Hummingbird: routing (RouterTrie.resolve)", "RouterTrie.resolve"),
    ("middleware: request log", "RequestLogMiddleware.handle"),
    ("middleware: metrics", "MetricsMiddleware.handle"),
    ("middleware: authentication", "AuthMiddleware.handle"),
    ("middleware: rate limit, with the route's cache probe", "RateLimitMiddleware.handle"),
    ("  of it: the route's query parsed for the probe", "closure #1 in NotificationRoutes.register"),
    ("route: query parsing (probe and handler)", "NotificationRoutes.pageQuery"),
    ("route: feed page from the near cache", "NotificationFeed.page("),
    ("route: the response (headers, body copy)", "Response.cachedJSON"),
    ("Redis: the gateway (breaker, deadline, metrics) and all below it", ("RedisGateway.attempt", "RedisGateway.call")),
    ("  of it: the pool's send (script hash, command built, connection picked)", "RedisConnectionPool.evaluate"),
    ("  of it: command encoding (hiredis)", "RedisCommandEncoder.encode"),
    ("  of it: reply parsing (hiredis) into RESPValue", "RESPReplyReader"),
    ("  of it: the channel handler (pending replies, deadline timers)", "RedisChannelHandler"),
    ("Swift runtime: task executor lookups at each async hop", "getPreferredTaskExecutor"),
    ("Swift runtime: generic metadata lookups", "getGenericMetadata"),
]


def main():
    binary = os.path.abspath(sys.argv[1])
    row = os.environ.get("ROW", "near")
    if row not in ("near", "redis", "limited"):
        raise SystemExit(f"ROW is near, redis or limited, not {row}")
    key = "limited-secret" if row == "limited" else "bench-secret"
    e2e.BINARY = binary
    servers = e2e.Servers()
    work = tempfile.TemporaryDirectory(prefix="notifications-profile-")
    service = e2e.Service(servers, API_KEYS="bench:bench-secret,limited:limited-secret",
                          RATE_LIMIT_POLICIES="bench:unlimited,limited:1000000/1s", LOG_LEVEL="warning",
                          FEED_NEAR_CACHE="true" if row == "near" else "false")
    try:
        while e2e.call(service.port, "GET", "/health/ready")[0] != 200:
            time.sleep(0.5)
        bench.seed_feed(service, 40)
        path = "/v1/users/bench-user/notifications?limit=20"
        (bench.wait_for_near_cache if row == "near" else bench.wait_for_redis_cache)(service, path, key)
        data = os.path.join(work.name, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(service.process.pid), "-o", data],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        output = subprocess.run(["wrk", "-t2", "-c64", "-d8s", "-H", f"Authorization: Bearer {key}",
                                 f"http://127.0.0.1:{service.port}{path}"], capture_output=True, text=True, check=True).stdout
        perf.send_signal(2)
        perf.wait()
        print(f"row {row}:", re.search(r"Requests/sec:.*", output).group(0), "(under perf)")
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True, check=True).stdout
        demangled = subprocess.run(["swift", "demangle", "--simplified"], input=script, capture_output=True, text=True, check=True).stdout
        stacks = [[line.strip() for line in block.splitlines()[1:]] for block in demangled.split("\n\n") if block.strip()]
        print(f"{len(stacks)} samples of the service; inclusive share of each stage:")
        for name, frames in STAGES:
            frames = frames if isinstance(frames, tuple) else (frames,)
            share = sum(1 for stack in stacks if any(frame in line for line in stack for frame in frames)) / len(stacks)
            print(f"  {share * 100:5.1f}%  {name}")
    finally:
        service.stop()
        servers.stop()
        work.cleanup()


if __name__ == "__main__":
    main()
