package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
)

// TestRedisMetricsHook: commands are timed and their failures counted by
// name; an empty answer and a cancelled call are no failures, a blocking
// read is not timed, and a Redis that is gone fails every command.
func TestRedisMetricsHook(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	m := &redisMetrics{}
	c := redis.NewClient(&redis.Options{Addr: rs.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	c.AddHook(m)
	ctx := t.Context()

	c.Get(ctx, "absent") // redis.Nil
	c.HSet(ctx, "h", "f", "v")
	c.LPush(ctx, "h", "x") // WRONGTYPE: a failure
	// A blocking read, which finds nothing.
	c.XRead(ctx, &redis.XReadArgs{Streams: []string{"s", "0"}, Block: 10 * time.Millisecond})
	pipe := c.Pipeline()
	pipe.Get(ctx, "absent")
	pipe.Incr(ctx, "h") // WRONGTYPE again, in a pipeline
	pipe.Exec(ctx)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	c.Ping(cancelled)

	stats := func(name string) (uint64, int64) {
		s := m.of(name)
		return s.seconds.Snapshot().Count(), s.errors.Load()
	}
	for name, want := range map[string][2]int64{"get": {1, 0}, "hset": {1, 0}, "lpush": {1, 1}, "xread": {0, 0}, "incr": {0, 1}} {
		timed, errs := stats(name)
		if int64(timed) != want[0] || errs != want[1] {
			t.Errorf("%s: %d timed, %d failures; want %d and %d", name, timed, errs, want[0], want[1])
		}
	}
	// go-redis pipelines its connection set-up too: more than ours.
	if timed, _ := stats("pipeline"); timed < 1 {
		t.Error("the pipeline was not timed")
	}
	if _, errs := stats("ping"); errs != 0 {
		t.Errorf("a cancelled PING counted %d failures", errs)
	}

	rs.Stop()
	c.Set(ctx, "k", "v", 0)
	if _, errs := stats("set"); errs != 1 {
		t.Errorf("SET to a stopped Redis counted %d failures, want 1", errs)
	}
}
