package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/backlog/backlogtest"
	"github.com/tslm/tslm/internal/redistest"
)

func TestRedisRequestsConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	backlogtest.RunRequests(t, func(t *testing.T, opts backlogtest.RequestsOptions) backlogtest.RequestLog {
		return newRedis(t, srv, backlog.RedisConfig{MaxRequests: opts.MaxRequests, Now: opts.Now})
	})
}

// waitBlocked polls until n clients of srv are blocked, so that a test
// acts on a Claim that really sits in XREADGROUP BLOCK.
func waitBlocked(t *testing.T, ctx context.Context, srv *redistest.Server, n int) {
	t.Helper()
	want := fmt.Sprintf("blocked_clients:%d\r", n)
	retry(t, ctx, "waiting for a blocked client", func() error {
		info, err := srv.Client().Info(ctx, "clients").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, want) {
			return errors.New("not blocked yet")
		}
		return nil
	})
}

// TestRedisClaimBlocked: a Claim blocked in XREADGROUP ends on cancel
// (CLIENT UNBLOCK) and on Delete (Redis fails the read when the key goes,
// and the group cannot be created again on a missing channel).
func TestRedisClaimBlocked(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	prefix := fmt.Sprintf("reqtest%d:", prefixSeq.Add(1))
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix})
	create(t, ctx, r, "orders", backlog.ChannelConfig{})
	claim := func(ctx context.Context) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := r.Claim(ctx, "orders", "g", "c", 1, time.Minute)
			done <- err
		}()
		return done
	}
	cctx, cancel := context.WithCancel(ctx)
	done := claim(cctx)
	waitBlocked(t, ctx, srv, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Claim: %v, want context.Canceled", err)
	}
	done = claim(ctx)
	waitBlocked(t, ctx, srv, 1)
	if err := r.Delete(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, backlog.ErrNotFound) {
		t.Errorf("Claim blocked across Delete: %v, want ErrNotFound", err)
	}
	if n, err := srv.Client().Exists(ctx, prefix+"req:{orders}").Result(); err != nil || n != 0 {
		t.Errorf("request queue after Delete: EXISTS = %d, %v; want 0", n, err)
	}
}

// TestRedisRequestsTrimmedOnAck: the documented layout, and entries go
// once every group acked them.
func TestRedisRequestsTrimmedOnAck(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	prefix := fmt.Sprintf("reqtest%d:", prefixSeq.Add(1))
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix})
	create(t, ctx, r, "orders", backlog.ChannelConfig{})
	key := prefix + "req:{orders}"
	req := backlog.Request{ReplyTo: "inbox:1", Deadline: time.Now().Add(time.Minute), Data: []byte(`{"a":1}`)}
	id, err := r.Enqueue(ctx, "orders", req)
	if err != nil {
		t.Fatal(err)
	}
	xs, err := srv.Client().XRange(ctx, key, "-", "+").Result()
	if err != nil || len(xs) != 1 || xs[0].ID != id.String() ||
		xs[0].Values["reply_to"] != "inbox:1" || xs[0].Values["data"] != `{"a":1}` ||
		xs[0].Values["deadline_ms"] != fmt.Sprint(req.Deadline.UnixMilli()) {
		t.Fatalf("stream = %+v, %v", xs, err)
	}
	for _, g := range []string{"a", "b"} {
		if reqs, err := r.Claim(ctx, "orders", g, "c", 10, 0); err != nil || len(reqs) != 1 {
			t.Fatalf("Claim(%s) = %+v, %v", g, reqs, err)
		}
	}
	length := func() int64 {
		t.Helper()
		n, err := srv.Client().XLen(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if _, err := r.Ack(ctx, "orders", "a", id); err != nil {
		t.Fatal(err)
	}
	if n := length(); n != 1 {
		t.Errorf("length after one group's ack = %d, want 1", n)
	}
	if _, err := r.Ack(ctx, "orders", "b", id); err != nil {
		t.Fatal(err)
	}
	if n := length(); n != 0 {
		t.Errorf("length after every group's ack = %d, want 0", n)
	}
}

// TestRedisReleaseLayout: a released request is pending on the consumer
// "released", idle for 30 days with its delivery count unchanged, so that
// an app's own XAUTOCLAIM with any smaller min idle takes it.
func TestRedisReleaseLayout(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	prefix := fmt.Sprintf("reqtest%d:", prefixSeq.Add(1))
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix})
	c := srv.Client()
	create(t, ctx, r, "orders", backlog.ChannelConfig{})
	key := prefix + "req:{orders}"
	id, err := r.Enqueue(ctx, "orders", backlog.Request{ReplyTo: "inbox:1", Deadline: time.Now().Add(time.Minute), Data: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if reqs, err := r.Claim(ctx, "orders", "tslm", "replica.1", 1, 0); err != nil || len(reqs) != 1 {
		t.Fatalf("Claim = %+v, %v", reqs, err)
	}
	if n, err := r.Release(ctx, "orders", "tslm", id); err != nil || n != 1 {
		t.Fatalf("Release = %d, %v; want 1", n, err)
	}
	p, err := c.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: key, Group: "tslm", Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(p) != 1 || p[0].ID != id.String() || p[0].Consumer != "released" ||
		p[0].RetryCount != 1 || p[0].Idle < 30*24*time.Hour {
		t.Fatalf("XPENDING after Release = %+v, %v; want %v on consumer released, idle 30 days, delivered once", p, err, id)
	}
	ids, _, err := c.XAutoClaimJustID(ctx, &redis.XAutoClaimArgs{Stream: key, Group: "tslm", Consumer: "app-1", MinIdle: 24 * time.Hour, Start: "0-0", Count: 10}).Result()
	if err != nil || len(ids) != 1 || ids[0] != id.String() {
		t.Fatalf("an app's XAUTOCLAIM with min idle 1 day = %v, %v; want %v", ids, err, id)
	}
}

// TestRedisDocumentedAppFlow runs the commands docs/redis.md gives apps
// ("Requests and replies") against queues and inboxes the backlog made.
func TestRedisDocumentedAppFlow(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	prefix := fmt.Sprintf("reqtest%d:", prefixSeq.Add(1))
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix})
	c := srv.Client()
	const inbox = "_inbox.0123456789abcdef0123456789abcdef"
	create(t, ctx, r, "orders", backlog.ChannelConfig{})
	create(t, ctx, r, inbox, backlog.ChannelConfig{MaxLen: 1000, Expiry: time.Minute})
	queue := prefix + "req:{orders}"
	do := func(args ...any) any {
		t.Helper()
		v, err := c.Do(ctx, args...).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("%v: %v", args, err)
		}
		return v
	}

	// The gateway's group exists already: the app's create says BUSYGROUP.
	if _, err := r.Claim(ctx, "orders", "tslm", "replica.1", 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, "XGROUP", "CREATE", queue, "tslm", "0", "MKSTREAM").Err(); !redis.HasErrorPrefix(err, "BUSYGROUP") {
		t.Fatalf("XGROUP CREATE of the existing group: %v, want BUSYGROUP", err)
	}
	live, err := r.Enqueue(ctx, "orders", backlog.Request{ReplyTo: inbox, Deadline: time.Now().Add(time.Minute), Data: []byte(`{"sku":42}`)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "tslm", Consumer: "worker-1", Streams: []string{queue, ">"}, Count: 16, Block: time.Second}).Result()
	if err != nil || len(res) != 1 || len(res[0].Messages) != 1 {
		t.Fatalf("XREADGROUP = %+v, %v; want the request", res, err)
	}
	e := res[0].Messages[0]
	if e.ID != live.String() || e.Values["reply_to"] != inbox || e.Values["data"] != `{"sku":42}` {
		t.Fatalf("entry = %+v, want request %v to %s", e, live, inbox)
	}
	envelope := fmt.Sprintf(`{"channel":"orders","id":"%s","data":{"ok":true}}`, e.ID)
	replyID := do("XADD", prefix+"ch:{"+inbox+"}", "NOMKSTREAM", "MAXLEN", "~", "1000", "*", "data", envelope)
	if n := do("XACK", queue, "tslm", e.ID); n != int64(1) {
		t.Errorf("XACK = %v, want 1", n)
	}
	page, err := r.Range(ctx, inbox, backlog.Zero, 10)
	if err != nil || len(page.Messages) != 1 || page.Messages[0].ID.String() != replyID || string(page.Messages[0].Data) != envelope {
		t.Fatalf("inbox = %+v, %v; want the reply %v", page, err, replyID)
	}

	// A worker that took a request and died: its request is released (as
	// when a WebSocket app leaves) and the app's XAUTOCLAIM takes it.
	id, err := r.Enqueue(ctx, "orders", backlog.Request{ReplyTo: inbox, Deadline: time.Now().Add(time.Minute), Data: []byte("2")})
	if err != nil {
		t.Fatal(err)
	}
	if reqs, err := r.Claim(ctx, "orders", "tslm", "replica.1", 1, 0); err != nil || len(reqs) != 1 {
		t.Fatalf("Claim = %+v, %v", reqs, err)
	}
	if v := do("XAUTOCLAIM", queue, "tslm", "worker-1", "10000", "0-0", "COUNT", "16"); len(v.([]any)[1].([]any)) != 0 {
		t.Fatalf("XAUTOCLAIM before the release = %v, want nothing", v)
	}
	if n, err := r.Release(ctx, "orders", "tslm", id); err != nil || n != 1 {
		t.Fatalf("Release = %d, %v", n, err)
	}
	v := do("XAUTOCLAIM", queue, "tslm", "worker-1", "10000", "0-0", "COUNT", "16").([]any)
	if got := v[1].([]any); len(got) != 1 || got[0].([]any)[0] != id.String() {
		t.Fatalf("XAUTOCLAIM after the release = %v, want %v", v, id)
	}
}

// TestRedisLeaveDeletesConsumer: Redis keeps every consumer a group ever
// saw, so consumers of apps that come and go would pile up; Leave takes
// one out of XINFO CONSUMERS once it holds nothing.
func TestRedisLeaveDeletesConsumer(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	prefix := fmt.Sprintf("reqtest%d:", prefixSeq.Add(1))
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix})
	create(t, ctx, r, "orders", backlog.ChannelConfig{})
	consumers := func() []string {
		t.Helper()
		cs, err := srv.Client().XInfoConsumers(ctx, prefix+"req:{orders}", "g").Result()
		if err != nil {
			t.Fatal(err)
		}
		names := make([]string, len(cs))
		for i, c := range cs {
			names[i] = c.Name
		}
		return names
	}
	var held [2]backlog.ID
	for i, consumer := range []string{"app.1", "app.2"} {
		if _, err := r.Enqueue(ctx, "orders", backlog.Request{ReplyTo: "_inbox.x", Deadline: time.Now().Add(time.Minute), Data: []byte("1")}); err != nil {
			t.Fatal(err)
		}
		reqs, err := r.Claim(ctx, "orders", "g", consumer, 1, 0)
		if err != nil || len(reqs) != 1 {
			t.Fatalf("Claim = %v, %v", reqs, err)
		}
		held[i] = reqs[0].ID
	}
	if n, err := r.Release(ctx, "orders", "g", held[1]); err != nil || n != 1 {
		t.Fatalf("Release = %d, %v", n, err)
	}
	if got := strings.Join(consumers(), ","); got != "app.1,app.2,released" {
		t.Fatalf("consumers %s, want app.1,app.2,released", got)
	}
	if gone, err := r.Leave(ctx, "orders", "g", "app.2"); err != nil || !gone {
		t.Fatalf("Leave(app.2) = %v, %v", gone, err)
	}
	if gone, err := r.Leave(ctx, "orders", "g", "app.1"); err != nil || gone {
		t.Fatalf("Leave(app.1 holding a request) = %v, %v; want it kept", gone, err)
	}
	if got := strings.Join(consumers(), ","); got != "app.1,released" {
		t.Fatalf("consumers %s, want app.1 and released", got)
	}
}

// TestRedisClaimAfterRestart: the connection a blocking Claim keeps for
// the next died with the server; the next blocking Claim takes another
// rather than failing.
func TestRedisClaimAfterRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	if !srv.CanRestart() {
		t.Skip("needs a restartable redis-server")
	}
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{})
	create(t, ctx, r, "orders", backlog.ChannelConfig{})
	if reqs, err := r.Claim(ctx, "orders", "g", "c", 1, time.Millisecond); err != nil || len(reqs) != 0 {
		t.Fatalf("Claim of an empty queue = %v, %v", reqs, err)
	}
	srv.Restart()
	retry(t, ctx, "Enqueue after restart", func() error {
		_, err := r.Enqueue(ctx, "orders", backlog.Request{ReplyTo: "inbox", Deadline: time.Now().Add(time.Minute), Data: []byte("{}")})
		return err
	})
	if reqs, err := r.Claim(ctx, "orders", "g", "c", 1, time.Minute); err != nil || len(reqs) != 1 {
		t.Fatalf("blocking Claim after a restart = %v, %v; want the request", reqs, err)
	}
}
