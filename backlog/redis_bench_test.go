package backlog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

var benchPayload = []byte(`{"symbol":"EURUSD","bid":1.08512,"ask":1.08519,"ts":1764000000000,"seq":123456}`)

// BenchmarkRedisAppend measures Append round trips against a local
// redis-server: without a MaxLen, with exact MaxLen trimming (steady state:
// every append trims one entry), and with
// parallel publishers sharing the client's pool.
func BenchmarkRedisAppend(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	b.Run("baseline-plain-XADD", func(b *testing.B) {
		// What one round trip costs here, without the script.
		client := srv.Client()
		args := &redis.XAddArgs{Stream: "bench:plain", Values: []any{"data", benchPayload}}
		for b.Loop() {
			if err := client.XAdd(ctx, args).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, c := range []struct {
		name     string
		maxLen   int64
		parallel bool
	}{
		{"unbounded", 0, false},
		{"maxlen=1000", 1000, false},
		{"maxlen=1000/parallel", 1000, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := backlog.NewRedis(srv.Client(), backlog.RedisConfig{KeyPrefix: "bench:"})
			defer r.Close()
			ch := fmt.Sprintf("append.%s", c.name)
			r.Create(ctx, ch, backlog.ChannelConfig{MaxLen: c.maxLen})
			for range c.maxLen { // start at steady state
				r.Append(ctx, ch, benchPayload)
			}
			b.SetBytes(int64(len(benchPayload)))
			b.ResetTimer()
			if c.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := r.Append(ctx, ch, benchPayload); err != nil {
							b.Error(err)
							return
						}
					}
				})
				return
			}
			for b.Loop() {
				if _, err := r.Append(ctx, ch, benchPayload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRedisReadCursors measures one Read that returns at once, one
// message on one channel, as the number of cursors in the XREAD grows.
// "probe" places the cursor so that the gap proof needs its extra
// round trip; "adjacent" so that the returned ID proves it by itself.
func BenchmarkRedisReadCursors(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	client := srv.Client()
	for _, n := range []int{1, 100, 1000, 10000} {
		for _, probe := range []bool{false, true} {
			name := fmt.Sprintf("cursors=%d/adjacent", n)
			if probe {
				name = fmt.Sprintf("cursors=%d/probe", n)
			}
			b.Run(name, func(b *testing.B) {
				prefix := fmt.Sprintf("read%d:", n)
				r := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: prefix})
				defer r.Close()
				cursors := make([]backlog.Cursor, n)
				for i := range cursors {
					cursors[i] = backlog.Cursor{Channel: fmt.Sprintf("c%d", i), After: backlog.ID{Ms: 1, Seq: 0}}
				}
				// The last channel holds 1000-1, 1000-2, 2000-0.
				hot := prefix + "ch:{" + cursors[n-1].Channel + "}"
				client.Del(ctx, hot)
				for _, id := range []string{"1000-1", "1000-2", "2000-0"} {
					client.XAdd(ctx, &redis.XAddArgs{Stream: hot, ID: id, Values: []any{"data", benchPayload}})
				}
				cursors[n-1].After = backlog.ID{Ms: 1000, Seq: 2}
				if !probe {
					cursors[n-1].After = backlog.ID{Ms: 1000, Seq: 1}
				}
				b.ResetTimer()
				for b.Loop() {
					batches, err := r.Read(ctx, cursors, 1)
					if err != nil || len(batches) != 1 || batches[0].Gap {
						b.Fatalf("Read = %+v, %v", batches, err)
					}
				}
			})
		}
	}
}

// BenchmarkRedisReadCatchUp reads a 10 000-message channel from the start,
// 100 messages per Read, reporting the cost per message.
func BenchmarkRedisReadCatchUp(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	r := backlog.NewRedis(srv.Client(), backlog.RedisConfig{KeyPrefix: "catchup:"})
	defer r.Close()
	r.Create(ctx, "c", backlog.ChannelConfig{})
	const total = 10_000
	for range total {
		r.Append(ctx, "c", benchPayload)
	}
	b.SetBytes(int64(total * len(benchPayload)))
	for b.Loop() {
		after, n := backlog.Zero, 0
		for n < total {
			batches, err := r.Read(ctx, []backlog.Cursor{{Channel: "c", After: after}}, 100)
			if err != nil || len(batches) != 1 {
				b.Fatalf("Read = %+v, %v", batches, err)
			}
			msgs := batches[0].Messages
			n += len(msgs)
			after = msgs[len(msgs)-1].ID
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*total), "ns/msg")
}
