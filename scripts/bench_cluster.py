#!/usr/bin/env python3
"""The Redis Cluster rows of scripts/bench (issue 21): what running on a cluster costs.

Usage: bench_cluster.py PATH/TO/notifications            (or from bench.py: `cluster_rows`)
       bench_cluster.py PATH/TO/old PATH/TO/new            (two builds in the same turns: did a
                                                           change narrow the cluster's cost?)

On one machine a cluster cannot be faster than one Redis, so this measures cost: the same
cached reads against an instance on one redis-server and an instance on a local cluster of
three masters (`e2e.RedisCluster`, no replicas: replication costs a single Redis's replica as
much, and on two cores it would be measured as the cluster's), both on the same MongoDB-wire
server, in turns (single, cluster, single, cluster) so both see the same machine; each row's
ratio is cluster over single.
Then the service's CPU per request on each (from /proc, the same turns): the difference is
what slot routing costs.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import e2e  # noqa: E402

SETTINGS = {"API_KEYS": "bench:bench-secret,limited:limited-secret", "RATE_LIMIT_POLICIES": "bench:unlimited,limited:1000000/1s,user:1000000/1s",
            "LOG_LEVEL": "warning", "USER_TOKEN_KEYS": "bench:bench-user-token-key-of-at-least-32-bytes",
            "REDIS_OPERATION_TIMEOUT_MS": str(bench.OPERATION_TIMEOUT_MS), "MONGODB_OPERATION_TIMEOUT_MS": "20000"}


def measured(service, path, key, rounds, redis_pids=()):
    """req/s (mean of `rounds` wrk runs), and CPU microseconds per request of the service and
    of the redis-servers in `redis_pids` (0 without them)."""
    rps, cpu, redis_cpu, requests = [], 0.0, 0.0, 0
    for _ in range(rounds):
        before = bench.cpu_seconds(service.process.pid)
        redis_before = sum(bench.cpu_seconds(pid) for pid in redis_pids)
        result = bench.wrk(f"http://127.0.0.1:{service.port}{path}", key)
        cpu += bench.cpu_seconds(service.process.pid) - before
        redis_cpu += sum(bench.cpu_seconds(pid) for pid in redis_pids) - redis_before
        requests += result["requests"]
        rps.append(result)
    return rps, cpu / requests * 1e6, redis_cpu / requests * 1e6


USER = "bench-cluster-user"
FEED = f"/v1/users/{USER}/notifications?limit=20"


def ready_and_cached(services, seeded, keys):
    """Waits until every instance is ready, seeds USER's feed through `seeded` (one per
    MongoDB-wire server), then reads it with each key until Redis has it cached."""
    for service in services:
        while e2e.call(service.port, "GET", "/health/ready")[0] != 200:
            time.sleep(0.5)
    for service in seeded:
        bench.seed_feed(service, 20, user=USER)
    token = e2e.call(seeded[0].port, "POST", f"/v1/users/{USER}/tokens", {"ttlSeconds": 3600}, e2e.auth("bench-secret"))[2]["token"]
    for service in services:
        for key in keys + [token]:
            bench.wait_for_redis_cache(service, FEED, key)
    return token


def cluster_rows(servers, rounds=4, duration="5s"):
    """Rows comparing a single Redis with a cluster, for the bench table."""
    # Short runs in many turns: this machine's speed drifts by ±10 % over minutes, which turns
    # of a few seconds cancel out.
    saved, bench.DURATION = bench.DURATION, duration
    cluster = e2e.RedisCluster(replicas=0)
    single = on_cluster = None
    rows = []
    try:
        single = e2e.Service(servers, **SETTINGS)
        on_cluster = e2e.Service(servers, REDIS_CLUSTER_NODES=cluster.seeds, **SETTINGS)
        token = ready_and_cached([single, on_cluster], [single], ["bench-secret", "limited-secret"])
        feed = FEED
        cpu = {"single": [], "cluster": []}
        for name, key in (("cached feed, unlimited key (Redis hit)", "bench-secret"), ("cached feed, rate-limited key", "limited-secret"),
                          ("cached feed, user token (bucket and cache in one slot)", token)):
            results = {"single": [], "cluster": []}
            row_cpu = {"single": [], "cluster": []}
            row_redis = {"single": [], "cluster": []}
            for _ in range(rounds):
                for label, service, redis_pids in (("single", single, [servers.redis.pid]),
                                                   ("cluster", on_cluster, [node.pid for node in cluster.nodes.values()])):
                    runs, per_request, redis_per_request = measured(service, feed, key, 1, redis_pids)
                    results[label] += runs
                    cpu[label].append(per_request)
                    row_cpu[label].append(per_request)
                    row_redis[label].append(redis_per_request)
            mean = {label: sum(run["rps"] for run in runs) / len(runs) for label, runs in results.items()}
            p99 = {label: max(run["p99"] for run in runs) for label, runs in results.items()}
            non2xx = sum(run["non2xx"] for runs in results.values() for run in runs)
            row = {"row": f"cluster vs single Redis: {name}", "single_rps": mean["single"], "cluster_rps": mean["cluster"],
                   "ratio": mean["cluster"] / mean["single"], "single_p99_ms": p99["single"] * 1000, "cluster_p99_ms": p99["cluster"] * 1000,
                   "single_cpu_us": sum(row_cpu["single"]) / rounds, "cluster_cpu_us": sum(row_cpu["cluster"]) / rounds,
                   "single_redis_cpu_us": sum(row_redis["single"]) / rounds, "cluster_redis_cpu_us": sum(row_redis["cluster"]) / rounds,
                   "non2xx": non2xx}
            print(f"  {row['row']}: {mean['cluster']:.0f} vs {mean['single']:.0f} req/s, ratio {row['ratio']:.3f}; "
                  f"CPU per request {row['cluster_cpu_us']:.0f} vs {row['single_cpu_us']:.0f} us, "
                  f"redis-servers {row['cluster_redis_cpu_us']:.0f} vs {row['single_redis_cpu_us']:.0f} us", file=sys.stderr, flush=True)
            rows.append(row)
        single_us, cluster_us = (sum(cpu[label]) / len(cpu[label]) for label in ("single", "cluster"))
        rows.append({"row": "cluster vs single Redis: service CPU per request (the rows above)", "single_us": single_us,
                     "cluster_us": cluster_us, "extra_us": cluster_us - single_us})
        print(f"  CPU per request: single {single_us:.1f} us, cluster {cluster_us:.1f} us", file=sys.stderr, flush=True)
    finally:
        for service in (single, on_cluster):
            if service:
                service.stop()
        cluster.stop()
        bench.DURATION = saved
    return rows


def compare(binaries, rounds=6, duration="3s"):
    """Each build's single and cluster instances measured in the same turns, row by row."""
    saved, bench.DURATION = bench.DURATION, duration
    cluster = e2e.RedisCluster(replicas=0)
    # One single Redis and MongoDB-wire server per build: the dev server takes 8 connections.
    own_servers, services = [], {}
    try:
        for binary in binaries:
            e2e.BINARY = os.path.abspath(binary)
            servers = e2e.Servers()
            own_servers.append(servers)
            services[(binary, "single")] = e2e.Service(servers, **SETTINGS)
            services[(binary, "cluster")] = e2e.Service(servers, REDIS_CLUSTER_NODES=cluster.seeds, **SETTINGS)
        ready_and_cached(list(services.values()), [services[(binary, "single")] for binary in binaries], ["bench-secret", "limited-secret"])
        feed = FEED
        for name, key in (("unlimited key", "bench-secret"), ("rate-limited key", "limited-secret")):
            runs = {label: [] for label in services}
            for _ in range(rounds):
                for label, service in services.items():
                    runs[label] += [measured(service, feed, key, 1)]
            for binary in binaries:
                rps = {mode: sum(r[0][0]["rps"] for r in runs[(binary, mode)]) / rounds for mode in ("single", "cluster")}
                cpu = {mode: sum(r[1] for r in runs[(binary, mode)]) / rounds for mode in ("single", "cluster")}
                print(f"{name}, {binary}: cluster/single {rps['cluster'] / rps['single']:.3f} ({rps['cluster']:.0f} vs {rps['single']:.0f} req/s); "
                      f"service CPU per request {cpu['cluster']:.0f} vs {cpu['single']:.0f} us", flush=True)
    finally:
        for service in services.values():
            service.stop()
        cluster.stop()
        for servers in own_servers:
            e2e.shut_down(servers)
        bench.DURATION = saved


def main():
    if len(sys.argv) == 3:
        compare(sys.argv[1:])
        return
    e2e.BINARY = os.path.abspath(sys.argv[1])
    servers = e2e.Servers()
    try:
        rows = cluster_rows(servers)
    finally:
        e2e.shut_down(servers)
    for row in rows:
        print(row["row"] + ": " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "row"))


if __name__ == "__main__":
    main()
