package broker

import (
	"context"
	"fmt"
	"testing"

	"github.com/tslm/tslm/backlog"
)

// nopSink takes everything, as a client that keeps up would.
type nopSink struct{}

func (nopSink) Deliver(*Publication) bool                  { return true }
func (nopSink) Replay(context.Context, *Publication) error { return nil }

// benchHub returns a hub over the memory backlog whose channel "hot" has
// n live subscribers.
func benchHub(b *testing.B, n int) (*Hub, []*Subscription) {
	b.Helper()
	ctx := context.Background()
	log := backlog.NewMemory(backlog.MemoryConfig{})
	h := New(log, Config{})
	b.Cleanup(func() { h.Close(); log.Close() })
	if _, err := h.Create(ctx, "hot", ChannelOptions{}); err != nil {
		b.Fatal(err)
	}
	subs := make([]*Subscription, n)
	for i := range subs {
		subs[i] = benchSubscribe(b, h)
	}
	return h, subs
}

func benchSubscribe(b *testing.B, h *Hub) *Subscription {
	ctx := context.Background()
	s, _, err := h.Subscribe(ctx, "hot", From{}, nopSink{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Replay(ctx); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSubscribeUnsubscribe is one live subscribe and its close on a
// channel that has n other subscribers: what each client of a reconnect
// storm onto a hot channel costs the hub. Neither time nor bytes per op
// may grow with n.
func BenchmarkSubscribeUnsubscribe(b *testing.B) {
	for _, n := range []int{1000, 5000, 20000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h, _ := benchHub(b, n)
			b.ReportAllocs()
			for b.Loop() {
				benchSubscribe(b, h).Close()
			}
		})
	}
}

// BenchmarkFanout is the reader's hand-off of one message to n
// subscribers (the sinks only take it); n=1 shows its cost per batch, what
// many channels of one subscriber each pay. "steady" has the same subscribers
// for every message; "churn" has one subscribe and one unsubscribe before
// each message, as during a reconnect storm, so that what the fan-out
// pays for a changed subscriber set shows.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 1000, 10000} {
		for _, churn := range []bool{false, true} {
			name := fmt.Sprintf("subscribers=%d/steady", n)
			if churn {
				name = fmt.Sprintf("subscribers=%d/churn", n)
			}
			b.Run(name, func(b *testing.B) {
				h, subs := benchHub(b, n)
				c := subs[0].ch
				spare := &Subscription{hub: h, ch: c}
				ctx := context.Background()
				before := h.stats.delivered.Load()
				b.ReportAllocs()
				var ms uint64
				for b.Loop() {
					if churn {
						c.add(spare)
						c.remove(spare)
					}
					ms++
					// IDs past any the memory backlog hands out, so that
					// every subscriber takes each as news.
					m := backlog.Message{ID: backlog.ID{Ms: 1 << 60, Seq: ms}, Data: []byte(`1`)}
					h.reader.deliver(ctx, c, backlog.Batch{Channel: "hot", Messages: []backlog.Message{m}})
				}
				if got, want := h.stats.delivered.Load()-before, int64(ms)*int64(n); got != want {
					b.Fatalf("delivered %d, want %d", got, want)
				}
			})
		}
	}
}

// BenchmarkSubscribeDuringFanout is BenchmarkSubscribeUnsubscribe while
// another goroutine fans messages out to the channel's n subscribers
// without pause: a reconnect storm onto a channel that is busy. It also
// reports how many messages were fanned out per subscribe, since a
// subscribe that is cheap because it starves the fan-out (or the other
// way round) is no win.
func BenchmarkSubscribeDuringFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h, subs := benchHub(b, n)
			c := subs[0].ch
			ctx := context.Background()
			stop := make(chan struct{})
			var fanouts uint64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					fanouts++
					m := backlog.Message{ID: backlog.ID{Ms: 1 << 60, Seq: fanouts}, Data: []byte(`1`)}
					h.reader.deliver(ctx, c, backlog.Batch{Channel: "hot", Messages: []backlog.Message{m}})
				}
			}()
			b.ReportAllocs()
			ops := 0
			for b.Loop() {
				benchSubscribe(b, h).Close()
				ops++
			}
			close(stop)
			<-done
			b.ReportMetric(float64(fanouts)/float64(ops), "fanouts/op")
		})
	}
}
