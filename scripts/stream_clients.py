"""Many Server-Sent Events clients in one asyncio loop, for the storm test and the load bench.

Each `Tab` behaves as clients/js/notifications.js does: it resumes with `Last-Event-ID`,
reconnects after the server's `retry:` (or 1 s) with full-jitter backoff, honours a 503's
`Retry-After`, moves to the next instance when one refuses connections, and de-duplicates by
id. Standard library only: a raw HTTP/1.1 request and a chunked-body parser.
"""
import asyncio
import os
import random
import resource
import time


async def wait_until(predicate, timeout, what):
    """Polls `predicate` until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


def cpu_seconds(pid):
    """CPU time (user and system) a process used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_tabs(tabs, tasks):
    """Closes every tab's connection and cancels the tasks that ran them."""
    for tab in tabs:
        tab.stop()
    for task in tasks:
        task.cancel()


def raise_file_limit():
    """Thousands of sockets here and in the services this process starts (they inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Tab:
    """One browser tab's stream of `user`, across reconnects and instances."""

    def __init__(self, user, ports, key, host="127.0.0.1"):
        self.user, self.ports, self.key, self.host = user, list(ports), key, host
        self.port_index = 0
        self.received = []  # ids in arrival order, duplicates included
        self.seen = set()
        self.last_id = None
        self.retry_ms = 1000
        self.connected = asyncio.Event()
        self.connected_port = None
        self.connected_at = None
        self.connects = 0
        self.resumes = 0
        self.refusals = 0
        self.resets = 0
        self.event_times = {}  # id -> monotonic arrival (first)
        self.first_count = asyncio.Event()
        self.stopped = False
        self.was_connected = False
        self.writer = None

    @property
    def unique(self):
        """Received ids, first arrival of each, in order (what a de-duplicating client shows)."""
        shown, seen = [], set()
        for notification_id in self.received:
            if notification_id not in seen:
                seen.add(notification_id)
                shown.append(notification_id)
        return shown

    async def run(self):
        """Reconnects as clients/js does: after a 503's Retry-After, else the server's `retry:`
        plus a full-jitter backoff (1 s doubling per failed attempt, capped at 30 s)."""
        attempt = 0
        while not self.stopped:
            outcome = await self._connect_once()
            if self.stopped:
                return
            if outcome == "refused-connection":
                # That instance is gone: the next one (what a load balancer's health check does).
                self.port_index = (self.port_index + 1) % len(self.ports)
            if self.was_connected:  # a stream that opened starts the backoff over
                attempt = 0
                self.was_connected = False
            if isinstance(outcome, float):
                delay = outcome
            else:
                delay = self.retry_ms / 1000 + random.uniform(0, min(30.0, 2 ** min(attempt, 16)))
            attempt += 1
            await asyncio.sleep(delay)

    async def _connect_once(self):
        port = self.ports[self.port_index]
        try:
            reader, writer = await asyncio.open_connection(self.host, port)
        except OSError:
            return "refused-connection"
        self.writer = writer
        try:
            headers = f"GET /v1/users/{self.user}/notifications/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.key}\r\n"
            if self.last_id:
                headers += f"Last-Event-ID: {self.last_id}\r\n"
            writer.write((headers + "\r\n").encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            fields = {}
            for line in head.decode().split("\r\n")[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    fields[name.strip().lower()] = value.strip()
            if status != 200:
                self.refusals += 1
                await self._read_body(reader, fields)
                if status == 503 and "retry-after" in fields:
                    return float(fields["retry-after"])
                return "error"
            self.connects += 1
            self.was_connected = True
            if self.last_id:
                self.resumes += 1
            self.connected_port = port
            self.connected_at = time.monotonic()
            self.connected.set()
            await self._read_events(reader)
            return "ended"
        except (OSError, asyncio.IncompleteReadError, ValueError):
            return "lost"
        finally:
            self.connected.clear()
            self.connected_port = None
            writer.close()

    async def _read_body(self, reader, fields):
        if "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            async for _ in self._chunks(reader):
                pass

    @staticmethod
    async def _chunks(reader):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]

    async def _read_events(self, reader):
        pending = b""
        async for chunk in self._chunks(reader):
            pending += chunk
            while b"\n\n" in pending:
                frame, pending = pending.split(b"\n\n", 1)
                self._frame(frame.decode())

    def _frame(self, frame):
        event, event_id = "message", None
        for line in frame.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("retry: "):
                self.retry_ms = int(line[7:])
        if event == "notification" and event_id:
            self.received.append(event_id)
            self.event_times.setdefault(event_id, time.monotonic())
            self.last_id = event_id
        elif event == "reset":
            self.resets += 1
        elif event == "unread-count":
            self.first_count.set()

    def stop(self):
        self.stopped = True
        if self.writer:
            self.writer.close()
