#!/usr/bin/env python3
"""Dev/test MongoDB-wire server: briskdb (SQLite-backed) listening on 127.0.0.1:PORT.

Usage: mongo-wire-server.py DATA_DIR PORT
Prints "ready <address>" once it accepts connections; exits on SIGTERM/SIGINT.
"""
import asyncio
import os
import signal
import sys

import briskdb


async def main(path: str, port: int) -> None:
    db = await briskdb.connect_async(path, shards=2, documents=True)
    server = await db.serve(http="127.0.0.1:0", admin=None, mongo=f"127.0.0.1:{port}")
    print(f"ready {server.mongo_address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    # Exit with the process that started us (a test runner that crashed must not leave us behind).
    while not stop.is_set() and os.getppid() == parent:
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
    await db.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: mongo-wire-server.py DATA_DIR PORT")
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
