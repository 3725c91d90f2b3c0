package broker

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tslm/tslm/backlog"
)

// reader follows a share of the hub's channels with one blocking Read over
// all of them at a time, and fans what it reads out to their subscribers.
// Splitting channels across readers bounds the size of each Read, which is
// redone on every wake-up, and keeps one slow fan-out from delaying every
// channel.
type reader struct {
	hub  *Hub
	load int // channels assigned; guarded by hub.mu

	mu       sync.Mutex
	channels map[*channelState]backlog.ID // followed channels and their cursors
	changed  bool                         // channels changed since run last looked
	cancel   context.CancelFunc           // interrupts the Read in flight
	wake     chan struct{}                // signals an idle reader; cap 1
}

func newReader(h *Hub) *reader {
	return &reader{hub: h, channels: make(map[*channelState]backlog.ID), wake: make(chan struct{}, 1)}
}

// follow starts reading c after cursor. A Read in flight is interrupted so
// that the new channel does not wait for it to time out.
func (r *reader) follow(c *channelState, cursor backlog.ID) {
	r.mu.Lock()
	r.channels[c] = cursor
	r.changedLocked()
	r.mu.Unlock()
}

func (r *reader) unfollow(c *channelState) {
	r.mu.Lock()
	delete(r.channels, c)
	r.changedLocked()
	r.mu.Unlock()
}

// changedLocked expects r.mu held.
func (r *reader) changedLocked() {
	r.changed = true
	if r.cancel != nil {
		r.cancel()
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reader) run(ctx context.Context) {
	var (
		// The Read arguments are rebuilt only when the set of channels
		// changes, and cursors advance in place: a wake-up costs the
		// channels it delivers, not every channel followed.
		cursors []backlog.Cursor
		states  []*channelState // parallel to cursors
		index   = make(map[string]int)
		backoff time.Duration
	)
	for ctx.Err() == nil {
		r.mu.Lock()
		if r.changed {
			r.changed = false
			cursors, states = cursors[:0], states[:0]
			clear(index)
			for c, id := range r.channels {
				index[c.name] = len(cursors)
				cursors = append(cursors, backlog.Cursor{Channel: c.name, After: id})
				states = append(states, c)
			}
		}
		readCtx, cancel := context.WithCancel(ctx)
		r.cancel = cancel
		r.mu.Unlock()

		if len(cursors) == 0 {
			cancel()
			select {
			case <-ctx.Done():
			case <-r.wake:
			}
			continue
		}
		batches, err := r.hub.log.Read(readCtx, cursors, r.hub.cfg.ReadBatch)
		cancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				continue
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
		for _, b := range batches {
			i, ok := index[b.Channel]
			if !ok {
				continue
			}
			c := states[i]
			cursors[i].After = r.deliver(ctx, c, b, cursors[i].After)
			r.mu.Lock()
			// A channel unfollowed during the Read is gone; if it was
			// followed anew, that is another channelState with its own
			// cursor.
			if _, ok := r.channels[c]; ok {
				r.channels[c] = cursors[i].After
			}
			r.mu.Unlock()
		}
	}
}

// deliver fans one batch out and returns the new cursor.
func (r *reader) deliver(ctx context.Context, c *channelState, b backlog.Batch, cursor backlog.ID) backlog.ID {
	if b.Deleted {
		// Forgotten first: a subscriber joining from now on gets a fresh
		// state; one that joined before is told below.
		r.hub.forget(c)
		p := newDeleted(c.name)
		for _, s := range c.subscribers() {
			s.offer(p)
		}
		return cursor
	}
	subs := c.subscribers()
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
		cursor = m.ID
	}
	r.hub.stats.delivered.Add(delivered)
	return cursor
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

// account counts what one Read took: once per batch, not per message, as
// the readers share these atomics.
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
