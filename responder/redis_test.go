package responder_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/responder"
)

// These tests write the Redis layout by hand, as docs/redis.md describes
// it, rather than through the gateway: the responder must stand on that
// contract alone. The one piece of the gateway they use is the Redis
// Function tslm_publish, loaded with the gateway's own code as every
// gateway loads it at its start: it is part of the contract, and the
// responder writes its replies with it.

// reply is a reply envelope as an inbox holds it.
type reply struct {
	Channel string             `json:"channel"`
	ID      string             `json:"id"`
	Data    json.RawMessage    `json:"data"`
	Error   *responder.Refusal `json:"error"`
}

// fixture is a gateway's keys on a private Redis: channels and one
// session inbox.
type fixture struct {
	t      *testing.T
	ctx    context.Context
	srv    *redistest.Server
	rdb    *redis.Client
	prefix string
	inbox  string
}

var prefixSeq atomic.Int64

func newFixture(t *testing.T, channels ...string) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	srv := redistest.Start(t, redistest.Options{})
	f := &fixture{
		t: t, ctx: ctx, srv: srv, rdb: srv.Client(),
		prefix: fmt.Sprintf("rt%d:", prefixSeq.Add(1)),
		inbox:  "_inbox.0123456789abcdef0123456789abcdef",
	}
	loadFunction(t, ctx, f.rdb)
	for _, ch := range channels {
		f.createChannel(ch)
	}
	// An inbox is a channel (meta and stream) that exists before any
	// reply: without the function, the responder appends with NOMKSTREAM.
	f.createChannel(f.inbox)
	inbox := f.prefix + "ch:{" + f.inbox + "}"
	if err := f.rdb.XAdd(ctx, &redis.XAddArgs{Stream: inbox, Values: []any{"data", "null"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.XTrimMaxLen(ctx, inbox, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return f
}

// loadFunction loads the library of tslm_publish into Redis, as a gateway
// does at its start.
func loadFunction(t testing.TB, ctx context.Context, c redis.UniversalClient) {
	t.Helper()
	b := backlog.NewRedis(c, backlog.RedisConfig{})
	defer b.Close()
	if err := b.LoadFunctions(ctx); err != nil {
		t.Fatalf("loading the gateway's Redis function: %v", err)
	}
}

// createChannel writes a channel's meta as a publisher creating it by hand
// does.
func (f *fixture) createChannel(ch string) {
	f.t.Helper()
	err := f.rdb.HSet(f.ctx, f.prefix+"meta:{"+ch+"}",
		"max_len", 1000, "retention_ms", 0, "created_ms", time.Now().UnixMilli()).Err()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) reqKey(ch string) string { return f.prefix + "req:{" + ch + "}" }

// request adds a request entry as the gateway's enqueue does and returns
// key(ch, its ID).
func (f *fixture) request(ch, data string, deadline time.Time) string {
	f.t.Helper()
	id, err := f.rdb.XAdd(f.ctx, &redis.XAddArgs{Stream: f.reqKey(ch), Values: []any{
		"reply_to", f.inbox, "deadline_ms", strconv.FormatInt(deadline.UnixMilli(), 10), "data", data,
	}}).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return key(ch, id)
}

// replies returns the inbox's envelopes.
func (f *fixture) replies() []reply {
	f.t.Helper()
	xs, err := f.rdb.XRange(f.ctx, f.prefix+"ch:{"+f.inbox+"}", "-", "+").Result()
	if err != nil {
		f.t.Fatal(err)
	}
	out := make([]reply, len(xs))
	for i, x := range xs {
		s, _ := x.Values["data"].(string)
		if err := json.Unmarshal([]byte(s), &out[i]); err != nil {
			f.t.Fatalf("inbox entry %s: data %q is not an envelope: %v", x.ID, s, err)
		}
	}
	return out
}

// key names a request: IDs are per channel.
func key(ch, id string) string { return ch + "/" + id }

// waitReplies waits until the inbox holds n envelopes and returns them by
// key(channel, request ID).
func (f *fixture) waitReplies(n int) map[string]reply {
	f.t.Helper()
	var rs []reply
	waitFor(f.t, fmt.Sprintf("%d replies in the inbox", n), func() bool {
		rs = f.replies()
		return len(rs) >= n
	})
	if len(rs) != n {
		f.t.Fatalf("inbox holds %d replies, want %d: %+v", len(rs), n, rs)
	}
	byID := make(map[string]reply, n)
	for _, r := range rs {
		k := key(r.Channel, r.ID)
		if _, dup := byID[k]; dup {
			f.t.Errorf("two replies for request %s", k)
		}
		byID[k] = r
	}
	return byID
}

// pending is how many requests of ch group has delivered and not acked.
func (f *fixture) pending(ch, group string) int64 {
	f.t.Helper()
	p, err := f.rdb.XPending(f.ctx, f.reqKey(ch), group).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	return p.Count
}

// lastDelivered is the group's last-delivered-id on ch's request stream.
func (f *fixture) lastDelivered(ch, group string) string {
	f.t.Helper()
	gs, err := f.rdb.XInfoGroups(f.ctx, f.reqKey(ch)).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, g := range gs {
		if g.Name == group {
			return g.LastDeliveredID
		}
	}
	f.t.Fatalf("no group %q on %s", group, f.reqKey(ch))
	return ""
}

// serve runs ServeRedis until the test ends or stop is called, which
// waits for it to return and reports its error.
func (f *fixture) serve(cfg responder.RedisConfig, h responder.Handler, channels ...string) (stop func() error) {
	f.t.Helper()
	if cfg.Client == nil {
		cfg.Client = f.srv.Client()
	}
	if cfg.Prefix == "" {
		cfg.Prefix = f.prefix
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- responder.ServeRedis(ctx, cfg, h, channels...) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("ServeRedis did not return within 10s of its context's end")
			}
		})
		return err
	}
	f.t.Cleanup(func() {
		if err := stop(); err != nil {
			f.t.Error(err)
		}
	})
	return stop
}

func echo(_ context.Context, r responder.Request) (json.RawMessage, error) { return r.Data, nil }

// waitFor polls cond until it holds, failing t after 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisRoundTrip: requests sent before and after the responder
// started are answered with the documented envelope in the reply_to inbox,
// and acked in the group.
func TestRedisRoundTrip(t *testing.T) {
	f := newFixture(t, "orders", "prices")
	later := time.Now().Add(30 * time.Second)
	early := f.request("orders", `{"n":1}`, later)
	var mu sync.Mutex
	seen := map[string]responder.Request{}
	f.serve(responder.RedisConfig{}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		mu.Lock()
		seen[key(r.Channel, r.ID)] = r
		mu.Unlock()
		if dl, ok := ctx.Deadline(); !ok || !dl.Equal(r.Deadline) {
			t.Errorf("handler context deadline = %v, %v; want the request's %v", dl, ok, r.Deadline)
		}
		return r.Data, nil
	}, "orders", "prices")
	ids := map[string]string{
		early:                                         `{"n":1}`,
		f.request("orders", `{"n":2}`, later):         `{"n":2}`,
		f.request("prices", `[1,2,3]`, later):         `[1,2,3]`,
		f.request("orders", `"not an object"`, later): `"not an object"`,
	}
	got := f.waitReplies(len(ids))
	for id, data := range ids {
		r, ok := got[id]
		switch {
		case !ok:
			t.Errorf("no reply for %s", id)
		case string(r.Data) != data || r.Error != nil:
			t.Errorf("reply to %s = data %s error %v, want data %s", id, r.Data, r.Error, data)
		}
	}
	mu.Lock()
	if len(seen) != len(ids) {
		t.Errorf("handler saw %d requests, want %d", len(seen), len(ids))
	}
	for k, r := range seen {
		if r.Deliveries != 1 || r.Deadline.UnixMilli() != later.UnixMilli() {
			t.Errorf("request %s: handler saw %+v", k, r)
		}
	}
	mu.Unlock()
	for _, ch := range []string{"orders", "prices"} {
		waitFor(t, "acks on "+ch, func() bool { return f.pending(ch, "tslm") == 0 })
	}
}

// TestRedisLeavesGroupOnStop: a worker that stops with nothing held takes
// its consumer out of the group, where Redis would keep it for good (a
// worker named after its host and pid is a new consumer at every start).
func TestRedisLeavesGroupOnStop(t *testing.T) {
	f := newFixture(t, "orders")
	stop := f.serve(responder.RedisConfig{Consumer: "short-lived"}, echo, "orders")
	id := f.request("orders", `1`, time.Now().Add(30*time.Second))
	if got := f.waitReplies(1); got[id].Data == nil {
		t.Fatalf("replies %+v", got)
	}
	waitFor(t, "ack", func() bool { return f.pending("orders", "tslm") == 0 })
	consumers := func() int {
		cs, err := f.rdb.XInfoConsumers(f.ctx, f.reqKey("orders"), "tslm").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(cs)
	}
	if n := consumers(); n != 1 {
		t.Fatalf("%d consumers while serving, want 1", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := consumers(); n != 0 {
		t.Fatalf("%d consumers after the worker stopped, want 0", n)
	}
}

// TestRedisWaitsForRequestStream: a channel that never had a request has
// no request stream; the responder waits for it without creating it
// (XGROUP CREATE without MKSTREAM), then serves the first request.
func TestRedisWaitsForRequestStream(t *testing.T) {
	f := newFixture(t, "orders")
	var calls atomic.Int64
	f.serve(responder.RedisConfig{}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		calls.Add(1)
		return r.Data, nil
	}, "orders", "ghost")
	time.Sleep(300 * time.Millisecond) // several XGROUP CREATE attempts
	for _, ch := range []string{"orders", "ghost"} {
		if n, err := f.rdb.Exists(f.ctx, f.reqKey(ch)).Result(); err != nil || n != 0 {
			t.Errorf("request stream of %s: EXISTS = %d, %v; the responder must not create it", ch, n, err)
		}
	}
	id := f.request("orders", `{"first":true}`, time.Now().Add(time.Minute))
	got := f.waitReplies(1)
	if r := got[id]; string(r.Data) != `{"first":true}` {
		t.Errorf("reply = %+v", r)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
}

// TestRedisRefusal: a *Refusal becomes the envelope's error; any other
// error, a panic and data that is not JSON become a generic internal
// error; an invalid refusal code too.
func TestRedisRefusal(t *testing.T) {
	f := newFixture(t, "orders")
	f.serve(responder.RedisConfig{}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		switch string(r.Data) {
		case `"refuse"`:
			return nil, fmt.Errorf("wrapped: %w", &responder.Refusal{Code: "out_of_stock", Message: "no more widgets"})
		case `"fail"`:
			return nil, errors.New("database password is hunter2")
		case `"panic"`:
			panic("boom")
		case `"bad json"`:
			return json.RawMessage(`{not json`), nil
		case `"bad code"`:
			return nil, &responder.Refusal{Code: "Not Valid!", Message: "x"}
		case `"nil"`:
			return nil, nil
		}
		return r.Data, nil
	}, "orders")
	dl := time.Now().Add(time.Minute)
	refuse := f.request("orders", `"refuse"`, dl)
	internal := []string{
		f.request("orders", `"fail"`, dl),
		f.request("orders", `"panic"`, dl),
		f.request("orders", `"bad json"`, dl),
		f.request("orders", `"bad code"`, dl),
	}
	null := f.request("orders", `"nil"`, dl)
	got := f.waitReplies(6)
	if r := got[refuse]; r.Error == nil || *r.Error != (responder.Refusal{Code: "out_of_stock", Message: "no more widgets"}) || r.Data != nil {
		t.Errorf("refusal reply = %+v (error %v), want error out_of_stock and no data", r, r.Error)
	}
	for _, id := range internal {
		r := got[id]
		if r.Error == nil || r.Error.Code != responder.CodeInternal || r.Data != nil {
			t.Errorf("reply to %s = %+v (error %v), want error internal and no data", id, r, r.Error)
			continue
		}
		if r.Error.Message != "the responder failed to handle the request" {
			t.Errorf("internal error message %q: want the generic one, not the handler's", r.Error.Message)
		}
	}
	if r := got[null]; string(r.Data) != "null" || r.Error != nil {
		t.Errorf("reply to a nil answer = %+v, want data null", r)
	}
	waitFor(t, "acks", func() bool { return f.pending("orders", "tslm") == 0 })
}

// TestRedisExpiredNotHandled: a request past its deadline, or with none,
// is acked without running the handler and without a reply.
func TestRedisExpiredNotHandled(t *testing.T) {
	f := newFixture(t, "orders")
	expired := f.request("orders", `"old"`, time.Now().Add(-time.Second))
	noDeadline, err := f.rdb.XAdd(f.ctx, &redis.XAddArgs{Stream: f.reqKey("orders"), Values: []any{
		"reply_to", f.inbox, "data", `"no deadline"`,
	}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	live := f.request("orders", `"new"`, time.Now().Add(time.Minute))
	var mu sync.Mutex
	var handled []string
	f.serve(responder.RedisConfig{}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		mu.Lock()
		handled = append(handled, key(r.Channel, r.ID))
		mu.Unlock()
		return r.Data, nil
	}, "orders")
	got := f.waitReplies(1)
	if _, ok := got[live]; !ok {
		t.Fatalf("replies %+v, want one for the live request %s", got, live)
	}
	// The live request came after the others: they were read first.
	waitFor(t, "acks", func() bool { return f.pending("orders", "tslm") == 0 })
	if last := f.lastDelivered("orders", "tslm"); key("orders", last) != live {
		t.Errorf("last delivered %s, want %s", last, live)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 1 || handled[0] != live {
		t.Errorf("handled %v, want only %s (not %s, orders/%s)", handled, live, expired, noDeadline)
	}
}

// TestRedisReclaimCrashed: a request taken by a worker that died (read,
// never acked) is taken over by another worker after ReclaimAfter, and
// handed to its handler as a second delivery.
func TestRedisReclaimCrashed(t *testing.T) {
	f := newFixture(t, "orders")
	id := f.request("orders", `"orphan"`, time.Now().Add(time.Minute))
	if err := f.rdb.XGroupCreate(f.ctx, f.reqKey("orders"), "tslm", "0").Err(); err != nil {
		t.Fatal(err)
	}
	xs, err := f.rdb.XReadGroup(f.ctx, &redis.XReadGroupArgs{
		Group: "tslm", Consumer: "crashed", Streams: []string{f.reqKey("orders"), ">"}, Count: 10, Block: -1,
	}).Result()
	if err != nil || len(xs) != 1 || len(xs[0].Messages) != 1 {
		t.Fatalf("crashed worker's read = %+v, %v", xs, err)
	}
	deliveries := make(chan int64, 1)
	f.serve(responder.RedisConfig{Consumer: "survivor", ReclaimAfter: 200 * time.Millisecond, Block: 100 * time.Millisecond},
		func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
			deliveries <- r.Deliveries
			return r.Data, nil
		}, "orders")
	got := f.waitReplies(1)
	if r := got[id]; string(r.Data) != `"orphan"` {
		t.Errorf("reply = %+v", r)
	}
	if d := <-deliveries; d != 2 {
		t.Errorf("Deliveries = %d, want 2", d)
	}
	waitFor(t, "ack", func() bool { return f.pending("orders", "tslm") == 0 })
}

// TestRedisStoppedWorkerHandsOver: a worker whose context ends while its
// handlers run gives their requests up; another worker of the group
// answers them, each once.
func TestRedisStoppedWorkerHandsOver(t *testing.T) {
	f := newFixture(t, "orders")
	started := make(chan string, 10)
	stopA := f.serve(responder.RedisConfig{Consumer: "a", Block: 100 * time.Millisecond},
		func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
			started <- key(r.Channel, r.ID)
			<-ctx.Done() // stuck until its worker stops
			return nil, ctx.Err()
		}, "orders")
	dl := time.Now().Add(time.Minute)
	ids := []string{f.request("orders", `1`, dl), f.request("orders", `2`, dl)}
	for range ids {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("worker a never started its handlers")
		}
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.replies()); n != 0 {
		t.Fatalf("a stopped worker replied %d times", n)
	}
	// ReclaimAfter is long: only the release lets b take over in time.
	var calls atomic.Int64
	f.serve(responder.RedisConfig{Consumer: "b", Block: 100 * time.Millisecond, ReclaimAfter: time.Hour},
		func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
			calls.Add(1)
			return json.RawMessage(`"b:` + key(r.Channel, r.ID) + `"`), nil
		}, "orders")
	got := f.waitReplies(2)
	for _, id := range ids {
		if r := got[id]; string(r.Data) != `"b:`+id+`"` {
			t.Errorf("reply to %s = %+v, want b's", id, r)
		}
	}
	waitFor(t, "acks", func() bool { return f.pending("orders", "tslm") == 0 })
	if n := calls.Load(); n != 2 {
		t.Errorf("b's handler ran %d times, want 2", n)
	}
}

// TestRedisSlowHandlerKept: a handler slower than ReclaimAfter keeps its
// request: its worker claims it again while it runs, so another worker
// does not take it over.
func TestRedisSlowHandlerKept(t *testing.T) {
	f := newFixture(t, "orders")
	var calls atomic.Int64
	slow := func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		calls.Add(1)
		select {
		case <-time.After(4 * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return r.Data, nil
	}
	// Twice ReclaimAfter, with a touch every ReclaimAfter/3: a worker
	// stalled a whole second by a loaded machine still keeps it.
	cfg := responder.RedisConfig{ReclaimAfter: 2 * time.Second, Block: 100 * time.Millisecond}
	cfg.Consumer = "a"
	f.serve(cfg, slow, "orders")
	cfg.Consumer = "b"
	f.serve(cfg, slow, "orders")
	id := f.request("orders", `"slow"`, time.Now().Add(time.Minute))
	got := f.waitReplies(1)
	if _, ok := got[id]; !ok {
		t.Fatalf("replies %+v", got)
	}
	waitFor(t, "ack", func() bool { return f.pending("orders", "tslm") == 0 })
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1: the slow request was taken over", n)
	}
}

// TestRedisConcurrency: at most Concurrency handlers run at once, across
// channels, and every request is answered.
func TestRedisConcurrency(t *testing.T) {
	f := newFixture(t, "orders", "prices")
	var running, peak atomic.Int64
	f.serve(responder.RedisConfig{Concurrency: 2, Block: 100 * time.Millisecond},
		func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(50 * time.Millisecond)
			return r.Data, nil
		}, "orders", "prices")
	dl := time.Now().Add(time.Minute)
	for i := range 10 {
		f.request([]string{"orders", "prices"}[i%2], strconv.Itoa(i), dl)
	}
	f.waitReplies(10)
	if p := peak.Load(); p > 2 || p < 1 {
		t.Errorf("peak concurrent handlers = %d, want 1..2", p)
	}
}

// TestRedisDeletedChannel: a channel deleted while served (its request
// stream and group go) is served again once it has requests again.
func TestRedisDeletedChannel(t *testing.T) {
	f := newFixture(t, "orders")
	f.serve(responder.RedisConfig{Block: 100 * time.Millisecond}, echo, "orders")
	dl := time.Now().Add(time.Minute)
	first := f.request("orders", `1`, dl)
	f.waitReplies(1)
	waitFor(t, "ack", func() bool { return f.pending("orders", "tslm") == 0 })
	if err := f.rdb.Del(f.ctx, f.reqKey("orders")).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the responder notices NOGROUP
	second := f.request("orders", `2`, dl)
	got := f.waitReplies(2)
	if _, ok := got[first]; !ok {
		t.Errorf("no reply to %s", first)
	}
	if r := got[second]; string(r.Data) != `2` {
		t.Errorf("reply to the request after the delete = %+v", r)
	}
}

// TestRedisInboxGone: a reply to an expired inbox is not written (no
// garbage stream is created) and the request is acked all the same,
// whether tslm_publish refused it (no such channel) or, without the
// function, XADD NOMKSTREAM did.
func TestRedisInboxGone(t *testing.T) {
	for _, function := range []bool{true, false} {
		t.Run(fmt.Sprintf("function=%v", function), func(t *testing.T) {
			f := newFixture(t, "orders")
			if !function {
				f.deleteFunction()
			}
			f.serve(responder.RedisConfig{Block: 100 * time.Millisecond}, echo, "orders")
			if err := f.rdb.Del(f.ctx, f.prefix+"ch:{"+f.inbox+"}", f.prefix+"meta:{"+f.inbox+"}").Err(); err != nil {
				t.Fatal(err)
			}
			f.request("orders", `1`, time.Now().Add(time.Minute))
			waitFor(t, "the request delivered and acked", func() bool {
				gs, err := f.rdb.XInfoGroups(f.ctx, f.reqKey("orders")).Result()
				return err == nil && len(gs) == 1 && gs[0].EntriesRead == 1 && gs[0].Pending == 0
			})
			n, err := f.rdb.Exists(f.ctx, f.prefix+"ch:{"+f.inbox+"}", f.prefix+"meta:{"+f.inbox+"}").Result()
			if err != nil || n != 0 {
				t.Errorf("expired inbox: EXISTS = %d, %v; want it left gone", n, err)
			}
		})
	}
}

// deleteFunction removes the library of tslm_publish, as on a Redis where
// no gateway could load it.
func (f *fixture) deleteFunction() {
	f.t.Helper()
	if err := f.rdb.FunctionDelete(f.ctx, backlog.FunctionLibrary).Err(); err != nil {
		f.t.Fatal(err)
	}
}

// setInbox rewrites the inbox's meta as the gateway makes a session's:
// max_len replies kept, expiring after expiry without an append.
func (f *fixture) setInbox(maxLen int, expiry time.Duration) {
	f.t.Helper()
	err := f.rdb.HSet(f.ctx, f.prefix+"meta:{"+f.inbox+"}", "max_len", maxLen, "expiry_ms", expiry.Milliseconds()).Err()
	if err != nil {
		f.t.Fatal(err)
	}
}

// notifications subscribes to the inbox's notification channel, on which
// the gateway's followers learn of each append, and returns the payloads
// received.
func (f *fixture) notifications() <-chan string {
	f.t.Helper()
	ps := f.rdb.SSubscribe(f.ctx, f.prefix+"n:{"+f.inbox+"}")
	f.t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(f.ctx); err != nil { // the confirmation
		f.t.Fatal(err)
	}
	out := make(chan string, 100)
	go func() {
		for m := range ps.Channel() {
			out <- m.Payload
		}
	}()
	return out
}

// awaitAcks waits until n requests of ch were read and acked in group tslm.
func (f *fixture) awaitAcks(ch string, n int64) {
	f.t.Helper()
	waitFor(f.t, fmt.Sprintf("%d requests of %s acked", n, ch), func() bool {
		gs, err := f.rdb.XInfoGroups(f.ctx, f.reqKey(ch)).Result()
		return err == nil && len(gs) == 1 && gs[0].EntriesRead == n && gs[0].Pending == 0
	})
}

// TestRedisReplyAsGatewayAppends: a reply is the gateway's own append
// (tslm_publish): it notifies the inbox's followers, so that the gateway
// delivers it without waiting for its poll, trims the inbox to its
// max_len exactly and restarts the inbox's expiry countdown. A plain XADD
// does none of the three.
func TestRedisReplyAsGatewayAppends(t *testing.T) {
	f := newFixture(t, "orders")
	f.setInbox(2, time.Hour)
	inboxKeys := []string{f.prefix + "meta:{" + f.inbox + "}", f.prefix + "ch:{" + f.inbox + "}"}
	for _, k := range inboxKeys {
		if err := f.rdb.PExpire(f.ctx, k, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	notified := f.notifications()
	f.serve(responder.RedisConfig{Block: 100 * time.Millisecond}, echo, "orders")
	dl := time.Now().Add(time.Minute)
	var want []string
	for i := range 3 {
		// One at a time, so that the notifications come in request order.
		want = append(want, f.request("orders", strconv.Itoa(i), dl))
		f.awaitAcks("orders", int64(i+1))
	}
	for i, id := range want {
		var payload string
		select {
		case payload = <-notified:
		case <-time.After(10 * time.Second):
			t.Fatalf("notification %d of 3 never came: the reply was not appended with tslm_publish", i+1)
		}
		// "<id> <previous id> <data>"
		parts := strings.SplitN(payload, " ", 3)
		var r reply
		if len(parts) != 3 || json.Unmarshal([]byte(parts[2]), &r) != nil || key(r.Channel, r.ID) != id {
			t.Errorf("notification %q: want one for the reply to %s", payload, id)
		}
	}
	if n, err := f.rdb.XLen(f.ctx, inboxKeys[1]).Result(); err != nil || n != 2 {
		t.Errorf("inbox holds %d entries (%v), want exactly its max_len 2", n, err)
	}
	for _, k := range inboxKeys {
		if ttl, err := f.rdb.PTTL(f.ctx, k).Result(); err != nil || ttl < 30*time.Minute {
			t.Errorf("%s: PTTL %v (%v), want its countdown restarted to about an hour", k, ttl, err)
		}
	}
}

// TestRedisReplyWithoutFunction: on a Redis without tslm_publish, replies
// are appended plainly (XADD, trimmed approximately: the max_len of 1 is
// not kept) and still written, with one warning for them all; once the
// function is there again, replies use it (the inbox is trimmed to 1).
func TestRedisReplyWithoutFunction(t *testing.T) {
	responder.SetFunctionRetry(t, 50*time.Millisecond)
	logs := captureLogs(t)
	f := newFixture(t, "orders")
	f.setInbox(1, 0)
	f.deleteFunction()
	f.serve(responder.RedisConfig{Block: 100 * time.Millisecond}, echo, "orders")
	dl := time.Now().Add(time.Minute)
	want := []string{f.request("orders", `1`, dl), f.request("orders", `2`, dl), f.request("orders", `3`, dl)}
	got := f.waitReplies(len(want))
	for _, id := range want {
		if _, ok := got[id]; !ok {
			t.Errorf("no reply to %s", id)
		}
	}
	f.awaitAcks("orders", 3)
	if n := logs.count("cannot use the Redis function tslm_publish"); n != 1 {
		t.Errorf("%d warnings about the missing function, want 1:\n%s", n, logs)
	}

	loadFunction(t, f.ctx, f.rdb)
	inbox := f.prefix + "ch:{" + f.inbox + "}"
	sent := int64(3)
	waitFor(t, "a reply appended with tslm_publish again", func() bool {
		f.request("orders", `"again"`, dl)
		sent++
		f.awaitAcks("orders", sent)
		n, err := f.rdb.XLen(f.ctx, inbox).Result()
		return err == nil && n == 1
	})
	if n := logs.count("is available again"); n != 1 {
		t.Errorf("%d notes that the function is back, want 1:\n%s", n, logs)
	}
}

// TestRedisReplyACLWithoutChannels: an ACL user without pub/sub channels
// (Redis 7's default for a new user) cannot run tslm_publish to its end:
// its SPUBLISH is refused after its XADD. Replies then fall back to the
// plain XADD, with one warning; every request is answered and acked, and
// not left pending to be handled again.
func TestRedisReplyACLWithoutChannels(t *testing.T) {
	logs := captureLogs(t)
	f := newFixture(t, "orders")
	if err := f.rdb.Do(f.ctx, "ACL", "SETUSER", "app", "on", ">secret", "resetchannels", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	app := redis.NewClient(&redis.Options{Addr: f.srv.Addr(), Username: "app", Password: "secret"})
	t.Cleanup(func() { app.Close() })
	f.serve(responder.RedisConfig{Client: app, Block: 100 * time.Millisecond}, echo, "orders")
	dl := time.Now().Add(time.Minute)
	want := []string{f.request("orders", `1`, dl), f.request("orders", `2`, dl), f.request("orders", `3`, dl)}
	f.awaitAcks("orders", 3)
	got := map[string]int{}
	for _, r := range f.replies() {
		got[key(r.Channel, r.ID)]++
	}
	for _, id := range want {
		// Twice when the function stored it before its SPUBLISH failed.
		if n := got[id]; n < 1 || n > 2 {
			t.Errorf("%d replies to %s in the inbox, want 1, or 2 after a failed FCALL", n, id)
		}
	}
	if n := logs.count("cannot use the Redis function tslm_publish"); n != 1 {
		t.Errorf("%d warnings about the function, want 1:\n%s", n, logs)
	}
}

// logBuffer holds what slog.Default wrote.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) count(s string) int { return strings.Count(l.String(), s) }

// captureLogs makes slog.Default, which ServeRedis logs to, write into the
// buffer returned until t ends. Call it before serve, so that the
// responder has stopped when the default is put back.
func captureLogs(t *testing.T) *logBuffer {
	l := &logBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() { slog.SetDefault(old) })
	return l
}

// TestRedisCancelReturns: ServeRedis returns nil soon after its context
// ends, with a handler running that heeds its context.
func TestRedisCancelReturns(t *testing.T) {
	f := newFixture(t, "orders")
	started := make(chan struct{})
	stop := f.serve(responder.RedisConfig{}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}, "orders", "idle")
	f.request("orders", `1`, time.Now().Add(time.Minute))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never started")
	}
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Block (1s) bounds the wait for a blocked read; allow for a loaded
	// machine.
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("ServeRedis took %v to return after cancel", d)
	}
}

// TestRedisConfigErrors: mistakes are reported at once.
func TestRedisConfigErrors(t *testing.T) {
	ctx := t.Context()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { client.Close() })
	cases := []struct {
		name     string
		cfg      responder.RedisConfig
		h        responder.Handler
		channels []string
	}{
		{"no client", responder.RedisConfig{}, echo, []string{"orders"}},
		{"no channel", responder.RedisConfig{Client: client}, echo, nil},
		{"bad channel", responder.RedisConfig{Client: client}, echo, []string{"a b"}},
		{"reserved channel", responder.RedisConfig{Client: client}, echo, []string{"_inbox.x"}},
		{"duplicate channel", responder.RedisConfig{Client: client}, echo, []string{"a", "a"}},
		{"nil handler", responder.RedisConfig{Client: client}, nil, []string{"orders"}},
		{"brace in prefix", responder.RedisConfig{Client: client, Prefix: "a{"}, echo, []string{"orders"}},
		{"space in prefix", responder.RedisConfig{Client: client, Prefix: "a b:"}, echo, []string{"orders"}},
		{"reserved consumer", responder.RedisConfig{Client: client, Consumer: "released"}, echo, []string{"orders"}},
		{"block 0", responder.RedisConfig{Client: client, Block: time.Microsecond}, echo, []string{"orders"}},
	}
	for _, c := range cases {
		if err := responder.ServeRedis(ctx, c.cfg, c.h, c.channels...); err == nil {
			t.Errorf("%s: ServeRedis returned nil, want an error", c.name)
		}
	}
}

// TestRedisAnswerDuringShutdown: a handler that still answers after its
// worker's context ended has its reply written and its request acked.
func TestRedisAnswerDuringShutdown(t *testing.T) {
	f := newFixture(t, "orders")
	started := make(chan struct{})
	stop := f.serve(responder.RedisConfig{Block: 100 * time.Millisecond}, func(ctx context.Context, r responder.Request) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return json.RawMessage(`"finished anyway"`), nil
	}, "orders")
	id := f.request("orders", `1`, time.Now().Add(time.Minute))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never started")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// ServeRedis has returned: the reply and the ack are done.
	if got := f.waitReplies(1); string(got[id].Data) != `"finished anyway"` {
		t.Errorf("replies %+v", got)
	}
	if n := f.pending("orders", "tslm"); n != 0 {
		t.Errorf("%d requests pending after the answer, want 0", n)
	}
}

// TestRedisClusterReply: on a Cluster, a reply's FCALL names the inbox's
// keys, which share its hash tag, so the cluster client sends it to the
// inbox's master, here another than the request queue's. The inbox is
// trimmed to its max_len 1 exactly: the reply went through tslm_publish.
func TestRedisClusterReply(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	rdb := c.Client()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	loadFunction(t, ctx, rdb)
	const prefix = "tslm:"
	reqKey := prefix + "req:{orders}"
	var inbox string
	for i := 0; inbox == ""; i++ {
		name := fmt.Sprintf("_inbox.%032x", i)
		if c.MasterOf(c.Slot(prefix+"ch:{"+name+"}")) != c.MasterOf(c.Slot(reqKey)) {
			inbox = name
		}
	}
	for ch, maxLen := range map[string]int{"orders": 1000, inbox: 1} {
		err := rdb.HSet(ctx, prefix+"meta:{"+ch+"}", "max_len", maxLen, "retention_ms", 0, "created_ms", time.Now().UnixMilli()).Err()
		if err != nil {
			t.Fatal(err)
		}
	}
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- responder.ServeRedis(serveCtx, responder.RedisConfig{Client: rdb, Block: 100 * time.Millisecond}, echo, "orders")
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	dl := strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)
	for i := range 2 {
		err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: reqKey, Values: []any{"reply_to", inbox, "deadline_ms", dl, "data", strconv.Itoa(i)}}).Err()
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both requests acked", func() bool {
		gs, err := rdb.XInfoGroups(ctx, reqKey).Result()
		return err == nil && len(gs) == 1 && gs[0].EntriesRead == 2 && gs[0].Pending == 0
	})
	xs, err := rdb.XRange(ctx, prefix+"ch:{"+inbox+"}", "-", "+").Result()
	if err != nil || len(xs) != 1 {
		t.Fatalf("inbox holds %v (%v), want exactly one reply", xs, err)
	}
	var r reply
	if s, _ := xs[0].Values["data"].(string); json.Unmarshal([]byte(s), &r) != nil || r.Channel != "orders" {
		t.Errorf("inbox entry %v: want a reply envelope for orders", xs[0].Values)
	}
}
