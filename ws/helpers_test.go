package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// readTimeout bounds every wait for a frame; generous for -race on small
// machines, and only ever reached when a test is failing.
const readTimeout = 10 * time.Second

// testServer is a Server over a real hub and in-memory backlog, mounted at
// /, /v1/ws and /v1/sse of an httptest server on a loopback port.
type testServer struct {
	srv  *Server
	hub  *broker.Hub
	mem  *backlog.Memory
	http *httptest.Server
	url  string // ws://127.0.0.1:port/v1/ws
	root string // ws://127.0.0.1:port/, the original TSLM's endpoint
}

// serverOptions tune what sits behind the Server.
type serverOptions struct {
	hub  broker.Config
	wrap func(*backlog.Memory) backlog.Log // wraps the backlog; nil means none
	conn func(net.Conn) net.Conn           // wraps each accepted socket; nil means none
	// closeGrace replaces the server's close grace when positive.
	closeGrace time.Duration
	// reads chooses how readers wait: parked on the poller where the
	// socket allows it, or blocked on it as on a TLS listener. Left
	// default, TSLM_TEST_BLOCKING_READS chooses blocked for every test.
	reads readMode
}

type readMode int

const (
	readsDefault readMode = iota
	readsParked
	readsBlocking
)

// wrapListener hands every accepted socket through wrap.
type wrapListener struct {
	net.Listener
	wrap func(net.Conn) net.Conn
}

func (l wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.wrap(c), nil
}

func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	return startServerWith(t, cfg, serverOptions{})
}

// startServerWith starts a server and stops it at cleanup: Shutdown first
// (clients registered later have closed by then), then HTTP, then the hub.
func startServerWith(t testing.TB, cfg Config, opts serverOptions) *testServer {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if opts.hub.Logger == nil {
		opts.hub.Logger = quiet
	}
	mem := backlog.NewMemory(backlog.MemoryConfig{})
	var log backlog.Log = mem
	if opts.wrap != nil {
		log = opts.wrap(mem)
	}
	hub := broker.New(log, opts.hub)
	srv := New(hub, cfg)
	srv.testCloseGrace = opts.closeGrace // before any conn reads it
	srv.testBlockingReads = opts.reads == readsBlocking ||
		(opts.reads == readsDefault && os.Getenv("TSLM_TEST_BLOCKING_READS") != "")
	mux := http.NewServeMux()
	mux.Handle("GET /v1/ws", srv)
	mux.HandleFunc("GET /v1/sse", srv.ServeSSE)
	mux.HandleFunc("GET /{$}", srv.ServeLegacy)
	hs := httptest.NewUnstartedServer(mux)
	if opts.conn != nil {
		hs.Listener = wrapListener{hs.Listener, opts.conn}
	}
	hs.Start()
	t.Cleanup(func() {
		hub.Close()
		mem.Close()
	})
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown at cleanup: %v", err)
		}
	})
	base := "ws" + strings.TrimPrefix(hs.URL, "http")
	return &testServer{srv: srv, hub: hub, mem: mem, http: hs, url: base + "/v1/ws", root: base + "/"}
}

// onlyConn returns the server's one open connection, waiting for it to be
// registered: a client's dial returns before the server has done so.
func (ts *testServer) onlyConn(t testing.TB) *conn {
	t.Helper()
	var c *conn
	waitFor(t, "one connection registered", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		for k := range ts.srv.conns {
			c = k
		}
		return len(ts.srv.conns) == 1
	})
	return c
}

// create makes channel through the hub, with max_len maxLen when positive.
func (ts *testServer) create(t testing.TB, channel string, maxLen int64) {
	t.Helper()
	var opts broker.ChannelOptions
	if maxLen > 0 {
		opts.MaxLen = &maxLen
	}
	if _, err := ts.hub.Create(context.Background(), channel, opts); err != nil {
		t.Fatalf("create %s: %v", channel, err)
	}
}

// publish appends n messages {"i":0}, {"i":1}… through the hub.
func (ts *testServer) publish(t testing.TB, channel string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		id, err := ts.hub.Publish(context.Background(), channel, fmt.Appendf(nil, `{"i":%d}`, i))
		if err != nil {
			t.Fatalf("publish to %s: %v", channel, err)
		}
		ids[i] = id.String()
	}
	return ids
}

// handshake dials without failing, for tests of the upgrade itself.
func (ts *testServer) handshake(header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: readTimeout}
	return d.Dial(ts.url, header)
}

// refused dials, expecting the upgrade to be refused with status, and
// returns the answer and its body.
func (ts *testServer) refused(t testing.TB, header http.Header, status int) (*http.Response, string) {
	t.Helper()
	conn, resp, err := ts.handshake(header, ProtocolV1)
	if err == nil {
		conn.Close()
		t.Fatalf("upgraded, want HTTP %d", status)
	}
	if resp == nil || resp.StatusCode != status {
		t.Fatalf("dial: %v, response %v; want HTTP %d", err, resp, status)
	}
	// gorilla has read the body into its error's response.
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// dial connects offering subprotocols; with none given it offers tslm.v1.
func (ts *testServer) dial(t testing.TB, subprotocols ...string) *client {
	t.Helper()
	if len(subprotocols) == 0 {
		subprotocols = []string{ProtocolV1}
	}
	conn, resp, err := ts.handshake(nil, subprotocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s offering %v: %v (HTTP %d)", ts.url, subprotocols, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, ws: conn}
}

// client is a test client. Its fatal helpers must run on the test's
// goroutine; next is safe to use from others.
type client struct {
	t  testing.TB
	ws *websocket.Conn
}

// send writes frame as one text frame: strings and byte slices as they are,
// anything else marshalled to JSON.
func (c *client) send(frame any) {
	c.t.Helper()
	var b []byte
	switch f := frame.(type) {
	case string:
		b = []byte(f)
	case []byte:
		b = f
	default:
		var err error
		if b, err = json.Marshal(f); err != nil {
			c.t.Fatalf("marshal %v: %v", f, err)
		}
	}
	c.sendKind(websocket.TextMessage, b)
}

func (c *client) sendKind(kind int, b []byte) {
	c.t.Helper()
	c.ws.SetWriteDeadline(time.Now().Add(readTimeout))
	if err := c.ws.WriteMessage(kind, b); err != nil {
		c.t.Fatalf("send %.200s: %v", b, err)
	}
}

// next returns the next frame, decoded, within timeout.
func (c *client) next(timeout time.Duration) (map[string]any, error) {
	c.ws.SetReadDeadline(time.Now().Add(timeout))
	kind, b, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if kind != websocket.TextMessage {
		return nil, fmt.Errorf("got a frame of kind %d, want text: %.200s", kind, b)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("frame %.200s is not a JSON object: %w", b, err)
	}
	return f, nil
}

func (c *client) read() map[string]any {
	c.t.Helper()
	f, err := c.next(readTimeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// matcher stands in a wanted frame for a value that is checked, not known.
type matcher struct {
	what string
	ok   func(any) bool
}

var (
	anyID = matcher{"a message id", func(v any) bool {
		s, ok := v.(string)
		_, err := backlog.ParseID(s)
		return ok && err == nil
	}}
	anyText = matcher{"a non-empty string", func(v any) bool {
		s, ok := v.(string)
		return ok && s != ""
	}}
)

// diff describes how got differs from want: the same keys, and equal values
// once want is put through JSON (or accepted by its matcher). "" if none.
func diff(got, want map[string]any) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("unexpected field %s=%v", k, got[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[k]
		switch w := want[k].(type) {
		case matcher:
			if !ok || !w.ok(g) {
				out = append(out, fmt.Sprintf("%s=%v, want %s", k, g, w.what))
			}
		default:
			if !ok {
				out = append(out, fmt.Sprintf("missing field %s", k))
			} else if !reflect.DeepEqual(g, viaJSON(w)) {
				out = append(out, fmt.Sprintf("%s=%#v, want %#v", k, g, viaJSON(w)))
			}
		}
	}
	return strings.Join(out, "; ")
}

func viaJSON(v any) any {
	if raw, ok := v.(json.RawMessage); ok {
		var out any
		json.Unmarshal(raw, &out)
		return out
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}

// expect reads one frame and checks that it is exactly want.
func (c *client) expect(want map[string]any) map[string]any {
	c.t.Helper()
	got := c.read()
	if d := diff(got, want); d != "" {
		c.t.Fatalf("got frame %v\nwant %v\n%s", got, want, d)
	}
	return got
}

// expectError reads an error frame with code, carrying ref, or no ref at
// all when ref is "".
func (c *client) expectError(ref, code string) map[string]any {
	c.t.Helper()
	want := map[string]any{"type": "error", "code": code, "message": anyText}
	if ref != "" {
		want["ref"] = ref
	}
	return c.expect(want)
}

// expectClose reads, skipping data frames, until the connection ends, and
// checks the close code (1006: ended without a close frame).
func (c *client) expectClose(code int) {
	c.t.Helper()
	for {
		_, err := c.next(readTimeout)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("connection ended with %v, want close code %d", err, code)
		}
		if ce.Code != code {
			c.t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// command sends a v1 command built from fields and returns its answer.
func (c *client) command(typ, ref, channel string, fields map[string]any) map[string]any {
	c.t.Helper()
	f := map[string]any{"type": typ, "channel": channel}
	if ref != "" {
		f["ref"] = ref
	}
	maps.Copy(f, fields)
	c.send(f)
	return c.read()
}

// subscribe subscribes with the given position fields and checks the ack.
func (c *client) subscribe(channel string, fields map[string]any) map[string]any {
	c.t.Helper()
	got := c.command("subscribe", "sub-"+channel, channel, fields)
	want := map[string]any{"type": "ack", "ref": "sub-" + channel, "channel": channel, "head": anyID}
	if _, ok := fields["since"]; ok {
		want["resumed"] = matcher{"a bool", func(v any) bool { _, ok := v.(bool); return ok }}
	}
	if d := diff(got, want); d != "" {
		c.t.Fatalf("subscribe %s %v: got %v\n%s", channel, fields, got, d)
	}
	return got
}

// publish publishes data (JSON) and returns the ID its ack names.
func (c *client) publish(channel string, data string) string {
	c.t.Helper()
	got := c.command("publish", "pub", channel, map[string]any{"data": json.RawMessage(data)})
	if d := diff(got, map[string]any{"type": "ack", "ref": "pub", "channel": channel, "id": anyID}); d != "" {
		c.t.Fatalf("publish to %s: got %v\n%s", channel, got, d)
	}
	return got["id"].(string)
}

// messages reads n frames that must be messages of channel, and returns
// their IDs.
func (c *client) messages(channel string, n int) []string {
	c.t.Helper()
	ids := make([]string, 0, n)
	for len(ids) < n {
		f := c.read()
		if d := diff(f, map[string]any{"type": "message", "channel": channel, "id": anyID, "data": matcher{"data", func(any) bool { return true }}}); d != "" {
			c.t.Fatalf("after %d messages of %s got %v: %s", len(ids), channel, f, d)
		}
		ids = append(ids, f["id"].(string))
	}
	return ids
}

// roundTrip proves the connection alive and in order: an unsubscribe from
// a channel never subscribed must be the very next frame.
func (c *client) roundTrip() {
	c.t.Helper()
	c.send(map[string]any{"type": "unsubscribe", "ref": "ping", "channel": "never-subscribed"})
	c.expect(map[string]any{"type": "ack", "ref": "ping", "channel": "never-subscribed"})
}

// waitFor polls cond until it holds, failing after readTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// frameOrErr is one result of a pump.
type frameOrErr struct {
	f   map[string]any
	err error
}

// pump reads frames on a goroutine until the connection ends, so that
// pings are answered while the test does something else. After pump, read
// frames with pumped, never with read.
func (c *client) pump() <-chan frameOrErr {
	out := make(chan frameOrErr, 1024)
	go func() {
		defer close(out)
		for {
			f, err := c.next(time.Hour)
			out <- frameOrErr{f, err}
			if err != nil {
				return
			}
		}
	}()
	return out
}

// pumped returns the next frame from a pump.
func pumped(t testing.TB, frames <-chan frameOrErr) map[string]any {
	t.Helper()
	select {
	case r, ok := <-frames:
		if !ok {
			t.Fatal("pump ended")
		}
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		return r.f
	case <-time.After(readTimeout):
		t.Fatal("timed out waiting for a frame")
	}
	return nil
}
