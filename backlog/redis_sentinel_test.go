package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// sentinelReader follows one channel with a follower as the hub does,
// retrying after errors, and keeps what it read.
type sentinelReader struct {
	mu      sync.Mutex
	ids     []backlog.ID
	gaps    int
	errs    int
	lastErr error
	done    chan struct{}
}

func followChannel(ctx context.Context, r *backlog.Redis, channel string, after backlog.ID) *sentinelReader {
	sr := &sentinelReader{done: make(chan struct{})}
	f := r.NewFollower()
	f.Follow(channel, after)
	go func() {
		defer close(sr.done)
		defer f.Close()
		for ctx.Err() == nil {
			batches, err := f.Next(ctx, 100)
			sr.mu.Lock()
			if err != nil && ctx.Err() == nil {
				sr.errs++
				sr.lastErr = err
			}
			for _, b := range batches {
				if b.Gap {
					sr.gaps++
				}
				for _, m := range b.Messages {
					sr.ids = append(sr.ids, m.ID)
				}
			}
			sr.mu.Unlock()
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}()
	return sr
}

func (sr *sentinelReader) read() (ids []backlog.ID, gaps, errs int) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return slices.Clone(sr.ids), sr.gaps, sr.errs
}

// TestRedisSentinelFailover: on a Sentinel URL, the backlog works through
// a failover without a new client. While no primary answers, commands
// fail as unavailable; once a replica is promoted, appends, reads and
// pings succeed against it, and a reader that was blocked on the old
// primary carries on after its cursor with no gap (its cursor entry was
// replicated). The old primary frozen, not killed, and thawed after the
// promotion, as after a partition: until the sentinels demote it, it
// still takes writes, which its demotion then throws away; so once the
// sentinels announced the switch, no append the backlog acknowledges may
// land there: the first append acknowledged while it still hangs proves
// that the writer let go of it (a plain copy of the client's options kept
// its connections). A follower reads and listens through the writer's
// client, so it never delivers what the old primary took after that.
func TestRedisSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	client, err := backlog.NewRedisClient(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := backlog.NewRedis(client, backlog.RedisConfig{BlockInterval: 500 * time.Millisecond})
	defer r.Close()

	if _, err := r.Create(ctx, "fo", backlog.ChannelConfig{}); err != nil {
		t.Fatal(err)
	}
	// Appends side by side, so that the writer holds several idle
	// connections to the first primary.
	var wg sync.WaitGroup
	var before []backlog.ID
	var mu sync.Mutex
	for range 8 {
		wg.Go(func() {
			id, err := r.Append(ctx, "fo", []byte(`"before"`))
			if err != nil {
				t.Errorf("append before the failover: %v", err)
				return
			}
			mu.Lock()
			before = append(before, id)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.SortFunc(before, backlog.ID.Compare)
	old := s.Primary()
	if n, err := old.Client().Do(ctx, "WAIT", 2, 5000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT for both replicas: %d, %v", n, err)
	}
	sr := followChannel(ctx, r, "fo", before[len(before)-1])

	thaw := old.Hang()
	downCtx, downCancel := context.WithTimeout(ctx, time.Second)
	_, err = r.Append(downCtx, "fo", []byte(`"down"`))
	downCancel()
	if !errors.Is(err, backlog.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("append while the primary hangs: %v, want unavailable", err)
	}
	promoted := s.WaitPromotion(old)
	// The sentinel the writer listens to may announce the switch only
	// when the failover ends, after the other replica is reconfigured, a
	// second or so after the promotion: the writer's connections to the
	// old primary go then, not before. Writes in between are lost like
	// any write the old primary took alone (docs/redis.md). The first
	// append acknowledged while the old primary still hangs shows the
	// switch: a writer that kept its connections to the old primary (a
	// plain copy of the client's options does) would acknowledge none.
	var acked []backlog.ID
	var failed int
	for deadline := time.Now().Add(10 * time.Second); len(acked) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("10s after the promotion no append was acknowledged (%d failed)", failed)
		}
		actx, acancel := context.WithTimeout(ctx, 300*time.Millisecond)
		id, err := r.Append(actx, "fo", []byte(`"switched"`))
		acancel()
		if err != nil {
			failed++
			continue
		}
		acked = append(acked, id)
	}
	thaw()

	// Until the sentinels demote the old primary, append as fast as one
	// publisher does; every acknowledged ID must be the new primary's.
	demoted := false
	for deadline := time.Now().Add(20 * time.Second); !demoted || len(acked) < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: old primary demoted %v, %d appends acknowledged (%d failed)", demoted, len(acked), failed)
		}
		actx, acancel := context.WithTimeout(ctx, time.Second)
		id, err := r.Append(actx, "fo", []byte(`"after"`))
		acancel()
		if err != nil {
			failed++
		} else {
			acked = append(acked, id)
		}
		if !demoted {
			role, _ := old.Client().Do(ctx, "ROLE").Slice()
			demoted = len(role) > 0 && role[0] == "slave"
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.Ping(ctx); err != nil {
		t.Errorf("ping after the failover: %v", err)
	}
	held := streamIDsOn(t, promoted.Client(), "tslm:ch:{fo}")
	if missing := notIn(acked, held); len(missing) > 0 {
		t.Errorf("%d of %d appends acknowledged after the promotion are not on the new primary %s: they went to the demoted one (first %s, last %s); %s",
			len(missing), len(acked), promoted.Addr(), missing[0], missing[len(missing)-1], sentinelState(t, s, old, missing[0]))
	}
	if missing := notIn(before, held); len(missing) > 0 {
		t.Errorf("appends %v, replicated before the failover, are not on the new primary", missing)
	}

	// The reader delivers every acknowledged ID once, in order, no gap.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, gaps, errs := sr.read()
		if len(ids) >= len(acked) {
			if !slices.Equal(ids, acked) || gaps != 0 {
				t.Errorf("reader after the failover: %d IDs with %d gaps, want the %d acknowledged and none; %d missing, %d not acknowledged",
					len(ids), gaps, len(acked), len(notIn(acked, idStrings(ids))), len(notIn(ids, idStrings(acked))))
			}
			t.Logf("%d appends acknowledged after the promotion, %d failed; the reader failed %d times meanwhile", len(acked), failed, errs)
			break
		}
		if time.Now().After(deadline) {
			sr.mu.Lock()
			t.Fatalf("reader after 10s: %d IDs (%d errors, last %v), want the %d acknowledged",
				len(ids), errs, sr.lastErr, len(acked))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-sr.done
}

func streamIDsOn(t *testing.T, c *redis.Client, key string) []string {
	t.Helper()
	xs, err := c.XRange(t.Context(), key, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", key, err)
	}
	ids := make([]string, len(xs))
	for i, x := range xs {
		ids[i] = x.ID
	}
	return ids
}

// notIn returns the ids that are not in held.
func notIn(ids []backlog.ID, held []string) []backlog.ID {
	var out []backlog.ID
	for _, id := range ids {
		if !slices.Contains(held, id.String()) {
			out = append(out, id)
		}
	}
	return out
}

func idStrings(ids []backlog.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// TestRedisNoReplicasIsUnavailable: a primary with min-replicas-to-write
// that lacks replicas refuses the append script (its error keeps the
// NOREPLICAS code), and the backlog says unavailable, so that the
// publisher retries rather than takes it for a bad request
// (docs/redis.md, "Losing less").
func TestRedisNoReplicasIsUnavailable(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := t.Context()
	client, err := backlog.NewRedisClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := backlog.NewRedis(client, backlog.RedisConfig{})
	defer r.Close()
	if _, err := r.Create(ctx, "norepl", backlog.ChannelConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client().ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = r.Append(ctx, "norepl", []byte(`1`))
	if !errors.Is(err, backlog.ErrUnavailable) || !strings.Contains(err.Error(), "NOREPLICAS ") {
		t.Fatalf("append without the replicas min-replicas-to-write asks for: %v, want unavailable (NOREPLICAS)", err)
	}
}

// sentinelState describes, for a failure, which node each sentinel and
// each data node takes for the primary, and which data nodes hold id.
func sentinelState(t *testing.T, s *redistest.Sentinel, old *redistest.Server, id backlog.ID) string {
	var b strings.Builder
	fmt.Fprintf(&b, "old primary %s; now %s is named primary", old.Addr(), s.Primary().Addr())
	for _, n := range s.Servers() {
		role, _ := n.Client().Do(t.Context(), "ROLE").Slice()
		xs, _ := n.Client().XRange(t.Context(), "tslm:ch:{fo}", id.String(), id.String()).Result()
		fmt.Fprintf(&b, "; %s: role %v, holds %s: %v", n.Addr(), role[:min(len(role), 1)], id, len(xs) == 1)
	}
	return b.String()
}
