package ws

import (
	"errors"
	"net"
	"os"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/tslm/tslm/broker"
)

// A connection's reader is one goroutine at a time, and none while the
// client sends nothing. Most connections of a last-mile gateway are idle
// terminals, and a goroutine blocked on each socket is most of what an idle
// connection costs (its stack, and the buffers it keeps live). So the
// reader reads while input is there, then parks: it arms the socket on the
// process's poller (poll_linux.go) and returns, and the poller starts a
// reader again when input arrives. Where the socket cannot be polled (TLS,
// which keeps decrypted input the socket does not show; no epoll), the
// reader blocks on the socket as any Go reader does. Either way there is
// only ever one reader, so what is "reader goroutine only" stays so.
//
// Without a read pending, no read deadline can notice a silent client; the
// connection's beat timer does instead (tick).

// Reader states.
const (
	readerRunning int32 = iota // a goroutine reads and runs commands
	readerParked               // waiting on the poller, no goroutine
	readerDone                 // the connection is over
)

// readBufferBytes is the size of the buffer the client's input is read
// through, held by every connection for its lifetime. Commands are small;
// a larger message is read straight into its own slice, past this buffer
// (bufio reads directly into a read as large as itself), so this only has
// to hold a frame header and a control frame (125 bytes), and gorilla
// reuses a buffer above 256 bytes only (288 is the allocator's next size).
const readBufferBytes = 288

// start runs the connection, once admitted, without holding the goroutine
// that upgraded it: that one returns, and with it the HTTP server's request,
// buffers and stack.
func (c *conn) start() {
	c.startAuth()
	c.logOpen()
	cfg := &c.srv.cfg
	c.ws.SetReadLimit(cfg.MaxFrameBytes)
	c.ws.SetPongHandler(func(string) error {
		c.heard()
		return c.ws.SetReadDeadline(time.Now().Add(c.idle()))
	})
	c.heard() // silence counts from the upgrade
	c.beatMu.Lock()
	c.nextPing = time.Now().Add(cfg.PingInterval)
	c.beat = time.AfterFunc(cfg.PingInterval, c.tick)
	c.beatMu.Unlock()

	if raw, ok := pollable(c.out.Conn); ok && !c.srv.testBlockingReads {
		if p, err := sharedPoller(); err == nil {
			c.raw, c.poller = raw, p
			c.rstate.Store(readerParked)
			if p.add(c) == nil {
				return
			}
			if !c.rstate.CompareAndSwap(readerParked, readerRunning) {
				return // closed meanwhile; its reader ends it
			}
		}
	}
	c.noPark.Store(true)
	go c.readRun()
}

// idle is how long a client may stay silent while the reader waits for it.
func (c *conn) idle() time.Duration {
	return c.srv.cfg.PingInterval + c.srv.cfg.PongTimeout
}

// heard notes that the client answered: its silence counts from now.
func (c *conn) heard() { c.waitingSince.Store(time.Now().UnixNano()) }

// wake starts a reader for a parked connection; a running reader will see
// what woke it (input, or a closed socket) by itself.
func (c *conn) wake() {
	if c.rstate.CompareAndSwap(readerParked, readerRunning) {
		go c.readRun()
	}
}

// pollFailed makes the connection's reader block on its socket from now on.
func (c *conn) pollFailed() {
	c.noPark.Store(true)
	c.wake()
}

// shut closes the socket, which ends the connection: a running reader's
// read fails, a parked one is woken to fail it.
func (c *conn) shut() {
	c.ws.Close()
	c.wake()
}

// readRun is the reader: it reads and runs commands until no input is
// left, then parks, or until the connection fails, when it ends it.
func (c *conn) readRun() {
	for {
		if err := c.readSome(); err != nil {
			c.finish(err)
			return
		}
		c.heard() // silence counts from when the reader is free to hear
		c.rstate.Store(readerParked)
		if c.poller.arm(c) {
			return
		}
		// The socket is closed, or cannot be armed: block on it instead.
		c.noPark.Store(true)
		if !c.rstate.CompareAndSwap(readerParked, readerRunning) {
			return // woken meanwhile: that reader goes on
		}
	}
}

// readSome reads and runs commands: while input is buffered when parking
// is possible, for ever otherwise. It returns nil to park, or why the
// connection ends.
func (c *conn) readSome() error {
	for first := true; ; first = false {
		if !first && !c.noPark.Load() && c.br.Buffered() == 0 {
			return nil
		}
		// Bounds a frame that arrives in parts, and, blocking, the
		// client's silence; re-armed for every frame, as a long replay
		// keeps the reader busy while pongs wait unread.
		c.ws.SetReadDeadline(time.Now().Add(c.idle()))
		if c.timedOut.Load() {
			return os.ErrDeadlineExceeded
		}
		header, err := c.br.Peek(2)
		if err != nil {
			return err
		}
		if done, err := c.control(header); done || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		if err := c.readMessage(); err != nil {
			return err
		}
	}
}

// control answers a ping or notes a pong when one is the next frame, and
// says whether it did. Gorilla handles both too, but only inside a read
// that then waits for a data frame, which would hold a reader for every
// idle client answering the server's ping. Any other frame, or a control
// frame gorilla should refuse (unmasked, fragmented, reserved bits,
// over 125 bytes), is left to gorilla.
func (c *conn) control(header []byte) (bool, error) {
	const fin, rsv, opcode, masked, length = 0x80, 0x70, 0x0f, 0x80, 0x7f
	op := header[0] & opcode
	if op != websocket.PingMessage && op != websocket.PongMessage {
		return false, nil
	}
	n := int(header[1] & length)
	if header[0]&fin == 0 || header[0]&rsv != 0 || header[1]&masked == 0 || n > 125 {
		return false, nil
	}
	frame, err := c.br.Peek(2 + 4 + n)
	if err != nil {
		return true, err
	}
	key, payload := frame[2:6], make([]byte, n)
	for i := range payload {
		payload[i] = frame[6+i] ^ key[i%4]
	}
	c.br.Discard(len(frame))
	c.heard()
	if op == websocket.PongMessage {
		return true, nil
	}
	// As gorilla's own ping handler answers.
	err = c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(c.srv.cfg.WriteTimeout))
	var ne net.Error
	if err == nil || errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
		return true, nil
	}
	return true, err
}

// readMessage reads the next message, gorilla answering control frames on
// the way, and runs it.
func (c *conn) readMessage() error {
	kind, frame, err := c.ws.ReadMessage()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			// gorilla has sent 1009 itself.
			c.srv.stats.closes[CloseTooBig].Add(1)
		}
		return err
	}
	c.framesIn++
	if c.closed.Load() {
		return nil // wait for the client's close frame
	}
	c.srv.stats.commands.Add(1)
	if !c.allowRate(frame) {
		return nil
	}
	if kind != websocket.TextMessage {
		c.replyError("", badRequest("binary frames are not supported: send JSON in text frames"))
		return nil
	}
	// JSON decoding tolerates invalid UTF-8 in strings; stored, it
	// would break every subscriber's text frames.
	if !utf8.Valid(frame) {
		c.replyError("", badRequest("text frames must be UTF-8"))
		return nil
	}
	if c.legacy {
		c.handleLegacy(frame)
	} else {
		c.handle(frame)
	}
	return nil
}

// tick is the beat timer: it pings the client every PingInterval, and
// ends a connection whose parked reader has heard nothing for
// PingInterval+PongTimeout (a running reader has its read deadline).
func (c *conn) tick() {
	c.beatMu.Lock()
	defer c.beatMu.Unlock()
	if c.beat == nil {
		return // stopped
	}
	now := time.Now()
	// State first: a reader notes when it began waiting before it parks,
	// so a parked state read here comes with that time, not an older one.
	parked := c.rstate.Load() == readerParked
	deadline := time.Unix(0, c.waitingSince.Load()).Add(c.idle())
	if parked && !now.Before(deadline) {
		c.timedOut.Store(true)
		c.shut()
		return
	}
	if !now.Before(c.nextPing) {
		c.pingDue.Store(true)
		c.kickWriter()
		c.nextPing = now.Add(c.srv.cfg.PingInterval)
	}
	next := c.nextPing
	if parked && deadline.Before(next) {
		next = deadline
	}
	c.beat.Reset(next.Sub(now))
}

func (c *conn) stopBeat() {
	c.beatMu.Lock()
	defer c.beatMu.Unlock()
	if c.beat != nil {
		c.beat.Stop()
		c.beat = nil
	}
}

// finish ends the connection once its reader has failed with readErr:
// subscriptions and requests end, the writer is waited for, and the
// connection is counted, logged and forgotten.
func (c *conn) finish(readErr error) {
	if c.timedOut.Load() {
		readErr = os.ErrDeadlineExceeded
	}
	c.rstate.Store(readerDone)
	c.cancel()
	c.stopBeat()
	for _, sub := range c.subs {
		sub.Close()
	}
	c.closeRequests()
	c.stopWriter()
	c.queue.release()
	if c.poller != nil {
		c.poller.remove(c)
	}
	c.ws.Close()
	if !c.closeLogged {
		c.logClose()
	}
	c.recordEnd(c.ending(readErr))
	c.stopAuth()
	c.srv.forget(c)
}

// allowRate applies the command rate. A command over it is answered with
// rate_limited; a client that keeps going after as many refusals as its
// burst is closed with 1008.
func (c *conn) allowRate(frame []byte) bool {
	if c.limiter == nil || c.limiter.Allow() {
		return true
	}
	if c.strikes == nil { // most clients never exceed the rate
		c.strikes = rate.NewLimiter(c.limiter.Limit(), c.limiter.Burst())
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
