package broker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/tslm/tslm/backlog"
)

// reader runs the hub's one follower of the backlog (backlog.Follower),
// which follows every channel that has local subscribers, and fans what it
// returns out to them. Following a channel or leaving it costs the others
// nothing, and fan-out is only queueing to each subscriber's bounded
// queue, so one goroutine serves every channel.
type reader struct {
	hub *Hub
	f   backlog.Follower
}

func (r *reader) run(ctx context.Context) {
	var backoff time.Duration
	for ctx.Err() == nil {
		batches, err := r.f.Next(ctx, r.hub.cfg.ReadBatch)
		r.hub.log.health.observe(fromBacklog(ctx, "", err))
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, backlog.ErrClosed) {
				return
			}
			r.hub.stats.readErrors.Add(1)
			backoff = nextBackoff(backoff)
			// The outage itself is logged once by the guarded backlog;
			// each retry is detail.
			r.hub.cfg.Logger.Debug("backlog read failed; retrying", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		r.account(batches)
		states := r.hub.statesOf(batches)
		for i, b := range batches {
			if c := states[i]; c != nil {
				r.deliver(ctx, c, b)
			}
		}
	}
}

// deliver fans one batch out.
func (r *reader) deliver(ctx context.Context, c *channelState, b backlog.Batch) {
	cursor := b.After
	if b.Deleted {
		// Forgotten first: a subscriber joining from now on gets a fresh
		// state; one that joined before is told below.
		r.hub.forget(c)
		p := newDeleted(c.name)
		for _, s := range c.subscribers() {
			s.offer(p)
		}
		c.fanned()
		return
	}
	subs := c.subscribers()
	defer c.fanned()
	if b.Gap {
		r.hub.cfg.Logger.Warn("messages lost from the backlog while subscribed", "channel", c.name, "after", cursor.String())
		var resume backlog.ID
		if len(b.Messages) > 0 {
			resume = b.Messages[0].ID
		}
		gap := newGap(c.name, cursor, resume)
		gap.Prev = r.heldBefore(ctx, c.name, resume)
		var gaps int64
		for _, s := range subs {
			if s.offer(gap) {
				gaps++
			}
		}
		r.hub.stats.gaps.Add(gaps)
	}
	// Counted once per batch, not per sink: one shared atomic per
	// delivery would serialize the fan-out of every reader.
	var delivered int64
	for _, m := range b.Messages {
		p := newPublication(c.name, m)
		for _, s := range subs {
			if s.offer(p) {
				delivered++
			}
		}
	}
	r.hub.stats.delivered.Add(delivered)
}

// heldBefore returns the newest message held before resume, the first one
// after a loss, or Zero when there is none or the backlog cannot tell: a
// subscriber whose last message it is did not lose anything (see
// Publication.Prev). Subscribers are behind the reader only after the
// reader's cursor entry was lost, which is rare, but any of them may be,
// so the reader asks on every gap: one small round trip, no payload.
func (r *reader) heldBefore(ctx context.Context, channel string, resume backlog.ID) backlog.ID {
	if resume.IsZero() {
		return backlog.Zero
	}
	prev, held, err := r.hub.log.Before(ctx, channel, resume)
	if err != nil || !held {
		// Without the proof every subscriber behind the reader gets
		// the gap: a gap too many, never one too few.
		r.hub.cfg.Logger.Debug("no proof for subscribers behind the reader after a gap", "channel", channel, "err", err, "held", held)
		return backlog.Zero
	}
	return prev
}

// account counts what one Next took: once per batch, not per message.
func (r *reader) account(batches []backlog.Batch) {
	now := time.Now().UnixMicro()
	var read int64
	for _, b := range batches {
		if len(b.Messages) == 0 {
			continue
		}
		age := now - int64(b.Messages[0].ID.Ms)*1000
		r.hub.stats.readerLag.Observe(float64(max(age, 0)) / 1e6)
		if len(b.Messages) >= r.hub.cfg.ReadBatch {
			r.hub.stats.fullReads.Add(1)
		}
		if !IsReserved(b.Channel) {
			// Replies, not messages: tslm_replies_total counts them.
			read += int64(len(b.Messages))
		}
	}
	if read > 0 {
		r.hub.stats.read.Add(read)
	}
}

// nextBackoff doubles up to 5s, with jitter so that replicas that lost the
// same Redis do not return in step.
func nextBackoff(d time.Duration) time.Duration {
	d = min(max(2*d, 50*time.Millisecond), 5*time.Second)
	return d/2 + rand.N(d/2+1)
}
