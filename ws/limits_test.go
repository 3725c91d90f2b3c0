package ws

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Tests of the configured limits at their edges, close codes, refusals, and
// shutdown.

func TestMaxSubscriptions(t *testing.T) {
	const n = 3
	ts := startServer(t, Config{MaxSubscriptions: n})
	for i := range n + 1 {
		ts.create(t, fmt.Sprintf("c%d", i), 0)
	}
	c := ts.dial(t)
	for i := range n {
		c.subscribe(fmt.Sprintf("c%d", i), nil)
	}
	c.send(map[string]any{"type": "subscribe", "ref": "one-more", "channel": "c3"})
	c.expectError("one-more", "limit_exceeded")

	// The refused subscribe took nothing: after one unsubscribe the same
	// channel can be subscribed, and the subscriptions kept still deliver.
	c.send(map[string]any{"type": "unsubscribe", "ref": "u", "channel": "c0"})
	c.expect(map[string]any{"type": "ack", "ref": "u", "channel": "c0"})
	c.subscribe("c3", nil)
	id := ts.publish(t, "c1", 1)[0]
	c.expect(map[string]any{"type": "message", "channel": "c1", "id": id, "data": map[string]any{"i": 0}})
}

// TestMaxConnections: at the limit, one more is refused before the upgrade
// with an HTTP 503 that says when to retry and which setting holds it
// back; once a client leaves, its slot is reusable.
func TestMaxConnections(t *testing.T) {
	const n = 3
	ts := startServer(t, Config{MaxConnections: n, Names: SettingNames{MaxConnections: "TSLM_MAX_CONNECTIONS"}})
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = ts.dial(t)
		clients[i].roundTrip() // admitted
	}
	resp, body := ts.refused(t, nil, http.StatusServiceUnavailable)
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After: %q, want 5", got)
	}
	if !strings.Contains(body, "TSLM_MAX_CONNECTIONS") || !strings.Contains(body, "3") {
		t.Errorf("body %q does not name the limit and its value", body)
	}
	st := ts.srv.Stats()
	if got := st.Refused[RefusedMaxConnections]; got != 1 {
		t.Errorf("Stats().Refused[%s] = %d, want 1", RefusedMaxConnections, got)
	}
	if got := st.Closes[CodeTryLater]; got != 0 {
		t.Errorf("Stats().Closes[1013] = %d, want 0: the refusal is not a close", got)
	}
	for _, c := range clients {
		c.roundTrip()
	}

	// A freed slot is reusable.
	clients[0].ws.Close()
	waitFor(t, "the closed connection to be forgotten", func() bool { return ts.srv.Stats().Open == n-1 })
	again := ts.dial(t)
	again.roundTrip()
	if got, want := ts.srv.Stats().Accepted, int64(n+1); got != want {
		t.Errorf("Stats().Accepted = %d, want %d", got, want)
	}
	ts.refused(t, nil, http.StatusServiceUnavailable)
}

// TestMaxConnectionsConcurrent: many upgrades at once never take more
// slots than there are.
func TestMaxConnectionsConcurrent(t *testing.T) {
	const n, dialers = 5, 20
	ts := startServer(t, Config{MaxConnections: n})
	results := make(chan int, dialers)
	var wg sync.WaitGroup
	for range dialers {
		wg.Go(func() {
			conn, resp, err := ts.handshake(nil, ProtocolV1)
			if err == nil {
				t.Cleanup(func() { conn.Close() })
				results <- http.StatusSwitchingProtocols
				return
			}
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			results <- status
		})
	}
	wg.Wait()
	close(results)
	counts := map[int]int{}
	for status := range results {
		counts[status]++
	}
	if counts[http.StatusSwitchingProtocols] != n || counts[http.StatusServiceUnavailable] != dialers-n {
		t.Errorf("answers by status %v, want %d upgrades and %d refusals (503)", counts, n, dialers-n)
	}
}

// TestFailedUpgradeFreesItsSlot: a handshake that passes the early checks
// but fails in the upgrader does not keep the slot it reserved.
func TestFailedUpgradeFreesItsSlot(t *testing.T) {
	ts := startServer(t, Config{MaxConnections: 1})
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, ts.http.URL+"/v1/ws", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "not base64 of 16 bytes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("bad key answered %d, want 400", resp.StatusCode)
		}
	}
	ts.dial(t).roundTrip()
}

func TestMaxFrameBytes(t *testing.T) {
	const limit = 1024
	ts := startServer(t, Config{Allow: OpAll, MaxFrameBytes: limit})
	ts.create(t, "c", 0)
	frame := func(size int) string {
		head, tail := `{"type":"publish","ref":"big","channel":"c","data":"`, `"}`
		return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
	}
	other := ts.dial(t)
	c := ts.dial(t)

	t.Run("exactly the limit", func(t *testing.T) {
		c.t = t
		f := frame(limit)
		if len(f) != limit {
			t.Fatalf("frame of %d bytes, want %d", len(f), limit)
		}
		c.send(f)
		c.expect(map[string]any{"type": "ack", "ref": "big", "channel": "c", "id": anyID})
	})
	t.Run("one byte over", func(t *testing.T) {
		c.t = t
		c.send(frame(limit + 1))
		c.expectClose(CodeTooBig)
		waitFor(t, "the 1009 close to be counted", func() bool { return ts.srv.Stats().Closes[CodeTooBig] == 1 })
	})
	t.Run("others unaffected", func(t *testing.T) {
		other.t = t
		other.roundTrip()
		other.send(frame(limit))
		other.expect(map[string]any{"type": "ack", "ref": "big", "channel": "c", "id": anyID})
		waitFor(t, "one connection open", func() bool { return ts.srv.Stats().Open == 1 })
	})
}

func TestCommandRate(t *testing.T) {
	const burst = 3
	// One token per 100s: nothing refills during the test.
	ts := startServer(t, Config{CommandRate: 0.01, CommandBurst: burst})
	c := ts.dial(t)
	other := ts.dial(t)

	for i := range burst {
		c.send(map[string]any{"type": "unsubscribe", "ref": fmt.Sprint(i), "channel": "c"})
		c.expect(map[string]any{"type": "ack", "ref": fmt.Sprint(i), "channel": "c"})
	}
	// Past the burst every command is dropped with rate_limited, as many
	// times as the burst; one more closes the connection with 1008.
	for i := range burst {
		ref := fmt.Sprintf("over-%d", i)
		c.send(map[string]any{"type": "unsubscribe", "ref": ref, "channel": "c"})
		got := c.read()
		if d := diff(got, map[string]any{"type": "error", "ref": ref, "code": "rate_limited", "message": anyText}); d != "" {
			t.Fatalf("over the rate, command %d: got %v, want a rate_limited error with its ref: %s", i, got, d)
		}
	}
	c.send(map[string]any{"type": "unsubscribe", "ref": "last-straw", "channel": "c"})
	c.expectClose(CodePolicy)

	st := ts.srv.Stats()
	if got := st.Closes[CodePolicy]; got != 1 {
		t.Errorf("Stats().Closes[1008] = %d, want 1", got)
	}
	if got := st.Errors["rate_limited"]; got != burst {
		t.Errorf("Stats().Errors[rate_limited] = %d, want %d", got, burst)
	}
	// The limit is per connection.
	for range burst {
		other.roundTrip()
	}
}

func TestSlowConsumer(t *testing.T) {
	ts := startServer(t, Config{Allow: OpAll, SendQueueFrames: 4, SendQueueBytes: 256 << 10})
	ts.create(t, "c", 100_000)
	slow := ts.dial(t)
	slow.subscribe("c", nil)
	fast := ts.dial(t)
	fast.subscribe("c", nil)
	frames := fast.pump()

	payload := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 64<<10))
	var ids []string
	publish := func() {
		t.Helper()
		id, err := ts.hub.Publish(context.Background(), "c", payload)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.String())
		// The fast client gets every message before the next is
		// published, so its queue never holds more than one.
		f := pumped(t, frames)
		if f["type"] != "message" || f["id"] != id.String() {
			t.Fatalf("fast client: got %v %v, want message %s", f["type"], f["id"], id)
		}
	}
	// The slow client's socket buffers fill first, then its queue.
	for ts.srv.Stats().Closes[CodeSlowConsumer] == 0 {
		if len(ids) == 2000 {
			t.Fatalf("slow client not dropped after %d messages of %d bytes", len(ids), len(payload))
		}
		publish()
	}
	t.Logf("slow client dropped after %d messages of %d bytes", len(ids), len(payload))
	for range 5 {
		publish()
	}

	// What was sent before the drop arrives, then the close code.
	received := 0
	for {
		f, err := slow.next(readTimeout)
		if err == nil {
			if f["type"] != "message" || f["id"] != ids[received] {
				t.Fatalf("slow client, frame %d: got %v %v, want message %s", received, f["type"], f["id"], ids[received])
			}
			received++
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != CodeSlowConsumer {
			t.Fatalf("slow client ended with %v after %d messages, want close code 4000", err, received)
		}
		break
	}
	if received >= len(ids) {
		t.Errorf("slow client received all %d messages, yet was dropped", received)
	}

	// The fast client is still subscribed and connected.
	fast.send(map[string]any{"type": "unsubscribe", "ref": "u", "channel": "c"})
	if d := diff(pumped(t, frames), map[string]any{"type": "ack", "ref": "u", "channel": "c"}); d != "" {
		t.Errorf("fast client after the drop: %s", d)
	}
	waitFor(t, "only the fast client open", func() bool { return ts.srv.Stats().Open == 1 })
}

func TestPingTimeout(t *testing.T) {
	// Pings are frequent but the pong timeout is long: an answering
	// client on a loaded machine may be slow to pong by up to a second
	// without being dropped, while the silent one still goes within
	// about a second.
	const ping, pong = 50 * time.Millisecond, time.Second
	ts := startServer(t, Config{PingInterval: ping, PongTimeout: pong})
	silent := ts.dial(t)
	alive := ts.dial(t)
	var pings atomic.Int64
	alive.ws.SetPingHandler(func(data string) error {
		pings.Add(1)
		return alive.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(readTimeout))
	})
	frames := alive.pump()

	waitFor(t, "the silent client to be dropped", func() bool { return ts.srv.Stats().Open == 1 })
	// The live one answers pings and stays over two idle periods, which
	// only its pongs can have extended: it sends nothing else.
	seen := pings.Load()
	idlePeriods := int64(2 * (ping + pong) / ping)
	waitFor(t, "two idle periods of pings", func() bool { return pings.Load() >= seen+idlePeriods })
	if got := ts.srv.Stats().Open; got != 1 {
		t.Fatalf("Stats().Open = %d while a client answers pings, want 1", got)
	}
	alive.send(map[string]any{"type": "unsubscribe", "ref": "u", "channel": "c"})
	if d := diff(pumped(t, frames), map[string]any{"type": "ack", "ref": "u", "channel": "c"}); d != "" {
		t.Errorf("live client: %s", d)
	}

	// The silent client was cut off without a close frame.
	for {
		_, err := silent.next(readTimeout)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
			t.Errorf("silent client got close code %d, want none (1006)", ce.Code)
		}
		break
	}
	alive.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	waitFor(t, "no connection open", func() bool { return ts.srv.Stats().Open == 0 })
}

func TestShutdown(t *testing.T) {
	// An hour of close grace: only the clients' answers can end Shutdown.
	ts := startServerWith(t, Config{Allow: OpAll}, serverOptions{closeGrace: time.Hour})
	ts.create(t, "c", 0)
	clients := []*client{ts.dial(t), ts.dial(t), ts.dial(t, ProtocolLegacy)}
	for _, c := range clients[:2] {
		c.subscribe("c", nil)
	}
	clients[2].send(`{"Subscribe":"c"}`)
	clients[2].expect(map[string]any{"Success": "Subscribed to c"})

	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()

	for i, c := range clients {
		if i == len(clients)-1 {
			// One client has not answered its close yet: Shutdown
			// must still be waiting for it.
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned %v while a client was still connected", err)
			default:
			}
		}
		c.expectClose(CodeGoingAway)
	}
	shutdownReturned(t, ts, done)
	if got := ts.srv.Stats().Closes[CodeGoingAway]; got != int64(len(clients)) {
		t.Errorf("Stats().Closes[1001] = %d, want %d", got, len(clients))
	}
	// New connections are refused before the upgrade.
	resp, _ := ts.refused(t, nil, http.StatusServiceUnavailable)
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After: %q while shutting down, want 1", got)
	}
	if got := ts.srv.Stats().Refused[RefusedShutdown]; got != 1 {
		t.Errorf("Stats().Refused[%s] = %d, want 1", RefusedShutdown, got)
	}
}

// TestShutdownDrainsQueue holds frames in a client's send queue behind a
// full socket, then shuts down: every one arrives before the close frame,
// and connections made while draining are refused.
func TestShutdownDrainsQueue(t *testing.T) {
	ts := startServer(t, Config{SendQueueFrames: 4096, SendQueueBytes: 512 << 20})
	ts.create(t, "c", 100_000)
	c := ts.dial(t)
	c.subscribe("c", nil)

	var conn *conn
	ts.srv.mu.Lock()
	for k := range ts.srv.conns {
		conn = k
	}
	ts.srv.mu.Unlock()
	queued := func() int {
		conn.queue.mu.Lock()
		defer conn.queue.mu.Unlock()
		return len(conn.queue.frames)
	}
	payload := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 64<<10))
	var ids []string
	for queued() < 20 {
		if len(ids) == 2000 {
			t.Fatalf("no frames queued after %d messages", len(ids))
		}
		id, err := ts.hub.Publish(context.Background(), "c", payload)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.String())
		n := int64(len(ids))
		waitFor(t, "the message to be handed to the connection", func() bool { return ts.hub.Stats().Delivered >= n })
	}
	t.Logf("%d frames queued behind the socket after %d messages", queued(), len(ids))

	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(context.Background()) }()
	waitFor(t, "the server to be draining", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return ts.srv.draining
	})
	ts.refused(t, nil, http.StatusServiceUnavailable)

	for i, id := range ids {
		f, err := c.next(readTimeout)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", i, len(ids), err)
		}
		if f["type"] != "message" || f["id"] != id {
			t.Fatalf("frame %d: got %v %v, want message %s", i, f["type"], f["id"], id)
		}
	}
	c.expectClose(CodeGoingAway)
	shutdownReturned(t, ts, done)
}

// TestShutdownDeadline: a client that never answers the close frame is cut
// off when Shutdown's ctx ends, and Shutdown says so.
func TestShutdownDeadline(t *testing.T) {
	// An hour of close grace: only the ctx can end this Shutdown.
	ts := startServerWith(t, Config{}, serverOptions{closeGrace: time.Hour})
	c := ts.dial(t)
	c.roundTrip()
	c.ws.SetCloseHandler(func(int, string) error { return nil }) // read the close, never answer it

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(ctx) }()
	// The close frame is sent before the cut.
	c.expectClose(CodeGoingAway)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v before its ctx ended, with a client that has not answered", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown = %v, want context.Canceled", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Shutdown did not return once its ctx ended")
	}
	waitFor(t, "the cut-off client to be forgotten", func() bool { return ts.srv.Stats().Open == 0 })
}

// TestShutdownTwice: a second Shutdown (say, a second signal) waits for the
// same drain instead of stranding the first caller until its deadline.
func TestShutdownTwice(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- ts.srv.Shutdown(ctx) }()
	go func() { errs <- ts.srv.Shutdown(ctx) }()
	c.expectClose(CodeGoingAway)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Shutdown: %v, want nil once the client is gone", err)
		}
	}
}

// shutdownReturned waits for a Shutdown's result and checks that it left no
// connection open.
func shutdownReturned(t *testing.T, ts *testServer, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Shutdown did not return after every client left")
	}
	if got := ts.srv.Stats().Open; got != 0 {
		t.Errorf("Stats().Open = %d after Shutdown, want 0", got)
	}
}
