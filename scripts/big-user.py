#!/usr/bin/env python3
"""A user with many notifications on the dev server: page reads against a small user's, and a
read-all that goes to the background.

Usage: big-user.py PATH/TO/notifications [COUNT]   (COUNT defaults to 250000)

Starts redis-server, the MongoDB-wire dev server and one instance, stores COUNT notifications
for `big` and 100 for `small` straight into MongoDB (with the counters they make), then:
1. page reads of each user: the first page (cached after the first read) and pages at random
   cursors (each a cache miss: one MongoDB query), p50/p99 of READS each;
2. `read-all` for `big`: 202, polled until completed; its time, `updated`, and the counts after.
Prints the figures as one JSON line.
"""
import base64
import datetime
import json
import os
import random
import sys
import time

from bson import ObjectId
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, OperationFailure

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

READS = int(os.environ.get("READS", "200"))


def seed(db, user, count, now_ms):
    """`count` unread notifications for `user`, oldest first, one millisecond apart, ending now."""
    for start in range(0, count, 1000):
        documents = []
        for index in range(start, min(start + 1000, count)):
            millis = now_ms - count + index
            created = datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc)
            # As the service makes them (ObjectID.make): seconds in four bytes, then the millisecond
            # in two, then six more. (Milliseconds in all six bytes read as 1970: the retention
            # remover took them for 56 years old.)
            head = (millis // 1000).to_bytes(4, "big") + (millis % 1000).to_bytes(2, "big")
            documents.append({"_id": ObjectId(head + os.urandom(6)), "recipientId": user, "type": "bulk", "actorId": None,
                              "title": f"n{index}", "body": None, "data": "{}", "createdAt": created, "readAt": None,
                              "seenAt": None, "archivedAt": None, "expiresAt": None, "sc": 0})
        insert_when_ready(db.notifications, documents)
    insert_when_ready(db.user_counters, [{"_id": user, "unread": count, "unseen": count, "total": count, "archived": 0, "seq": 1}])


def insert_when_ready(collection, documents):
    """A fresh dev database answers "busy" while the service builds its indexes: wait it out."""
    for _ in range(240):
        try:
            collection.insert_many(documents, ordered=False)
            return
        except BulkWriteError as error:
            # A try cut short by "busy" stored part of it: those are duplicates now.
            if any(e["code"] != 11000 for e in error.details["writeErrors"]):
                raise
            return
        except OperationFailure as error:
            if error.code != 112:
                raise
            time.sleep(0.5)
    raise SystemExit("the dev server stayed busy")


def percentiles(values):
    values = sorted(values)
    return {"p50_ms": values[len(values) // 2] * 1000, "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))] * 1000}


def page_reads(service, user, ids):
    path = f"/v1/users/{user}/notifications?limit=20"
    first, deep = [], []
    for _ in range(READS):
        start = time.perf_counter()
        status, _, _ = e2e.call(service.port, "GET", path, headers=e2e.auth())
        assert status == 200, status
        first.append(time.perf_counter() - start)
    for _ in range(READS):
        # A feed cursor is the last id served, base64url without padding.
        cursor = base64.urlsafe_b64encode(bytes.fromhex(random.choice(ids))).decode().rstrip("=")
        start = time.perf_counter()
        status, _, _ = e2e.call(service.port, "GET", f"{path}&cursor={cursor}", headers=e2e.auth())
        assert status == 200, status
        deep.append(time.perf_counter() - start)
    return {"first_page": percentiles(first), "page_at_random_cursor": percentiles(deep)}


def main():
    e2e.BINARY = os.path.abspath(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 250_000
    servers = e2e.Servers()
    service = None
    try:
        # No cap: with the default FEED_MAX_PER_USER (10000) the remover would trim `big` to its
        # newest 10000 while it is measured (its first run did, and starved the reads).
        service = e2e.Service(servers, LOG_LEVEL="warning", RATE_LIMIT_POLICIES="*:unlimited", MONGODB_OPERATION_TIMEOUT_MS="20000",
                              FEED_MAX_PER_USER="0")
        while e2e.call(service.port, "GET", "/health/ready")[0] != 200:
            time.sleep(0.5)
        db = MongoClient(f"mongodb://127.0.0.1:{servers.mongo_port}/?directConnection=true", maxPoolSize=2).notifications
        now_ms = int(time.time() * 1000) - 1000
        started = time.monotonic()
        seed(db, "big", count, now_ms)
        seed(db, "small", 100, now_ms)
        seeded_s = time.monotonic() - started
        print(f"seeded {count} + 100 in {seeded_s:.0f} s", file=sys.stderr, flush=True)
        big_ids = [str(d["_id"]) for d in db.notifications.find({"recipientId": "big"}, {"_id": 1}).sort([("recipientId", 1), ("_id", -1)]).limit(5000)]
        small_ids = [str(d["_id"]) for d in db.notifications.find({"recipientId": "small"}, {"_id": 1}).sort([("recipientId", 1), ("_id", -1)])]
        figures = {"count": count, "seed_s": seeded_s, "small": page_reads(service, "small", small_ids),
                   "big": page_reads(service, "big", big_ids)}
        print(json.dumps(figures), file=sys.stderr, flush=True)
        started = time.monotonic()
        status, _, answer = e2e.call(service.port, "POST", "/v1/users/big/notifications/read-all", headers=e2e.auth(), timeout=120)
        figures["read_all_status"] = status
        if status == 202:
            # Bounded: on the dev server a batch of a large user can exceed the operation deadline on
            # every try (each resume starts it again), and the run must end with what it saw.
            deadline = time.monotonic() + float(os.environ.get("READ_ALL_TIMEOUT_S", "3600"))
            while time.monotonic() < deadline:
                _, _, operation = e2e.call(service.port, "GET", f"/v1/users/big/notifications/operations/{answer['operationId']}",
                                           headers=e2e.auth())
                if operation.get("status") == "completed":
                    break
                time.sleep(1)
            figures["read_all_operation"] = operation.get("status")
            figures["read_all_updated"] = operation["updated"]
        figures["read_all_s"] = time.monotonic() - started
        figures["counts_after"] = e2e.call(service.port, "GET", "/v1/users/big/notifications/counts", headers=e2e.auth())[2]
        print(json.dumps(figures))
    finally:
        if service:
            service.stop()
        servers.stop()
        e2e.remove_service_logs()


if __name__ == "__main__":
    main()
