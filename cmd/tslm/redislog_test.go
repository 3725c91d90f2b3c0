package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/internal/syncbuf"
)

// TestRedisLoggerThrottles: go-redis's repeated lines (a failed dial, tens
// a second during an outage) come through once per interval each, saying
// how many were left out; other lines are not held back by them.
func TestRedisLoggerThrottles(t *testing.T) {
	var buf syncbuf.Buffer
	l := newRedisLogger(slog.New(slog.NewJSONHandler(&buf, nil)))
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	ctx := context.Background()
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for i := range 50 {
		l.Printf(ctx, dial, 1, "connection refused")
		if i == 10 {
			l.Printf(ctx, "sentinel: new master=%q addr=%q", "tslm", "10.0.0.2:6379")
		}
		now = now.Add(100 * time.Millisecond) // 5s in all
	}
	now = now.Add(redisLogEvery)
	l.Printf(ctx, dial, 1, "connection refused")

	var lines []map[string]any
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3 (the first dial failure, the sentinel line, the next dial failure with its count):\n%s", len(lines), buf.String())
	}
	if lines[0]["msg"] != "redis: connection pool: failed to dial after 1 attempts: connection refused" || lines[0]["similar_lines_dropped"] != nil {
		t.Errorf("first line %v", lines[0])
	}
	if !strings.HasPrefix(lines[1]["msg"].(string), "sentinel: new master=") {
		t.Errorf("second line %v, want the sentinel's, not held back by the dial failures", lines[1])
	}
	if lines[2]["similar_lines_dropped"] != float64(49) || lines[2]["level"] != "WARN" {
		t.Errorf("third line %v, want the dial failure with similar_lines_dropped 49", lines[2])
	}
}
