package ws

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/histogram"
)

// closeGrace is how long the server waits for the client to answer its close
// frame before dropping the TCP connection (Server.testCloseGrace aside).
const closeGrace = time.Second

// conn is one client connection. The reader goroutine (serve's caller) owns
// its lifetime and its subscriptions; the writer goroutine is the only one
// that writes data frames. Everything else talks to the writer through the
// send queue.
type conn struct {
	srv    *Server
	ws     *websocket.Conn
	out    *batchConn // ws's socket: the writer batches frames through it
	legacy bool
	client netip.Addr // the client's address, trusted proxies considered
	enc    *broker.Encoder
	queue  *sendQueue

	ctx    context.Context // done once the reader has returned
	cancel context.CancelFunc

	subs    map[string]*broker.Subscription // reader goroutine only
	limiter *rate.Limiter                   // nil when unlimited
	strikes *rate.Limiter                   // rate-limited commands tolerated

	// Requests (requests.go), reader goroutine only like subs: the one
	// session, made by the first request or resumed, and the channels
	// served.
	session  *broker.Session
	servings map[string]*broker.Serving
	answers  answerGate

	// Credentials (auth.go), guarded by authMu: the principal, nil for
	// none; the timer closing a connection that does not authenticate in
	// time; the timer closing it when the principal expires.
	authMu    sync.Mutex
	principal *auth.Principal
	deadline  *time.Timer
	expiry    *time.Timer

	closeOnce sync.Once
	closing   chan struct{} // closed by close
	reason    CloseReason   // set before closing is closed

	// For metrics and the access log (metrics.go): framesIn is the
	// reader goroutine's, framesOut and writeErr the writer's, read
	// once both have returned; latency is the writer's, read at scrape.
	opened    time.Time
	framesIn  int64
	framesOut int64
	writeErr  error
	latency   *histogram.Histogram
}

var _ broker.Sink = (*conn)(nil)

// newConn makes the connection of ws, whose socket is out, speaking for
// who (nil: nobody yet), in tslm.legacy or v1.
func newConn(s *Server, ws *websocket.Conn, out *batchConn, who *auth.Principal, legacy bool) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv:      s,
		ws:       ws,
		out:      out,
		legacy:   legacy,
		enc:      v1Encoder,
		queue:    newSendQueue(s.cfg.SendQueueFrames, s.cfg.SendQueueBytes, s.cfg.SendBudget),
		ctx:      ctx,
		cancel:   cancel,
		subs:     make(map[string]*broker.Subscription),
		servings: make(map[string]*broker.Serving),
		closing:  make(chan struct{}),
		opened:   time.Now(),
		latency:  histogram.New(publishToWriteBounds),
	}
	if c.legacy {
		c.enc = legacyEncoder
	}
	c.principal = who // its timer is armed by serve (startAuth)
	if s.cfg.CommandRate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(s.cfg.CommandRate), s.cfg.CommandBurst)
		c.strikes = rate.NewLimiter(rate.Limit(s.cfg.CommandRate), s.cfg.CommandBurst)
	}
	return c
}

// serve runs the connection: the writer in a goroutine, the reader here.
func (c *conn) serve() {
	c.startAuth()
	defer c.stopAuth()
	c.logOpen()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	readErr := c.readLoop()
	c.cancel()
	for _, sub := range c.subs {
		sub.Close()
	}
	c.closeRequests()
	<-writerDone
	c.queue.release()
	c.ws.Close()
	c.recordEnd(c.ending(readErr))
}

// readLoop reads and runs commands until the connection fails, and returns
// why.
func (c *conn) readLoop() error {
	cfg := &c.srv.cfg
	idle := cfg.PingInterval + cfg.PongTimeout
	c.ws.SetReadLimit(cfg.MaxFrameBytes)
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(idle))
	})
	for {
		// Re-armed after every frame, not just on pongs: a long replay
		// keeps this goroutine busy while pongs wait unread.
		c.ws.SetReadDeadline(time.Now().Add(idle))
		kind, frame, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				// gorilla has sent 1009 itself.
				c.srv.stats.closes[CloseTooBig].Add(1)
			}
			return err
		}
		c.framesIn++
		select {
		case <-c.closing:
			continue // wait for the client's close frame
		default:
		}
		c.srv.stats.commands.Add(1)
		if !c.allowRate(frame) {
			continue
		}
		if kind != websocket.TextMessage {
			c.replyError("", badRequest("binary frames are not supported: send JSON in text frames"))
			continue
		}
		// JSON decoding tolerates invalid UTF-8 in strings; stored, it
		// would break every subscriber's text frames.
		if !utf8.Valid(frame) {
			c.replyError("", badRequest("text frames must be UTF-8"))
			continue
		}
		if c.legacy {
			c.handleLegacy(frame)
		} else {
			c.handle(frame)
		}
	}
}

// allowRate applies the command rate. A command over it is answered with
// rate_limited; a client that keeps going after as many refusals as its
// burst is closed with 1008.
func (c *conn) allowRate(frame []byte) bool {
	if c.limiter == nil || c.limiter.Allow() {
		return true
	}
	if !c.strikes.Allow() {
		c.close(ClosePolicy)
		return false
	}
	ref := ""
	if !c.legacy {
		ref = refOf(frame)
	}
	c.replyError(ref, broker.ErrRateLimited.With("command rate exceeded: slow down"))
	return false
}

func (c *conn) writeLoop() {
	cfg := &c.srv.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	logged := false
	defer func() {
		if !logged {
			c.logClose()
		}
	}()
	var batch []queued
	for {
		select {
		case <-c.queue.ready:
			batch = c.queue.take(batch)
			if !c.write(batch) {
				return
			}
			batch = recycled(batch)
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
				c.fail(err)
				return
			}
		case <-c.closing:
			logged = true
			c.logClose()
			// Send what was already queued: the client resumes from
			// what it received, so every frame sent saves a replay
			// elsewhere. Except to a slow consumer, which cannot take
			// them, which is why it is closed; and a budget close is
			// there to get their memory back.
			if c.reason.dropsQueue() {
				c.drop(c.queue.take(batch))
			} else if !c.write(c.queue.take(batch)) {
				return
			}
			msg := websocket.FormatCloseMessage(c.reason.Code(), c.reason.String())
			c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(cfg.WriteTimeout))
			grace := closeGrace
			if c.srv.testCloseGrace > 0 {
				grace = c.srv.testCloseGrace
			}
			select {
			case <-c.ctx.Done():
			case <-time.After(grace):
				c.ws.Close()
			}
			return
		case <-c.ctx.Done():
			return
		}
	}
}

// write sends frames, each as one text message, batched: gorilla frames
// them into c.out's buffer, which goes to the socket in one write per
// batchBytes under the write deadline, and then the frames it held count
// as written. On failure it closes the socket, which ends the reader too.
// It stops early once the connection is closed as a slow consumer (or for
// the budget), dropping what it has not written: trickling through a full
// batch would hold the close back by up to a write timeout per write.
func (c *conn) write(frames []queued) bool {
	c.out.begin()
	start := 0 // the first frame not yet on the socket
	for i, it := range frames {
		select {
		case <-c.closing:
			if c.reason.dropsQueue() {
				c.out.abort()
				c.drop(frames[start:])
				return true
			}
		default:
		}
		if err := c.ws.WriteMessage(websocket.TextMessage, it.frame); err != nil {
			// Not the socket's error, written to by flush alone: gorilla's
			// state, such as ErrCloseSent once the reader has answered
			// the client's close. That answer is in the buffer still.
			c.out.end(time.Now().Add(c.srv.cfg.WriteTimeout))
			c.fail(err)
			return false
		}
		if i < len(frames)-1 && c.out.buffered() < batchBytes {
			continue
		}
		now := time.Now()
		if err := c.out.flush(now.Add(c.srv.cfg.WriteTimeout)); err != nil {
			c.out.abort()
			c.fail(err)
			return false
		}
		c.flushed(frames[start:i+1], now)
		start = i + 1
	}
	// Frames the reader wrote during the last flush, if any.
	if err := c.out.end(time.Now().Add(c.srv.cfg.WriteTimeout)); err != nil {
		c.fail(err)
		return false
	}
	return true
}

// flushed does the bookkeeping of frames written at now.
func (c *conn) flushed(frames []queued, now time.Time) {
	bytes := 0
	for i, it := range frames {
		bytes += len(it.frame)
		c.wrote(it, now)
		frames[i] = queued{}
	}
	c.queue.done(len(frames), bytes)
}

// wrote does the bookkeeping of one frame written to the socket at now:
// it is counted, and a live message is timed from its publication to now.
// Its room in the queue is given back by the caller (queue.done), once
// for the frames of a write. Writer goroutine only: nothing here is shared
// with another connection, as it runs once per delivered message.
func (c *conn) wrote(it queued, now time.Time) {
	c.framesOut++
	if it.published > 0 {
		c.latency.Observe(secondsFrom(it.published, now))
	}
}

// drop releases frames taken but never to be written.
func (c *conn) drop(frames []queued) {
	bytes := 0
	for _, it := range frames {
		bytes += len(it.frame)
	}
	clear(frames)
	c.queue.done(len(frames), bytes)
}

// fail ends a connection whose writes fail with err: the socket closes,
// which ends the reader, and the queue closes, which stops a replay
// filling it. Writer goroutine only.
func (c *conn) fail(err error) {
	c.writeErr = err
	c.queue.close()
	c.ws.Close()
}

// close starts closing the connection for reason: the queue stops taking
// frames and the writer sends the close frame. Safe from any goroutine,
// and it neither blocks nor logs: Deliver calls it on the hub's reader
// goroutine with the subscription's lock held, where a slow log handler
// would stall fan-out to every other subscriber. The writer logs instead.
func (c *conn) close(reason CloseReason) {
	c.closeOnce.Do(func() {
		c.reason = reason
		c.srv.stats.closes[reason].Add(1)
		c.queue.close()
		close(c.closing)
	})
}

// logClose logs why the server closed the connection, if it did, unless
// the access log tells it when the connection has ended; shutdown closes
// are not logged one by one. Writer goroutine only, once.
func (c *conn) logClose() {
	if c.srv.cfg.AccessLog {
		return
	}
	select {
	case <-c.closing:
	default:
		return
	}
	if c.reason != CloseShutdown {
		c.srv.cfg.Logger.Info("closing connection", "reason", c.reason.String(), "client", c.client.String(), "remote", c.ws.RemoteAddr().String())
	}
}

// Deliver implements broker.Sink for live publications.
func (c *conn) Deliver(p *broker.Publication) bool {
	return c.offered(c.queue.offerLive(p.Frame(c.enc), publishedMs(p)))
}

// offer queues a frame that must not wait (a live message, an answer); a
// full queue closes the connection as a slow consumer, an exhausted send
// budget with CloseBudget.
func (c *conn) offer(frame []byte) bool { return c.offered(c.queue.offer(frame)) }

func (c *conn) offered(err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, errBudget):
		c.close(CloseBudget)
	default:
		c.close(CloseSlowConsumer)
	}
	return false
}

// Replay implements broker.Sink for replayed publications.
func (c *conn) Replay(ctx context.Context, p *broker.Publication) error {
	return c.push(ctx, p.Frame(c.enc))
}

// push queues a frame that must not be dropped (a reply, a replay), waiting
// for room; a client that reads nothing for WriteTimeout is a slow consumer.
func (c *conn) push(ctx context.Context, frame []byte) error {
	err := c.queue.push(ctx, frame, c.srv.cfg.WriteTimeout)
	switch {
	case errors.Is(err, errQueueStuck):
		c.close(CloseSlowConsumer)
	case errors.Is(err, errBudget):
		c.close(CloseBudget)
	}
	return err
}

func (c *conn) reply(frame []byte) { c.push(c.ctx, frame) }

// replyError answers a command with err's code and client message
// (broker.ErrorOf). A canceled command is not answered: the client gave it
// up. An internal error is logged with its cause; the client is told only
// "internal error".
func (c *conn) replyError(ref string, err error) {
	e := broker.ErrorOf(err)
	switch e.Code {
	case broker.CodeCanceled:
		return
	case broker.CodeInternal:
		c.srv.cfg.Logger.Error("command failed", "err", err)
	}
	c.srv.countError(e.Code)
	if c.legacy {
		c.reply(encodeLegacyError(e.Code, e.Message))
		return
	}
	c.reply(encodeError(ref, e.Code, e.Message))
}

// subscribe runs the subscribe sequence shared by both protocols: register,
// acknowledge, replay, go live. ack frames the acknowledgement.
func (c *conn) subscribe(ref, channel string, from broker.From, ack func(broker.SubscribeResult) []byte) {
	// A subscription whose channel was deleted ended without the client
	// unsubscribing; it may subscribe again once the channel is back.
	for name, sub := range c.subs {
		if sub.Ended() {
			sub.Close()
			delete(c.subs, name)
		}
	}
	if _, ok := c.subs[channel]; ok {
		c.replyError(ref, badRequest("already subscribed to %s", channel))
		return
	}
	if len(c.subs) >= c.srv.cfg.MaxSubscriptions {
		c.replyError(ref, broker.ErrLimit.With("too many subscriptions on this connection"))
		return
	}
	sub, res, err := c.srv.hub.Subscribe(c.ctx, channel, from, c)
	if err != nil {
		c.replyError(ref, err)
		return
	}
	c.subs[channel] = sub
	c.reply(ack(res))
	if err := sub.Replay(c.ctx); err != nil {
		sub.Close()
		delete(c.subs, channel)
		switch {
		case errors.Is(err, broker.ErrSlowConsumer):
			// Live traffic kept overtaking the replay: the client reads
			// slower than the channel's rate. It resumes with since,
			// having made progress.
			c.close(CloseSlowConsumer)
		case c.ctx.Err() != nil, errors.Is(err, broker.ErrCanceled),
			errors.Is(err, errQueueClosed), errors.Is(err, errQueueStuck), errors.Is(err, errBudget):
			// The connection is going away, or the subscription was
			// closed; the client resumes with since.
		case errors.Is(err, broker.ErrUnavailable):
			// The subscription was acknowledged, so this error (same
			// ref) ends it; the client resubscribes with since.
			c.replyError(ref, err)
		default:
			// The ack promised messages that will not come, and there is
			// no error frame for that: close, so the client resumes.
			c.srv.cfg.Logger.Error("replay failed", "channel", channel, "err", err)
			c.close(CloseInternal)
		}
	}
}

func (c *conn) unsubscribe(channel string) {
	if sub, ok := c.subs[channel]; ok {
		sub.Close()
		delete(c.subs, channel)
	}
}
