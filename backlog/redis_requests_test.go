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
