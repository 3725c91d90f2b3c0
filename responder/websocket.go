package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// WebSocketConfig configures ServeWebSocket. Zero fields take the defaults
// named.
type WebSocketConfig struct {
	// URL is the gateway's internal listener; default
	// "ws://127.0.0.1:8081/v1/ws". Serving needs the serve permission,
	// which the internal listener grants to everyone while its auth is
	// off (TSLM_INTERNAL_AUTH); otherwise present a credential granting
	// serve on the channels as "Authorization: Bearer <credential>" in
	// Header.
	URL string
	// Header is sent with the handshake: credentials for the gateway, or
	// for a proxy in front of it.
	Header http.Header
	// Concurrency bounds the handlers running at once, across all
	// channels. Default 16.
	Concurrency int
}

// DefaultURL is the gateway's internal listener on its default address.
const DefaultURL = "ws://127.0.0.1:8081/v1/ws"

// protocolV1 is the subprotocol of docs/protocol.md.
const protocolV1 = "tslm.v1"

const (
	// handshakeTimeout bounds a dial and its upgrade.
	handshakeTimeout = 10 * time.Second
	// wsWriteTimeout bounds one frame's write: a gateway that takes none
	// for that long is presumed gone.
	wsWriteTimeout = 10 * time.Second
	// pingInterval is how often the responder pings the gateway, and
	// readIdle how long it waits for any frame (a pong at least) before it
	// presumes the connection dead, as a half-open TCP connection may
	// never report an error.
	pingInterval = 15 * time.Second
	readIdle     = 3 * pingInterval
	// closeWait is how long a closing responder waits for the gateway to
	// answer its close frame.
	closeWait = time.Second
	// sendQueue is the frames queued for the writer.
	sendQueue = 256
)

// The codes of docs/protocol.md that the responder acts upon.
const (
	codeBadRequest  = "bad_request"
	codeUnknownType = "unknown_type"
	codeForbidden   = "forbidden"
	codeNotFound    = "not_found"
	codeTooLarge    = "too_large"
	codeTimeout     = "timeout"
)

// ServeWebSocket answers the requests of channels through the gateway's
// internal WebSocket (the serve, request and reply frames of
// docs/protocol.md) until ctx is done; then it closes the connection once
// the handlers running (their contexts are cancelled) have returned and
// their answers were sent, and returns nil.
//
// It connects to cfg.URL with subprotocol tslm.v1 and serves every channel.
// A gateway that refuses to serve a channel (not_found, forbidden, ...) or
// refuses the handshake with an HTTP 4xx before the responder was ever
// serving makes ServeWebSocket return that error: a typo or a channel not
// created yet. Any other failure, and every failure once it was serving,
// is logged and retried: a dropped connection is dialled again with
// exponential backoff and jitter, so that a gateway restart or a replica
// shutting down (close code 1001) only pauses serving. Requests held when
// a connection drops go to the channel's other servers.
func ServeWebSocket(ctx context.Context, cfg WebSocketConfig, h Handler, channels ...string) error {
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	switch {
	case cfg.Concurrency < 0:
		return fmt.Errorf("responder: Concurrency %d is negative", cfg.Concurrency)
	case h == nil:
		return errors.New("responder: nil Handler")
	case !strings.HasPrefix(cfg.URL, "ws://") && !strings.HasPrefix(cfg.URL, "wss://"):
		return fmt.Errorf("responder: URL %q must start with ws:// or wss://", cfg.URL)
	}
	if err := checkChannels(channels); err != nil {
		return err
	}
	s := &wsServer{
		cfg:      cfg,
		h:        h,
		channels: channels,
		log:      slog.Default().With("component", "responder", "url", cfg.URL),
		slots:    newSlots(cfg.Concurrency),
		dialer: websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: handshakeTimeout,
			Subprotocols:     []string{protocolV1},
		},
	}
	defer s.handlers.Wait()
	wait := backoff{min: 100 * time.Millisecond, max: 30 * time.Second}
	failing := false
	for ctx.Err() == nil {
		ready, err := s.connect(ctx)
		if ctx.Err() != nil {
			break
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.err
		}
		if ready {
			wait.reset()
			failing = false
		}
		d := wait.delay()
		var ra *retryAfterError
		if errors.As(err, &ra) {
			d = max(d, ra.after)
		}
		if failing {
			s.log.Debug("responder: still not serving; retrying", "err", err, "in", d)
		} else {
			s.log.Warn("responder: not serving: connection to the gateway failed; retrying with backoff", "err", err, "in", d)
			failing = true
		}
		sleep(ctx, d)
	}
	return nil
}

// fatalError ends ServeWebSocket: retrying would not help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// retryAfterError is a refusal that says how long to wait at least.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }

type wsServer struct {
	cfg      WebSocketConfig
	h        Handler
	channels []string
	log      *slog.Logger
	slots    *slots
	dialer   websocket.Dialer
	handlers sync.WaitGroup

	// served is set once every channel was served: from then on, every
	// failure is retried.
	served atomic.Bool
}

// wsConn is one connection and its state.
type wsConn struct {
	s      *wsServer
	ws     *websocket.Conn
	ctx    context.Context // ends with the connection, or ServeWebSocket's ctx
	cancel context.CancelFunc
	log    *slog.Logger
	once   sync.Once
	cause  error       // why the connection ended; set by kill, read after dead
	ready  atomic.Bool // every channel was served on this connection

	out   chan []byte   // frames for the writer
	dead  chan struct{} // closed when the connection failed: drop frames
	drain chan struct{} // closed to make the writer flush out, then close

	handlers sync.WaitGroup // this connection's handlers

	mu      sync.Mutex
	closing bool // no more handlers start: ServeWebSocket is returning
	seq     uint64
	serves  map[string]string      // serve ref → channel, until acked
	replies map[string]sentReply   // reply ref → what it answered, until acked
	retries map[string]*backoff    // channel → backoff of its serve retries
	timers  map[string]*time.Timer // pending serve retries
}

// sentReply is a reply awaiting the gateway's ack.
type sentReply struct {
	req      Request
	fallback bool // already the internal error sent for a refused reply
}

// connect runs one connection until it ends, or until ctx is done (then
// it returns no error). ready reports whether every channel was served on
// it, so that the caller's backoff restarts.
func (s *wsServer) connect(ctx context.Context) (ready bool, err error) {
	ws, resp, err := s.dialer.DialContext(ctx, s.cfg.URL, s.cfg.Header)
	if err != nil {
		if resp == nil {
			return false, err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		err = fmt.Errorf("responder: %s refused the connection: %s: %s", s.cfg.URL, resp.Status, strings.TrimSpace(string(body)))
		if !s.served.Load() && resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return false, &fatalError{err}
		}
		// A gateway at capacity or shutting down says when to come back
		// (docs/protocol.md).
		if secs, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && secs > 0 {
			return false, &retryAfterError{err, time.Duration(min(secs, 300)) * time.Second}
		}
		return false, err
	}
	if p := ws.Subprotocol(); p != protocolV1 && p != "" {
		ws.Close()
		return false, &fatalError{fmt.Errorf("responder: %s chose subprotocol %q, not %s", s.cfg.URL, p, protocolV1)}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &wsConn{
		s: s, ws: ws, ctx: cctx, cancel: cancel, log: s.log,
		out:     make(chan []byte, sendQueue),
		dead:    make(chan struct{}),
		drain:   make(chan struct{}),
		serves:  make(map[string]string),
		replies: make(map[string]sentReply),
		retries: make(map[string]*backoff),
		timers:  make(map[string]*time.Timer),
	}
	s.log.Debug("responder: connected; serving", "channels", s.channels)

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := c.write(); err != nil {
			c.kill(err)
		}
	}()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		c.kill(c.read())
	}()
	for _, ch := range s.channels {
		c.serve(ch)
	}

	select {
	case <-c.dead:
	case <-ctx.Done():
	}
	c.stopRetries()
	if ctx.Err() != nil {
		// Shutting down: the handlers' contexts are done; send what they
		// still answer, then close as a client leaving normally and wait
		// a little for the gateway's close frame.
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		c.handlers.Wait()
		close(c.drain)
		<-writerDone
		select {
		case <-readerDone:
		case <-time.After(closeWait):
		}
		ws.Close()
		return c.ready.Load(), nil
	}
	ws.Close()
	<-readerDone
	<-writerDone
	return c.ready.Load(), c.cause
}

// kill ends the connection's life for cause: handlers are cancelled and
// frames for it dropped. The first cause is kept.
func (c *wsConn) kill(cause error) {
	c.once.Do(func() {
		c.cause = cause
		close(c.dead)
		c.cancel()
	})
}

// write is the connection's only writer of data frames: gorilla allows one
// at a time. It also pings. It returns when writing failed, or after a
// drain has flushed the queue and sent the close frame.
func (c *wsConn) write() error {
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		select {
		case b := <-c.out:
			if err := c.writeFrame(b); err != nil {
				return err
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(wsWriteTimeout)); err != nil {
				return err
			}
		case <-c.dead:
			return nil
		case <-c.drain:
			for {
				select {
				case b := <-c.out:
					if err := c.writeFrame(b); err != nil {
						return err
					}
					continue
				default:
				}
				break
			}
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "responder stopping")
			return c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wsWriteTimeout))
		}
	}
}

func (c *wsConn) writeFrame(b []byte) error {
	c.ws.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// send queues a frame; false when the connection is gone.
func (c *wsConn) send(b []byte) bool {
	select {
	case c.out <- b:
		return true
	case <-c.dead:
		return false
	}
}

// inFrame is any frame from the gateway; each type uses some fields.
type inFrame struct {
	Type       string          `json:"type"`
	Ref        string          `json:"ref"`
	Channel    string          `json:"channel"`
	ID         string          `json:"id"`
	Data       json.RawMessage `json:"data"`
	DeadlineMS *int64          `json:"deadline_ms"`
	Deliveries int64           `json:"deliveries"`
	Code       string          `json:"code"`
	Message    string          `json:"message"`
}

// read reads frames until the connection fails or a fatal error.
func (c *wsConn) read() error {
	c.ws.SetReadDeadline(time.Now().Add(readIdle))
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(readIdle))
	})
	c.ws.SetPingHandler(func(msg string) error {
		c.ws.SetReadDeadline(time.Now().Add(readIdle))
		err := c.ws.WriteControl(websocket.PongMessage, []byte(msg), time.Now().Add(wsWriteTimeout))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) && ne.Timeout() {
			return nil // as gorilla's default handler: not a read error
		}
		return err
	})
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		c.ws.SetReadDeadline(time.Now().Add(readIdle))
		var f inFrame
		if err := json.Unmarshal(b, &f); err != nil {
			c.log.Warn("responder: frame from the gateway is not a JSON object; ignored", "err", err)
			continue
		}
		if err := c.onFrame(f); err != nil {
			return err
		}
	}
}

func (c *wsConn) onFrame(f inFrame) error {
	switch f.Type {
	case "request":
		c.onRequest(f)
	case "ack":
		c.mu.Lock()
		ch, isServe := c.serves[f.Ref]
		delete(c.serves, f.Ref)
		delete(c.replies, f.Ref)
		delete(c.retries, ch)
		allServed := isServe && len(c.serves) == 0 && len(c.timers) == 0
		c.mu.Unlock()
		if allServed {
			c.ready.Store(true)
			c.s.served.Store(true)
		}
		if isServe {
			c.log.Debug("responder: serving", "channel", ch)
		}
		if allServed {
			c.log.Info("responder: serving through the gateway", "channels", c.s.channels)
		}
	case "error":
		return c.onError(f)
	}
	// Other types (messages of subscriptions, which a responder has none
	// of, or frames of newer versions) are not for the responder.
	return nil
}

// onError handles an error frame: the answer to a serve or a reply.
func (c *wsConn) onError(f inFrame) error {
	c.mu.Lock()
	ch, isServe := c.serves[f.Ref]
	delete(c.serves, f.Ref)
	sent, isReply := c.replies[f.Ref]
	delete(c.replies, f.Ref)
	c.mu.Unlock()
	switch {
	case isServe:
		err := fmt.Errorf("responder: serving channel %q refused: %s: %s", ch, f.Code, f.Message)
		if !c.s.served.Load() && permanent(f.Code) {
			return &fatalError{err}
		}
		c.retryServe(ch, err)
	case isReply:
		r := sent.req
		switch {
		case f.Code == codeNotFound:
			// Answered elsewhere, expired, or handed to another server
			// after a reconnect: nobody awaits this answer.
			c.log.Debug("responder: reply not taken: the request is gone", "channel", r.Channel, "id", r.ID, "message", f.Message)
		case !sent.fallback && (f.Code == codeTooLarge || f.Code == codeBadRequest):
			// The gateway keeps the request awaiting an answer: give the
			// requester one rather than its timeout.
			c.log.Error("responder: reply refused by the gateway; answering internal", "channel", r.Channel, "id", r.ID, "code", f.Code, "message", f.Message)
			c.reply(r, answer{refusal: internalRefusal}, true)
		default:
			c.log.Warn("responder: reply failed", "channel", r.Channel, "id", r.ID, "code", f.Code, "message", f.Message)
		}
	default:
		c.log.Warn("responder: error from the gateway", "ref", f.Ref, "code", f.Code, "message", f.Message)
	}
	return nil
}

// permanent reports serve errors that retrying would not cure, at least
// not before someone acts: a wrong name, a missing channel or permission,
// a gateway that has no serve.
func permanent(code string) bool {
	switch code {
	case codeNotFound, codeForbidden, codeBadRequest, codeUnknownType:
		return true
	}
	return false
}

// serve sends a serve frame for ch.
func (c *wsConn) serve(ch string) {
	c.mu.Lock()
	c.seq++
	ref := "serve." + strconv.FormatUint(c.seq, 10)
	c.serves[ref] = ch
	c.mu.Unlock()
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Ref     string `json:"ref"`
		Channel string `json:"channel"`
	}{"serve", ref, ch})
	c.send(b)
}

// retryServe serves ch again after a backoff, on the same connection: a
// channel deleted and created again, or a gateway briefly unavailable,
// does not stop the other channels.
func (c *wsConn) retryServe(ch string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.retries[ch]
	if b == nil {
		b = &backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
		c.retries[ch] = b
	}
	d := b.delay()
	c.log.Warn("responder: serve refused; retrying", "err", err, "in", d)
	c.timers[ch] = time.AfterFunc(d, func() {
		c.mu.Lock()
		_, pending := c.timers[ch]
		delete(c.timers, ch)
		c.mu.Unlock()
		if pending {
			c.serve(ch)
		}
	})
}

func (c *wsConn) stopRetries() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, t := range c.timers {
		t.Stop()
		delete(c.timers, ch)
	}
}

// onRequest starts a handler for a request frame.
func (c *wsConn) onRequest(f inFrame) {
	if f.Channel == "" || f.ID == "" {
		c.log.Warn("responder: request frame without channel or id; ignored", "channel", f.Channel, "id", f.ID)
		return
	}
	r := Request{Channel: f.Channel, ID: f.ID, Data: f.Data, Deliveries: max(f.Deliveries, 1)}
	if len(r.Data) == 0 {
		r.Data = json.RawMessage("null")
	}
	if f.DeadlineMS != nil {
		r.Deadline = time.UnixMilli(*f.DeadlineMS)
	}
	// Not waiting for a slot here: the reader must go on reading, pongs
	// and acks included. The gateway bounds the requests it hands one
	// connection.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return // the gateway hands it to another server
	}
	c.s.handlers.Add(1)
	c.handlers.Add(1)
	go func() {
		defer c.s.handlers.Done()
		defer c.handlers.Done()
		c.run(r)
	}()
}

// run handles one request once a slot is free, and replies.
func (c *wsConn) run(r Request) {
	if c.s.slots.acquire(c.ctx) != nil {
		return // the connection is gone: the gateway hands the request to another server
	}
	defer c.s.slots.release()
	if !r.Deadline.IsZero() && !time.Now().Before(r.Deadline) {
		// Answered all the same, so that the gateway stops holding it.
		c.log.Debug("responder: request expired before it was handled", "channel", r.Channel, "id", r.ID)
		c.reply(r, answer{refusal: &Refusal{Code: codeTimeout, Message: "the request's deadline passed before it was handled"}}, false)
		return
	}
	hctx, cancel := c.ctx, context.CancelFunc(func() {})
	if !r.Deadline.IsZero() {
		hctx, cancel = context.WithDeadline(c.ctx, r.Deadline)
	}
	a, err := handle(hctx, c.log.With("channel", r.Channel), c.s.h, r)
	cancel()
	if err != nil {
		switch {
		case c.ctx.Err() != nil:
			c.log.Debug("responder: handler stopped with its connection; request left to other servers", "channel", r.Channel, "id", r.ID, "err", err)
			return
		case errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(r.Deadline):
			c.log.Debug("responder: handler ran past the request's deadline", "channel", r.Channel, "id", r.ID)
			a = answer{refusal: &Refusal{Code: codeTimeout, Message: "the handler ran past the request's deadline"}}
		default:
			c.log.Error("responder: handler failed; answering internal", "channel", r.Channel, "id", r.ID, "err", err)
		}
	}
	c.reply(r, a, false)
}

// replyFrame is a reply frame: the envelope's fields plus type and ref.
type replyFrame struct {
	Type string `json:"type"`
	Ref  string `json:"ref"`
	envelope
}

// reply sends a's reply frame and remembers it until the gateway's ack.
func (c *wsConn) reply(r Request, a answer, fallback bool) {
	c.mu.Lock()
	c.seq++
	ref := strconv.FormatUint(c.seq, 10)
	c.replies[ref] = sentReply{req: r, fallback: fallback}
	c.mu.Unlock()
	b, err := json.Marshal(replyFrame{Type: "reply", Ref: ref, envelope: a.envelope(r)})
	if err == nil && c.send(b) {
		return
	}
	if err != nil { // handle checked data; cannot happen
		c.log.Error("responder: reply not encodable", "channel", r.Channel, "id", r.ID, "err", err)
	}
	c.mu.Lock()
	delete(c.replies, ref)
	c.mu.Unlock()
}
