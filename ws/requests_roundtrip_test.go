package ws

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Round trips of docs/protocol.md "Requests and replies" over real
// sockets: requesters and serving apps on real servers over a real hub.

var (
	anyToken = matcher{"a session token", func(v any) bool {
		s, ok := v.(string)
		b, err := base64.RawURLEncoding.DecodeString(s)
		return ok && len(s) == 43 && err == nil && len(b) == 32
	}}
	anyNumber = matcher{"a number", func(v any) bool { _, ok := v.(float64); return ok }}
)

// serveChannel makes c serve channel and checks the ack.
func (c *client) serveChannel(channel string) {
	c.t.Helper()
	got := c.command("serve", "serve-"+channel, channel, nil)
	if d := diff(got, map[string]any{"type": "ack", "ref": "serve-" + channel, "channel": channel}); d != "" {
		c.t.Fatalf("serve %s: got %v\n%s", channel, got, d)
	}
}

// request sends a request with data (JSON) and fields, checks its ack and
// returns the request ID and the session token.
func (c *client) request(ref, channel, data string, fields map[string]any) (id, token string) {
	c.t.Helper()
	f := map[string]any{"data": json.RawMessage(data)}
	got := c.command("request", ref, channel, mergeFields(f, fields))
	if d := diff(got, map[string]any{"type": "ack", "ref": ref, "channel": channel, "id": anyID, "session": anyToken}); d != "" {
		c.t.Fatalf("request %s on %s: got %v\n%s", ref, channel, got, d)
	}
	return got["id"].(string), got["session"].(string)
}

// served reads a request frame of channel handed to an app and returns it.
func (c *client) served(channel string) map[string]any {
	c.t.Helper()
	f := c.read()
	want := map[string]any{"type": "request", "channel": channel, "id": anyID, "data": matcher{"data", func(any) bool { return true }},
		"deadline_ms": anyNumber, "deliveries": anyNumber}
	if d := diff(f, want); d != "" {
		c.t.Fatalf("want a request of %s, got %v\n%s", channel, f, d)
	}
	return f
}

// replyTo answers request id of channel with fields (data or error) and
// checks the ack.
func (c *client) replyTo(channel, id string, fields map[string]any) {
	c.t.Helper()
	f := map[string]any{"id": id}
	got := c.command("reply", "re-"+id, channel, mergeFields(f, fields))
	if d := diff(got, map[string]any{"type": "ack", "ref": "re-" + id, "channel": channel, "id": id}); d != "" {
		c.t.Fatalf("reply to %s: got %v\n%s", id, got, d)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "orders", 0)
	app := ts.dial(t)
	app.serveChannel("orders")
	req := ts.dial(t)

	var token string
	t.Run("reply", func(t *testing.T) {
		req.t, app.t = t, t
		before := time.Now()
		var id string
		id, token = req.request("r7", "orders", `{"item":42}`, map[string]any{"timeout_ms": 5000})
		got := app.served("orders")
		if got["id"] != id || got["deliveries"] != 1.0 {
			t.Errorf("app got %v, want request %s delivered once", got, id)
		}
		if data, _ := got["data"].(map[string]any); data["item"] != 42.0 {
			t.Errorf("request data %v, want {\"item\":42}", got["data"])
		}
		deadline := time.UnixMilli(int64(got["deadline_ms"].(float64)))
		if deadline.Before(before.Add(5*time.Second-time.Millisecond)) || deadline.After(time.Now().Add(5*time.Second)) {
			t.Errorf("deadline %v, want 5s after the request", deadline)
		}
		app.replyTo("orders", id, map[string]any{"data": map[string]any{"ok": true}})
		req.expect(map[string]any{"type": "reply", "ref": "r7", "channel": "orders", "id": id, "data": map[string]any{"ok": true}})
	})
	t.Run("refusal", func(t *testing.T) {
		req.t, app.t = t, t
		id, tok := req.request("r8", "orders", `"hello"`, nil)
		if tok != token {
			t.Errorf("second request's session %q, want the connection's %q", tok, token)
		}
		app.served("orders")
		refusal := map[string]any{"code": "out_of_stock", "message": "item 42 is sold out"}
		app.replyTo("orders", id, map[string]any{"error": refusal})
		req.expect(map[string]any{"type": "reply", "ref": "r8", "channel": "orders", "id": id, "error": refusal})
	})
	t.Run("a second reply is not_found", func(t *testing.T) {
		req.t, app.t = t, t
		id, _ := req.request("r9", "orders", `1`, nil)
		app.served("orders")
		app.replyTo("orders", id, map[string]any{"data": 1})
		req.expect(map[string]any{"type": "reply", "ref": "r9", "channel": "orders", "id": id, "data": 1})
		app.send(map[string]any{"type": "reply", "ref": "again", "channel": "orders", "id": id, "data": 2})
		app.expectError("again", "not_found")
		req.roundTrip() // exactly one answer
	})
	t.Run("many in flight, answered in reverse", func(t *testing.T) {
		req.t, app.t = t, t
		const n = 20
		ids := make(map[string]int, n)
		for i := range n {
			id, _ := req.request(fmt.Sprint("m", i), "orders", fmt.Sprintf(`{"i":%d}`, i), nil)
			ids[id] = i
		}
		var order []string
		for range n {
			f := app.served("orders")
			order = append(order, f["id"].(string))
		}
		for i := n - 1; i >= 0; i-- {
			id := order[i]
			app.replyTo("orders", id, map[string]any{"data": map[string]any{"echo": ids[id]}})
		}
		seen := make(map[string]bool, n)
		for range n {
			f := req.read()
			id, _ := f["id"].(string)
			i, ok := ids[id]
			if !ok || seen[id] {
				t.Fatalf("answer %v: unknown or repeated request", f)
			}
			seen[id] = true
			if d := diff(f, map[string]any{"type": "reply", "ref": fmt.Sprint("m", i), "channel": "orders", "id": id, "data": map[string]any{"echo": i}}); d != "" {
				t.Errorf("answer %v: %s", f, d)
			}
		}
		req.roundTrip()
	})
}

func TestRequestTimeout(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "slow", 0)
	ts.create(t, "nobody", 0)
	app := ts.dial(t)
	app.serveChannel("slow")
	req := ts.dial(t)

	t.Run("the app does not answer", func(t *testing.T) {
		req.t, app.t = t, t
		id, _ := req.request("t1", "slow", `1`, map[string]any{"timeout_ms": 100})
		app.served("slow")
		req.expect(map[string]any{"type": "error", "ref": "t1", "code": "timeout", "message": anyText, "channel": "slow", "id": id})
		// Too late: whether acknowledged or not, it never reaches the
		// requester.
		app.send(map[string]any{"type": "reply", "ref": "late", "channel": "slow", "id": id, "data": 1})
		if f := app.read(); f["ref"] != "late" || (f["type"] != "ack" && f["code"] != "not_found") {
			t.Errorf("late reply answered %v, want an ack or not_found", f)
		}
		req.roundTrip()
	})
	t.Run("nobody serves", func(t *testing.T) {
		req.t = t
		id, _ := req.request("t2", "nobody", `1`, map[string]any{"timeout_ms": 100})
		req.expect(map[string]any{"type": "error", "ref": "t2", "code": "timeout", "message": anyText, "channel": "nobody", "id": id})
	})
	if n := ts.srv.Stats().Errors[broker.CodeTimeout]; n != 2 {
		t.Errorf("timeouts counted: %d, want 2", n)
	}
}

// TestRequestRefusedByTheHub: bad input only the hub can judge gets its
// documented answer, and changes nothing else.
func TestRequestRefusedByTheHub(t *testing.T) {
	ts := startServerWith(t, Config{Allow: OpAll, MaxSubscriptions: 1}, serverOptions{hub: broker.Config{
		MaxRequestTimeout: 10 * time.Second, RequestTimeout: 10 * time.Second, MaxInflight: 2,
	}})
	for _, ch := range []string{"c", "d", "e", "f"} {
		ts.create(t, ch, 0)
	}
	req := ts.dial(t)
	// A session whose connection went away, for the resumes below.
	other := ts.dial(t)
	_, token := other.request("o", "c", `1`, nil)
	other.ws.Close()

	tests := []struct {
		name  string
		c     *client
		frame map[string]any
		code  broker.Code
	}{
		{"request to a missing channel", req, map[string]any{"type": "request", "ref": "x", "channel": "missing", "data": 1}, "not_found"},
		{"timeout_ms over the maximum", req, map[string]any{"type": "request", "ref": "x", "channel": "c", "data": 1, "timeout_ms": 10001}, "bad_request"},
		{"serve a missing channel", req, map[string]any{"type": "serve", "ref": "x", "channel": "missing"}, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.t = t
			tt.c.send(tt.frame)
			got := tt.c.expectError("x", string(tt.code))
			if tt.name == "timeout_ms over the maximum" && !strings.Contains(got["message"].(string), "10000") {
				t.Errorf("message %q does not name the maximum", got["message"])
			}
			tt.c.roundTrip()
		})
	}
	t.Run("too many in flight", func(t *testing.T) {
		app := ts.dial(t)
		app.serveChannel("e")
		c := ts.dial(t)
		c.request("1", "e", `1`, nil)
		c.request("2", "e", `2`, nil)
		c.send(map[string]any{"type": "request", "ref": "3", "channel": "e", "data": 3})
		c.expectError("3", "limit_exceeded")
		// The two in flight still get their answers, and make room.
		first, second := app.served("e")["id"].(string), app.served("e")["id"].(string)
		app.replyTo("e", first, map[string]any{"data": 0})
		app.replyTo("e", second, map[string]any{"data": 0})
		for range 2 {
			if f := c.read(); f["type"] != "reply" {
				t.Fatalf("got %v, want a reply", f)
			}
		}
		c.request("4", "e", `4`, nil)
	})
	t.Run("serving twice, and past the limit", func(t *testing.T) {
		c := ts.dial(t)
		c.serveChannel("d")
		c.send(map[string]any{"type": "serve", "ref": "twice", "channel": "d"})
		c.expectError("twice", "bad_request")
		c.send(map[string]any{"type": "serve", "ref": "more", "channel": "f"})
		c.expectError("more", "limit_exceeded")
		c.send(map[string]any{"type": "unserve", "ref": "u", "channel": "d"})
		c.expect(map[string]any{"type": "ack", "ref": "u", "channel": "d"})
		c.serveChannel("f")
	})
	t.Run("forged and expired session tokens", func(t *testing.T) {
		for name, tt := range map[string]struct {
			token string
			code  broker.Code
		}{
			"empty":          {"", "bad_request"},
			"short":          {"abc", "bad_request"},
			"not base64url":  {strings.Repeat("+", 43), "bad_request"},
			"padded":         {base64.URLEncoding.EncodeToString(make([]byte, 32)), "bad_request"},
			"never issued":   {base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("k", 32))), "not_found"},
			"one char wrong": {flipFirst(token), "not_found"},
		} {
			t.Run(name, func(t *testing.T) {
				c := ts.dial(t)
				c.send(map[string]any{"type": "session", "ref": "s", "session": tt.token, "pending": []any{}})
				got := c.expectError("s", string(tt.code))
				if msg := got["message"].(string); tt.token != "" && strings.Contains(msg, tt.token) {
					t.Errorf("the error repeats the token: %q", msg)
				}
				// The connection may start a new session.
				_, tok := c.request("after", "c", `1`, nil)
				if tok == token {
					t.Error("a failed resume left the connection on the other session")
				}
			})
		}
	})
	t.Run("session twice", func(t *testing.T) {
		c := ts.dial(t)
		c.send(map[string]any{"type": "session", "ref": "s1", "session": token})
		c.expect(map[string]any{"type": "ack", "ref": "s1", "session": token})
		c.send(map[string]any{"type": "session", "ref": "s2", "session": token})
		c.expectError("s2", "bad_request")
		c.roundTrip()
	})
	t.Run("too many pending", func(t *testing.T) {
		c := ts.dial(t)
		var pending []any
		for i := range 3 {
			pending = append(pending, map[string]any{"channel": "c", "id": fmt.Sprintf("1-%d", i)})
		}
		c.send(map[string]any{"type": "session", "ref": "s", "session": token, "pending": pending})
		c.expectError("s", "limit_exceeded")
		c.roundTrip()
	})
}

// flipFirst changes a token's first character to another valid one (the
// last one carries two bits that decoding may ignore).
func flipFirst(token string) string {
	first := "A"
	if token[0] == 'A' {
		first = "B"
	}
	return first + token[1:]
}

// TestServedRequestGoesToAnotherApp: a request whose app goes away, or
// stops serving, without answering is handed to another app.
func TestServedRequestGoesToAnotherApp(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	req := ts.dial(t)

	for _, how := range []string{"disconnect", "unserve"} {
		t.Run(how, func(t *testing.T) {
			// A channel of its own: the apps of the other case may still
			// be going away.
			orders := "orders-" + how
			ts.create(t, orders, 0)
			req.t = t
			first := ts.dial(t)
			first.serveChannel(orders)
			id, _ := req.request("r-"+how, orders, `{"n":1}`, nil)
			if got := first.served(orders); got["id"] != id {
				t.Fatalf("first app got %v, want %s", got, id)
			}
			second := ts.dial(t)
			second.serveChannel(orders)
			switch how {
			case "disconnect":
				first.ws.Close()
			case "unserve":
				first.send(map[string]any{"type": "unserve", "ref": "u", "channel": orders})
				first.expect(map[string]any{"type": "ack", "ref": "u", "channel": orders})
			}
			got := second.served(orders)
			if got["id"] != id || got["deliveries"] != 2.0 {
				t.Fatalf("second app got %v, want request %s delivered a second time", got, id)
			}
			if how == "unserve" {
				first.send(map[string]any{"type": "reply", "ref": "late", "channel": orders, "id": id, "data": 0})
				first.expectError("late", "not_found")
			}
			second.replyTo(orders, id, map[string]any{"data": "second"})
			req.expect(map[string]any{"type": "reply", "ref": "r-" + how, "channel": orders, "id": id, "data": "second"})
		})
	}
}

// startPeer starts a second server over ts's backlog, as another replica
// of the same deployment.
func (ts *testServer) startPeer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	return startServerWith(t, cfg, serverOptions{wrap: func(*backlog.Memory) backlog.Log { return ts.mem }})
}

// TestSessionResumesOnAnotherServer: a requester that loses its connection
// collects its answers on another replica, exactly once each.
func TestSessionResumesOnAnotherServer(t *testing.T) {
	a := startServer(t, Config{Allow: OpAll})
	b := a.startPeer(t, Config{Allow: OpAll})
	a.create(t, "orders", 0)
	app := a.dial(t)
	app.serveChannel("orders")

	t.Run("the reply came while away", func(t *testing.T) {
		app.t = t
		req := a.dial(t)
		id, token := req.request("r1", "orders", `{"n":1}`, nil)
		app.served("orders")
		req.ws.Close()
		app.replyTo("orders", id, map[string]any{"data": map[string]any{"ok": 1}})

		again := b.dial(t)
		again.send(map[string]any{"type": "session", "ref": "s", "session": token,
			"pending": []any{map[string]any{"channel": "orders", "id": id, "ref": "back", "timeout_ms": 5000}}})
		again.expect(map[string]any{"type": "ack", "ref": "s", "session": token})
		again.expect(map[string]any{"type": "reply", "ref": "back", "channel": "orders", "id": id, "data": map[string]any{"ok": 1}})
		again.roundTrip()
		// New requests join the resumed session.
		if _, tok := again.request("new", "orders", `2`, nil); tok != token {
			t.Errorf("a request after resuming has session %q, want %q", tok, token)
		}
		app.served("orders")
	})
	t.Run("the reply comes after resuming", func(t *testing.T) {
		app.t = t
		req := a.dial(t)
		id, token := req.request("r2", "orders", `{"n":2}`, nil)
		app.served("orders")
		req.ws.Close()

		again := b.dial(t)
		again.send(map[string]any{"type": "session", "ref": "s", "session": token,
			"pending": []any{map[string]any{"channel": "orders", "id": id, "ref": "r2"}}})
		again.expect(map[string]any{"type": "ack", "ref": "s", "session": token})
		again.roundTrip() // no answer yet
		app.replyTo("orders", id, map[string]any{"data": 2})
		again.expect(map[string]any{"type": "reply", "ref": "r2", "channel": "orders", "id": id, "data": 2})
		again.roundTrip()
	})
	t.Run("a request still unanswered times out", func(t *testing.T) {
		app.t = t
		req := a.dial(t)
		id, token := req.request("r3", "orders", `3`, nil)
		app.served("orders")
		req.ws.Close()
		again := b.dial(t)
		again.send(map[string]any{"type": "session", "ref": "s", "session": token,
			"pending": []any{map[string]any{"channel": "orders", "id": id, "ref": "r3", "timeout_ms": 100}}})
		again.expect(map[string]any{"type": "ack", "ref": "s", "session": token})
		again.expect(map[string]any{"type": "error", "ref": "r3", "code": "timeout", "message": anyText, "channel": "orders", "id": id})
	})
}
