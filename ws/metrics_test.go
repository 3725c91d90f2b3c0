package ws

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
)

// closeWith sends a close frame with code and waits for the server's
// answer, as a client that ends a connection cleanly does.
func (c *client) closeWith(code int, text string) {
	c.t.Helper()
	msg := websocket.FormatCloseMessage(code, text)
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(readTimeout)); err != nil {
		c.t.Fatal(err)
	}
	for {
		if _, err := c.next(readTimeout); err != nil {
			return
		}
	}
}

// waitEnds waits until the server counted want of the ending end.
func waitEnds(t *testing.T, s *Server, end End, want int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d ends %+v", want, end), func() bool { return s.Stats().Ends[end] == want })
}

// TestEndsByWhoAndCode: every connection that ends is counted once, by who
// ended it and with what code: the client's own code in its close frame,
// "other" for one outside the known table, 1006 for a connection that just
// went, the server's close code for its closes; event streams apart.
func TestEndsByWhoAndCode(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll, MaxFrameBytes: 1024})

	ts.dial(t).closeWith(websocket.CloseNormalClosure, "bye")
	waitEnds(t, ts.srv, End{TransportWS, ByClient, "1000"}, 1)

	ts.dial(t).closeWith(3333, "app reason")
	waitEnds(t, ts.srv, End{TransportWS, ByClient, "other"}, 1)

	ts.dial(t).ws.NetConn().Close() // no close frame
	waitEnds(t, ts.srv, End{TransportWS, ByClient, "1006"}, 1)

	big := ts.dial(t)
	big.send(`{"type":"publish","channel":"c","data":"` + strings.Repeat("x", 2000) + `"}`)
	big.expectClose(CodeTooBig)
	waitEnds(t, ts.srv, End{TransportWS, ByServer, "1009"}, 1)

	ts.create(t, "c", 0)
	st := ts.sse(t, "channel=c", nil)
	if ev := st.next(); ev.Event != "subscribed" {
		t.Fatalf("stream began with %+v", ev)
	}
	st.resp.Body.Close()
	waitEnds(t, ts.srv, End{TransportSSE, ByClient, "1006"}, 1)

	got := ts.srv.Stats()
	if n := len(got.Ends); n != 5 {
		t.Errorf("Ends = %v, want the five above alone", got.Ends)
	}
	if got.Closes[CodeTooBig] != 1 || len(got.Closes) != 1 {
		t.Errorf("Closes = %v, want the server's one close (1009)", got.Closes)
	}
}

// TestPublishToWriteAndQueueFill: live messages written are timed, replayed
// ones are not, and the times of a connection outlive it; publishes are
// counted once, duplicates aside; the queue fill histogram holds every
// open connection.
func TestPublishToWriteAndQueueFill(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll})
	ts.create(t, "c", 0)
	sub := ts.dial(t)
	sub.subscribe("c", nil)
	sub.roundTrip() // commands run in order: the subscription is live, not replaying
	ids := ts.publish(t, "c", 3)
	if got := sub.messages("c", 3); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("received %v, want %v", got, ids)
	}
	pub := ts.dial(t)
	pub.publish("c", `{"n":1}`)
	for range 2 {
		pub.command("publish", "k", "c", map[string]any{"data": 2, "idempotency_key": "once"})
	}
	late := ts.dial(t)
	late.subscribe("c", map[string]any{"since": ids[0]})
	late.messages("c", 4) // 2 replayed, then the 2 published since

	// The subscriber's writer times the WebSocket publishes too.
	waitFor(t, "the live messages timed", func() bool { return ts.srv.Stats().PublishToWrite.Count() == 5 })
	st := ts.srv.Stats()
	if st.Published != 2 {
		t.Errorf("Published = %d, want 2 (a duplicate is not a publish)", st.Published)
	}
	if st.QueueFill.Count() != 3 {
		t.Errorf("QueueFill holds %d queues, want 3", st.QueueFill.Count())
	}
	sub.closeWith(websocket.CloseNormalClosure, "")
	waitEnds(t, ts.srv, End{TransportWS, ByClient, "1000"}, 1)
	if n := ts.srv.Stats().PublishToWrite.Count(); n != 5 {
		t.Errorf("after its connection closed, PublishToWrite holds %d messages, want 5", n)
	}
}

// logLines parses JSON log lines.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for l := range strings.Lines(out) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// accessLines returns the access log's lines of transport.
func accessLines(t *testing.T, out, transport string) (opened, closed []map[string]any) {
	for _, l := range logLines(t, out) {
		if l["transport"] != transport {
			continue
		}
		switch l["msg"] {
		case "connection opened":
			opened = append(opened, l)
		case "connection closed":
			closed = append(closed, l)
		}
	}
	return opened, closed
}

// TestAccessLog: one line when a connection or stream opens and one when
// it ends, with who connected (the client's address as resolved, the
// subject of its credentials) and how it ended; no credential, whether
// from the Authorization header, an auth frame or access_token.
func TestAccessLog(t *testing.T) {
	var logs syncBuffer
	kit := newAuthKit(t)
	key := kit.apiKey("ops", "alice", time.Time{}, grant(auth.AllOps, "*"))
	token := kit.token("bob", time.Now().Add(time.Hour), map[string][]string{"publish": {"*"}})
	carol := kit.apiKey("reader", "carol", time.Time{}, grant(auth.Ops(auth.OpSubscribe), "*"))
	ts := startServer(t, Config{
		Allow: OpAll, AuthMode: auth.ModeOptional, Authenticator: kit.authenticator(), AccessLog: true,
		ClientIP: func(*http.Request) netip.Addr { return netip.MustParseAddr("198.51.100.7") },
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	ts.create(t, "c", 0)

	alice := ts.dialWith(t, bearerHeader(key), "")
	alice.publish("c", `{"n":1}`)
	alice.closeWith(websocket.CloseGoingAway, "page left")
	legacy := ts.dialWith(t, nil, ProtocolLegacy)
	legacy.ws.NetConn().Close()
	slow := ts.dial(t)
	slow.authFrame("a", token)
	ts.onlyConnOf(t, slow).close(CloseSlowConsumer)
	slow.expectClose(CodeSlowConsumer)
	waitFor(t, "three closes logged", func() bool {
		_, closed := accessLines(t, logs.String(), TransportWS)
		return len(closed) == 3
	})

	stream := ts.sse(t, "channel=c&access_token="+url.QueryEscape(carol), nil)
	if ev := stream.next(); ev.Event != "subscribed" {
		t.Fatalf("stream began with %+v", ev)
	}
	stream.resp.Body.Close()
	waitFor(t, "the stream's close logged", func() bool {
		_, closed := accessLines(t, logs.String(), TransportSSE)
		return len(closed) == 1
	})

	out := logs.String()
	for name, secret := range map[string]string{"API key": key, "access_token": carol, "token": token, "token's signature": token[strings.LastIndexByte(token, '.')+1:]} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds the %s:\n%s", name, out)
		}
	}
	if strings.Contains(out, "access_token") || strings.Contains(out, "channel=c") {
		t.Errorf("the log holds the stream's query string:\n%s", out)
	}

	opened, closed := accessLines(t, out, TransportWS)
	if len(opened) != 3 {
		t.Fatalf("%d WebSocket opens logged, want 3:\n%s", len(opened), out)
	}
	// Each client's lines, found by its address.
	of := func(lines []map[string]any, c *client) map[string]any {
		for _, l := range lines {
			if l["remote"] == c.ws.LocalAddr().String() {
				return l
			}
		}
		t.Fatalf("no line for %s in %v", c.ws.LocalAddr(), lines)
		return nil
	}
	for c, w := range map[*client]map[string]any{
		alice:  {"protocol": "tslm.v1", "subject": "alice", "code": 1001.0, "reason": "page left", "by": "client", "frames_in": 1.0, "frames_out": 1.0},
		legacy: {"protocol": "tslm.legacy", "subject": nil, "code": 1006.0, "reason": "connection lost", "by": "client", "frames_in": 0.0},
		slow:   {"protocol": "tslm.v1", "subject": "bob", "code": 4000.0, "reason": CloseSlowConsumer.String(), "by": "server", "frames_in": 1.0},
	} {
		o, cl := of(opened, c), of(closed, c)
		for _, l := range []map[string]any{o, cl} {
			if l["client"] != "198.51.100.7" || l["listener"] != "" || l["protocol"] != w["protocol"] {
				t.Errorf("line %v: want client 198.51.100.7, listener \"\", protocol %v", l, w["protocol"])
			}
		}
		if _, ok := o["subject"]; ok && c != alice {
			t.Errorf("open line %v names a subject before any credential", o)
		}
		for k, v := range w {
			if cl[k] != v {
				t.Errorf("close line %v: %s = %v, want %v", cl, k, cl[k], v)
			}
		}
		if d, ok := cl["duration"].(float64); !ok || d <= 0 {
			t.Errorf("close line %v: duration %v, want a positive number", cl, cl["duration"])
		}
	}

	opened, closed = accessLines(t, out, TransportSSE)
	if len(opened) != 1 || opened[0]["subject"] != "carol" || opened[0]["client"] != "198.51.100.7" {
		t.Errorf("stream open lines %v, want one for carol from 198.51.100.7", opened)
	}
	if closed[0]["by"] != "client" || closed[0]["code"] != 1006.0 || closed[0]["frames_out"] != 1.0 {
		t.Errorf("stream close line %v, want by client, code 1006, one frame out (subscribed)", closed[0])
	}
}

// TestAccessLogOff: without the access log nothing is logged per
// connection but the server's own closes, as before it existed.
func TestAccessLogOff(t *testing.T) {
	var logs syncBuffer
	ts := startServer(t, Config{Allow: OpAll, Logger: newTextLogger(&logs)})
	ts.dial(t).closeWith(websocket.CloseNormalClosure, "")
	c := ts.dial(t)
	ts.onlyConnOf(t, c).close(CloseInternal)
	c.expectClose(CodeInternal)
	waitFor(t, "the server's close logged", func() bool { return strings.Contains(logs.String(), "closing connection") })
	waitEnds(t, ts.srv, End{TransportWS, ByServer, "1011"}, 1)
	if out := logs.String(); strings.Contains(out, "connection opened") || strings.Contains(out, "connection closed") {
		t.Errorf("access log lines without the access log:\n%s", out)
	}
}

// onlyConnOf returns the server's connection of client c.
func (ts *testServer) onlyConnOf(t *testing.T, c *client) *conn {
	t.Helper()
	var found *conn
	waitFor(t, "the client's connection registered", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		for k := range ts.srv.conns {
			if k.ws.RemoteAddr().String() == c.ws.LocalAddr().String() {
				found = k
			}
		}
		return found != nil
	})
	return found
}
