package responder_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/responder"
)

// fakeGateway speaks the internal side of docs/protocol.md, scripted by
// the test: each connection is handed to the test, which reads the
// responder's frames and writes the gateway's.
type fakeGateway struct {
	t      *testing.T
	srv    *httptest.Server
	conns  chan *fakeConn
	status atomic.Int32 // when non-zero, handshakes are refused with it
}

type fakeConn struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan frame
	ended  chan struct{} // the reader stopped
	// closeCode is the code of the close frame received, if any; read
	// after ended.
	closeCode int
}

// frame is any frame of either side.
type frame struct {
	Type       string             `json:"type"`
	Ref        string             `json:"ref,omitempty"`
	Channel    string             `json:"channel,omitempty"`
	ID         string             `json:"id,omitempty"`
	Data       json.RawMessage    `json:"data,omitempty"`
	Error      *responder.Refusal `json:"error,omitempty"`
	DeadlineMS int64              `json:"deadline_ms,omitempty"`
	Deliveries int64              `json:"deliveries,omitempty"`
	Code       string             `json:"code,omitempty"`
	Message    string             `json:"message,omitempty"`
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{t: t, conns: make(chan *fakeConn, 10)}
	up := websocket.Upgrader{Subprotocols: []string{"tslm.v1"}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := g.status.Load(); s != 0 {
			http.Error(w, "refused by the test", int(s))
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if ws.Subprotocol() != "tslm.v1" {
			t.Errorf("responder connected with subprotocol %q, want tslm.v1", ws.Subprotocol())
		}
		c := &fakeConn{t: t, ws: ws, frames: make(chan frame, 100), ended: make(chan struct{})}
		go c.read()
		g.conns <- c
		<-c.ended
	}))
	t.Cleanup(func() {
		g.srv.CloseClientConnections()
		g.srv.Close()
	})
	return g
}

func (g *fakeGateway) url() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + "/v1/ws" }

// accept waits for the responder's next connection.
func (g *fakeGateway) accept() *fakeConn {
	g.t.Helper()
	select {
	case c := <-g.conns:
		g.t.Cleanup(func() { c.ws.Close() })
		return c
	case <-time.After(10 * time.Second):
		g.t.Fatal("the responder did not connect within 10s")
		return nil
	}
}

func (c *fakeConn) read() {
	defer close(c.ended)
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closeCode = ce.Code
			}
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			c.t.Errorf("responder sent a frame that is not JSON: %q", b)
			continue
		}
		c.frames <- f
	}
}

// next returns the responder's next frame.
func (c *fakeConn) next() frame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-time.After(10 * time.Second):
		c.t.Fatal("no frame from the responder within 10s")
		return frame{}
	}
}

func (c *fakeConn) send(f frame) {
	c.t.Helper()
	b, _ := json.Marshal(f)
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("writing to the responder: %v", err)
	}
}

// serves reads one serve frame per channel and returns their refs.
func (c *fakeConn) serves(channels ...string) map[string]string {
	c.t.Helper()
	refs := map[string]string{}
	for range channels {
		f := c.next()
		if f.Type != "serve" || f.Ref == "" {
			c.t.Fatalf("frame %+v, want a serve with a ref", f)
		}
		refs[f.Channel] = f.Ref
	}
	for _, ch := range channels {
		if refs[ch] == "" {
			c.t.Fatalf("serves %v, want one for each of %v", refs, channels)
		}
	}
	return refs
}

// serveAll acks the serve of every channel.
func (c *fakeConn) serveAll(channels ...string) {
	c.t.Helper()
	for ch, ref := range c.serves(channels...) {
		c.send(frame{Type: "ack", Ref: ref, Channel: ch})
	}
}

func (c *fakeConn) request(ch, id, data string) {
	c.t.Helper()
	c.send(frame{Type: "request", Channel: ch, ID: id, Data: json.RawMessage(data),
		DeadlineMS: time.Now().Add(30 * time.Second).UnixMilli(), Deliveries: 1})
}

// replies reads n reply frames, acks each, and returns them by
// key(channel, id).
func (c *fakeConn) replies(n int) map[string]frame {
	c.t.Helper()
	out := map[string]frame{}
	refs := map[string]bool{}
	for range n {
		f := c.next()
		if f.Type != "reply" || f.Ref == "" {
			c.t.Fatalf("frame %+v, want a reply with a ref", f)
		}
		if refs[f.Ref] {
			c.t.Errorf("ref %q used twice", f.Ref)
		}
		refs[f.Ref] = true
		k := key(f.Channel, f.ID)
		if _, dup := out[k]; dup {
			c.t.Errorf("two replies to %s", k)
		}
		out[k] = f
		c.send(frame{Type: "ack", Ref: f.Ref, Channel: f.Channel, ID: f.ID})
	}
	return out
}

// drop cuts the connection without a close frame, as a crashed gateway
// or a network failure would.
func (c *fakeConn) drop() { c.ws.UnderlyingConn().Close() }

// serveWS runs ServeWebSocket until the test ends or stop is called,
// which waits for it to return and reports what it returned. done
// delivers that when ServeWebSocket returns, by itself or stopped.
func serveWS(t *testing.T, cfg responder.WebSocketConfig, h responder.Handler, channels ...string) (stop func() error, done <-chan error) {
	ctx, cancel := context.WithCancel(t.Context())
	finished := make(chan struct{})
	var err error
	go func() {
		err = responder.ServeWebSocket(ctx, cfg, h, channels...)
		close(finished)
	}()
	stop = func() error {
		cancel()
		select {
		case <-finished:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("ServeWebSocket did not return within 10s of its context's end")
		}
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("ServeWebSocket did not return within 10s of its context's end")
		}
	})
	ch := make(chan error, 1)
	go func() {
		<-finished
		ch <- err
	}()
	return stop, ch
}

// TestWebSocketRoundTrip: the responder serves every channel, and answers
// each request with a reply naming its channel and id.
func TestWebSocketRoundTrip(t *testing.T) {
	g := newFakeGateway(t)
	serveWS(t, responder.WebSocketConfig{URL: g.url()}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("request %s: handler context has no deadline", r.ID)
		}
		b, _ := json.Marshal(map[string]any{"echo": r.Data, "deliveries": r.Deliveries})
		return b, nil
	}, "orders", "prices")
	c := g.accept()
	c.serveAll("orders", "prices")
	c.request("orders", "1-0", `{"a":1}`)
	c.request("prices", "1-0", `[1]`)
	c.send(frame{Type: "request", Channel: "orders", ID: "2-0", Data: json.RawMessage(`"x"`),
		DeadlineMS: time.Now().Add(time.Minute).UnixMilli(), Deliveries: 3})
	got := c.replies(3)
	want := map[string]string{
		"orders/1-0": `{"deliveries":1,"echo":{"a":1}}`,
		"prices/1-0": `{"deliveries":1,"echo":[1]}`,
		"orders/2-0": `{"deliveries":3,"echo":"x"}`,
	}
	for k, data := range want {
		if f, ok := got[k]; !ok || string(f.Data) != data || f.Error != nil {
			t.Errorf("reply to %s = %+v, want data %s", k, f, data)
		}
	}
}

// TestWebSocketRefusal: a *Refusal is the reply's error field, other
// errors a generic internal one; a request already past its deadline gets
// a timeout error without running the handler.
func TestWebSocketRefusal(t *testing.T) {
	g := newFakeGateway(t)
	var calls atomic.Int64
	serveWS(t, responder.WebSocketConfig{URL: g.url()}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		calls.Add(1)
		if string(r.Data) == `"refuse"` {
			return nil, &responder.Refusal{Code: "no_stock", Message: "sold out"}
		}
		return nil, errors.New("secret detail")
	}, "orders")
	c := g.accept()
	c.serveAll("orders")
	c.request("orders", "1-0", `"refuse"`)
	c.request("orders", "2-0", `"fail"`)
	c.send(frame{Type: "request", Channel: "orders", ID: "3-0", Data: json.RawMessage(`1`),
		DeadlineMS: time.Now().Add(-time.Second).UnixMilli(), Deliveries: 1})
	got := c.replies(3)
	for k, want := range map[string]responder.Refusal{
		"orders/1-0": {Code: "no_stock", Message: "sold out"},
		"orders/2-0": {Code: "internal", Message: "the responder failed to handle the request"},
	} {
		if f := got[k]; f.Error == nil || *f.Error != want || f.Data != nil {
			t.Errorf("reply to %s = %+v (error %v), want error %+v", k, f, f.Error, want)
		}
	}
	if f := got["orders/3-0"]; f.Error == nil || f.Error.Code != "timeout" {
		t.Errorf("reply to an expired request = %+v (error %v), want error timeout", f, f.Error)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (not for the expired request)", n)
	}
}

// TestWebSocketReconnect: when the connection drops, running handlers are
// cancelled (the gateway hands their requests to other servers), and the
// responder connects again, serves again, and answers on the new
// connection.
func TestWebSocketReconnect(t *testing.T) {
	g := newFakeGateway(t)
	cancelled := make(chan string, 10)
	serveWS(t, responder.WebSocketConfig{URL: g.url()}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		if string(r.Data) == `"block"` {
			<-ctx.Done()
			cancelled <- r.ID
			return nil, ctx.Err()
		}
		return r.Data, nil
	}, "orders")
	c1 := g.accept()
	c1.serveAll("orders")
	c1.request("orders", "1-0", `"block"`)
	c1.request("orders", "2-0", `"quick"`)
	if got := c1.replies(1); got["orders/2-0"].Data == nil {
		t.Fatalf("replies on the first connection: %+v", got)
	}
	c1.drop()
	select {
	case id := <-cancelled:
		if id != "1-0" {
			t.Errorf("cancelled handler of %s, want 1-0", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler not cancelled when its connection dropped")
	}

	c2 := g.accept()
	c2.serveAll("orders")
	c2.request("orders", "3-0", `{"again":true}`)
	f := c2.next()
	if f.Type != "reply" || f.Channel != "orders" || f.ID != "3-0" || string(f.Data) != `{"again":true}` {
		t.Fatalf("first frame after serving again = %+v, want the reply to 3-0 (nothing for 1-0)", f)
	}
}

// TestWebSocketServeRefusedFirst: a gateway that refuses to serve a
// channel on the first connection (a typo, a channel not created) makes
// ServeWebSocket return an error naming it.
func TestWebSocketServeRefusedFirst(t *testing.T) {
	g := newFakeGateway(t)
	_, done := serveWS(t, responder.WebSocketConfig{URL: g.url()}, echo, "orders", "typo")
	c := g.accept()
	refs := c.serves("orders", "typo")
	c.send(frame{Type: "ack", Ref: refs["orders"], Channel: "orders"})
	c.send(frame{Type: "error", Ref: refs["typo"], Code: "not_found", Message: `channel "typo" not found`})
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not_found") || !strings.Contains(err.Error(), "typo") {
			t.Errorf("ServeWebSocket = %v, want an error naming not_found and the channel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeWebSocket kept running after serve was refused")
	}
}

// TestWebSocketServeRefusedLater: once serving, a refusal after a
// reconnect (the channel deleted and not yet created again) is retried on
// the same connection until it succeeds.
func TestWebSocketServeRefusedLater(t *testing.T) {
	g := newFakeGateway(t)
	_, done := serveWS(t, responder.WebSocketConfig{URL: g.url()}, echo, "orders")
	c1 := g.accept()
	c1.serveAll("orders")
	c1.drop()
	c2 := g.accept()
	ref := c2.serves("orders")["orders"]
	c2.send(frame{Type: "error", Ref: ref, Code: "not_found", Message: `channel "orders" not found`})
	retry := c2.serves("orders")["orders"]
	if retry == ref {
		t.Errorf("retried serve reuses ref %q", ref)
	}
	c2.send(frame{Type: "ack", Ref: retry, Channel: "orders"})
	c2.request("orders", "1-0", `5`)
	if got := c2.replies(1); string(got["orders/1-0"].Data) != `5` {
		t.Errorf("replies after the retried serve: %+v", got)
	}
	select {
	case err := <-done:
		t.Fatalf("ServeWebSocket returned %v after a later refusal; want it to retry", err)
	default:
	}
}

// TestWebSocketHandshakeRefused: an HTTP 4xx to the first handshake (a
// wrong URL, a proxy's refusal) is returned, with the status.
func TestWebSocketHandshakeRefused(t *testing.T) {
	g := newFakeGateway(t)
	g.status.Store(http.StatusForbidden)
	_, done := serveWS(t, responder.WebSocketConfig{URL: g.url()}, echo, "orders")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("ServeWebSocket = %v, want an error with the 403", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeWebSocket kept retrying a refused handshake")
	}
}

// TestWebSocketUnavailableAtStart: a gateway not up yet is waited for.
func TestWebSocketUnavailableAtStart(t *testing.T) {
	g := newFakeGateway(t)
	g.status.Store(http.StatusServiceUnavailable)
	_, done := serveWS(t, responder.WebSocketConfig{URL: g.url()}, echo, "orders")
	time.Sleep(300 * time.Millisecond) // a few refused attempts
	g.status.Store(0)
	c := g.accept()
	c.serveAll("orders")
	c.request("orders", "1-0", `1`)
	c.replies(1)
	select {
	case err := <-done:
		t.Fatalf("ServeWebSocket returned %v", err)
	default:
	}
}

// TestWebSocketShutdown: on cancel, the answer of a handler that finishes
// is still sent, then the connection is closed normally (1000), and
// ServeWebSocket returns nil.
func TestWebSocketShutdown(t *testing.T) {
	g := newFakeGateway(t)
	started := make(chan struct{})
	stop, _ := serveWS(t, responder.WebSocketConfig{URL: g.url()}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return json.RawMessage(`"finished anyway"`), nil
	}, "orders")
	c := g.accept()
	c.serveAll("orders")
	c.request("orders", "1-0", `1`)
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	if f := c.next(); f.Type != "reply" || f.ID != "1-0" || string(f.Data) != `"finished anyway"` {
		t.Errorf("frame %+v, want the reply computed during shutdown", f)
	}
	select {
	case <-c.ended:
		if c.closeCode != websocket.CloseNormalClosure {
			t.Errorf("close code %d, want 1000", c.closeCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed after shutdown")
	}
	if err := <-stopped; err != nil {
		t.Errorf("ServeWebSocket = %v, want nil", err)
	}
}

// TestWebSocketConcurrency: at most Concurrency handlers run at once;
// requests beyond wait and are all answered.
func TestWebSocketConcurrency(t *testing.T) {
	g := newFakeGateway(t)
	var running, peak atomic.Int64
	release := make(chan struct{})
	serveWS(t, responder.WebSocketConfig{URL: g.url(), Concurrency: 2}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		return r.Data, nil
	}, "orders")
	c := g.accept()
	c.serveAll("orders")
	for _, id := range []string{"1-0", "2-0", "3-0", "4-0", "5-0"} {
		c.request("orders", id, `0`)
	}
	waitFor(t, "two handlers running", func() bool { return running.Load() == 2 })
	close(release)
	c.replies(5)
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrent handlers = %d, want 2", p)
	}
}

// TestWebSocketReplyRefused: a reply the gateway refuses (too large) is
// replaced once by an internal error, so that the requester is answered;
// a refused fallback is not replaced again.
func TestWebSocketReplyRefused(t *testing.T) {
	g := newFakeGateway(t)
	serveWS(t, responder.WebSocketConfig{URL: g.url()}, echo, "orders")
	c := g.accept()
	c.serveAll("orders")
	c.request("orders", "1-0", `"huge"`)
	f := c.next()
	if f.Type != "reply" || string(f.Data) != `"huge"` {
		t.Fatalf("frame %+v, want the reply", f)
	}
	c.send(frame{Type: "error", Ref: f.Ref, Code: "too_large", Message: "data is over 65536 bytes", Channel: "orders", ID: "1-0"})
	fb := c.next()
	if fb.Type != "reply" || fb.ID != "1-0" || fb.Error == nil || fb.Error.Code != "internal" || fb.Data != nil || fb.Ref == f.Ref {
		t.Fatalf("frame %+v (error %v), want an internal error reply to 1-0 with a new ref", fb, fb.Error)
	}
	c.send(frame{Type: "error", Ref: fb.Ref, Code: "too_large", Message: "no", Channel: "orders", ID: "1-0"})
	c.request("orders", "2-0", `2`)
	if n := c.next(); n.Type != "reply" || n.ID != "2-0" {
		t.Errorf("frame %+v, want the reply to 2-0 (no second fallback for 1-0)", n)
	}
}
