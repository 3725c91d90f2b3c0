// @tslm/client: the browser client of the TSLM gateway (docs/protocol.md).
//
// One dependency-free ES module. A Client keeps one connection: a WebSocket
// speaking tslm.v1, or, when WebSockets cannot get through (a proxy that
// refuses upgrades, a socket that dies before its first frame), a
// Server-Sent Events stream on /v1/sse that carries subscriptions only.
// Either way it reconnects with exponential backoff and jitter and resumes
// every channel after the last ID it delivered, so the app sees each
// message once and in order, and is told (onGap, onNotResumed) when the
// server could not prove that nothing was lost.

const SUBPROTOCOL = "tslm.v1";

/** Close codes after which reconnecting cannot help until something
 * changes (a credential): docs/protocol.md "Close codes", 4500–4999. */
function isFatalClose(code) {
  return code >= 4500 && code <= 4999;
}

const DEFAULT_BACKOFF = { min: 100, max: 10000, factor: 2, jitter: 0.5 };

/**
 * An error of the protocol (`code` from docs/protocol.md's table, or the
 * app's own code for a refused request), or of the client itself:
 * `disconnected` (the connection was lost before the answer; a publish
 * may still have been stored: retry it with an idempotencyKey),
 * `closed` (the client was closed), `unsupported` (publish or request
 * over SSE), `connection_closed` (a close code the client will not
 * reconnect after: see closeCode).
 */
export class TslmError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "TslmError";
    this.code = code;
    if (extra.channel !== undefined) this.channel = extra.channel;
    if (extra.id !== undefined) this.id = extra.id;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
  }
}

/**
 * Compares two message IDs (`<ms>-<seq>`, decimal, no leading zeros):
 * negative, zero or positive as a sorts before, with or after b.
 */
export function compareIds(a, b) {
  const [am, as = "0"] = String(a).split("-");
  const [bm, bs = "0"] = String(b).split("-");
  return compareDecimal(am, bm) || compareDecimal(as, bs);
}

function compareDecimal(a, b) {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Derives the SSE endpoint from a WebSocket URL: ws→http, wss→https, and
 * a path ending in /v1/ws becomes /v1/sse.
 */
export function sseUrlFor(wsUrl) {
  const u = new URL(wsUrl, globalThis.location ? globalThis.location.href : undefined);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  u.pathname = u.pathname.replace(/\/v1\/ws\/?$/, "/v1/sse");
  if (!u.pathname.endsWith("/v1/sse")) u.pathname = u.pathname.replace(/\/?$/, "/v1/sse");
  u.search = "";
  u.hash = "";
  return u.toString();
}

/** Opens a client; it connects in the background. See tslm.d.ts. */
export function connect(url, options = {}) {
  return new Client(url, options);
}

export class Client {
  constructor(url, options = {}) {
    this.url = url;
    this._opts = options;
    this._backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
    this._fallbackAfter = options.fallbackAfter ?? 2;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._EventSource = options.EventSource || globalThis.EventSource;
    this._listeners = new Map();
    this._subs = new Map(); // channel → Subscription
    this._refSeq = 0;
    this._commands = new Map(); // ref → {resolve, reject, kind}
    this._subRefs = new Map(); // ref → Subscription (kept after the ack)
    this._requests = new Map(); // channel\nid → pending request
    this._session = null;
    this._attempt = 0;
    this._earlyFailures = 0;
    this._timer = null;
    this._closed = false;
    this._wsWorked = false;
    this._conn = null; // the live transport state
    this._openWaiters = [];
    const t = options.transport || "auto";
    if (!["auto", "websocket", "sse"].includes(t)) throw new TypeError(`transport must be "auto", "websocket" or "sse", not ${JSON.stringify(t)}`);
    /** The transport in use: "websocket" or "sse". */
    this.transport = t === "sse" ? "sse" : "websocket";
    this._fixed = t !== "auto";
    /** "connecting", "open", "reconnecting" or "closed". */
    this.state = "connecting";
    queueMicrotask(() => this._open());
  }

  // ---- events -------------------------------------------------------

  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, detail) {
    for (const fn of [...(this._listeners.get(event) || [])]) {
      try {
        fn(detail);
      } catch (e) {
        reportError(e);
      }
    }
  }

  // ---- public API ---------------------------------------------------

  /** Subscribes to channel; see tslm.d.ts for the options. */
  subscribe(channel, options = {}) {
    if (this._closed) throw new TslmError("closed", "the client is closed");
    if (this._subs.has(channel)) throw new TslmError("bad_request", `already subscribed to ${JSON.stringify(channel)}`);
    if (options.since !== undefined && options.last !== undefined) throw new TypeError("give since or last, not both");
    const sub = new Subscription(this, channel, options);
    this._subs.set(channel, sub);
    this._conn?.add(sub);
    return sub;
  }

  /** Publishes data; resolves with the message's ID. WebSocket only. */
  async publish(channel, data, options = {}) {
    const frame = { type: "publish", channel, data };
    if (options.idempotencyKey !== undefined) frame.idempotency_key = options.idempotencyKey;
    const ack = await this._command(frame);
    return { id: ack.id, duplicate: ack.duplicate === true };
  }

  /** Creates channel; resolves with whether it was created. WebSocket only. */
  async create(channel, options = {}) {
    const frame = { type: "create", channel };
    if (options.maxLen !== undefined) frame.max_len = options.maxLen;
    if (options.retention !== undefined) frame.retention = options.retention;
    const ack = await this._command(frame);
    return { created: ack.created === true };
  }

  /** Sends a request; resolves with the reply's data. WebSocket only. */
  async request(channel, data, options = {}) {
    const frame = { type: "request", channel, data };
    if (options.timeoutMs !== undefined) frame.timeout_ms = options.timeoutMs;
    const timeoutMs = options.timeoutMs ?? 60000;
    const ws = await this._websocket();
    const ref = this._ref();
    return new Promise((resolve, reject) => {
      // explicit: a resumed session asks for the time left only when the
      // app chose it; otherwise the server's default applies again.
      const req = { channel, ref, resolve, reject, deadline: Date.now() + timeoutMs, explicit: options.timeoutMs !== undefined, id: null, timer: null };
      this._commands.set(ref, {
        kind: "request",
        req,
        resolve: (ack) => {
          req.id = ack.id;
          if (ack.session) this._session = ack.session;
          this._requests.set(requestKey(channel, ack.id), req);
          // The server answers timeout at the deadline; this only ends
          // the wait when no server is there to say so.
          req.timer = setTimeout(() => this._settleRequest(req, new TslmError("timeout", "no reply before the request's deadline", { channel, id: req.id })), timeoutMs + 5000);
        },
        reject,
      });
      ws.send({ ...frame, ref });
    });
  }

  /** Closes the connection and ends every subscription. */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    this._conn?.close();
    this._conn = null;
    this._failAll(new TslmError("closed", "the client is closed"));
    for (const sub of [...this._subs.values()]) sub._end(null);
    this._setState("closed");
    this._emit("close", { code: 1000, reason: "closed by the app", willReconnect: false });
  }

  // ---- internals ----------------------------------------------------

  _ref() {
    return String(++this._refSeq);
  }

  async _websocket() {
    if (this._closed) throw new TslmError("closed", "the client is closed");
    if (this.transport === "sse") throw unsupported();
    if (this._conn?.ready && this._conn.kind === "websocket") return this._conn;
    await new Promise((resolve, reject) => this._openWaiters.push({ resolve, reject }));
    if (this.transport === "sse") throw unsupported();
    const conn = this._conn;
    // Lost again between its open and this continuation: the command
    // would be sent nowhere and never answered.
    if (!conn || conn.done) throw new TslmError("disconnected", "the connection was lost before the command was sent");
    return conn;
  }

  async _command(frame) {
    const ws = await this._websocket();
    const ref = this._ref();
    return new Promise((resolve, reject) => {
      this._commands.set(ref, { kind: frame.type, resolve, reject });
      ws.send({ ...frame, ref });
    });
  }

  _settleRequest(req, err, data) {
    clearTimeout(req.timer);
    if (req.id !== null) this._requests.delete(requestKey(req.channel, req.id));
    if (err) req.reject(err);
    else req.resolve(data);
  }

  _failAll(err) {
    for (const c of this._commands.values()) if (c.kind !== "auth") c.reject(err);
    this._commands.clear();
    for (const req of [...this._requests.values()]) this._settleRequest(req, err);
    for (const w of this._openWaiters.splice(0)) w.reject(err);
  }

  _setState(s) {
    this.state = s;
  }

  async _token() {
    const t = this._opts.token;
    if (typeof t === "function") return await t();
    return t;
  }

  _open() {
    if (this._closed) return;
    const conn = this.transport === "sse" ? new SseConn(this) : new WsConn(this);
    this._conn = conn;
    conn.start();
  }

  // Called by a transport once it can carry commands and subscriptions.
  _ready(conn) {
    if (conn !== this._conn) return;
    this._attempt = 0;
    this._setState("open");
    this._emit("open", { transport: this.transport });
    if (this.transport === "sse") {
      for (const w of this._openWaiters.splice(0)) w.reject(unsupported());
    } else {
      for (const w of this._openWaiters.splice(0)) w.resolve();
    }
  }

  // Called by a transport that ended. early: it died before its first
  // frame; fatal: an error the client must not reconnect after.
  _lost(conn, { code = 1006, reason = "", early = false, fatal = null }) {
    if (conn !== this._conn || this._closed) return;
    this._conn = null;
    // Commands in flight: their answers are lost with the connection.
    const lost = new TslmError("disconnected", "the connection was lost before the answer", { closeCode: code });
    for (const c of this._commands.values()) {
      // Acknowledged requests wait in _requests for the session's resume;
      // a session frame is simply sent again.
      if (c.kind !== "session" && c.kind !== "auth") c.reject(lost);
    }
    this._commands.clear();
    this._subRefs.clear();
    for (const sub of this._subs.values()) sub._state = "subscribing";
    if (fatal) {
      this._closed = true;
      this._failAll(fatal);
      for (const sub of [...this._subs.values()]) sub._end(fatal);
      this._setState("closed");
      this._emit("error", fatal);
      this._emit("close", { code, reason, willReconnect: false });
      return;
    }
    this._emit("close", { code, reason, willReconnect: true });
    if (early) this._earlyFailures++;
    // A WebSocket that ever carried a frame proves the path lets them
    // through: its later failures are a server away (a restart), which
    // SSE would not get past either.
    if (!this._fixed && !this._wsWorked && this.transport === "websocket" && this._earlyFailures >= this._fallbackAfter) {
      this.transport = "sse";
      this._attempt = 0;
      this._emit("transport", { transport: "sse", reason: `the WebSocket failed ${this._earlyFailures} times before its first frame` });
      // Requests cannot follow to SSE: their answers are lost to the app.
      for (const req of [...this._requests.values()]) this._settleRequest(req, unsupported());
      for (const w of this._openWaiters.splice(0)) w.reject(unsupported());
    }
    this._reconnect(code, reason);
  }

  _reconnect(code, reason) {
    const b = this._backoff;
    const base = Math.min(b.max, b.min * Math.pow(b.factor, this._attempt));
    // Jitter spreads the clients of a replica that went away over time,
    // so that they do not all reconnect to the next one at once.
    const delay = Math.round(base * (1 - b.jitter * Math.random()));
    this._attempt++;
    this._setState("reconnecting");
    this._emit("reconnecting", { attempt: this._attempt, delay, code, reason, transport: this.transport });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _firstFrame() {
    this._earlyFailures = 0;
    if (this.transport === "websocket") this._wsWorked = true;
  }
}

function unsupported() {
  return new TslmError("unsupported", "publish, create and request need the WebSocket transport; this client fell back to Server-Sent Events, which carry subscriptions only");
}

function requestKey(channel, id) {
  return channel + "\n" + id;
}

function reportError(e) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(e);
  else setTimeout(() => {
    throw e;
  });
}

// ---- WebSocket transport ----------------------------------------------

class WsConn {
  constructor(client) {
    this.client = client;
    this.kind = "websocket";
    this.ready = false;
    this.sawFrame = false;
    this.socket = null;
    this.done = false;
  }

  async start() {
    const c = this.client;
    let token;
    try {
      token = await c._token();
    } catch (e) {
      this.fail(1006, "token: " + (e && e.message));
      return;
    }
    if (this.done) return;
    try {
      this.socket = new c._WebSocket(c.url, SUBPROTOCOL);
    } catch (e) {
      // A constructor that throws (a blocked or missing WebSocket) is a
      // socket that could not be opened.
      this.fail(1006, String((e && e.message) || e), true);
      return;
    }
    const s = this.socket;
    s.onopen = () => {
      if (this.done) return;
      if (token) this.authenticate(token);
      this.resumeSession();
      for (const sub of c._subs.values()) this.subscribe(sub);
      // Nothing sent, nothing to wait for: an open socket is all the
      // proof there is that WebSockets get through.
      if (!token && c._subs.size === 0) this.frame();
      this.ready = true;
      c._ready(this);
    };
    s.onmessage = (ev) => this.onFrame(ev.data);
    s.onerror = () => {};
    s.onclose = (ev) => this.fail(ev.code, ev.reason, !this.sawFrame);
  }

  fail(code, reason, early = false) {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.refreshTimer);
    this.ready = false;
    const c = this.client;
    let fatal = null;
    if (isFatalClose(code)) {
      fatal = new TslmError("connection_closed", `the server closed the connection with ${code}${reason ? ": " + reason : ""}; not reconnecting until the credential changes`, { closeCode: code });
    }
    c._lost(this, { code, reason, early, fatal });
  }

  close() {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.refreshTimer);
    try {
      this.socket?.close(1000, "closed by the app");
    } catch {
      // already closing
    }
  }

  send(frame) {
    this.socket.send(JSON.stringify(frame));
  }

  frame() {
    if (!this.sawFrame) {
      this.sawFrame = true;
      this.client._firstFrame();
    }
  }

  // Sends the auth frame. When the app gave a token function, a fresh
  // credential replaces this one before it expires, so that the server
  // never closes the connection with 4501.
  authenticate(token) {
    const c = this.client;
    const ref = c._ref();
    c._commands.set(ref, {
      kind: "auth",
      resolve: (ack) => {
        if (!ack.expires || typeof c._opts.token !== "function") return;
        const left = Date.parse(ack.expires) - Date.now();
        if (!(left > 0)) return;
        // A minute early, or at 80% of a lifetime under two minutes.
        const at = left > 120000 ? left - 60000 : left * 0.8;
        clearTimeout(this.refreshTimer);
        this.refreshTimer = setTimeout(async () => {
          if (this.done) return;
          let fresh;
          try {
            fresh = await c._token();
          } catch (e) {
            c._emit("error", new TslmError("unauthorized", "token refresh failed: " + ((e && e.message) || e)));
            return;
          }
          if (!this.done && fresh) this.authenticate(fresh);
        }, at);
      },
      reject: (err) => c._emit("error", err),
    });
    this.send({ type: "auth", ref, token });
  }

  resumeSession() {
    const c = this.client;
    if (!c._session || c._requests.size === 0) return;
    const now = Date.now();
    const pending = [...c._requests.values()].map((r) => {
      const p = { channel: r.channel, id: r.id, ref: r.ref };
      if (r.explicit) p.timeout_ms = Math.max(1, r.deadline - now);
      return p;
    });
    const ref = c._ref();
    c._commands.set(ref, {
      kind: "session",
      resolve: () => {},
      reject: (err) => {
        for (const r of [...c._requests.values()]) c._settleRequest(r, err);
      },
    });
    this.send({ type: "session", ref, session: c._session, pending });
  }

  // A subscription made while connecting goes out with the others on open.
  add(sub) {
    if (this.ready) this.subscribe(sub);
  }

  subscribe(sub) {
    const c = this.client;
    const ref = c._ref();
    const frame = { type: "subscribe", ref, channel: sub.channel, ...sub._position() };
    c._subRefs.set(ref, sub);
    sub._ref = ref;
    sub._state = "subscribing";
    this.send(frame);
  }

  onFrame(text) {
    if (this.done) return;
    this.frame();
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    const c = this.client;
    switch (f.type) {
      case "message":
        c._subs.get(f.channel)?._message(f);
        return;
      case "gap":
        c._subs.get(f.channel)?._gap({ channel: f.channel, after: f.after });
        return;
      case "deleted":
        c._subs.get(f.channel)?._deleted();
        return;
      case "reply": {
        const req = c._requests.get(requestKey(f.channel, f.id));
        if (!req) return;
        if (f.error) c._settleRequest(req, new TslmError(f.error.code, f.error.message, { channel: f.channel, id: f.id }));
        else c._settleRequest(req, null, f.data);
        return;
      }
      case "ack":
        return this.onAck(f);
      case "error":
        return this.onError(f);
    }
  }

  onAck(f) {
    const c = this.client;
    const sub = c._subRefs.get(f.ref);
    if (sub) {
      if (sub._ref === f.ref) sub._acked(f, f.resumed === false);
      return;
    }
    const cmd = c._commands.get(f.ref);
    if (!cmd) return;
    c._commands.delete(f.ref);
    cmd.resolve(f);
  }

  onError(f) {
    const c = this.client;
    const err = new TslmError(f.code, f.message, { channel: f.channel, id: f.id });
    if (f.id !== undefined && f.channel !== undefined) {
      const req = c._requests.get(requestKey(f.channel, f.id));
      if (req) {
        c._settleRequest(req, err);
        return;
      }
    }
    if (f.ref === undefined) {
      // A subscription a re-authentication no longer allows has ended.
      const sub = f.channel !== undefined && c._subs.get(f.channel);
      if (sub) sub._end(err);
      else c._emit("error", err);
      return;
    }
    const sub = c._subRefs.get(f.ref);
    if (sub) {
      if (sub._ref !== f.ref) return;
      c._subRefs.delete(f.ref);
      if (f.code === "unavailable") {
        // The backlog failed or the replica's replay capacity ran out:
        // try again from where the subscription stands.
        setTimeout(() => {
          if (!this.done && c._subs.get(sub.channel) === sub) this.subscribe(sub);
        }, c._backoff.min * 10 * (0.5 + Math.random()));
        return;
      }
      sub._end(err);
      return;
    }
    const cmd = c._commands.get(f.ref);
    if (!cmd) {
      c._emit("error", err);
      return;
    }
    c._commands.delete(f.ref);
    cmd.reject(err);
    if (cmd.kind === "session") c._emit("error", err);
  }
}

// ---- Server-Sent Events transport ---------------------------------------

class SseConn {
  constructor(client) {
    this.client = client;
    this.kind = "sse";
    this.ready = false;
    this.done = false;
    this.es = null;
    this.channels = [];
  }

  async start() {
    const c = this.client;
    if (c._subs.size === 0) {
      // An SSE stream needs a channel; it opens with the first subscribe.
      this.ready = true;
      c._ready(this);
      return;
    }
    let token;
    try {
      token = await c._token();
    } catch (e) {
      this.fail(1006, "token: " + (e && e.message));
      return;
    }
    if (this.done) return;
    const u = new URL(c._opts.sseUrl || sseUrlFor(c.url), globalThis.location ? globalThis.location.href : undefined);
    this.channels = [...c._subs.keys()];
    for (const sub of c._subs.values()) {
      u.searchParams.append("channel", sub.channel);
      const pos = sub._position();
      if (pos.since !== undefined) u.searchParams.append("since", sub.channel + ":" + pos.since);
      else if (pos.last !== undefined) u.searchParams.append("last", sub.channel + ":" + pos.last);
    }
    // EventSource cannot set headers: the protocol takes the credential
    // as a query parameter on this endpoint only.
    if (token) u.searchParams.set("access_token", token);
    try {
      this.es = new c._EventSource(u.toString());
    } catch (e) {
      this.fail(1006, String((e && e.message) || e));
      return;
    }
    const es = this.es;
    const json = (fn) => (ev) => {
      if (this.done) return;
      let d;
      try {
        d = JSON.parse(ev.data);
      } catch {
        return;
      }
      fn(d);
    };
    es.onopen = () => {
      if (this.done) return;
      c._firstFrame();
      if (!this.ready) {
        this.ready = true;
        c._ready(this);
      }
    };
    es.onmessage = json((d) => c._subs.get(d.channel)?._message(d));
    es.addEventListener("subscribed", json((d) => c._subs.get(d.channel)?._acked(d, false)));
    es.addEventListener("not-resumed", json((d) => c._subs.get(d.channel)?._notResumed({ channel: d.channel, head: d.head })));
    es.addEventListener("gap", json((d) => c._subs.get(d.channel)?._gap({ channel: d.channel, after: d.after })));
    es.addEventListener("deleted", json((d) => c._subs.get(d.channel)?._deleted()));
    es.addEventListener("shutdown", () => this.restart(1001, "the server is shutting down"));
    es.addEventListener("error", (ev) => {
      if (this.done) return;
      if (ev.data) {
        // The server's own error event: it ends the stream.
        let d = {};
        try {
          d = JSON.parse(ev.data);
        } catch {
          // keep the generic error
        }
        const err = new TslmError(d.code || "internal", d.message, { channel: d.channel });
        if (err.code === "unauthorized" && typeof c._opts.token !== "function") {
          // The credential expired, and the app gave no way to get another:
          // as 4501 on a WebSocket, reconnecting cannot help.
          this.done = true;
          es.close();
          c._lost(this, { code: 4501, reason: err.message, fatal: err });
          return;
        }
        c._emit("error", err);
        this.restart(1011, err.message);
        return;
      }
      // A network error or an HTTP refusal: reconnect ourselves, with our
      // own positions and backoff (a fresh token, a refusal's backoff),
      // rather than let EventSource retry the same URL every second.
      this.restart(1006, "the event stream was interrupted");
    });
  }

  // Ends this stream and lets the client open a new one from its own
  // per-channel positions, which resume exactly like Last-Event-ID would.
  restart(code, reason) {
    if (this.done) return;
    const early = !this.ready;
    this.done = true;
    this.ready = false;
    this.es?.close();
    this.client._lost(this, { code, reason, early });
  }

  fail(code, reason) {
    this.restart(code, reason);
  }

  close() {
    this.done = true;
    this.es?.close();
  }

  // A new subscription needs a new stream: SSE cannot add a channel to a
  // stream that is open or opening. One still waiting for its token picks
  // it up when it builds its URL.
  add(sub) {
    if (this.es || this.ready) this.reopen();
  }

  // Unsubscribing also needs a new stream, without the channel.
  unsubscribe() {
    this.reopen();
  }

  reopen() {
    if (this.done) return;
    const c = this.client;
    this.done = true;
    this.es?.close();
    c._conn = null;
    c._open();
  }
}

// ---- Subscription -------------------------------------------------------

export class Subscription {
  constructor(client, channel, options) {
    this._client = client;
    /** The channel's name. */
    this.channel = channel;
    this._opts = options;
    /** The ID of the last message delivered, or null. */
    this.lastId = null;
    this._head = null;
    this._ref = null;
    this._state = "subscribing";
    this._ended = false;
    // Messages for async iteration. Without onMessage, iterating is the
    // only way to read them, so they are kept from the start (none is lost
    // between subscribe() and the loop); with it, only once a loop begins.
    this._queue = options.onMessage ? null : [];
    this._waiters = [];
    this._endError = null;
    this._acks = 0;
    this._acceptAny = false;
    this.ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    // An unobserved rejection is not an app error: ready is optional.
    this.ready.catch(() => {});
  }

  /** Where a (re)subscribe starts: after the last message delivered, else
   * after the head acknowledged, else the app's own since/last. */
  _position() {
    if (this.lastId !== null) return { since: this.lastId };
    if (this._head !== null && this._opts.since === undefined && this._opts.last === undefined) return { since: this._head };
    if (this._opts.since !== undefined) return { since: this._opts.since };
    if (this._opts.last !== undefined) return { last: this._opts.last };
    return {};
  }

  _acked(f, notResumed) {
    this._state = "subscribed";
    if (this._head === null) this._head = f.head;
    this._acks++;
    if (this._acks === 1) this._readyResolve({ channel: this.channel, head: f.head, resumed: f.resumed });
    if (notResumed) this._notResumed({ channel: this.channel, head: f.head });
  }

  _message(f) {
    if (this._ended) return;
    // A resume after an ambiguous drop may repeat what was delivered:
    // IDs only grow, so anything not after lastId was seen.
    if (!this._acceptAny && this.lastId !== null && compareIds(f.id, this.lastId) <= 0) return;
    this._acceptAny = false;
    this.lastId = f.id;
    const msg = { channel: f.channel, id: f.id, data: f.data };
    this._call("onMessage", msg);
    if (this._queue) {
      const w = this._waiters.shift();
      if (w) w.resolve({ value: msg, done: false });
      else this._queue.push(msg);
    }
  }

  _gap(g) {
    this._call("onGap", g);
  }

  _notResumed(n) {
    // The backlog may have been reset, its IDs starting over: the next
    // message is new whatever its ID.
    this._acceptAny = true;
    this._call("onNotResumed", n);
  }

  _deleted() {
    this._call("onDeleted", { channel: this.channel });
    this._end(null);
  }

  _call(name, arg) {
    const fn = this._opts[name];
    if (!fn) return;
    try {
      fn(arg);
    } catch (e) {
      reportError(e);
    }
  }

  // Ends the subscription: err null for a normal end (unsubscribe,
  // deleted, client closed), else the error that ended it.
  _end(err) {
    if (this._ended) return;
    this._ended = true;
    this._state = "ended";
    if (this._client._subs.get(this.channel) === this) this._client._subs.delete(this.channel);
    if (err) {
      this._endError = err;
      this._readyReject(err);
      this._call("onError", err);
    } else {
      this._readyReject(new TslmError("closed", "the subscription ended before it was acknowledged"));
    }
    for (const w of this._waiters.splice(0)) {
      if (err) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** true once the subscription has ended. */
  get ended() {
    return this._ended;
  }

  /** Stops the subscription; nothing more of the channel is delivered. */
  unsubscribe() {
    if (this._ended) return;
    const c = this._client;
    const conn = c._conn;
    this._end(null);
    if (!conn?.ready) return;
    if (conn.kind === "websocket") {
      if (this._ref) c._subRefs.delete(this._ref);
      conn.send({ type: "unsubscribe", ref: c._ref(), channel: this.channel });
    } else {
      conn.unsubscribe();
    }
  }

  /** unsubscribe(), for `using` and symmetry with the Go client. */
  close() {
    this.unsubscribe();
  }

  [Symbol.asyncIterator]() {
    if (!this._queue) this._queue = [];
    return {
      next: () => {
        if (this._queue.length > 0) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._ended) return this._endError ? Promise.reject(this._endError) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}
