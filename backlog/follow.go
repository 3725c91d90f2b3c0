package backlog

import (
	"context"
	"time"
)

// Follower follows a changing set of channels for one consumer (a hub) and
// hands out what is appended to them, in order, each channel after its own
// cursor. The follower owns the cursors: Follow sets one, and every Batch
// Next returns moves it to the batch's last message.
//
// Follow and Unfollow may be called from any goroutine, and cost the
// other channels nothing: no read in flight is interrupted. Next is called
// by one goroutine at a time.
type Follower interface {
	// Follow starts following channel after cursor after, replacing any
	// earlier Follow of it, and returns a number that the batches of this
	// Follow carry (Batch.Follow): a batch of an earlier Follow of the
	// same channel may still be on its way to the consumer, which must
	// drop it. Messages appended after after but before Follow are
	// returned too.
	Follow(channel string, after ID) uint64

	// Unfollow stops following channel. Batches of it already returned
	// are the caller's to drop.
	Unfollow(channel string)

	// Next waits until some followed channels hold messages after their
	// cursors, or were deleted, and returns them: at most one Batch per
	// channel, up to limit messages each (every message when limit < 1).
	// A Batch holds at least one message unless Deleted: a loss after a
	// cursor with nothing held after it is reported with the next
	// message. A deleted channel is reported once and no longer
	// followed.
	//
	// It returns ctx.Err() once ctx is done and ErrClosed once the
	// follower or its log is closed. Other errors are the storage's:
	// the cursors are kept, so the caller backs off and calls Next
	// again, and nothing is lost. Next may return no batch and no error.
	Next(ctx context.Context, limit int) ([]Batch, error)

	// Close stops following everything and releases the follower's
	// resources; a Next in flight returns ErrClosed.
	Close() error
}

// ReadOnce follows cursors with a new follower of l until Next returns
// something or wait passes, then closes it: the one-shot read of a
// conformance test or a tool. It returns no batch and no error when wait
// passes with nothing new.
func ReadOnce(ctx context.Context, l Log, cursors []Cursor, limit int, wait time.Duration) ([]Batch, error) {
	f := l.NewFollower()
	defer f.Close()
	for _, c := range cursors {
		f.Follow(c.Channel, c.After)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		batches, err := f.Next(ctx, limit)
		switch {
		case len(batches) > 0:
			return batches, nil
		case err == nil:
			continue
		case ctx.Err() == context.DeadlineExceeded:
			return nil, nil
		}
		return nil, err
	}
}
