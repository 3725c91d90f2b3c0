package bare

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// conn is one WebSocket connection: a reader goroutine handling commands
// and a writer goroutine draining out.
type conn struct {
	s    *Server
	ws   *websocket.Conn
	out  chan []byte
	done chan struct{} // closed once the connection is to end

	closeOnce sync.Once
	closeCode int // the close frame the writer sends, 0 for none; set before done closes
	closeText string

	subs map[string]*channel // the reader's alone
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	c := &conn{s: s, ws: ws, out: make(chan []byte, s.cfg.SendQueue), done: make(chan struct{}), subs: make(map[string]*channel)}
	s.mu.Lock()
	if s.closed {
		// Upgraded while Close ran: it goes as the others did.
		s.mu.Unlock()
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server closing"), time.Now().Add(time.Second))
		ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	ws.SetReadLimit(int64(s.cfg.MaxDataBytes) + 4096)
	go c.write()
	go c.read()
}

// offer queues frame without waiting: a full queue closes the connection
// as a slow consumer, as TSLM does for a live message.
func (c *conn) offer(frame []byte) {
	select {
	case c.out <- frame:
	default:
		c.close(4000, "slow consumer")
	}
}

// close makes the writer send the close frame code (none when 0) and
// close the socket, which ends the reader. It never waits, so that it may
// be called under a channel's lock. A write blocked on a peer that reads
// nothing gets a second more, then fails: the writer is then gone
// without its close frame, which could not have been sent either.
func (c *conn) close(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.done)
		c.ws.UnderlyingConn().SetWriteDeadline(time.Now().Add(time.Second))
	})
}

func (c *conn) write() {
	defer c.s.wg.Done()
	defer c.ws.Close()
	for {
		select {
		case f := <-c.out:
			c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
				c.close(0, "")
				return
			}
		case <-c.done:
			if c.closeCode != 0 {
				msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
				c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			}
			return
		}
	}
}

func (c *conn) read() {
	defer func() {
		c.close(0, "")
		for _, ch := range c.subs {
			ch.mu.Lock()
			delete(ch.subs, c)
			ch.mu.Unlock()
		}
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.wg.Done()
	}()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		c.handle(data)
	}
}

// command is a client frame, the fields bare reads.
type command struct {
	Type    string          `json:"type"`
	Ref     string          `json:"ref,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	Since   string          `json:"since,omitempty"`
	Last    int             `json:"last,omitempty"`
}

// reply is a server frame other than a message.
type reply struct {
	Type    string `json:"type"`
	Ref     string `json:"ref,omitempty"`
	Channel string `json:"channel,omitempty"`
	ID      string `json:"id,omitempty"`
	Head    string `json:"head,omitempty"`
	Created *bool  `json:"created,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

func (c *conn) send(r reply) {
	b, _ := json.Marshal(r)
	c.offer(b)
}

func (c *conn) fail(cmd command, code, msg string) {
	c.send(reply{Type: "error", Ref: cmd.Ref, Channel: cmd.Channel, Code: code, Message: msg})
}

func (c *conn) handle(data []byte) {
	var cmd command
	if err := json.Unmarshal(data, &cmd); err != nil {
		c.fail(cmd, "bad_request", "not a JSON object: "+err.Error())
		return
	}
	switch cmd.Type {
	case "create":
		if !validName(cmd.Channel) {
			c.fail(cmd, "bad_request", "invalid channel name")
			return
		}
		created := c.s.create(cmd.Channel)
		c.send(reply{Type: "ack", Ref: cmd.Ref, Channel: cmd.Channel, Created: &created})
	case "subscribe":
		c.subscribe(cmd)
	case "unsubscribe":
		if ch := c.subs[cmd.Channel]; ch != nil {
			ch.mu.Lock()
			delete(ch.subs, c)
			ch.mu.Unlock()
			delete(c.subs, cmd.Channel)
		}
		c.send(reply{Type: "ack", Ref: cmd.Ref, Channel: cmd.Channel})
	case "publish":
		switch {
		case len(cmd.Data) == 0:
			c.fail(cmd, "bad_request", "data is missing")
		case len(cmd.Data) > c.s.cfg.MaxDataBytes:
			c.fail(cmd, "too_large", "data too large")
		default:
			id, err := c.s.publish(cmd.Channel, cmd.Data)
			if err != nil {
				c.fail(cmd, "not_found", err.Error())
				return
			}
			c.send(reply{Type: "ack", Ref: cmd.Ref, Channel: cmd.Channel, ID: id})
		}
	default:
		c.fail(cmd, "unknown_type", "bare speaks create, subscribe, unsubscribe and publish")
	}
}

// subscribe adds c to the channel's subscribers and queues the ack under
// the channel's lock, so that it precedes every message.
func (c *conn) subscribe(cmd command) {
	if cmd.Since != "" || cmd.Last != 0 {
		c.fail(cmd, "bad_request", "bare has no backlog: live subscriptions only")
		return
	}
	if _, ok := c.subs[cmd.Channel]; ok {
		c.fail(cmd, "bad_request", "already subscribed")
		return
	}
	ch := c.s.channel(cmd.Channel)
	if ch == nil {
		c.fail(cmd, "not_found", errNotFound.Error())
		return
	}
	ch.mu.Lock()
	ch.subs[c] = struct{}{}
	b, _ := json.Marshal(reply{Type: "ack", Ref: cmd.Ref, Channel: cmd.Channel, Head: ch.head()})
	c.offer(b)
	ch.mu.Unlock()
	c.subs[cmd.Channel] = ch
}
