package ws

import (
	"bufio"
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/histogram"
)

// closeGrace is how long the server waits for the client to answer its close
// frame before dropping the TCP connection (Server.testCloseGrace aside).
const closeGrace = time.Second

// conn is one client connection. Its reader (reader.go: one goroutine at a
// time, none while the client is silent) owns its lifetime and its
// subscriptions; its writer (one goroutine at a time, none while nothing is
// to be written) is the only one that writes data frames. Everything else
// talks to the writer through the send queue, and kicks it.
type conn struct {
	srv    *Server
	ws     *websocket.Conn
	out    *batchConn    // ws's socket: the writer batches frames through it
	br     *bufio.Reader // the client's input, read through by ws as well
	legacy bool
	client netip.Addr // the client's address, trusted proxies considered
	enc    *broker.Encoder
	queue  *sendQueue

	ctx    context.Context // done once the reader has returned
	cancel context.CancelFunc

	subs    map[string]*broker.Subscription // reader goroutine only
	limiter *rate.Limiter                   // nil when unlimited
	strikes *rate.Limiter                   // rate-limited commands tolerated; made at the first refusal

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

	// The reader (reader.go): its state (reader*), the poller it parks
	// on with the socket's number there (nil: it blocks on the socket),
	// whether it may park, when it began waiting for the client, and
	// whether the beat timer found it silent too long.
	rstate       atomic.Int32
	poller       *poller
	raw          syscall.RawConn
	pollID       uint64
	noPark       atomic.Bool
	waitingSince atomic.Int64 // Unix nanoseconds
	timedOut     atomic.Bool

	// The beat timer (tick) and when it pings next, guarded by beatMu.
	beatMu   sync.Mutex
	beat     *time.Timer
	nextPing time.Time

	// The writer: wmu guards writing (a writer goroutine runs), again
	// (kicked while running), wdone (never to run again) and writerExit
	// (closed when a running writer returns, for stopWriter). pingDue
	// asks it for a ping.
	wmu        sync.Mutex
	writing    bool
	again      bool
	wdone      bool
	writerExit chan struct{}
	pingDue    atomic.Bool

	closeOnce sync.Once
	closed    atomic.Bool // set by close; nothing waits for it
	reason    CloseReason // set before closed

	// For metrics and the access log (metrics.go): framesIn is the
	// reader goroutine's, framesOut, writeErr and closeLogged the
	// writer's, read once both have returned; latency is the writer's,
	// read at scrape.
	opened      time.Time
	closeLogged bool
	framesIn    int64
	framesOut   int64
	writeErr    error
	latency     *histogram.Histogram
}

var _ broker.Sink = (*conn)(nil)

// newConn makes the connection of ws, whose socket is out, speaking for
// who (nil: nobody yet), in tslm.legacy or v1.
func newConn(s *Server, ws *websocket.Conn, out *batchConn, br *bufio.Reader, who *auth.Principal, legacy bool) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv:     s,
		ws:      ws,
		out:     out,
		br:      br,
		legacy:  legacy,
		enc:     v1Encoder,
		ctx:     ctx,
		cancel:  cancel,
		subs:    make(map[string]*broker.Subscription),
		opened:  time.Now(),
		latency: histogram.New(publishToWriteBounds),
	}
	if c.legacy {
		c.enc = legacyEncoder
	}
	c.queue = newNotifyingQueue(s.cfg.SendQueueFrames, s.cfg.SendQueueBytes, s.cfg.SendBudget, c.kickWriter)
	c.principal = who // its timer is armed by start (startAuth)
	if s.cfg.CommandRate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(s.cfg.CommandRate), s.cfg.CommandBurst)
	}
	return c
}

// kickWriter has the writer do what is waiting (frames, a ping, the
// close), starting it if it is not running. Safe from any goroutine, and
// it never blocks: a connection has a writer (on a pooled goroutine,
// writers.go) only while it has something to write, so an idle one holds
// none.
func (c *conn) kickWriter() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.wdone:
	case c.writing:
		c.again = true
	default:
		c.writing = true
		c.srv.writers.run(c)
	}
}

// writeRun is the writer: the only goroutine writing data frames, one at a
// time (wmu), running while kicks keep coming. batch is the pooled
// goroutine's room for the frames of a write, returned for its next turn:
// the goroutine's, not the connection's, so that an idle connection holds
// none.
func (c *conn) writeRun(batch []queued) []queued {
	for {
		var more bool
		more, batch = c.writeSome(batch)
		c.wmu.Lock()
		if more && c.again && !c.wdone {
			c.again = false
			c.wmu.Unlock()
			continue
		}
		c.writing, c.again = false, false
		if !more {
			c.wdone = true
		}
		if c.writerExit != nil {
			close(c.writerExit)
			c.writerExit = nil
		}
		c.wmu.Unlock()
		return batch
	}
}

// stopWriter keeps the writer from starting again and waits for a running
// one to return. Reader goroutine, once the connection is over.
func (c *conn) stopWriter() {
	c.wmu.Lock()
	c.wdone = true
	var exit chan struct{}
	if c.writing {
		exit = make(chan struct{})
		c.writerExit = exit
	}
	c.wmu.Unlock()
	if exit != nil {
		<-exit
	}
}

// writeSome writes what waits: the close and what goes before it, a ping,
// queued frames, taking them into batch. It returns false once the
// connection must not be written to again, and batch for reuse.
func (c *conn) writeSome(batch []queued) (bool, []queued) {
	cfg := &c.srv.cfg
	for {
		if c.ctx.Err() != nil {
			return false, batch
		}
		if c.closed.Load() {
			c.closeLogged = true
			c.logClose()
			// Send what was already queued: the client resumes from
			// what it received, so every frame sent saves a replay
			// elsewhere. Except to a slow consumer, which cannot take
			// them, which is why it is closed; and a budget close is
			// there to get their memory back.
			batch = c.queue.take(batch)
			if c.reason.dropsQueue() {
				c.drop(batch)
			} else if !c.write(batch) {
				return false, recycledTo(batch, keptBatchFrames)
			}
			batch = recycledTo(batch, keptBatchFrames)
			msg := websocket.FormatCloseMessage(c.reason.Code(), c.reason.String())
			c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(cfg.WriteTimeout))
			grace := closeGrace
			if c.srv.testCloseGrace > 0 {
				grace = c.srv.testCloseGrace
			}
			select {
			case <-c.ctx.Done():
			case <-time.After(grace):
				c.shut()
			}
			return false, batch
		}
		if c.pingDue.Swap(false) {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
				c.fail(err)
				return false, batch
			}
			continue
		}
		batch = c.queue.take(batch)
		if len(batch) == 0 {
			return true, batch
		}
		ok := c.write(batch)
		batch = recycledTo(batch, keptBatchFrames)
		if !ok {
			return false, batch
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
		if c.closed.Load() && c.reason.dropsQueue() {
			c.out.abort()
			c.drop(frames[start:])
			return true
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
	c.shut()
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
		c.closed.Store(true)
	})
	c.kickWriter()
}

// logClose logs why the server closed the connection, if it did, unless
// the access log tells it when the connection has ended; shutdown closes
// are not logged one by one. Writer goroutine only, once.
func (c *conn) logClose() {
	if c.srv.cfg.AccessLog {
		return
	}
	if !c.closed.Load() {
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
