// Type declarations of notifications.js (the browser client of the notifications service).

export interface Notification {
  id: string;
  recipientId: string;
  type: string;
  actorId: string | null;
  title: string | null;
  body: string | null;
  data: Record<string, unknown>;
  createdAt: string;
  readAt: string | null;
  seenAt: string | null;
  archivedAt: string | null;
  expiresAt?: string | null;
}

export interface Counts {
  unreadCount: number;
  unseenCount: number;
  totalCount: number;
}

/** What `getToken` may answer: the token, or the token and its expiry (RFC 3339), as `POST …/tokens` answers. */
export type TokenAnswer = string | { token: string; expiresAt?: string };

export type Change =
  | { type: "items" }
  | { type: "counts" }
  | { type: "notification"; notification: Notification }
  | { type: "connection"; connected: boolean };

export type StateAction = "seen" | "read" | "unread" | "archive" | "unarchive";

export interface ClientOptions {
  /** Whose inbox: the token's `sub`. */
  userId: string;
  /** Asks your backend for a user token: at first, before the held one expires, and after a 401. */
  getToken(context: { reason: "initial" | "expiring" | "rejected" }): Promise<TokenAnswer>;
  /** The service's origin; "" for the page's own. */
  baseUrl?: string;
  pageSize?: number;
  /** How long before its expiry a token is replaced (default 60000 ms). */
  refreshMarginMs?: number;
  fetch?: typeof fetch;
  now?: () => number;
  random?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export declare function backoffDelay(attempt: number, options?: { base?: number; cap?: number; random?: () => number }): number;

export declare function parseEvents(text: string): {
  events: { event: string; data: string; id?: string; retry?: number }[];
  rest: string;
};

export declare class NotificationsClient {
  constructor(options: ClientOptions);
  /** Newest first. */
  readonly items: Notification[];
  readonly counts: Counts;
  /** undefined before the first page, null when there is no more. */
  readonly nextCursor: string | null | undefined;
  readonly connected: boolean;
  subscribe(listener: (client: NotificationsClient, change: Change) => void): () => void;
  token(options?: { force?: boolean }): Promise<string>;
  loadMore(): Promise<boolean>;
  reload(): Promise<void>;
  loadCounts(): Promise<Counts>;
  mark(id: string, action: StateAction): Promise<Notification>;
  markSeen(id: string): Promise<Notification>;
  markRead(id: string): Promise<Notification>;
  markUnread(id: string): Promise<Notification>;
  archive(id: string): Promise<Notification>;
  unarchive(id: string): Promise<Notification>;
  markAll(action: "seen" | "read" | "archive"): Promise<{ updated: number } | { operationId: string; status: string; updated: number }>;
  connect(): void;
  disconnect(): void;
}
