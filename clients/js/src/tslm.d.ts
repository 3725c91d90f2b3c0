// Type declarations of @tslm/client (src/tslm.js), written by hand and
// checked by `tsc --noEmit` against test/usage.ts.

/** JSON as the gateway carries it: any value a publisher sent. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A message of a channel. IDs are `<ms>-<seq>` and grow within a channel. */
export interface Message<T = Json> {
  channel: string;
  id: string;
  data: T;
}

/** Messages after `after` were (or may have been) lost while subscribed. */
export interface Gap {
  channel: string;
  after: string;
}

/** A resume could not be proved complete: treat it as data loss. Delivery
 * restarts at the oldest message the server still holds. */
export interface NotResumed {
  channel: string;
  head: string;
}

/** The first acknowledgement of a subscription. */
export interface Subscribed {
  channel: string;
  /** The newest ID the channel ever had (`0-0` if none). */
  head: string;
  /** Present when a `since` was given: whether the resume was proved. */
  resumed?: boolean;
}

/** Error codes of docs/protocol.md, and the client's own. A refused
 * request carries the app's own code instead (any string). */
export type ErrorCode =
  | "bad_request"
  | "unknown_type"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "too_large"
  | "timeout"
  | "rate_limited"
  | "limit_exceeded"
  | "unavailable"
  | "internal"
  | "disconnected"
  | "closed"
  | "unsupported"
  | "connection_closed";

export class TslmError extends Error {
  constructor(code: string, message?: string, extra?: { channel?: string; id?: string; closeCode?: number });
  readonly name: "TslmError";
  /** One of ErrorCode, or an app's code for a refused request. */
  readonly code: ErrorCode | (string & {});
  readonly channel?: string;
  /** The request's ID, for answers to a request. */
  readonly id?: string;
  /** The WebSocket close code, for errors caused by a closed connection. */
  readonly closeCode?: number;
}

export interface Backoff {
  /** First delay in milliseconds (default 100). */
  min?: number;
  /** Largest delay in milliseconds (default 10000). */
  max?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Fraction of the delay taken off at random, 0–1 (default 0.5). */
  jitter?: number;
}

export type Transport = "websocket" | "sse";

export interface ConnectOptions {
  /** A credential (access token, publisher token or API key), or a function
   * returning one, called before every (re)connect so that it can be fresh,
   * and, on WebSocket, again before the credential expires (a minute early,
   * or at 80% of a shorter life) to replace it on the open connection.
   * Sent as an `auth` frame on WebSocket, as `access_token` on SSE. */
  token?: string | (() => string | Promise<string>);
  /** "auto" (default): WebSocket, falling back to SSE; or only one. */
  transport?: "auto" | Transport;
  /** SSE endpoint; default: the WebSocket URL with http(s) and /v1/sse. */
  sseUrl?: string;
  backoff?: Backoff;
  /** WebSocket failures before the first frame that switch "auto" to SSE
   * (default 2). A WebSocket that ever delivered a frame never falls back. */
  fallbackAfter?: number;
  /** Constructors to use instead of the global ones (tests, polyfills). */
  WebSocket?: { new (url: string, protocols?: string | string[]): WebSocket };
  EventSource?: { new (url: string): EventSource };
}

export interface SubscribeOptions<T = Json> {
  /** Deliver every message after this ID, then live ones. */
  since?: string;
  /** Deliver the newest `last` messages, then live ones. */
  last?: number;
  onMessage?: (message: Message<T>) => void;
  onGap?: (gap: Gap) => void;
  onNotResumed?: (info: NotResumed) => void;
  onDeleted?: (info: { channel: string }) => void;
  /** The subscription ended with an error (forbidden, not_found, …). */
  onError?: (error: TslmError) => void;
}

export interface CloseEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
}

export interface ClientEvents {
  open: { transport: Transport };
  close: CloseEvent;
  reconnecting: { attempt: number; delay: number; code: number; reason: string; transport: Transport };
  transport: { transport: Transport; reason: string };
  error: TslmError;
}

export class Subscription<T = Json> implements AsyncIterable<Message<T>> {
  readonly channel: string;
  /** The ID of the last message delivered, or null: where a resume starts. */
  readonly lastId: string | null;
  /** Resolves on the first acknowledgement; rejects if the subscription
   * ends before it. */
  readonly ready: Promise<Subscribed>;
  readonly ended: boolean;
  unsubscribe(): void;
  close(): void;
  /** Messages in order; ends on unsubscribe or delete, throws the error
   * that ended the subscription. Breaking out of the loop unsubscribes.
   * Without onMessage, messages are kept from subscribe() on until the loop
   * reads them; with it, the loop sees those arriving once it began. */
  [Symbol.asyncIterator](): AsyncIterator<Message<T>>;
}

export class Client {
  readonly url: string;
  readonly transport: Transport;
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  on<K extends keyof ClientEvents>(event: K, listener: (detail: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, listener: (detail: ClientEvents[K]) => void): void;
  subscribe<T = Json>(channel: string, options?: SubscribeOptions<T>): Subscription<T>;
  /** WebSocket only: rejects with code "unsupported" over SSE. */
  publish(channel: string, data: unknown, options?: { idempotencyKey?: string }): Promise<{ id: string; duplicate: boolean }>;
  /** WebSocket only. `retention` is a Go duration such as "24h". */
  create(channel: string, options?: { maxLen?: number; retention?: string }): Promise<{ created: boolean }>;
  /** WebSocket only: resolves with the reply's data; rejects with the app's
   * refusal (its code) or `timeout`. */
  request<R = Json>(channel: string, data: unknown, options?: { timeoutMs?: number }): Promise<R>;
  close(): void;
}

export function connect(url: string, options?: ConnectOptions): Client;

/** Compares two message IDs: negative, zero or positive. */
export function compareIds(a: string, b: string): number;

/** The SSE endpoint of a WebSocket URL. */
export function sseUrlFor(wsUrl: string): string;
