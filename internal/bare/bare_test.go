package bare

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func start(t *testing.T, cfg Config) (s *Server, wsURL, httpURL string) {
	t.Helper()
	s = New(cfg)
	srv := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); srv.Close() })
	return s, "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws", srv.URL
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if c.Subprotocol() != "tslm.v1" {
		t.Fatalf("subprotocol %q, want tslm.v1", c.Subprotocol())
	}
	return c
}

type frame struct {
	Type, Ref, Channel, ID, Head, Code string
	Created                            *bool
	Data                               json.RawMessage
}

func send(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	if err := c.WriteJSON(v); err != nil {
		t.Fatal(err)
	}
}

func next(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f frame
	if err := c.ReadJSON(&f); err != nil {
		t.Fatal(err)
	}
	return f
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ ID, Code string }
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.ID + out.Code
}

// TestProtocol drives each command the package speaks, and checks that a
// subscriber gets the messages of both publish paths in ID order after
// its ack.
func TestProtocol(t *testing.T) {
	_, wsURL, httpURL := start(t, Config{})
	c := dial(t, wsURL)

	send(t, c, map[string]string{"type": "subscribe", "ref": "1", "channel": "a"})
	if f := next(t, c); f.Type != "error" || f.Code != "not_found" || f.Ref != "1" {
		t.Fatalf("subscribe to a missing channel: %+v, want error not_found", f)
	}
	send(t, c, map[string]string{"type": "create", "ref": "2", "channel": "a"})
	if f := next(t, c); f.Type != "ack" || f.Created == nil || !*f.Created {
		t.Fatalf("create: %+v, want ack created", f)
	}
	req, _ := http.NewRequest(http.MethodPut, httpURL+"/v1/channels/a", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT of an existing channel: HTTP %d, want 200", resp.StatusCode)
	}
	send(t, c, map[string]string{"type": "subscribe", "ref": "3", "channel": "a"})
	if f := next(t, c); f.Type != "ack" || f.Head != "0-0" || f.Ref != "3" {
		t.Fatalf("subscribe: %+v, want ack with head 0-0", f)
	}
	send(t, c, map[string]string{"type": "subscribe", "ref": "4", "channel": "a", "since": "1-0"})
	if f := next(t, c); f.Type != "error" || f.Code != "bad_request" {
		t.Fatalf("subscribe with since: %+v, want bad_request", f)
	}

	if status, id := post(t, httpURL+"/v1/channels/a/messages", `{"n":1}`); status != http.StatusCreated || id == "" {
		t.Fatalf("HTTP publish: %d %q, want 201 with an id", status, id)
	}
	if status, code := post(t, httpURL+"/v1/channels/a/messages", `{"n":`); status != http.StatusBadRequest || code != "bad_request" {
		t.Fatalf("HTTP publish of bad JSON: %d %q, want 400 bad_request", status, code)
	}
	if status, code := post(t, httpURL+"/v1/channels/b/messages", `1`); status != http.StatusNotFound || code != "not_found" {
		t.Fatalf("HTTP publish to a missing channel: %d %q, want 404 not_found", status, code)
	}
	pub := dial(t, wsURL)
	for i := 2; i <= 50; i++ {
		send(t, pub, map[string]any{"type": "publish", "ref": "p", "channel": "a", "data": map[string]int{"n": i}})
		if f := next(t, pub); f.Type != "ack" || f.ID == "" {
			t.Fatalf("publish: %+v, want ack with id", f)
		}
	}
	var last string
	for i := 1; i <= 50; i++ {
		f := next(t, c)
		var data struct{ N int }
		json.Unmarshal(f.Data, &data)
		if f.Type != "message" || f.Channel != "a" || data.N != i {
			t.Fatalf("message %d: %+v", i, f)
		}
		if last != "" && !idLess(last, f.ID) {
			t.Fatalf("ID %s after %s: not increasing", f.ID, last)
		}
		last = f.ID
	}

	send(t, c, map[string]string{"type": "unsubscribe", "ref": "5", "channel": "a"})
	if f := next(t, c); f.Type != "ack" || f.Ref != "5" {
		t.Fatalf("unsubscribe: %+v, want ack", f)
	}
	post(t, httpURL+"/v1/channels/a/messages", `"after"`)
	send(t, c, map[string]string{"type": "frobnicate", "ref": "6"})
	if f := next(t, c); f.Type != "error" || f.Code != "unknown_type" {
		t.Fatalf("after unsubscribe, want only the unknown_type error, got %+v", f)
	}
}

func idLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if len(am) != len(bm) {
		return len(am) < len(bm)
	}
	if am != bm {
		return am < bm
	}
	return len(as) < len(bs) || len(as) == len(bs) && as < bs
}

// TestSlowConsumer checks that a subscriber that does not read is
// disconnected once its queue is full, and that the others go on.
func TestSlowConsumer(t *testing.T) {
	s, wsURL, _ := start(t, Config{SendQueue: 4})
	s.create("a")
	slow := dial(t, wsURL)
	send(t, slow, map[string]string{"type": "subscribe", "channel": "a"})
	fast := dial(t, wsURL)
	send(t, fast, map[string]string{"type": "subscribe", "channel": "a"})
	next(t, fast)
	// The slow one's writer drains its queue into the socket buffers, so
	// publish until they are full too.
	big := `"` + strings.Repeat("x", 60000) + `"`
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := s.publish("a", []byte(big)); err != nil {
			t.Fatal(err)
		}
		if f := next(t, fast); f.Type != "message" {
			t.Fatalf("fast subscriber got %+v", f)
		}
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow subscriber was never disconnected")
		}
	}
	// Its socket was full: no close frame could follow, and what it
	// finds after the frames already sent is the end of the connection.
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := slow.ReadMessage(); err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the slow subscriber's connection is still open: %v", err)
			}
			return
		}
	}
}

// TestFaults checks the test-only faults a load generator's verification
// is tried against.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []int
	}{
		{"lose every 3rd", Config{LoseEvery: 3}, []int{1, 2, 4, 5, 7}},
		{"repeat every 3rd", Config{RepeatEvery: 3}, []int{1, 2, 3, 3, 4, 5, 6, 6, 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, wsURL, _ := start(t, tc.cfg)
			s.create("a")
			c := dial(t, wsURL)
			send(t, c, map[string]string{"type": "subscribe", "channel": "a"})
			next(t, c)
			for i := 1; i <= 7; i++ {
				s.publish("a", []byte{byte('0' + i)})
			}
			for _, want := range tc.want {
				if f := next(t, c); string(f.Data) != string(rune('0'+want)) {
					t.Fatalf("got %s, want %d", f.Data, want)
				}
			}
		})
	}
}

// TestClose checks that Close ends every connection and its goroutines.
func TestClose(t *testing.T) {
	s, wsURL, _ := start(t, Config{})
	c := dial(t, wsURL)
	s.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("after Close: %v, want close 1001", err)
	}
}
