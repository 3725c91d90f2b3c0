package backlog_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

type capturedRedisLogs struct {
	mu    sync.Mutex
	lines []string
}

func (c *capturedRedisLogs) Printf(_ context.Context, format string, v ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, fmt.Sprintf(format, v...))
}

// TestNewRedisLogsNothing: making the backlog's own no-retry client from
// the caller's must not trip go-redis into a warning at every start (it
// did: both clients shared one push notification processor).
func TestNewRedisLogsNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	logs := &capturedRedisLogs{}
	redis.SetLogger(logs)
	t.Cleanup(func() { redis.SetLogger(&capturedRedisLogs{}) })
	client, err := backlog.NewRedisClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := backlog.NewRedis(client, backlog.RedisConfig{})
	defer r.Close()
	if _, err := r.Create(t.Context(), "logs", backlog.ChannelConfig{}); err != nil {
		t.Fatal(err)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.lines) > 0 {
		t.Fatalf("go-redis logged:\n%s", strings.Join(logs.lines, "\n"))
	}
}
