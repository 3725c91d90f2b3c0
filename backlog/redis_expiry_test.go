package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// TestRedisExpiryLayout: the documented layout of an expiring channel.
// Its meta (with expiry_ms), its stream (made empty at once, as if it never
// held anything) and its request queue carry one TTL, which Create and
// Append restart; channels without expiry carry none.
func TestRedisExpiryLayout(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	prefix := fmt.Sprintf("exptest%d:", prefixSeq.Add(1))
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix})
	c := srv.Client()
	meta, stream, req := prefix+"meta:{inbox}", prefix+"ch:{inbox}", prefix+"req:{inbox}"
	const expiry = time.Hour
	pttl := func(key string) time.Duration {
		t.Helper()
		d, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// wantTTL checks that every key carries the TTL, restarted lately:
	// more than a minute short of the expiry would mean no restart.
	wantTTL := func(what string, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if d := pttl(k); d <= expiry-time.Minute || d > expiry {
				t.Errorf("%s: PTTL %s = %v, want about %v", what, k, d, expiry)
			}
		}
	}

	create(t, ctx, r, "inbox", backlog.ChannelConfig{MaxLen: 10, Expiry: expiry})
	if v, err := c.HGet(ctx, meta, "expiry_ms").Result(); err != nil || v != "3600000" {
		t.Errorf("meta expiry_ms = %q, %v; want 3600000", v, err)
	}
	wantTTL("after Create", meta, stream)
	xi, err := c.XInfoStream(ctx, stream).Result()
	if err != nil {
		t.Fatalf("XINFO STREAM of a new expiring channel: %v", err)
	}
	if xi.Length != 0 || xi.LastGeneratedID != "0-0" || xi.EntriesAdded != 0 || xi.MaxDeletedEntryID != "0-0" {
		t.Errorf("new expiring stream = %+v, want empty, last id 0-0, nothing ever added or deleted", xi)
	}

	// The request queue a Claim or Enqueue makes gets the channel's TTL.
	if _, err := r.Claim(ctx, "inbox", "g", "c", 1, 0); err != nil {
		t.Fatal(err)
	}
	wantTTL("after a Claim made the queue", req)
	if err := c.PExpire(ctx, meta, 30*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Enqueue(ctx, "inbox", backlog.Request{ReplyTo: "x", Deadline: time.Now().Add(time.Minute), Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if d := pttl(req); d > 30*time.Minute {
		t.Errorf("PTTL of the queue after Enqueue = %v, want the meta's (an Enqueue restarts no countdown)", d)
	}

	// Create of the existing channel and appends restart the countdown
	// of all three keys.
	for _, k := range []string{meta, stream, req} {
		if err := c.PExpire(ctx, k, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if created, err := r.Create(ctx, "inbox", backlog.ChannelConfig{}); err != nil || created {
		t.Fatalf("Create of the existing channel = %v, %v", created, err)
	}
	wantTTL("after Create of the existing channel", meta, stream, req)
	for _, appendOne := range []func() error{
		func() error { _, err := r.Append(ctx, "inbox", []byte("1")); return err },
		func() error {
			_, _, err := r.AppendIdempotent(ctx, "inbox", []byte("1"), backlog.Idempotency{Key: "k", Window: time.Minute})
			return err
		},
	} {
		for _, k := range []string{meta, stream, req} {
			if err := c.PExpire(ctx, k, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := appendOne(); err != nil {
			t.Fatal(err)
		}
		wantTTL("after an append", meta, stream, req)
	}
	info, err := r.Info(ctx, "inbox")
	if err != nil || info.Config.Expiry != expiry || info.Config.MaxLen != 10 {
		t.Errorf("Info = %+v, %v; want the first config with Expiry %v", info, err, expiry)
	}

	// Deleted and created again with an expiry: the tombstone stream
	// takes the channel's TTL instead of the tombstone's.
	if err := r.Delete(ctx, "inbox"); err != nil {
		t.Fatal(err)
	}
	create(t, ctx, r, "inbox", backlog.ChannelConfig{Expiry: expiry})
	wantTTL("after Delete and Create", meta, stream)

	// Without expiry: no TTL, and no stream before the first message.
	create(t, ctx, r, "plain", backlog.ChannelConfig{})
	if _, err := r.Claim(ctx, "plain", "g", "c", 1, 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{prefix + "meta:{plain}", prefix + "req:{plain}"} {
		if d := pttl(k); d != -1 {
			t.Errorf("PTTL %s of a channel without expiry = %v, want none (-1)", k, d)
		}
	}
	if n, err := c.Exists(ctx, prefix+"ch:{plain}").Result(); err != nil || n != 0 {
		t.Errorf("stream of a new channel without expiry: EXISTS = %d, %v; want 0", n, err)
	}
	mustAppendOne(t, ctx, r, "plain")
	if d := pttl(prefix + "ch:{plain}"); d != -1 {
		t.Errorf("PTTL of a stream without expiry = %v, want none (-1)", d)
	}
}

func mustAppendOne(t *testing.T, ctx context.Context, l backlog.Log, ch string) backlog.ID {
	t.Helper()
	id, err := l.Append(ctx, ch, []byte("1"))
	if err != nil {
		t.Fatalf("Append(%s): %v", ch, err)
	}
	return id
}

// TestRedisExpiredInboxAndReply: what a Redis app replying to an inbox
// relies on. Its XADD ... NOMKSTREAM lands while the inbox lives, without
// restarting its countdown (a stream keeps its TTL across XADD), and makes
// nothing once the inbox expired, along with its queue.
func TestRedisExpiredInboxAndReply(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	prefix := fmt.Sprintf("exptest%d:", prefixSeq.Add(1))
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix})
	c := srv.Client()
	const ch = "_inbox.0123456789abcdef0123456789abcdef"
	stream := prefix + "ch:{" + ch + "}"
	create(t, ctx, r, ch, backlog.ChannelConfig{MaxLen: 1000, Expiry: 300 * time.Millisecond})
	if _, err := r.Claim(ctx, ch, "g", "c", 1, 0); err != nil { // makes the queue
		t.Fatal(err)
	}
	reply := `{"channel":"orders","id":"1-0","data":{"ok":true}}`
	id, err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, NoMkStream: true, MaxLen: 1000, Approx: true, Values: []any{"data", reply}}).Result()
	if err != nil {
		t.Fatalf("reply XADD to a live inbox: %v", err)
	}
	if d, err := c.PTTL(ctx, stream).Result(); err != nil || d <= 0 || d > 300*time.Millisecond {
		t.Errorf("PTTL of the inbox after a reply = %v, %v; want its TTL kept", d, err)
	}
	page, err := r.Range(ctx, ch, backlog.Zero, 10)
	if err != nil || !page.Continuous || len(page.Messages) != 1 || page.Messages[0].ID.String() != id || string(page.Messages[0].Data) != reply {
		t.Fatalf("inbox after the reply = %+v, %v; want the reply alone, continuous", page, err)
	}
	retry(t, ctx, "waiting for the inbox to expire", func() error {
		if _, err := r.Info(ctx, ch); !errors.Is(err, backlog.ErrNotFound) {
			return fmt.Errorf("Info: %v", err)
		}
		return nil
	})
	if _, err := c.XAdd(ctx, &redis.XAddArgs{Stream: stream, NoMkStream: true, Values: []any{"data", reply}}).Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("reply XADD NOMKSTREAM to an expired inbox: %v, want a nil reply", err)
	}
	n, err := c.Exists(ctx, stream, prefix+"meta:{"+ch+"}", prefix+"req:{"+ch+"}").Result()
	if err != nil || n != 0 {
		t.Errorf("keys of the expired inbox: EXISTS = %d, %v; want none", n, err)
	}
}
