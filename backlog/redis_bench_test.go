package backlog_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

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
		{"maxlen=1000/parallel/unbatched", 1000, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := backlog.NewRedis(srv.Client(), backlog.RedisConfig{KeyPrefix: "bench:"})
			defer r.Close()
			if strings.HasSuffix(c.name, "/unbatched") {
				backlog.Unbatched(r)
			}
			ch := fmt.Sprintf("append.%s", c.name)
			r.Create(ctx, ch, backlog.ChannelConfig{MaxLen: c.maxLen})
			for range c.maxLen { // start at steady state
				r.Append(ctx, ch, benchPayload)
			}
			b.SetBytes(int64(len(benchPayload)))
			b.ResetTimer()
			if c.parallel {
				// 16 publishers on 2 CPUs, as a busy replica's HTTP
				// handlers are; RedisCPU per append is what batching saves.
				b.SetParallelism(8)
				cpu0, own0 := redistest.CPU(b, srv.Client()), ownCPU(b)
				defer func() {
					b.ReportMetric(float64((redistest.CPU(b, srv.Client())-cpu0).Nanoseconds())/float64(b.N), "redis-cpu-ns/op")
					b.ReportMetric(float64((ownCPU(b)-own0).Nanoseconds())/float64(b.N), "client-cpu-ns/op")
				}()
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
	b.Run("FCALL-tslm_publish/maxlen=1000", func(b *testing.B) {
		// A direct publisher's call: the same script as Append.
		r := backlog.NewRedis(srv.Client(), backlog.RedisConfig{KeyPrefix: "bench:"})
		defer r.Close()
		if err := r.LoadFunctions(ctx); err != nil {
			b.Fatal(err)
		}
		const ch = "fcall"
		r.Create(ctx, ch, backlog.ChannelConfig{MaxLen: 1000})
		keys := []string{"bench:meta:{" + ch + "}", "bench:ch:{" + ch + "}", "bench:req:{" + ch + "}"}
		client := srv.Client()
		b.SetBytes(int64(len(benchPayload)))
		for range 1000 {
			client.FCall(ctx, "tslm_publish", keys, benchPayload)
		}
		b.ResetTimer()
		for b.Loop() {
			if err := client.FCall(ctx, "tslm_publish", keys, benchPayload).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRedisReadCatchUp follows a 10 000-message channel from the
// start, 100 messages per catch-up read, reporting the cost per message.
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
		f := r.NewFollower()
		f.Follow("c", backlog.Zero)
		for n := 0; n < total; {
			batches, err := f.Next(ctx, 100)
			if err != nil || len(batches) > 1 {
				b.Fatalf("Next = %+v, %v", batches, err)
			}
			for _, bt := range batches {
				n += len(bt.Messages)
			}
		}
		f.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*total), "ns/msg")
}

// ownCPU is the CPU time this process has used: the callers' and the
// client's side of an append.
func ownCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
