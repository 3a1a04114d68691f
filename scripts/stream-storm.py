#!/usr/bin/env python3
"""A reconnection storm, then a Redis outage, with thousands of streams open (issue 20).

Usage: stream-storm.py PATH/TO/notifications [STREAMS]   (default 2000; USERS default STREAMS/2)

Two instances, one Redis, the MongoDB-wire dev server. STREAMS streams (two tabs per user) are
opened on instance A; a writer creates notifications for those users through instance B at a
steady rate the whole time. Then:
1. A is SIGKILLed. Every tab reconnects to B with its Last-Event-ID, after a full-jitter
   backoff, honouring 503 Retry-After (as clients/js does). Checked: all are connected to B
   within 30 s; B's resume queries are at most a tenth of the resumes (mongodb_queries_total);
   a feed read on B during the storm has p99 under 500 ms and is answered 200, or 503
   overloaded with Retry-After.
2. Redis is killed with every stream open on B: B's poll queries per poll interval are at most
   the users / 1000 (rounded up), plus one; Redis comes back.
3. Every notification created before, during and after both is received by each of its
   user's tabs exactly once after de-duplication by id, in order, none missing; no reset.
Prints the figures: time to reconnect all, queries per resume, feed p99, polls per interval.
"""
import asyncio
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
from stream_clients import Tab, cpu_seconds, raise_file_limit, stop_tabs, wait_until  # noqa: E402

STREAMS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
USERS = int(os.environ.get("USERS", STREAMS // 2))
WRITES_PER_SECOND = float(os.environ.get("WRITES_PER_SECOND", "25"))
POLL_MS = 1000


def queries(port, purpose):
    text = e2e.call(port, "GET", "/metrics")[2]
    for line in text.splitlines():
        if line.startswith(f'mongodb_queries_total{{purpose="{purpose}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no mongodb_queries_total for {purpose}")


class Writer(threading.Thread):
    """Creates notifications through one port at a steady rate; remembers each id by user."""

    def __init__(self, port, users):
        super().__init__(daemon=True)
        self.port, self.users = port, users
        self.created = {user: [] for user in users}
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.failures = []
        self.stopped = False

    def create(self, user):
        status, _, body = e2e.call(self.port, "POST", "/v1/notifications", {"recipientId": user, "type": "storm"}, e2e.auth())
        if status != 201:
            self.failures.append((status, body))
            return
        with self.lock:
            self.created[user].append(body["id"])

    def run(self):
        next_at = time.monotonic()
        while not self.stopped:
            self.running.wait()
            self.create(random.choice(self.users))
            next_at += 1 / WRITES_PER_SECOND
            time.sleep(max(0.0, next_at - time.monotonic()))


class FeedProbe:
    """Reads feeds on one port in a loop while a storm lasts, in a process of its own (this
    one's asyncio loop and GIL are busy with the tabs): latencies and unexpected statuses."""

    def __init__(self, port, users):
        self.port, self.users = port, users
        self.stop_flag = multiprocessing.Event()
        self.results = multiprocessing.Queue()
        self.process = multiprocessing.Process(target=self.run, daemon=True)
        self.latencies, self.bad = [], []

    def start(self):
        self.process.start()

    def run(self):
        latencies, bad = [], []
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            status, headers, body = e2e.call(self.port, "GET", f"/v1/users/{random.choice(self.users)}/notifications?limit=20", headers=e2e.auth())
            latencies.append(time.perf_counter() - started)
            overloaded = status == 503 and isinstance(body, dict) and body.get("code") == "overloaded" and "retry-after" in headers
            if status != 200 and not overloaded:
                bad.append(status)
            time.sleep(0.02)
        self.results.put((latencies, bad))

    def stop(self):
        self.stop_flag.set()
        self.latencies, self.bad = self.results.get(timeout=30)
        self.process.join()




def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def storm(binary):
    servers = e2e.Servers()
    env = dict(RATE_LIMIT_POLICIES="dev:unlimited", STREAM_POLL_INTERVAL_MS=str(POLL_MS), LOG_LEVEL="warning",
               REDIS_CIRCUIT_RECOVERY_TIMEOUT_MS="1000")
    first, second = e2e.Service(servers, **env), e2e.Service(servers, **env)
    users = [f"storm-{n}" for n in range(USERS)]
    tabs = [Tab(users[n % USERS], [first.port, second.port], e2e.KEY) for n in range(STREAMS)]
    writer = Writer(second.port, users)
    processes = {"B": second.process.pid, "MongoDB-wire server": servers.mongo.pid, "redis": servers.redis.pid, "clients": os.getpid()}
    tasks = []
    try:
        # Every user has a notification before the streams open, so every tab has a Last-Event-ID
        # once it received the first live one; tabs open at the accept rate A allows.
        tasks = [asyncio.create_task(tab.run()) for tab in tabs]
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(tab.connected.wait() for tab in tabs)), timeout=120)
        await asyncio.wait_for(asyncio.gather(*(tab.first_count.wait() for tab in tabs)), timeout=60)
        assert all(tab.connected_port == first.port for tab in tabs), "every tab starts on A"
        print(f"{STREAMS} streams ({USERS} users) open on A in {time.monotonic() - started:.1f} s")
        # One live notification per user (through B, pushed to A), so each tab has a resume point.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, writer.create, user) for user in users))
        await wait_until(lambda: all(tab.last_id for tab in tabs), 30, "every tab received its first notification")
        writer.start()
        writer.running.set()
        await asyncio.sleep(3)

        # 1. The storm.
        resumes_before = queries(second.port, "stream_resume")
        opens_before = queries(second.port, "stream_open")
        counts_before, pages_before = queries(second.port, "counts"), queries(second.port, "feed_page")
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        probe = FeedProbe(second.port, users)
        probe.start()
        killed_at = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        await wait_until(lambda: all(tab.connected_port == second.port for tab in tabs), 30,
                         "every tab connected to B within 30 s of the kill")
        all_back = time.monotonic() - killed_at
        await asyncio.sleep(1)
        probe.stop()
        storm_seconds = time.monotonic() - killed_at
        cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / storm_seconds for name, pid in processes.items()}
        other_queries = {"counts": queries(second.port, "counts") - counts_before, "feed_page": queries(second.port, "feed_page") - pages_before}
        # Every reconnect after the kill carried a Last-Event-ID (each tab had received one).
        resumed = sum(tab.resumes for tab in tabs)
        resume_queries = queries(second.port, "stream_resume") - resumes_before
        open_queries = queries(second.port, "stream_open") - opens_before
        refused = sum(tab.refusals for tab in tabs)
        feed_p50, feed_p99 = percentile(probe.latencies, 0.5), percentile(probe.latencies, 0.99)
        print(f"storm: all {STREAMS} back on B {all_back:.1f} s after the kill ({refused} refusals at the accept rate); "
              f"{resume_queries:.0f} resume queries for {resumed} resumes ({resume_queries / resumed:.3f} per resume), "
              f"{open_queries:.0f} open queries; feed reads on B during it: p50 {feed_p50 * 1000:.0f} ms, "
              f"p99 {feed_p99 * 1000:.0f} ms, max {max(probe.latencies) * 1000:.0f} ms over {len(probe.latencies)} reads")
        print(f"  during it, B's other queries: {other_queries}; CPU (cores): "
              + ", ".join(f"{name} {share:.2f}" for name, share in cpu.items()))
        assert resumed >= STREAMS, (resumed, STREAMS)
        assert resume_queries <= resumed / 10, f"{resume_queries} resume queries for {resumed} resumes"
        assert not probe.bad, f"feed reads during the storm answered {set(probe.bad)}"
        assert feed_p99 < 0.5, f"feed p99 {feed_p99 * 1000:.0f} ms during the storm"

        # 2. Redis killed with every stream on B: polling, shared.
        await asyncio.sleep(2)
        servers.kill_redis()
        await asyncio.sleep(3)  # the breaker opens with the writer's failures
        polls_before, polled_from = queries(second.port, "stream_poll"), time.monotonic()
        await asyncio.sleep(8)
        polls = queries(second.port, "stream_poll") - polls_before
        intervals = (time.monotonic() - polled_from) / (POLL_MS / 1000)
        per_interval = polls / intervals
        allowed = math.ceil(USERS / 1000)
        servers.start_redis()
        assert polls >= 1, "B polled MongoDB while Redis was down"
        assert per_interval <= allowed + 1, f"{polls:.0f} poll queries in {intervals:.1f} intervals for {USERS} users"
        print(f"redis down: {polls:.0f} poll queries in {intervals:.1f} intervals ({per_interval:.2f} per interval, "
              f"{USERS} users: at most {allowed} per poll)")
        await asyncio.sleep(6)  # push again

        # 3. Exactly once, in order, none missing.
        writer.running.clear()
        writer.stopped = True
        await asyncio.sleep(12)  # the last writes reach every tab (a lost publish: the next check)
        assert not writer.failures, f"creates failed: {writer.failures[:3]}"
        problems = []
        for tab in tabs:
            with writer.lock:
                expected = list(writer.created[tab.user])
            shown = tab.unique
            # Each tab saw its user's first notification live before the storm began.
            if shown != expected:
                missing = set(expected) - set(shown)
                extra = set(shown) - set(expected)
                problems.append(f"{tab.user}: {len(missing)} missing, {len(extra)} unexpected, order {'ok' if not missing and not extra else '-'}")
            if tab.resets:
                problems.append(f"{tab.user}: {tab.resets} reset")
        total = sum(len(ids) for ids in writer.created.values())
        duplicates = sum(len(tab.received) - len(tab.unique) for tab in tabs)
        assert not problems, f"{len(problems)} tabs wrong, e.g. {problems[:5]}"
        print(f"delivery: {total} notifications to {USERS} users, every one on each of its tabs exactly once after "
              f"de-duplication, in order ({duplicates} repeats across reconnects removed by id)")
    finally:
        stop_tabs(tabs, tasks)
        writer.stopped = True
        writer.running.set()
        e2e.shut_down(servers, first, second)


def main():
    raise_file_limit()
    e2e.BINARY = os.path.abspath(sys.argv[1])
    asyncio.run(storm(e2e.BINARY))


if __name__ == "__main__":
    main()
