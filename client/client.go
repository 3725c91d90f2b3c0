package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// protocolV1 is the subprotocol of docs/protocol.md.
const protocolV1 = "tslm.v1"

const (
	handshakeTimeout = 10 * time.Second
	// writeTimeout bounds one frame's write: a gateway that takes none for
	// that long is presumed gone.
	writeTimeout = 10 * time.Second
	// pingInterval is how often the client pings, and readIdle how long it
	// waits for any frame (a pong at least) before it presumes the
	// connection dead: a half-open TCP connection may never report one.
	pingInterval = 15 * time.Second
	readIdle     = 3 * pingInterval
	// closeWait bounds the wait for the gateway's answer to Close's close
	// frame.
	closeWait = time.Second
	// sendQueue is the frames queued for a connection's writer; callers
	// wait for room (with their context).
	sendQueue = 256
	// readLimit bounds one frame from the gateway.
	readLimit = 16 << 20
	// defaultBuffer is the events a Subscription holds for its reader.
	defaultBuffer = 256
)

// Client is a connection to a gateway over protocol v1 that reconnects on
// its own: subscriptions resume after the last message delivered, requests
// acknowledged before a drop get their answers, commands that are safe to
// repeat are sent again. All methods are safe for concurrent use.
type Client struct {
	url string
	o   options
	log *slog.Logger

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned

	mu        sync.Mutex
	cur       *conn         // nil while reconnecting
	connected chan struct{} // closed once cur is set
	stopped   chan struct{} // closed once final is set
	final     error         // why the client stopped for good
	seq       uint64
	subs      map[string]*Subscription
	session   string              // the request session's token
	requests  map[string]*request // acknowledged requests by ref, awaiting an answer
}

// Dial connects to url (ws:// or wss://, a gateway's /v1/ws) and returns a
// client that stays connected until Close or a final refusal. The first
// connection is made before Dial returns: an error then (a typo, a
// refused credential) is returned as is, *HandshakeError for an HTTP
// refusal.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	if !strings.HasPrefix(url, "ws://") && !strings.HasPrefix(url, "wss://") {
		return nil, fmt.Errorf("tslm: URL %q must start with ws:// or wss://", url)
	}
	o := options{header: http.Header{}, backoff: DefaultBackoff}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	d := websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: handshakeTimeout}
	if o.dialer != nil {
		d = *o.dialer
	}
	d.Subprotocols = []string{protocolV1}
	o.dialer = &d
	if o.backoff.Min <= 0 {
		o.backoff.Min = DefaultBackoff.Min
	}
	if o.backoff.Max < o.backoff.Min {
		o.backoff.Max = max(o.backoff.Min, DefaultBackoff.Max)
	}
	c := &Client{
		url: url, o: o, log: o.logger.With("component", "tslm-client"),
		done:      make(chan struct{}),
		connected: make(chan struct{}),
		stopped:   make(chan struct{}),
		subs:      make(map[string]*Subscription),
		requests:  make(map[string]*request),
	}
	cn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.attach(cn)
	go c.run(cn)
	return c, nil
}

// dial opens one connection.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	header := c.o.header.Clone() // Authenticate may replace the credential
	c.mu.Unlock()
	ws, resp, err := c.o.dialer.DialContext(ctx, c.url, header)
	if err != nil {
		if resp == nil {
			return nil, err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		he := &HandshakeError{StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
		if secs, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && secs > 0 {
			he.RetryAfter = time.Duration(min(secs, 300)) * time.Second
		}
		return nil, he
	}
	if p := ws.Subprotocol(); p != protocolV1 {
		ws.Close()
		return nil, fmt.Errorf("tslm: %s answered subprotocol %q, not %s", c.url, p, protocolV1)
	}
	return newConn(c, ws), nil
}

// run watches the current connection and replaces it when it ends, until
// Close or a final refusal.
func (c *Client) run(cn *conn) {
	defer close(c.done)
	attempt := 0
	for {
		select {
		case <-cn.dead:
		case <-c.ctx.Done():
			cn.closeNormally()
		}
		cn.wait()
		cause := cn.cause
		if c.ctx.Err() != nil {
			c.stop(ErrClosed, cn)
			return
		}
		var de *DisconnectError
		if errors.As(cause, &de) && de.Final {
			c.log.Warn("tslm client: the gateway ended the connection for good", "code", de.Code, "reason", de.Reason)
			c.stop(cause, cn)
			return
		}
		c.detach(cn, cause)
		if cn.lived.Load() {
			attempt = 0
		}
		for {
			wait := c.o.backoff.delay(attempt)
			var he *HandshakeError
			if errors.As(cause, &he) {
				wait = max(wait, he.RetryAfter)
			}
			attempt++
			c.log.Info("tslm client: disconnected; reconnecting", "err", cause, "in", wait)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
				c.stop(ErrClosed, nil)
				return
			}
			next, err := c.dial(c.ctx)
			if err == nil {
				cn = next
				break
			}
			if c.ctx.Err() != nil {
				c.stop(ErrClosed, nil)
				return
			}
			if errors.As(err, &he) && he.final() {
				c.log.Warn("tslm client: the gateway refused the connection; not retrying", "err", err)
				c.stop(err, nil)
				return
			}
			cause = err
		}
		c.log.Info("tslm client: reconnected", "url", c.url)
		c.attach(cn)
	}
}

// attach makes cn the current connection once it has resumed the request
// session and every subscription: sent first, they precede any command of
// the callers.
func (c *Client) attach(cn *conn) {
	cn.start()
	c.mu.Lock()
	var first [][]byte
	if len(c.requests) > 0 && c.session != "" {
		refs := make([]string, 0, len(c.requests))
		pending := make([]pendingEntry, 0, len(c.requests))
		for ref, r := range c.requests {
			refs = append(refs, ref)
			e := pendingEntry{Channel: r.channel, ID: r.id, Ref: ref}
			if !r.deadline.IsZero() {
				e.TimeoutMS = max(1, time.Until(r.deadline).Milliseconds())
			}
			pending = append(pending, e)
		}
		ref := c.nextRef("session")
		cn.calls[ref] = &call{kind: kindSession, refs: refs}
		b, _ := json.Marshal(sessionFrame{Type: "session", Ref: ref, Session: c.session, Pending: pending})
		first = append(first, b)
	} else {
		c.session = ""
	}
	c.mu.Unlock()
	for _, b := range first {
		cn.sendNow(b)
	}
	for {
		c.mu.Lock()
		frames := c.subscribeFramesLocked(cn)
		if len(frames) == 0 {
			c.cur = cn
			close(c.connected)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		for _, b := range frames {
			cn.sendNow(b)
		}
	}
}

// subscribeFramesLocked returns the subscribe frames of the subscriptions
// not yet sent on cn, and marks them sent. c.mu is held.
func (c *Client) subscribeFramesLocked(cn *conn) [][]byte {
	var frames [][]byte
	for _, s := range c.subs {
		if s.sentOn == cn {
			continue
		}
		frames = append(frames, c.subscribeFrameLocked(cn, s))
	}
	return frames
}

// subscribeFrameLocked returns s's subscribe frame for cn, resuming after
// what s delivered, and registers its ref. c.mu is held.
func (c *Client) subscribeFrameLocked(cn *conn, s *Subscription) []byte {
	s.sentOn = cn
	ref := c.nextRef("sub")
	cn.subRefs[ref] = s
	f := subscribeFrame{Type: "subscribe", Ref: ref, Channel: s.channel}
	s.mu.Lock()
	switch {
	case s.lastID != "":
		f.Since = s.lastID
	case s.opts.Since != "":
		f.Since = s.opts.Since
	case s.opts.Last > 0:
		f.Last = s.opts.Last
	case s.head != "":
		// Subscribed live, nothing delivered yet: resume after the head
		// the first ack named, so that nothing published meanwhile is
		// missed.
		f.Since = s.head
	}
	s.sentSince = f.Since
	s.mu.Unlock()
	b, _ := json.Marshal(f)
	return b
}

// detach fails what waited on cn, which ended with cause, and makes the
// callers wait for the next connection.
func (c *Client) detach(cn *conn, cause error) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		c.connected = make(chan struct{})
	}
	close(cn.detached)
	calls := cn.calls
	cn.calls = map[string]*call{}
	c.mu.Unlock()
	for _, cl := range calls {
		switch cl.kind {
		case kindPlain:
			cl.res <- result{err: cause}
		case kindRequest:
			// Not acknowledged: it has no ID to resume, and may or may
			// not have been queued.
			cl.req.res <- result{err: cause}
		}
	}
}

// stop ends the client for good with err.
func (c *Client) stop(err error, cn *conn) {
	c.mu.Lock()
	if c.final != nil {
		c.mu.Unlock()
		return
	}
	c.final = err
	close(c.stopped)
	c.cur = nil
	subs := c.subs
	c.subs = map[string]*Subscription{}
	reqs := c.requests
	c.requests = map[string]*request{}
	var calls map[string]*call
	if cn != nil {
		calls = cn.calls
		cn.calls = map[string]*call{}
	}
	c.mu.Unlock()
	for _, cl := range calls {
		switch cl.kind {
		case kindPlain:
			cl.res <- result{err: err}
		case kindRequest:
			cl.req.res <- result{err: err}
		}
	}
	for _, r := range reqs {
		r.res <- result{err: err}
	}
	for _, s := range subs {
		s.end(err)
	}
}

// Close ends every subscription and request (they fail with ErrClosed),
// closes the connection normally and waits for the client's goroutines.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

// Err returns why the client stopped: nil while it runs (connected or
// reconnecting), ErrClosed after Close, else the final refusal.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.final
}

// Done is closed when the client has stopped for good (see Err).
func (c *Client) Done() <-chan struct{} { return c.stopped }

func (c *Client) nextRef(kind string) string {
	c.seq++
	return kind + "." + strconv.FormatUint(c.seq, 10)
}

// current waits for a connection.
func (c *Client) current(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		if c.final != nil {
			err := c.final
			c.mu.Unlock()
			return nil, err
		}
		wait := c.connected
		if cn := c.cur; cn != nil {
			select {
			case <-cn.dead:
				// Ended, not yet replaced: wait for run to detach it
				// rather than spin on it.
				wait = cn.detached
			default:
				c.mu.Unlock()
				return cn, nil
			}
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-c.stopped:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// command sends the frame build makes with a fresh ref and returns the
// ack. A command resendable (its repetition does no harm) is sent again
// on the next connection when its connection ends before the answer.
func (c *Client) command(ctx context.Context, resendable bool, build func(ref string) any) (frame, error) {
	for {
		cn, err := c.current(ctx)
		if err != nil {
			return frame{}, err
		}
		cl := &call{kind: kindPlain, res: make(chan result, 1)}
		c.mu.Lock()
		if c.cur != cn {
			c.mu.Unlock()
			continue
		}
		ref := c.nextRef("c")
		cn.calls[ref] = cl
		c.mu.Unlock()
		b, err := json.Marshal(build(ref))
		if err != nil {
			c.forget(cn, ref)
			return frame{}, err
		}
		if err := cn.send(ctx, b); err != nil {
			c.forget(cn, ref)
			if ctx.Err() != nil {
				return frame{}, ctx.Err()
			}
			continue // never written: safe to send again
		}
		select {
		case r := <-cl.res:
			var de *DisconnectError
			if resendable && errors.As(r.err, &de) && !de.Final {
				continue
			}
			return r.f, r.err
		case <-ctx.Done():
			c.forget(cn, ref)
			return frame{}, ctx.Err()
		}
	}
}

// forget drops the call ref of cn: its answer, if any, is ignored.
func (c *Client) forget(cn *conn, ref string) {
	c.mu.Lock()
	delete(cn.calls, ref)
	c.mu.Unlock()
}

// Authenticate presents credential on the current connection (an auth
// frame, docs/protocol.md "Authentication") and, as "Authorization:
// Bearer", on every later one. Call it with a fresh credential before the
// current one expires (the gateway closes the connection with 4501 when
// it does), or to authenticate a connection dialled without one. It
// returns the subject and expiry the gateway read from the credential
// (expires is zero for one that never expires); a refused credential is
// a *Error matching ErrUnauthorized, and the connection stays as it was.
func (c *Client) Authenticate(ctx context.Context, credential string) (subject string, expires time.Time, err error) {
	f, err := c.command(ctx, true, func(ref string) any {
		return authFrame{Type: "auth", Ref: ref, Token: credential}
	})
	if err != nil {
		return "", time.Time{}, err
	}
	c.mu.Lock()
	c.o.header.Set("Authorization", "Bearer "+credential)
	c.mu.Unlock()
	if f.Expires != "" {
		expires, err = time.Parse(time.RFC3339, f.Expires)
		if err != nil {
			return f.Subject, time.Time{}, fmt.Errorf("tslm: auth ack's expires %q: %w", f.Expires, err)
		}
	}
	return f.Subject, expires, nil
}

// ChannelOptions configures Create; zero fields take the gateway's
// defaults (TSLM_DEFAULT_MAX_LEN, TSLM_DEFAULT_RETENTION).
type ChannelOptions struct {
	MaxLen    int
	Retention time.Duration
}

// Create creates channel; created is false when it existed already (its
// configuration is then unchanged). It is sent again after a reconnect.
func (c *Client) Create(ctx context.Context, channel string, opts ChannelOptions) (created bool, err error) {
	f, err := c.command(ctx, true, func(ref string) any {
		cf := createFrame{Type: "create", Ref: ref, Channel: channel, MaxLen: opts.MaxLen}
		if opts.Retention > 0 {
			cf.Retention = opts.Retention.String()
		}
		return cf
	})
	if err != nil {
		return false, err
	}
	return f.Created != nil && *f.Created, nil
}

// PublishOption configures Publish.
type PublishOption func(*publishFrame)

// WithIdempotencyKey publishes with key (docs/protocol.md, "publish"): the
// gateway stores the message once whatever the retries, so Publish sends
// it again on the next connection when one drops before the ack.
func WithIdempotencyKey(key string) PublishOption {
	return func(f *publishFrame) { f.IdempotencyKey = key }
}

// Publish publishes data (marshalled with encoding/json; a json.RawMessage
// goes as is) to channel and returns its message ID. Without an
// idempotency key, a connection lost before the ack fails it with a
// *DisconnectError: the message may have been stored all the same.
func (c *Client) Publish(ctx context.Context, channel string, data any, opts ...PublishOption) (id string, err error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("tslm: publish data: %w", err)
	}
	var proto publishFrame
	for _, o := range opts {
		o(&proto)
	}
	f, err := c.command(ctx, proto.IdempotencyKey != "", func(ref string) any {
		pf := proto
		pf.Type, pf.Ref, pf.Channel, pf.Data = "publish", ref, channel, raw
		return pf
	})
	if err != nil {
		return "", err
	}
	return f.ID, nil
}
