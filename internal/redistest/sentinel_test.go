package redistest_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
)

func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	ctx := t.Context()

	opt, err := redis.ParseFailoverURL(s.URL())
	if err != nil {
		t.Fatalf("ParseFailoverURL(%q): %v", s.URL(), err)
	}
	if opt.MasterName != s.MasterName() || !slices.Equal(opt.SentinelAddrs, s.SentinelAddrs()) {
		t.Errorf("URL gives master %q, sentinels %v; want %q, %v", opt.MasterName, opt.SentinelAddrs, s.MasterName(), s.SentinelAddrs())
	}

	client := s.Client()
	old := s.Primary()
	if old != s.Servers()[0] {
		t.Fatalf("primary at start is %s, want the first server %s", old.Addr(), s.Servers()[0].Addr())
	}
	if err := client.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := old.Client().Do(ctx, "WAIT", 2, 5000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT for both replicas: %d, %v", n, err)
	}

	promoted := s.KillPrimary()
	if promoted == old || old.Running() {
		t.Fatalf("KillPrimary promoted %s; old %s running %v", promoted.Addr(), old.Addr(), old.Running())
	}
	if p := s.Primary(); p != promoted {
		t.Errorf("Primary() = %s after the failover, want %s", p.Addr(), promoted.Addr())
	}

	// The failover client finds the new primary and writes to it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := client.Set(wctx, "k", "after", 0).Err()
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write through the failover client after the failover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := promoted.Client().Get(ctx, "k").Result(); err != nil || got != "after" {
		t.Errorf("GET k on the new primary = %q, %v; want the write after the failover", got, err)
	}
}
