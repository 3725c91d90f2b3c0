package broker

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// replayBudget bounds the bytes that every replay of the replica together
// holds: read from the backlog and not yet handed to a sink. Waiters are
// served in order (semaphore.Weighted is FIFO), so a large page is not
// starved by a stream of small ones.
type replayBudget struct {
	size int64
	sem  *semaphore.Weighted
	used atomic.Int64 // for Stats
}

func newReplayBudget(size int64) *replayBudget {
	return &replayBudget{size: size, sem: semaphore.NewWeighted(size)}
}

// acquire reserves n bytes and returns how many it reserved: n clamped to
// the whole budget, so that a page larger than it still makes progress once
// it has the budget to itself. It waits for room at most wait, then fails
// with ErrReplayCapacity, or with ctx's error once ctx is done.
func (b *replayBudget) acquire(ctx context.Context, n int64, wait time.Duration) (int64, error) {
	n = min(max(n, 0), b.size)
	if n == 0 {
		return 0, nil
	}
	if !b.sem.TryAcquire(n) {
		wctx, cancel := context.WithTimeout(ctx, wait)
		err := b.sem.Acquire(wctx, n)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, ErrReplayCapacity
		}
	}
	b.used.Add(n)
	return n, nil
}

// release returns n reserved bytes.
func (b *replayBudget) release(n int64) {
	if n > 0 {
		b.used.Add(-n)
		b.sem.Release(n)
	}
}
