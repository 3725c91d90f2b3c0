package broker_test

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/redistest"
)

// heapSink drops what it receives, as a fast client would, sampling the
// live heap every few messages to find the replay's peak.
type heapSink struct {
	n    int
	peak uint64
}

func (s *heapSink) Deliver(*broker.Publication) bool { return true }

func (s *heapSink) Replay(_ context.Context, _ *broker.Publication) error {
	if s.n++; s.n%10 == 0 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.peak = max(s.peak, ms.HeapAlloc)
	}
	return nil
}

// BenchmarkReplayLargeMessages replays 1000 messages of 64 KiB from Redis
// (since 0-0) and reports the peak live heap above the idle one: pages of
// ReplayPage messages (what a replay held before pages were bounded in
// bytes) against the default 1 MiB pages.
func BenchmarkReplayLargeMessages(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	client, err := backlog.NewRedisClient(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	log := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: "replaybench:"})
	defer log.Close()
	if _, err := log.Create(ctx, "big", backlog.ChannelConfig{}); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`"` + strings.Repeat("z", 64<<10-2) + `"`)
	const total = 1000
	for range total {
		if _, err := log.Append(ctx, "big", payload); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		pageBytes int
	}{
		{"pages_of_500_messages", 1 << 40},
		{"pages_of_1MiB", 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := broker.New(log, broker.Config{ReplayPageBytes: tc.pageBytes, ReplayBytes: 1 << 40})
			defer h.Close()
			var peak uint64
			for b.Loop() {
				runtime.GC()
				var idle runtime.MemStats
				runtime.ReadMemStats(&idle)
				sink := &heapSink{}
				sub, _, err := h.Subscribe(ctx, "big", broker.From{Since: &backlog.Zero}, sink)
				if err != nil {
					b.Fatal(err)
				}
				if err := sub.Replay(ctx); err != nil {
					b.Fatal(err)
				}
				sub.Close()
				if sink.n != total {
					b.Fatalf("replayed %d messages, want %d", sink.n, total)
				}
				peak = max(peak, sink.peak-min(sink.peak, idle.HeapAlloc))
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
