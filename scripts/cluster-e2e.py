#!/usr/bin/env python3
"""End-to-end checks of the release binary on a real Redis Cluster (issue 21).

Usage: cluster-e2e.py PATH/TO/notifications

Makes a cluster of Debian's redis-server (three masters, three replicas, `e2e.RedisCluster`)
and the MongoDB-wire dev server, runs two instances on them (`REDIS_CLUSTER_NODES`) and
checks what the single-Redis end-to-end checks check, across the two: the global rate limit,
idempotent creates and events, the read-all lock, cache read-your-writes, streams. Then one
master is SIGKILLed under a steady load of reads (user tokens: a rate-limit bucket per user,
on the user's master) and writes for users of every master: no request fails, the other
masters' users stay enforced, and the dead master's users are enforced again once its replica
is promoted, with no restart; their streams deliver again. Prints the timeline.
"""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

TOKEN_KEY = "cluster:cluster-e2e-user-token-secret-32-bytes"
POLICIES = "dev:5/1m,other:unlimited,*:100000/1s,user:100000/1s"


def check(condition, message):
    if not condition:
        raise SystemExit(f"FAILED: {message}")
    print(f"ok: {message}", flush=True)


class Stream:
    """An SSE stream read on a thread of its own; `wait_for(text)` until an event containing it."""

    def __init__(self, port, user):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"GET /v1/users/{user}/notifications/stream HTTP/1.1\r\nHost: e2e\r\nAuthorization: Bearer other-secret\r\n\r\n".encode())
        self.received = ""
        self.lock = threading.Lock()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.received += data.decode(errors="replace")

    def wait_for(self, text, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if text in self.received:
                    return True
            time.sleep(0.02)
        return False

    def close(self):
        self.sock.close()


def users_by_master(cluster, per_master=2):
    """`per_master` user ids whose slots each master serves."""
    masters = cluster.masters()
    found = {port: [] for port in masters}
    index = 0
    while any(len(users) < per_master for users in found.values()):
        user = f"cluster-user-{index}"
        index += 1
        owner = cluster.master_of(user)
        if len(found[owner]) < per_master:
            found[owner].append(user)
    return found


def fallbacks(port):
    text = e2e.call(port, "GET", "/metrics")[2]
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("redis_operations_fallback_total{"))


def features_across_instances(first, second, cluster):
    by_master = users_by_master(cluster)
    users = sorted(user for group in by_master.values() for user in group)
    # The global rate limit: one bucket for both instances.
    statuses = [e2e.call((first if index % 2 else second).port, "GET", "/v1/users/cl-rl/notifications", headers=e2e.auth())[0]
                for index in range(10)]
    check(sorted(statuses) == [200] * 5 + [429] * 5, f"the rate limit is global across the two instances: {sorted(statuses)}")
    writer = e2e.auth("other-secret")
    # Idempotent creates across instances.
    keyed = {**writer, "Idempotency-Key": "cluster-e2e-create"}
    body = {"recipientId": users[0], "type": "once"}
    created = e2e.call(first.port, "POST", "/v1/notifications", body, keyed)
    replayed = e2e.call(second.port, "POST", "/v1/notifications", body, keyed)
    check(created[0] == 201 and replayed[1].get("idempotency-replay") == "true" and replayed[2] == created[2],
          "an idempotent create repeated on the other instance is replayed")
    # Cache read-your-writes across instances.
    user = users[1]
    e2e.call(second.port, "GET", f"/v1/users/{user}/notifications", headers=writer)
    hit = e2e.call(second.port, "GET", f"/v1/users/{user}/notifications", headers=writer)[1].get("x-cache")
    e2e.call(first.port, "POST", "/v1/notifications", {"recipientId": user, "type": "fresh"}, writer)
    feed = e2e.call(second.port, "GET", f"/v1/users/{user}/notifications", headers=writer)[2]
    check(hit == "hit" and [item["type"] for item in feed["items"]] == ["fresh"], "a write on one instance is read on the other at once (cache)")
    # Streams across instances, and an event to users of every master, posted on both: once.
    stream = Stream(second.port, users[2])
    time.sleep(0.3)
    event = {"id": "cluster-e2e-event", "type": "deploy", "actorId": "ops", "audience": {"userIds": users}}
    answers = [e2e.call(port, "POST", "/v1/events", event, writer) for port in (first.port, second.port)]
    check(answers[1][2].get("status") == "duplicate", f"the event posted again on the other instance is a duplicate: {answers[1][2]}")
    check(stream.wait_for('"type":"deploy"'), "a stream on one instance gets the event written through the other")
    stream.close()
    for user in users:
        feed = e2e.call(first.port, "GET", f"/v1/users/{user}/notifications", headers=writer)[2]
        if sum(item["type"] == "deploy" for item in feed["items"]) != 1:
            raise SystemExit(f"FAILED: {user} should have the event's notification once: {feed}")
    print("ok: every user of every master has the event's notification once", flush=True)
    # The read-all lock.
    status = e2e.call(first.port, "POST", f"/v1/users/{users[3]}/notifications/read-all", None, writer)[0]
    check(status == 200, "read-all takes the user's lock on the cluster")
    for service in (first, second):
        check(fallbacks(service.port) == 0, f"no Redis call fell back on instance :{service.port}")
        breakers = e2e.call(service.port, "GET", "/admin/circuit-breakers")[2]["redis"]
        check(breakers["state"] == "closed" and len(breakers["nodes"]) == 3, "three masters' breakers, closed")


def failover_under_load(first, second, cluster):
    by_master = users_by_master(cluster)
    tokens = {}
    for users in by_master.values():
        for user in users:
            tokens[user] = e2e.call(first.port, "POST", f"/v1/users/{user}/tokens", {"ttlSeconds": 600}, e2e.auth("other-secret"))[2]["token"]
    victim = sorted(by_master)[0]
    replica = cluster.replica_of(victim)
    victim_user = by_master[victim][0]
    stream = Stream(second.port, victim_user)
    samples, stop = [], threading.Event()

    def load():
        round_ = 0
        while not stop.is_set():
            round_ += 1
            for master, users in sorted(by_master.items()):
                for user in users:
                    port = (first if round_ % 2 else second).port
                    status, headers, _ = e2e.call(port, "GET", f"/v1/users/{user}/notifications?limit=5", headers=e2e.auth(tokens[user]))
                    samples.append((time.monotonic(), master, status, headers.get("x-ratelimit-status")))
                status = e2e.call(first.port, "POST", "/v1/notifications", {"recipientId": users[0], "type": f"load-{round_}"},
                                  e2e.auth("other-secret"))[0]
                samples.append((time.monotonic(), master, status, "write"))

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(1)
    killed = time.monotonic()
    cluster.kill(victim)
    node = f"127.0.0.1:{victim}"
    opened = promoted = enforced = None
    while time.monotonic() - killed < 40 and enforced is None:
        now = time.monotonic() - killed
        nodes = e2e.call(first.port, "GET", "/admin/circuit-breakers")[2]["redis"]["nodes"]
        if opened is None and nodes.get(node, {}).get("state") == "open":
            opened = now
        if promoted is None and f"127.0.0.1:{replica}" in nodes:
            promoted = now
        if promoted is not None:
            late = [sample for sample in samples if sample[1] == victim and sample[3] != "write" and sample[0] - killed > promoted]
            if late and late[-1][3] == "enforced":
                enforced = late[-1][0] - killed
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    worker.join()
    after = [sample for sample in samples if sample[0] > killed]
    reads = [sample for sample in after if sample[3] != "write"]
    others = [sample for sample in samples if sample[1] != victim and sample[3] != "write"]
    mine = [sample for sample in reads if sample[1] == victim]
    share = sum(sample[3] == "enforced" for sample in reads) / max(1, len(reads))
    print(f"timeline: kill -> breaker of {node} open {opened if opened is None else round(opened, 2)} s -> promotion of "
          f"127.0.0.1:{replica} seen {promoted if promoted is None else round(promoted, 2)} s -> its users enforced again "
          f"{enforced if enforced is None else round(enforced, 2)} s; {len(after)} requests after the kill, {len(reads)} rate-limited "
          f"reads of which {share:.0%} enforced; the dead master's users: {len(mine)} reads, "
          f"{sum(sample[3] == 'bypassed-fail-open' for sample in mine)} bypassed-fail-open", flush=True)
    check(opened is not None, "only the dead master's breaker opened")
    check(promoted is not None and enforced is not None, "its users are enforced again after the promotion, with no restart")
    check(all(sample[2] in (200, 201) for sample in samples), f"no request failed: {sorted({sample[2] for sample in samples})}")
    check(all(sample[3] == "enforced" for sample in others), "the other masters' users stayed enforced throughout")
    e2e.call(first.port, "POST", "/v1/notifications", {"recipientId": victim_user, "type": "after-failover"}, e2e.auth("other-secret"))
    check(stream.wait_for('"type":"after-failover"'), "a stream of the dead master's user delivers again")
    stream.close()


def main():
    e2e.BINARY = os.path.abspath(sys.argv[1])
    servers = e2e.Servers()
    cluster = e2e.RedisCluster()
    services = []
    try:
        settings = {"REDIS_CLUSTER_NODES": cluster.seeds, "RATE_LIMIT_POLICIES": POLICIES, "USER_TOKEN_KEYS": TOKEN_KEY,
                    "REDIS_OPERATION_TIMEOUT_MS": "1000", "LOG_LEVEL": "info"}
        first, second = e2e.Service(servers, **settings), e2e.Service(servers, **settings)
        services += [first, second]
        for service in services:
            while e2e.call(service.port, "GET", "/health/ready")[0] != 200:
                time.sleep(0.3)
        features_across_instances(first, second, cluster)
        failover_under_load(first, second, cluster)
    finally:
        cluster.stop()
        e2e.shut_down(servers, *services)


if __name__ == "__main__":
    main()
