package ws

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Tests of docs/protocol.md "Server-Sent Events (fallback)" over real HTTP
// on loopback, read as a browser's EventSource would.

// sseEvent is one block of the stream: an event, a comment or a retry.
type sseEvent struct {
	Event, ID, Data, Comment, Retry string
	HasID                           bool
}

// sseStream is a test's open event stream. Its reader starts on the first
// read, so that a test can leave the stream unread.
type sseStream struct {
	t      testing.TB
	resp   *http.Response
	events chan sseEvent // closed at the end of the stream
	start  sync.Once
	lastID string // the id an EventSource would send back
}

func (ts *testServer) sseURL(query string) string { return ts.http.URL + "/v1/sse?" + query }

// sseGet requests a stream without checking the answer.
func sseGet(t testing.TB, url string, header http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// sse opens a stream, expecting 200 and the event-stream headers.
func (ts *testServer) sse(t testing.TB, query string, header http.Header) *sseStream {
	t.Helper()
	return openStreamAt(t, ts.sseURL(query), header)
}

func openStreamAt(t testing.TB, url string, header http.Header) *sseStream {
	t.Helper()
	resp := sseGet(t, url, header)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: HTTP %d %s", url, resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	return &sseStream{t: t, resp: resp, events: make(chan sseEvent, 1<<16)}
}

// read parses the stream as the HTML standard says, one block per event.
func (s *sseStream) read() {
	defer close(s.events)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	var ev sseEvent
	var data []string
	any := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if any {
				ev.Data = strings.Join(data, "\n")
				s.events <- ev
			}
			ev, data, any = sseEvent{}, nil, false
			continue
		}
		any = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			ev.Comment = value
		case "event":
			ev.Event = value
		case "id":
			ev.ID, ev.HasID = value, true
		case "data":
			data = append(data, value)
		case "retry":
			ev.Retry = value
		}
	}
}

// nextAny returns the next block, pings included; ok is false at the end.
func (s *sseStream) nextAny() (sseEvent, bool) {
	s.t.Helper()
	s.start.Do(func() { go s.read() })
	select {
	case ev, ok := <-s.events:
		if ev.HasID {
			s.lastID = ev.ID
		}
		return ev, ok
	case <-time.After(readTimeout):
		s.t.Fatal("no event within the read timeout")
	}
	return sseEvent{}, false
}

// next returns the next event, skipping pings and the retry hint.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	for {
		ev, ok := s.nextAny()
		if !ok {
			s.t.Fatal("stream ended, want an event")
		}
		if ev.Comment == "" && (ev.Retry == "" || ev.Data != "") {
			return ev
		}
	}
}

// expect reads the next event, of type event ("" for a message) with
// data want.
func (s *sseStream) expect(event string, want map[string]any) sseEvent {
	s.t.Helper()
	ev := s.next()
	var got map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &got); err != nil || strings.Contains(ev.Data, "\n") {
		s.t.Fatalf("event %q data %q is not one line of JSON: %v", ev.Event, ev.Data, err)
	}
	if ev.Event != event {
		s.t.Fatalf("got event %q %v, want %q %v", ev.Event, got, event, want)
	}
	if d := diff(got, want); d != "" {
		s.t.Fatalf("event %q: %s", event, d)
	}
	return ev
}

func (s *sseStream) expectMessage(channel, id string, i int) sseEvent {
	s.t.Helper()
	ev := s.expect("", map[string]any{"channel": channel, "id": id, "data": map[string]any{"i": i}})
	if !ev.HasID {
		s.t.Fatalf("message %s has no id:", id)
	}
	return ev
}

// expectEnd reads to the end of the stream, which must come next.
func (s *sseStream) expectEnd() {
	s.t.Helper()
	for {
		ev, ok := s.nextAny()
		if !ok {
			return
		}
		if ev.Comment == "" {
			s.t.Fatalf("got %+v, want the end of the stream", ev)
		}
	}
}

// refusedSSE requests a stream expecting status, and returns the error body.
func (ts *testServer) refusedSSE(t testing.TB, query string, header http.Header, status int, code broker.Code) (*http.Response, string) {
	t.Helper()
	resp := sseGet(t, ts.sseURL(query), header)
	if resp.StatusCode != status {
		// Not read: a stream that was not refused never ends.
		resp.Body.Close()
		t.Fatalf("GET ?%s: HTTP %d, want %d", query, resp.StatusCode, status)
	}
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Code    broker.Code `json:"code"`
		Message string      `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Code != code || e.Message == "" {
		t.Fatalf("GET ?%s: body %s, want {code:%s, message}", query, body, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET ?%s: Content-Type %q", query, ct)
	}
	return resp, e.Message
}

// TestSSEStream: one stream of several channels, each announced by
// subscribed before its messages, replayed (last) and then live, every
// message carrying the cursor of every channel.
func TestSSEStream(t *testing.T) {
	checkNoWSLeaks(t)
	ts := startServer(t, Config{})
	ts.create(t, "a", 0)
	ts.create(t, "b:x", 0)
	a := ts.publish(t, "a", 3)

	s := ts.sse(t, "channel=a&channel=b:x&last=a:2", nil)
	if ev, _ := s.nextAny(); ev.Retry != "1000" {
		t.Fatalf("first block %+v, want retry: 1000", ev)
	}
	ev := s.expect("subscribed", map[string]any{"channel": "a", "head": a[2]})
	if ev.ID != "b:x=0-0" {
		t.Errorf("subscribed a: id %q, want the live channel's head b:x=0-0", ev.ID)
	}
	if ev := s.expectMessage("a", a[1], 1); ev.ID != "a="+a[1]+",b:x=0-0" {
		t.Errorf("id %q", ev.ID)
	}
	s.expectMessage("a", a[2], 2)
	s.expect("subscribed", map[string]any{"channel": "b:x", "head": "0-0"})

	b := ts.publish(t, "b:x", 1)
	if ev := s.expectMessage("b:x", b[0], 0); ev.ID != "a="+a[2]+",b:x="+b[0] {
		t.Errorf("id %q", ev.ID)
	}
	// Pretty-printed JSON still makes one data line.
	id, err := ts.hub.Publish(context.Background(), "a", []byte("{\n  \"i\": 7\n}"))
	if err != nil {
		t.Fatal(err)
	}
	s.expectMessage("a", id.String(), 7)
	if st := ts.srv.Stats(); st.Streams != 1 || st.StreamsAccepted != 1 || st.Open != 0 {
		t.Errorf("Stats: %d streams, %d accepted, %d open WebSockets; want 1, 1, 0", st.Streams, st.StreamsAccepted, st.Open)
	}
}

// TestSSESince: since per channel, resumed or not; not-resumed follows
// subscribed when the position was trimmed, and the replay starts at the
// oldest message held.
func TestSSESince(t *testing.T) {
	checkNoWSLeaks(t)
	ts := startServer(t, Config{})
	ts.create(t, "kept", 0)
	ts.create(t, "trimmed", 2)
	kept := ts.publish(t, "kept", 3)
	trimmed := ts.publish(t, "trimmed", 4)

	s := ts.sse(t, "channel=kept&channel=trimmed&since=kept:"+kept[0]+"&since=trimmed:"+trimmed[0], nil)
	s.expect("subscribed", map[string]any{"channel": "kept", "head": kept[2], "resumed": true})
	s.expectMessage("kept", kept[1], 1)
	s.expectMessage("kept", kept[2], 2)
	s.expect("subscribed", map[string]any{"channel": "trimmed", "head": trimmed[3], "resumed": false})
	s.expect("not-resumed", map[string]any{"channel": "trimmed", "head": trimmed[3]})
	ev := s.expectMessage("trimmed", trimmed[2], 2)
	if want := "kept=" + kept[2] + ",trimmed=" + trimmed[2]; ev.ID != want {
		t.Errorf("id %q, want %q", ev.ID, want)
	}
	s.expectMessage("trimmed", trimmed[3], 3)
}

// TestSSEResume: the stream is cut (the server shuts down, or the client
// goes) and the client reconnects, to another server of the same hub, with
// Last-Event-ID: every channel resumes with no gap and no duplicate,
// including one that had no message before the cut and one whose since
// the URL gave.
func TestSSEResume(t *testing.T) {
	for _, cut := range []string{"shutdown", "client"} {
		t.Run(cut, func(t *testing.T) {
			checkNoWSLeaks(t)
			ts := startServer(t, Config{})
			other := httptest.NewServer(http.HandlerFunc(New(ts.hub, Config{Logger: ts.srv.cfg.Logger}).ServeSSE))
			t.Cleanup(other.Close)
			for _, c := range []string{"a", "b", "c"} {
				ts.create(t, c, 0)
			}
			c0 := ts.publish(t, "c", 2)
			query := "channel=a&channel=b&channel=c&since=c:" + c0[0]

			s := ts.sse(t, query, nil)
			s.expect("subscribed", map[string]any{"channel": "a", "head": "0-0"})
			s.expect("subscribed", map[string]any{"channel": "b", "head": "0-0"})
			s.expect("subscribed", map[string]any{"channel": "c", "head": c0[1], "resumed": true})
			s.expectMessage("c", c0[1], 1)
			a := ts.publish(t, "a", 2)
			s.expectMessage("a", a[0], 0)
			s.expectMessage("a", a[1], 1)

			switch cut {
			case "shutdown":
				ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
				defer cancel()
				go ts.srv.Shutdown(ctx)
				s.expect("shutdown", map[string]any{})
				s.expectEnd()
			case "client":
				s.resp.Body.Close()
				waitFor(t, "the stream to end", func() bool { return ts.srv.Stats().Streams == 0 })
			}
			// Published while the client is away.
			a2 := ts.publish(t, "a", 2)
			b := ts.publish(t, "b", 2)
			c := ts.publish(t, "c", 1)

			r := openStreamAt(t, other.URL+"/v1/sse?"+query, http.Header{"Last-Event-ID": {s.lastID}})
			r.expect("subscribed", map[string]any{"channel": "a", "head": a2[1], "resumed": true})
			r.expectMessage("a", a2[0], 0)
			r.expectMessage("a", a2[1], 1)
			r.expect("subscribed", map[string]any{"channel": "b", "head": b[1], "resumed": true})
			r.expectMessage("b", b[0], 0)
			r.expectMessage("b", b[1], 1)
			r.expect("subscribed", map[string]any{"channel": "c", "head": c[0], "resumed": true})
			r.expectMessage("c", c[0], 0)
			live := ts.publish(t, "b", 1)
			r.expectMessage("b", live[0], 0)
		})
	}
}

// TestSSEGapAndDeleted: a replay trimmed between pages yields a gap event;
// a deleted channel a deleted event, the stream going on for the others.
func TestSSEGapAndDeleted(t *testing.T) {
	checkNoWSLeaks(t)
	ts, log := startFaulty(t, Config{})
	ts.create(t, "g", 5)
	ts.create(t, "other", 0)
	ids := ts.publish(t, "g", 5)
	var newer []string
	trim := func(call int64) error {
		if call == 2 { // between the replay's first and second page
			for i := range 5 {
				id, err := log.Memory.Append(context.Background(), "g", fmt.Appendf(nil, `{"i":%d}`, 5+i))
				if err != nil {
					return err
				}
				newer = append(newer, id.String())
			}
		}
		return nil
	}
	log.onRange.Store(&trim)

	s := ts.sse(t, "channel=g&channel=other&since=g:0-0", nil)
	s.expect("subscribed", map[string]any{"channel": "g", "head": ids[4], "resumed": true})
	s.expectMessage("g", ids[0], 0)
	s.expectMessage("g", ids[1], 1)
	s.expect("gap", map[string]any{"channel": "g", "after": ids[1]})
	for i, id := range newer {
		s.expectMessage("g", id, 5+i)
	}
	s.expect("subscribed", map[string]any{"channel": "other", "head": "0-0"})
	if err := ts.hub.Delete(context.Background(), "g"); err != nil {
		t.Fatal(err)
	}
	s.expect("deleted", map[string]any{"channel": "g"})
	o := ts.publish(t, "other", 1)
	s.expectMessage("other", o[0], 0)
}

// TestSSERefused: every refusal comes before the stream, as an HTTP
// status with the HTTP API's error body.
func TestSSERefused(t *testing.T) {
	checkNoWSLeaks(t)
	ts := startServer(t, Config{MaxSubscriptions: 2, AllowedOrigins: []string{"https://ok.example"}})
	ts.create(t, "a", 0)
	ts.create(t, "b", 0)
	for _, tc := range []struct {
		query  string
		header http.Header
		status int
		code   broker.Code
	}{
		{"", nil, 400, broker.CodeBadRequest},
		{"channel=a&channel=b&channel=c", nil, 400, broker.CodeLimitExceeded},
		{"channel=a&channel=a", nil, 400, broker.CodeBadRequest},
		{"channel=no%20spaces", nil, 400, broker.CodeBadRequest},
		{"channel=a&since=b:1-0", nil, 400, broker.CodeBadRequest},
		{"channel=a&since=a", nil, 400, broker.CodeBadRequest},
		{"channel=a&since=a:x", nil, 400, broker.CodeBadRequest},
		{"channel=a&last=a:-1", nil, 400, broker.CodeBadRequest},
		{"channel=a&since=a:1-0&last=a:2", nil, 400, broker.CodeBadRequest},
		{"channel=a&last=a:100000", nil, 400, broker.CodeLimitExceeded},
		{"channel=a", http.Header{"Last-Event-ID": {"a:1-0"}}, 400, broker.CodeBadRequest},
		{"channel=a", http.Header{"Last-Event-ID": {"a=1-0,a=2-0"}}, 400, broker.CodeBadRequest},
		{"channel=a", http.Header{"Last-Event-ID": {"a=nope"}}, 400, broker.CodeBadRequest},
		{"channel=a&channel=missing", nil, 404, broker.CodeNotFound},
		{"channel=_inbox.x", nil, 403, broker.CodeForbidden},
		{"channel=a", http.Header{"Origin": {"https://evil.example"}}, 403, broker.CodeForbidden},
	} {
		ts.refusedSSE(t, tc.query, tc.header, tc.status, tc.code)
	}
	// An allowed origin may read the stream (CORS).
	s := ts.sse(t, "channel=a", http.Header{"Origin": {"https://ok.example"}})
	if got := s.resp.Header.Get("Access-Control-Allow-Origin"); got != "https://ok.example" {
		t.Errorf("Access-Control-Allow-Origin %q", got)
	}
	s.expect("subscribed", map[string]any{"channel": "a", "head": "0-0"})
	s.resp.Body.Close()
	waitFor(t, "the stream to end", func() bool { return ts.srv.Stats().Streams == 0 })
	// Refusals hold no subscription and no slot.
	if n := ts.hub.Stats().Subscriptions; n != 0 {
		t.Errorf("%d subscriptions left", n)
	}
	ts.srv.mu.Lock()
	slots := ts.srv.slots
	ts.srv.mu.Unlock()
	if slots != 0 {
		t.Errorf("%d slots held", slots)
	}
}

// TestSSELimits: streams share the WebSocket connections' slots: per
// address (429), per listener (503), and none while draining (503).
func TestSSELimits(t *testing.T) {
	checkNoWSLeaks(t)
	ts := startServer(t, Config{MaxConnections: 2, MaxConnectionsPerIP: 1})
	ts.create(t, "a", 0)
	s := ts.sse(t, "channel=a", nil)
	s.expect("subscribed", map[string]any{"channel": "a", "head": "0-0"})
	resp, _ := ts.refusedSSE(t, "channel=a", nil, 429, broker.CodeRateLimited)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	ts.refused(t, nil, http.StatusTooManyRequests) // a WebSocket too

	full := startServer(t, Config{MaxConnections: 1})
	full.create(t, "a", 0)
	full.dial(t)
	full.refusedSSE(t, "channel=a", nil, 503, broker.CodeUnavailable)
	if got := full.srv.Stats().Refused[RefusedMaxConnections]; got != 1 {
		t.Errorf("Refused[max_connections] = %d", got)
	}

	drain := startServer(t, Config{})
	drain.create(t, "a", 0)
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := drain.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	drain.refusedSSE(t, "channel=a", nil, 503, broker.CodeUnavailable)
}

// TestSSECredentials: the auth modes, with the credential in the
// Authorization header or, as EventSource must, in access_token; the
// channel rules decide each channel; an expiring credential ends the
// stream with an unauthorized error event.
func TestSSECredentials(t *testing.T) {
	checkNoWSLeaks(t)
	kit := newAuthKit(t)
	reader := kit.apiKey("reader", "alice", time.Time{}, grant(all, "news.*"))
	brief := kit.apiKey("brief", "bob", time.Now().Add(time.Second), grant(all, "news.*"))
	pol := policy(t, auth.ChannelRule{Pattern: auth.MustParsePattern("news.*")},
		auth.ChannelRule{Pattern: auth.MustParsePattern("secret")},
		auth.ChannelRule{Pattern: auth.MustParsePattern("other"), Anonymous: auth.AllOps})

	req := startServer(t, Config{AuthMode: auth.ModeRequired, Authenticator: kit.authenticator(), Policy: pol})
	req.create(t, "news.x", 0)
	req.create(t, "secret", 0)
	resp, _ := req.refusedSSE(t, "channel=news.x", nil, 401, broker.CodeUnauthorized)
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	req.refusedSSE(t, "channel=news.x&access_token=wrong", nil, 401, broker.CodeUnauthorized)
	req.refusedSSE(t, "channel=news.x", bearerHeader("wrong"), 401, broker.CodeUnauthorized)
	req.refusedSSE(t, "channel=news.x&access_token="+reader, bearerHeader(reader), 400, broker.CodeBadRequest)
	req.refusedSSE(t, "channel=news.x&channel=secret&access_token="+reader, nil, 403, broker.CodeForbidden)
	req.sse(t, "channel=news.x&access_token="+reader, nil).expect("subscribed", map[string]any{"channel": "news.x", "head": "0-0"})
	req.sse(t, "channel=news.x", bearerHeader(reader)).expect("subscribed", map[string]any{"channel": "news.x", "head": "0-0"})

	opt := startServer(t, Config{AuthMode: auth.ModeOptional, Authenticator: kit.authenticator(), Policy: pol})
	opt.create(t, "news.x", 0)
	opt.create(t, "other", 0)
	opt.sse(t, "channel=other", nil).expect("subscribed", map[string]any{"channel": "other", "head": "0-0"})
	opt.refusedSSE(t, "channel=other&channel=news.x", nil, 401, broker.CodeUnauthorized)

	s := opt.sse(t, "channel=news.x&access_token="+brief, nil)
	s.expect("subscribed", map[string]any{"channel": "news.x", "head": "0-0"})
	ev := s.next()
	if ev.Event != "error" || !strings.Contains(ev.Data, `"code":"unauthorized"`) {
		t.Fatalf("got %+v, want an unauthorized error event", ev)
	}
	s.expectEnd()
	if got := opt.srv.Stats().Errors[broker.CodeUnauthorized]; got != 1 {
		t.Errorf("Errors[unauthorized] = %d", got)
	}
}

// TestSSEHeartbeat: an idle stream carries a ping comment every
// PingInterval.
func TestSSEHeartbeat(t *testing.T) {
	checkNoWSLeaks(t)
	ts := startServer(t, Config{PingInterval: 20 * time.Millisecond})
	ts.create(t, "a", 0)
	s := ts.sse(t, "channel=a", nil)
	pings := 0
	for pings < 3 {
		ev, ok := s.nextAny()
		if !ok {
			t.Fatal("stream ended")
		}
		if ev.Comment == "ping" {
			pings++
		}
	}
}

// TestSSESlowConsumer: a client that does not read is dropped like a slow
// WebSocket client: what was written arrives, then an error event, then
// the end; reconnecting with its last id resumes where it stopped.
func TestSSESlowConsumer(t *testing.T) {
	checkNoWSLeaks(t)
	ts := startServer(t, Config{SendQueueFrames: 4, SendQueueBytes: 256 << 10})
	ts.create(t, "c", 100_000)
	s := ts.sse(t, "channel=c", nil)
	// Wait for the subscription before publishing, without reading.
	waitFor(t, "the subscription", func() bool { return ts.hub.Stats().Subscriptions == 1 })
	payload := fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", 64<<10))
	var ids []string
	for ts.srv.Stats().Closes[CodeSlowConsumer] == 0 {
		if len(ids) == 2000 {
			t.Fatalf("slow client not dropped after %d messages: %+v %+v", len(ids), ts.srv.Stats(), ts.hub.Stats())
		}
		id, err := ts.hub.Publish(context.Background(), "c", payload)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.String())
		// One at a time, so that the queue fills, not the hub's buffer.
		waitFor(t, "the delivery", func() bool {
			return ts.hub.Stats().Delivered >= int64(len(ids)) || ts.srv.Stats().Closes[CodeSlowConsumer] > 0
		})
	}
	s.expect("subscribed", map[string]any{"channel": "c", "head": "0-0"})
	received := 0
	var ev sseEvent
	for {
		ev = s.next()
		if ev.Event != "" {
			break
		}
		if !strings.Contains(ev.Data, `"id":"`+ids[received]+`"`) {
			t.Fatalf("message %d is not %s", received, ids[received])
		}
		received++
	}
	if ev.Event != "error" || !strings.Contains(ev.Data, `"code":"limit_exceeded"`) {
		t.Fatalf("got %+v, want a limit_exceeded error event", ev)
	}
	s.expectEnd()
	if received >= len(ids) {
		t.Fatalf("received all %d messages, yet was dropped", received)
	}
	r := ts.sse(t, "channel=c", http.Header{"Last-Event-ID": {s.lastID}})
	r.expect("subscribed", map[string]any{"channel": "c", "head": ids[len(ids)-1], "resumed": true})
	for _, id := range ids[received:] {
		if ev := r.next(); !strings.Contains(ev.Data, `"id":"`+id+`"`) {
			t.Fatalf("resumed: got %.80s, want %s", ev.Data, id)
		}
	}
}

// TestSSEEndsWithError: a replay that fails midway, and a send budget with
// no room, end the stream with an error event after what was sent; the
// client resumes from its cursor.
func TestSSEEndsWithError(t *testing.T) {
	t.Run("replay", func(t *testing.T) {
		checkNoWSLeaks(t)
		for _, tt := range []struct {
			err  error
			want string // the error event's data
		}{
			{fmt.Errorf("redis: %w", backlog.ErrUnavailable), `{"code":"unavailable","message":"the backlog is unavailable; retry later","channel":"c"}`},
			// The cause stays in the log.
			{errors.New("redis: WRONGTYPE"), `{"code":"internal","message":"internal error","channel":"c"}`},
		} {
			ts, log := startFaulty(t, Config{})
			ts.create(t, "c", 0)
			ids := ts.publish(t, "c", 5)
			fail := func(call int64) error {
				if call == 2 { // the first Range of Replay
					return tt.err
				}
				return nil
			}
			log.onRange.Store(&fail)
			s := ts.sse(t, "channel=c&since=c:0-0", nil)
			s.expect("subscribed", map[string]any{"channel": "c", "head": ids[4], "resumed": true})
			s.expectMessage("c", ids[0], 0)
			s.expectMessage("c", ids[1], 1)
			if ev := s.next(); ev.Event != "error" || ev.Data != tt.want {
				t.Errorf("got %+v, want error %s", ev, tt.want)
			}
			s.expectEnd()
			r := ts.sse(t, "channel=c&since=c:0-0", http.Header{"Last-Event-ID": {s.lastID}})
			r.expect("subscribed", map[string]any{"channel": "c", "head": ids[4], "resumed": true})
			for i := 2; i < 5; i++ {
				r.expectMessage("c", ids[i], i)
			}
		}
	})
	t.Run("budget", func(t *testing.T) {
		checkNoWSLeaks(t)
		ts := startServer(t, Config{SendBudget: NewSendBudget(1)})
		ts.create(t, "c", 0)
		s := ts.sse(t, "channel=c", nil)
		ev := s.next()
		if ev.Event != "error" || !strings.Contains(ev.Data, `"code":"unavailable"`) {
			t.Fatalf("got %+v, want an unavailable error event", ev)
		}
		s.expectEnd()
		if got := ts.srv.Stats().Closes[CodeBudget]; got != 1 {
			t.Errorf("Closes[4001] = %d", got)
		}
	})
}
