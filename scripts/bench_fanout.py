#!/usr/bin/env python3
"""Event fan-out figures for scripts/bench, measured on one server in one run.

Usage: bench_fanout.py SERVICE_PORT MONGO_PORT API_KEY

1. POST /v1/events to 1000 new users (one batch: insert, counters, feed versions, progress);
2. the store's own batch operations for the same documents on the same server: one unordered
   insert of 1000 notifications, then the counter statements the service uses (find the
   existing counters, insert the missing ones, one multi-document $inc);
3. the naive way for contrast: one upsert statement per recipient (100 timed, scaled to 1000);
4. a background fan-out to 10,000 followers (seeded straight into MongoDB): notifications/s.
Prints one line per figure and the ratio of (1) to (2), then the figures as one JSON line.
"""
import json
import os
import sys
import time
import urllib.request

from bson import ObjectId
from pymongo import MongoClient, UpdateOne

service_port, mongo_port, api_key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
db = MongoClient(f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true", maxPoolSize=2).notifications


def call(method, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{service_port}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.loads(response.read() or b"{}")


def timed(action):
    start = time.monotonic()
    result = action()
    return time.monotonic() - start, result


# 1. Through the service.
users = [f"bench-a-{i:04d}" for i in range(1000)]
service_s, (status, answer) = timed(lambda: call("POST", "/v1/events", {
    "id": "bench-1000", "type": "bench.fanout", "actorId": "bench-actor", "audience": {"userIds": users}, "title": "t"}))
assert status == 202 and answer["notificationsCreated"] == 1000, answer

# 2. The store's own batch operations for the same documents (other users, same shapes).
others = [f"bench-b-{i:04d}" for i in range(1000)]
now = int(time.time() * 1000)
documents = [{"_id": ObjectId(), "recipientId": user, "type": "bench.fanout", "actorId": "bench-actor", "title": "t", "body": None,
              "data": "{}", "createdAt": now, "readAt": None} for user in others]


def store_batch():
    db.notifications.insert_many(documents, ordered=False)
    existing = {d["_id"] for d in db.user_counters.find({"_id": {"$in": others}}, {"_id": 1}).sort("_id", 1)}
    missing = [{"_id": u, "unread": 0, "seq": 0} for u in others if u not in existing]
    if missing:
        db.user_counters.insert_many(missing, ordered=False)
    db.user_counters.update_many({"_id": {"$in": others}}, {"$inc": {"unread": 1, "seq": 1}})


store_s, _ = timed(store_batch)

print(f"fan-out to 1000 recipients: service {service_s * 1000:.0f} ms; store's own batch operations {store_s * 1000:.0f} ms "
      f"(ratio {service_s / store_s:.2f})", flush=True)

# 3. Naive: a statement per recipient. The dev server runs an update's statements one by one and
# gives up on a command after 5 s, so 100 statements are timed and scaled to 1000.
naive_users = [f"bench-c-{i:04d}" for i in range(100)]
naive_s, _ = timed(lambda: db.user_counters.bulk_write(
    [UpdateOne({"_id": u}, {"$inc": {"unread": 1}}, upsert=True) for u in naive_users], ordered=False))
print(f"naive counters, one upsert statement per recipient: {naive_s * 1000:.0f} ms for 100, ~{naive_s * 10000:.0f} ms for 1000 "
      f"({naive_s * 10 / store_s:.1f}x the batch operations)", flush=True)

# 4. Background fan-out throughput.
followers = 10_000
for start in range(0, followers, 1000):
    db.followers.insert_many([{"_id": f"bench-star/f{i:05d}", "userId": "bench-star", "followerId": f"f{i:05d}", "createdAt": now}
                              for i in range(start, start + 1000)], ordered=False)
began = time.monotonic()
status, answer = call("POST", "/v1/events", {"id": "bench-10k", "type": "bench.background", "actorId": "bench-star",
                                             "audience": {"followersOf": "bench-star"}})
assert answer["status"] == "in_progress", answer
while True:
    _, event = call("GET", "/v1/events/bench-10k")
    if event["status"] == "completed":
        break
    if time.monotonic() - began > 600:
        sys.exit("background fan-out did not complete within 10 minutes")
    time.sleep(0.2)
elapsed = time.monotonic() - began
print(f"background fan-out to {followers} followers: {elapsed:.1f} s, {event['notificationsCreated'] / elapsed:.0f} notifications/s")
print(json.dumps({"service_ms": service_s * 1000, "store_batch_ms": store_s * 1000, "ratio_to_store": service_s / store_s,
                  "naive_ms_per_1000": naive_s * 10000, "background_per_s": event["notificationsCreated"] / elapsed}))
