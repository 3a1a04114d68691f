// Unit tests of the browser client, under Node's own test runner: `node --test clients/js/test/`.
// The service is faked at the fetch boundary; the real one is driven by scripts/browser-e2e.py.
import assert from "node:assert/strict";
import { test } from "node:test";
import { NotificationsClient, backoffDelay, parseEvents } from "../notifications.js";

const json = (status, body, headers = {}) =>
  new Response(body === null ? null : JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

/** A stream response that sends `frames`, then ends. */
const stream = (frames) => new Response(new ReadableStream({
  start(controller) {
    for (const frame of frames) controller.enqueue(new TextEncoder().encode(frame));
    controller.close();
  },
}), { status: 200, headers: { "Content-Type": "text/event-stream" } });

const notification = (id, extra = {}) => ({
  id, recipientId: "alice", type: "t", actorId: null, title: null, body: null, data: {}, createdAt: "2026-12-05T10:00:00.000Z",
  readAt: null, seenAt: null, archivedAt: null, ...extra,
});

test("parses events across chunk boundaries, CRLF, comments and retry lines", () => {
  const first = parseEvents("event: counts\r\ndata: {\"unreadCount\":1}\r\n\r\n: keep-alive\n\nid: a1\nevent: notif");
  assert.deepEqual(first.events, [{ event: "counts", data: "{\"unreadCount\":1}", id: undefined, retry: undefined }]);
  const second = parseEvents(first.rest + "ication\ndata: x\ndata: y\n\nretry: 2500\n\n");
  assert.deepEqual(second.events, [
    { event: "notification", data: "x\ny", id: "a1", retry: undefined },
    { event: "message", data: "", id: undefined, retry: 2500 },
  ]);
  assert.equal(second.rest, "");
});

test("backoff is jittered and capped", () => {
  assert.equal(backoffDelay(0, { random: () => 0.999 }), 999);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 4000);
  assert.equal(backoffDelay(40, { random: () => 0.999 }), 29970);
  assert.equal(backoffDelay(5, { random: () => 0 }), 0);
});

test("a token is refreshed before it expires and after a 401, one request at a time", async () => {
  let clock = Date.parse("2026-12-05T10:00:00Z");
  const reasons = [];
  let issued = 0;
  const seen = [];
  const client = new NotificationsClient({
    userId: "alice", now: () => clock,
    getToken: async ({ reason }) => {
      reasons.push(reason);
      issued += 1;
      return { token: `t${issued}`, expiresAt: new Date(clock + 600_000).toISOString() };
    },
    fetch: async (url, init) => {
      seen.push(init.headers.Authorization);
      if (init.headers.Authorization === "Bearer t2") return json(401, { code: "unauthorized" });
      return json(200, { unreadCount: 2, unseenCount: 1, totalCount: 3, archivedCount: 0 });
    },
  });
  await Promise.all([client.loadCounts(), client.loadCounts()]);
  assert.deepEqual(reasons, ["initial"]);
  clock += 600_000 - 30_000; // within the refresh margin
  await client.loadCounts(); // t2 is refused: t3
  assert.deepEqual(reasons, ["initial", "expiring", "rejected"]);
  assert.deepEqual(seen, ["Bearer t1", "Bearer t1", "Bearer t2", "Bearer t3"]);
  assert.deepEqual(client.counts, { unreadCount: 2, unseenCount: 1, totalCount: 3 });
});

test("the stream resumes from the last id, de-duplicates and waits a jittered retry", async () => {
  const requests = [];
  const sleeps = [];
  const client = new NotificationsClient({
    userId: "alice", getToken: async () => "tok", random: () => 0.5,
    sleep: async (ms) => { sleeps.push(ms); if (sleeps.length >= 2) client.disconnect(); },
    fetch: async (url, init) => {
      requests.push({ url, lastEventId: init.headers["Last-Event-ID"] });
      if (url.includes("/notifications?")) return json(200, { items: [notification("b2")], nextCursor: null, unreadCount: 1, unseenCount: 1, totalCount: 1 });
      if (requests.filter((r) => r.url.endsWith("/stream")).length === 1) {
        return stream([
          "event: counts\ndata: {\"unreadCount\":1,\"unseenCount\":1,\"totalCount\":1}\n\n",
          `event: notification\nid: b2\ndata: ${JSON.stringify(notification("b2"))}\n\n`,
          `event: notification\nid: c3\ndata: ${JSON.stringify(notification("c3"))}\n\n`,
          "retry: 4000\n\n",
        ]);
      }
      return stream([`event: notification\nid: c3\ndata: ${JSON.stringify(notification("c3"))}\n\n`]);
    },
  });
  const live = [];
  client.subscribe((_, change) => { if (change.type === "notification") live.push(change.notification.id); });
  await client.loadMore();
  client.connect();
  while (sleeps.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  const streams = requests.filter((r) => r.url.endsWith("/notifications/stream"));
  assert.equal(streams[0].lastEventId, undefined);
  assert.equal(streams[1].lastEventId, "c3");
  assert.deepEqual(live, ["c3"]); // b2 was on the page; c3 came twice
  assert.deepEqual(client.items.map((item) => item.id), ["c3", "b2"]);
  // The server's retry plus jitter (the backoff restarts after each stream that connected).
  assert.deepEqual(sleeps, [4000 + 500, 4000 + 500]);
});

test("a rejected stream gets a new token; archiving takes the item out of the feed", async () => {
  const tokens = [];
  let streamCalls = 0;
  const client = new NotificationsClient({
    userId: "alice", random: () => 0,
    getToken: async ({ reason }) => { tokens.push(reason); return `t${tokens.length}`; },
    sleep: async () => { if (streamCalls >= 2) client.disconnect(); },
    fetch: async (url, init) => {
      if (url.endsWith("/stream")) {
        streamCalls += 1;
        return init.headers.Authorization === "Bearer t1" ? json(401, { code: "unauthorized" }) : stream([]);
      }
      if (url.endsWith("/archive")) return json(200, notification("a1", { archivedAt: "2026-12-05T10:00:01.000Z" }));
      if (url.endsWith("/counts")) return json(200, { unreadCount: 0, unseenCount: 0, totalCount: 0, archivedCount: 1 });
      return json(200, { items: [notification("a1")], nextCursor: null, unreadCount: 1, unseenCount: 1, totalCount: 1 });
    },
  });
  await client.loadMore();
  client.connect();
  while (streamCalls < 2) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.deepEqual(tokens, ["initial", "rejected"]);
  await client.archive("a1");
  assert.deepEqual(client.items, []);
  assert.equal(client.counts.totalCount, 0);
  client.disconnect();
});
