package broker

import (
	"context"
	"errors"

	"github.com/tslm/tslm/backlog"
)

const (
	// messageOverhead is what a replayed message costs besides its data:
	// its ID, slice header and allocator slack. It keeps empty messages
	// from counting as free.
	messageOverhead = 64
	// firstMessageGuess is the message cost a channel's first replay
	// assumes before it has seen any: the gateway's default publish limit
	// (TSLM_MAX_DATA_BYTES), so that the first page of large messages is
	// not read 500 at a time.
	firstMessageGuess = 64<<10 + messageOverhead
)

func messageCost(m backlog.Message) int64 { return int64(len(m.Data)) + messageOverhead }

// Replay sends the backlog part of the subscription and the live messages
// buffered meanwhile, then switches to live delivery. It returns
// ErrUnsubscribed if the subscription was closed meanwhile, ErrSlowConsumer
// if live traffic kept overtaking it, ErrReplayCapacity if the replay
// budget had no room, or the sink's or the backlog's error.
func (s *Subscription) Replay(ctx context.Context) error {
	s.mu.Lock()
	if s.state != replayNotStarted {
		s.mu.Unlock()
		return ErrUnsubscribed
	}
	s.state = replayRunning
	s.mu.Unlock()

	// Close cancels the replay through replayCancel, rather than an
	// AfterFunc on stopped: that would leave stopped a map of children
	// (which never shrinks) and a channel, for the subscription's life.
	// Close stops first and reads replayCancel after; so either it sees
	// cancel, or stopped is already done here.
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.replayCancel = cancel
	s.mu.Unlock()
	if s.stopped.Err() != nil {
		cancel()
	}
	defer func() {
		s.mu.Lock()
		s.replayCancel = nil
		s.mu.Unlock()
		cancel()
		s.dropPending()
		s.mu.Lock()
		s.state = replayDone
		s.mu.Unlock()
		if s.history {
			s.hub.stats.replayMessages.Observe(float64(s.replaySent))
		}
		close(s.replayed)
	}()
	err := s.replay(ctx)
	if err != nil && s.stopped.Err() != nil {
		return ErrUnsubscribed
	}
	return err
}

func (s *Subscription) replay(ctx context.Context) error {
	overtakes := 0
	for {
		if err := s.sendPending(ctx); err != nil {
			return err
		}
		if s.paging {
			after := s.lastSent
			continuous, err := s.readPage(ctx, after)
			if errors.Is(err, ErrNotFound) {
				return s.deleted(ctx)
			}
			if err != nil {
				return err
			}
			if !continuous {
				// Trimmed while we replayed: say so, then go on from
				// the oldest message held.
				s.startGap = newGap(s.ch.name, after, backlog.Zero)
			}
			continue
		}
		if s.lastSent.Less(s.floor) {
			s.lastSent = s.floor
		}

		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrUnsubscribed
		}
		buffered, overflowed := s.buffer.take()
		var next step
		next, overtakes = nextStep(len(buffered), overflowed, overtakes, s.hub.cfg.ReplayOvertakes)
		if next == stepLive {
			s.live = true
		}
		s.mu.Unlock()

		switch next {
		case stepLive:
			return nil
		case stepGiveUp:
			s.hub.stats.replayOverflows.Add(1)
			return ErrSlowConsumer
		case stepReread:
			// What was dropped is in the backlog, after lastSent.
			s.hub.stats.replayOverflows.Add(1)
			s.paging = true
		case stepMerge:
			for _, p := range merge(s.lastSent, buffered) {
				if p.Deleted {
					return s.deleted(ctx)
				}
				if err := s.send(ctx, p); err != nil {
					return err
				}
				if !p.Gap {
					s.lastSent = p.ID
				}
			}
		}
	}
}

// deleted tells the sink that the channel was deleted during the replay,
// and ends the subscription.
func (s *Subscription) deleted(ctx context.Context) error {
	s.mu.Lock()
	s.closed, s.buffer = true, liveBuffer{}
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.sink.Replay(ctx, newDeleted(s.ch.name)); err != nil {
		return err
	}
	return ErrUnsubscribed
}

// sendPending sends startGap and pending, releasing each message (its slot
// and its share of the budget) once the sink has it.
func (s *Subscription) sendPending(ctx context.Context) error {
	if g := s.startGap; g != nil {
		if err := s.send(ctx, g); err != nil {
			return err
		}
		s.startGap = nil
	}
	for i, m := range s.pending {
		if s.lastSent.Less(m.ID) {
			if err := s.send(ctx, newPublication(s.ch.name, m)); err != nil {
				return err
			}
			s.lastSent = m.ID
		}
		s.pending[i] = backlog.Message{}
		if i == len(s.pending)-1 {
			s.releaseHeld(s.held)
		} else {
			s.releaseHeld(min(messageCost(m), s.held))
		}
	}
	s.pending = nil
	return nil
}

// send hands p to the sink, unless the replay was stopped.
func (s *Subscription) send(ctx context.Context, p *Publication) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.sink.Replay(ctx, p); err != nil {
		return err
	}
	if p.Gap {
		s.hub.stats.gaps.Add(1)
	} else {
		s.hub.stats.delivered.Add(1)
		s.replaySent++
	}
	return nil
}

// readPage reads the page after after into pending, within the page and
// replica byte bounds, and reports whether the backlog proved it continuous.
// The page count adapts to the largest message of the channel's last page;
// the bytes are reserved before the read and the page is cut at them, so a
// page holds at most what it reserved, or one larger message, for which it
// then reserves anew (without holding a reservation while it waits).
func (s *Subscription) readPage(ctx context.Context, after backlog.ID) (continuous bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err // closed: read nothing more
	}
	cfg := &s.hub.cfg
	est := s.ch.messageBytes.Load()
	if est <= 0 {
		est = firstMessageGuess
	}
	count := int(max(min(int64(cfg.ReplayPageBytes)/est, int64(cfg.ReplayPage)), 1))
	want := int64(count) * est
	if err := s.reserve(ctx, want); err != nil {
		return false, err
	}
	page, err := s.hub.replayRange(ctx, s.ch, after, count)
	if err != nil {
		s.releaseHeld(s.held)
		return false, err
	}
	msgs := page.Messages
	var largest int64
	for _, m := range msgs {
		largest = max(largest, messageCost(m))
	}
	if largest > 0 {
		s.ch.messageBytes.Store(largest)
	}
	n, total := 0, int64(0)
	for _, m := range msgs {
		c := messageCost(m)
		if n > 0 && total+c > want {
			break
		}
		total += c
		n++
	}
	clear(msgs[n:]) // cut off: read again with the next page
	s.pending, s.paging = msgs[:n], n < len(msgs) || len(msgs) >= count
	if err := s.settle(ctx, total); err != nil {
		s.dropPending()
		return false, err
	}
	return page.Continuous, nil
}

// settle adjusts the reservation to the bytes pending holds.
func (s *Subscription) settle(ctx context.Context, bytes int64) error {
	target := min(bytes, s.hub.budget.size)
	switch {
	case target < s.held:
		s.releaseHeld(s.held - target)
	case target > s.held:
		// One message larger than the estimate. Reserve anew rather than
		// wait while holding part of the budget: two replays each
		// holding some and waiting for more would block each other.
		s.releaseHeld(s.held)
		return s.reserve(ctx, target)
	}
	return nil
}

// reserve adds n bytes (clamped to the budget) to what the replay holds.
func (s *Subscription) reserve(ctx context.Context, n int64) error {
	got, err := s.hub.budget.acquire(ctx, n, s.hub.cfg.ReplayWait)
	if errors.Is(err, ErrReplayCapacity) {
		s.hub.stats.replayRefused.Add(1)
	}
	s.held += got
	return err
}

func (s *Subscription) releaseHeld(n int64) {
	s.held -= n
	s.hub.budget.release(n)
}

// dropPending forgets what was read and not sent, and its reservation.
func (s *Subscription) dropPending() {
	clear(s.pending)
	s.pending, s.startGap = nil, nil
	s.releaseHeld(s.held)
}
