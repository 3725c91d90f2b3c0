package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// conn is one WebSocket connection: one reader and one writer goroutine.
// Its maps are guarded by the client's mu.
type conn struct {
	c    *Client
	ws   *websocket.Conn
	out  chan []byte   // frames for the writer
	dead chan struct{} // closed when the connection failed or closes
	once sync.Once
	// cause is why the connection ended; written before dead is closed.
	cause error
	lived atomic.Bool // a frame came: the backoff starts over

	readerDone, writerDone chan struct{}
	detached               chan struct{} // closed once the client let go of it

	calls   map[string]*call         // commands awaiting their answer, by ref
	subRefs map[string]*Subscription // subscribe refs sent on this connection
}

type callKind int

const (
	kindPlain   callKind = iota // create, publish: the ack or error
	kindRequest                 // a request until its ack
	kindSession                 // the session resume
)

type call struct {
	kind callKind
	res  chan result // kindPlain, buffered 1
	req  *request    // kindRequest
	refs []string    // kindSession: the requests it lists
}

type result struct {
	f    frame
	data json.RawMessage
	err  error
}

func newConn(c *Client, ws *websocket.Conn) *conn {
	return &conn{
		c: c, ws: ws,
		out:        make(chan []byte, sendQueue),
		dead:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		detached:   make(chan struct{}),
		calls:      make(map[string]*call),
		subRefs:    make(map[string]*Subscription),
	}
}

func (cn *conn) start() {
	go func() {
		defer close(cn.writerDone)
		cn.write()
	}()
	go func() {
		defer close(cn.readerDone)
		cn.kill(cn.read())
	}()
}

// kill ends the connection for cause; the first cause is kept.
func (cn *conn) kill(cause error) {
	cn.once.Do(func() {
		cn.cause = cause
		close(cn.dead)
		cn.ws.Close()
	})
}

// wait returns once both goroutines have.
func (cn *conn) wait() {
	<-cn.readerDone
	<-cn.writerDone
}

// closeNormally sends a close frame and waits a little for the gateway's
// answer before it closes the socket.
func (cn *conn) closeNormally() {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "client closing")
	if cn.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeTimeout)) == nil {
		select {
		case <-cn.readerDone:
		case <-time.After(closeWait):
		}
	}
	cn.kill(ErrClosed)
}

// send queues b, waiting for room; an error means b was never written.
func (cn *conn) send(ctx context.Context, b []byte) error {
	select {
	case cn.out <- b:
		return nil
	case <-cn.dead:
		return cn.cause
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sendNow queues b unless the connection died (the frames of attach, which
// the next connection sends again).
func (cn *conn) sendNow(b []byte) {
	select {
	case cn.out <- b:
	case <-cn.dead:
	}
}

// write is the connection's only writer of data frames: gorilla allows one
// at a time. It also pings.
func (cn *conn) write() {
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		var err error
		select {
		case b := <-cn.out:
			cn.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			err = cn.ws.WriteMessage(websocket.TextMessage, b)
		case <-ping.C:
			err = cn.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout))
		case <-cn.dead:
			return
		}
		if err != nil {
			cn.kill(&DisconnectError{Code: websocket.CloseAbnormalClosure, Err: err})
			return
		}
	}
}

// read reads frames until the connection ends, and returns why.
func (cn *conn) read() error {
	ws := cn.ws
	ws.SetReadLimit(readLimit)
	ws.SetReadDeadline(time.Now().Add(readIdle))
	ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(readIdle)) })
	ws.SetPingHandler(func(msg string) error {
		ws.SetReadDeadline(time.Now().Add(readIdle))
		err := ws.WriteControl(websocket.PongMessage, []byte(msg), time.Now().Add(writeTimeout))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) && ne.Timeout() {
			return nil // as gorilla's default handler: not a read error
		}
		return err
	})
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return &DisconnectError{Code: ce.Code, Reason: ce.Text, Final: ce.Code >= 4500 && ce.Code <= 4999}
			}
			select {
			case <-cn.dead:
				return cn.cause
			default:
			}
			return &DisconnectError{Code: websocket.CloseAbnormalClosure, Err: err}
		}
		ws.SetReadDeadline(time.Now().Add(readIdle))
		cn.lived.Store(true)
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			cn.c.log.Warn("tslm client: frame from the gateway is not a JSON object; ignored", "err", err)
			continue
		}
		if !cn.dispatch(f) {
			return cn.cause
		}
	}
}

// dispatch handles one frame; false when the connection died while a
// subscription's reader was not reading.
func (cn *conn) dispatch(f frame) bool {
	c := cn.c
	switch f.Type {
	case "ack":
		c.onAck(cn, f)
	case "error":
		c.onError(cn, f)
	case "reply":
		c.onReply(f)
	case "message":
		return c.onEvent(cn, f.Channel, Message{Channel: f.Channel, ID: f.ID, Data: f.Data}, f.ID)
	case "gap":
		return c.onEvent(cn, f.Channel, Gap{Channel: f.Channel, After: f.After}, "")
	case "deleted":
		return c.onDeleted(cn, f.Channel)
	}
	// Other types are of newer versions, or of the serving side.
	return true
}

func (c *Client) onAck(cn *conn, f frame) {
	c.mu.Lock()
	if cl, ok := cn.calls[f.Ref]; ok {
		delete(cn.calls, f.Ref)
		switch cl.kind {
		case kindPlain:
			cl.res <- result{f: f}
		case kindRequest:
			cl.req.id = f.ID
			if f.Session != "" {
				c.session = f.Session
			}
			if !cl.req.abandoned {
				c.requests[f.Ref] = cl.req
			}
		}
		c.mu.Unlock()
		return
	}
	s, ok := cn.subRefs[f.Ref]
	if !ok || c.subs[s.channel] != s {
		c.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.ackedOn = cn
	if f.Head != "" {
		s.head = f.Head
	}
	since := s.sentSince
	s.mu.Unlock()
	c.mu.Unlock()
	s.acked(nil)
	if f.Resumed != nil && !*f.Resumed {
		s.deliver(cn, NotResumed{Channel: s.channel, Since: since, Head: f.Head}, "")
	}
}

func (c *Client) onError(cn *conn, f frame) {
	e := &Error{Code: f.Code, Message: f.Message, Channel: f.Channel}
	c.mu.Lock()
	if r, ok := c.requests[f.Ref]; ok && f.Ref != "" {
		delete(c.requests, f.Ref)
		c.mu.Unlock()
		r.res <- result{err: e}
		return
	}
	if cl, ok := cn.calls[f.Ref]; ok && f.Ref != "" {
		delete(cn.calls, f.Ref)
		var failed []*request
		switch cl.kind {
		case kindPlain:
			cl.res <- result{err: e}
		case kindRequest:
			failed = append(failed, cl.req)
		case kindSession:
			// The session's replies are gone (or never were): its
			// requests fail; the next request starts a new session.
			c.session = ""
			for _, ref := range cl.refs {
				if r, ok := c.requests[ref]; ok {
					delete(c.requests, ref)
					failed = append(failed, r)
				}
			}
		}
		c.mu.Unlock()
		for _, r := range failed {
			r.res <- result{err: e}
		}
		return
	}
	var s *Subscription
	if f.Ref != "" {
		s = cn.subRefs[f.Ref]
	} else if f.Channel != "" {
		s = c.subs[f.Channel] // a subscription ended by a re-authentication
	}
	if s == nil || c.subs[s.channel] != s {
		c.mu.Unlock()
		if s == nil {
			c.log.Warn("tslm client: error from the gateway", "ref", f.Ref, "code", f.Code, "message", f.Message)
		}
		return
	}
	s.mu.Lock()
	everAcked := s.head != "" || s.ackedOn != nil
	s.mu.Unlock()
	retry := f.Ref != "" && everAcked && (f.Code == "unavailable" || f.Code == "internal" || f.Code == "rate_limited")
	if !retry {
		delete(c.subs, s.channel)
	}
	c.mu.Unlock()
	if retry {
		c.resubscribeLater(cn, s, e)
		return
	}
	if !everAcked {
		s.acked(e)
	}
	s.end(e)
}

// resubscribeLater sends s's subscribe again on cn after a backoff: the
// gateway could not replay it (docs/protocol.md, "subscribe").
func (c *Client) resubscribeLater(cn *conn, s *Subscription, cause error) {
	s.mu.Lock()
	s.retries++
	d := c.o.backoff.delay(s.retries - 1)
	s.mu.Unlock()
	c.log.Info("tslm client: subscription failed; subscribing again", "channel", s.channel, "err", cause, "in", d)
	t := time.NewTimer(d)
	go func() {
		defer t.Stop()
		select {
		case <-t.C:
		case <-cn.dead:
			return // the next connection subscribes it
		case <-s.done:
			return
		}
		c.mu.Lock()
		if c.cur != cn || c.subs[s.channel] != s {
			c.mu.Unlock()
			return
		}
		b := c.subscribeFrameLocked(cn, s)
		c.mu.Unlock()
		cn.sendNow(b)
	}()
}

func (c *Client) onReply(f frame) {
	c.mu.Lock()
	r, ok := c.requests[f.Ref]
	if ok {
		delete(c.requests, f.Ref)
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	if f.Error != nil {
		r.res <- result{err: &Refusal{Code: f.Error.Code, Message: f.Error.Message}}
		return
	}
	data := f.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	r.res <- result{data: data}
}

// onEvent passes ev to the subscription of channel; id, when set, is the
// position it resumes after once delivered.
func (c *Client) onEvent(cn *conn, channel string, ev Event, id string) bool {
	c.mu.Lock()
	s := c.subs[channel]
	c.mu.Unlock()
	if s == nil {
		return true
	}
	s.mu.Lock()
	mine := s.ackedOn == cn
	s.mu.Unlock()
	if !mine {
		// Frames of a subscription closed (and perhaps made again) whose
		// unsubscribe has not been answered yet.
		return true
	}
	return s.deliver(cn, ev, id)
}

func (c *Client) onDeleted(cn *conn, channel string) bool {
	c.mu.Lock()
	s := c.subs[channel]
	if s != nil {
		s.mu.Lock()
		mine := s.ackedOn == cn
		s.mu.Unlock()
		if !mine {
			s = nil
		} else {
			delete(c.subs, channel)
		}
	}
	c.mu.Unlock()
	if s == nil {
		return true
	}
	ok := s.deliver(cn, Deleted{Channel: channel}, "")
	s.end(nil)
	return ok
}

// frame is any frame from the gateway; each type uses some fields.
type frame struct {
	Type      string          `json:"type"`
	Ref       string          `json:"ref"`
	Channel   string          `json:"channel"`
	ID        string          `json:"id"`
	Head      string          `json:"head"`
	Resumed   *bool           `json:"resumed"`
	Created   *bool           `json:"created"`
	Duplicate bool            `json:"duplicate"`
	Session   string          `json:"session"`
	Subject   string          `json:"subject"`
	Expires   string          `json:"expires"`
	Data      json.RawMessage `json:"data"`
	After     string          `json:"after"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	Error     *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type authFrame struct {
	Type  string `json:"type"`
	Ref   string `json:"ref"`
	Token string `json:"token"`
}

type createFrame struct {
	Type      string `json:"type"`
	Ref       string `json:"ref"`
	Channel   string `json:"channel"`
	MaxLen    int    `json:"max_len,omitempty"`
	Retention string `json:"retention,omitempty"`
}

type publishFrame struct {
	Type           string          `json:"type"`
	Ref            string          `json:"ref"`
	Channel        string          `json:"channel"`
	Data           json.RawMessage `json:"data"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

type subscribeFrame struct {
	Type    string `json:"type"`
	Ref     string `json:"ref,omitempty"`
	Channel string `json:"channel"`
	Since   string `json:"since,omitempty"`
	Last    int    `json:"last,omitempty"`
}

type requestFrame struct {
	Type      string          `json:"type"`
	Ref       string          `json:"ref"`
	Channel   string          `json:"channel"`
	Data      json.RawMessage `json:"data"`
	TimeoutMS int64           `json:"timeout_ms,omitempty"`
}

type sessionFrame struct {
	Type    string         `json:"type"`
	Ref     string         `json:"ref"`
	Session string         `json:"session"`
	Pending []pendingEntry `json:"pending"`
}

type pendingEntry struct {
	Channel   string `json:"channel"`
	ID        string `json:"id"`
	Ref       string `json:"ref"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}
