package broker_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/redistest"
)

// latencyHistogram counts latencies in buckets of 2^(1/4) growth from 1µs,
// so that percentiles cost no allocation on the delivery path.
type latencyHistogram struct {
	buckets [120]atomic.Int64
}

func (h *latencyHistogram) record(d time.Duration) {
	us := max(float64(d)/float64(time.Microsecond), 1)
	i := min(int(4*math.Log2(us)), len(h.buckets)-1)
	h.buckets[i].Add(1)
}

// percentile returns the upper bound of the bucket holding quantile q.
func (h *latencyHistogram) percentile(q float64) time.Duration {
	var total int64
	for i := range h.buckets {
		total += h.buckets[i].Load()
	}
	target := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= target && seen > 0 {
			return time.Duration(math.Pow(2, float64(i+1)/4) * float64(time.Microsecond))
		}
	}
	return 0
}

// timingSink counts deliveries and records publish-to-receive latency from
// the publish time carried in the payload (a JSON number of Unix ns).
type timingSink struct {
	delivered *atomic.Int64
	hist      *latencyHistogram
}

func (s timingSink) Deliver(p *broker.Publication) bool {
	if sent, err := strconv.ParseInt(string(p.Data), 10, 64); err == nil {
		s.hist.record(time.Duration(time.Now().UnixNano() - sent))
	}
	s.delivered.Add(1)
	return true
}

func (s timingSink) Replay(_ context.Context, p *broker.Publication) error {
	s.Deliver(p)
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRedisDelivery measures the path publishers care about: Append to
// a Redis backlog, its notification to the hub's follower, fan-out to
// subscribers. One publisher appends as fast as its round trips allow,
// spread over the channels; every op is one message. Reported: deliveries
// per second, publish-to-receive latency percentiles, and CPU per
// delivered message in the gateway process and in redis-server.
func BenchmarkRedisDelivery(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	cases := []struct {
		name           string
		channels, subs int
		rate           int // messages per second; 0: as fast as one publisher goes
	}{
		{"channels=1/subs=1000/full-speed", 1, 1000, 0},
		{"channels=1/subs=1000/rate=1000", 1, 1000, 1000},
		{"channels=1000/subs=1/full-speed", 1000, 1, 0},
		{"channels=1000/subs=1/rate=1000", 1000, 1, 1000},
		{"channels=10000/subs=1/full-speed", 10000, 1, 0},
		{"channels=10000/subs=1/rate=1000", 10000, 1, 1000},
	}
	clientURL := srv.URL()
	for i, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			uc, err := backlog.NewRedisClient(clientURL)
			if err != nil {
				b.Fatal(err)
			}
			client := uc.(*redis.Client)
			defer client.Close()
			log := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: fmt.Sprintf("bench%d:", i)})
			defer log.Close()
			hub := broker.New(log, broker.Config{})
			defer hub.Close()
			var delivered atomic.Int64
			hist := new(latencyHistogram)
			names := make([]string, c.channels)
			for ch := range names {
				names[ch] = fmt.Sprintf("c%d", ch)
				if _, err := hub.Create(ctx, names[ch], broker.ChannelOptions{}); err != nil {
					b.Fatal(err)
				}
				for range c.subs {
					sub, _, err := hub.Subscribe(ctx, names[ch], broker.From{}, timingSink{&delivered, hist})
					if err != nil {
						b.Fatal(err)
					}
					if err := sub.Replay(ctx); err != nil {
						b.Fatal(err)
					}
					defer sub.Close()
				}
			}
			cpu0, rcpu0, start := cpuTime(), redistest.CPU(b, client), time.Now()
			b.ResetTimer()
			n := 0
			var tick *time.Ticker
			if c.rate > 0 {
				tick = time.NewTicker(time.Second / time.Duration(c.rate))
				defer tick.Stop()
			}
			for b.Loop() {
				if tick != nil {
					<-tick.C
				}
				payload := strconv.AppendInt(nil, time.Now().UnixNano(), 10)
				if _, err := hub.Publish(ctx, names[n%len(names)], payload); err != nil {
					b.Fatal(err)
				}
				n++
			}
			want := int64(n * c.subs)
			deadline := time.Now().Add(time.Minute)
			for delivered.Load() < want && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			if got := delivered.Load(); got != want {
				b.Fatalf("delivered %d, want %d", got, want)
			}
			b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(hist.percentile(0.5))/1e3, "p50-µs")
			b.ReportMetric(float64(hist.percentile(0.99))/1e3, "p99-µs")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(want), "gateway-cpu-ns/delivery")
			b.ReportMetric(float64(redistest.CPU(b, client)-rcpu0)/float64(n), "redis-cpu-ns/msg")
		})
	}
}

// redisStats reads counters of INFO stats.
func redisStats(b *testing.B, c *redis.Client, keys ...string) []float64 {
	info, err := c.Info(context.Background(), "stats").Result()
	if err != nil {
		b.Fatal(err)
	}
	out := make([]float64, len(keys))
	for _, line := range strings.Split(info, "\r\n") {
		for i, key := range keys {
			if v, ok := strings.CutPrefix(line, key+":"); ok {
				out[i], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out
}

type discardSink struct{}

func (discardSink) Deliver(*broker.Publication) bool                  { return true }
func (discardSink) Replay(context.Context, *broker.Publication) error { return nil }

// BenchmarkRedisSubscribeCost measures what one subscribe/unsubscribe cycle
// costs Redis on a channel whose messages are 60 KB each (issue 18): bytes
// Redis sends and receives, and commands it runs, from INFO stats, and
// its CPU time, from INFO cpu. Only a
// subscribe that replays messages should cost their bytes; the others
// should cost a few small replies. "followed" keeps another subscriber on
// the channel, so that the cycle does not start and stop following it.
func BenchmarkRedisSubscribeCost(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	ctx := context.Background()
	stats := srv.Client()
	uc, err := backlog.NewRedisClient(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	client := uc.(*redis.Client)
	defer client.Close()
	log := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: "subcost:"})
	defer log.Close()
	hub := broker.New(log, broker.Config{})
	defer hub.Close()
	const channel = "big"
	if _, err := hub.Create(ctx, channel, broker.ChannelOptions{}); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`"` + strings.Repeat("x", 60<<10) + `"`)
	var newest backlog.ID
	for range 3 {
		if newest, err = log.Append(ctx, channel, payload); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		from     broker.From
		followed bool
	}{
		{"live", broker.From{}, false},
		{"live/followed", broker.From{}, true},
		{"since=newest", broker.From{Since: &newest}, false},
		{"last=1", broker.From{Last: 1}, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			if c.followed {
				keep, _, err := hub.Subscribe(ctx, channel, broker.From{}, discardSink{})
				if err != nil {
					b.Fatal(err)
				}
				defer keep.Close()
			}
			keys := []string{"total_net_output_bytes", "total_net_input_bytes", "total_commands_processed"}
			before, cpu0 := redisStats(b, stats, keys...), redistest.CPU(b, stats)
			for b.Loop() {
				sub, _, err := hub.Subscribe(ctx, channel, c.from, discardSink{})
				if err != nil {
					b.Fatal(err)
				}
				if err := sub.Replay(ctx); err != nil {
					b.Fatal(err)
				}
				sub.Close()
			}
			after, cpu := redisStats(b, stats, keys...), redistest.CPU(b, stats)-cpu0
			n := float64(b.N)
			b.ReportMetric(float64(cpu.Microseconds())/n, "redis-cpu-µs/cycle")
			b.ReportMetric((after[0]-before[0])/n, "redis-out-B/cycle")
			b.ReportMetric((after[1]-before[1])/n, "redis-in-B/cycle")
			b.ReportMetric((after[2]-before[2])/n, "redis-cmds/cycle")
		})
	}
}
