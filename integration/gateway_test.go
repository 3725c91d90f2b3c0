package integration

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	tslmclient "github.com/tslm/tslm/client"
)

func TestSubscriberReceivesHTTPPublish(t *testing.T) {
	r := startReplica(t, nil)
	r.create(t, "prices", map[string]any{"max_len": 100})
	sub := goClient(t, r.publicURL)
	s, err := sub.Subscribe(t.Context(), "prices", tslmclient.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := r.publish(t, "prices", map[string]any{"bid": 1.5})
	got := nextMessages(t, s, 1)
	if got[0].ID != id || got[0].Channel != "prices" || string(got[0].Data) != `{"bid":1.5}` {
		t.Fatalf("message %+v, want %s with the data published", got[0], id)
	}
}

func TestPublicListenerPermissions(t *testing.T) {
	cases := []struct {
		allow       string
		wantPublish string // "ack" or the error code
		wantCreate  string
	}{
		{"", "forbidden", "forbidden"}, // the default: subscribe only
		{"subscribe,publish", "ack", "forbidden"},
		{"subscribe,publish,create", "ack", "ack"},
	}
	for _, c := range cases {
		t.Run("allow="+c.allow, func(t *testing.T) {
			env := map[string]string{}
			if c.allow != "" {
				env["TSLM_PUBLIC_ALLOW"] = c.allow
			}
			r := startReplica(t, env)
			r.create(t, "perm", nil)
			for _, side := range []struct {
				url                     string
				wantPublish, wantCreate string
			}{{r.publicURL, c.wantPublish, c.wantCreate}, {r.internalURL, "ack", "ack"}} {
				cl := dial(t, side.url)
				cl.send(map[string]any{"type": "publish", "ref": "p", "channel": "perm", "data": 1})
				checkOutcome(t, cl.read(), side.wantPublish)
				cl.send(map[string]any{"type": "create", "ref": "c", "channel": "perm2"})
				checkOutcome(t, cl.read(), side.wantCreate)
				cl.subscribe("perm", nil) // always allowed
			}
		})
	}
}

func checkOutcome(t *testing.T, f map[string]any, want string) {
	t.Helper()
	switch {
	case want == "ack" && f["type"] != "ack":
		t.Fatalf("got %v, want an ack", f)
	case want != "ack" && (f["type"] != "error" || f["code"] != want):
		t.Fatalf("got %v, want error %s", f, want)
	}
}

func TestResumeAcrossTrimming(t *testing.T) {
	r := startReplica(t, nil)
	// Each case: 10 messages on a channel keeping 5, so ids[:5] are trimmed;
	// since and want are indexes into ids (-1: "0-0").
	cases := []struct {
		name        string
		since       int
		wantResumed bool
		wantFrom    int
	}{
		{"since a held id", 7, true, 8},
		{"since the oldest held id", 5, true, 6},
		{"since a trimmed id", 2, false, 5},
		{"since 0-0 after trimming", -1, false, 5},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := fmt.Sprintf("trim%d", i)
			r.create(t, ch, map[string]any{"max_len": 5})
			var ids []string
			for i := range 10 {
				ids = append(ids, r.publish(t, ch, i))
			}
			since := "0-0"
			if c.since >= 0 {
				since = ids[c.since]
			}
			cl := dial(t, r.publicURL)
			ack := cl.subscribe(ch, map[string]any{"since": since})
			if ack["resumed"] != c.wantResumed || ack["head"] != ids[9] {
				t.Fatalf("ack %v, want resumed %v head %s", ack, c.wantResumed, ids[9])
			}
			sameIDs(t, "replay", cl.messages(ch, 10-c.wantFrom), ids[c.wantFrom:])
			live := r.publish(t, ch, "live")
			sameIDs(t, "live", cl.messages(ch, 1), []string{live})
		})
	}
}

func TestLastN(t *testing.T) {
	r := startReplica(t, nil)
	r.create(t, "tail", nil)
	var ids []string
	for i := range 6 {
		ids = append(ids, r.publish(t, "tail", i))
	}
	cl := dial(t, r.publicURL)
	ack := cl.subscribe("tail", map[string]any{"last": 4})
	if _, ok := ack["resumed"]; ok {
		t.Errorf("ack %v has resumed without since", ack)
	}
	sameIDs(t, "last 4", cl.messages("tail", 4), ids[2:])
	live := r.publish(t, "tail", "live")
	sameIDs(t, "live", cl.messages("tail", 1), []string{live})

	// The Go client asks the same.
	s, err := goClient(t, r.publicURL).Subscribe(t.Context(), "tail", tslmclient.SubscribeOptions{Last: 4})
	if err != nil {
		t.Fatal(err)
	}
	sameIDs(t, "the Go client's last 4", messageIDs(nextMessages(t, s, 4)), append(ids[3:], live))
}

// goClient dials url with the project's Go client (package client), which
// new tests use rather than raw frames; it is closed at cleanup.
func goClient(t testing.TB, url string) *tslmclient.Client {
	t.Helper()
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	c, err := tslmclient.Dial(ctx, url)
	if err != nil {
		t.Fatalf("tslmclient.Dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nextMessages reads n messages of s, failing on any other event or after
// 10s.
func nextMessages(t testing.TB, s *tslmclient.Subscription, n int) []tslmclient.Message {
	t.Helper()
	var got []tslmclient.Message
	timeout := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case ev, ok := <-s.Events():
			if !ok {
				t.Fatalf("subscription ended after %d of %d messages: %v", len(got), n, s.Err())
			}
			m, isMsg := ev.(tslmclient.Message)
			if !isMsg {
				t.Fatalf("event %#v, want a message", ev)
			}
			got = append(got, m)
		case <-timeout:
			t.Fatalf("%d of %d messages after 10s", len(got), n)
		}
	}
	return got
}

func messageIDs(ms []tslmclient.Message) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// TestReplayLiveMergeUnderLoad publishes thousands of messages over the
// internal WebSocket while clients subscribe from many positions: each
// client must receive exactly the IDs after its position, in order.
func TestReplayLiveMergeUnderLoad(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 0))
	// Replays overflow and re-read; they never give up here (an out of
	// reach TSLM_REPLAY_OVERTAKES), since this test is about the merge.
	r := startReplica(t, map[string]string{"TSLM_REPLAY_BUFFER": "16", "TSLM_REPLAY_OVERTAKES": "1000000000"})
	r.create(t, "load", map[string]any{"max_len": 100000})
	const total = 5000

	var mu sync.Mutex
	var published []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub := dial(t, r.internalURL)
		for i := range total {
			pub.send(map[string]any{"type": "publish", "ref": fmt.Sprint(i), "channel": "load", "data": i})
			f, err := pub.next(10 * time.Second)
			if err != nil || f["type"] != "ack" {
				t.Errorf("publish %d: %v %v", i, f, err)
				return
			}
			mu.Lock()
			published = append(published, f["id"].(string))
			mu.Unlock()
		}
	}()

	type run struct {
		cl    *client
		since string // "" for live-only from head
		head  string
	}
	var runs []run
	for len(runs) < 12 {
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		mu.Lock()
		n := len(published)
		var since string
		if n > 0 {
			since = published[rng.IntN(n)]
		}
		mu.Unlock()
		cl := dial(t, r.publicURL)
		extra := map[string]any{}
		if len(runs)%3 != 2 && since != "" {
			extra["since"] = since
		} else {
			since = ""
		}
		ack := cl.subscribe("load", extra)
		if since != "" && ack["resumed"] != true {
			t.Fatalf("resume since %s: %v", since, ack)
		}
		runs = append(runs, run{cl, since, ack["head"].(string)})
	}
	<-done
	if t.Failed() {
		return
	}
	for i, rn := range runs {
		after := rn.since
		if after == "" {
			after = rn.head
		}
		var want []string
		for j, id := range published {
			if id == after {
				want = published[j+1:]
			}
		}
		if after == "0-0" {
			want = published
		}
		sameIDs(t, fmt.Sprintf("client %d after %s", i, after), rn.cl.messages("load", len(want)), want)
	}
}

// TestSlowConsumerResumesWithoutLoss fills a client's send queue, checks
// that it is closed with 4000, and that resuming with the last ID it saw
// yields every message after it.
func TestSlowConsumerResumesWithoutLoss(t *testing.T) {
	// The close frame waits behind full socket buffers until the client
	// reads, which it does only once publishing stops; with the default
	// 10s write timeout a loaded machine could publish for longer, and the
	// server would then drop the connection without a close frame (1006).
	r := startReplica(t, map[string]string{"TSLM_SEND_QUEUE": "8", "TSLM_SEND_QUEUE_BYTES": "65536", "TSLM_WRITE_TIMEOUT": "5m"})
	r.create(t, "firehose", map[string]any{"max_len": 100000})
	slow := dial(t, r.publicURL)
	slow.subscribe("firehose", nil)
	big := strings.Repeat("x", 32<<10)
	var ids []string
	// Enough to fill the socket buffers and then the queue, stopping soon
	// after the server has closed the client as a slow consumer.
	for i := 0; i < 2000; i++ {
		ids = append(ids, r.publish(t, "firehose", big))
		if i%20 == 19 && r.metric(t, `tslm_server_closes_total{code="4000",listener="public"}`) > 0 {
			break
		}
	}
	var seen []string
	for {
		f, err := slow.next(10 * time.Second)
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4000 {
				t.Fatalf("slow client ended with %v, want close 4000", err)
			}
			break
		}
		seen = append(seen, f["id"].(string))
	}
	if len(seen) == len(ids) {
		t.Fatalf("the client read all %d messages: it was never slow", len(ids))
	}
	sameIDs(t, "before the close", seen, ids[:len(seen)])
	again := dial(t, r.publicURL)
	since := "0-0"
	if len(seen) > 0 {
		since = seen[len(seen)-1]
	}
	ack := again.subscribe("firehose", map[string]any{"since": since})
	if len(seen) > 0 && ack["resumed"] != true {
		t.Fatalf("resume ack %v, want resumed", ack)
	}
	sameIDs(t, "after resuming", again.messages("firehose", len(ids)-len(seen)), ids[len(seen):])
}

func TestShutdownTellsClientsToReconnect(t *testing.T) {
	r := startReplica(t, nil)
	r.create(t, "bye", nil)
	clients := []*client{dial(t, r.publicURL), dial(t, r.internalURL)}
	for _, c := range clients {
		c.subscribe("bye", nil)
	}
	ctx, cancel := contextWithTimeout(5 * time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Shutdown(ctx) }()
	for _, c := range clients {
		c.expectClose(websocket.CloseGoingAway)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, _, err := websocket.DefaultDialer.Dial(r.publicURL, nil); err == nil {
		t.Error("a new connection was accepted after shutdown")
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	r := startReplica(t, nil)
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		resp, err := http.Get(r.apiURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d, want 200 (%s)", path, resp.StatusCode, want)
		}
	}
	r.create(t, "m", nil)
	cl := dial(t, r.publicURL)
	cl.subscribe("m", nil)
	r.publish(t, "m", 1)
	cl.messages("m", 1)
	want := []string{
		`tslm_connections{listener="public"} 1`,
		`tslm_subscriptions 1`,
		`tslm_messages_delivered_total 1`,
		`tslm_channels_followed 1`,
	}
	// The hub counts a delivery once the reader has handed the whole
	// batch out, which may be just after the client received it: poll.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(r.apiURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		resp.Body.Close()
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
