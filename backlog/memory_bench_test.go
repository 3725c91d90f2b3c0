package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/tslm/tslm/backlog"
)

// BenchmarkMemoryReadSpread measures what an append costs the in-memory
// backlog when many channels are followed, as the broker follows them: one
// follower over every channel, and appends to random channels. An op is
// one append, timed until the follower has delivered it, so ns/op is the
// cost of an append delivered, wake-ups included. At most 16 appends are
// in flight, as from a few paced publishers: an unbounded publisher lets
// the follower fall behind and batch, which hides the cost of a wake-up
// behind a feedback that varies from run to run.
func BenchmarkMemoryReadSpread(b *testing.B) {
	for _, channels := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("channels=%d", channels), func(b *testing.B) {
			m := backlog.NewMemory(backlog.MemoryConfig{MaxChannels: channels})
			defer m.Close()
			ctx, cancel := context.WithCancel(context.Background())
			f := m.NewFollower()
			defer f.Close()
			names := make([]string, channels)
			for i := range names {
				names[i] = fmt.Sprintf("spread.%d", i)
				if _, err := m.Create(ctx, names[i], backlog.ChannelConfig{}); err != nil {
					b.Fatal(err)
				}
				f.Follow(names[i], backlog.Zero)
			}
			const window = 16
			inFlight := make(chan struct{}, window)
			var readers sync.WaitGroup
			readers.Go(func() {
				for ctx.Err() == nil {
					batches, err := f.Next(ctx, 100)
					if err != nil {
						if !errors.Is(err, context.Canceled) {
							b.Error(err)
						}
						return
					}
					for _, batch := range batches {
						for range batch.Messages {
							<-inFlight
						}
					}
				}
			})
			rng := rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				inFlight <- struct{}{}
				if _, err := m.Append(ctx, names[rng.IntN(channels)], benchPayload); err != nil {
					b.Fatal(err)
				}
			}
			for range window { // every append delivered
				inFlight <- struct{}{}
			}
			b.StopTimer()
			cancel()
			readers.Wait()
		})
	}
}
