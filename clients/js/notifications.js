// A browser client for the notifications service: one user's inbox, live.
// One ES module, no dependencies, no build step: <script type="module"> import it as it is.
//
// It pages the feed, keeps the counts, marks items seen / read / archived, and stays live on
// the stream: resumed by Last-Event-ID, reconnected with jittered backoff, de-duplicated by id.
// It holds a user token, never an API key: `getToken()` (your backend minting one) is called
// before the token expires and after a 401.

const STATE_ACTIONS = new Set(["seen", "read", "unread", "archive", "unarchive"]);

/** Full-jitter exponential backoff: a random delay up to `base * 2^attempt`, capped. */
export function backoffDelay(attempt, { base = 1000, cap = 30000, random = Math.random } = {}) {
  return Math.floor(random() * Math.min(cap, base * 2 ** Math.min(attempt, 16)));
}

/**
 * Splits Server-Sent Events text into events. Returns the events complete so far and the
 * unfinished rest, to be prefixed to the next chunk.
 */
export function parseEvents(text) {
  const events = [];
  const normalized = text.replace(/\r\n?/g, "\n");
  const blocks = normalized.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { event: "message", data: [], id: undefined, retry: undefined };
    let comment = true;
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      comment = false;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event.event = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id") event.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
    }
    if (!comment) events.push({ ...event, data: event.data.join("\n") });
  }
  return { events, rest };
}

/** The inbox of one user. Listen with `subscribe`; call `loadMore()` and `connect()` to start. */
export class NotificationsClient {
  #baseUrl;
  #userId;
  #getToken;
  #fetch;
  #now;
  #random;
  #sleep;
  #pageSize;
  #refreshMargin;
  #token = null;
  #tokenRequest = null;
  #listeners = new Set();
  #ids = new Set();
  #streamController = null;
  #lastEventId = null;

  /**
   * @param {object} options
   * @param {string} options.userId whose inbox this is (the token's `sub`)
   * @param {(context: {reason: string}) => Promise<string | {token: string, expiresAt?: string}>} options.getToken
   * @param {string} [options.baseUrl] the service's origin, e.g. "https://notifications.example.com"
   */
  constructor({ userId, getToken, baseUrl = "", pageSize = 20, refreshMarginMs = 60000, fetch: fetchImpl, now, random, sleep }) {
    if (!userId || typeof getToken !== "function") throw new TypeError("userId and getToken are required");
    this.#userId = userId;
    this.#getToken = getToken;
    this.#baseUrl = baseUrl.replace(/\/$/, "");
    this.#pageSize = pageSize;
    this.#refreshMargin = refreshMarginMs;
    this.#fetch = fetchImpl ?? ((...args) => globalThis.fetch(...args));
    this.#now = now ?? (() => Date.now());
    this.#random = random ?? Math.random;
    this.#sleep = sleep ?? ((ms, signal) => new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    }));
    /** Newest first, as the feed lists them. */
    this.items = [];
    this.counts = { unreadCount: 0, unseenCount: 0, totalCount: 0 };
    this.nextCursor = undefined;
    this.connected = false;
  }

  /** Calls `listener(client, change)` on every change; returns the function that stops it. */
  subscribe(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(change) {
    for (const listener of this.#listeners) {
      try { listener(this, change); } catch (error) { console.error(error); }
    }
  }

  get #userPath() { return `${this.#baseUrl}/v1/users/${encodeURIComponent(this.#userId)}`; }

  /** A token valid for at least the refresh margin: the one held, or a new one. */
  async token({ force = false } = {}) {
    const held = this.#token;
    const fresh = held && (held.expiresAt === undefined || held.expiresAt - this.#now() > this.#refreshMargin);
    if (fresh && !force) return held.token;
    // One request for a new token at a time, whoever asks.
    this.#tokenRequest ??= (async () => {
      try {
        const answer = await this.#getToken({ reason: force ? "rejected" : held ? "expiring" : "initial" });
        const token = typeof answer === "string" ? answer : answer.token;
        const expiresAt = typeof answer === "string" ? undefined : Date.parse(answer.expiresAt);
        this.#token = { token, expiresAt: Number.isNaN(expiresAt) ? undefined : expiresAt };
        return token;
      } finally {
        this.#tokenRequest = null;
      }
    })();
    return this.#tokenRequest;
  }

  /** One API call with the user token; after a 401, once more with a new token. */
  async #call(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.token({ force: attempt > 0 });
      const headers = { Authorization: `Bearer ${token}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await this.#fetch(`${this.#userPath}${path}`, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 401 && attempt === 0) continue;
      if (response.status === 204) return null;
      const answer = await response.json().catch(() => null);
      if (!response.ok) {
        const error = new Error(answer?.detail ?? `HTTP ${response.status}`);
        Object.assign(error, { status: response.status, code: answer?.code, retryAfter: response.headers.get("Retry-After") });
        throw error;
      }
      return answer;
    }
  }

  #setCounts(counts) {
    const next = {
      unreadCount: counts.unreadCount ?? this.counts.unreadCount,
      unseenCount: counts.unseenCount ?? this.counts.unseenCount,
      totalCount: counts.totalCount ?? this.counts.totalCount,
    };
    if (next.unreadCount === this.counts.unreadCount && next.unseenCount === this.counts.unseenCount
      && next.totalCount === this.counts.totalCount) return;
    this.counts = next;
    this.#emit({ type: "counts" });
  }

  #add(notification, { live }) {
    if (this.#ids.has(notification.id)) return false;
    this.#ids.add(notification.id);
    if (live) {
      this.items.unshift(notification);
      this.items.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    } else {
      this.items.push(notification);
    }
    return true;
  }

  /** The next page of the feed (the first when nothing is loaded). False once there is no more. */
  async loadMore() {
    if (this.nextCursor === null) return false;
    const query = new URLSearchParams({ limit: String(this.#pageSize) });
    if (this.nextCursor) query.set("cursor", this.nextCursor);
    const page = await this.#call("GET", `/notifications?${query}`);
    for (const item of page.items) this.#add(item, { live: false });
    this.nextCursor = page.nextCursor ?? null;
    this.#setCounts(page);
    this.#emit({ type: "items" });
    return this.nextCursor !== null;
  }

  /** Drops what is loaded and loads the first page again (the stream's `reset`). */
  async reload() {
    this.items = [];
    this.#ids.clear();
    this.nextCursor = undefined;
    await this.loadMore();
  }

  async loadCounts() {
    this.#setCounts(await this.#call("GET", "/notifications/counts"));
    return this.counts;
  }

  /** `seen`, `read`, `unread`, `archive` or `unarchive` on one notification. */
  async mark(id, action) {
    if (!STATE_ACTIONS.has(action)) throw new TypeError(`unknown action ${action}`);
    const updated = await this.#call("POST", `/notifications/${encodeURIComponent(id)}/${action}`);
    const index = this.items.findIndex((item) => item.id === id);
    if (index >= 0) {
      // The feed lists non-archived notifications: an archived one leaves it.
      if (updated.archivedAt) this.items.splice(index, 1);
      else this.items[index] = updated;
    } else if (!updated.archivedAt && action === "unarchive") {
      this.#ids.delete(id);
      this.#add(updated, { live: true });
    }
    this.#emit({ type: "items" });
    await this.loadCounts();
    return updated;
  }

  markSeen(id) { return this.mark(id, "seen"); }
  markRead(id) { return this.mark(id, "read"); }
  markUnread(id) { return this.mark(id, "unread"); }
  archive(id) { return this.mark(id, "archive"); }
  unarchive(id) { return this.mark(id, "unarchive"); }

  /** `seen-all` (the bell was opened), `read-all` or `archive-all`. */
  async markAll(action) {
    if (!["seen", "read", "archive"].includes(action)) throw new TypeError(`unknown action ${action}`);
    const answer = await this.#call("POST", `/notifications/${action}-all`);
    const time = new Date(this.#now()).toISOString();
    if (action === "archive") this.items = [];
    else for (const item of this.items) {
      item.seenAt ??= time;
      if (action === "read") item.readAt ??= time;
    }
    this.#emit({ type: "items" });
    await this.loadCounts();
    return answer;
  }

  /** Stays live on the stream until `disconnect()`: resumes from the last event it saw. */
  connect() {
    if (this.#streamController) return;
    const controller = new AbortController();
    this.#streamController = controller;
    this.#runStream(controller.signal).catch((error) => console.error(error));
  }

  disconnect() {
    this.#streamController?.abort();
    this.#streamController = null;
    this.#setConnected(false);
  }

  #setConnected(connected) {
    if (this.connected === connected) return;
    this.connected = connected;
    this.#emit({ type: "connection", connected });
  }

  async #runStream(signal) {
    let attempt = 0;
    let retry = 1000;
    let rejected = false;
    while (!signal.aborted) {
      let wait;
      try {
        const token = await this.token({ force: rejected });
        rejected = false;
        const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
        if (this.#lastEventId) headers["Last-Event-ID"] = this.#lastEventId;
        const response = await this.#fetch(`${this.#userPath}/notifications/stream`, { headers, signal });
        if (response.status === 401) {
          rejected = true;
        } else if (response.ok && response.body) {
          attempt = 0;
          this.#setConnected(true);
          retry = await this.#read(response.body, signal, retry);
        } else if (response.headers.get("Retry-After")) {
          wait = Number(response.headers.get("Retry-After")) * 1000;
        }
      } catch (error) {
        if (signal.aborted) return;
      }
      this.#setConnected(false);
      if (signal.aborted) return;
      // Spread: a server's retry (itself spread) at least, then a jittered backoff on top.
      const delay = wait ?? retry + backoffDelay(attempt, { random: this.#random });
      attempt += 1;
      await this.#sleep(delay, signal);
    }
  }

  /** Reads one stream until it ends; returns the last `retry:` the server asked for. */
  async #read(body, signal, retry) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      while (!signal.aborted) {
        const { value, done } = await reader.read();
        if (done) break;
        const parsed = parseEvents(buffer + decoder.decode(value, { stream: true }));
        buffer = parsed.rest;
        for (const event of parsed.events) {
          if (event.retry !== undefined) retry = event.retry;
          if (event.id) this.#lastEventId = event.id;
          await this.#onEvent(event);
        }
      }
    } finally {
      reader.releaseLock?.();
    }
    return retry;
  }

  async #onEvent(event) {
    if (event.event === "notification") {
      const notification = JSON.parse(event.data);
      if (this.#add(notification, { live: true })) this.#emit({ type: "notification", notification });
    } else if (event.event === "counts" || event.event === "unread-count") {
      this.#setCounts(JSON.parse(event.data));
    } else if (event.event === "reset") {
      // More was missed than the stream replays: the feed is loaded again.
      await this.reload();
    }
  }
}
