package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tslm/tslm/internal/redistest"
)

// sseEvent is one event of a stream as EventSource sees it.
type sseEvent struct{ event, id, data string }

// sseConn is an event stream read in the background, as a browser's
// EventSource does; events is closed at the stream's end.
type sseConn struct {
	events chan sseEvent
	resp   *http.Response
}

// openSSE requests url, with Last-Event-ID when lastID is not empty, and
// expects the stream.
func openSSE(t *testing.T, url, lastID string) *sseConn {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %s", url, resp.StatusCode, readAll(t, resp))
	}
	c := &sseConn{events: make(chan sseEvent, 1<<14), resp: resp}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			field, value, _ := strings.Cut(sc.Text(), ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.event = value
			case "id":
				ev.id = value
			case "data":
				ev.data = value
			}
			if sc.Text() == "" {
				if ev.data != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			}
		}
	}()
	return c
}

// next returns the next event; ok is false at the end of the stream.
func (c *sseConn) next(t *testing.T) (sseEvent, bool) {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		return ev, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no event for 10s")
	}
	return sseEvent{}, false
}

// TestSSEResumeOnAnotherReplica: a browser's stream of three channels on
// replica A is cut by A's shutdown while messages keep coming; it
// reconnects, as EventSource does, to replica B with Last-Event-ID, and
// receives every message of every channel exactly once and in order,
// including those of a channel that had none before the cut.
func TestSSEResumeOnAnotherReplica(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, nil)
	a, b := rs[0], rs[1]
	rdb := srv.Client()
	for _, ch := range []string{"x", "y", "z"} {
		a.create(t, ch, nil)
	}
	old := []string{mustXadd(t, rdb, "z", `{"n":-2}`), mustXadd(t, rdb, "z", `{"n":-1}`)}
	path := "/v1/sse?channel=x&channel=y&channel=z&last=z:1"
	host := func(r *replica) string {
		return "http://" + strings.TrimSuffix(strings.TrimPrefix(r.publicURL, "ws://"), "/v1/ws")
	}

	var mu sync.Mutex
	published := map[string][]string{}
	publish := func(ch string, n int) {
		id := mustXadd(t, rdb, ch, fmt.Sprintf(`{"n":%d}`, n))
		mu.Lock()
		published[ch] = append(published[ch], id)
		mu.Unlock()
	}
	received := map[string][]string{}
	lastID := ""
	// take records the messages of a stream until stop says so or the
	// stream ends; it returns false at the end.
	take := func(c *sseConn, stop func() bool) bool {
		for !stop() {
			ev, ok := c.next(t)
			if !ok {
				return false
			}
			if ev.id != "" {
				lastID = ev.id
			}
			switch ev.event {
			case "":
				var m struct{ Channel, ID string }
				if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
					t.Fatalf("message %q: %v", ev.data, err)
				}
				received[m.Channel] = append(received[m.Channel], m.ID)
			case "subscribed", "shutdown":
			default:
				t.Fatalf("unexpected event %q %s", ev.event, ev.data)
			}
		}
		return true
	}

	first := openSSE(t, host(a)+path, "")
	for i := range 20 {
		publish("x", i)
	}
	take(first, func() bool { return len(received["x"]) >= 10 })

	// A shuts down while the publisher goes on, on x and on y, which had
	// nothing so far.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 20; i < 60; i++ {
			publish("x", i)
			publish("y", i)
		}
	}()
	go func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		a.Shutdown(ctx)
	}()
	if take(first, func() bool { return false }) {
		t.Fatal("the stream on A did not end")
	}
	if !strings.Contains(lastID, "y=") {
		t.Errorf("cursor %q does not resume y, which had no message", lastID)
	}

	second := openSSE(t, host(b)+path, lastID)
	<-done
	publish("z", 0)
	want := func(ch string) int { mu.Lock(); defer mu.Unlock(); return len(published[ch]) }
	take(second, func() bool {
		return len(received["x"]) >= want("x") && len(received["y"]) >= want("y") && len(received["z"]) >= 2
	})
	// A sentinel last: anything duplicated would come before it.
	publish("z", 1)
	take(second, func() bool { return len(received["z"]) >= 3 })

	published["z"] = append([]string{old[1]}, published["z"]...)
	for _, ch := range []string{"x", "y", "z"} {
		sameIDs(t, "channel "+ch, received[ch], published[ch])
	}
}
