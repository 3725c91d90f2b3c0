package backlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/backlog/backlogtest"
)

func TestMemoryConformance(t *testing.T) {
	backlogtest.Run(t, func(t *testing.T) backlog.Log {
		return backlog.NewMemory(backlog.MemoryConfig{})
	})
}

func TestMemoryChannelLimitConformance(t *testing.T) {
	backlogtest.RunLimit(t, func(t *testing.T, maxChannels int) backlog.Log {
		return backlog.NewMemory(backlog.MemoryConfig{MaxChannels: maxChannels})
	})
}

func TestMemoryChannelLimit(t *testing.T) {
	m := backlog.NewMemory(backlog.MemoryConfig{MaxChannels: 2})
	defer m.Close()
	ctx := t.Context()
	for _, ch := range []string{"a", "b"} {
		if _, err := m.Create(ctx, ch, backlog.ChannelConfig{}); err != nil {
			t.Fatalf("Create(%s): %v", ch, err)
		}
	}
	if created, err := m.Create(ctx, "a", backlog.ChannelConfig{}); err != nil || created {
		t.Errorf("re-Create at the limit = %v, %v; want false, nil", created, err)
	}
	if _, err := m.Create(ctx, "c", backlog.ChannelConfig{}); err != backlog.ErrLimit {
		t.Errorf("Create past the limit: %v, want ErrLimit", err)
	}
}

// TestMemoryIdempotencyKeyLimit: past MaxIdempotencyKeys the oldest key is
// forgotten, across channels, and a retry with it appends again.
func TestMemoryIdempotencyKeyLimit(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := backlog.NewMemory(backlog.MemoryConfig{MaxIdempotencyKeys: 2, Now: func() time.Time { return now }})
	defer m.Close()
	ctx := t.Context()
	for _, ch := range []string{"a", "b"} {
		if _, err := m.Create(ctx, ch, backlog.ChannelConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(ch, key string) bool {
		t.Helper()
		_, dup, err := m.AppendIdempotent(ctx, ch, []byte("1"), backlog.Idempotency{Key: key, Window: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return dup
	}
	publish("a", "k1")
	publish("b", "k2")
	if !publish("a", "k1") || !publish("b", "k2") {
		t.Fatal("keys at the limit were forgotten")
	}
	publish("a", "k3") // one past the limit: k1 goes
	if publish("b", "k2") != true || publish("a", "k3") != true {
		t.Fatal("the newest keys were forgotten")
	}
	if publish("a", "k1") {
		t.Fatal("the oldest key was remembered past the limit")
	}

	// On the injected clock, the window ends exactly a minute later.
	now = now.Add(time.Minute - time.Millisecond)
	if !publish("a", "k3") {
		t.Fatal("a key was forgotten before its window ended")
	}
	now = now.Add(time.Millisecond)
	if publish("a", "k3") {
		t.Fatal("a key was remembered after its window ended")
	}
}

func TestMemoryRequestsConformance(t *testing.T) {
	backlogtest.RunRequests(t, func(t *testing.T, opts backlogtest.RequestsOptions) backlogtest.RequestLog {
		return backlog.NewMemory(backlog.MemoryConfig{MaxRequests: opts.MaxRequests, Now: opts.Now})
	})
}

// TestMemoryReclaimIdleEdge: on the injected clock, a pending request is
// reclaimable exactly minIdle after it was last handed out, and a Reclaim
// restarts its idle time.
func TestMemoryReclaimIdleEdge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := backlog.NewMemory(backlog.MemoryConfig{Now: func() time.Time { return now }})
	defer m.Close()
	ctx := t.Context()
	if _, err := m.Create(ctx, "ch", backlog.ChannelConfig{}); err != nil {
		t.Fatal(err)
	}
	req := backlog.Request{ReplyTo: "inbox", Deadline: now.Add(time.Hour), Data: []byte("1")}
	if _, err := m.Enqueue(ctx, "ch", req); err != nil {
		t.Fatal(err)
	}
	if reqs, err := m.Claim(ctx, "ch", "g", "c1", 1, 0); err != nil || len(reqs) != 1 {
		t.Fatalf("Claim = %v, %v", reqs, err)
	}
	reclaim := func() []backlog.Request {
		t.Helper()
		reqs, err := m.Reclaim(ctx, "ch", "g", "c2", time.Second, 1)
		if err != nil {
			t.Fatal(err)
		}
		return reqs
	}
	now = now.Add(time.Second - time.Millisecond)
	if reqs := reclaim(); len(reqs) != 0 {
		t.Fatalf("Reclaim before minIdle = %+v", reqs)
	}
	now = now.Add(time.Millisecond)
	if reqs := reclaim(); len(reqs) != 1 || reqs[0].Deliveries != 2 {
		t.Fatalf("Reclaim at minIdle = %+v, want one with Deliveries 2", reqs)
	}
	if reqs := reclaim(); len(reqs) != 0 {
		t.Fatalf("Reclaim right after a Reclaim = %+v, want nothing", reqs)
	}
	now = now.Add(time.Second)
	if reqs := reclaim(); len(reqs) != 1 || reqs[0].Deliveries != 3 {
		t.Fatalf("second Reclaim = %+v, want one with Deliveries 3", reqs)
	}
}

// TestMemoryExpiryEdge: on the injected clock, a channel goes exactly
// Expiry after its last Create or Append; an expired channel does not
// count towards MaxChannels, and TrimExpired frees it.
func TestMemoryExpiryEdge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := backlog.NewMemory(backlog.MemoryConfig{MaxChannels: 2, Now: func() time.Time { return now }})
	defer m.Close()
	ctx := t.Context()
	cfg := backlog.ChannelConfig{Expiry: time.Second}
	for _, ch := range []string{"a", "b"} {
		if _, err := m.Create(ctx, ch, cfg); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(ch string) bool {
		t.Helper()
		_, err := m.Info(ctx, ch)
		if err != nil && err != backlog.ErrNotFound {
			t.Fatal(err)
		}
		return err == nil
	}
	now = now.Add(600 * time.Millisecond)
	if _, err := m.Append(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(399 * time.Millisecond)
	if created, err := m.Create(ctx, "b", backlog.ChannelConfig{}); err != nil || created {
		t.Fatalf("Create of a live channel = %v, %v; want false, nil", created, err)
	}
	now = now.Add(time.Millisecond) // a: 400ms after its Append; b: 1ms after its Create
	if !exists("a") || !exists("b") {
		t.Fatal("a channel went before its expiry")
	}
	now = now.Add(599 * time.Millisecond)
	if !exists("a") {
		t.Fatal("a went 1ms before its expiry")
	}
	now = now.Add(time.Millisecond)
	if exists("a") || !exists("b") {
		t.Fatal("a did not go exactly 1s after its Append, or b went with it")
	}
	if _, err := m.Create(ctx, "c", cfg); err != nil {
		t.Fatalf("Create with an expired channel at the limit: %v", err)
	}
	now = now.Add(time.Hour)
	if names, _, err := m.List(ctx, "", "", 10); err != nil || len(names) != 0 {
		t.Fatalf("List of expired channels = %v, %v; want nothing", names, err)
	}
	if n := backlog.MemoryHeld(m); n != 2 {
		t.Fatalf("%d channels held before TrimExpired, want the 2 expired", n)
	}
	if err := m.TrimExpired(ctx); err != nil {
		t.Fatal(err)
	}
	if n := backlog.MemoryHeld(m); n != 0 {
		t.Fatalf("%d channels held after TrimExpired, want 0", n)
	}
}

// TestMemoryRelease: a released request is reclaimable at once by a
// Reclaim with any minIdle up to 30 days (Redis's XCLAIM ... IDLE), keeps
// its Deliveries until then, and a Reclaim restarts its idle time.
func TestMemoryRelease(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := backlog.NewMemory(backlog.MemoryConfig{Now: func() time.Time { return now }})
	defer m.Close()
	ctx := t.Context()
	if _, err := m.Create(ctx, "ch", backlog.ChannelConfig{}); err != nil {
		t.Fatal(err)
	}
	id, err := m.Enqueue(ctx, "ch", backlog.Request{ReplyTo: "inbox", Deadline: now.Add(time.Hour), Data: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if reqs, err := m.Claim(ctx, "ch", "g", "c1", 1, 0); err != nil || len(reqs) != 1 {
		t.Fatalf("Claim = %v, %v", reqs, err)
	}
	if n, err := m.Release(ctx, "ch", "g", id, id); err != nil || n != 1 {
		t.Fatalf("Release = %d, %v; want 1", n, err)
	}
	const month = 30 * 24 * time.Hour
	reqs, err := m.Reclaim(ctx, "ch", "g", "c2", month, 1)
	if err != nil || len(reqs) != 1 || reqs[0].Deliveries != 2 {
		t.Fatalf("Reclaim with minIdle 30 days after Release = %+v, %v; want the request with Deliveries 2", reqs, err)
	}
	if reqs, err := m.Reclaim(ctx, "ch", "g", "c3", time.Millisecond, 1); err != nil || len(reqs) != 0 {
		t.Fatalf("Reclaim right after a Reclaim = %+v, %v; want nothing", reqs, err)
	}
	if _, err := m.Release(ctx, "missing", "g", id); err != backlog.ErrNotFound {
		t.Fatalf("Release on a missing channel: %v, want ErrNotFound", err)
	}
}

// TestMemoryLossy: Lossy over the memory backlog shows a loss of the newest
// entries as the Redis backlog does (TestRedisLosesNewest), and keeps the
// contract while it lost nothing.
func TestMemoryLossy(t *testing.T) {
	backlogtest.RunLoss(t, func(t *testing.T) backlog.Log {
		return backlogtest.NewLossy(backlog.NewMemory(backlog.MemoryConfig{}))
	}, func(t *testing.T, ctx context.Context, l backlog.Log, channel string, n int) []backlog.ID {
		ids, err := l.(*backlogtest.Lossy).LoseNewest(ctx, channel, n)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	})
	backlogtest.Run(t, func(t *testing.T) backlog.Log {
		return backlogtest.NewLossy(backlog.NewMemory(backlog.MemoryConfig{}))
	})
}

// TestMemoryFollowersWake: followers are woken per channel, so several
// following one channel must all get its append, whichever of them
// registered first, and followers that unfollow or close must leave no
// registration behind.
func TestMemoryFollowersWake(t *testing.T) {
	m := backlog.NewMemory(backlog.MemoryConfig{})
	defer m.Close()
	ctx := t.Context()
	for _, ch := range []string{"shared", "other"} {
		if _, err := m.Create(ctx, ch, backlog.ChannelConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	const followers = 3
	got := make(chan []backlog.Batch, followers)
	var open []backlog.Follower
	for range followers {
		f := m.NewFollower()
		open = append(open, f)
		f.Follow("other", backlog.Zero)
		f.Follow("shared", backlog.Zero)
		go func() {
			for {
				batches, err := f.Next(ctx, 10)
				if err != nil {
					t.Error(err)
				}
				if err != nil || len(batches) > 0 {
					got <- batches
					return
				}
			}
		}()
	}
	leaving := m.NewFollower()
	leaving.Follow("shared", backlog.Zero)
	closing := m.NewFollower()
	closing.Follow("shared", backlog.Zero)
	if n := backlog.MemoryWaiting(m, "shared"); n != followers+2 {
		t.Fatalf("%d follows registered on the channel, want %d", n, followers+2)
	}
	leaving.Unfollow("shared")
	closing.Close()
	if n := backlog.MemoryWaiting(m, "shared"); n != followers {
		t.Fatalf("%d follows registered after an Unfollow and a Close, want %d", n, followers)
	}
	id, err := m.Append(ctx, "shared", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	for range followers {
		select {
		case batches := <-got:
			if len(batches) != 1 || batches[0].Channel != "shared" || len(batches[0].Messages) != 1 || batches[0].Messages[0].ID != id {
				t.Fatalf("Next = %+v, want the one message appended to shared", batches)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a follower of the channel was not woken by its append")
		}
	}
	for _, f := range open {
		f.Close()
	}
	leaving.Close()
	for _, ch := range []string{"shared", "other"} {
		if n := backlog.MemoryWaiting(m, ch); n != 0 {
			t.Errorf("%d registrations left on %s after every follower closed", n, ch)
		}
	}
}
