package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// TestRedisChannelLimitAcrossReplicas: replicas sharing a Redis share the
// limit: creates racing on two of them never make more channels than it.
func TestRedisChannelLimitAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	cfg := backlog.RedisConfig{KeyPrefix: "race:", MaxChannels: 5}
	replicas := []*backlog.Redis{newRedis(t, srv, cfg), newRedis(t, srv, cfg)}
	var made, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			created, err := replicas[i%2].Create(ctx, fmt.Sprintf("c%d", i), backlog.ChannelConfig{})
			switch {
			case created && err == nil:
				made.Add(1)
			case errors.Is(err, backlog.ErrLimit):
				refused.Add(1)
			default:
				t.Errorf("Create(c%d) = %v, %v", i, created, err)
			}
		})
	}
	wg.Wait()
	if made.Load() != 5 || refused.Load() != 15 {
		t.Errorf("%d made, %d refused; want 5 and 15", made.Load(), refused.Load())
	}
	if n := srv.Client().ZCard(ctx, "race:channels").Val(); n != 5 {
		t.Errorf("registry holds %d channels, want 5", n)
	}
}

// recount is docs/redis.md's recount, as its redis-cli lines do it: every
// member due for a check at once, and every channel with a meta a member.
func recount(t *testing.T, ctx context.Context, rdb *redis.Client, prefix string) {
	t.Helper()
	key := prefix + "channels"
	if err := rdb.ZUnionStore(ctx, key, &redis.ZStore{Keys: []string{key}, Weights: []float64{0}}).Err(); err != nil {
		t.Fatal(err)
	}
	iter := rdb.Scan(ctx, 0, prefix+"meta:{*}", 100).Iterator()
	for iter.Next(ctx) {
		name := strings.TrimSuffix(strings.TrimPrefix(iter.Val(), prefix+"meta:{"), "}")
		if err := rdb.ZAddNX(ctx, key, redis.Z{Score: 0, Member: name}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestRedisChannelRegistryDrift: what operators do behind the gateway's
// back. A channel deleted by hand keeps its slot until its next check,
// which the recount brings forward; a channel made by hand is counted once
// the gateway is asked to create it, or by the recount.
func TestRedisChannelRegistryDrift(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	rdb := srv.Client()
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "drift:", MaxChannels: 2})
	create(t, ctx, r, "a", backlog.ChannelConfig{})
	create(t, ctx, r, "b", backlog.ChannelConfig{})
	if err := rdb.Del(ctx, "drift:meta:{b}", "drift:ch:{b}").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, "c", backlog.ChannelConfig{}); !errors.Is(err, backlog.ErrLimit) {
		t.Fatalf("Create while b, deleted by hand, is counted = %v, want ErrLimit", err)
	}
	recount(t, ctx, rdb, "drift:")
	if err := r.TrimExpired(ctx); err != nil {
		t.Fatal(err)
	}
	create(t, ctx, r, "c", backlog.ChannelConfig{})

	// A channel made by hand (docs/redis.md): uncounted, and at the limit
	// the gateway still answers for it, and counts it.
	if err := rdb.HSet(ctx, "drift:meta:{d}", "max_len", 0, "retention_ms", 0, "created_ms", time.Now().UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	if created, err := r.Create(ctx, "d", backlog.ChannelConfig{}); err != nil || created {
		t.Fatalf("Create of a channel made by hand at the limit = %v, %v; want false, nil", created, err)
	}
	if n := rdb.ZCard(ctx, "drift:channels").Val(); n != 3 {
		t.Errorf("registry holds %d channels, want a, c and d", n)
	}
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, "e", backlog.ChannelConfig{}); !errors.Is(err, backlog.ErrLimit) {
		t.Errorf("Create with c and d counted = %v, want ErrLimit", err)
	}

	// A registry lost altogether is rebuilt by the recount.
	if err := rdb.Del(ctx, "drift:channels").Err(); err != nil {
		t.Fatal(err)
	}
	recount(t, ctx, rdb, "drift:")
	if err := r.TrimExpired(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.ZRange(ctx, "drift:channels", 0, -1).Result(); err != nil || strings.Join(got, ",") != "c,d" && strings.Join(got, ",") != "d,c" {
		t.Errorf("registry after the recount = %v, %v; want c and d", got, err)
	}
	if _, err := r.Create(ctx, "e", backlog.ChannelConfig{}); !errors.Is(err, backlog.ErrLimit) {
		t.Errorf("Create after the recount = %v, want ErrLimit", err)
	}
}

// TestRedisChannelLimitOnCluster: the registry is one key in its own slot,
// and no script touches it with a channel's keys, so the limit holds on
// Redis Cluster without a CROSSSLOT error.
func TestRedisChannelLimitOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx := testContext(t)
	r := backlog.NewRedis(c.Client(), backlog.RedisConfig{MaxChannels: 3})
	t.Cleanup(func() { r.Close() })
	for _, ch := range []string{"a", "b"} {
		create(t, ctx, r, ch, backlog.ChannelConfig{})
	}
	create(t, ctx, r, "short", backlog.ChannelConfig{Expiry: 300 * time.Millisecond})
	if _, err := r.Create(ctx, "d", backlog.ChannelConfig{}); !errors.Is(err, backlog.ErrLimit) {
		t.Fatalf("Create past the limit = %v, want ErrLimit", err)
	}
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	create(t, ctx, r, "d", backlog.ChannelConfig{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := r.Info(ctx, "short")
		if errors.Is(err, backlog.ErrNotFound) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("Info of the expiring channel: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	create(t, ctx, r, "e", backlog.ChannelConfig{})
	if _, err := r.Create(ctx, "f", backlog.ChannelConfig{}); !errors.Is(err, backlog.ErrLimit) {
		t.Errorf("Create past the limit again = %v, want ErrLimit", err)
	}
	if err := r.TrimExpired(ctx); err != nil {
		t.Errorf("TrimExpired on Cluster: %v", err)
	}
}
