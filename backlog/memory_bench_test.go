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
// Read per 100 channels (its TSLM_READER_CHANNELS default), each blocked
// until one of its channels gets a message, and appends to random
// channels. An op is one append, timed until a reader has delivered it,
// so ns/op is the cost of an append delivered, wake-ups included. At most
// 16 appends are in flight, as from a few paced publishers: an unbounded
// publisher lets readers fall behind and batch, which hides the cost of a
// wake-up behind a feedback that varies from run to run.
func BenchmarkMemoryReadSpread(b *testing.B) {
	const perReader = 100
	for _, channels := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("channels=%d", channels), func(b *testing.B) {
			m := backlog.NewMemory(backlog.MemoryConfig{MaxChannels: channels})
			defer m.Close()
			ctx, cancel := context.WithCancel(context.Background())
			names := make([]string, channels)
			for i := range names {
				names[i] = fmt.Sprintf("spread.%d", i)
				if _, err := m.Create(ctx, names[i], backlog.ChannelConfig{}); err != nil {
					b.Fatal(err)
				}
			}
			const window = 16
			inFlight := make(chan struct{}, window)
			var readers sync.WaitGroup
			for first := 0; first < channels; first += perReader {
				cursors := make([]backlog.Cursor, 0, perReader)
				index := make(map[string]int, perReader)
				for _, name := range names[first:min(first+perReader, channels)] {
					index[name] = len(cursors)
					cursors = append(cursors, backlog.Cursor{Channel: name})
				}
				readers.Go(func() {
					for ctx.Err() == nil {
						batches, err := m.Read(ctx, cursors, 100)
						if err != nil {
							if !errors.Is(err, context.Canceled) {
								b.Error(err)
							}
							return
						}
						for _, batch := range batches {
							n := len(batch.Messages)
							cursors[index[batch.Channel]].After = batch.Messages[n-1].ID
							for range n {
								<-inFlight
							}
						}
					}
				})
			}
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
