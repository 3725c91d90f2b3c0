package redistest_test

import (
	"testing"

	"github.com/tslm/tslm/internal/redistest"
)

func TestRestartKeepsDataWithAOF(t *testing.T) {
	for _, c := range []struct {
		name string
		aof  bool
		want int64
	}{{"aof", true, 1}, {"no aof", false, 0}} {
		t.Run(c.name, func(t *testing.T) {
			s := redistest.Start(t, redistest.Options{AOF: c.aof})
			if s.Addr() == "127.0.0.1:6379" {
				t.Fatalf("started on the shared port %s", s.Addr())
			}
			ctx := t.Context()
			if err := s.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			s.Restart()
			n, err := s.Client().Exists(ctx, "k").Result()
			if err != nil {
				t.Fatal(err)
			}
			if n != c.want {
				t.Errorf("after restart EXISTS k = %d, want %d", n, c.want)
			}
		})
	}
}

func TestStopRefusesThenStartAnswers(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := s.Client()
	ctx := t.Context()
	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered while stopped")
	}
	s.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
}

func TestFlush(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	c := s.Client()
	ctx := t.Context()
	c.Set(ctx, "k", "v", 0)
	s.Flush()
	if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("DBSIZE after Flush = %d, %v; want 0", n, err)
	}
}

// TestKillFrozen: a frozen server can be killed, as a crash of a stuck
// primary, and started again; the thaw left for cleanup is harmless.
func TestKillFrozen(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	s.Hang()
	s.Kill()
	if s.Running() {
		t.Fatal("running after Kill")
	}
	s.Start()
	if err := s.Client().Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
}
