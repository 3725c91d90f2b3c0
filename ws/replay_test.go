package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// Tests of replay, hub failures and encoding, over real sockets.

// faultyLog fails Append and Info with err while it is set, and calls
// onRange, when set, before every Range with the call's number: a non-nil
// answer is Range's error.
type faultyLog struct {
	*backlog.Memory
	err     atomic.Pointer[error]
	ranges  atomic.Int64
	onRange atomic.Pointer[func(call int64) error]
}

func (l *faultyLog) Range(ctx context.Context, channel string, after backlog.ID, limit int) (backlog.Page, error) {
	n := l.ranges.Add(1)
	if hook := l.onRange.Load(); hook != nil {
		if err := (*hook)(n); err != nil {
			return backlog.Page{}, err
		}
	}
	return l.Memory.Range(ctx, channel, after, limit)
}

func (l *faultyLog) fail(err error) { l.err.Store(&err) }

func (l *faultyLog) failure() error {
	if p := l.err.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *faultyLog) Append(ctx context.Context, channel string, data []byte) (backlog.ID, error) {
	if err := l.failure(); err != nil {
		return backlog.ID{}, err
	}
	return l.Memory.Append(ctx, channel, data)
}

func (l *faultyLog) Info(ctx context.Context, channel string) (backlog.Info, error) {
	if err := l.failure(); err != nil {
		return backlog.Info{}, err
	}
	return l.Memory.Info(ctx, channel)
}

func TestHubErrors(t *testing.T) {
	const secret = "dial tcp 10.1.2.3:6379: password=hunter2"
	tests := []struct {
		name string
		err  error
		code broker.Code
		msg  string // the exact message, when it is fixed
	}{
		{name: "unavailable", err: backlog.ErrUnavailable, code: "unavailable"},
		{name: "wrapped unavailable", err: fmt.Errorf("%s: %w", secret, backlog.ErrUnavailable), code: "unavailable"},
		{name: "closed backlog", err: backlog.ErrClosed, code: "unavailable"},
		{name: "arbitrary error", err: errors.New(secret), code: "internal", msg: "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log *faultyLog
			ts := startServerWith(t, Config{Allow: OpAll}, serverOptions{wrap: func(m *backlog.Memory) backlog.Log {
				log = &faultyLog{Memory: m}
				return log
			}})
			ts.create(t, "c", 0)
			c := ts.dial(t)
			log.fail(tt.err)
			for _, frame := range []map[string]any{
				{"type": "publish", "ref": "p", "channel": "c", "data": 1},
				{"type": "subscribe", "ref": "s", "channel": "c"},
			} {
				c.send(frame)
				got := c.expectError(frame["ref"].(string), string(tt.code))
				msg := got["message"].(string)
				if tt.msg != "" && msg != tt.msg {
					t.Errorf("%s: message %q, want %q", frame["type"], msg, tt.msg)
				}
				if strings.Contains(msg, "hunter2") || strings.Contains(msg, "10.1.2.3") {
					t.Errorf("%s: message %q leaks the backlog's error", frame["type"], msg)
				}
			}
			// Recovered, the same connection works.
			log.fail(nil)
			id := c.publish("c", `1`)
			c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "c"})
			c.expect(map[string]any{"type": "ack", "ref": "s", "channel": "c", "head": id})
		})
	}
}

// TestReplayLiveMerge subscribes clients at different points while 3000
// messages are being published: each must receive exactly the IDs its
// position names, through the end, with no gap and no duplicate.
func TestReplayLiveMerge(t *testing.T) {
	const total = 3000
	// Small pages and a small buffer make the replay page and overflow
	// while live messages keep coming; the replays never give up (out of
	// reach ReplayOvertakes), since this test is about the merge, and a
	// loaded machine may overtake a replay more often than the default.
	ts := startServerWith(t, Config{SendQueueFrames: 8192, SendQueueBytes: 64 << 20},
		serverOptions{hub: broker.Config{ReplayPage: 64, ReplayBuffer: 32, ReplayOvertakes: 1 << 30}})
	ts.create(t, "m", 100_000)

	type plan struct {
		name string
		at   int // subscribe once this many messages are published
		// fields builds the subscribe's position from the IDs so far.
		fields func(ids []string) map[string]any
		// first is the index of the first message expected, given the
		// IDs so far and the ack's head index; -1 for last, checked apart.
		first func(n, head int) int
		last  int
	}
	plans := []plan{
		{name: "live at 300", at: 300, fields: func([]string) map[string]any { return nil }, first: func(_, head int) int { return head + 1 }},
		{name: "since 0-0 at 500", at: 500, fields: func([]string) map[string]any { return map[string]any{"since": "0-0"} }, first: func(int, int) int { return 0 }},
		{name: "since 100 at 900", at: 900, fields: func(ids []string) map[string]any { return map[string]any{"since": ids[100]} }, first: func(int, int) int { return 101 }},
		{name: "since recent at 1500", at: 1500, fields: func(ids []string) map[string]any { return map[string]any{"since": ids[1490]} }, first: func(int, int) int { return 1491 }},
		{name: "last 700 at 1800", at: 1800, fields: func([]string) map[string]any { return map[string]any{"last": 700} }, last: 700},
		{name: "last 0 at 2200", at: 2200, fields: func([]string) map[string]any { return map[string]any{"last": 0} }, first: func(_, head int) int { return head + 1 }},
		{name: "since 2000 at 2600", at: 2600, fields: func(ids []string) map[string]any { return map[string]any{"since": ids[2000]} }, first: func(int, int) int { return 2001 }},
	}

	type result struct {
		ack map[string]any
		ids []string
		err error
	}
	var (
		mu  sync.Mutex
		ids []string
	)
	idsSoFar := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return ids[:len(ids):len(ids)]
	}
	clients := make([]*client, len(plans))
	starts := make([]chan []string, len(plans)) // the IDs so far, when to subscribe
	sent := make([]chan struct{}, len(plans))
	acked := make([]chan struct{}, len(plans))
	results := make([]chan result, len(plans))
	for i, p := range plans {
		clients[i] = ts.dial(t)
		starts[i], sent[i], acked[i], results[i] = make(chan []string, 1), make(chan struct{}), make(chan struct{}), make(chan result, 1)
		go func() {
			c := clients[i]
			var r result
			defer func() { results[i] <- r }()
			var soFar []string
			select {
			case soFar = <-starts[i]:
			case <-time.After(readTimeout):
				r.err = errors.New("never told to subscribe")
				return
			}
			frame := mergeFields(map[string]any{"type": "subscribe", "ref": "s", "channel": "m"}, p.fields(soFar))
			b, _ := json.Marshal(frame)
			err := c.ws.WriteMessage(1, b) // websocket.TextMessage
			close(sent[i])
			if err != nil {
				r.err = err
				return
			}
			r.ack, r.err = c.next(readTimeout)
			close(acked[i])
			if r.err != nil {
				return
			}
			for {
				f, err := c.next(readTimeout)
				if err != nil {
					r.err = fmt.Errorf("after %d messages: %w", len(r.ids), err)
					return
				}
				if f["type"] != "message" {
					r.err = fmt.Errorf("after %d messages: got %v", len(r.ids), f)
					return
				}
				r.ids = append(r.ids, f["id"].(string))
				if f["data"].(map[string]any)["i"] == float64(total) {
					return
				}
			}
		}()
	}

	next := 0
	for i := range total {
		id, err := ts.hub.Publish(context.Background(), "m", fmt.Appendf(nil, `{"i":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		ids = append(ids, id.String())
		mu.Unlock()
		// Let each client subscribe at its point, and carry on
		// publishing as soon as its subscribe is on the wire, so that the
		// server handles it while messages keep coming.
		for next < len(plans) && plans[next].at == i+1 {
			starts[next] <- idsSoFar()
			<-sent[next]
			next++
		}
	}

	// Every subscription is acknowledged, so one more message reaches
	// them all, whatever their head: reading up to it ends every client.
	for i := range plans {
		select {
		case <-acked[i]:
		case <-time.After(readTimeout):
			t.Fatalf("%s: no ack", plans[i].name)
		}
	}
	end, err := ts.hub.Publish(context.Background(), "m", fmt.Appendf(nil, `{"i":%d}`, total))
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, end.String())

	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	for i, p := range plans {
		t.Run(p.name, func(t *testing.T) {
			r := <-results[i]
			if r.err != nil {
				t.Fatalf("client: %v (ack %v, %d messages)", r.err, r.ack, len(r.ids))
			}
			head, ok := index[fmt.Sprint(r.ack["head"])]
			if !ok {
				t.Fatalf("ack %v: head is not a published id", r.ack)
			}
			if head < p.at-1 {
				t.Errorf("ack head is message %d, but %d were published before the subscribe", head, p.at)
			}
			if _, hasSince := p.fields(ids)["since"]; hasSince && r.ack["resumed"] != true {
				t.Errorf("ack %v, want resumed true", r.ack)
			}
			if len(r.ids) == 0 {
				t.Fatal("no messages")
			}
			first, ok := index[r.ids[0]]
			if !ok {
				t.Fatalf("first id %s was never published", r.ids[0])
			}
			t.Logf("subscribed after message %d: ack head %d, first message %d, %d messages", p.at-1, head, first, len(r.ids))
			if p.last > 0 {
				// The newest 700 when the backlog was read, which is
				// at or after the head of the ack.
				if lo := head - p.last + 1; first < lo || first > total-p.last {
					t.Errorf("last %d: first message is %d, want within [%d, %d]", p.last, first, lo, total-p.last)
				}
			} else if want := p.first(len(ids), head); first != want {
				t.Errorf("first message is %d, want %d", first, want)
			}
			want := ids[first:]
			if len(r.ids) != len(want) {
				t.Errorf("got %d messages from %d, want %d", len(r.ids), first, len(want))
			}
			for j := range min(len(r.ids), len(want)) {
				if r.ids[j] != want[j] {
					t.Fatalf("message %d is %s (published #%d), want %s (#%d): gap or duplicate",
						j, r.ids[j], index[r.ids[j]], want[j], first+j)
				}
			}
		})
	}
}

// startFaulty starts a server whose backlog replays two messages per page
// and can be made to fail.
func startFaulty(t *testing.T, cfg Config) (*testServer, *faultyLog) {
	t.Helper()
	var log *faultyLog
	ts := startServerWith(t, cfg, serverOptions{
		hub: broker.Config{ReplayPage: 2},
		wrap: func(m *backlog.Memory) backlog.Log {
			log = &faultyLog{Memory: m}
			return log
		},
	})
	return ts, log
}

// TestReplayFailsMidway breaks the backlog after the ack and the first page
// of a replay: the subscription ends, the client is told, and it can
// resubscribe with since.
func TestReplayFailsMidway(t *testing.T) {
	tests := []struct {
		name string
		err  error
		// the client is told with an error carrying the ref (code), or
		// by a close (closeCode)
		code      broker.Code
		closeCode int
	}{
		{name: "unavailable", err: fmt.Errorf("redis: %w", backlog.ErrUnavailable), code: "unavailable"},
		{name: "internal", err: errors.New("redis: WRONGTYPE"), closeCode: CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, log := startFaulty(t, Config{})
			ts.create(t, "c", 0)
			ids := ts.publish(t, "c", 5)
			fail := func(call int64) error {
				if call == 2 { // the first Range of Replay, after the ack
					return tt.err
				}
				return nil
			}
			log.onRange.Store(&fail)

			c := ts.dial(t)
			c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "c", "since": "0-0"})
			c.expect(map[string]any{"type": "ack", "ref": "s", "channel": "c", "head": ids[4], "resumed": true})
			for i := range 2 {
				c.expect(map[string]any{"type": "message", "channel": "c", "id": ids[i], "data": map[string]any{"i": i}})
			}
			if tt.closeCode != 0 {
				c.expectClose(tt.closeCode)
				return
			}
			c.expectError("s", string(tt.code))
			// The subscription ended: subscribing again is not a
			// duplicate, and resumes where the client stopped.
			c.send(map[string]any{"type": "subscribe", "ref": "again", "channel": "c", "since": ids[1]})
			c.expect(map[string]any{"type": "ack", "ref": "again", "channel": "c", "head": ids[4], "resumed": true})
			for i := 2; i < 5; i++ {
				c.expect(map[string]any{"type": "message", "channel": "c", "id": ids[i], "data": map[string]any{"i": i}})
			}
		})
	}
}

// TestReplayGap trims the channel while a replay is between pages: the
// client gets a gap frame after the last message it received, then the
// oldest message held, with live messages merged without duplicates.
func TestReplayGap(t *testing.T) {
	ts, log := startFaulty(t, Config{})
	ts.create(t, "g", 5)
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

	c := ts.dial(t)
	c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "g", "since": "0-0"})
	c.expect(map[string]any{"type": "ack", "ref": "s", "channel": "g", "head": ids[4], "resumed": true})
	c.expect(map[string]any{"type": "message", "channel": "g", "id": ids[0], "data": map[string]any{"i": 0}})
	c.expect(map[string]any{"type": "message", "channel": "g", "id": ids[1], "data": map[string]any{"i": 1}})
	c.expect(map[string]any{"type": "gap", "channel": "g", "after": ids[1]})
	for i, id := range newer {
		c.expect(map[string]any{"type": "message", "channel": "g", "id": id, "data": map[string]any{"i": 5 + i}})
	}
	live := ts.publish(t, "g", 1)[0]
	c.expect(map[string]any{"type": "message", "channel": "g", "id": live, "data": map[string]any{"i": 0}})
}

func TestEncoders(t *testing.T) {
	id := backlog.ID{Ms: 1732480000123, Seq: 4}
	tests := []struct {
		name string
		enc  *broker.Encoder
		p    *broker.Publication
		want string
	}{
		{"v1 message", v1Encoder, &broker.Publication{Channel: "prices", ID: id, Data: []byte(`{"bid":1.5}`)},
			`{"type":"message","channel":"prices","id":"1732480000123-4","data":{"bid":1.5}}`},
		{"v1 gap", v1Encoder, &broker.Publication{Channel: "prices", ID: id, Gap: true},
			`{"type":"gap","channel":"prices","after":"1732480000123-4"}`},
		{"legacy text", legacyEncoder, &broker.Publication{Channel: "c", ID: id, Data: []byte(`"hi"`)},
			`{"ChannelMessage":["c",{"Text":"hi"}]}`},
		{"legacy json", legacyEncoder, &broker.Publication{Channel: "c", ID: id, Data: []byte(`[1]`)},
			`{"ChannelMessage":["c",{"Json":[1]}]}`},
		{"legacy gap", legacyEncoder, &broker.Publication{Channel: "c", ID: id, Gap: true},
			`{"Error":"gap: messages after 1732480000123-4 on c were lost"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.enc.Encode(tt.p)
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("%s is not valid JSON", got)
			}
		})
	}
}

// TestNonJSONPayload: bytes a publisher wrote straight to the backlog that
// are not JSON (or not UTF-8) arrive as a JSON string, in both protocols.
func TestNonJSONPayload(t *testing.T) {
	ts := startServer(t, Config{})
	ts.create(t, "raw", 0)
	v1 := ts.dial(t)
	v1.subscribe("raw", nil)
	lc := ts.dialLegacy(t)
	lc.send(`{"Subscribe":"raw"}`)
	lc.expect(map[string]any{"Success": "Subscribed to raw"})

	id, err := ts.mem.Append(context.Background(), "raw", []byte("plain \xff text"))
	if err != nil {
		t.Fatal(err)
	}
	v1.expect(map[string]any{"type": "message", "channel": "raw", "id": id.String(), "data": "plain \uFFFD text"})
	lc.expect(map[string]any{"ChannelMessage": []any{"raw", map[string]any{"Text": "plain \uFFFD text"}}})
}

// TestReplayOvertakenClosesSlowConsumer: live traffic overflows the replay
// buffer while the replay is between pages; with ReplayOvertakes 1 the
// replay gives up and the connection is closed as a slow consumer (4000).
func TestReplayOvertakenClosesSlowConsumer(t *testing.T) {
	var log *faultyLog
	ts := startServerWith(t, Config{}, serverOptions{
		hub: broker.Config{ReplayPage: 2, ReplayBuffer: 1, ReplayOvertakes: 1},
		wrap: func(m *backlog.Memory) backlog.Log {
			log = &faultyLog{Memory: m}
			return log
		},
	})
	ts.create(t, "c", 0)
	ids := ts.publish(t, "c", 5)
	watcherReady, watcherGot := make(chan struct{}), make(chan struct{})
	overtake := func(call int64) error {
		if call == 2 { // the first Range of the slow client's Replay
			<-watcherReady
			ts.publish(t, "c", 2)
			<-watcherGot
		}
		return nil
	}
	log.onRange.Store(&overtake)

	slow := ts.dial(t)
	slow.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "c", "since": "0-0"})
	slow.expect(map[string]any{"type": "ack", "ref": "s", "channel": "c", "head": ids[4], "resumed": true})
	// A live subscriber registered after the slow one is offered each live
	// message after it: once it has both, the slow one's buffer overflowed.
	watcher := ts.dial(t)
	watcher.subscribe("c", nil)
	// The ack precedes the watcher's own (empty) replay, whose buffer
	// would overflow too; a command runs only once the one before it is
	// done, so this answer means the watcher is live.
	watcher.roundTrip()
	close(watcherReady)
	watcher.messages("c", 2)
	close(watcherGot)

	slow.expectClose(CodeSlowConsumer)
	if n := ts.hub.Stats().ReplayOverflows; n != 1 {
		t.Errorf("replay overflows = %d, want 1", n)
	}
}

// TestReplayCapacityExhausted: while one replay holds the whole replay
// budget, another subscribe waits ReplayWait and is refused with
// unavailable, saying why; once the budget is free it succeeds.
func TestReplayCapacityExhausted(t *testing.T) {
	var log *faultyLog
	ts := startServerWith(t, Config{}, serverOptions{
		hub: broker.Config{ReplayPage: 2, ReplayBytes: 100, ReplayWait: 50 * time.Millisecond},
		wrap: func(m *backlog.Memory) backlog.Log {
			log = &faultyLog{Memory: m}
			return log
		},
	})
	ts.create(t, "c", 0)
	ids := ts.publish(t, "c", 5)
	holding, release := make(chan struct{}), make(chan struct{})
	hold := func(call int64) error {
		if call == 2 { // the holder's second page: its reservation is made
			close(holding)
			<-release
		}
		return nil
	}
	log.onRange.Store(&hold)
	holder := ts.dial(t)
	holder.send(map[string]any{"type": "subscribe", "ref": "h", "channel": "c", "since": "0-0"})
	<-holding

	c := ts.dial(t)
	c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "c", "since": "0-0"})
	got := c.expectError("s", "unavailable")
	if msg := got["message"]; msg != "replay capacity exhausted: retry later" {
		t.Errorf("message %q, want the replay capacity named", msg)
	}
	if n := ts.hub.Stats().ReplayRefused; n != 1 {
		t.Errorf("replays refused = %d, want 1", n)
	}

	close(release)
	holder.expect(map[string]any{"type": "ack", "ref": "h", "channel": "c", "head": ids[4], "resumed": true})
	holder.messages("c", 5)
	c.send(map[string]any{"type": "subscribe", "ref": "again", "channel": "c", "since": "0-0"})
	c.expect(map[string]any{"type": "ack", "ref": "again", "channel": "c", "head": ids[4], "resumed": true})
	c.messages("c", 5)
}
