#!/usr/bin/env python3
"""Dev/test MongoDB-wire server: briskdb (SQLite-backed) listening on 127.0.0.1:PORT.

Usage: mongo-wire-server.py DATA_DIR PORT [--exit-with-parent]
Prints "ready <address>" once it accepts connections; exits on SIGTERM/SIGINT, and with
--exit-with-parent also when the process that started it is gone (test runners use it, so a
crashed run leaves no server behind; shell scripts that start it in a subshell must not).
"""
import asyncio
import os
import signal
import sys

import briskdb


async def main(path: str, port: int, exit_with_parent: bool) -> None:
    db = await briskdb.connect_async(path, shards=2, documents=True)
    server = await db.serve(http="127.0.0.1:0", admin=None, mongo=f"127.0.0.1:{port}")
    print(f"ready {server.mongo_address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    while not stop.is_set() and (not exit_with_parent or os.getppid() == parent):
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass
    await db.close()


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if argument != "--exit-with-parent"]
    if len(arguments) != 2:
        sys.exit("usage: mongo-wire-server.py DATA_DIR PORT [--exit-with-parent]")
    asyncio.run(main(arguments[0], int(arguments[1]), "--exit-with-parent" in sys.argv))
