#!/usr/bin/env python3
"""End-to-end checks of the real `notifications` binary against real servers.

Usage: e2e.py PATH/TO/notifications

Starts its own redis-server and MongoDB-wire server on free ports (data on tmpfs), runs the
README's curl walkthrough verbatim (with the port substituted), two instances sharing the
servers, a MongoDB outage, SIGTERM draining and bad configuration. Standard library only.
"""
import atexit
import ctypes
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = None
KEY = "dev-secret"
TOKEN_SECRET = "e2e-user-token-secret-of-32-bytes-or-more"
# Every user token a test was given: none may appear in any log (`test_zz_no_secret_in_any_log`).
ISSUED_TOKENS = []
ADMIN_TOKEN = "e2e-admin-token-secret"
# Every service log of the run, so the last test can check that no secret ever reached one.
SERVICE_LOGS = []


_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn of every child: SIGKILL when the test process dies, even by SIGKILL (no orphans)."""
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def call(port, method, path, body=None, headers=None, timeout=15.0):
    """One HTTP request on a fresh connection; returns (status, headers, parsed JSON or text)."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        content_type = response.getheader("Content-Type") or ""
        parsed = json.loads(raw) if raw and "json" in content_type else raw.decode()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        connection.close()


def metric(port, name):
    """The value of one unlabelled series (or the first one) from /metrics."""
    text = call(port, "GET", "/metrics")[2]
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def timed_burst(port, count, request, timeout=30.0):
    """Opens `count` connections, then sends `request` on all at once; returns [(seconds, response head)].

    Connections are opened before the clock starts, and one epoll loop sends and reads (no
    threads, no event-loop framework), so the figures are the service's answer time, not the
    client's scheduling.
    """
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    poller = select.epoll()
    started, received, results = {}, {}, []
    try:
        for sock in sockets:
            sock.setblocking(False)
            poller.register(sock.fileno(), select.EPOLLIN)
            received[sock.fileno()] = b""
        for sock in sockets:
            started[sock.fileno()] = time.perf_counter()
            sock.sendall(request)
        deadline = time.monotonic() + timeout
        by_fd = {sock.fileno(): sock for sock in sockets}
        while len(results) < count and time.monotonic() < deadline:
            for fd, _ in poller.poll(1.0):
                data = by_fd[fd].recv(65536)
                received[fd] += data
                head, separator, body = received[fd].partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head) if separator else None
                if not data or (length and len(body) >= int(length.group(1))):
                    results.append((time.perf_counter() - started[fd], head.decode()))
                    poller.unregister(fd)
        if len(results) < count:
            raise RuntimeError(f"only {len(results)} of {count} answers within {timeout} s")
        return results
    finally:
        poller.close()
        for sock in sockets:
            sock.close()


def auth(key=KEY):
    return {"Authorization": f"Bearer {key}"}


class Servers:
    """redis-server and the MongoDB-wire server as child processes."""

    def __init__(self):
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="notifications-e2e-", dir=base)
        self.redis_port = free_port()
        self.mongo_port = free_port()
        self.redis = None
        self.mongo = None
        self.start_redis()
        self.start_mongo()

    def start_redis(self):
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        wait_port(self.redis_port)

    def start_mongo(self):
        self.mongo = subprocess.Popen(
            [os.path.join(ROOT, ".venv/bin/python"), os.path.join(ROOT, "scripts/mongo-wire-server.py"),
             os.path.join(self.dir, "db"), str(self.mongo_port), "--exit-with-parent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        wait_port(self.mongo_port)

    def kill_redis(self):
        self.redis.send_signal(signal.SIGCONT)
        self.redis.kill()
        self.redis.wait()

    def kill_mongo(self):
        self.mongo.send_signal(signal.SIGCONT)
        self.mongo.kill()
        self.mongo.wait()

    def stop(self):
        for process in (self.redis, self.mongo):
            if process and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()

    def env(self, **extra):
        env = dict(os.environ)
        env.update({
            "API_KEYS": f"dev:{KEY},other:other-secret",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "MONGODB_URI": f"mongodb://127.0.0.1:{self.mongo_port}/notifications?maxPoolSize=3",
            "MONGODB_OPERATION_TIMEOUT_MS": "2000",
            "LOG_LEVEL": "info",
        })
        env.update(extra)
        return env


def free_cluster_port():
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    """A Redis Cluster of Debian's redis-server on loopback: `masters` masters with `replicas`
    replicas each, a short node timeout, `cluster-require-full-coverage no` (a failed master stops
    only its own slots), joined with `redis-cli --cluster create`."""

    def __init__(self, masters=3, node_timeout_ms=1000, replicas=1):
        self.replicas = replicas
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="notifications-cluster-", dir=base)
        self.nodes = {}
        for _ in range((1 + replicas) * masters):
            port = free_cluster_port()
            folder = os.path.join(self.dir, str(port))
            os.makedirs(folder)
            self.nodes[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder,
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms),
                 "--cluster-require-full-coverage", "no", "--cluster-replica-validity-factor", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        for port in self.nodes:
            wait_port(port)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{port}" for port in self.nodes],
                        "--cluster-replicas", str(replicas), "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_until_healthy(masters)

    @property
    def seeds(self):
        return ",".join(f"127.0.0.1:{port}" for port in self.nodes)

    def cli(self, port, *arguments):
        return subprocess.run(["redis-cli", "-p", str(port), *arguments], capture_output=True, text=True, timeout=10).stdout

    def running(self):
        return [port for port, process in self.nodes.items() if process.poll() is None]

    def masters(self):
        """{port: [slot ranges]} of the masters serving slots, as the first running node sees them."""
        found = {}
        for line in self.cli(self.running()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2].split(",") or "fail" in fields[2]:
                continue
            ranges = [tuple(int(bound) for bound in field.split("-")) for field in fields[8:] if not field.startswith("[")]
            found[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = [(r[0], r[-1]) for r in ranges]
        return found

    def replica_of(self, master_port):
        lines = [line.split() for line in self.cli(self.running()[0], "CLUSTER", "NODES").splitlines()]
        master_id = next(fields[0] for fields in lines if fields[1].startswith(f"127.0.0.1:{master_port}@"))
        return next(int(fields[1].split("@")[0].rsplit(":", 1)[1]) for fields in lines if fields[3] == master_id)

    def slot_of(self, key):
        return int(self.cli(self.running()[0], "CLUSTER", "KEYSLOT", key).strip())

    def master_of(self, key):
        slot = self.slot_of(key)
        return next(port for port, ranges in self.masters().items() if any(low <= slot <= high for low, high in ranges))

    def wait_until_healthy(self, masters, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.cli(port, "CLUSTER", "INFO") for port in self.running()]
            roles = [self.cli(port, "ROLE") for port in self.running()]
            if all("cluster_state:ok" in state for state in states) and sum(role.startswith("master") for role in roles) == masters \
                    and all("connected" in role for role in roles if role.startswith("slave")):
                return
            time.sleep(0.2)
        raise RuntimeError("the Redis Cluster did not become healthy")

    def kill(self, port):
        self.nodes[port].kill()
        self.nodes[port].wait()

    def stop(self):
        for process in self.nodes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


class Service:
    """One instance of the binary on a free port."""

    def __init__(self, servers, port=None, **env):
        self.port = port or free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="notifications-e2e-", suffix=".log", delete=False)
        SERVICE_LOGS.append(self.log.name)
        self.process = subprocess.Popen(
            [BINARY, "serve"], env=servers.env(PORT=str(self.port), HOST="127.0.0.1", **env),
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}: {self.logs()}")
            try:
                if call(self.port, "GET", "/health/live", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("service did not start: " + self.logs())

    def logs(self):
        with open(self.log.name) as handle:
            return handle.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


class E2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.servers = Servers()

    @classmethod
    def tearDownClass(cls):
        cls.servers.stop()

    def start(self, **env):
        service = Service(self.servers, **env)
        self.addCleanup(service.stop)
        return service

    def run_documented_block(self, document, marker):
        """Runs a documented bash block (between <!-- marker:start/end -->) verbatim against a fresh instance."""
        service = self.start()
        with open(os.path.join(ROOT, document)) as handle:
            text = handle.read()
        block = re.search(rf"<!-- {marker}:start -->\s*```bash\n(.*?)```\s*<!-- {marker}:end -->", text, re.S)
        self.assertIsNotNone(block, f"{document} has no {marker} block")
        script = block.group(1).replace("localhost:8080", f"localhost:{service.port}")
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        return result.stdout

    def test_readme_walkthrough_runs_verbatim(self):
        output = self.run_documented_block("README.md", "walkthrough")
        self.assertIn('"unreadCount"', output)
        self.assertIn("event: notification", output)
        self.assertIn('"status":"duplicate"', output)
        # The bell opened (seen-all), then the read one archived: out of the inbox's counts.
        self.assertIn('{"unreadCount":2,"unseenCount":0,"totalCount":2,"archivedCount":1}', output)

    def test_readme_error_example_runs_verbatim(self):
        output = self.run_documented_block("README.md", "errors")
        problem = json.loads(output)
        self.assertEqual((problem["status"], problem["code"]), (400, "validation_failed"))
        self.assertEqual(problem["detail"], "limit: must be an integer from 1 to 100")

    def test_operations_drill_runs_verbatim(self):
        output = self.run_documented_block("docs/OPERATIONS.md", "drill")
        self.assertIn('"state":"open"', output)
        self.assertIn("bypassed-fail-open", output)
        self.assertIn('redis_circuit_breaker_state{service="redis"} 2', output)
        self.assertIn('"state":"closed"', output)
        self.assertTrue(output.rstrip().endswith('"circuit":"closed"}}}'), output)

    def test_operations_overload_block_runs_verbatim(self):
        output = self.run_documented_block("docs/OPERATIONS.md", "overload")
        self.assertTrue(output.startswith("HTTP/1.1 200"), output)
        self.assertIn("x-request-id: trace-123", output.lower())
        self.assertIn('http_requests_shed_total{reason="in_flight"} 0', output)
        self.assertIn("http_requests_in_flight 0", output)

    def test_every_documented_curl_is_run_by_a_test(self):
        tested = {"README.md": {"walkthrough", "errors"}, "docs/OPERATIONS.md": {"drill", "overload"}}
        for document, markers in tested.items():
            with open(os.path.join(ROOT, document)) as handle:
                text = handle.read()
            for marker in markers:
                text = re.sub(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", "", text, flags=re.S)
            for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
                self.assertNotRegex(block, r"(?m)^\s*curl .*localhost", f"{document}: a curl outside the blocks the tests run")

    def test_redis_killed_two_instances_keep_serving_then_recover(self):
        fast = {"REDIS_CIRCUIT_RECOVERY_TIMEOUT": "1000", "REDIS_OPERATION_TIMEOUT_MS": "500"}
        first, second = self.start(**fast), self.start(**fast)
        body = {"recipientId": "e2e-redis", "type": "x"}
        self.servers.kill_redis()
        try:
            statuses = []
            for index in range(20):
                port = (first if index % 2 else second).port
                status, headers, _ = call(port, "GET", "/v1/users/e2e-redis/notifications", headers=auth())
                statuses.append((status, headers.get("x-ratelimit-status"), headers.get("x-cache")))
            self.assertTrue(all(s == (200, "bypassed-fail-open", "bypass") for s in statuses), statuses)
            # Exactly once across instances with Redis down: MongoDB holds the key.
            key = {"Idempotency-Key": "e2e-redis-down"}
            created = call(first.port, "POST", "/v1/notifications", body, {**auth(), **key})
            repeat = call(second.port, "POST", "/v1/notifications", body, {**auth(), **key})
            self.assertEqual(created[0], 201)
            self.assertEqual((repeat[0], repeat[1].get("idempotency-replay")), (201, "true"))
            self.assertEqual(repeat[2], created[2])
            for service in (first, second):
                status, _, health = call(service.port, "GET", "/health")
                self.assertEqual((status, health["status"], health["components"]["redis"]["status"]), (200, "degraded", "down"))
                self.assertIn("Circuit breaker OPENED", service.logs())
        finally:
            self.servers.start_redis()
        for service in (first, second):
            deadline = time.monotonic() + 15
            while call(service.port, "GET", "/admin/circuit-breakers")[2]["redis"]["state"] != "closed":
                self.assertLess(time.monotonic(), deadline, "the circuit did not close by itself")
                time.sleep(0.1)
            self.assertIn("Circuit breaker HALF-OPEN", service.logs())
            status, headers, _ = call(service.port, "GET", "/v1/users/e2e-redis/notifications", headers=auth())
            self.assertEqual((status, headers.get("x-ratelimit-status")), (200, "enforced"))

    def test_rate_limit_is_global_across_instances(self):
        first, second = self.start(RATE_LIMIT_POLICIES="dev:5/1m,*:100/1s"), self.start(RATE_LIMIT_POLICIES="dev:5/1m,*:100/1s")
        statuses = [call((first if index % 2 else second).port, "GET", "/v1/users/e2e-rl/notifications", headers=auth())[0]
                    for index in range(10)]
        self.assertEqual(sorted(statuses), [200] * 5 + [429] * 5, statuses)

    def test_write_on_one_instance_is_read_on_another(self):
        first, second = self.start(), self.start()
        status, headers, created = call(first.port, "POST", "/v1/notifications", {"recipientId": "e2e-shared", "type": "ping"}, auth())
        self.assertEqual(status, 201)
        self.assertEqual(headers["location"], f"/v1/users/e2e-shared/notifications/{created['id']}")
        status, _, feed = call(second.port, "GET", "/v1/users/e2e-shared/notifications", headers=auth())
        self.assertEqual(status, 200)
        self.assertEqual([item["id"] for item in feed["items"]], [created["id"]])
        self.assertEqual(feed["unreadCount"], 1)

    def test_mongodb_outage_gives_503_in_time_then_recovers(self):
        service = self.start()
        self.assertEqual(call(service.port, "GET", "/health/ready")[0], 200)
        self.servers.kill_mongo()
        try:
            started = time.monotonic()
            status, headers, problem = call(service.port, "POST", "/v1/notifications", {"recipientId": "e2e-down", "type": "x"}, auth())
            elapsed = time.monotonic() - started
            self.assertEqual(status, 503)
            self.assertEqual(problem["code"], "storage_unavailable")
            self.assertTrue(headers["content-type"].startswith("application/problem+json"))
            self.assertLess(elapsed, 3.5, "503 must come within MONGODB_OPERATION_TIMEOUT_MS (2 s here)")
            self.assertEqual(call(service.port, "GET", "/v1/users/e2e-down/notifications", headers=auth())[0], 503)
            status, _, health = call(service.port, "GET", "/health")
            self.assertEqual((status, health["status"]), (503, "unhealthy"))
            self.assertEqual(call(service.port, "GET", "/health/ready")[0], 503)
            self.assertEqual(call(service.port, "GET", "/health/live")[0], 200)
        finally:
            self.servers.start_mongo()
        deadline = time.monotonic() + 20
        while call(service.port, "GET", "/health/ready")[0] != 200:
            self.assertLess(time.monotonic(), deadline, "service did not recover after MongoDB came back")
            time.sleep(0.2)
        self.assertEqual(call(service.port, "POST", "/v1/notifications", {"recipientId": "e2e-down", "type": "x"}, auth())[0], 201, service.logs())

    def test_frozen_mongodb_gives_503_and_nothing_is_written_later(self):
        service = self.start()
        self.assertEqual(call(service.port, "GET", "/health/ready")[0], 200)
        self.servers.mongo.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            statuses = [call(service.port, "POST", "/v1/notifications", {"recipientId": "e2e-frozen", "type": "x"},
                             {**auth(), "Idempotency-Key": f"frozen-{index}"})[0] for index in range(3)]
            self.assertEqual(statuses, [503, 503, 503])
            self.assertLess(time.monotonic() - started, 3 * 2.5 + 1)
        finally:
            self.servers.mongo.send_signal(signal.SIGCONT)
        time.sleep(4)
        status, _, feed = call(service.port, "GET", "/v1/users/e2e-frozen/notifications", headers=auth())
        self.assertEqual((status, feed["items"], feed["unreadCount"]), (200, [], 0), "a request answered 503 must leave nothing behind")
        # No key was left claimed: the same keys now succeed.
        status = call(service.port, "POST", "/v1/notifications", {"recipientId": "e2e-frozen", "type": "x"},
                      {**auth(), "Idempotency-Key": "frozen-0"})[0]
        self.assertEqual(status, 201)

    def test_load_shedding_with_mongodb_frozen(self):
        """A burst of 10x MAX_IN_FLIGHT creates against a frozen MongoDB: fast 503s, flat memory, full recovery."""
        limit = 32
        service = self.start(MAX_IN_FLIGHT=str(limit), MONGODB_OPERATION_TIMEOUT_MS="20000", RATE_LIMIT_POLICIES="*:1000000/1s")
        body = json.dumps({"recipientId": "e2e-shed", "type": "x"})
        first = call(service.port, "POST", "/v1/notifications", body, auth())
        self.assertEqual(first[0], 201, (first, service.logs()))
        request = (f"POST /v1/notifications HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
        held = []
        self.servers.mongo.send_signal(signal.SIGSTOP)
        try:
            for _ in range(limit):
                worker = threading.Thread(target=lambda: held.append(call(service.port, "POST", "/v1/notifications", body, auth(), timeout=40)[0]))
                worker.start()
            deadline = time.monotonic() + 10
            while metric(service.port, "http_requests_in_flight") != limit:
                self.assertLess(time.monotonic(), deadline, "the held requests did not fill MAX_IN_FLIGHT")
                time.sleep(0.05)
            latencies, reference, rss = [], [], []
            # Memory is read after the first round (buffers and allocator arenas warmed up) and
            # after the last: shedding more requests must not cost more memory.
            # Each burst of shed creates is paired with a burst of the same size to /health/live
            # (never shed, no storage): on a loaded machine both slow down together, so the
            # bound is a ratio measured in the same run rather than a wall-clock figure alone.
            live = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n"
            for _ in range(5):
                results = timed_burst(service.port, 10 * limit, request)
                for elapsed, head in results:
                    self.assertTrue(head.startswith("HTTP/1.1 503"), head)
                    self.assertRegex(head, r"(?i)retry-after: 1\r\n")
                    self.assertNotRegex(head, r"(?i)\r\nratelimit")
                latencies += [elapsed for elapsed, _ in results]
                reference += [elapsed for elapsed, head in timed_burst(service.port, 10 * limit, live) if head.startswith("HTTP/1.1 200")]
                rss.append(rss_kib(service.process.pid))
            rss_before, rss_after = rss[0], rss[-1]
            self.assertEqual(len(reference), 5 * 10 * limit, "/health/live must answer 200 while shedding")

            def percentiles(values):
                values = sorted(values)
                return values[len(values) // 2], values[int(len(values) * 0.99) - 1], values[-1]

            p50, p99, worst = percentiles(latencies)
            live_p50, live_p99, _ = percentiles(reference)
            print(f"\nshedding: {len(latencies)} requests over MAX_IN_FLIGHT={limit} with MongoDB frozen: "
                  f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {worst * 1000:.1f} ms "
                  f"(same-size bursts to /health/live: p50 {live_p50 * 1000:.1f} ms, p99 {live_p99 * 1000:.1f} ms; "
                  f"p99 ratio {p99 / live_p99:.2f}); RSS after each burst (MiB): {[value // 1024 for value in rss]}", file=sys.stderr)
            # A shed request costs what a liveness probe costs; one that waited for the frozen
            # MongoDB would take MONGODB_OPERATION_TIMEOUT_MS (20 s here).
            self.assertLess(p99, max(0.050, 3 * live_p99), "shed requests must be answered at once")
            self.assertLess(worst, 1.0, "no shed request may wait for storage")
            self.assertLess(rss_after - rss_before, 4 * 1024, "memory must stay flat while shedding")
            self.assertEqual(metric(service.port, 'http_requests_shed_total{reason="in_flight"}'), 5 * 10 * limit)
            self.assertEqual(call(service.port, "GET", "/health/live")[0], 200)
        finally:
            self.servers.mongo.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while len(held) < limit and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(held, [201] * limit, "the requests in flight complete once MongoDB is back")
        self.assertEqual(call(service.port, "POST", "/v1/notifications", body, auth())[0], 201)
        self.assertEqual(metric(service.port, "http_requests_in_flight"), 0)

    def test_sigterm_drains_in_flight_requests_and_exits_zero(self):
        service = self.start(SHUTDOWN_GRACE_SECONDS="10")
        # Freeze MongoDB so a request is in flight when SIGTERM arrives, then thaw it.
        self.servers.mongo.send_signal(signal.SIGSTOP)
        result = {}

        def in_flight():
            result["response"] = call(service.port, "POST", "/v1/notifications", {"recipientId": "e2e-drain", "type": "x"}, auth())

        worker = threading.Thread(target=in_flight)
        try:
            worker.start()
            time.sleep(0.3)
            service.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            ready = call(service.port, "GET", "/health/ready")
            self.assertEqual(ready[0], 503, "readiness must turn 503 once draining")
        finally:
            self.servers.mongo.send_signal(signal.SIGCONT)
        worker.join(timeout=10)
        self.assertEqual(result["response"][0], 201, "the in-flight request must finish")
        self.assertEqual(service.process.wait(timeout=12), 0)
        self.assertIn("Shut down cleanly", service.logs())

    def test_sigterm_cancels_what_outlives_the_grace_period_and_exits_zero(self):
        service = self.start(SHUTDOWN_GRACE_SECONDS="2", MONGODB_OPERATION_TIMEOUT_MS="30000")
        self.servers.mongo.send_signal(signal.SIGSTOP)
        try:
            outcome = []

            def create():
                # Past the grace period the request is cancelled and its connection closed: either a
                # 503 or no answer at all is right, never a hang.
                try:
                    outcome.append(call(service.port, "POST", "/v1/notifications", {"recipientId": "e2e-slow", "type": "x"}, auth(),
                                        timeout=40)[0])
                except (ConnectionError, OSError) as error:
                    outcome.append(type(error).__name__)
            worker = threading.Thread(target=create, daemon=True)
            worker.start()
            time.sleep(0.3)
            started = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            self.assertEqual(service.process.wait(timeout=15), 0)
            self.assertLess(time.monotonic() - started, 2 + 1.5, "exit soon after SHUTDOWN_GRACE_SECONDS")
            worker.join(timeout=5)
            self.assertTrue(outcome and outcome[0] in (503, "RemoteDisconnected", "ConnectionResetError"), outcome)
        finally:
            self.servers.mongo.send_signal(signal.SIGCONT)

    def test_json_logs_carry_the_request_id(self):
        service = self.start(LOG_FORMAT="json", LOG_LEVEL="debug", ADMIN_TOKEN=ADMIN_TOKEN)
        status, headers, _ = call(service.port, "GET", "/v1/users/e2e-log/notifications", headers={**auth(), "X-Request-Id": "e2e-request-1"})
        self.assertEqual((status, headers.get("x-request-id")), (200, "e2e-request-1"))
        generated = call(service.port, "GET", "/health/live")[1].get("x-request-id")
        self.assertTrue(generated and generated != "e2e-request-1")
        self.assertEqual(call(service.port, "GET", "/admin/circuit-breakers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})[0], 200)
        self.assertEqual(call(service.port, "GET", "/v1/users/e2e-log/notifications", headers=auth("not-a-key"))[0], 401)
        service.stop()
        lines = [json.loads(line) for line in service.logs().splitlines() if line.strip()]
        self.assertTrue(lines)
        for line in lines:
            self.assertTrue({"timestamp", "level", "message"} <= line.keys(), line)
            self.assertRegex(line["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        tagged = [line for line in lines if line.get("metadata", {}).get("request_id") == "e2e-request-1"]
        self.assertTrue(tagged, "the request's access line names its id")
        self.assertEqual(tagged[0]["metadata"]["path"], "/v1/users/e2e-log/notifications")

    def test_user_tokens_open_one_inbox_and_never_reach_a_log(self):
        service = self.start(LOG_LEVEL="debug", USER_TOKEN_KEYS=f"k1:{TOKEN_SECRET}", CORS_ALLOWED_ORIGINS="https://app.example.com")
        status, headers, minted = call(service.port, "POST", "/v1/users/e2e-tok/tokens", {"ttlSeconds": 120}, auth())
        self.assertEqual(status, 201, minted)
        self.assertEqual(minted["scopes"], ["feed:read", "feed:write", "preferences:write"])
        token = minted["token"]
        ISSUED_TOKENS.append(token)
        bearer = {"Authorization": f"Bearer {token}", "Origin": "https://app.example.com"}
        status, headers, _ = call(service.port, "GET", "/v1/users/e2e-tok/notifications", headers=bearer)
        self.assertEqual(status, 200)
        self.assertEqual(headers["access-control-allow-origin"], "https://app.example.com")
        self.assertEqual(call(service.port, "GET", "/v1/users/someone-else/notifications", headers=bearer)[0], 403)
        self.assertEqual(call(service.port, "POST", "/v1/notifications", {"recipientId": "e2e-tok", "type": "x"}, bearer)[0], 403)
        # The stream takes the token in its query (an EventSource sends no headers); nothing else does.
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        connection.request("GET", f"/v1/users/e2e-tok/notifications/stream?access_token={token}")
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        self.assertIn(b"event:", response.read1(65536))
        status, _, problem = call(service.port, "GET", f"/v1/users/e2e-tok/notifications?access_token={token}")
        self.assertEqual(status, 401)
        self.assertNotIn(token, json.dumps(problem))
        # Revoked: the open stream ends, the token is refused.
        self.assertEqual(call(service.port, "POST", "/v1/users/e2e-tok/tokens/revoke", headers=auth())[0], 204)
        started = time.monotonic()
        response.read()  # to the body's end (the socket's 10 s timeout fails the test first)
        self.assertLess(time.monotonic() - started, 5, "the stream outlived the revocation")
        connection.close()
        status, headers, _ = call(service.port, "GET", "/v1/users/e2e-tok/notifications", headers=bearer)
        self.assertEqual(status, 401)
        self.assertEqual(headers["www-authenticate"], 'Bearer error="invalid_token"')
        service.stop()
        log = service.logs()
        self.assertIn("User token refused", log)
        self.assertNotIn(token, log)
        self.assertNotIn(TOKEN_SECRET, log)

    def test_zz_no_secret_in_any_log(self):
        """Runs last (alphabetical order): greps the logs of every instance this run started."""
        secrets = [KEY, "other-secret", ADMIN_TOKEN, "not-a-key", TOKEN_SECRET] + ISSUED_TOKENS
        self.assertGreater(len(SERVICE_LOGS), 5, "run with the whole suite")
        for path in SERVICE_LOGS:
            with open(path, errors="replace") as handle:
                text = handle.read()
            for secret in secrets:
                self.assertNotIn(secret, text, f"{path} prints a secret")

    def test_bad_configuration_stops_start_up_with_one_line_naming_the_variable(self):
        for name, value in [("PORT", "http"), ("REDIS_FAIL_OPEN", "maybe"), ("RATE_LIMIT_POLICIES", "*:ten/1s"),
                            ("REDIS_URL", "localhost:6379"), ("API_KEYS", "nocolon"), ("LOG_LEVEL", "loud")]:
            result = subprocess.run([BINARY, "serve"], env=self.servers.env(**{name: value}), capture_output=True, text=True, timeout=30)
            self.assertNotEqual(result.returncode, 0, name)
            lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
            self.assertEqual(len(lines), 1, f"{name}: {lines}")
            self.assertIn(name, lines[0])

    def test_check_config_prints_every_setting_with_its_source_and_no_secret(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump({"PORT": 9001, "LOG_LEVEL": "debug", "routeGroupPolicies": {"write": "*:20/1s"}}, handle)
        self.addCleanup(os.unlink, handle.name)
        environment = {**self.servers.env(), "CONFIG_FILE": handle.name, "LOG_LEVEL": "warning", "ADMIN_TOKEN": ADMIN_TOKEN,
                       "REDIS_URL": "redis://:e2e-redis-password@127.0.0.1:6379/0"}
        result = subprocess.run([BINARY, "check-config"], env=environment, capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
        self.assertRegex(rows["PORT"], rf"9001\s+\[{re.escape(handle.name)}\]$")
        self.assertRegex(rows["LOG_LEVEL"], r"warning\s+\[environment\]$")
        self.assertRegex(rows["HOST"], r"0\.0\.0\.0\s+\[default\]$")
        self.assertIn("routeGroupPolicies.write", rows)
        self.assertIn("dev:****", rows["API_KEYS"])
        for secret in (KEY, "other-secret", ADMIN_TOKEN, "e2e-redis-password"):
            self.assertNotIn(secret, result.stdout + result.stderr)

    def test_help_lists_subcommands(self):
        result = subprocess.run([BINARY, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0)
        for command in ("serve", "check-config", "create-indexes"):
            self.assertIn(command, result.stdout)


def shut_down(servers, *services):
    """End of a script: stops its instances (whatever state they are in), the servers, and
    removes the instances' logs."""
    for service in services:
        try:
            service.stop()
        except Exception:
            pass
    servers.stop()
    remove_service_logs()


def remove_service_logs():
    for path in SERVICE_LOGS:
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    atexit.register(remove_service_logs)
    if len(sys.argv) < 2:
        sys.exit("usage: e2e.py PATH/TO/notifications [unittest arguments]")
    BINARY = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
