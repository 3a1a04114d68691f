#!/usr/bin/env python3
"""Inbox-state figures for scripts/bench, measured on one server in one run.

Usage: bench_inbox.py SERVICE_PORT MONGO_PORT API_KEY

1. a state change of one item (`POST …/{id}/read`, then `unread`, alternately) against the
   `read` it replaced: the single-item read of before (one findAndModify plus the counter);
   here both are the same route, so the figure is its latency beside a plain create's;
2. `batch` of 1000 ids (archive, then unarchive) against the dev server's own batch operation
   for the same documents: one `update_many` over `_id $in` the 1000 ids;
3. `seen-all` over 1000 unseen notifications against one `update_many` setting `seenAt` on
   the same 1000 (reset between rounds straight in MongoDB);
Medians of ROUNDS rounds each; prints one line per figure, then the figures as one JSON line.
"""
import datetime
import json
import os
import statistics
import sys
import time

from bson import ObjectId
from pymongo import MongoClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (HTTP helpers shared with the end-to-end checks)

service_port, mongo_port, api_key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ROUNDS = int(os.environ.get("INBOX_ROUNDS", "5"))
db = MongoClient(f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true", maxPoolSize=2).notifications


def call(method, path, body=None):
    status, _, answer = e2e.call(service_port, method, path, body, headers=e2e.auth(api_key))
    return status, answer


def timed(action):
    start = time.monotonic()
    result = action()
    return time.monotonic() - start, result


def seed(user, count):
    """`count` unread notifications for `user`, stored straight into MongoDB in one insert, with
    the counter they make (as the service's own writes would leave them)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    documents = [{"_id": ObjectId(), "recipientId": user, "type": "bench.inbox", "actorId": None, "title": f"n{i}", "body": None,
                  "data": "{}", "createdAt": now, "readAt": None, "seenAt": None, "archivedAt": None, "expiresAt": None, "sc": 0}
                 for i in range(count)]
    db.notifications.insert_many(documents, ordered=False)
    db.user_counters.insert_one({"_id": user, "unread": count, "unseen": count, "total": count, "archived": 0, "seq": 1})
    return [document["_id"] for document in documents]


# 1. One item: read/unread alternately, against a create in the same run.
single_user = "bench-inbox-single"
ids = [str(i) for i in seed(single_user, 1)]
singles = []
for i in range(ROUNDS * 20):
    action = "read" if i % 2 == 0 else "unread"
    seconds, (status, _) = timed(lambda: call("POST", f"/v1/users/{single_user}/notifications/{ids[0]}/{action}"))
    assert status == 200
    singles.append(seconds)
creates = []
for i in range(ROUNDS * 20):
    seconds, (status, _) = timed(lambda: call("POST", "/v1/notifications", {"recipientId": "bench-inbox-create", "type": "bench"}))
    assert status == 201
    creates.append(seconds)

# 2. batch of 1000 ids, archive/unarchive, against update_many over the same ids.
batch_user = "bench-inbox-batch"
batch_ids = seed(batch_user, 1000)
ids_json = [str(i) for i in batch_ids]
batch_service, batch_store = [], []
for i in range(ROUNDS):
    for action in ("archive", "unarchive"):
        seconds, (status, answer) = timed(lambda: call("POST", f"/v1/users/{batch_user}/notifications/batch", {"action": action, "ids": ids_json}))
        assert status == 200 and answer["updated"] == 1000, answer
        batch_service.append(seconds)
    for archived in (True, False):
        now = datetime.datetime.now(datetime.timezone.utc) if archived else None
        seconds, result = timed(lambda: db.notifications.update_many(
            {"recipientId": batch_user, "_id": {"$in": batch_ids}, "archivedAt": None if archived else {"$ne": None}},
            {"$set": {"archivedAt": now, "sc": 4 if archived else 0}}))
        assert result.modified_count == 1000, result.modified_count
        batch_store.append(seconds)

# 3. seen-all over 1000 unseen, against update_many over the same documents.
seen_user = "bench-inbox-seen"
seen_ids = seed(seen_user, 1000)
seen_service, seen_store = [], []
for i in range(ROUNDS):
    db.notifications.update_many({"recipientId": seen_user}, {"$set": {"seenAt": None, "sc": 0}})
    seconds, (status, answer) = timed(lambda: call("POST", f"/v1/users/{seen_user}/notifications/seen-all"))
    assert status == 200 and answer["updated"] == 1000, answer
    seen_service.append(seconds)
    db.notifications.update_many({"recipientId": seen_user}, {"$set": {"seenAt": None, "sc": 0}})
    now = datetime.datetime.now(datetime.timezone.utc)
    seconds, result = timed(lambda: db.notifications.update_many(
        {"recipientId": seen_user, "archivedAt": None, "seenAt": None}, {"$set": {"seenAt": now, "sc": 1}}))
    assert result.modified_count == 1000, result.modified_count
    seen_store.append(seconds)


def ms(values, q=None):
    values = sorted(values)
    return (statistics.median(values) if q is None else values[min(len(values) - 1, int(len(values) * q))]) * 1000


figures = {
    "one_item_p50_ms": ms(singles), "one_item_p99_ms": ms(singles, 0.99),
    "create_p50_ms": ms(creates), "create_p99_ms": ms(creates, 0.99),
    "batch_1000_ms": ms(batch_service), "store_batch_1000_ms": ms(batch_store),
    "batch_vs_store": ms(batch_service) / ms(batch_store),
    "seen_all_1000_ms": ms(seen_service), "store_seen_1000_ms": ms(seen_store),
    "seen_all_vs_store": ms(seen_service) / ms(seen_store),
}
print(f"one item: p50 {figures['one_item_p50_ms']:.1f} ms, p99 {figures['one_item_p99_ms']:.1f} ms "
      f"(a create: p50 {figures['create_p50_ms']:.1f} ms)", file=sys.stderr)
print(f"batch of 1000: {figures['batch_1000_ms']:.0f} ms vs the store's update_many {figures['store_batch_1000_ms']:.0f} ms "
      f"({figures['batch_vs_store']:.2f}x)", file=sys.stderr)
print(f"seen-all over 1000: {figures['seen_all_1000_ms']:.0f} ms vs the store's update_many {figures['store_seen_1000_ms']:.0f} ms "
      f"({figures['seen_all_vs_store']:.2f}x)", file=sys.stderr)
print(json.dumps(figures))
