#!/usr/bin/env python3
"""Many open streams on one instance: memory, CPU, delivery, and a client that never reads.

Usage: stream-load.py SERVICE_PID PORT API_KEY [STREAMS]

Opens STREAMS (default 1000) SSE streams for as many users, idle for 10 s (heartbeats only),
then creates one notification for 50 of the users and checks each arrives; meanwhile one more
client opens a stream and never reads while 300 notifications are sent to it. Prints the
service's RSS before and with the streams, its CPU use while idle with them, delivery, and
whether the silent client was dropped while the others kept working. Standard library only.
"""
import asyncio
import json
import os
import sys
import time
import urllib.request

pid, port, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
ticks = os.sysconf("SC_CLK_TCK")


def rss_mib():
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def cpu_seconds():
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def post(user, title="x" * 2000):
    body = json.dumps({"recipientId": user, "type": "load", "body": title[:2000]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/notifications", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["id"]


async def open_stream(user, read=True):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/users/{user}/notifications/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def main():
    before = rss_mib()
    streams = [await open_stream(f"load-{i}") for i in range(count)]
    received = {}

    async def read(index, reader):
        buffer = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if b"event: notification" in frame:
                    received[index] = time.monotonic()

    readers = [asyncio.create_task(read(i, r)) for i, (r, _) in enumerate(streams)]
    await asyncio.sleep(3)
    with_streams = rss_mib()
    cpu_start, wall_start = cpu_seconds(), time.monotonic()
    await asyncio.sleep(10)
    idle_cpu = (cpu_seconds() - cpu_start) / (time.monotonic() - wall_start)
    silent_reader, silent_writer = await open_stream("silent")
    loop = asyncio.get_running_loop()
    sent = {}
    for i in range(0, count, count // 50):
        sent[i] = time.monotonic()
        await loop.run_in_executor(None, post, f"load-{i}", "hello")
    for _ in range(300):
        await loop.run_in_executor(None, post, "silent")
    await asyncio.sleep(2)
    delivered = [received[i] - sent[i] for i in sent if i in received]
    print(f"{count} streams: RSS {before:.0f} MiB before, {with_streams:.0f} MiB with them "
          f"({(with_streams - before) * 1024 / count:.1f} KiB per stream); CPU while idle {idle_cpu * 100:.1f}% of one core")
    delivered.sort()
    print(f"delivered {len(delivered)}/{len(sent)} while a silent client held its stream; "
          f"p50 {delivered[len(delivered) // 2] * 1000:.0f} ms, max {delivered[-1] * 1000:.0f} ms" if delivered else "none delivered")
    print(f"RSS after 300 notifications to a client that never reads: {rss_mib():.0f} MiB")
    silent_writer.close()
    for task in readers:
        task.cancel()
    for _, writer in streams:
        writer.close()


asyncio.run(main())
