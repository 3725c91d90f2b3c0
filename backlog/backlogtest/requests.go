package backlogtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// RequestLog is a log with request queues, as both backlogs are.
type RequestLog interface {
	backlog.Log
	backlog.Requests
}

// RequestsOptions configures the log a RequestsFactory makes.
type RequestsOptions struct {
	// MaxRequests is the queue bound to configure; 0 means the default.
	MaxRequests int
	// Now is the clock that judges deadlines.
	Now func() time.Time
}

// RequestsFactory returns a fresh log; the suite closes it.
type RequestsFactory func(t *testing.T, opts RequestsOptions) RequestLog

// clock is time.Now shifted by a settable offset, so that deadlines can
// pass without waiting; idle times (Reclaim) stay on the real clock.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time               { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration)      { c.offset.Add(int64(d)) }
func (c *clock) in(d time.Duration) time.Time { return c.now().Add(d) }

type requestsEnv struct {
	t   *testing.T
	ctx context.Context
	l   RequestLog
	clk *clock
	ch  string
}

// RunRequests runs the request queue conformance tests.
func RunRequests(t *testing.T, newLog RequestsFactory) {
	tests := []struct {
		name string
		max  int
		fn   func(e *requestsEnv)
	}{
		{"MissingChannel", 0, testReqMissing},
		{"RoundTrip", 0, testReqRoundTrip},
		{"ConsumersShareAGroup", 0, testReqConsumers},
		{"GroupsEachGetEverything", 0, testReqGroups},
		{"ClaimBlocksUntilEnqueue", 0, testReqBlocks},
		{"ClaimBlockEnds", 0, testReqBlockEnds},
		{"ClaimCancels", 0, testReqCancels},
		{"Reclaim", 0, testReqReclaim},
		{"Release", 0, testReqRelease},
		{"ReleaseExpired", 0, testReqReleaseExpired},
		{"Touch", 0, testReqTouch},
		{"Leave", 0, testReqLeave},
		{"AckUnknownIsIgnored", 0, testReqAckUnknown},
		{"ExpiredAreNotHandedOut", 0, testReqExpired},
		{"Limit", 3, testReqLimit},
		{"InvalidArguments", 0, testReqInvalid},
		{"DeleteDropsQueue", 0, testReqDelete},
		{"DeleteEndsBlockedClaim", 0, testReqDeleteBlocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{}
			l := newLog(t, RequestsOptions{MaxRequests: tt.max, Now: clk.now})
			t.Cleanup(func() { l.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			e := &requestsEnv{t: t, ctx: ctx, l: l, clk: clk}
			e.ch = mustCreate(t, ctx, l, backlog.ChannelConfig{})
			tt.fn(e)
		})
	}
}

func (e *requestsEnv) enqueue(data string, ttl time.Duration) backlog.ID {
	e.t.Helper()
	id, err := e.l.Enqueue(e.ctx, e.ch, backlog.Request{ReplyTo: "inbox:1", Deadline: e.clk.in(ttl), Data: []byte(data)})
	if err != nil {
		e.t.Fatalf("Enqueue(%s): %v", data, err)
	}
	return id
}

func (e *requestsEnv) claim(group, consumer string, n int) []backlog.Request {
	e.t.Helper()
	reqs, err := e.l.Claim(e.ctx, e.ch, group, consumer, n, 0)
	if err != nil {
		e.t.Fatalf("Claim(%s, %s, %d): %v", group, consumer, n, err)
	}
	return reqs
}

func (e *requestsEnv) ack(group string, ids ...backlog.ID) int {
	e.t.Helper()
	n, err := e.l.Ack(e.ctx, e.ch, group, ids...)
	if err != nil {
		e.t.Fatalf("Ack(%s, %v): %v", group, ids, err)
	}
	return n
}

func (e *requestsEnv) reclaim(group, consumer string, minIdle time.Duration, n int) []backlog.Request {
	e.t.Helper()
	reqs, err := e.l.Reclaim(e.ctx, e.ch, group, consumer, minIdle, n)
	if err != nil {
		e.t.Fatalf("Reclaim(%s, %s, %v, %d): %v", group, consumer, minIdle, n, err)
	}
	return reqs
}

func reqData(reqs []backlog.Request) string {
	s := make([]string, len(reqs))
	for i, r := range reqs {
		s[i] = string(r.Data)
	}
	return strings.Join(s, ",")
}

func testReqMissing(e *requestsEnv) {
	t, ctx, l := e.t, e.ctx, e.l
	req := backlog.Request{ReplyTo: "inbox:1", Deadline: e.clk.in(time.Minute), Data: []byte("1")}
	if _, err := l.Enqueue(ctx, "no.such.channel", req); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Enqueue: %v, want ErrNotFound", err)
	}
	if _, err := l.Claim(ctx, "no.such.channel", "g", "c", 1, 0); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Claim: %v, want ErrNotFound", err)
	}
	if _, err := l.Ack(ctx, "no.such.channel", "g", backlog.ID{Ms: 1}); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Ack: %v, want ErrNotFound", err)
	}
	if _, err := l.Reclaim(ctx, "no.such.channel", "g", "c", 0, 1); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Reclaim: %v, want ErrNotFound", err)
	}
	if _, err := l.Release(ctx, "no.such.channel", "g", backlog.ID{Ms: 1}); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Release: %v, want ErrNotFound", err)
	}
	if _, err := l.Release(ctx, "no.such.channel", "g"); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Release of no IDs: %v, want ErrNotFound", err)
	}
	if _, err := l.Touch(ctx, "no.such.channel", "g", "c", backlog.ID{Ms: 1}); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Touch: %v, want ErrNotFound", err)
	}
	if _, err := l.Touch(ctx, "no.such.channel", "g", "c"); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Touch of no IDs: %v, want ErrNotFound", err)
	}
}

func testReqRoundTrip(e *requestsEnv) {
	t := e.t
	deadline := e.clk.in(time.Minute)
	var ids []backlog.ID
	for i := range 3 {
		id, err := e.l.Enqueue(e.ctx, e.ch, backlog.Request{ReplyTo: "inbox:7", Deadline: deadline, Data: fmt.Appendf(nil, `{"n":%d}`, i)})
		if err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		if len(ids) > 0 && !ids[len(ids)-1].Less(id) {
			t.Fatalf("IDs %v then %v do not increase", ids[len(ids)-1], id)
		}
		ids = append(ids, id)
	}
	got := e.claim("g", "c1", 10)
	if len(got) != 3 {
		t.Fatalf("Claim got %d requests, want 3", len(got))
	}
	for i, r := range got {
		want := backlog.Request{ID: ids[i], ReplyTo: "inbox:7", Deadline: deadline.Truncate(time.Millisecond), Data: fmt.Appendf(nil, `{"n":%d}`, i), Deliveries: 1}
		if r.ID != want.ID || r.ReplyTo != want.ReplyTo || !r.Deadline.Equal(want.Deadline) || string(r.Data) != string(want.Data) || r.Deliveries != 1 {
			t.Errorf("request %d = %+v, want %+v", i, r, want)
		}
	}
	if more := e.claim("g", "c1", 10); len(more) != 0 {
		t.Errorf("second Claim = %s, want nothing", reqData(more))
	}
	if n := e.ack("g", ids...); n != 3 {
		t.Errorf("Ack = %d, want 3", n)
	}
	if n := e.ack("g", ids...); n != 0 {
		t.Errorf("Ack again = %d, want 0", n)
	}
	if got := e.reclaim("g", "c2", 0, 10); len(got) != 0 {
		t.Errorf("Reclaim after Ack = %s, want nothing", reqData(got))
	}
}

func testReqConsumers(e *requestsEnv) {
	const total = 40
	for i := range total {
		e.enqueue(fmt.Sprint(i), time.Minute)
	}
	var mu sync.Mutex
	seen := make(map[backlog.ID]string)
	var wg sync.WaitGroup
	for _, c := range []string{"c1", "c2"} {
		wg.Go(func() {
			for {
				reqs, err := e.l.Claim(e.ctx, e.ch, "g", c, 3, 0)
				if err != nil {
					e.t.Errorf("Claim(%s): %v", c, err)
					return
				}
				if len(reqs) == 0 {
					return
				}
				mu.Lock()
				for _, r := range reqs {
					if other, ok := seen[r.ID]; ok {
						e.t.Errorf("request %v handed to %s and %s", r.ID, other, c)
					}
					seen[r.ID] = c
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != total {
		e.t.Errorf("consumers got %d requests, want %d", len(seen), total)
	}
}

// testReqGroups: every group gets every request held when it first
// claims; one group's acks do not take requests from the others.
func testReqGroups(e *requestsEnv) {
	for i := range 5 {
		e.enqueue(fmt.Sprint(i), time.Minute)
	}
	b := e.claim("gb", "c", 1) // both groups exist before either acks
	a := e.claim("ga", "c", 10)
	e.ack("ga", a[0].ID, a[1].ID) // acked by one group only: kept for the other
	b = append(b, e.claim("gb", "c", 10)...)
	if reqData(a) != "0,1,2,3,4" || reqData(b) != "0,1,2,3,4" {
		e.t.Errorf("groups got %q and %q, want every request each", reqData(a), reqData(b))
	}
}

func testReqBlocks(e *requestsEnv) {
	got := make(chan []backlog.Request, 1)
	go func() {
		reqs, err := e.l.Claim(e.ctx, e.ch, "g", "c", 1, 15*time.Second)
		if err != nil {
			e.t.Errorf("Claim: %v", err)
		}
		got <- reqs
	}()
	id := e.enqueue("x", time.Minute)
	reqs := <-got
	if len(reqs) != 1 || reqs[0].ID != id {
		e.t.Errorf("blocked Claim = %+v, want the request %v", reqs, id)
	}
}

func testReqBlockEnds(e *requestsEnv) {
	reqs, err := e.l.Claim(e.ctx, e.ch, "g", "c", 1, 50*time.Millisecond)
	if err != nil || len(reqs) != 0 {
		e.t.Errorf("Claim on an empty queue = %+v, %v; want nothing, nil", reqs, err)
	}
}

func testReqCancels(e *requestsEnv) {
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() {
		_, err := e.l.Claim(ctx, e.ch, "g", "c", 1, time.Minute)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			e.t.Errorf("cancelled Claim: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Fatal("Claim still blocked 10s after its context was cancelled")
	}
	// The backlog still serves Claims afterwards.
	id := e.enqueue("x", time.Minute)
	if reqs := e.claim("g", "c", 1); len(reqs) != 1 || reqs[0].ID != id {
		e.t.Errorf("Claim after a cancel = %+v, want %v", reqs, id)
	}
}

func testReqReclaim(e *requestsEnv) {
	id := e.enqueue("x", time.Minute)
	if reqs := e.claim("g", "dead", 1); len(reqs) != 1 {
		e.t.Fatalf("Claim = %+v, want one request", reqs)
	}
	if reqs := e.reclaim("g", "c2", time.Hour, 10); len(reqs) != 0 {
		e.t.Fatalf("Reclaim before minIdle = %+v, want nothing", reqs)
	}
	if reqs := e.reclaim("other", "c2", 0, 10); len(reqs) != 0 {
		e.t.Fatalf("Reclaim in another group = %+v, want nothing", reqs)
	}
	var reqs []backlog.Request
	for deadline := time.Now().Add(10 * time.Second); len(reqs) == 0; {
		if time.Now().After(deadline) {
			e.t.Fatal("Reclaim found nothing idle for 50ms within 10s")
		}
		time.Sleep(10 * time.Millisecond)
		reqs = e.reclaim("g", "c2", 50*time.Millisecond, 10)
	}
	if len(reqs) != 1 || reqs[0].ID != id || reqs[0].Deliveries != 2 || string(reqs[0].Data) != "x" {
		e.t.Fatalf("Reclaim = %+v, want request %v with Deliveries 2", reqs, id)
	}
	if n := e.ack("g", id); n != 1 {
		e.t.Errorf("Ack of the reclaimed request = %d, want 1", n)
	}
	if reqs := e.reclaim("g", "c3", 0, 10); len(reqs) != 0 {
		e.t.Errorf("Reclaim after Ack = %+v, want nothing", reqs)
	}
}

func (e *requestsEnv) release(group string, ids ...backlog.ID) int {
	e.t.Helper()
	n, err := e.l.Release(e.ctx, e.ch, group, ids...)
	if err != nil {
		e.t.Fatalf("Release(%s, %v): %v", group, ids, err)
	}
	return n
}

func (e *requestsEnv) leave(group, consumer string) bool {
	e.t.Helper()
	gone, err := e.l.Leave(e.ctx, e.ch, group, consumer)
	if err != nil {
		e.t.Fatalf("Leave(%s, %s): %v", group, consumer, err)
	}
	return gone
}

// testReqLeave: a consumer leaves its group only once it holds nothing, so
// that no request pending on it is lost with it; a consumer that left may
// come back.
func testReqLeave(e *requestsEnv) {
	t := e.t
	a := e.enqueue("a", time.Minute)
	if got := reqData(e.claim("g", "w1", 10)); got != "a" {
		t.Fatalf("Claim = %q, want a", got)
	}
	if e.leave("g", "w1") {
		t.Fatal("Leave of a consumer holding a request = true, want false")
	}
	if !e.leave("g", "w2") || !e.leave("nogroup", "w1") {
		t.Error("Leave of a consumer holding nothing, or of an unknown group = false, want true")
	}
	if n := e.release("g", a); n != 1 {
		t.Fatalf("Release = %d, want 1", n)
	}
	if !e.leave("g", "w1") {
		t.Fatal("Leave after Release = false, want true")
	}
	got := e.reclaim("g", "w3", time.Hour, 10)
	if len(got) != 1 || got[0].ID != a {
		t.Fatalf("Reclaim after the consumer left = %+v, want a", got)
	}
	e.enqueue("b", time.Minute)
	if got := reqData(e.claim("g", "w1", 10)); got != "b" {
		t.Fatalf("Claim by a consumer that left = %q, want b", got)
	}
	if _, err := e.l.Leave(e.ctx, "no.such.channel", "g", "w1"); !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Leave on a missing channel: %v, want ErrNotFound", err)
	}
	if _, err := e.l.Leave(e.ctx, e.ch, "g", "bad name"); !errors.Is(err, backlog.ErrInvalid) {
		t.Errorf("Leave of a bad consumer name: %v, want ErrInvalid", err)
	}
}

// testReqRelease: a released request goes to the next Reclaim of any
// consumer at once, however long its minIdle, with its Deliveries raised
// by that Reclaim only; unknown, acked and other groups' IDs are ignored.
func testReqRelease(e *requestsEnv) {
	t := e.t
	a := e.enqueue("a", time.Minute)
	b := e.enqueue("b", time.Minute)
	c := e.enqueue("c", time.Minute)
	if got := reqData(e.claim("g", "gone", 10)); got != "a,b,c" {
		t.Fatalf("Claim = %q, want a,b,c", got)
	}
	if got := reqData(e.claim("other", "x", 10)); got != "a,b,c" {
		t.Fatalf("Claim in another group = %q, want a,b,c", got)
	}
	if n := e.release("g"); n != 0 {
		t.Errorf("Release of no IDs = %d, want 0", n)
	}
	if n := e.release("nogroup", a); n != 0 {
		t.Errorf("Release in an unknown group = %d, want 0", n)
	}
	// b is named twice: it counts once.
	if n := e.release("g", a, b, b, backlog.ID{Ms: 1}, c.Next()); n != 2 {
		t.Errorf("Release of a, b, b and two unknown IDs = %d, want 2", n)
	}
	got := e.reclaim("g", "c2", time.Hour, 10)
	if reqData(got) != "a,b" || got[0].ID != a || got[1].ID != b {
		t.Fatalf("Reclaim with minIdle 1h after Release = %+v, want a and b", got)
	}
	for _, r := range got {
		if r.Deliveries != 2 {
			t.Errorf("released then reclaimed %s has Deliveries %d, want 2", r.Data, r.Deliveries)
		}
	}
	if got := e.reclaim("g", "c3", time.Hour, 10); len(got) != 0 {
		t.Errorf("second Reclaim = %q, want nothing: the Reclaim took the released requests", reqData(got))
	}
	if got := e.reclaim("other", "y", time.Hour, 10); len(got) != 0 {
		t.Errorf("Reclaim in the other group = %q, want nothing: Release is per group", reqData(got))
	}
	if n := e.ack("g", b); n != 1 {
		t.Fatalf("Ack(b) = %d, want 1", n)
	}
	if n := e.release("g", b); n != 0 {
		t.Errorf("Release of an acked request = %d, want 0", n)
	}
	// A request released twice, and once more after a Reclaim.
	if n := e.release("g", a); n != 1 {
		t.Errorf("Release of a reclaimed request = %d, want 1", n)
	}
	if n := e.release("g", a, c); n != 2 {
		t.Errorf("Release of a released request and c = %d, want 2", n)
	}
	got = e.reclaim("g", "c3", time.Hour, 1)
	if len(got) != 1 || got[0].ID != a || got[0].Deliveries != 3 {
		t.Fatalf("Reclaim of one = %+v, want a with Deliveries 3", got)
	}
	got = e.reclaim("g", "c3", time.Hour, 10)
	if len(got) != 1 || got[0].ID != c || got[0].Deliveries != 2 {
		t.Fatalf("Reclaim = %+v, want c with Deliveries 2", got)
	}
	if n := e.ack("g", a, c); n != 2 {
		t.Errorf("Ack of the reclaimed requests = %d, want 2", n)
	}
}

// testReqReleaseExpired: a request released past its deadline is still
// pending (counted), and the next Reclaim acks it instead of handing it
// out.
func testReqReleaseExpired(e *requestsEnv) {
	e.enqueue("short", time.Minute)
	long := e.enqueue("long", time.Hour)
	reqs := e.claim("g", "gone", 10)
	if len(reqs) != 2 {
		e.t.Fatalf("Claim = %q, want short,long", reqData(reqs))
	}
	e.clk.advance(2 * time.Minute)
	if n := e.release("g", reqs[0].ID, reqs[1].ID); n != 2 {
		e.t.Errorf("Release = %d, want 2", n)
	}
	got := e.reclaim("g", "c2", time.Hour, 10)
	if len(got) != 1 || got[0].ID != long {
		e.t.Fatalf("Reclaim = %q, want long only", reqData(got))
	}
	if n := e.ack("g", reqs[0].ID); n != 0 {
		e.t.Errorf("Ack of the expired request = %d, want 0: Reclaim acked it", n)
	}
}

func (e *requestsEnv) touch(group, consumer string, ids ...backlog.ID) int {
	e.t.Helper()
	n, err := e.l.Touch(e.ctx, e.ch, group, consumer, ids...)
	if err != nil {
		e.t.Fatalf("Touch(%s, %s, %v): %v", group, consumer, ids, err)
	}
	return n
}

// testReqTouch: a request its consumer touches is not idle for a Reclaim
// elsewhere, while one of another consumer, untouched, is; Touch counts
// no delivery and leaves other consumers', unknown and acked IDs alone.
// Idle times are on the backlog's real clock (Redis's), hence the sleep.
func testReqTouch(e *requestsEnv) {
	t := e.t
	const minIdle = 500 * time.Millisecond
	a := e.enqueue("a", time.Minute)
	b := e.enqueue("b", time.Minute)
	c := e.enqueue("c", time.Minute)
	if got := reqData(e.claim("g", "A", 2)); got != "a,b" {
		t.Fatalf("Claim by A = %q, want a,b", got)
	}
	if got := reqData(e.claim("g", "B", 10)); got != "c" {
		t.Fatalf("Claim by B = %q, want c", got)
	}
	time.Sleep(minIdle + 50*time.Millisecond)
	touched := time.Now()
	// a is named twice: it counts once; c is B's.
	if n := e.touch("g", "A", a, b, a, c, backlog.ID{Ms: 1}, c.Next()); n != 2 {
		t.Errorf("Touch by A of a, b, a, c and two unknown IDs = %d, want 2", n)
	}
	got := e.reclaim("g", "X", minIdle, 10)
	if time.Since(touched) >= minIdle {
		// a and b may have become idle enough again: nothing to tell.
		t.Skipf("Touch and Reclaim took %v, longer than minIdle %v: machine too slow for this test", time.Since(touched), minIdle)
	}
	if len(got) != 1 || got[0].ID != c || got[0].Deliveries != 2 {
		t.Fatalf("Reclaim(minIdle %v) after A's Touch = %+v, want c only, with Deliveries 2", minIdle, got)
	}
	if n := e.ack("g", c); n != 1 {
		t.Fatalf("Ack(c) = %d, want 1", n)
	}
	// Touched twice more: still one delivery each.
	e.touch("g", "A", a, b)
	if n := e.touch("g", "A", a, b); n != 2 {
		t.Errorf("Touch by A again = %d, want 2", n)
	}
	got = e.reclaim("g", "X", 0, 10)
	if len(got) != 2 || got[0].ID != a || got[1].ID != b {
		t.Fatalf("Reclaim(minIdle 0) = %q, want a,b", reqData(got))
	}
	for _, r := range got {
		if r.Deliveries != 2 {
			t.Errorf("touched then reclaimed %s has Deliveries %d, want 2", r.Data, r.Deliveries)
		}
	}
	if n := e.touch("g", "A", a, b); n != 0 {
		t.Errorf("Touch by A of requests now X's = %d, want 0", n)
	}
	if n := e.touch("nogroup", "X", a); n != 0 {
		t.Errorf("Touch in an unknown group = %d, want 0", n)
	}
	if n := e.touch("g", "X"); n != 0 {
		t.Errorf("Touch of no IDs = %d, want 0", n)
	}
	if n := e.ack("g", a); n != 1 {
		t.Fatalf("Ack(a) = %d, want 1", n)
	}
	if n := e.touch("g", "X", a, b, c); n != 1 {
		t.Errorf("Touch by X of a, b and c, a and c acked = %d, want 1", n)
	}
	if n := e.ack("g", b); n != 1 {
		t.Errorf("Ack of the touched request = %d, want 1", n)
	}
}

func testReqAckUnknown(e *requestsEnv) {
	id := e.enqueue("x", time.Minute)
	if n := e.ack("nogroup", id); n != 0 {
		e.t.Errorf("Ack in an unknown group = %d, want 0", n)
	}
	e.claim("g", "c", 1)
	if n := e.ack("g", backlog.ID{Ms: 1}, id.Next()); n != 0 {
		e.t.Errorf("Ack of unknown IDs = %d, want 0", n)
	}
	if n := e.ack("g"); n != 0 {
		e.t.Errorf("Ack of no IDs = %d, want 0", n)
	}
	if n := e.ack("g", id, id); n != 1 {
		e.t.Errorf("Ack of a pending ID twice in one call = %d, want 1", n)
	}
}

// testReqExpired: a request past its deadline is handed out neither by
// Claim nor by Reclaim, which ack it for the group instead.
func testReqExpired(e *requestsEnv) {
	e.enqueue("short", time.Minute)
	e.enqueue("long", time.Hour)
	e.enqueue("pending", 2*time.Minute)
	if got := reqData(e.claim("early", "c", 10)); got != "short,long,pending" {
		e.t.Fatalf("Claim = %q, want short,long,pending", got)
	}
	e.clk.advance(90 * time.Second)
	if got := reqData(e.claim("g", "c", 10)); got != "long,pending" {
		e.t.Errorf("Claim after a deadline = %q, want long,pending", got)
	}
	e.clk.advance(time.Minute)
	if got := e.reclaim("g", "c2", 0, 10); reqData(got) != "long" {
		e.t.Errorf("Reclaim after a deadline = %q, want long", reqData(got))
	}
	if got := e.reclaim("early", "c2", 0, 10); reqData(got) != "long" {
		e.t.Errorf("Reclaim in the early group = %q, want long", reqData(got))
	}
}

// testReqLimit: a queue holds MaxRequests (3 here); acked and expired
// requests do not count.
func testReqLimit(e *requestsEnv) {
	a := e.enqueue("a", time.Minute)
	e.enqueue("b", time.Hour)
	e.enqueue("c", time.Hour)
	req := backlog.Request{ReplyTo: "inbox:1", Deadline: e.clk.in(time.Hour), Data: []byte("d")}
	if _, err := e.l.Enqueue(e.ctx, e.ch, req); !errors.Is(err, backlog.ErrLimit) {
		e.t.Fatalf("Enqueue past the limit: %v, want ErrLimit", err)
	}
	e.claim("g", "c", 1)
	e.ack("g", a)
	e.enqueue("d", time.Minute)
	if _, err := e.l.Enqueue(e.ctx, e.ch, req); !errors.Is(err, backlog.ErrLimit) {
		e.t.Fatalf("Enqueue past the limit after an ack: %v, want ErrLimit", err)
	}
	e.clk.advance(2 * time.Minute) // d expires
	e.enqueue("e", time.Hour)
	if got := reqData(e.claim("g", "c", 10)); got != "b,c,e" {
		e.t.Errorf("queue = %q, want b,c,e", got)
	}
}

func testReqInvalid(e *requestsEnv) {
	ctx, l, ch := e.ctx, e.l, e.ch
	long := strings.Repeat("a", 65)
	good := backlog.Request{ReplyTo: "inbox:1", Deadline: e.clk.in(time.Minute), Data: []byte("1")}
	bad := func(what string, err error) {
		if !errors.Is(err, backlog.ErrInvalid) {
			e.t.Errorf("%s: %v, want ErrInvalid", what, err)
		}
	}
	for _, r := range []struct {
		what string
		mod  func(*backlog.Request)
	}{
		{"empty ReplyTo", func(r *backlog.Request) { r.ReplyTo = "" }},
		{"long ReplyTo", func(r *backlog.Request) { r.ReplyTo = strings.Repeat("x", backlog.MaxReplyToLen+1) }},
		{"ReplyTo with a space", func(r *backlog.Request) { r.ReplyTo = "a b" }},
		{"zero deadline", func(r *backlog.Request) { r.Deadline = time.Time{} }},
		{"past deadline", func(r *backlog.Request) { r.Deadline = e.clk.in(-time.Second) }},
	} {
		req := good
		r.mod(&req)
		_, err := l.Enqueue(ctx, ch, req)
		bad("Enqueue with "+r.what, err)
	}
	req := good
	req.ReplyTo = strings.Repeat("x", backlog.MaxReplyToLen)
	if _, err := l.Enqueue(ctx, ch, req); err != nil {
		e.t.Errorf("Enqueue with a %d-byte ReplyTo: %v", backlog.MaxReplyToLen, err)
	}
	for _, name := range []string{"", "a b", long, "é"} {
		_, err := l.Claim(ctx, ch, name, "c", 1, 0)
		bad(fmt.Sprintf("Claim with group %q", name), err)
		_, err = l.Claim(ctx, ch, "g", name, 1, 0)
		bad(fmt.Sprintf("Claim with consumer %q", name), err)
		_, err = l.Reclaim(ctx, ch, name, "c", 0, 1)
		bad(fmt.Sprintf("Reclaim with group %q", name), err)
		_, err = l.Reclaim(ctx, ch, "g", name, 0, 1)
		bad(fmt.Sprintf("Reclaim with consumer %q", name), err)
		_, err = l.Ack(ctx, ch, name, backlog.ID{Ms: 1})
		bad(fmt.Sprintf("Ack with group %q", name), err)
		_, err = l.Release(ctx, ch, name, backlog.ID{Ms: 1})
		bad(fmt.Sprintf("Release with group %q", name), err)
		_, err = l.Touch(ctx, ch, name, "c", backlog.ID{Ms: 1})
		bad(fmt.Sprintf("Touch with group %q", name), err)
		_, err = l.Touch(ctx, ch, "g", name, backlog.ID{Ms: 1})
		bad(fmt.Sprintf("Touch with consumer %q", name), err)
	}
	_, err := l.Claim(ctx, ch, "g", "c", 0, 0)
	bad("Claim of 0", err)
	_, err = l.Reclaim(ctx, ch, "g", "c", 0, 0)
	bad("Reclaim of 0", err)
	if reqs, err := l.Claim(ctx, ch, strings.Repeat("g", 64), strings.Repeat("c", 64), 1, 0); err != nil || len(reqs) != 1 {
		e.t.Errorf("Claim with 64-byte names = %+v, %v; want the request", reqs, err)
	}
}

func testReqDelete(e *requestsEnv) {
	e.enqueue("old1", time.Minute)
	e.enqueue("old2", time.Minute)
	e.claim("g", "c", 1) // old1 pending, old2 not delivered
	if err := e.l.Delete(e.ctx, e.ch); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.l.Claim(e.ctx, e.ch, "g", "c", 1, 0); !errors.Is(err, backlog.ErrNotFound) {
		e.t.Errorf("Claim after Delete: %v, want ErrNotFound", err)
	}
	if _, err := e.l.Create(e.ctx, e.ch, backlog.ChannelConfig{}); err != nil {
		e.t.Fatal(err)
	}
	if got := e.reclaim("g", "c", 0, 10); len(got) != 0 {
		e.t.Errorf("Reclaim after Delete and Create = %q, want nothing", reqData(got))
	}
	e.enqueue("new", time.Minute)
	if got := reqData(e.claim("g", "c", 10)); got != "new" {
		e.t.Errorf("Claim after Delete and Create = %q, want new", got)
	}
}

func testReqDeleteBlocked(e *requestsEnv) {
	e.claim("g", "c", 1) // the group exists, as it would for a serving app
	done := make(chan error, 1)
	go func() {
		_, err := e.l.Claim(e.ctx, e.ch, "g", "c", 1, 15*time.Second)
		done <- err
	}()
	// The Delete may land before the Claim blocks: the result is the same.
	if err := e.l.Delete(e.ctx, e.ch); err != nil {
		e.t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, backlog.ErrNotFound) {
		e.t.Errorf("Claim blocked across Delete: %v, want ErrNotFound", err)
	}
}
