package ws

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
)

// benchSink stands in for a connection: Deliver is conn.Deliver's work
// (the publication's cached v1 frame offered to a send queue), and a drain
// goroutine plays the writer, counting what it takes and releasing it
// as written.
type benchSink struct {
	q   *sendQueue
	enc *broker.Encoder
}

func (s *benchSink) Deliver(p *broker.Publication) bool { return s.q.offer(p.Frame(s.enc)) == nil }

func (s *benchSink) Replay(ctx context.Context, p *broker.Publication) error {
	return s.q.push(ctx, p.Frame(s.enc), time.Minute)
}

func (s *benchSink) drain(delivered *atomic.Int64, stop <-chan struct{}) {
	var batch []queued
	for {
		select {
		case <-stop:
			return
		case <-s.q.ready:
			batch = s.q.take(batch)
			bytes := 0
			for _, it := range batch {
				bytes += len(it.frame)
			}
			s.q.done(len(batch), bytes)
			delivered.Add(int64(len(batch)))
		}
	}
}

// BenchmarkFanOut publishes through the hub to one channel with 1000
// subscribers; one op is one message, delivered 1000 times. The baseline
// gives every subscriber an encoder of its own, so each delivery encodes
// the frame again, as a hub that encodes per subscriber would: the ratio
// between the two is what sharing one encoding per publication buys.
func BenchmarkFanOut(b *testing.B) {
	b.Run("shared-encoding", func(b *testing.B) { benchmarkFanOut(b, false) })
	b.Run("baseline-encode-per-subscriber", func(b *testing.B) { benchmarkFanOut(b, true) })
}

func benchmarkFanOut(b *testing.B, encodeEach bool) {
	const subscribers = 1000
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	mem := backlog.NewMemory(backlog.MemoryConfig{})
	hub := broker.New(mem, broker.Config{Logger: quiet})
	defer mem.Close()
	defer hub.Close()
	maxLen := int64(1_000_000)
	if _, err := hub.Create(ctx, "bench", broker.ChannelOptions{MaxLen: &maxLen}); err != nil {
		b.Fatal(err)
	}

	var delivered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for range subscribers {
		// Room for every message of the run: the benchmark measures
		// throughput, not slow-consumer drops.
		sink := &benchSink{q: newSendQueue(1<<30, 1<<40, nil), enc: v1Encoder}
		if encodeEach {
			sink.enc = &broker.Encoder{Encode: v1Encoder.Encode}
		}
		wg.Go(func() { sink.drain(&delivered, stop) })
		sub, _, err := hub.Subscribe(ctx, "bench", broker.From{}, sink)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		if err := sub.Replay(ctx); err != nil {
			b.Fatal(err)
		}
	}
	data := []byte(`{"sym":"EURUSD","bid":1.08731,"ask":1.08734,"ts":1732480000123}`)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := hub.Publish(ctx, "bench", data); err != nil {
			b.Fatal(err)
		}
	}
	want := int64(b.N) * subscribers
	for delivered.Load() < want {
		time.Sleep(50 * time.Microsecond) // polling for the fan-out to finish
	}
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(want), "allocs/delivery")
}

// TestDeliverAllocs pins the per-subscriber cost of fan-out at zero
// allocations: once a publication is encoded (by its first subscriber),
// delivering it to another connection is a cache hit and a queue append,
// and the writer's take reuses its batch and releases it without allocating.
func TestDeliverAllocs(t *testing.T) {
	p := &broker.Publication{Channel: "prices", ID: backlog.ID{Ms: 1732480000123, Seq: 7}, Data: []byte(`{"bid":1.5}`)}
	want := string(p.Frame(v1Encoder))
	tests := []struct {
		name string
		enc  *broker.Encoder
	}{
		{"v1", v1Encoder},
		{"legacy", legacyEncoder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.Frame(tt.enc) // the first subscriber of this protocol encodes
			c := benchConn()
			c.enc = tt.enc
			var batch []queued
			allocs := testing.AllocsPerRun(1000, func() {
				if !c.Deliver(p) {
					t.Fatal("Deliver refused a frame into an empty queue")
				}
				batch = c.queue.take(batch)
				c.wrote(batch[0], time.Now())
				c.queue.done(1, len(batch[0].frame))
			})
			if allocs != 0 {
				t.Errorf("delivering an encoded publication allocates %v times, want 0", allocs)
			}
			if len(batch) != 1 || string(batch[0].frame) != string(p.Frame(tt.enc)) {
				t.Errorf("took %q, want the cached frame", batch)
			}
		})
	}
	if got := string(p.Frame(v1Encoder)); got != want {
		t.Errorf("v1 frame changed to %s after legacy encoding, want %s", got, want)
	}
}

func BenchmarkEncodeV1(b *testing.B) {
	for _, size := range []int{16, 256, 4096} {
		b.Run(fmt.Sprintf("data=%dB", size), func(b *testing.B) {
			data := []byte(`{"pad":"` + strings.Repeat("x", size-len(`{"pad":""}`)) + `"}`)
			p := &broker.Publication{Channel: "prices", ID: backlog.ID{Ms: 1732480000123, Seq: 7}, Data: data}
			b.SetBytes(int64(len(v1Encoder.Encode(p))))
			b.ReportAllocs()
			var frame []byte
			for b.Loop() {
				frame = v1Encoder.Encode(p)
			}
			runtime.KeepAlive(frame)
		})
	}
}
